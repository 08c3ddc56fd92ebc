package pgstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/service"
)

// The usage reads are planned for each call's filter, however often a
// connection has run them: PostgreSQL never switches them to a generic
// plan. (Without usageReadSettings it does after five runs.)
func TestUsageTotalsKeepCustomPlans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// One connection, so every call and the check below share a session.
	s, err := Open(ctx, service.Config{Driver: service.DriverPostgres, DatabaseURL: pgtest.NewDatabase(t), PoolSize: 1, MaxIdleConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	project, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "p", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"})
	if err != nil {
		t.Fatal(err)
	}
	token, err := s.TokenCreate(ctx, &service.TokenCreateParams{ProjectID: project.ID, SecretHash: []byte("plans"),
		TokenPrefix: "sk-plans", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	events := make([]*service.UsageEventCreateParams, 500)
	for i := range events {
		at := now.Add(-time.Duration(i) * time.Minute)
		events[i] = &service.UsageEventCreateParams{TokenID: token.ID, ProjectID: project.ID, Method: "POST",
			Path: "/v1/chat/completions", Model: "m", Status: 200, TotalTokens: 3, CreatedAt: at, EventID: service.NewEventID(at)}
	}
	if _, err := s.UsageInsertBatch(ctx, events); err != nil {
		t.Fatal(err)
	}
	const calls = 12
	for i := range calls {
		filter := &service.UsageFilter{Since: now.Add(-24 * time.Hour), Until: now.Add(time.Minute)}
		if i%2 == 1 {
			filter.ProjectID = &project.ID
		}
		totals, err := s.UsageTotals(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		if totals.Requests != int64(len(events)) {
			t.Fatalf("requests = %d, want %d", totals.Requests, len(events))
		}
	}
	rows, err := s.pool.Query(ctx, "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var statement string
		var generic, custom int64
		if err := rows.Scan(&statement, &generic, &custom); err != nil {
			t.Fatal(err)
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(statement, "-- name: "), " ")
		if name != "UsageTotalsByModel" {
			continue
		}
		seen++
		if generic != 0 || custom != calls {
			t.Errorf("%s: %d generic and %d custom plans, want 0 and %d", name, generic, custom, calls)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != 1 {
		t.Errorf("found %d of the 1 usage statement among the connection's prepared statements", seen)
	}
}
