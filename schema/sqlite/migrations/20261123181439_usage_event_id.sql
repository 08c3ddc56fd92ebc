-- Add column "event_id" to table: "usage_events"
ALTER TABLE `usage_events` ADD COLUMN `event_id` blob NULL;
-- Create index "usage_events_event_id_key" to table: "usage_events"
CREATE UNIQUE INDEX `usage_events_event_id_key` ON `usage_events` (`event_id`);
