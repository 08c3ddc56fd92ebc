-- Add column "lease_until" to table: "tokens"
ALTER TABLE `tokens` ADD COLUMN `lease_until` integer NULL;
