-- name: UsageHourlyAdd :exec
-- Adds one row's counts to the stored row of its key, inserting it when
-- new. UsageInsertBatch and UsageRollUp run it, prepared once, for each row
-- in their transaction: about a third of the cost per row of decoding the
-- rows from JSON (BenchmarkUsageInsertBatch, tokens=1000).
INSERT INTO usage_hourly (
  token_id, project_id, hour, model,
  requests, errors, prompt_tokens, completion_tokens, total_tokens
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
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
