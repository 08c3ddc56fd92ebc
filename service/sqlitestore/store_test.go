package sqlitestore_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/llmproxy/llmproxy/migrate"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/sqlitestore"
	"github.com/llmproxy/llmproxy/service/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) service.Store {
		return openStore(t, filepath.Join(t.TempDir(), "test.db"))
	})
}

func openStore(t testing.TB, path string) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(context.Background(), service.Config{SQLitePath: path})
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestOpenCreatesDirectoryAndFile(t *testing.T) {
	t.Parallel()
	// '?', '#', '%' and spaces must reach the file system as they are, not
	// end the path part of the file: URI.
	path := filepath.Join(t.TempDir(), "new dir", "a?b#c%20d", "llmproxy.db")
	s := openStore(t, path)
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("database file not created: %v", err)
	}
	if !info.Mode().IsRegular() {
		t.Fatalf("%s: mode %v, want a regular file", path, info.Mode())
	}
	dirInfo, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatalf("directory not created: %v", err)
	}
	if perm := dirInfo.Mode().Perm(); perm&^0o750 != 0 {
		t.Errorf("directory permissions %v, want at most 0750", perm)
	}
}

func TestOpenRegistersDriver(t *testing.T) {
	t.Parallel()
	cfg := service.DefaultConfig()
	cfg.SQLitePath = filepath.Join(t.TempDir(), "llmproxy.db")
	s, err := service.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("service.Open: %v", err)
	}
	defer s.Close()
	if _, ok := s.(*sqlitestore.Store); !ok {
		t.Fatalf("service.Open returned %T, want *sqlitestore.Store", s)
	}
}

func TestReopenKeepsDataAndAppliesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "llmproxy.db")
	s, err := sqlitestore.Open(ctx, service.Config{SQLitePath: path})
	if err != nil {
		t.Fatalf("first Open: %v", err)
	}
	created, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "kept", APIKeyCiphertext: []byte{1}, APIKeyHint: "sk-...kept"})
	if err != nil {
		t.Fatalf("ProjectCreate: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	reopened := openStore(t, path)
	got, err := reopened.ProjectGetByID(ctx, created.ID)
	if err != nil {
		t.Fatalf("ProjectGetByID after reopening: %v", err)
	}
	if got.Name != "kept" {
		t.Errorf("project name after reopening = %q, want %q", got.Name, "kept")
	}

	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // as migrate.Apply requires for SQLite
	applied, err := migrate.Apply(ctx, db, migrate.SQLite)
	if err != nil {
		t.Fatalf("migrate.Apply on an opened database: %v", err)
	}
	if len(applied) != 0 {
		t.Errorf("migrate.Apply after Open applied %v, want nothing", applied)
	}
}

func TestOpenSkipMigrateLeavesDatabaseEmpty(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "llmproxy.db")
	s, err := sqlitestore.Open(ctx, service.Config{SQLitePath: path, SkipMigrate: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if _, err := s.ProjectGetByID(ctx, 1); err == nil || errors.Is(err, service.ErrNotFound) {
		t.Fatalf("ProjectGetByID on an unmigrated database = %v, want a missing-table error", err)
	}
}

func TestOpenBadPathNamesIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"FileWhereDirectoryShouldBe": filepath.Join(file, "llmproxy.db"),
		"PathIsDirectory":            dir,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := sqlitestore.Open(context.Background(), service.Config{SQLitePath: path})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded, want an error", path)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("Open(%q) error %q does not name the path", path, err)
			}
		})
	}
}

func TestUsageInsertBatchTenThousandRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "test.db"))
	at := time.Date(2025, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	events := make([]*service.UsageEventCreateParams, 10_000)
	for i := range events {
		events[i] = &service.UsageEventCreateParams{
			TokenID: 1, ProjectID: 2, Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o-mini",
			Status: 200, PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7, LatencyMS: int64(i), CreatedAt: at,
		}
	}
	n, err := s.UsageInsertBatch(ctx, events)
	if err != nil {
		t.Fatalf("UsageInsertBatch: %v", err)
	}
	if n != int64(len(events)) {
		t.Fatalf("UsageInsertBatch wrote %d rows, want %d", n, len(events))
	}
	totals, err := s.UsageTotals(ctx, &service.UsageFilter{})
	if err != nil {
		t.Fatalf("UsageTotals: %v", err)
	}
	if totals.Requests != 10_000 || totals.TotalTokens != 70_000 {
		t.Errorf("totals = %+v, want 10000 requests and 70000 tokens", totals.UsageCounts)
	}
	newest, err := s.UsageList(ctx, &service.UsageListParams{Limit: 1})
	if err != nil {
		t.Fatalf("UsageList: %v", err)
	}
	if len(newest) != 1 || newest[0].LatencyMS != 9_999 || !newest[0].CreatedAt.Equal(at) {
		t.Errorf("newest event = %+v, want the last one of the batch at %v", newest, at)
	}
}

// A transaction whose context is cancelled must not keep the writer's only
// connection: the next write has to go through, and nothing of the
// cancelled transaction may remain.
func TestInTxCancelledReleasesWriter(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "test.db"))
	ctx, cancel := context.WithCancel(context.Background())
	var inside *service.Project
	err := s.InTx(ctx, func(tx service.Store) error {
		var err error
		inside, err = tx.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "cancelled", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"})
		if err != nil {
			return err
		}
		cancel()
		_, err = tx.ProjectGetByID(ctx, inside.ID)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("InTx after cancel = %v, want context.Canceled", err)
	}

	bg, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	if _, err := s.ProjectCreate(bg, &service.ProjectCreateParams{Name: "after", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"}); err != nil {
		t.Fatalf("ProjectCreate after a cancelled transaction: %v", err)
	}
	// Ids are reused after a rollback, so look for the project by name.
	projects, err := s.ProjectList(bg, &service.ProjectListParams{})
	if err != nil {
		t.Fatalf("ProjectList: %v", err)
	}
	for _, p := range projects {
		if p.Name == inside.Name {
			t.Fatalf("project %q of the cancelled transaction was kept", p.Name)
		}
	}
}

// The database holds token hashes and encrypted upstream keys: its file,
// its -wal and -shm files and a backup are readable by the owner only.
func TestFilesArePrivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "llmproxy.db")
	s := openStore(t, path)
	if _, err := s.ProjectCreate(t.Context(), &service.ProjectCreateParams{Name: "p", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"}); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup.db")
	if err := s.Backup(t.Context(), backup); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{path, path + "-wal", path + "-shm", backup} {
		info, err := os.Stat(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if perm := info.Mode().Perm(); perm&^0o600 != 0 {
			t.Errorf("%s: mode %v, want at most 0600", filepath.Base(file), perm)
		}
	}
}

// A database file that exists keeps its mode: the operator chose it.
func TestOpenKeepsModeOfExistingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "llmproxy.db")
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil { // whatever the umask
		t.Fatal(err)
	}
	openStore(t, path)
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o640 {
		t.Errorf("existing database file: %v, %v; want mode 0640 kept", info.Mode().Perm(), err)
	}
}
