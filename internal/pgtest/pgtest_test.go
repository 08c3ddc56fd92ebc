package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestNewDatabaseIsIsolated(t *testing.T) {
	t.Parallel()
	a, b := NewDatabase(t), NewDatabase(t)
	if a == b {
		t.Fatalf("two tests got the same database %s", a)
	}
	mustExec(t, a, "CREATE TABLE only_in_a (id int)")
	mustExec(t, b, "CREATE TABLE only_in_a (id int)") // would fail if b were a
}

func TestNewDatabaseFromTemplate(t *testing.T) {
	t.Parallel()
	setup := func(ctx context.Context, url string) error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "CREATE TABLE seeded (id int); INSERT INTO seeded VALUES (7)")
		return err
	}
	for range 2 {
		url := NewDatabaseFromTemplate(t, "pgtest-selftest-v1", setup)
		var id int
		queryRow(t, url, "SELECT id FROM seeded", &id)
		if id != 7 {
			t.Fatalf("template row = %d, want 7", id)
		}
		mustExec(t, url, "INSERT INTO seeded VALUES (8)") // clones are writable and separate
	}
}

func TestThrowawayClusterStopsAndStarts(t *testing.T) {
	t.Parallel()
	c := NewCluster(t)
	if err := ping(c.URL("postgres")); err != nil {
		t.Fatalf("fresh cluster: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := ping(c.URL("postgres")); err == nil {
		t.Fatal("stopped cluster still answers")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := ping(c.URL("postgres")); err != nil {
		t.Fatalf("restarted cluster: %v", err)
	}
}

func mustExec(t *testing.T, url, sql string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryRow(t *testing.T, url, sql string, dest ...any) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
