package sqlitestore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/gen/sqlitedb"
	"github.com/llmproxy/llmproxy/service"
)

// The Raw benchmarks run the adapter's own SQL (captured from the generated
// code) through plain database/sql on the adapter's writer *sql.DB (same
// DSN), so the difference to the adapter's numbers is the adapter's overhead.

// capturedSQL records the text of the statements run through it.
type capturedSQL struct {
	*sql.DB
	query string
}

func (c *capturedSQL) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	c.query = query
	return c.DB.QueryRowContext(ctx, query, args...)
}

func (c *capturedSQL) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	c.query = query
	return c.DB.ExecContext(ctx, query, args...)
}

// benchStore opens a migrated store with one unlimited token.
func benchStore(b *testing.B) (*Store, *service.Token) {
	b.Helper()
	ctx := context.Background()
	s := openTestStore(b)
	project, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "bench", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"})
	if err != nil {
		b.Fatal(err)
	}
	token, err := s.TokenCreate(ctx, &service.TokenCreateParams{
		ProjectID: project.ID, SecretHash: []byte("bench"), TokenPrefix: "sk-bench", ExpiresAt: time.Now().Add(24 * time.Hour),
	})
	if err != nil {
		b.Fatal(err)
	}
	return s, token
}

// usageEvents returns n events of tokens tokens, so the batch adds to
// about 2 + tokens rows of usage_hourly (each token's row, its project's and
// the total).
func usageEvents(n, tokens int) []*service.UsageEventCreateParams {
	events := make([]*service.UsageEventCreateParams, n)
	now := time.Now()
	for i := range events {
		events[i] = &service.UsageEventCreateParams{
			TokenID: 1 + int64(i%tokens), ProjectID: 1, Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o-mini",
			Status: 200, PromptTokens: 12, CompletionTokens: 34, TotalTokens: 46, LatencyMS: 250, CreatedAt: now,
		}
	}
	return events
}

func BenchmarkTokenAdmit(b *testing.B) {
	s, token := benchStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.TokenAdmit(ctx, token.ID); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokenAdmitParallel(b *testing.B) {
	s, token := benchStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.TokenAdmit(ctx, token.ID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkRawTokenAdmit(b *testing.B) {
	s, token := benchStore(b)
	ctx := context.Background()
	capture := &capturedSQL{DB: s.writer}
	if _, err := s.q.TokenAdmit(ctx, capture, token.ID); err != nil {
		b.Fatal(err)
	}
	db := s.writer
	var row sqlitedb.Token
	b.ReportAllocs()
	for b.Loop() {
		err := db.QueryRowContext(ctx, capture.query, token.ID).Scan(
			&row.ID, &row.ProjectID, &row.SecretHash, &row.TokenPrefix, &row.ExpiresAt, &row.MaxRequests,
			&row.RequestCount, &row.IsActive, &row.CreatedAt, &row.UpdatedAt, &row.LastUsedAt,
			&row.RequestsReserved, &row.LeaseUntil)
		if err != nil {
			b.Fatal(err)
		}
	}
}

var batchSizes = []int{100, 1000}

// BenchmarkUsageInsertBatch writes batches of one token's rows, and of as
// many tokens as rows (every row its own usage_hourly row).
func BenchmarkUsageInsertBatch(b *testing.B) {
	for _, n := range batchSizes {
		for _, tokens := range []int{1, n} {
			b.Run(fmt.Sprintf("rows=%d/tokens=%d", n, tokens), func(b *testing.B) {
				benchmarkUsageInsertBatch(b, n, tokens)
			})
		}
	}
}

func benchmarkUsageInsertBatch(b *testing.B, n, tokens int) {
	s, _ := benchStore(b)
	// Cancellable, as the usage recorder's is: a driver may watch such a
	// context per statement.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := usageEvents(n, tokens)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.UsageInsertBatch(ctx, events); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
}

// BenchmarkRawUsageInsertBatch runs the adapter's UsageInsert text the way
// the adapter does, prepared once per transaction and executed per row, with
// the arguments built once, outside the loop: the difference to
// BenchmarkUsageInsertBatch (tokens=1) is the adapter's per-row overhead and
// the rollup.
func BenchmarkRawUsageInsertBatch(b *testing.B) {
	for _, n := range batchSizes {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			s, _ := benchStore(b)
			// Cancellable, as the usage recorder's is: a driver may watch
			// such a context per statement.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			events := usageEvents(n, 1)
			capture := &capturedSQL{DB: s.writer}
			if _, err := s.q.UsageInsert(ctx, capture, &sqlitedb.UsageInsertParams{CreatedAt: 1}); err != nil {
				b.Fatal(err)
			}
			args := make([][]any, n)
			for i, e := range events {
				args[i] = []any{
					e.TokenID, e.ProjectID, e.Method, e.Path, e.Model, e.Status, e.PromptTokens,
					e.CompletionTokens, e.TotalTokens, e.LatencyMS, e.CreatedAt.UnixMilli(), e.EventID,
				}
			}
			db := s.writer
			b.ReportAllocs()
			for b.Loop() {
				if err := rawInsertRows(ctx, db, capture.query, args); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
		})
	}
}

// rawInsertRows executes query once per element of args in one transaction.
func rawInsertRows(ctx context.Context, db *sql.DB, query string, args [][]any) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	stmt, err := tx.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	for _, a := range args {
		res, err := stmt.ExecContext(ctx, a...)
		if err != nil {
			return err
		}
		if _, err := res.RowsAffected(); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// BenchmarkUsageInsertEventIDs writes 500-event batches, like the recorder,
// into a table that grows to 100,000 rows: with random event IDs every row
// lands on its own page of the unique index, with time-ordered ones
// (service.NewEventID) at its end.
func BenchmarkUsageInsertEventIDs(b *testing.B) {
	for _, ids := range []string{"random", "ordered"} {
		b.Run("ids="+ids, func(b *testing.B) {
			s, _ := benchStore(b)
			ctx := context.Background()
			events := usageEvents(500, 1)
			b.ReportAllocs()
			for b.Loop() {
				for _, e := range events {
					if ids == "random" {
						e.EventID = make([]byte, 16)
						rand.Read(e.EventID)
					} else {
						e.EventID = service.NewEventID(time.Now())
					}
				}
				if _, err := s.UsageInsertBatch(ctx, events); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/row")
		})
	}
}
