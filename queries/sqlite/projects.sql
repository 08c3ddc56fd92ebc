-- name: ProjectCreate :one
INSERT INTO projects (name, api_key_ciphertext, api_key_hint)
VALUES (sqlc.arg(name), sqlc.arg(api_key_ciphertext), sqlc.arg(api_key_hint))
RETURNING *;

-- name: ProjectGetByID :one
SELECT * FROM projects WHERE id = sqlc.arg(id);

-- name: ProjectList :many
SELECT * FROM projects
WHERE id > sqlc.arg(after_id)
ORDER BY id
LIMIT sqlc.arg(max_rows);

-- name: ProjectUpdate :one
UPDATE projects SET
  name               = COALESCE(sqlc.narg(name), name),
  api_key_ciphertext = COALESCE(sqlc.narg(api_key_ciphertext), api_key_ciphertext),
  api_key_hint       = COALESCE(sqlc.narg(api_key_hint), api_key_hint),
  updated_at         = CAST(unixepoch('subsec') * 1000 AS INTEGER)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: ProjectSetActive :one
UPDATE projects SET is_active = sqlc.arg(is_active), updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
WHERE id = sqlc.arg(id)
RETURNING *;
