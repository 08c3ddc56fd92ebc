-- name: ProjectCreate :one
INSERT INTO projects (name, api_key_ciphertext, api_key_hint)
VALUES (@name, @api_key_ciphertext, @api_key_hint)
RETURNING *;

-- name: ProjectGetByID :one
SELECT * FROM projects WHERE id = @id;

-- name: ProjectList :many
SELECT * FROM projects
WHERE id > @after_id
ORDER BY id
LIMIT @max_rows::bigint;

-- name: ProjectUpdate :one
UPDATE projects SET
  name               = COALESCE(sqlc.narg(name), name),
  api_key_ciphertext = COALESCE(sqlc.narg(api_key_ciphertext), api_key_ciphertext),
  api_key_hint       = COALESCE(sqlc.narg(api_key_hint), api_key_hint),
  updated_at         = now()
WHERE id = @id
RETURNING *;

-- name: ProjectSetActive :one
UPDATE projects SET is_active = @is_active, updated_at = now()
WHERE id = @id
RETURNING *;
