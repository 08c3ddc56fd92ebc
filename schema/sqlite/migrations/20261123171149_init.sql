-- Create "projects" table
CREATE TABLE `projects` (
  `id` integer NULL,
  `name` text NOT NULL,
  `api_key_ciphertext` blob NOT NULL,
  `api_key_hint` text NOT NULL,
  `is_active` integer NOT NULL DEFAULT 1,
  `created_at` integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  `updated_at` integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  PRIMARY KEY (`id`),
  CONSTRAINT `projects_name_not_empty` CHECK (name <> ''),
  CONSTRAINT `projects_is_active_bool` CHECK (is_active IN (0, 1))
) STRICT;
-- Create index "projects_name_key" to table: "projects"
CREATE UNIQUE INDEX `projects_name_key` ON `projects` (`name`);
-- Create "tokens" table
CREATE TABLE `tokens` (
  `id` integer NULL,
  `project_id` integer NOT NULL,
  `secret_hash` blob NOT NULL,
  `token_prefix` text NOT NULL,
  `expires_at` integer NOT NULL,
  `max_requests` integer NULL,
  `request_count` integer NOT NULL DEFAULT 0,
  `is_active` integer NOT NULL DEFAULT 1,
  `created_at` integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  `updated_at` integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  `last_used_at` integer NULL,
  PRIMARY KEY (`id`),
  CONSTRAINT `tokens_project_id_fkey` FOREIGN KEY (`project_id`) REFERENCES `projects` (`id`) ON UPDATE NO ACTION ON DELETE NO ACTION,
  CONSTRAINT `tokens_max_requests_positive` CHECK (max_requests IS NULL OR max_requests > 0),
  CONSTRAINT `tokens_request_count_non_negative` CHECK (request_count >= 0),
  CONSTRAINT `tokens_is_active_bool` CHECK (is_active IN (0, 1))
) STRICT;
-- Create index "tokens_secret_hash_key" to table: "tokens"
CREATE UNIQUE INDEX `tokens_secret_hash_key` ON `tokens` (`secret_hash`);
-- Create index "tokens_project_id_idx" to table: "tokens"
CREATE INDEX `tokens_project_id_idx` ON `tokens` (`project_id`, `id`);
-- Create "usage_events" table
CREATE TABLE `usage_events` (
  `id` integer NULL,
  `token_id` integer NOT NULL,
  `project_id` integer NOT NULL,
  `method` text NOT NULL,
  `path` text NOT NULL,
  `model` text NOT NULL DEFAULT '',
  `status` integer NOT NULL,
  `prompt_tokens` integer NOT NULL DEFAULT 0,
  `completion_tokens` integer NOT NULL DEFAULT 0,
  `total_tokens` integer NOT NULL DEFAULT 0,
  `latency_ms` integer NOT NULL DEFAULT 0,
  `created_at` integer NOT NULL,
  PRIMARY KEY (`id`)
) STRICT;
-- Create index "usage_events_project_created_idx" to table: "usage_events"
CREATE INDEX `usage_events_project_created_idx` ON `usage_events` (`project_id`, `created_at`);
-- Create index "usage_events_token_created_idx" to table: "usage_events"
CREATE INDEX `usage_events_token_created_idx` ON `usage_events` (`token_id`, `created_at`);
-- Create index "usage_events_created_idx" to table: "usage_events"
CREATE INDEX `usage_events_created_idx` ON `usage_events` (`created_at`);
-- Create "audit_events" table
CREATE TABLE `audit_events` (
  `id` integer NULL,
  `actor` text NOT NULL,
  `action` text NOT NULL,
  `project_id` integer NULL,
  `token_id` integer NULL,
  `result` text NOT NULL,
  `details` text NOT NULL DEFAULT '{}',
  `created_at` integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  PRIMARY KEY (`id`),
  CONSTRAINT `audit_events_details_json` CHECK (json_valid(details))
) STRICT;
-- Create index "audit_events_project_id_idx" to table: "audit_events"
CREATE INDEX `audit_events_project_id_idx` ON `audit_events` (`project_id`, `id`) WHERE project_id IS NOT NULL;
