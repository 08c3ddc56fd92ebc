-- Create "usage_daily" table
CREATE TABLE "usage_daily" (
  "day" date NOT NULL,
  "project_id" bigint NOT NULL,
  "token_id" bigint NOT NULL,
  "model" text NOT NULL COLLATE "C",
  "requests" bigint NOT NULL,
  "errors" bigint NOT NULL,
  "prompt_tokens" bigint NOT NULL,
  "completion_tokens" bigint NOT NULL,
  "total_tokens" bigint NOT NULL,
  PRIMARY KEY ("day", "project_id", "token_id", "model")
);
-- Create index "usage_daily_project_day_idx" to table: "usage_daily"
CREATE INDEX "usage_daily_project_day_idx" ON "usage_daily" ("project_id", "day");
-- Create index "usage_daily_token_day_idx" to table: "usage_daily"
CREATE INDEX "usage_daily_token_day_idx" ON "usage_daily" ("token_id", "day");
