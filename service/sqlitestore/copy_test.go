package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// TestBackupWhileWriting backs up while another goroutine keeps inserting
// batches of usage events: the backup must be a sound database holding
// every row committed before it started and whole batches only.
func TestBackupWhileWriting(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openTestStore(t)
	p, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "p", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"})
	if err != nil {
		t.Fatal(err)
	}
	const batchSize = 50
	batch := make([]*service.UsageEventCreateParams, batchSize)
	for i := range batch {
		batch[i] = &service.UsageEventCreateParams{TokenID: 1, ProjectID: p.ID, Method: "POST", Path: "/v1/x", Model: "m", Status: 200, CreatedAt: time.Now()}
	}
	insert := func() error {
		_, err := s.UsageInsertBatch(ctx, batch)
		return err
	}
	for range 20 {
		if err := insert(); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	writing := make(chan struct{})
	var writes sync.WaitGroup
	var writeErr error
	writes.Go(func() {
		writeErr = insert()
		close(writing) // one batch is in: the writer is running
		for writeErr == nil {
			select {
			case <-stop:
				return
			default:
				writeErr = insert()
			}
		}
	})
	<-writing
	path := filepath.Join(t.TempDir(), "backup.db")
	backupErr := s.Backup(ctx, path)
	close(stop)
	writes.Wait()
	if backupErr != nil || writeErr != nil {
		t.Fatalf("Backup: %v; writes meanwhile: %v", backupErr, writeErr)
	}

	checkDB, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer checkDB.Close()
	var integrity string
	if err := checkDB.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check of the backup: %q, %v", integrity, err)
	}

	backup, err := Open(ctx, service.Config{SQLitePath: path, SkipMigrate: true})
	if err != nil {
		t.Fatalf("open the backup: %v", err)
	}
	defer backup.Close()
	counts, err := backup.TableCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.TableCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := counts[service.TableUsageEvents]
	if counts[service.TableProjects] != 1 || got < 21*batchSize || got > all[service.TableUsageEvents] || got%batchSize != 0 {
		t.Fatalf("backup has %v: want the project, at least the %d events written before it, whole batches of %d, at most the %d there are now",
			counts, 21*batchSize, batchSize, all[service.TableUsageEvents])
	}
	events, err := backup.UsageDump(ctx, &service.DumpParams{Limit: int(got)})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range events {
		if e.ID != int64(i+1) {
			t.Fatalf("backup event %d has id %d: the backup is not a prefix of the writes", i, e.ID)
		}
	}
}

func TestBackupRefusesBadPaths(t *testing.T) {
	t.Parallel()
	s := openTestStore(t)
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.db")
	if err := os.WriteFile(existing, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Backup(t.Context(), existing); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Backup to an existing file: %v, want fs.ErrExist", err)
	}
	if data, _ := os.ReadFile(existing); string(data) != "keep me" {
		t.Errorf("the existing file was changed: %q", data)
	}
	if err := s.Backup(t.Context(), filepath.Join(dir, "missing", "backup.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Backup into a missing directory: %v, want fs.ErrNotExist", err)
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	path := filepath.Join(dir, "cancelled.db")
	if err := s.Backup(cancelled, path); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Backup: %v, want context.Canceled", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed backup left %s: %v", path, err)
	}
}
