package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/llmproxy/llmproxy/service"
)

func openTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), service.Config{SQLitePath: filepath.Join(t.TempDir(), "test.db")})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func pragma(t *testing.T, db *sql.DB, name string) string {
	t.Helper()
	var v string
	if err := db.QueryRowContext(context.Background(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestConnectionSettings(t *testing.T) {
	t.Parallel()
	s := openTestStore(t)
	for _, c := range []struct {
		db     *sql.DB
		dbName string
		pragma string
		want   string
	}{
		{s.writer, "writer", "foreign_keys", "1"},
		{s.writer, "writer", "journal_mode", "wal"},
		{s.writer, "writer", "busy_timeout", "10000"},
		{s.writer, "writer", "synchronous", "1"}, // NORMAL
		{s.writer, "writer", "query_only", "0"},
		{s.writer, "writer", "wal_autocheckpoint", strconv.Itoa(walBackstopPages)},
		{s.reader, "reader", "foreign_keys", "1"},
		{s.reader, "reader", "journal_mode", "wal"},
		{s.reader, "reader", "busy_timeout", "10000"},
		{s.reader, "reader", "query_only", "1"},
	} {
		if got := pragma(t, c.db, c.pragma); got != c.want {
			t.Errorf("%s: PRAGMA %s = %s, want %s", c.dbName, c.pragma, got, c.want)
		}
	}
	if n := s.writer.Stats().MaxOpenConnections; n != 1 {
		t.Errorf("writer allows %d connections, want 1", n)
	}
}

// mapError is checked against errors the database really raises.
func TestMapError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTestStore(t)
	project, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "p", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"})
	if err != nil {
		t.Fatalf("ProjectCreate: %v", err)
	}
	insertToken := func(projectID int64, hash string, maxRequests any) error {
		_, err := s.writer.ExecContext(ctx,
			"INSERT INTO tokens (project_id, secret_hash, token_prefix, expires_at, max_requests) VALUES (?, ?, 'sk-', 0, ?)",
			projectID, []byte(hash), maxRequests)
		return err
	}
	if err := insertToken(project.ID, "taken", nil); err != nil {
		t.Fatalf("insert token: %v", err)
	}

	for _, c := range []struct {
		name     string
		provoke  func() error
		want     error
		wantCode int // 0: the driver's error is not kept
	}{
		{"Unique", func() error { return insertToken(project.ID, "taken", nil) }, service.ErrConflict, sqlite3.SQLITE_CONSTRAINT_UNIQUE},
		{"PrimaryKey", func() error {
			_, err := s.writer.ExecContext(ctx, "INSERT INTO projects (id, name, api_key_ciphertext, api_key_hint) VALUES (?, 'other', x'01', 'h')", project.ID)
			return err
		}, service.ErrConflict, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY},
		{"ForeignKey", func() error { return insertToken(project.ID+1000, "orphan", nil) }, service.ErrReference, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY},
		{"Check", func() error { return insertToken(project.ID, "zero-limit", 0) }, service.ErrInvalid, sqlite3.SQLITE_CONSTRAINT_CHECK},
		{"NotNull", func() error {
			_, err := s.writer.ExecContext(ctx, "INSERT INTO projects (name, api_key_ciphertext, api_key_hint) VALUES (NULL, x'01', 'h')")
			return err
		}, service.ErrInvalid, sqlite3.SQLITE_CONSTRAINT_NOTNULL},
		{"StrictType", func() error { return insertToken(project.ID, "text-limit", "many") }, service.ErrInvalid, sqlite3.SQLITE_CONSTRAINT_DATATYPE},
		{"NoRows", func() error {
			_, err := s.q.TokenGetByID(ctx, s.reader, 424242)
			return err
		}, service.ErrNotFound, 0},
		{"Busy", func() error { return writeWhileLocked(t) }, service.ErrUnavailable, sqlite3.SQLITE_BUSY},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw := c.provoke()
			got := mapError(raw)
			if !errors.Is(got, c.want) {
				t.Fatalf("mapError(%v) = %v, want %v", raw, got, c.want)
			}
			if c.wantCode == 0 {
				return
			}
			var se *sqlite.Error
			if !errors.As(got, &se) || se.Code() != c.wantCode {
				t.Fatalf("mapError(%v) = %v, want the driver error with code %d kept", raw, got, c.wantCode)
			}
		})
	}

	t.Run("PassThrough", func(t *testing.T) {
		if err := mapError(nil); err != nil {
			t.Errorf("mapError(nil) = %v", err)
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		_, raw := s.q.TokenGetByID(cancelled, s.reader, 1)
		if got := mapError(raw); got != context.Canceled {
			t.Errorf("mapError(%v) = %v, want context.Canceled unchanged", raw, got)
		}
	})
}

// writeWhileLocked writes through a second connection without busy_timeout
// while another one holds the write lock, which fails with SQLITE_BUSY.
func writeWhileLocked(t *testing.T) error {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "busy.db")
	holder, err := sql.Open("sqlite", dsn(path, writerParams))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tx, err := holder.BeginTx(ctx, nil) // BEGIN IMMEDIATE takes the write lock
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer tx.Rollback()
	other, err := sql.Open("sqlite", dsn(path, []string{"_pragma=busy_timeout(0)"}))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = other.ExecContext(ctx, "CREATE TABLE t (x INTEGER)")
	return err
}

// The reader pool must refuse writes, so a write routed to it by mistake
// fails instead of racing the writer for the lock.
func TestReaderIsQueryOnly(t *testing.T) {
	t.Parallel()
	s := openTestStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.reader.ExecContext(ctx, "INSERT INTO audit_events (actor, action, result) VALUES ('a', 'b', 'c')")
	var se *sqlite.Error
	if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_READONLY {
		t.Fatalf("write on the reader pool = %v, want SQLITE_READONLY", err)
	}
}

// The conformance suite cannot make one row of a batch fail in an
// engine-neutral way; here a trigger refuses one row of the middle.
func TestUsageInsertBatchAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTestStore(t)
	if _, err := s.writer.ExecContext(ctx, `CREATE TRIGGER refuse_poison BEFORE INSERT ON usage_events
		WHEN NEW.model = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END`); err != nil {
		t.Fatalf("create trigger: %v", err)
	}
	events := make([]*service.UsageEventCreateParams, 5)
	for i := range events {
		events[i] = &service.UsageEventCreateParams{TokenID: 1, ProjectID: 1, Method: "POST", Path: "/v1/x", Model: "ok", Status: 200, CreatedAt: time.Now()}
	}
	events[2].Model = "poison"
	if n, err := s.UsageInsertBatch(ctx, events); err == nil {
		t.Fatalf("UsageInsertBatch with a refused row wrote %d rows and no error", n)
	}
	totals, err := s.UsageTotals(ctx, &service.UsageFilter{})
	if err != nil {
		t.Fatalf("UsageTotals: %v", err)
	}
	if totals.Requests != 0 {
		t.Errorf("after a failed batch %d rows remain, want 0", totals.Requests)
	}
}

// The background checkpointer, not the writer, moves the WAL into the
// database file: after a write, a checkpoint must report the WAL's frames
// copied, and the data must be intact.
func TestBackgroundCheckpoint(t *testing.T) {
	t.Parallel()
	s := openTestStore(t)
	ctx := t.Context()
	// A project is enough to put frames in the WAL.
	if _, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "checkpointed", APIKeyCiphertext: []byte("x"), APIKeyHint: "x"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		frames, _ := s.checkpointer.last.Load().(walFrames)
		if frames.log > 0 && frames.checkpointed == frames.log {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no complete checkpoint within 20s (last: %+v, runs: %d)", frames, s.checkpointer.runs.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := pragma(t, s.reader, "integrity_check"); got != "ok" {
		t.Errorf("integrity_check = %s", got)
	}
}

// UsageInsertBatch writes all its events or none. usage_events has no
// constraint a recorded request could break, so a trigger refuses one row
// in the middle of a batch; none of the batch may stay.
func TestUsageInsertBatchWritesAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openTestStore(t)
	if _, err := s.writer.ExecContext(ctx, `CREATE TRIGGER usage_events_refuse_poison BEFORE INSERT ON usage_events
		WHEN NEW.model = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END`); err != nil {
		t.Fatal(err)
	}
	event := func(model string) *service.UsageEventCreateParams {
		return &service.UsageEventCreateParams{TokenID: 1, ProjectID: 1, Method: "POST", Path: "/v1/x", Model: model, Status: 200, CreatedAt: time.Now()}
	}
	count := func() int64 {
		t.Helper()
		var n int64
		if err := s.writer.QueryRowContext(ctx, "SELECT count(*) FROM usage_events").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := s.UsageInsertBatch(ctx, []*service.UsageEventCreateParams{event("m"), event("poison"), event("m")}); err == nil {
		t.Fatal("UsageInsertBatch with a refused row succeeded")
	}
	if n := count(); n != 0 {
		t.Errorf("%d events stored after a refused batch, want 0", n)
	}
	if n, err := s.UsageInsertBatch(ctx, []*service.UsageEventCreateParams{event("m"), event("m")}); err != nil || n != 2 || count() != 2 {
		t.Errorf("UsageInsertBatch without the refused row = %d, %v; want 2 written", n, err)
	}
}
