-- name: UsageDailyAddMany :execrows
-- Adds each row's counts to the stored row of its key, inserting it when
-- new. The arrays, of equal length, are the rows' columns (unnests in a
-- select list advance together); keys must be distinct, and sorted
-- so that concurrent pruners lock shared keys in the same order.
INSERT INTO usage_daily (
  day, project_id, token_id, model,
  requests, errors, prompt_tokens, completion_tokens, total_tokens
)
SELECT
  unnest(@days::date[]), unnest(@project_ids::bigint[]), unnest(@token_ids::bigint[]),
  unnest(@models::text[]), unnest(@requests::bigint[]), unnest(@errors::bigint[]),
  unnest(@prompt_tokens::bigint[]), unnest(@completion_tokens::bigint[]), unnest(@total_tokens::bigint[])
ON CONFLICT (day, project_id, token_id, model) DO UPDATE SET
  requests          = usage_daily.requests + excluded.requests,
  errors            = usage_daily.errors + excluded.errors,
  prompt_tokens     = usage_daily.prompt_tokens + excluded.prompt_tokens,
  completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens,
  total_tokens      = usage_daily.total_tokens + excluded.total_tokens;
