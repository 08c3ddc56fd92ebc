-- name: UsageInsertBatch :copyfrom
INSERT INTO usage_events (
  token_id, project_id, method, path, model, status,
  prompt_tokens, completion_tokens, total_tokens, latency_ms, created_at
) VALUES (
  @token_id, @project_id, @method, @path, @model, @status,
  @prompt_tokens, @completion_tokens, @total_tokens, @latency_ms, @created_at
);

-- name: UsageTotals :one
SELECT
  count(*)                                                   AS requests,
  count(*) FILTER (WHERE status >= 400)                      AS errors,
  COALESCE(sum(prompt_tokens), 0)::bigint                    AS prompt_tokens,
  COALESCE(sum(completion_tokens), 0)::bigint                AS completion_tokens,
  COALESCE(sum(total_tokens), 0)::bigint                     AS total_tokens
FROM usage_events
WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
  AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
  AND created_at >= @since AND created_at < @until;

-- name: UsageTotalsByModel :many
SELECT
  model,
  count(*)                                                   AS requests,
  count(*) FILTER (WHERE status >= 400)                      AS errors,
  COALESCE(sum(prompt_tokens), 0)::bigint                    AS prompt_tokens,
  COALESCE(sum(completion_tokens), 0)::bigint                AS completion_tokens,
  COALESCE(sum(total_tokens), 0)::bigint                     AS total_tokens
FROM usage_events
WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
  AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
  AND created_at >= @since AND created_at < @until
GROUP BY model
ORDER BY model;

-- name: UsageList :many
-- Newest first; before_id is the smallest id of the previous page.
SELECT * FROM usage_events
WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
  AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
  AND id < @before_id
ORDER BY id DESC
LIMIT @max_rows::bigint;
