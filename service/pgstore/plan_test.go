package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/llmproxy/llmproxy/gen/pgdb"
	"github.com/llmproxy/llmproxy/service"
)

// queryRecorder stands in for the database of a generated query: it keeps
// the query and its arguments instead of running it.
type queryRecorder struct {
	queries []recordedQuery
}

type recordedQuery struct {
	sql  string
	args []any
}

var errRecorded = errors.New("recorded, not run")

func (r *queryRecorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.queries = append(r.queries, recordedQuery{sql, args})
	return pgconn.CommandTag{}, errRecorded
}

func (r *queryRecorder) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.queries = append(r.queries, recordedQuery{sql, args})
	return nil, errRecorded
}

type failedRow struct{}

func (failedRow) Scan(...any) error { return errRecorded }

func (r *queryRecorder) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	r.queries = append(r.queries, recordedQuery{sql, args})
	return failedRow{}
}

func (r *queryRecorder) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, errRecorded
}

// TestUsageQueriesSearchAnIndex holds that every query reading usage_events
// has a plan that searches an index (created_at or the primary key), as a
// prepared statement's generic plan and as a plan for its arguments, with
// and without a project or token filter: usage_events has no project or
// token index, which the generic plan of "$1 IS NULL OR project_id = $1"
// could not use. Sequential scans are disabled, so a plan that still shows
// one has no index to search.
func TestUsageQueriesSearchAnIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, migratedDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })

	q := pgdb.New()
	rec := &queryRecorder{}
	project, token := int64(3), int64(7)
	now := time.Now()
	since, until := now.Add(-time.Hour), now
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	filters := []struct {
		name           string
		project, token *int64
	}{{"all", nil, nil}, {"project", &project, nil}, {"token", nil, &token}, {"both", &project, &token}}
	var names []string
	for _, f := range filters {
		filter := service.UsageFilter{ProjectID: f.project, TokenID: f.token, Since: since.Add(-30 * time.Minute), Until: until}
		r := service.NewUsageReadRange(&filter)
		params := pgdb.UsageTotalsByModelParams{
			ProjectID: f.project, TokenID: f.token, Since: r.Since, HourSince: r.HourSince, HourUntil: r.HourUntil, Until: r.Until,
			RollupToken: r.RollupToken, RollupProjectMin: r.RollupProjectMin, RollupProjectMax: r.RollupProjectMax,
			SinceDay: day, UntilDay: day,
		}
		_, _ = q.UsageTotalsByModel(ctx, rec, &params)
		_, _ = q.UsageTotalsByDayModel(ctx, rec, (*pgdb.UsageTotalsByDayModelParams)(&params))
		_, _ = q.UsageList(ctx, rec, &pgdb.UsageListParams{ProjectID: f.project, TokenID: f.token, BeforeID: 1 << 62, MaxRows: 100})
		names = append(names, "UsageTotalsByModel "+f.name, "UsageTotalsByDayModel "+f.name, "UsageList "+f.name)
	}
	_, _ = q.UsageDeleteBefore(ctx, rec, &pgdb.UsageDeleteBeforeParams{Before: since, MaxRows: 500})
	_, _ = q.UsageRollUpBatch(ctx, rec, 500)
	names = append(names, "UsageDeleteBefore", "UsageRollUpBatch")
	if len(rec.queries) != len(names) {
		t.Fatalf("recorded %d queries, want %d", len(rec.queries), len(names))
	}

	if _, err := conn.Exec(ctx, "SET enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	for i, query := range rec.queries {
		statement := fmt.Sprintf("usage_plan_%d", i)
		if _, err := conn.Exec(ctx, "PREPARE "+statement+" AS "+query.sql); err != nil {
			t.Fatalf("%s: PREPARE: %v", names[i], err)
		}
		// EXECUTE takes no parameters of its own: the arguments go as literals.
		literals := make([]string, len(query.args))
		for n, arg := range query.args {
			literals[n] = sqlLiteral(t, arg)
		}
		for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
			if _, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode); err != nil {
				t.Fatal(err)
			}
			rows, err := conn.Query(ctx, "EXPLAIN EXECUTE "+statement+"("+strings.Join(literals, ", ")+")")
			if err != nil {
				t.Fatalf("%s: EXPLAIN: %v", names[i], err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatalf("%s: EXPLAIN: %v", names[i], err)
			}
			plan := strings.Join(lines, "\n")
			if !strings.Contains(plan, "on usage_events") {
				t.Errorf("%s (%s): no plan for usage_events:\n%s", names[i], mode, plan)
			}
			if strings.Contains(plan, "Seq Scan on usage_events") {
				t.Errorf("%s (%s) scans usage_events:\n%s", names[i], mode, plan)
			}
			if strings.Contains(plan, "on usage_hourly") && !strings.Contains(plan, "using usage_hourly_pkey on usage_hourly") {
				t.Errorf("%s (%s) reads usage_hourly other than by its primary key:\n%s", names[i], mode, plan)
			}
		}
	}
}

// sqlLiteral writes one of the recorded queries' arguments as SQL.
func sqlLiteral(t *testing.T, arg any) string {
	switch v := arg.(type) {
	case *int64:
		if v == nil {
			return "NULL"
		}
		return fmt.Sprint(*v)
	case int64:
		return fmt.Sprint(v)
	case time.Time:
		return "'" + v.UTC().Format(time.RFC3339Nano) + "'"
	}
	t.Fatalf("no literal for %T", arg)
	return ""
}
