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
// The events written are added to usage_hourly in the same transaction.
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
		var (
			total  int64
			rollup service.UsageRollup
		)
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
			if n > 0 {
				rollup.Add(e.TokenID, e.ProjectID, e.Model, e.CreatedAt, e.Status, e.PromptTokens, e.CompletionTokens, e.TotalTokens)
			}
			total += n
		}
		return total, addHourly(rowCtx, tx, db, rollup.Rows())
	})
}

// addHourly adds rows to usage_hourly, with UsageHourlyAdd prepared once.
func addHourly(ctx context.Context, tx *Store, db *txStmts, rows []*service.UsageHourly) error {
	for _, r := range rows {
		err := tx.q.UsageHourlyAdd(ctx, db, &sqlitedb.UsageHourlyAddParams{
			TokenID: r.TokenID, ProjectID: r.ProjectID, Hour: r.Hour.UnixMilli(), Model: r.Model,
			Requests: r.Requests, Errors: r.Errors, PromptTokens: r.PromptTokens,
			CompletionTokens: r.CompletionTokens, TotalTokens: r.TotalTokens,
		})
		if err != nil {
			return mapError(err)
		}
	}
	return nil
}

// UsageRollUp rolls up each batch in a write transaction of its own.
func (s *Store) UsageRollUp(ctx context.Context, batchSize int) (int64, error) {
	return service.RollUpInBatches(ctx, batchSize, func(ctx context.Context, limit int) (int64, error) {
		return inTx(ctx, s, func(tx *Store) (int64, error) {
			events, err := tx.q.UsageRollUpBatch(ctx, tx.tx, int64(limit))
			if err != nil || len(events) == 0 {
				return 0, mapError(err)
			}
			var rollup service.UsageRollup
			for _, e := range events {
				rollup.Add(e.TokenID, e.ProjectID, e.Model, fromMillis(e.CreatedAt), e.Status, e.PromptTokens, e.CompletionTokens, e.TotalTokens)
			}
			db := &txStmts{Tx: tx.tx, stmts: map[string]*sql.Stmt{}}
			return int64(len(events)), addHourly(context.WithoutCancel(ctx), tx, db, rollup.Rows())
		})
	})
}

// usageReadParams are the bounds of r for the usage reads, whose
// parameters are the same.
func usageReadParams(f *service.UsageFilter, r service.UsageReadRange) sqlitedb.UsageTotalsByModelParams {
	return sqlitedb.UsageTotalsByModelParams{
		ProjectID:        f.ProjectID,
		TokenID:          f.TokenID,
		Since:            r.Since.UnixMilli(),
		HourSince:        r.HourSince.UnixMilli(),
		HourUntil:        r.HourUntil.UnixMilli(),
		Until:            r.Until.UnixMilli(),
		RollupToken:      r.RollupToken,
		RollupProjectMin: r.RollupProjectMin,
		RollupProjectMax: r.RollupProjectMax,
		SinceDay:         r.SinceDay.UnixMilli(),
		UntilDay:         r.UntilDay.UnixMilli(),
	}
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

// UsageTotals reads the per-model rows in one statement; the totals are
// their sum.
func (s *Store) UsageTotals(ctx context.Context, filter *service.UsageFilter) (*service.UsageTotals, error) {
	params := usageReadParams(filter, service.NewUsageReadRange(filter))
	byModel, err := s.q.UsageTotalsByModel(ctx, s.reads(), &params)
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Totals(byModel), nil
}

// UsageTotalsByDay reads the days' totals per model in one statement.
func (s *Store) UsageTotalsByDay(ctx context.Context, filter *service.UsageFilter) ([]*service.DayUsage, error) {
	params := usageReadParams(filter, service.NewUsageReadRange(filter))
	rows, err := s.q.UsageTotalsByDayModel(ctx, s.reads(), (*sqlitedb.UsageTotalsByDayModelParams)(&params))
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Days(convert.Map(rows, func(r *sqlitedb.UsageTotalsByDayModelRow) convert.DayModel {
		return convert.DayModelUsage(r, fromMillis)
	})), nil
}

// UsagePrune runs each batch and each hour in a write transaction of its
// own, so the writer connection is free between them for the usage
// recorder and admissions.
func (s *Store) UsagePrune(ctx context.Context, params *service.UsagePruneParams) (*service.UsagePruneResult, error) {
	return service.PruneUsage(ctx, params, service.UsagePruneSteps{
		DeleteEvents: func(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
			return inTx(ctx, s, func(tx *Store) (int64, error) {
				n, err := tx.q.UsageDeleteBefore(ctx, tx.tx, &sqlitedb.UsageDeleteBeforeParams{
					Before:  cutoff.UnixMilli(),
					MaxRows: int64(limit),
				})
				return n, mapError(err)
			})
		},
		FoldHour: func(ctx context.Context, cutoff time.Time) (int, error) {
			return inTx(ctx, s, func(tx *Store) (int, error) {
				rows, err := tx.q.UsageHourlyFold(ctx, tx.tx, cutoff.UnixMilli())
				if err != nil || len(rows) == 0 {
					return 0, mapError(err)
				}
				hourly := convert.Map(rows, func(r *sqlitedb.UsageHourly) *service.UsageHourly {
					return &service.UsageHourly{
						TokenID: r.TokenID, ProjectID: r.ProjectID, Hour: fromMillis(r.Hour), Model: r.Model,
						Requests: r.Requests, Errors: r.Errors, PromptTokens: r.PromptTokens,
						CompletionTokens: r.CompletionTokens, TotalTokens: r.TotalTokens,
					}
				})
				return len(rows), insertJSONRows(ctx, tx, tx.q.UsageDailyAddMany, service.FoldHourly(hourly), usageDailyToRow)
			})
		},
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
