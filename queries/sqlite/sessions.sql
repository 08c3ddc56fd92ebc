-- name: SessionCreate :one
INSERT INTO sessions (secret_hash, csrf_token, expires_at)
VALUES (sqlc.arg(secret_hash), sqlc.arg(csrf_token), sqlc.arg(expires_at))
RETURNING *;

-- name: SessionGetByHash :one
-- A session that has expired by the database's clock is not found.
SELECT * FROM sessions
WHERE secret_hash = sqlc.arg(secret_hash)
  AND expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER);

-- name: SessionDelete :execrows
DELETE FROM sessions WHERE secret_hash = sqlc.arg(secret_hash);

-- name: SessionDeleteExpired :execrows
DELETE FROM sessions WHERE expires_at <= CAST(unixepoch('subsec') * 1000 AS INTEGER);

-- name: SessionDeleteAll :exec
DELETE FROM sessions;
