-- Modify "tokens" table
ALTER TABLE "tokens" ADD COLUMN "lease_until" timestamptz NULL;
