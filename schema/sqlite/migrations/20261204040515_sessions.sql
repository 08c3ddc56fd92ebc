-- Create "sessions" table
CREATE TABLE `sessions` (
  `secret_hash` blob NOT NULL,
  `csrf_token` text NOT NULL,
  `expires_at` integer NOT NULL,
  `created_at` integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
  PRIMARY KEY (`secret_hash`)
) WITHOUT ROWID, STRICT;
-- Create index "sessions_expires_at_idx" to table: "sessions"
CREATE INDEX `sessions_expires_at_idx` ON `sessions` (`expires_at`);
