package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"time"

	"github.com/llmproxy/llmproxy/gen/sqlitedb"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/internal/convert"
)

// usageRow is one element of the JSON array UsageInsertFullMany passes to
// json_each; the keys are the column names, event_id is hex or null.
type usageRow struct {
	TokenID          int64   `json:"token_id"`
	ProjectID        int64   `json:"project_id"`
	Method           string  `json:"method"`
	Path             string  `json:"path"`
	Model            string  `json:"model"`
	Status           int64   `json:"status"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	TotalTokens      int64   `json:"total_tokens"`
	LatencyMS        int64   `json:"latency_ms"`
	CreatedAt        int64   `json:"created_at"`
	EventID          *string `json:"event_id"`
}

// nullableHex is b in hex, or nil (JSON null, so SQL NULL) when b is nil.
func nullableHex(b []byte) *string {
	if b == nil {
		return nil
	}
	h := hex.EncodeToString(b)
	return &h
}

// UsageInsertBatch runs UsageInsert, prepared once, for each event in one
// transaction, so all or nothing; events whose EventID is stored already
// (earlier in the batch too) count 0. Per row this holds the writer, which
// admissions wait for, shorter than one INSERT ... SELECT FROM json_each.
func (s *Store) UsageInsertBatch(ctx context.Context, events []*service.UsageEventCreateParams) (int64, error) {
	if len(events) == 0 {
		return 0, nil
	}
	return inTx(ctx, s, func(tx *Store) (int64, error) {
		db := &txStmts{Tx: tx.tx, stmts: map[string]*sql.Stmt{}}
		// The driver starts a goroutine per statement to watch a context
		// that can end; the rows are checked against ctx here instead, and
		// database/sql rolls the transaction back if it ends.
		rowCtx := context.WithoutCancel(ctx)
		var total int64
		for _, e := range events {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			n, err := tx.q.UsageInsert(rowCtx, db, &sqlitedb.UsageInsertParams{
				TokenID:          e.TokenID,
				ProjectID:        e.ProjectID,
				Method:           e.Method,
				Path:             e.Path,
				Model:            e.Model,
				Status:           e.Status,
				PromptTokens:     e.PromptTokens,
				CompletionTokens: e.CompletionTokens,
				TotalTokens:      e.TotalTokens,
				LatencyMs:        e.LatencyMS,
				CreatedAt:        e.CreatedAt.UnixMilli(),
				EventID:          e.EventID,
			})
			if err != nil {
				return 0, mapError(err)
			}
			total += n
		}
		return total, nil
	})
}

// txStmts is a sqlitedb.DBTX on a transaction that prepares each text it
// executes once, for a query run many times in that transaction; sqlc passes
// only the text. Queries run on the transaction unprepared. The statements
// close with the transaction.
type txStmts struct {
	*sql.Tx
	stmts map[string]*sql.Stmt
}

func (t *txStmts) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	stmt, ok := t.stmts[query]
	if !ok {
		var err error
		if stmt, err = t.PrepareContext(ctx, query); err != nil {
			return nil, err
		}
		t.stmts[query] = stmt
	}
	return stmt.ExecContext(ctx, args...)
}

// UsageTotals reads the totals and the per-model rows from one snapshot, so
// they always add up, and a prune commits either wholly before or after it.
func (s *Store) UsageTotals(ctx context.Context, filter *service.UsageFilter) (*service.UsageTotals, error) {
	since, until := service.UsageTimeRange(filter)
	sinceDay, untilDay := service.UsageDayRange(since, until)
	params := sqlitedb.UsageTotalsParams{
		ProjectID: filter.ProjectID,
		TokenID:   filter.TokenID,
		Since:     since.UnixMilli(),
		Until:     until.UnixMilli(),
		SinceDay:  sinceDay.UnixMilli(),
		UntilDay:  untilDay.UnixMilli(),
	}
	var totals service.UsageTotals
	err := s.readTx(ctx, func(db sqlitedb.DBTX) error {
		counts, err := s.q.UsageTotals(ctx, db, &params)
		if err != nil {
			return mapError(err)
		}
		byModel, err := s.q.UsageTotalsByModel(ctx, db, (*sqlitedb.UsageTotalsByModelParams)(&params))
		if err != nil {
			return mapError(err)
		}
		totals = service.UsageTotals{
			UsageCounts: service.UsageCounts(*counts),
			ByModel:     convert.Map(byModel, convert.ModelUsage),
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &totals, nil
}

// perDayReadsUpTo is the longest range, in days, that UsageTotalsByDay
// reads a day at a time, with UsageTotalsByModel. SQLite sorts the rows of
// a GROUP BY; grouped by day and model in one read, that is a sort of every
// row in the range. Measured with llmproxy-bench scale (1M events over 89
// days, the dashboard's 90 days, two runs each): one read grouped by day
// and model 1,383 ms; a UsageTotalsByModel read per day 711–770 ms (against
// 951–956 ms for the UsageTotals and UsageTotalsByModel per day that the
// dashboard ran before). Longer ranges (an unbounded one would be 2.9
// million days) are read at once.
const perDayReadsUpTo = 92

// UsageTotalsByDay reads the days' totals per model from one snapshot.
func (s *Store) UsageTotalsByDay(ctx context.Context, filter *service.UsageFilter) ([]*service.DayUsage, error) {
	since, until := service.UsageTimeRange(filter)
	var rows []convert.DayModel
	err := s.readTx(ctx, func(db sqlitedb.DBTX) error {
		if until.Sub(since) > perDayReadsUpTo*24*time.Hour {
			sinceDay, untilDay := service.UsageDayRange(since, until)
			got, err := s.q.UsageTotalsByDayModel(ctx, db, &sqlitedb.UsageTotalsByDayModelParams{
				ProjectID: filter.ProjectID, TokenID: filter.TokenID,
				Since: since.UnixMilli(), Until: until.UnixMilli(), SinceDay: sinceDay.UnixMilli(), UntilDay: untilDay.UnixMilli(),
			})
			for _, r := range got {
				rows = append(rows, convert.DayModelUsage(r, func(ms int64) time.Time { return time.UnixMilli(ms) }))
			}
			return mapError(err)
		}
		for day := service.UsageDay(since); day.Before(until); day = day.AddDate(0, 0, 1) {
			pieceSince, pieceUntil := service.UsageDayPiece(since, until, day)
			sinceDay, untilDay := service.UsageDayRange(pieceSince, pieceUntil)
			got, err := s.q.UsageTotalsByModel(ctx, db, &sqlitedb.UsageTotalsByModelParams{
				ProjectID: filter.ProjectID, TokenID: filter.TokenID,
				Since: pieceSince.UnixMilli(), Until: pieceUntil.UnixMilli(), SinceDay: sinceDay.UnixMilli(), UntilDay: untilDay.UnixMilli(),
			})
			if err != nil {
				return mapError(err)
			}
			for _, r := range got {
				rows = append(rows, convert.DayModel{Day: day, ModelUsage: convert.ModelUsage(r)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return convert.Days(rows), nil
}

// UsagePrune rolls up each batch in a write transaction of its own, so the
// writer connection is free between batches for the usage recorder and
// admissions.
func (s *Store) UsagePrune(ctx context.Context, params *service.UsagePruneParams) (*service.UsagePruneResult, error) {
	return service.PruneUsageInBatches(ctx, params, func(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
		return inTx(ctx, s, func(tx *Store) (int64, error) {
			rows, err := tx.q.UsageDeleteBefore(ctx, tx.tx, &sqlitedb.UsageDeleteBeforeParams{
				Before:  cutoff.UnixMilli(),
				MaxRows: int64(limit),
			})
			if err != nil || len(rows) == 0 {
				return 0, mapError(err)
			}
			daily := service.RollUpUsage(convert.Map(rows, usageEventFromRow))
			if err := insertJSONRows(ctx, tx, tx.q.UsageDailyAddMany, daily, usageDailyToRow); err != nil {
				return 0, err
			}
			return int64(len(rows)), nil
		})
	})
}

func (s *Store) UsageList(ctx context.Context, params *service.UsageListParams) ([]*service.UsageEvent, error) {
	rows, err := s.q.UsageList(ctx, s.reads(), &sqlitedb.UsageListParams{
		ProjectID: params.ProjectID,
		TokenID:   params.TokenID,
		BeforeID:  convert.BeforeID(params.BeforeID),
		MaxRows:   service.PageLimit(params.Limit),
	})
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Map(rows, usageEventFromRow), nil
}
