-- Modify "usage_events" table
ALTER TABLE "usage_events" ADD COLUMN "event_id" bytea NULL;
-- Create index "usage_events_event_id_key" to table: "usage_events"
CREATE UNIQUE INDEX "usage_events_event_id_key" ON "usage_events" ("event_id");
