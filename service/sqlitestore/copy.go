package sqlitestore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/llmproxy/llmproxy/gen/sqlitedb"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/internal/convert"
)

func (s *Store) ProjectDump(ctx context.Context, p *service.DumpParams) ([]*service.Project, error) {
	rows, err := s.q.ProjectDump(ctx, s.reads(), &sqlitedb.ProjectDumpParams{AfterID: p.AfterID, MaxRows: p.MaxRows()})
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Map(rows, projectFromRow), nil
}

func (s *Store) TokenDump(ctx context.Context, p *service.DumpParams) ([]*service.Token, error) {
	rows, err := s.q.TokenDump(ctx, s.reads(), &sqlitedb.TokenDumpParams{AfterID: p.AfterID, MaxRows: p.MaxRows()})
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Map(rows, tokenFromRow), nil
}

func (s *Store) UsageDump(ctx context.Context, p *service.DumpParams) ([]*service.UsageEvent, error) {
	rows, err := s.q.UsageDump(ctx, s.reads(), &sqlitedb.UsageDumpParams{AfterID: p.AfterID, MaxRows: p.MaxRows()})
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Map(rows, usageEventFromRow), nil
}

func (s *Store) UsageDailyDump(ctx context.Context, p *service.UsageDailyDumpParams) ([]*service.UsageDaily, error) {
	rows, err := s.q.UsageDailyDump(ctx, s.reads(), &sqlitedb.UsageDailyDumpParams{
		AfterDay:       p.After.Day.UnixMilli(),
		AfterProjectID: p.After.ProjectID,
		AfterTokenID:   p.After.TokenID,
		AfterModel:     p.After.Model,
		MaxRows:        p.MaxRows(),
	})
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Map(rows, usageDailyFromRow), nil
}

func (s *Store) AuditDump(ctx context.Context, p *service.DumpParams) ([]*service.AuditEvent, error) {
	rows, err := s.q.AuditDump(ctx, s.reads(), &sqlitedb.AuditDumpParams{AfterID: p.AfterID, MaxRows: p.MaxRows()})
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Map(rows, auditEventFromRow), nil
}

func (s *Store) TableCounts(ctx context.Context) (map[string]int64, error) {
	row, err := s.q.TableCounts(ctx, s.reads())
	if err != nil {
		return nil, mapError(err)
	}
	return convert.TableCounts(row), nil
}

// TableSequencesReset has nothing to reset, since SQLite gives a new row
// max(id) + 1; it returns those next ids.
func (s *Store) TableSequencesReset(ctx context.Context) (map[string]int64, error) {
	row, err := s.q.TableSequencesReset(ctx, s.reads())
	if err != nil {
		return nil, mapError(err)
	}
	return convert.NextIDs(row), nil
}

// TableTruncateAll deletes tokens before the projects they reference.
func (s *Store) TableTruncateAll(ctx context.Context) error {
	_, err := inTx(ctx, s, func(tx *Store) (struct{}, error) {
		for _, deleteAll := range []func(context.Context, sqlitedb.DBTX) error{
			tx.q.TokenDeleteAll, tx.q.ProjectDeleteAll, tx.q.UsageDeleteAll, tx.q.UsageDailyDeleteAll, tx.q.AuditDeleteAll, tx.q.SessionDeleteAll,
		} {
			if err := deleteAll(ctx, tx.tx); err != nil {
				return struct{}{}, mapError(err)
			}
		}
		return struct{}{}, nil
	})
	return err
}

// The rows the *InsertFullMany queries read with json_each: keys are column
// names, blobs are hex (JSON has no bytes) and times unix milliseconds.
type (
	projectFullRow struct {
		ID               int64  `json:"id"`
		Name             string `json:"name"`
		APIKeyCiphertext string `json:"api_key_ciphertext"`
		APIKeyHint       string `json:"api_key_hint"`
		IsActive         bool   `json:"is_active"`
		CreatedAt        int64  `json:"created_at"`
		UpdatedAt        int64  `json:"updated_at"`
	}
	tokenFullRow struct {
		ID               int64  `json:"id"`
		ProjectID        int64  `json:"project_id"`
		SecretHash       string `json:"secret_hash"`
		TokenPrefix      string `json:"token_prefix"`
		ExpiresAt        int64  `json:"expires_at"`
		MaxRequests      *int64 `json:"max_requests"`
		RequestCount     int64  `json:"request_count"`
		IsActive         bool   `json:"is_active"`
		CreatedAt        int64  `json:"created_at"`
		UpdatedAt        int64  `json:"updated_at"`
		LastUsedAt       *int64 `json:"last_used_at"`
		RequestsReserved int64  `json:"requests_reserved"`
		LeaseUntil       *int64 `json:"lease_until"`
	}
	usageFullRow struct {
		ID int64 `json:"id"`
		usageRow
	}
	// usageDailyRow serves UsageDailyAddMany as well.
	usageDailyRow struct {
		Day              int64  `json:"day"`
		ProjectID        int64  `json:"project_id"`
		TokenID          int64  `json:"token_id"`
		Model            string `json:"model"`
		Requests         int64  `json:"requests"`
		Errors           int64  `json:"errors"`
		PromptTokens     int64  `json:"prompt_tokens"`
		CompletionTokens int64  `json:"completion_tokens"`
		TotalTokens      int64  `json:"total_tokens"`
	}
	auditFullRow struct {
		ID        int64  `json:"id"`
		Actor     string `json:"actor"`
		Action    string `json:"action"`
		ProjectID *int64 `json:"project_id"`
		TokenID   *int64 `json:"token_id"`
		Result    string `json:"result"`
		Details   string `json:"details"`
		CreatedAt int64  `json:"created_at"`
	}
)

func (s *Store) ProjectInsertFullMany(ctx context.Context, rows []*service.Project) error {
	return insertJSONRows(ctx, s, s.q.ProjectInsertFullMany, rows, func(r *service.Project) projectFullRow {
		return projectFullRow{
			ID:               r.ID,
			Name:             r.Name,
			APIKeyCiphertext: hex.EncodeToString(r.APIKeyCiphertext),
			APIKeyHint:       r.APIKeyHint,
			IsActive:         r.IsActive,
			CreatedAt:        r.CreatedAt.UnixMilli(),
			UpdatedAt:        r.UpdatedAt.UnixMilli(),
		}
	})
}

func (s *Store) TokenInsertFullMany(ctx context.Context, rows []*service.Token) error {
	return insertJSONRows(ctx, s, s.q.TokenInsertFullMany, rows, func(r *service.Token) tokenFullRow {
		return tokenFullRow{
			ID:               r.ID,
			ProjectID:        r.ProjectID,
			SecretHash:       hex.EncodeToString(r.SecretHash),
			TokenPrefix:      r.TokenPrefix,
			ExpiresAt:        r.ExpiresAt.UnixMilli(),
			MaxRequests:      r.MaxRequests,
			RequestCount:     r.RequestCount,
			IsActive:         r.IsActive,
			CreatedAt:        r.CreatedAt.UnixMilli(),
			UpdatedAt:        r.UpdatedAt.UnixMilli(),
			LastUsedAt:       toMillisPtr(r.LastUsedAt),
			RequestsReserved: r.RequestsReserved,
			LeaseUntil:       toMillisPtr(r.LeaseUntil),
		}
	})
}

func (s *Store) UsageInsertFullMany(ctx context.Context, rows []*service.UsageEvent) error {
	return insertJSONRows(ctx, s, s.q.UsageInsertFullMany, rows, func(r *service.UsageEvent) usageFullRow {
		return usageFullRow{ID: r.ID, usageRow: usageRow{
			TokenID:          r.TokenID,
			ProjectID:        r.ProjectID,
			Method:           r.Method,
			Path:             r.Path,
			Model:            r.Model,
			Status:           r.Status,
			PromptTokens:     r.PromptTokens,
			CompletionTokens: r.CompletionTokens,
			TotalTokens:      r.TotalTokens,
			LatencyMS:        r.LatencyMS,
			CreatedAt:        r.CreatedAt.UnixMilli(),
			EventID:          nullableHex(r.EventID),
		}}
	})
}

func (s *Store) UsageDailyInsertFullMany(ctx context.Context, rows []*service.UsageDaily) error {
	return insertJSONRows(ctx, s, s.q.UsageDailyInsertFullMany, rows, usageDailyToRow)
}

func usageDailyToRow(r *service.UsageDaily) usageDailyRow {
	return usageDailyRow{
		Day:              r.Day.UnixMilli(),
		ProjectID:        r.ProjectID,
		TokenID:          r.TokenID,
		Model:            r.Model,
		Requests:         r.Requests,
		Errors:           r.Errors,
		PromptTokens:     r.PromptTokens,
		CompletionTokens: r.CompletionTokens,
		TotalTokens:      r.TotalTokens,
	}
}

func (s *Store) AuditInsertFullMany(ctx context.Context, rows []*service.AuditEvent) error {
	return insertJSONRows(ctx, s, s.q.AuditInsertFullMany, rows, func(r *service.AuditEvent) auditFullRow {
		details := "{}"
		if r.Details != nil {
			details = string(r.Details)
		}
		return auditFullRow{
			ID:        r.ID,
			Actor:     r.Actor,
			Action:    r.Action,
			ProjectID: r.ProjectID,
			TokenID:   r.TokenID,
			Result:    r.Result,
			Details:   details,
			CreatedAt: r.CreatedAt.UnixMilli(),
		}
	})
}

// insertJSONRows writes rows with one INSERT ... SELECT FROM json_each: a
// single statement, so all rows or none.
func insertJSONRows[T, R any](ctx context.Context, s *Store, insert func(context.Context, sqlitedb.DBTX, string) (int64, error), rows []*T, toRow func(*T) R) error {
	if len(rows) == 0 {
		return nil
	}
	data, err := json.Marshal(convert.Map(rows, toRow))
	if err != nil {
		return err
	}
	_, err = insert(ctx, s.writes(), string(data))
	return mapError(err)
}

func toMillisPtr(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	ms := t.UnixMilli()
	return &ms
}

// backupParams are those of a reader without query_only, which VACUUM INTO
// refuses.
var backupParams = []string{
	"_pragma=foreign_keys(1)",
	"_pragma=busy_timeout(10000)",
}

// Backup writes a consistent snapshot of the database to the new file path
// with VACUUM INTO. It runs on a connection of its own, as a read
// transaction, so the store's writer stays free and writes go on meanwhile.
func (s *Store) Backup(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	// Created empty first (VACUUM INTO fills an empty file), so that it is
	// private like the database and an existing file is refused atomically.
	if err := createPrivate(abs); err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	if err := s.vacuumInto(ctx, abs); err != nil {
		_ = os.Remove(abs) // a partial file is no backup
		return fmt.Errorf("backup %s: %w", path, err)
	}
	return nil
}

func (s *Store) vacuumInto(ctx context.Context, path string) error {
	db, err := openDB(ctx, s.path, backupParams, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	// The statement is fixed and the path a bound parameter.
	_, err = db.ExecContext(ctx, "VACUUM INTO ?", path)
	return mapError(err)
}
