-- name: UsageInsert :execrows
-- One event; UsageInsertBatch runs it, prepared once, for each event of a
-- batch in one transaction, which costs less per row than decoding the batch
-- with json_each. An event whose event_id is stored already is skipped, so a
-- retried batch is written once. The event is written rolled up: the
-- caller adds it to usage_hourly in the same transaction.
INSERT INTO usage_events (
  token_id, project_id, method, path, model, status,
  prompt_tokens, completion_tokens, total_tokens, latency_ms, created_at, event_id, rolled_up
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
ON CONFLICT (event_id) DO NOTHING;

-- name: UsageInsertBatch :execrows
-- Not run by sqlitestore, whose UsageInsertBatch runs UsageInsert per event
-- (cheaper); kept because both dialects' name sets must match. One
-- multi-row INSERT: rows is a JSON array of objects keyed by column name,
-- event_id in hex or null. An event whose event_id is stored already is
-- skipped. The events are not rolled up (rolled_up is 0): usage reads
-- count them raw until UsageRollUp adds them to usage_hourly. (WHERE true
-- lets SQLite parse ON CONFLICT after a SELECT.)
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

-- The usage reads below count the range [since, until) exactly once:
--   - whole hours [hour_since, hour_until) from usage_hourly, the rows of
--     one level (rollup_token 0 with project bounds 0..0: everything; 0 with
--     p..p: project p; t with p..p or 1..max: token t);
--   - events of those hours not rolled up yet, by usage_events_unrolled_idx;
--   - the partial hours [since, hour_since) and [hour_until, until) from
--     raw events, by usage_events_created_idx;
--   - the days past the retention whose midnight is in the range,
--     [since_day, until_day), from usage_daily.
-- service.UsageReadRange computes the bounds. Without statistics (no
-- ANALYZE has run) SQLite may pick the wrong index: INDEXED BY keeps it
-- from reading every event of the whole hours through created_at to find
-- the few not rolled up, and +hour from searching usage_hourly by
-- usage_hourly_hour_idx, which serves pruning, instead of its primary key.

-- name: UsageTotalsByModel :many
-- The usage of each model; UsageTotals is their sum.
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
    AND created_at >= sqlc.arg(since) AND created_at < sqlc.arg(hour_since)
  GROUP BY model
  UNION ALL
  SELECT model, count(*), sum(status >= 400), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_events
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND created_at >= sqlc.arg(hour_until) AND created_at < sqlc.arg(until)
  GROUP BY model
  UNION ALL
  SELECT model, count(*), sum(status >= 400), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_events INDEXED BY usage_events_unrolled_idx
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND rolled_up = 0 AND created_at >= sqlc.arg(hour_since) AND created_at < sqlc.arg(hour_until)
  GROUP BY model
  UNION ALL
  SELECT model, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_hourly
  WHERE token_id = sqlc.arg(rollup_token)
    AND project_id BETWEEN sqlc.arg(rollup_project_min) AND sqlc.arg(rollup_project_max)
    AND +hour >= sqlc.arg(hour_since) AND +hour < sqlc.arg(hour_until)
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
-- UsageTotalsByModel per UTC day: events and hours by the day they are in,
-- rollups by theirs; sorted by day, then model bytewise.
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
    created_at - created_at % 86400000 AS day, model, count(*) AS requests, sum(status >= 400) AS errors, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens
  FROM usage_events
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND created_at >= sqlc.arg(since) AND created_at < sqlc.arg(hour_since)
  GROUP BY created_at - created_at % 86400000, model
  UNION ALL
  SELECT created_at - created_at % 86400000, model, count(*), sum(status >= 400), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_events
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND created_at >= sqlc.arg(hour_until) AND created_at < sqlc.arg(until)
  GROUP BY created_at - created_at % 86400000, model
  UNION ALL
  SELECT created_at - created_at % 86400000, model, count(*), sum(status >= 400), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_events INDEXED BY usage_events_unrolled_idx
  WHERE (CAST(sqlc.narg(project_id) AS INTEGER) IS NULL OR project_id = CAST(sqlc.narg(project_id) AS INTEGER))
    AND (CAST(sqlc.narg(token_id) AS INTEGER) IS NULL OR token_id = CAST(sqlc.narg(token_id) AS INTEGER))
    AND rolled_up = 0 AND created_at >= sqlc.arg(hour_since) AND created_at < sqlc.arg(hour_until)
  GROUP BY created_at - created_at % 86400000, model
  UNION ALL
  SELECT hour - hour % 86400000, model, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_hourly
  WHERE token_id = sqlc.arg(rollup_token)
    AND project_id BETWEEN sqlc.arg(rollup_project_min) AND sqlc.arg(rollup_project_max)
    AND +hour >= sqlc.arg(hour_since) AND +hour < sqlc.arg(hour_until)
  GROUP BY hour - hour % 86400000, model
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

-- name: UsageDeleteBefore :execrows
-- Deletes up to max_rows of the oldest rolled-up events created before
-- @before: their counts stay in usage_hourly (and, once folded, in
-- usage_daily). Events not rolled up yet are left for UsageRollUp.
DELETE FROM usage_events
WHERE id IN (
  SELECT old.id FROM usage_events AS old
  WHERE old.created_at < sqlc.arg(before) AND old.rolled_up = 1
  ORDER BY old.created_at
  LIMIT sqlc.arg(max_rows)
);

-- name: UsageRollUpBatch :many
-- Marks up to max_rows of the oldest events not in usage_hourly as rolled
-- up and returns them, for UsageRollUp to add to usage_hourly in the same
-- transaction.
UPDATE usage_events SET rolled_up = 1
WHERE id IN (
  SELECT old.id FROM usage_events AS old
  WHERE old.rolled_up = 0
  ORDER BY old.created_at
  LIMIT sqlc.arg(max_rows)
)
RETURNING token_id, project_id, model, status, prompt_tokens, completion_tokens, total_tokens, created_at;
