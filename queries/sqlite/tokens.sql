-- name: TokenCreate :one
-- Inserts only while the project exists and is active; no row means refused.
INSERT INTO tokens (project_id, secret_hash, token_prefix, expires_at, max_requests)
SELECT sqlc.arg(project_id), sqlc.arg(secret_hash), sqlc.arg(token_prefix), sqlc.arg(expires_at), sqlc.narg(max_requests)
WHERE EXISTS (SELECT 1 FROM projects WHERE id = sqlc.arg(project_id) AND is_active = 1)
RETURNING *;

-- name: TokenGetByID :one
SELECT * FROM tokens WHERE id = sqlc.arg(id);

-- name: TokenGetByHash :one
SELECT * FROM tokens WHERE secret_hash = sqlc.arg(secret_hash);

-- name: TokenAuthenticate :one
-- The token with this secret's hash and its project, read together, with
-- expiry judged by the database's clock; counts nothing.
SELECT sqlc.embed(tokens), sqlc.embed(projects),
  CAST(tokens.expires_at <= CAST(unixepoch('subsec') * 1000 AS INTEGER) AS INTEGER) AS expired
FROM tokens JOIN projects ON projects.id = tokens.project_id
WHERE tokens.secret_hash = sqlc.arg(secret_hash);

-- name: TokenList :many
SELECT * FROM tokens
WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
  AND id > sqlc.arg(after_id)
ORDER BY id
LIMIT sqlc.arg(max_rows);

-- name: TokenAdmit :one
-- Counts one request if and only if every admission rule holds, atomically.
UPDATE tokens SET
  request_count = request_count + 1,
  last_used_at  = CAST(unixepoch('subsec') * 1000 AS INTEGER)
WHERE tokens.id = sqlc.arg(id)
  AND is_active = 1
  AND expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER)
  AND (max_requests IS NULL OR request_count < max_requests)
  AND EXISTS (SELECT 1 FROM projects p WHERE p.id = tokens.project_id AND p.is_active = 1)
RETURNING *;

-- name: TokenAdmitByHash :one
-- TokenAdmit of n requests at once (all or none) by the secret's hash, also
-- returning the token's project, so the proxy authenticates and admits with
-- one statement. It also counts, and notes as reserved, reserve requests the
-- proxy may admit later; a limit must leave room for them too. A lease of
-- lease_ms > 0 is recorded: lease_until becomes at least now + lease_ms.
-- SQLite's RETURNING cannot read an UPDATE ... FROM table, hence a subquery
-- per project column.
UPDATE tokens SET
  request_count     = request_count + sqlc.arg(n) + sqlc.arg(reserve),
  requests_reserved = requests_reserved + sqlc.arg(reserve),
  last_used_at      = CAST(unixepoch('subsec') * 1000 AS INTEGER),
  lease_until       = CASE WHEN CAST(sqlc.arg(lease_ms) AS INTEGER) > 0
    THEN max(COALESCE(lease_until, 0), CAST(unixepoch('subsec') * 1000 AS INTEGER) + CAST(sqlc.arg(lease_ms) AS INTEGER))
    ELSE lease_until END
WHERE tokens.secret_hash = sqlc.arg(secret_hash)
  AND is_active = 1
  AND expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER)
  AND (max_requests IS NULL OR request_count + sqlc.arg(n) + sqlc.arg(reserve) <= max_requests)
  AND EXISTS (SELECT 1 FROM projects p WHERE p.id = tokens.project_id AND p.is_active = 1)
RETURNING id, project_id, secret_hash, token_prefix, expires_at, max_requests, request_count, is_active, created_at, updated_at, last_used_at, requests_reserved, lease_until,
  (SELECT p.name FROM projects p WHERE p.id = tokens.project_id) AS project_name,
  (SELECT p.api_key_ciphertext FROM projects p WHERE p.id = tokens.project_id) AS project_api_key_ciphertext,
  (SELECT p.api_key_hint FROM projects p WHERE p.id = tokens.project_id) AS project_api_key_hint,
  (SELECT p.created_at FROM projects p WHERE p.id = tokens.project_id) AS project_created_at,
  (SELECT p.updated_at FROM projects p WHERE p.id = tokens.project_id) AS project_updated_at;

-- name: TokenSettleReserved :execrows
-- Settles requests TokenAdmitByHash reserved: all stop being reserved, and
-- those the proxy did not use stop being counted.
UPDATE tokens SET
  request_count     = request_count - sqlc.arg(unused),
  requests_reserved = requests_reserved - sqlc.arg(reserved)
WHERE id = sqlc.arg(id) AND requests_reserved >= sqlc.arg(reserved);

-- name: TokenSetActive :one
UPDATE tokens SET is_active = sqlc.arg(is_active), updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: TokenSetMaxRequests :one
UPDATE tokens SET max_requests = sqlc.narg(max_requests), updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: TokenCountRevokedForProject :one
SELECT count(*) FROM tokens WHERE project_id = sqlc.arg(project_id) AND is_active = 0;

-- name: TokenRevokeAllForProject :execrows
UPDATE tokens SET is_active = 0, updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
WHERE project_id = sqlc.arg(project_id) AND is_active = 1;

-- name: TokenLeaseRemaining :one
-- How long the token's latest admission lease has left, in milliseconds by
-- the database's clock; 0 or less: none outstanding.
SELECT CAST(COALESCE(max(lease_until), 0) - CAST(unixepoch('subsec') * 1000 AS INTEGER) AS INTEGER) AS remaining_ms
FROM tokens WHERE id = sqlc.arg(id);

-- name: TokenLeaseRemainingForProject :one
-- TokenLeaseRemaining of the latest lease among the project's tokens.
SELECT CAST(COALESCE(max(lease_until), 0) - CAST(unixepoch('subsec') * 1000 AS INTEGER) AS INTEGER) AS remaining_ms
FROM tokens WHERE project_id = sqlc.arg(project_id);

-- name: TokenLockForLeases :exec
-- Not run by sqlitestore: SQLite runs one writing statement at a time, so
-- every admission that began before a change committed has committed too.
-- Kept because both dialects' name sets must match.
SELECT 1;
