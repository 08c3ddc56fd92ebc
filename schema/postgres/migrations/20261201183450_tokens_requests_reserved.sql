-- Modify "tokens" table
ALTER TABLE "tokens" ADD CONSTRAINT "tokens_requests_reserved_counted" CHECK ((requests_reserved >= 0) AND (requests_reserved <= request_count)), ADD COLUMN "requests_reserved" bigint NOT NULL DEFAULT 0;
