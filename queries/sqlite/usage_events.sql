-- name: UsageInsertBatch :execrows
-- One multi-row INSERT: rows is a JSON array of objects keyed by column name.
INSERT INTO usage_events (
  token_id, project_id, method, path, model, status,
  prompt_tokens, completion_tokens, total_tokens, latency_ms, created_at
)
SELECT
  json_extract(value, '$.token_id'), json_extract(value, '$.project_id'),
  json_extract(value, '$.method'), json_extract(value, '$.path'),
  json_extract(value, '$.model'), json_extract(value, '$.status'),
  json_extract(value, '$.prompt_tokens'), json_extract(value, '$.completion_tokens'),
  json_extract(value, '$.total_tokens'), json_extract(value, '$.latency_ms'),
  json_extract(value, '$.created_at')
FROM json_each(CAST(sqlc.arg(rows) AS TEXT));

-- name: UsageTotals :one
SELECT
  count(*)                                                        AS requests,
  CAST(COALESCE(sum(status >= 400), 0) AS INTEGER)                AS errors,
  CAST(COALESCE(sum(prompt_tokens), 0) AS INTEGER)                AS prompt_tokens,
  CAST(COALESCE(sum(completion_tokens), 0) AS INTEGER)            AS completion_tokens,
  CAST(COALESCE(sum(total_tokens), 0) AS INTEGER)                 AS total_tokens
FROM usage_events
WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
  AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
  AND created_at >= sqlc.arg(since) AND created_at < sqlc.arg(until);

-- name: UsageTotalsByModel :many
SELECT
  model,
  count(*)                                                        AS requests,
  CAST(COALESCE(sum(status >= 400), 0) AS INTEGER)                AS errors,
  CAST(COALESCE(sum(prompt_tokens), 0) AS INTEGER)                AS prompt_tokens,
  CAST(COALESCE(sum(completion_tokens), 0) AS INTEGER)            AS completion_tokens,
  CAST(COALESCE(sum(total_tokens), 0) AS INTEGER)                 AS total_tokens
FROM usage_events
WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
  AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
  AND created_at >= sqlc.arg(since) AND created_at < sqlc.arg(until)
GROUP BY model
ORDER BY model;

-- name: UsageList :many
-- Newest first; before_id is the smallest id of the previous page.
SELECT * FROM usage_events
WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
  AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
  AND id < sqlc.arg(before_id)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);
