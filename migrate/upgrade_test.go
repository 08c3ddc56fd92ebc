package migrate_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/llmproxy/llmproxy/migrate"
)

// upgradeFrom brings a database to the schema just before the migration
// named name, runs seed there (one statement per string), applies every
// migration, and hands the database to check.
func upgradeFrom(t *testing.T, name string, seed map[migrate.Dialect][]string, check func(t *testing.T, db *sql.DB, d migrate.Dialect)) {
	t.Helper()
	for _, e := range engines {
		t.Run(string(e.dialect), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			files := embeddedFiles(t, e.dialect)
			at := -1
			for i, f := range files {
				if strings.HasSuffix(f.Name(), "_"+name+".sql") {
					at = i
				}
			}
			if at < 1 {
				t.Fatalf("no %s migration %q after another", e.dialect, name)
			}
			db := e.open(t)
			if _, err := migrate.ApplyDir(ctx, db, e.dialect, memDir(t, files[:at]...)); err != nil {
				t.Fatal(err)
			}
			for _, stmt := range seed[e.dialect] {
				if _, err := db.ExecContext(ctx, stmt); err != nil {
					t.Fatalf("seed before %s: %s: %v", name, stmt, err)
				}
			}
			if _, err := migrate.ApplyDir(ctx, db, e.dialect, memDir(t, files...)); err != nil {
				t.Fatal(err)
			}
			check(t, db, e.dialect)
		})
	}
}

func queryRow(t *testing.T, db *sql.DB, query string, dest ...any) {
	t.Helper()
	if err := db.QueryRowContext(context.Background(), query).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// tokens.lease_until arrives empty: the tokens keep every other column,
// hold no lease, and take one.
func TestUpgradeAddsTokensLeaseUntil(t *testing.T) {
	t.Parallel()
	seed := map[migrate.Dialect][]string{
		migrate.SQLite: {
			`INSERT INTO projects (id, name, api_key_ciphertext, api_key_hint) VALUES (1, 'p', x'00', 'sk-...1234')`,
			`INSERT INTO tokens (id, project_id, secret_hash, token_prefix, expires_at, max_requests, request_count, requests_reserved, last_used_at)
			 VALUES (7, 1, x'07', 'tok_', 4102444800000, 10, 5, 2, 1700000000000)`,
		},
		migrate.Postgres: {
			`INSERT INTO projects (id, name, api_key_ciphertext, api_key_hint) VALUES (1, 'p', '\x00', 'sk-...1234')`,
			`INSERT INTO tokens (id, project_id, secret_hash, token_prefix, expires_at, max_requests, request_count, requests_reserved, last_used_at)
			 VALUES (7, 1, '\x07', 'tok_', '2100-01-01T00:00:00Z', 10, 5, 2, '2023-11-14T22:13:20Z')`,
		},
	}
	upgradeFrom(t, "tokens_lease_until", seed, func(t *testing.T, db *sql.DB, d migrate.Dialect) {
		var maxRequests, count, reserved int64
		var leased bool
		queryRow(t, db, `SELECT max_requests, request_count, requests_reserved, lease_until IS NOT NULL FROM tokens WHERE id = 7 AND secret_hash IS NOT NULL`,
			&maxRequests, &count, &reserved, &leased)
		if maxRequests != 10 || count != 5 || reserved != 2 || leased {
			t.Errorf("token after the upgrade: max_requests %d, request_count %d, requests_reserved %d, leased %t; want 10, 5, 2, false",
				maxRequests, count, reserved, leased)
		}
		lease := map[migrate.Dialect]string{
			migrate.SQLite:   `UPDATE tokens SET lease_until = 4102444800000 WHERE id = 7`,
			migrate.Postgres: `UPDATE tokens SET lease_until = now() WHERE id = 7`,
		}[d]
		if _, err := db.ExecContext(context.Background(), lease); err != nil {
			t.Errorf("recording a lease after the upgrade: %v", err)
		}
	})
}

// The sessions table arrives empty beside the data there was, and takes
// sessions.
func TestUpgradeAddsSessions(t *testing.T) {
	t.Parallel()
	seed := map[migrate.Dialect][]string{
		migrate.SQLite: {
			`INSERT INTO projects (id, name, api_key_ciphertext, api_key_hint) VALUES (1, 'p', x'00', 'sk-...1234')`,
			`INSERT INTO tokens (id, project_id, secret_hash, token_prefix, expires_at, lease_until) VALUES (7, 1, x'07', 'tok_', 4102444800000, 1700000000000)`,
			`INSERT INTO audit_events (id, actor, action, project_id, result) VALUES (3, 'admin', 'project.create', 1, 'ok')`,
		},
		migrate.Postgres: {
			`INSERT INTO projects (id, name, api_key_ciphertext, api_key_hint) VALUES (1, 'p', '\x00', 'sk-...1234')`,
			`INSERT INTO tokens (id, project_id, secret_hash, token_prefix, expires_at, lease_until) VALUES (7, 1, '\x07', 'tok_', '2100-01-01T00:00:00Z', '2023-11-14T22:13:20Z')`,
			`INSERT INTO audit_events (id, actor, action, project_id, result) VALUES (3, 'admin', 'project.create', 1, 'ok')`,
		},
	}
	upgradeFrom(t, "sessions", seed, func(t *testing.T, db *sql.DB, d migrate.Dialect) {
		var projects, tokens, leased, audit, sessions int64
		queryRow(t, db, `SELECT (SELECT count(*) FROM projects), (SELECT count(*) FROM tokens),
			(SELECT count(*) FROM tokens WHERE lease_until IS NOT NULL), (SELECT count(*) FROM audit_events), (SELECT count(*) FROM sessions)`,
			&projects, &tokens, &leased, &audit, &sessions)
		if projects != 1 || tokens != 1 || leased != 1 || audit != 1 || sessions != 0 {
			t.Errorf("after the upgrade: %d projects, %d tokens (%d leased), %d audit events, %d sessions; want 1, 1 (1), 1, 0",
				projects, tokens, leased, audit, sessions)
		}
		insert := map[migrate.Dialect]string{
			migrate.SQLite:   `INSERT INTO sessions (secret_hash, csrf_token, expires_at) VALUES (x'01', 'csrf', 4102444800000)`,
			migrate.Postgres: `INSERT INTO sessions (secret_hash, csrf_token, expires_at) VALUES ('\x01', 'csrf', now())`,
		}[d]
		if _, err := db.ExecContext(context.Background(), insert); err != nil {
			t.Errorf("storing a session after the upgrade: %v", err)
		}
	})
}

// Events written before usage_hourly existed arrive not rolled up, so the
// usage reads count them raw until UsageRollUp adds them (the conformance
// case UsageRollUp/CountsEventsNotRolledUpUntilItAddsThem); usage_hourly
// arrives empty and takes rows.
func TestUpgradeAddsUsageHourly(t *testing.T) {
	t.Parallel()
	event := `INSERT INTO usage_events (token_id, project_id, method, path, model, status, prompt_tokens, created_at, event_id) VALUES `
	seed := map[migrate.Dialect][]string{
		migrate.SQLite: {
			event + `(7, 1, 'POST', '/v1/chat/completions', 'm', 200, 3, 1700000000000, x'01'), (7, 1, 'POST', '/v1/x', 'm', 503, 4, 1700000100000, NULL)`,
			`INSERT INTO usage_daily (day, project_id, token_id, model, requests, errors, prompt_tokens, completion_tokens, total_tokens) VALUES (1699920000000, 1, 7, 'm', 5, 1, 9, 9, 18)`,
		},
		migrate.Postgres: {
			event + `(7, 1, 'POST', '/v1/chat/completions', 'm', 200, 3, '2023-11-14T22:13:20Z', '\x01'), (7, 1, 'POST', '/v1/x', 'm', 503, 4, '2023-11-14T22:15:00Z', NULL)`,
			`INSERT INTO usage_daily (day, project_id, token_id, model, requests, errors, prompt_tokens, completion_tokens, total_tokens) VALUES ('2023-11-14', 1, 7, 'm', 5, 1, 9, 9, 18)`,
		},
	}
	upgradeFrom(t, "usage_hourly", seed, func(t *testing.T, db *sql.DB, d migrate.Dialect) {
		notRolledUp := map[migrate.Dialect]string{migrate.SQLite: "rolled_up = 0", migrate.Postgres: "NOT rolled_up"}[d]
		var events, unrolled, prompt, daily, hourly int64
		queryRow(t, db, `SELECT (SELECT count(*) FROM usage_events), (SELECT count(*) FROM usage_events WHERE `+notRolledUp+`),
			(SELECT sum(prompt_tokens) FROM usage_events), (SELECT sum(requests) FROM usage_daily), (SELECT count(*) FROM usage_hourly)`,
			&events, &unrolled, &prompt, &daily, &hourly)
		if events != 2 || unrolled != 2 || prompt != 7 || daily != 5 || hourly != 0 {
			t.Errorf("after the upgrade: %d events (%d not rolled up, %d prompt tokens), %d daily requests, %d hourly rows; want 2 (2, 7), 5, 0",
				events, unrolled, prompt, daily, hourly)
		}
		insert := map[migrate.Dialect]string{
			migrate.SQLite: `INSERT INTO usage_hourly (token_id, project_id, hour, model, requests, errors, prompt_tokens, completion_tokens, total_tokens)
				VALUES (7, 1, 1699999200000, 'm', 2, 1, 7, 0, 7), (0, 1, 1699999200000, 'm', 2, 1, 7, 0, 7), (0, 0, 1699999200000, 'm', 2, 1, 7, 0, 7)`,
			migrate.Postgres: `INSERT INTO usage_hourly (token_id, project_id, hour, model, requests, errors, prompt_tokens, completion_tokens, total_tokens)
				VALUES (7, 1, '2023-11-14T22:00:00Z', 'm', 2, 1, 7, 0, 7), (0, 1, '2023-11-14T22:00:00Z', 'm', 2, 1, 7, 0, 7), (0, 0, '2023-11-14T22:00:00Z', 'm', 2, 1, 7, 0, 7)`,
		}[d]
		if _, err := db.ExecContext(context.Background(), insert); err != nil {
			t.Errorf("adding usage_hourly rows after the upgrade: %v", err)
		}
		bad := map[migrate.Dialect]string{
			migrate.SQLite: `INSERT INTO usage_hourly (token_id, project_id, hour, model, requests, errors, prompt_tokens, completion_tokens, total_tokens)
				VALUES (7, 0, 1699999200001, 'm', 1, 0, 0, 0, 0)`,
			migrate.Postgres: `INSERT INTO usage_hourly (token_id, project_id, hour, model, requests, errors, prompt_tokens, completion_tokens, total_tokens)
				VALUES (7, 0, '2023-11-14T22:00:01Z', 'm', 1, 0, 0, 0, 0)`,
		}[d]
		if _, err := db.ExecContext(context.Background(), bad); err == nil {
			t.Error("usage_hourly took a row off the hour of a token without a project")
		}
	})
}
