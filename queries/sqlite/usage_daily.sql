-- name: UsageDailyAddMany :execrows
-- Adds each row's counts to the stored row of its key, inserting it when
-- new. rows is a JSON array of objects keyed by column name, day in unix
-- milliseconds. The WHERE is needed: without it SQLite would read ON
-- CONFLICT as the ON of a join.
INSERT INTO usage_daily (
  day, project_id, token_id, model,
  requests, errors, prompt_tokens, completion_tokens, total_tokens
)
SELECT
  json_extract(value, '$.day'), json_extract(value, '$.project_id'),
  json_extract(value, '$.token_id'), json_extract(value, '$.model'),
  json_extract(value, '$.requests'), json_extract(value, '$.errors'),
  json_extract(value, '$.prompt_tokens'), json_extract(value, '$.completion_tokens'),
  json_extract(value, '$.total_tokens')
FROM json_each(CAST(sqlc.arg(rows) AS TEXT))
WHERE true
ON CONFLICT (day, project_id, token_id, model) DO UPDATE SET
  requests          = requests + excluded.requests,
  errors            = errors + excluded.errors,
  prompt_tokens     = prompt_tokens + excluded.prompt_tokens,
  completion_tokens = completion_tokens + excluded.completion_tokens,
  total_tokens      = total_tokens + excluded.total_tokens;
