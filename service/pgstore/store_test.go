package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/pgstore"
	"github.com/llmproxy/llmproxy/service/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) service.Store {
		return openStore(t, migratedDatabase(t))
	})
}

func TestOpenMigratesEmptyDatabase(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	s, err := service.Open(t.Context(), postgresConfig(url)) // through the driver registry
	if err != nil {
		t.Fatalf("Open on an empty database: %v", err)
	}
	defer s.Close()
	if _, err := s.ProjectCreate(t.Context(), &service.ProjectCreateParams{
		Name: "p", APIKeyCiphertext: []byte{1}, APIKeyHint: "sk-...abcd",
	}); err != nil {
		t.Fatalf("ProjectCreate after migrating: %v", err)
	}

	again, err := pgstore.Open(t.Context(), postgresConfig(url))
	if err != nil {
		t.Fatalf("Open on a migrated database: %v", err)
	}
	again.Close()
}

func TestOpenSkipMigrateLeavesDatabaseAsIs(t *testing.T) {
	t.Parallel()
	cfg := postgresConfig(pgtest.NewDatabase(t))
	cfg.SkipMigrate = true
	s := openStoreWith(t, cfg)
	_, err := s.ProjectList(t.Context(), &service.ProjectListParams{})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.UndefinedTable {
		t.Fatalf("ProjectList on an unmigrated database: err = %v, want undefined_table", err)
	}
}

// The password in these URLs must never show up in an error.
const secretPassword = "Pw-9f3e1c-do-not-leak"

func TestOpenUnreachableServer(t *testing.T) {
	t.Parallel()
	port := closedPort(t)
	url := fmt.Sprintf("postgres://alice:%s@127.0.0.1:%d/llmdb?sslmode=disable", secretPassword, port)
	_, err := pgstore.Open(t.Context(), postgresConfig(url))
	if err == nil {
		t.Fatal("Open on a closed port succeeded")
	}
	assertConnectError(t, err, fmt.Sprintf("127.0.0.1:%d", port), `database "llmdb"`, `user "alice"`)
}

func TestOpenMissingDatabase(t *testing.T) {
	t.Parallel()
	admin, err := pgx.ParseConfig(pgtest.ServerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	// The test server trusts local users, so the password is sent nowhere
	// but must still stay out of the message.
	url := fmt.Sprintf("postgres://%s:%s@%s/llmproxy_no_such_db?sslmode=disable",
		admin.User, secretPassword, net.JoinHostPort(admin.Host, fmt.Sprint(admin.Port)))
	_, err = pgstore.Open(t.Context(), postgresConfig(url))
	if err == nil {
		t.Fatal("Open on a missing database succeeded")
	}
	assertConnectError(t, err, net.JoinHostPort(admin.Host, fmt.Sprint(admin.Port)), `database "llmproxy_no_such_db"`, "does not exist")
}

func TestOpenMalformedURL(t *testing.T) {
	t.Parallel()
	url := "postgres://alice:" + secretPassword + "@127.0.0.1:notaport/llmdb"
	_, err := pgstore.Open(t.Context(), postgresConfig(url))
	if err == nil {
		t.Fatal("Open with a malformed URL succeeded")
	}
	if strings.Contains(err.Error(), secretPassword) {
		t.Fatalf("error reveals the password: %v", err)
	}
}

func assertConnectError(t *testing.T, err error, wantParts ...string) {
	t.Helper()
	msg := err.Error()
	if strings.Contains(msg, secretPassword) {
		t.Fatalf("error reveals the password: %v", msg)
	}
	if !errors.Is(err, service.ErrUnavailable) {
		t.Errorf("error = %v, want it to wrap ErrUnavailable", err)
	}
	for _, part := range wantParts {
		if !strings.Contains(msg, part) {
			t.Errorf("error = %q, want it to name %s", msg, part)
		}
	}
}

// closedPort returns a local port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func TestBackupIsNotImplemented(t *testing.T) {
	t.Parallel()
	s := openStore(t, migratedDatabase(t))
	err := s.Backup(t.Context(), t.TempDir()+"/backup")
	if !errors.Is(err, service.ErrNotImplemented) || !strings.Contains(err.Error(), "pg_dump") {
		t.Errorf("Backup = %v, want ErrNotImplemented naming pg_dump", err)
	}
}

// UsageInsertBatch writes all its events or none. usage_events has no
// constraint a recorded request could break, so a trigger refuses one row
// in the middle of a batch; none of the batch may stay.
func TestUsageInsertBatchWritesAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := migratedDatabase(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `
		CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS
		  $$ BEGIN RAISE EXCEPTION 'poisoned row'; END $$;
		CREATE TRIGGER usage_events_refuse_poison BEFORE INSERT ON usage_events
		  FOR EACH ROW WHEN (NEW.model = 'poison') EXECUTE FUNCTION refuse_poison();`); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, url)
	event := func(model string) *service.UsageEventCreateParams {
		return &service.UsageEventCreateParams{TokenID: 1, ProjectID: 1, Method: "POST", Path: "/v1/x", Model: model, Status: 200, CreatedAt: time.Now()}
	}
	count := func() int64 {
		t.Helper()
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM usage_events").Scan(&n); err != nil {
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
