package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llmproxy/gen/pgdb"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/internal/convert"
)

func (s *Store) ProjectDump(ctx context.Context, p *service.DumpParams) ([]*service.Project, error) {
	rows, err := s.q.ProjectDump(ctx, s.db, &pgdb.ProjectDumpParams{AfterID: p.AfterID, MaxRows: p.MaxRows()})
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.Map(rows, projectFromRow), nil
}

func (s *Store) TokenDump(ctx context.Context, p *service.DumpParams) ([]*service.Token, error) {
	rows, err := s.q.TokenDump(ctx, s.db, &pgdb.TokenDumpParams{AfterID: p.AfterID, MaxRows: p.MaxRows()})
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.Map(rows, tokenFromRow), nil
}

func (s *Store) UsageDump(ctx context.Context, p *service.DumpParams) ([]*service.UsageEvent, error) {
	rows, err := s.q.UsageDump(ctx, s.db, &pgdb.UsageDumpParams{AfterID: p.AfterID, MaxRows: p.MaxRows()})
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.Map(rows, usageEventFromRow), nil
}

func (s *Store) UsageDailyDump(ctx context.Context, p *service.UsageDailyDumpParams) ([]*service.UsageDaily, error) {
	rows, err := s.q.UsageDailyDump(ctx, s.db, &pgdb.UsageDailyDumpParams{
		AfterDay:       p.After.Day,
		AfterProjectID: p.After.ProjectID,
		AfterTokenID:   p.After.TokenID,
		AfterModel:     p.After.Model,
		MaxRows:        p.MaxRows(),
	})
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.Map(rows, usageDailyFromRow), nil
}

func (s *Store) AuditDump(ctx context.Context, p *service.DumpParams) ([]*service.AuditEvent, error) {
	rows, err := s.q.AuditDump(ctx, s.db, &pgdb.AuditDumpParams{AfterID: p.AfterID, MaxRows: p.MaxRows()})
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.Map(rows, auditEventFromRow), nil
}

func (s *Store) TableCounts(ctx context.Context) (map[string]int64, error) {
	row, err := s.q.TableCounts(ctx, s.db)
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.TableCounts(row), nil
}

func (s *Store) TableSequencesReset(ctx context.Context) (map[string]int64, error) {
	row, err := s.q.TableSequencesReset(ctx, s.db)
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.NextIDs(row), nil
}

// TableTruncateAll deletes tokens before the projects they reference.
func (s *Store) TableTruncateAll(ctx context.Context) error {
	return s.withTx(ctx, pgx.TxOptions{}, func(tx *Store) error {
		for _, deleteAll := range []func(context.Context, pgdb.DBTX) error{
			tx.q.TokenDeleteAll, tx.q.ProjectDeleteAll, tx.q.UsageDeleteAll, tx.q.UsageDailyDeleteAll, tx.q.AuditDeleteAll, tx.q.SessionDeleteAll,
		} {
			if err := deleteAll(ctx, tx.db); err != nil {
				return tx.fail(err)
			}
		}
		return nil
	})
}

// The *InsertFullMany methods each write with one COPY, which is all or nothing.

func (s *Store) ProjectInsertFullMany(ctx context.Context, rows []*service.Project) error {
	return copyFrom(ctx, s, s.q.ProjectInsertFullMany, rows, func(r *service.Project) pgdb.ProjectInsertFullManyParams {
		return pgdb.ProjectInsertFullManyParams{
			ID:               r.ID,
			Name:             r.Name,
			ApiKeyCiphertext: r.APIKeyCiphertext,
			ApiKeyHint:       r.APIKeyHint,
			IsActive:         r.IsActive,
			CreatedAt:        r.CreatedAt,
			UpdatedAt:        r.UpdatedAt,
		}
	})
}

func (s *Store) TokenInsertFullMany(ctx context.Context, rows []*service.Token) error {
	return copyFrom(ctx, s, s.q.TokenInsertFullMany, rows, func(r *service.Token) pgdb.TokenInsertFullManyParams {
		return pgdb.TokenInsertFullManyParams(*r)
	})
}

func (s *Store) UsageInsertFullMany(ctx context.Context, rows []*service.UsageEvent) error {
	return copyFrom(ctx, s, s.q.UsageInsertFullMany, rows, func(r *service.UsageEvent) pgdb.UsageInsertFullManyParams {
		return pgdb.UsageInsertFullManyParams{
			ID:               r.ID,
			TokenID:          r.TokenID,
			ProjectID:        r.ProjectID,
			Method:           r.Method,
			Path:             r.Path,
			Model:            r.Model,
			Status:           r.Status,
			PromptTokens:     r.PromptTokens,
			CompletionTokens: r.CompletionTokens,
			TotalTokens:      r.TotalTokens,
			LatencyMs:        r.LatencyMS,
			CreatedAt:        r.CreatedAt,
			EventID:          r.EventID,
		}
	})
}

// UsageDailyInsertFullMany refuses a day that is not a UTC midnight, as
// SQLite's CHECK does, rather than let the date column truncate it.
func (s *Store) UsageDailyInsertFullMany(ctx context.Context, rows []*service.UsageDaily) error {
	for _, r := range rows {
		if !r.Day.Equal(service.UsageDay(r.Day)) {
			return fmt.Errorf("%w: usage_daily day %s is not a UTC midnight", service.ErrInvalid, r.Day.Format(time.RFC3339Nano))
		}
	}
	return copyFrom(ctx, s, s.q.UsageDailyInsertFullMany, rows, func(r *service.UsageDaily) pgdb.UsageDailyInsertFullManyParams {
		return pgdb.UsageDailyInsertFullManyParams(*r)
	})
}

func (s *Store) AuditInsertFullMany(ctx context.Context, rows []*service.AuditEvent) error {
	return copyFrom(ctx, s, s.q.AuditInsertFullMany, rows, func(r *service.AuditEvent) pgdb.AuditInsertFullManyParams {
		details := "{}"
		if r.Details != nil {
			details = string(r.Details)
		}
		return pgdb.AuditInsertFullManyParams{
			ID:        r.ID,
			Actor:     r.Actor,
			Action:    r.Action,
			ProjectID: r.ProjectID,
			TokenID:   r.TokenID,
			Result:    r.Result,
			Details:   details,
			CreatedAt: r.CreatedAt,
		}
	})
}

// Backup is not this store's: PostgreSQL is backed up with pg_dump, which
// runs beside the server, not through a client connection.
func (s *Store) Backup(context.Context, string) error {
	return fmt.Errorf("postgres: backup: %w; use pg_dump", service.ErrNotImplemented)
}

// copyFrom converts rows into one backing array and copies them in.
func copyFrom[T, P any](ctx context.Context, s *Store, copyIn func(context.Context, pgdb.DBTX, []*P) (int64, error), rows []*T, toParams func(*T) P) error {
	if len(rows) == 0 {
		return nil
	}
	params := make([]P, len(rows))
	ptrs := make([]*P, len(rows))
	for i, r := range rows {
		params[i] = toParams(r)
		ptrs[i] = &params[i]
	}
	if _, err := copyIn(ctx, s.db, ptrs); err != nil {
		return s.fail(err)
	}
	return nil
}
