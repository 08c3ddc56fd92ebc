-- name: UsageInsert :execrows
-- One event, for a batch of one (the usage recorder writes an event a batch
-- refused alone). An event whose event_id is stored already is skipped.
INSERT INTO usage_events (
  token_id, project_id, method, path, model, status,
  prompt_tokens, completion_tokens, total_tokens, latency_ms, created_at, event_id
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (event_id) DO NOTHING;

-- name: UsageInsertBatch :execrows
-- One INSERT of parallel arrays of equal length, one element per event
-- (unnests in a select list advance in step). An event whose
-- event_id is stored already is skipped, so a retried batch is written once
-- (COPY cannot skip a conflict).
INSERT INTO usage_events (
  token_id, project_id, method, path, model, status,
  prompt_tokens, completion_tokens, total_tokens, latency_ms, created_at, event_id
)
SELECT
  unnest(@token_ids::bigint[]), unnest(@project_ids::bigint[]),
  unnest(@methods::text[]), unnest(@paths::text[]),
  unnest(@models::text[]), unnest(@statuses::bigint[]),
  unnest(@prompt_tokens::bigint[]), unnest(@completion_tokens::bigint[]),
  unnest(@total_tokens::bigint[]), unnest(@latencies_ms::bigint[]),
  unnest(@created_ats::timestamptz[]), unnest(@event_ids::bytea[])
ON CONFLICT (event_id) DO NOTHING;

-- name: UsageTotals :one
-- The raw events created in [since, until) plus the rollups of the days in
-- [since_day, until_day): pruning moves each event from one table to the
-- other in one transaction, so every request is counted exactly once.
SELECT
  sum(requests)::bigint          AS requests,
  sum(errors)::bigint            AS errors,
  sum(prompt_tokens)::bigint     AS prompt_tokens,
  sum(completion_tokens)::bigint AS completion_tokens,
  sum(total_tokens)::bigint      AS total_tokens
FROM (
  SELECT
    count(*)                              AS requests,
    count(*) FILTER (WHERE status >= 400) AS errors,
    COALESCE(sum(prompt_tokens), 0)       AS prompt_tokens,
    COALESCE(sum(completion_tokens), 0)   AS completion_tokens,
    COALESCE(sum(total_tokens), 0)        AS total_tokens
  FROM usage_events
  WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
    AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
    AND created_at >= @since AND created_at < @until
  UNION ALL
  SELECT
    COALESCE(sum(requests), 0), COALESCE(sum(errors), 0), COALESCE(sum(prompt_tokens), 0),
    COALESCE(sum(completion_tokens), 0), COALESCE(sum(total_tokens), 0)
  FROM usage_daily
  WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
    AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
    AND day >= @since_day::date AND day < @until_day::date
) AS u;

-- name: UsageTotalsByModel :many
-- UsageTotals per model, sorted bytewise as in SQLite: usage_daily.model's
-- collation "C" is the union's.
SELECT
  model,
  sum(requests)::bigint          AS requests,
  sum(errors)::bigint            AS errors,
  sum(prompt_tokens)::bigint     AS prompt_tokens,
  sum(completion_tokens)::bigint AS completion_tokens,
  sum(total_tokens)::bigint      AS total_tokens
FROM (
  SELECT
    model,
    count(*)                              AS requests,
    count(*) FILTER (WHERE status >= 400) AS errors,
    sum(prompt_tokens)                    AS prompt_tokens,
    sum(completion_tokens)                AS completion_tokens,
    sum(total_tokens)                     AS total_tokens
  FROM usage_events
  WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
    AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
    AND created_at >= @since AND created_at < @until
  GROUP BY model
  UNION ALL
  SELECT model, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_daily
  WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
    AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
    AND day >= @since_day::date AND day < @until_day::date
  GROUP BY model
) AS u
GROUP BY model
ORDER BY model;

-- name: UsageTotalsByDayModel :many
-- UsageTotalsByModel per UTC day: raw events by the day they were created
-- in, rollups by theirs; sorted by day, then model bytewise (collation "C",
-- as UsageTotalsByModel).
SELECT
  day::date                      AS day,
  model,
  sum(requests)::bigint          AS requests,
  sum(errors)::bigint            AS errors,
  sum(prompt_tokens)::bigint     AS prompt_tokens,
  sum(completion_tokens)::bigint AS completion_tokens,
  sum(total_tokens)::bigint      AS total_tokens
FROM (
  SELECT
    (created_at AT TIME ZONE 'UTC')::date AS day,
    model,
    count(*)                              AS requests,
    count(*) FILTER (WHERE status >= 400) AS errors,
    sum(prompt_tokens)                    AS prompt_tokens,
    sum(completion_tokens)                AS completion_tokens,
    sum(total_tokens)                     AS total_tokens
  FROM usage_events
  WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
    AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
    AND created_at >= @since AND created_at < @until
  GROUP BY (created_at AT TIME ZONE 'UTC')::date, model
  UNION ALL
  SELECT day, model, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_daily
  WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
    AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
    AND day >= @since_day::date AND day < @until_day::date
  GROUP BY day, model
) AS u
GROUP BY day, model
ORDER BY day, model;

-- name: UsageList :many
-- Newest first; before_id is the smallest id of the previous page.
SELECT * FROM usage_events
WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
  AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
  AND id < @before_id
ORDER BY id DESC
LIMIT @max_rows::bigint;

-- name: UsageDeleteBefore :many
-- Deletes and returns up to max_rows of the oldest events created before
-- @before, for UsagePrune to roll up in the same transaction. Rows another
-- transaction has locked are skipped, not waited for, so concurrent pruners
-- take disjoint batches and none is rolled up twice.
DELETE FROM usage_events
WHERE id IN (
  SELECT old.id FROM usage_events AS old
  WHERE old.created_at < @before
  ORDER BY old.created_at
  LIMIT @max_rows::bigint
  FOR UPDATE SKIP LOCKED
)
RETURNING *;
