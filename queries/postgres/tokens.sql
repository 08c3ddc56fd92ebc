-- name: TokenCreate :one
-- Inserts only while the project exists and is active; no row means refused.
INSERT INTO tokens (project_id, secret_hash, token_prefix, expires_at, max_requests)
SELECT @project_id::bigint, @secret_hash::bytea, @token_prefix::text, @expires_at::timestamptz, sqlc.narg(max_requests)::bigint
WHERE EXISTS (SELECT 1 FROM projects WHERE id = @project_id::bigint AND is_active)
RETURNING *;

-- name: TokenGetByID :one
SELECT * FROM tokens WHERE id = @id;

-- name: TokenGetByHash :one
SELECT * FROM tokens WHERE secret_hash = @secret_hash;

-- name: TokenAuthenticate :one
-- The token with this secret's hash and its project, read together, with
-- expiry judged by the database's clock; counts nothing.
SELECT sqlc.embed(t), sqlc.embed(p), t.expires_at <= now() AS expired
FROM tokens t JOIN projects p ON p.id = t.project_id
WHERE t.secret_hash = @secret_hash;

-- name: TokenList :many
SELECT * FROM tokens
WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
  AND id > @after_id
ORDER BY id
LIMIT @max_rows::bigint;

-- name: TokenAdmit :one
-- Counts one request if and only if every admission rule holds, atomically.
UPDATE tokens SET
  request_count = request_count + 1,
  last_used_at  = now()
WHERE tokens.id = @id
  AND is_active
  AND expires_at > now()
  AND (max_requests IS NULL OR request_count < max_requests)
  AND EXISTS (SELECT 1 FROM projects p WHERE p.id = tokens.project_id AND p.is_active)
RETURNING *;

-- name: TokenAdmitByHash :one
-- TokenAdmit of n requests at once (all or none) by the secret's hash, also
-- returning the token's project, so the proxy authenticates and admits in one
-- round trip. It also counts, and notes as reserved, reserve requests the
-- proxy may admit later; a limit must leave room for them too. A lease of
-- lease_us > 0 is recorded: lease_until becomes at least now() + lease_us.
WITH arg AS (SELECT @n::bigint AS n, @reserve::bigint AS reserve, @lease_us::bigint AS lease_us)
UPDATE tokens SET
  request_count     = tokens.request_count + arg.n + arg.reserve,
  requests_reserved = tokens.requests_reserved + arg.reserve,
  last_used_at      = now(),
  lease_until       = CASE WHEN arg.lease_us > 0
    THEN GREATEST(tokens.lease_until, now() + arg.lease_us * interval '1 microsecond')
    ELSE tokens.lease_until END
FROM projects p, arg
WHERE tokens.secret_hash = @secret_hash
  AND p.id = tokens.project_id
  AND p.is_active
  AND tokens.is_active
  AND tokens.expires_at > now()
  AND (tokens.max_requests IS NULL OR tokens.request_count + arg.n + arg.reserve <= tokens.max_requests)
RETURNING sqlc.embed(tokens), sqlc.embed(p);

-- name: TokenSettleReserved :execrows
-- Settles requests TokenAdmitByHash reserved: all stop being reserved, and
-- those the proxy did not use stop being counted.
UPDATE tokens SET
  request_count     = request_count - @unused::bigint,
  requests_reserved = requests_reserved - @reserved::bigint
WHERE id = @id AND requests_reserved >= @reserved::bigint;

-- name: TokenSetActive :one
UPDATE tokens SET is_active = @is_active, updated_at = now()
WHERE id = @id
RETURNING *;

-- name: TokenSetMaxRequests :one
UPDATE tokens SET max_requests = sqlc.narg(max_requests), updated_at = now()
WHERE id = @id
RETURNING *;

-- name: TokenCountRevokedForProject :one
SELECT count(*) FROM tokens WHERE project_id = @project_id AND NOT is_active;

-- name: TokenRevokeAllForProject :execrows
UPDATE tokens SET is_active = false, updated_at = now()
WHERE project_id = @project_id AND is_active;

-- name: TokenLeaseRemaining :one
-- How long the token's latest admission lease has left, in microseconds by
-- the database's clock; 0 or less: none outstanding.
SELECT COALESCE(CAST(EXTRACT(EPOCH FROM max(lease_until) - clock_timestamp()) * 1000000 AS bigint), 0)::bigint AS remaining_us
FROM tokens WHERE id = @id;

-- name: TokenLeaseRemainingForProject :one
-- TokenLeaseRemaining of the latest lease among the project's tokens. Run
-- after TokenLockForLeases, in its transaction.
SELECT COALESCE(CAST(EXTRACT(EPOCH FROM max(lease_until) - clock_timestamp()) * 1000000 AS bigint), 0)::bigint AS remaining_us
FROM tokens WHERE project_id = @project_id;

-- name: TokenLockForLeases :exec
-- Waits until every statement writing tokens that started before it has
-- committed, and holds off new ones until its transaction ends. An
-- admission takes its snapshot after locking the table, so one that read a
-- project as it was before a committed change has recorded its lease by
-- the time this returns.
LOCK TABLE tokens IN SHARE MODE;
