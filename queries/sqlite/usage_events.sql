-- name: UsageInsert :execrows
-- One event; UsageInsertBatch runs it, prepared once, for each event of a
-- batch in one transaction, which costs less per row than decoding the batch
-- with json_each. An event whose event_id is stored already is skipped, so a
-- retried batch is written once.
INSERT INTO usage_events (
  token_id, project_id, method, path, model, status,
  prompt_tokens, completion_tokens, total_tokens, latency_ms, created_at, event_id
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id) DO NOTHING;

-- name: UsageInsertBatch :execrows
-- Not run by sqlitestore, whose UsageInsertBatch runs UsageInsert per event
-- (cheaper); kept because both dialects' name sets must match. One
-- multi-row INSERT: rows is a JSON array of objects keyed by column name,
-- event_id in hex or null. An event whose event_id is stored already is
-- skipped. (WHERE true lets SQLite parse ON CONFLICT after a SELECT.)
INSERT INTO usage_events (
  token_id, project_id, method, path, model, status,
  prompt_tokens, completion_tokens, total_tokens, latency_ms, created_at, event_id
)
SELECT
  json_extract(value, '$.token_id'), json_extract(value, '$.project_id'),
  json_extract(value, '$.method'), json_extract(value, '$.path'),
  json_extract(value, '$.model'), json_extract(value, '$.status'),
  json_extract(value, '$.prompt_tokens'), json_extract(value, '$.completion_tokens'),
  json_extract(value, '$.total_tokens'), json_extract(value, '$.latency_ms'),
  json_extract(value, '$.created_at'), unhex(json_extract(value, '$.event_id'))
FROM json_each(CAST(sqlc.arg(rows) AS TEXT))
WHERE true
ON CONFLICT (event_id) DO NOTHING;

-- name: UsageTotals :one
-- The raw events created in [since, until) plus the rollups of the days in
-- [since_day, until_day): pruning moves each event from one table to the
-- other in one transaction, so every request is counted exactly once.
SELECT
  CAST(COALESCE(sum(requests), 0) AS INTEGER)          AS requests,
  CAST(COALESCE(sum(errors), 0) AS INTEGER)            AS errors,
  CAST(COALESCE(sum(prompt_tokens), 0) AS INTEGER)     AS prompt_tokens,
  CAST(COALESCE(sum(completion_tokens), 0) AS INTEGER) AS completion_tokens,
  CAST(COALESCE(sum(total_tokens), 0) AS INTEGER)      AS total_tokens
FROM (
  SELECT
    count(*) AS requests, sum(status >= 400) AS errors, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens
  FROM usage_events
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND created_at >= sqlc.arg(since) AND created_at < sqlc.arg(until)
  UNION ALL
  SELECT sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_daily
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND day >= sqlc.arg(since_day) AND day < sqlc.arg(until_day)
);

-- name: UsageTotalsByModel :many
-- UsageTotals per model.
SELECT
  model,
  CAST(sum(requests) AS INTEGER)          AS requests,
  CAST(sum(errors) AS INTEGER)            AS errors,
  CAST(sum(prompt_tokens) AS INTEGER)     AS prompt_tokens,
  CAST(sum(completion_tokens) AS INTEGER) AS completion_tokens,
  CAST(sum(total_tokens) AS INTEGER)      AS total_tokens
FROM (
  SELECT
    model, count(*) AS requests, sum(status >= 400) AS errors, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens
  FROM usage_events
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND created_at >= sqlc.arg(since) AND created_at < sqlc.arg(until)
  GROUP BY model
  UNION ALL
  SELECT model, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_daily
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND day >= sqlc.arg(since_day) AND day < sqlc.arg(until_day)
  GROUP BY model
)
GROUP BY model
ORDER BY model;

-- name: UsageTotalsByDayModel :many
-- UsageTotalsByModel per UTC day: raw events by the day they were created
-- in, rollups by theirs; sorted by day, then model bytewise.
SELECT
  CAST(day AS INTEGER)                    AS day,
  model,
  CAST(sum(requests) AS INTEGER)          AS requests,
  CAST(sum(errors) AS INTEGER)            AS errors,
  CAST(sum(prompt_tokens) AS INTEGER)     AS prompt_tokens,
  CAST(sum(completion_tokens) AS INTEGER) AS completion_tokens,
  CAST(sum(total_tokens) AS INTEGER)      AS total_tokens
FROM (
  SELECT
    created_at - created_at % 86400000 AS day, model, count(*) AS requests, sum(status >= 400) AS errors,
    sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens
  FROM usage_events
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND created_at >= sqlc.arg(since) AND created_at < sqlc.arg(until)
  GROUP BY created_at - created_at % 86400000, model
  UNION ALL
  SELECT day, model, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_daily
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND day >= sqlc.arg(since_day) AND day < sqlc.arg(until_day)
  GROUP BY day, model
)
GROUP BY day, model
ORDER BY day, model;

-- name: UsageList :many
-- Newest first; before_id is the smallest id of the previous page.
SELECT * FROM usage_events
WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
  AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
  AND id < sqlc.arg(before_id)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);

-- name: UsageDeleteBefore :many
-- Deletes and returns up to max_rows of the oldest events created before
-- @before, for UsagePrune to roll up in the same transaction.
DELETE FROM usage_events
WHERE id IN (
  SELECT old.id FROM usage_events AS old
  WHERE old.created_at < sqlc.arg(before)
  ORDER BY old.created_at
  LIMIT sqlc.arg(max_rows)
)
RETURNING *;
