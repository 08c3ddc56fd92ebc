package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/gen/sqlitedb"
	"github.com/llmproxy/llmproxy/service"
)

// queryPlanner stands in for the database of a generated query: it asks
// SQLite for the query's plan with the same arguments instead of running it.
type queryPlanner struct {
	db    *sql.DB
	plans []string
}

var errPlanned = errors.New("planned, not run")

func (p *queryPlanner) plan(ctx context.Context, query string, args []any) {
	rows, err := p.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		p.plans = append(p.plans, "error: "+err.Error())
		return
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			lines = append(lines, "error: "+err.Error())
			break
		}
		lines = append(lines, detail)
	}
	if err := rows.Err(); err != nil {
		lines = append(lines, "error: "+err.Error())
	}
	p.plans = append(p.plans, strings.Join(lines, "; "))
}

func (p *queryPlanner) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	p.plan(ctx, query, args)
	return nil, errPlanned
}

func (p *queryPlanner) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	p.plan(ctx, query, args)
	return p.db.QueryRowContext(ctx, "SELECT 1 WHERE false") // sql.ErrNoRows
}

func (p *queryPlanner) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	p.plan(ctx, query, args)
	return nil, errPlanned
}

func (p *queryPlanner) PrepareContext(context.Context, string) (*sql.Stmt, error) {
	return nil, errPlanned
}

// TestUsageQueriesSearchAnIndex holds that every query reading usage_events
// searches it by created_at or id instead of scanning the table, with or
// without a project or token filter, and that the reads search usage_hourly
// by its primary key (the filter's level), never by hour alone. The
// filters are optional parameters ("? IS NULL OR project_id = ?"), which
// SQLite cannot look up in an index, so usage_events has no project or
// token index to keep up on every insert.
func TestUsageQueriesSearchAnIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTestStore(t)

	// Enough rows of several projects and tokens for ANALYZE to have
	// something to weigh.
	now := time.Now()
	var events []*service.UsageEventCreateParams
	for i := range 2000 {
		events = append(events, &service.UsageEventCreateParams{
			TokenID: int64(1 + i%50), ProjectID: int64(1 + i%5), Method: "POST", Path: "/v1/chat/completions",
			Model: "m", Status: 200, CreatedAt: now.Add(-time.Duration(i) * time.Minute),
		})
	}
	if _, err := s.UsageInsertBatch(ctx, events); err != nil {
		t.Fatal(err)
	}
	checkUsagePlans(t, s, now, "before ANALYZE")
	if _, err := s.writer.ExecContext(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	checkUsagePlans(t, s, now, "after ANALYZE")
}

// checkUsagePlans plans every usage query for every filter and checks how
// each reads usage_events and usage_hourly.
func checkUsagePlans(t *testing.T, s *Store, now time.Time, when string) {
	ctx := context.Background()
	project, token := int64(3), int64(7)
	rangeFilter := service.UsageFilter{Since: now.Add(-90 * time.Minute), Until: now}
	filters := []struct {
		name           string
		project, token *int64
	}{{"all", nil, nil}, {"project", &project, nil}, {"token", nil, &token}, {"both", &project, &token}}

	p := &queryPlanner{db: s.writer}
	var names []string
	for _, f := range filters {
		filter := rangeFilter
		filter.ProjectID, filter.TokenID = f.project, f.token
		params := usageReadParams(&filter, service.NewUsageReadRange(&filter))
		_, _ = s.q.UsageTotalsByModel(ctx, p, &params)
		_, _ = s.q.UsageTotalsByDayModel(ctx, p, (*sqlitedb.UsageTotalsByDayModelParams)(&params))
		_, _ = s.q.UsageList(ctx, p, &sqlitedb.UsageListParams{
			ProjectID: f.project, TokenID: f.token, BeforeID: 1 << 62, MaxRows: 100,
		})
		names = append(names, "UsageTotalsByModel "+f.name, "UsageTotalsByDayModel "+f.name, "UsageList "+f.name)
	}
	_, _ = s.q.UsageDeleteBefore(ctx, p, &sqlitedb.UsageDeleteBeforeParams{Before: now.UnixMilli(), MaxRows: 500})
	_, _ = s.q.UsageRollUpBatch(ctx, p, 500)
	names = append(names, "UsageDeleteBefore", "UsageRollUpBatch")

	if len(p.plans) != len(names) {
		t.Fatalf("planned %d queries, want %d: %q", len(p.plans), len(names), p.plans)
	}
	for i, plan := range p.plans {
		if strings.HasPrefix(plan, "error") || !strings.Contains(plan, "usage_events") {
			t.Errorf("%s %s: no plan for usage_events: %s", when, names[i], plan)
			continue
		}
		for step := range strings.SplitSeq(plan, "; ") {
			// A scan of usage_events_unrolled_idx reads only the events
			// not rolled up yet: none, once UsageRollUp has caught up.
			scan := strings.HasPrefix(step, "SCAN usage_events") || strings.HasPrefix(step, "SCAN old")
			if scan && !strings.HasSuffix(step, "USING COVERING INDEX usage_events_unrolled_idx") {
				t.Errorf("%s %s scans usage_events: %s", when, names[i], plan)
			}
			if strings.Contains(step, "usage_hourly") && !strings.HasPrefix(step, "SEARCH usage_hourly USING PRIMARY KEY (token_id=? AND project_id>? AND project_id<?)") {
				t.Errorf("%s %s reads usage_hourly other than by its primary key: %s", when, names[i], step)
			}
		}
		t.Logf("%s %-28s %s", when, names[i], plan)
	}
}
