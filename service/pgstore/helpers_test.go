package pgstore_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/migrate"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/pgstore"
)

// migratedDatabase returns a fresh database cloned from a template built by
// the embedded migrations; the template is keyed by their fingerprint, so
// a changed migration builds a new one.
func migratedDatabase(t testing.TB) string {
	t.Helper()
	key, err := migrate.Fingerprint(migrate.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	return pgtest.NewDatabaseFromTemplate(t, "pgstore-"+key, func(ctx context.Context, url string) error {
		connCfg, err := pgx.ParseConfig(url)
		if err != nil {
			return err
		}
		db := stdlib.OpenDB(*connCfg)
		defer db.Close()
		_, err = migrate.Apply(ctx, db, migrate.Postgres)
		return err
	})
}

// postgresConfig is the default configuration pointed at url.
func postgresConfig(url string) service.Config {
	cfg := service.DefaultConfig()
	cfg.Driver = service.DriverPostgres
	cfg.DatabaseURL = url
	return cfg
}

// openStore opens a store on url with the default configuration, closed
// when the test ends.
func openStore(t testing.TB, url string) *pgstore.Store {
	t.Helper()
	return openStoreWith(t, postgresConfig(url))
}

func openStoreWith(t testing.TB, cfg service.Config) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
