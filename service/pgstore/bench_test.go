package pgstore_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/llmproxy/llmproxy/gen/pgdb"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/pgstore"
)

// The Raw benchmarks run the adapter's SQL through plain pgx, so the
// difference to their adapter counterparts is the adapter's overhead.

// capturedSQL records the text of the statements gen/pgdb runs through it,
// so a Raw benchmark runs exactly the generated statement.
type capturedSQL struct {
	*pgxpool.Pool
	query string
}

func (c *capturedSQL) QueryRow(ctx context.Context, query string, args ...any) pgx.Row {
	c.query = query
	return c.Pool.QueryRow(ctx, query, args...)
}

// benchStore opens a store on a fresh migrated database with one project
// and one unlimited token, whose id it returns.
func benchStore(b *testing.B) (url string, s *pgstore.Store, tokenID int64) {
	b.Helper()
	url = migratedDatabase(b)
	s = openStore(b, url)
	ctx := context.Background()
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
	return url, s, token.ID
}

func rawPool(b *testing.B, url string) *pgxpool.Pool {
	b.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return pool
}

func BenchmarkTokenAdmit(b *testing.B) {
	_, s, tokenID := benchStore(b)
	ctx := context.Background()
	b.Run("Serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.TokenAdmit(ctx, tokenID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.TokenAdmit(ctx, tokenID); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkRawTokenAdmit(b *testing.B) {
	url, _, tokenID := benchStore(b)
	pool := rawPool(b, url)
	ctx := context.Background()
	capture := &capturedSQL{Pool: pool}
	if _, err := pgdb.New().TokenAdmit(ctx, capture, tokenID); err != nil {
		b.Fatal(err)
	}
	admit := func() error {
		var t pgdb.Token
		return pool.QueryRow(ctx, capture.query, tokenID).Scan(&t.ID, &t.ProjectID, &t.SecretHash, &t.TokenPrefix,
			&t.ExpiresAt, &t.MaxRequests, &t.RequestCount, &t.IsActive, &t.CreatedAt, &t.UpdatedAt, &t.LastUsedAt,
			&t.RequestsReserved, &t.LeaseUntil)
	}
	b.Run("Serial", func(b *testing.B) {
		for b.Loop() {
			if err := admit(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := admit(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// usageEvents returns n events of tokens tokens (from tokenID on), so the
// batch adds to about 2 + tokens rows of usage_hourly (each token's row,
// its project's and the total).
func usageEvents(n int, tokenID int64, tokens int) []*service.UsageEventCreateParams {
	events := make([]*service.UsageEventCreateParams, n)
	now := time.Now()
	for i := range events {
		events[i] = &service.UsageEventCreateParams{
			TokenID: tokenID + int64(i%tokens), ProjectID: 1, Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o-mini",
			Status: 200, PromptTokens: 12, CompletionTokens: 30, TotalTokens: 42, LatencyMS: 150,
			CreatedAt: now.Add(time.Duration(i) * time.Millisecond), EventID: make([]byte, 16),
		}
	}
	return events
}

// renameEvents gives every event a new EventID, in place, so each
// iteration writes its rows rather than skipping them as stored already.
func renameEvents(events []*service.UsageEventCreateParams, seq *uint64) {
	for _, e := range events {
		*seq++
		binary.BigEndian.PutUint64(e.EventID[8:], *seq)
	}
}

// usageBatches are the batches the insert benchmarks write: the rows of one
// token, and rows of as many tokens (every row its own usage_hourly row).
var usageBatches = []struct{ rows, tokens int }{{100, 1}, {1000, 1}, {100, 100}, {1000, 1000}}

func BenchmarkUsageInsertBatch(b *testing.B) {
	_, s, tokenID := benchStore(b)
	ctx := context.Background()
	var seq uint64
	for _, batch := range usageBatches {
		events := usageEvents(batch.rows, tokenID, batch.tokens)
		b.Run(fmt.Sprintf("%d/tokens=%d", batch.rows, batch.tokens), func(b *testing.B) {
			for b.Loop() {
				renameEvents(events, &seq)
				if _, err := s.UsageInsertBatch(ctx, events); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(batch.rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

func BenchmarkRawUsageInsertBatch(b *testing.B) {
	url, _, tokenID := benchStore(b)
	pool := rawPool(b, url)
	ctx := context.Background()
	var seq uint64
	// The statement as gen/pgdb runs it, captured from one call.
	capture := &capturedSQL{Pool: pool}
	if _, err := pgdb.New().UsageInsertBatch(ctx, capture, &pgdb.UsageInsertBatchParams{}); err != nil {
		b.Fatal(err)
	}
	for _, batch := range usageBatches {
		n := batch.rows
		events := usageEvents(n, tokenID, batch.tokens)
		b.Run(fmt.Sprintf("%d/tokens=%d", batch.rows, batch.tokens), func(b *testing.B) {
			for b.Loop() {
				renameEvents(events, &seq)
				tokenIDs, projectIDs, statuses := make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n)
				prompt, completion, total, latency := make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n)
				methods, paths, models := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
				createdAt, eventIDs := make([]time.Time, 0, n), make([][]byte, 0, n)
				for _, e := range events {
					tokenIDs = append(tokenIDs, e.TokenID)
					projectIDs = append(projectIDs, e.ProjectID)
					methods = append(methods, e.Method)
					paths = append(paths, e.Path)
					models = append(models, e.Model)
					statuses = append(statuses, e.Status)
					prompt = append(prompt, e.PromptTokens)
					completion = append(completion, e.CompletionTokens)
					total = append(total, e.TotalTokens)
					latency = append(latency, e.LatencyMS)
					createdAt = append(createdAt, e.CreatedAt)
					eventIDs = append(eventIDs, e.EventID)
				}
				var written int64
				if err := pool.QueryRow(ctx, capture.query, tokenIDs, projectIDs, methods, paths, models,
					statuses, prompt, completion, total, latency, createdAt, eventIDs).Scan(&written); err != nil || written != int64(n) {
					b.Fatal(written, err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
