-- Add column "rolled_up" to table: "usage_events"
ALTER TABLE `usage_events` ADD COLUMN `rolled_up` integer NOT NULL DEFAULT 0;
-- Create index "usage_events_unrolled_idx" to table: "usage_events"
CREATE INDEX `usage_events_unrolled_idx` ON `usage_events` (`created_at`) WHERE rolled_up = 0;
-- Create "usage_hourly" table
CREATE TABLE `usage_hourly` (
  `token_id` integer NOT NULL,
  `project_id` integer NOT NULL,
  `hour` integer NOT NULL,
  `model` text NOT NULL,
  `requests` integer NOT NULL,
  `errors` integer NOT NULL,
  `prompt_tokens` integer NOT NULL,
  `completion_tokens` integer NOT NULL,
  `total_tokens` integer NOT NULL,
  PRIMARY KEY (`token_id`, `project_id`, `hour`, `model`),
  CONSTRAINT `usage_hourly_hour_is_whole` CHECK (hour % 3600000 = 0),
  CONSTRAINT `usage_hourly_level` CHECK (token_id >= 0 AND project_id >= 0 AND (token_id = 0 OR project_id > 0))
) WITHOUT ROWID, STRICT;
-- Create index "usage_hourly_hour_idx" to table: "usage_hourly"
CREATE INDEX `usage_hourly_hour_idx` ON `usage_hourly` (`hour`);
