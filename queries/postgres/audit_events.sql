-- name: AuditInsert :one
INSERT INTO audit_events (actor, action, project_id, token_id, result, details)
VALUES (@actor, @action, sqlc.narg(project_id), sqlc.narg(token_id), @result, @details)
RETURNING *;

-- name: AuditList :many
-- Newest first; before_id is the smallest id of the previous page.
SELECT * FROM audit_events
WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
  AND id < @before_id
ORDER BY id DESC
LIMIT @max_rows::bigint;
