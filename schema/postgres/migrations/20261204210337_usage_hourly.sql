-- Modify "usage_events" table
ALTER TABLE "usage_events" ADD COLUMN "rolled_up" boolean NOT NULL DEFAULT false;
-- Create index "usage_events_unrolled_idx" to table: "usage_events"
CREATE INDEX "usage_events_unrolled_idx" ON "usage_events" ("created_at") WHERE (NOT rolled_up);
-- Create "usage_hourly" table
CREATE TABLE "usage_hourly" (
  "token_id" bigint NOT NULL,
  "project_id" bigint NOT NULL,
  "hour" timestamptz NOT NULL,
  "model" text NOT NULL COLLATE "C",
  "requests" bigint NOT NULL,
  "errors" bigint NOT NULL,
  "prompt_tokens" bigint NOT NULL,
  "completion_tokens" bigint NOT NULL,
  "total_tokens" bigint NOT NULL,
  PRIMARY KEY ("token_id", "project_id", "hour", "model") INCLUDE ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens"),
  CONSTRAINT "usage_hourly_hour_is_whole" CHECK (date_trunc('hour'::text, hour, 'UTC'::text) = hour),
  CONSTRAINT "usage_hourly_level" CHECK ((token_id >= 0) AND (project_id >= 0) AND ((token_id = 0) OR (project_id > 0)))
);
-- Create index "usage_hourly_hour_idx" to table: "usage_hourly"
CREATE INDEX "usage_hourly_hour_idx" ON "usage_hourly" ("hour");
