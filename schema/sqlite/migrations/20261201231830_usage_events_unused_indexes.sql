-- Drop index "usage_events_project_created_idx" from table: "usage_events"
DROP INDEX `usage_events_project_created_idx`;
-- Drop index "usage_events_token_created_idx" from table: "usage_events"
DROP INDEX `usage_events_token_created_idx`;
