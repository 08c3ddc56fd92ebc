-- name: ProjectDump :many
-- The *Dump and *InsertFullMany queries serve `llmproxy db copy`, `db export`
-- and `db import`: whole rows in id order, written back with their ids.
SELECT * FROM projects
WHERE id > sqlc.arg(after_id)
ORDER BY id
LIMIT sqlc.arg(max_rows);

-- name: TokenDump :many
SELECT * FROM tokens
WHERE id > sqlc.arg(after_id)
ORDER BY id
LIMIT sqlc.arg(max_rows);

-- name: UsageDump :many
SELECT * FROM usage_events
WHERE id > sqlc.arg(after_id)
ORDER BY id
LIMIT sqlc.arg(max_rows);

-- name: UsageDailyDump :many
-- usage_daily has no id: it pages in primary key order, after the key of
-- the previous page's last row (all zero: from the start).
SELECT * FROM usage_daily
WHERE (day, project_id, token_id, model)
    > (sqlc.arg(after_day), sqlc.arg(after_project_id), sqlc.arg(after_token_id), CAST(sqlc.arg(after_model) AS TEXT))
ORDER BY day, project_id, token_id, model
LIMIT sqlc.arg(max_rows);

-- name: AuditDump :many
SELECT * FROM audit_events
WHERE id > sqlc.arg(after_id)
ORDER BY id
LIMIT sqlc.arg(max_rows);

-- name: ProjectInsertFullMany :execrows
-- Each *InsertFullMany is one statement per batch: rows is a JSON array of
-- objects keyed by column name, blobs in hex, times in unix milliseconds.
INSERT INTO projects (id, name, api_key_ciphertext, api_key_hint, is_active, created_at, updated_at)
SELECT
  json_extract(value, '$.id'), json_extract(value, '$.name'),
  unhex(json_extract(value, '$.api_key_ciphertext')), json_extract(value, '$.api_key_hint'),
  json_extract(value, '$.is_active'), json_extract(value, '$.created_at'),
  json_extract(value, '$.updated_at')
FROM json_each(CAST(sqlc.arg(rows) AS TEXT));

-- name: TokenInsertFullMany :execrows
INSERT INTO tokens (
  id, project_id, secret_hash, token_prefix, expires_at, max_requests,
  request_count, is_active, created_at, updated_at, last_used_at, requests_reserved, lease_until
)
SELECT
  json_extract(value, '$.id'), json_extract(value, '$.project_id'),
  unhex(json_extract(value, '$.secret_hash')), json_extract(value, '$.token_prefix'),
  json_extract(value, '$.expires_at'), json_extract(value, '$.max_requests'),
  json_extract(value, '$.request_count'), json_extract(value, '$.is_active'),
  json_extract(value, '$.created_at'), json_extract(value, '$.updated_at'),
  json_extract(value, '$.last_used_at'), json_extract(value, '$.requests_reserved'),
  json_extract(value, '$.lease_until')
FROM json_each(CAST(sqlc.arg(rows) AS TEXT));

-- name: UsageInsertFullMany :execrows
INSERT INTO usage_events (
  id, token_id, project_id, method, path, model, status,
  prompt_tokens, completion_tokens, total_tokens, latency_ms, created_at, event_id
)
SELECT
  json_extract(value, '$.id'),
  json_extract(value, '$.token_id'), json_extract(value, '$.project_id'),
  json_extract(value, '$.method'), json_extract(value, '$.path'),
  json_extract(value, '$.model'), json_extract(value, '$.status'),
  json_extract(value, '$.prompt_tokens'), json_extract(value, '$.completion_tokens'),
  json_extract(value, '$.total_tokens'), json_extract(value, '$.latency_ms'),
  json_extract(value, '$.created_at'), unhex(json_extract(value, '$.event_id'))
FROM json_each(CAST(sqlc.arg(rows) AS TEXT));

-- name: UsageDailyInsertFullMany :execrows
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
FROM json_each(CAST(sqlc.arg(rows) AS TEXT));

-- name: AuditInsertFullMany :execrows
-- details is a JSON string holding the document's text, kept as it is.
INSERT INTO audit_events (id, actor, action, project_id, token_id, result, details, created_at)
SELECT
  json_extract(value, '$.id'), json_extract(value, '$.actor'),
  json_extract(value, '$.action'), json_extract(value, '$.project_id'),
  json_extract(value, '$.token_id'), json_extract(value, '$.result'),
  json_extract(value, '$.details'), json_extract(value, '$.created_at')
FROM json_each(CAST(sqlc.arg(rows) AS TEXT));

-- name: TableCounts :one
SELECT
  (SELECT count(*) FROM projects)     AS projects,
  (SELECT count(*) FROM tokens)       AS tokens,
  (SELECT count(*) FROM usage_events) AS usage_events,
  (SELECT count(*) FROM usage_daily)  AS usage_daily,
  (SELECT count(*) FROM audit_events) AS audit_events;

-- name: TableSequencesReset :one
-- SQLite has no sequence to reset: a new row gets max(id) + 1. This returns
-- those next ids, as the Postgres query does after setting its sequences.
SELECT
  CAST(COALESCE((SELECT max(id) FROM projects), 0) + 1 AS INTEGER)     AS projects,
  CAST(COALESCE((SELECT max(id) FROM tokens), 0) + 1 AS INTEGER)       AS tokens,
  CAST(COALESCE((SELECT max(id) FROM usage_events), 0) + 1 AS INTEGER) AS usage_events,
  CAST(COALESCE((SELECT max(id) FROM audit_events), 0) + 1 AS INTEGER) AS audit_events;

-- name: ProjectDeleteAll :exec
DELETE FROM projects;

-- name: TokenDeleteAll :exec
DELETE FROM tokens;

-- name: UsageDeleteAll :exec
DELETE FROM usage_events;

-- name: UsageDailyDeleteAll :exec
DELETE FROM usage_daily;

-- name: AuditDeleteAll :exec
DELETE FROM audit_events;
