-- name: UsageHourlyAdd :execrows
-- Adds each row's counts to the stored row of its key, inserting it when
-- new. The arrays, of equal length, are the rows' columns (unnests in a
-- select list advance together); keys must be distinct, and sorted so that
-- concurrent writers lock shared keys in the same order.
INSERT INTO usage_hourly (
  token_id, project_id, hour, model,
  requests, errors, prompt_tokens, completion_tokens, total_tokens
)
SELECT
  unnest(@token_ids::bigint[]), unnest(@project_ids::bigint[]), unnest(@hours::timestamptz[]),
  unnest(@models::text[]), unnest(@requests::bigint[]), unnest(@errors::bigint[]),
  unnest(@prompt_tokens::bigint[]), unnest(@completion_tokens::bigint[]), unnest(@total_tokens::bigint[])
ON CONFLICT (token_id, project_id, hour, model) DO UPDATE SET
  requests          = usage_hourly.requests + excluded.requests,
  errors            = usage_hourly.errors + excluded.errors,
  prompt_tokens     = usage_hourly.prompt_tokens + excluded.prompt_tokens,
  completion_tokens = usage_hourly.completion_tokens + excluded.completion_tokens,
  total_tokens      = usage_hourly.total_tokens + excluded.total_tokens;

-- name: UsageHourlyFold :many
-- Deletes and returns every row, of every level, of the oldest hour before
-- @before, for UsagePrune to add its token rows to usage_daily in the same
-- transaction: an hour moves from one table to the other at once. A
-- concurrent pruner folding the same hour waits for this one and then
-- finds its rows gone.
DELETE FROM usage_hourly
WHERE hour = (SELECT min(oldest.hour) FROM usage_hourly AS oldest WHERE oldest.hour < @before)
RETURNING *;
