-- Disable the enforcement of foreign-keys constraints
PRAGMA foreign_keys = off;
-- Create "new_tokens" table
CREATE TABLE `new_tokens` (
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
  `requests_reserved` integer NOT NULL DEFAULT 0,
  PRIMARY KEY (`id`),
  CONSTRAINT `tokens_project_id_fkey` FOREIGN KEY (`project_id`) REFERENCES `projects` (`id`) ON UPDATE NO ACTION ON DELETE NO ACTION,
  CONSTRAINT `tokens_max_requests_positive` CHECK (max_requests IS NULL OR max_requests > 0),
  CONSTRAINT `tokens_request_count_non_negative` CHECK (request_count >= 0),
  CONSTRAINT `tokens_requests_reserved_counted` CHECK (requests_reserved >= 0 AND requests_reserved <= request_count),
  CONSTRAINT `tokens_is_active_bool` CHECK (is_active IN (0, 1))
) STRICT;
-- Copy rows from old table "tokens" to new temporary table "new_tokens"
INSERT INTO `new_tokens` (`id`, `project_id`, `secret_hash`, `token_prefix`, `expires_at`, `max_requests`, `request_count`, `is_active`, `created_at`, `updated_at`, `last_used_at`) SELECT `id`, `project_id`, `secret_hash`, `token_prefix`, `expires_at`, `max_requests`, `request_count`, `is_active`, `created_at`, `updated_at`, `last_used_at` FROM `tokens`;
-- Drop "tokens" table after copying rows
DROP TABLE `tokens`;
-- Rename temporary table "new_tokens" to "tokens"
ALTER TABLE `new_tokens` RENAME TO `tokens`;
-- Create index "tokens_secret_hash_key" to table: "tokens"
CREATE UNIQUE INDEX `tokens_secret_hash_key` ON `tokens` (`secret_hash`);
-- Create index "tokens_project_id_idx" to table: "tokens"
CREATE INDEX `tokens_project_id_idx` ON `tokens` (`project_id`, `id`);
-- Enable back the enforcement of foreign-keys constraints
PRAGMA foreign_keys = on;
