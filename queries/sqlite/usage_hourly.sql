-- name: UsageHourlyAddMany :execrows
-- Adds each row's counts to the stored row of its key, inserting it when
-- new. rows is a JSON array of objects keyed by column name, hour in unix
-- milliseconds. The WHERE is needed: without it SQLite would read ON
-- CONFLICT as the ON of a join.
INSERT INTO usage_hourly (
  token_id, project_id, hour, model,
  requests, errors, prompt_tokens, completion_tokens, total_tokens
)
SELECT
  json_extract(value, '$.token_id'), json_extract(value, '$.project_id'),
  json_extract(value, '$.hour'), json_extract(value, '$.model'),
  json_extract(value, '$.requests'), json_extract(value, '$.errors'),
  json_extract(value, '$.prompt_tokens'), json_extract(value, '$.completion_tokens'),
  json_extract(value, '$.total_tokens')
FROM json_each(CAST(sqlc.arg(rows) AS TEXT))
WHERE true
ON CONFLICT (token_id, project_id, hour, model) DO UPDATE SET
  requests          = requests + excluded.requests,
  errors            = errors + excluded.errors,
  prompt_tokens     = prompt_tokens + excluded.prompt_tokens,
  completion_tokens = completion_tokens + excluded.completion_tokens,
  total_tokens      = total_tokens + excluded.total_tokens;

-- name: UsageHourlyFold :many
-- Deletes and returns every row, of every level, of the oldest hour before
-- @before, for UsagePrune to add its token rows to usage_daily in the same
-- transaction: an hour moves from one table to the other at once.
DELETE FROM usage_hourly
WHERE hour = (SELECT min(oldest.hour) FROM usage_hourly AS oldest WHERE oldest.hour < sqlc.arg(before))
RETURNING *;
