-- name: SessionCreate :one
INSERT INTO sessions (secret_hash, csrf_token, expires_at)
VALUES (@secret_hash, @csrf_token, @expires_at)
RETURNING *;

-- name: SessionGetByHash :one
-- A session that has expired by the database's clock is not found.
SELECT * FROM sessions
WHERE secret_hash = @secret_hash AND expires_at > now();

-- name: SessionDelete :execrows
DELETE FROM sessions WHERE secret_hash = @secret_hash;

-- name: SessionDeleteExpired :execrows
DELETE FROM sessions WHERE expires_at <= now();

-- name: SessionDeleteAll :exec
DELETE FROM sessions;
