-- Desired state of the SQLite schema. Edit this file, then run
-- `llmproxy migrate diff <name>` to plan a versioned migration.
-- Times are UTC unix milliseconds; booleans are 0/1.

CREATE TABLE projects (
  id                 INTEGER PRIMARY KEY,
  name               TEXT    NOT NULL,
  api_key_ciphertext BLOB    NOT NULL,
  api_key_hint       TEXT    NOT NULL,
  is_active          INTEGER NOT NULL DEFAULT 1,
  created_at         INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  updated_at         INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  CONSTRAINT projects_name_not_empty CHECK (name <> ''),
  CONSTRAINT projects_is_active_bool CHECK (is_active IN (0, 1))
) STRICT;
CREATE UNIQUE INDEX projects_name_key ON projects (name);

CREATE TABLE tokens (
  id            INTEGER PRIMARY KEY,
  project_id    INTEGER NOT NULL,
  secret_hash   BLOB    NOT NULL,
  token_prefix  TEXT    NOT NULL,
  expires_at    INTEGER NOT NULL,
  max_requests  INTEGER,
  request_count INTEGER NOT NULL DEFAULT 0,
  is_active     INTEGER NOT NULL DEFAULT 1,
  created_at    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  updated_at    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  last_used_at  INTEGER,
  -- Of request_count, requests reserved by proxies for admission leases and
  -- not yet used or given back (see service.AdmissionLease).
  requests_reserved INTEGER NOT NULL DEFAULT 0,
  -- The latest end of an admission lease granted for the token (unix ms by
  -- the database's clock; NULL: none yet): changes that restrict admission
  -- wait until then (see service.AdmissionLease).
  lease_until INTEGER,
  CONSTRAINT tokens_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects (id),
  CONSTRAINT tokens_max_requests_positive CHECK (max_requests IS NULL OR max_requests > 0),
  CONSTRAINT tokens_request_count_non_negative CHECK (request_count >= 0),
  CONSTRAINT tokens_requests_reserved_counted CHECK (requests_reserved >= 0 AND requests_reserved <= request_count),
  CONSTRAINT tokens_is_active_bool CHECK (is_active IN (0, 1))
) STRICT;
CREATE UNIQUE INDEX tokens_secret_hash_key ON tokens (secret_hash);
CREATE INDEX tokens_project_id_idx ON tokens (project_id, id);

-- One row per forwarded request. No foreign keys: rows are written in
-- batches off the hot path and must never be refused once a request was admitted.
CREATE TABLE usage_events (
  id                INTEGER PRIMARY KEY,
  token_id          INTEGER NOT NULL,
  project_id        INTEGER NOT NULL,
  method            TEXT    NOT NULL,
  path              TEXT    NOT NULL,
  model             TEXT    NOT NULL DEFAULT '',
  status            INTEGER NOT NULL,
  prompt_tokens     INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  total_tokens      INTEGER NOT NULL DEFAULT 0,
  latency_ms        INTEGER NOT NULL DEFAULT 0,
  created_at        INTEGER NOT NULL,
  event_id          BLOB,
  -- 1 once the event is counted in usage_hourly, which its writer does in
  -- the same transaction; 0 for events written before usage_hourly existed
  -- (or by an older llmproxy during a rolling upgrade), which usage reads
  -- count raw until service.Store.UsageRollUp adds them.
  rolled_up         INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE UNIQUE INDEX usage_events_event_id_key ON usage_events (event_id);
-- Reads search by created_at or id. Their project and token filters are
-- optional parameters, which SQLite cannot look up in an index, so there is
-- no project or token index to update on every insert (a third of a row's
-- cost; TestUsageQueriesSearchAnIndex holds the plans).
CREATE INDEX usage_events_created_idx ON usage_events (created_at);
-- The events not yet in usage_hourly: none once UsageRollUp has caught up,
-- so the index costs an insert nothing (its rows are written rolled up).
CREATE INDEX usage_events_unrolled_idx ON usage_events (created_at) WHERE rolled_up = 0;

-- Audit rows reference ids that may not exist (a refused request for an
-- unknown project is audited too), so there are no foreign keys here either.
CREATE TABLE audit_events (
  id         INTEGER PRIMARY KEY,
  actor      TEXT    NOT NULL,
  action     TEXT    NOT NULL,
  project_id INTEGER,
  token_id   INTEGER,
  result     TEXT    NOT NULL,
  details    TEXT    NOT NULL DEFAULT '{}',
  created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  CONSTRAINT audit_events_details_json CHECK (json_valid(details))
) STRICT;
CREATE INDEX audit_events_project_id_idx ON audit_events (project_id, id) WHERE project_id IS NOT NULL;

-- Usage rolled up per UTC day, project, token and model. Raw usage_events
-- past the retention are added here and deleted in the same transaction
-- (service.Store.UsagePrune), so every request is counted in exactly one of the
-- two tables. day is the unix milliseconds of the UTC midnight starting it.
CREATE TABLE usage_daily (
  day               INTEGER NOT NULL,
  project_id        INTEGER NOT NULL,
  token_id          INTEGER NOT NULL,
  model             TEXT    NOT NULL,
  requests          INTEGER NOT NULL,
  errors            INTEGER NOT NULL,
  prompt_tokens     INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  total_tokens      INTEGER NOT NULL,
  PRIMARY KEY (day, project_id, token_id, model),
  CONSTRAINT usage_daily_day_is_midnight CHECK (day % 86400000 = 0)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_daily_project_day_idx ON usage_daily (project_id, day);
CREATE INDEX usage_daily_token_day_idx ON usage_daily (token_id, day);

-- Usage rolled up per UTC hour at three levels, kept in the same transaction
-- as the events (see docs/database.md, "Usage rollups"):
--   token_id > 0:                one token's usage of one model;
--   token_id = 0, project_id > 0: all tokens of the project;
--   token_id = 0, project_id = 0: all projects.
-- So a read of one token, one project or everything sums at most one row
-- per hour and model, found by the primary key. hour is the unix
-- milliseconds of the hour's start. Hours that pass the usage retention are
-- folded into usage_daily (their token rows) and deleted.
CREATE TABLE usage_hourly (
  token_id          INTEGER NOT NULL,
  project_id        INTEGER NOT NULL,
  hour              INTEGER NOT NULL,
  model             TEXT    NOT NULL,
  requests          INTEGER NOT NULL,
  errors            INTEGER NOT NULL,
  prompt_tokens     INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  total_tokens      INTEGER NOT NULL,
  PRIMARY KEY (token_id, project_id, hour, model),
  CONSTRAINT usage_hourly_hour_is_whole CHECK (hour % 3600000 = 0),
  CONSTRAINT usage_hourly_level CHECK (token_id >= 0 AND project_id >= 0 AND (token_id = 0 OR project_id > 0))
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_hourly_hour_idx ON usage_hourly (hour);

-- Signed-in dashboard browsers (internal/admin). The cookie holds the
-- session's secret; only a keyed hash of it is stored, so the table signs
-- nobody in. Not carried by db copy, export or import.
CREATE TABLE sessions (
  secret_hash BLOB    NOT NULL PRIMARY KEY,
  csrf_token  TEXT    NOT NULL,
  expires_at  INTEGER NOT NULL,
  created_at  INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
) STRICT, WITHOUT ROWID;
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
