// Package pgtest gives each test its own PostgreSQL database.
//
// The server is TEST_DATABASE_URL when set, else 127.0.0.1:5432, else a
// throwaway cluster this package starts from the installed PostgreSQL. When
// none can be had the test is skipped, except under CI=true, where it fails:
// CI must run the Postgres tests for real.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/singleflight"
)

var (
	serverOnce sync.Once
	serverURL  string // admin URL (database postgres), "" when none
	serverErr  error

	templates     sync.Map // key -> template database name, once created
	templateGroup singleflight.Group
)

// ServerURL returns the admin URL of a reachable server, or skips/fails the test.
func ServerURL(t testing.TB) string {
	t.Helper()
	serverOnce.Do(func() { serverURL, serverErr = findServer() })
	if serverErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: no PostgreSQL server, and CI=true requires one: %v", serverErr)
		}
		t.Skipf("pgtest: no PostgreSQL server: %v", serverErr)
	}
	return serverURL
}

func findServer() (string, error) {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		if err := ping(u); err != nil {
			return "", fmt.Errorf("TEST_DATABASE_URL: %w", err)
		}
		return u, nil
	}
	local := "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	if ping(local) == nil {
		return local, nil
	}
	c, err := sharedCluster()
	if err != nil {
		return "", fmt.Errorf("127.0.0.1:5432 unreachable and no throwaway cluster: %w", err)
	}
	return c.URL("postgres"), nil
}

func ping(u string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// WithDatabase returns u with its database name replaced.
func WithDatabase(u, name string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		panic(fmt.Sprintf("pgtest: bad server URL: %v", err))
	}
	parsed.Path = "/" + name
	return parsed.String()
}

// NewDatabase creates an empty database for this test and returns its URL.
// It is dropped when the test passes and kept, for debugging, when it fails.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabase(t, "")
}

// NewDatabaseFromTemplate returns a database cloned from a template that
// setup prepares once per process for each key (use a hash of what setup
// applies, e.g. the migration checksums, so a stale template is never used).
func NewDatabaseFromTemplate(t testing.TB, key string, setup func(ctx context.Context, url string) error) string {
	t.Helper()
	admin := ServerURL(t)
	name := "llmproxy_tpl_" + shortHash(key)
	if _, ok := templates.Load(key); !ok {
		_, err, _ := templateGroup.Do(key, func() (any, error) {
			if _, ok := templates.Load(key); ok {
				return nil, nil
			}
			if err := createTemplate(admin, name, setup); err != nil {
				return nil, err
			}
			templates.Store(key, name)
			return nil, nil
		})
		if err != nil {
			t.Fatalf("pgtest: template %s: %v", name, err)
		}
	}
	return newDatabase(t, name)
}

func createTemplate(admin, name string, setup func(ctx context.Context, url string) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// Templates are shared by concurrent test processes: an advisory lock
	// lets one build it while the others wait and reuse it.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1))", name); err != nil {
		return err
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtext($1))", name)
	var ready bool
	err = conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", name).Scan(&ready)
	if err == nil && ready {
		return nil
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return err
	}
	if err := setup(ctx, WithDatabase(admin, name)); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	_, err = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH is_template true ALLOW_CONNECTIONS false")
	return err
}

func newDatabase(t testing.TB, template string) string {
	t.Helper()
	admin := ServerURL(t)
	name := "llmproxy_test_" + randomSuffix()
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		stmt += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if err := adminExec(admin, stmt); err != nil {
		t.Fatalf("pgtest: %s: %v", stmt, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: kept database %s for debugging", name)
			return
		}
		if err := adminExec(admin, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
		}
	})
	return WithDatabase(admin, name)
}

func adminExec(admin, stmt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// CREATE DATABASE ... TEMPLATE fails while another session is copying the
	// same template; retry briefly.
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		if err == nil || attempt == 20 || !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.ObjectInUse {
			return err
		}
		time.Sleep(time.Duration(50*(attempt+1)) * time.Millisecond)
	}
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}
