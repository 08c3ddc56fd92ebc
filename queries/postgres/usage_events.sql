-- name: UsageInsert :execrows
-- One event, not rolled up (rolled_up is false): usage reads count it raw
-- until UsageRollUp adds it to usage_hourly. Not run by pgstore, whose
-- UsageInsertBatch writes and rolls up every batch, one event too; kept
-- because both dialects' name sets must match. An event whose event_id is
-- stored already is skipped.
INSERT INTO usage_events (
  token_id, project_id, method, path, model, status,
  prompt_tokens, completion_tokens, total_tokens, latency_ms, created_at, event_id
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (event_id) DO NOTHING;

-- name: UsageInsertBatch :one
-- One statement of parallel arrays of equal length, one element per event
-- (unnests in a select list advance in step): it writes the events rolled
-- up and adds the ones it wrote to usage_hourly at its three levels
-- (GROUPING SETS; service.UsageHourlyKey), sorted by key so that
-- concurrent batches lock shared rows in the same order. An event whose
-- event_id is stored already is skipped, so a retried batch is written and
-- rolled up once (COPY cannot skip a conflict). Returns the events written.
WITH written AS (
  INSERT INTO usage_events (
    token_id, project_id, method, path, model, status,
    prompt_tokens, completion_tokens, total_tokens, latency_ms, created_at, event_id, rolled_up
  )
  SELECT
    unnest(@token_ids::bigint[]), unnest(@project_ids::bigint[]),
    unnest(@methods::text[]), unnest(@paths::text[]),
    unnest(@models::text[]), unnest(@statuses::bigint[]),
    unnest(@prompt_tokens::bigint[]), unnest(@completion_tokens::bigint[]),
    unnest(@total_tokens::bigint[]), unnest(@latencies_ms::bigint[]),
    unnest(@created_ats::timestamptz[]), unnest(@event_ids::bytea[]), true
  ON CONFLICT (event_id) DO NOTHING
  RETURNING token_id, project_id, model, status, prompt_tokens, completion_tokens, total_tokens, created_at
), rolled AS (
  INSERT INTO usage_hourly (
    token_id, project_id, hour, model,
    requests, errors, prompt_tokens, completion_tokens, total_tokens
  )
  SELECT
    COALESCE(token_id, 0), COALESCE(project_id, 0), hour, model, count(*),
    count(*) FILTER (WHERE status >= 400), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM (SELECT *, date_trunc('hour', created_at, 'UTC') AS hour FROM written) AS e
  GROUP BY GROUPING SETS ((token_id, project_id, hour, model), (project_id, hour, model), (hour, model))
  ORDER BY 1, 2, 3, 4
  ON CONFLICT (token_id, project_id, hour, model) DO UPDATE SET
    requests          = usage_hourly.requests + excluded.requests,
    errors            = usage_hourly.errors + excluded.errors,
    prompt_tokens     = usage_hourly.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = usage_hourly.completion_tokens + excluded.completion_tokens,
    total_tokens      = usage_hourly.total_tokens + excluded.total_tokens
)
SELECT count(*) FROM written;

-- The usage reads below count the range [since, until) exactly once:
--   - whole hours [hour_since, hour_until) from usage_hourly, the rows of
--     one level (rollup_token 0 with project bounds 0..0: everything; 0 with
--     p..p: project p; t with p..p or 1..max: token t);
--   - events of those hours not rolled up yet, by usage_events_unrolled_idx;
--   - the partial hours [since, hour_since) and [hour_until, until) from
--     raw events, by usage_events_created_idx;
--   - the days past the retention whose midnight is in the range,
--     [since_day, until_day), from usage_daily.
-- service.UsageReadRange computes the bounds.

-- name: UsageTotalsByModel :many
-- The usage of each model, sorted bytewise as in SQLite: the rollups'
-- model collation "C" is the union's. UsageTotals is their sum.
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
    AND ((created_at >= @since::timestamptz AND created_at < @hour_since::timestamptz)
      OR (created_at >= @hour_until::timestamptz AND created_at < @until::timestamptz))
  GROUP BY model
  UNION ALL
  SELECT model, count(*), count(*) FILTER (WHERE status >= 400), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_events
  WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
    AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
    AND NOT rolled_up AND created_at >= @hour_since::timestamptz AND created_at < @hour_until::timestamptz
  GROUP BY model
  UNION ALL
  SELECT model, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_hourly
  WHERE token_id = @rollup_token::bigint
    AND project_id BETWEEN @rollup_project_min::bigint AND @rollup_project_max::bigint
    AND hour >= @hour_since::timestamptz AND hour < @hour_until::timestamptz
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
-- UsageTotalsByModel per UTC day: events and hours by the day they are in,
-- rollups by theirs; sorted by day, then model bytewise (collation "C", as
-- UsageTotalsByModel).
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
    AND ((created_at >= @since::timestamptz AND created_at < @hour_since::timestamptz)
      OR (created_at >= @hour_until::timestamptz AND created_at < @until::timestamptz))
  GROUP BY (created_at AT TIME ZONE 'UTC')::date, model
  UNION ALL
  SELECT (created_at AT TIME ZONE 'UTC')::date, model, count(*), count(*) FILTER (WHERE status >= 400), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_events
  WHERE (sqlc.narg(project_id)::bigint IS NULL OR project_id = sqlc.narg(project_id)::bigint)
    AND (sqlc.narg(token_id)::bigint IS NULL OR token_id = sqlc.narg(token_id)::bigint)
    AND NOT rolled_up AND created_at >= @hour_since::timestamptz AND created_at < @hour_until::timestamptz
  GROUP BY (created_at AT TIME ZONE 'UTC')::date, model
  UNION ALL
  SELECT (hour AT TIME ZONE 'UTC')::date, model, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens)
  FROM usage_hourly
  WHERE token_id = @rollup_token::bigint
    AND project_id BETWEEN @rollup_project_min::bigint AND @rollup_project_max::bigint
    AND hour >= @hour_since::timestamptz AND hour < @hour_until::timestamptz
  GROUP BY (hour AT TIME ZONE 'UTC')::date, model
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

-- name: UsageDeleteBefore :execrows
-- Deletes up to max_rows of the oldest rolled-up events created before
-- @before: their counts stay in usage_hourly (and, once folded, in
-- usage_daily). Events not rolled up yet are left for UsageRollUp. Rows
-- another transaction has locked are skipped, not waited for, so
-- concurrent pruners take disjoint batches.
DELETE FROM usage_events
WHERE id IN (
  SELECT old.id FROM usage_events AS old
  WHERE old.created_at < @before AND old.rolled_up
  ORDER BY old.created_at
  LIMIT @max_rows::bigint
  FOR UPDATE SKIP LOCKED
);

-- name: UsageRollUpBatch :many
-- Marks up to max_rows of the oldest events not in usage_hourly as rolled
-- up and returns them, for UsageRollUp to add to usage_hourly in the same
-- transaction. Rows another transaction has locked (another instance's
-- batch) are skipped, not waited for, so no event is rolled up twice.
UPDATE usage_events SET rolled_up = true
WHERE id IN (
  SELECT old.id FROM usage_events AS old
  WHERE NOT old.rolled_up
  ORDER BY old.created_at
  LIMIT @max_rows::bigint
  FOR UPDATE SKIP LOCKED
)
RETURNING token_id, project_id, model, status, prompt_tokens, completion_tokens, total_tokens, created_at;
