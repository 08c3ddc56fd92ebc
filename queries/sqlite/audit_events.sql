-- name: AuditInsert :one
INSERT INTO audit_events (actor, action, project_id, token_id, result, details)
VALUES (sqlc.arg(actor), sqlc.arg(action), sqlc.narg(project_id), sqlc.narg(token_id), sqlc.arg(result), sqlc.arg(details))
RETURNING *;

-- name: AuditList :many
-- Newest first; before_id is the smallest id of the previous page.
SELECT * FROM audit_events
WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
  AND id < sqlc.arg(before_id)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);
