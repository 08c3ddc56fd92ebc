-- Create "usage_daily" table
CREATE TABLE `usage_daily` (
  `day` integer NOT NULL,
  `project_id` integer NOT NULL,
  `token_id` integer NOT NULL,
  `model` text NOT NULL,
  `requests` integer NOT NULL,
  `errors` integer NOT NULL,
  `prompt_tokens` integer NOT NULL,
  `completion_tokens` integer NOT NULL,
  `total_tokens` integer NOT NULL,
  PRIMARY KEY (`day`, `project_id`, `token_id`, `model`),
  CONSTRAINT `usage_daily_day_is_midnight` CHECK (day % 86400000 = 0)
) WITHOUT ROWID, STRICT;
-- Create index "usage_daily_project_day_idx" to table: "usage_daily"
CREATE INDEX `usage_daily_project_day_idx` ON `usage_daily` (`project_id`, `day`);
-- Create index "usage_daily_token_day_idx" to table: "usage_daily"
CREATE INDEX `usage_daily_token_day_idx` ON `usage_daily` (`token_id`, `day`);
