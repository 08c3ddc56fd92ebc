package migrate_test

import (
	"context"
	"database/sql"
	"io/fs"
	"strings"
	"testing"

	atlas "ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/postgres"
	atlasschema "ariga.io/atlas/sql/schema"
	"ariga.io/atlas/sql/sqlite"

	"github.com/llmproxy/llmproxy/migrate"
	llmschema "github.com/llmproxy/llmproxy/schema"
)

// TestDrift applies the embedded migrations to an empty database and
// requires the result to equal the embedded schema.sql loaded into another:
// sqlc generates code from schema.sql, the binary runs the migrations.
func TestDrift(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, e := range engines {
		t.Run(string(e.dialect), func(t *testing.T) {
			t.Parallel()
			migrated, loaded := e.open(t), e.open(t)
			if _, err := migrate.Apply(ctx, migrated, e.dialect); err != nil {
				t.Fatal(err)
			}
			src, err := fs.ReadFile(llmschema.FS, string(e.dialect)+"/schema.sql")
			if err != nil {
				t.Fatal(err)
			}
			loadedDrv := atlasDriver(t, e.dialect, loaded)
			stmts, err := atlas.FileStmts(loadedDrv, atlas.NewLocalFile("schema.sql", src))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range stmts {
				if _, err := loaded.ExecContext(ctx, s); err != nil {
					t.Fatalf("schema.sql: %s: %v", s, err)
				}
			}

			migratedDrv := atlasDriver(t, e.dialect, migrated)
			have, err := migratedDrv.InspectRealm(ctx, &atlasschema.InspectRealmOption{Exclude: []string{"*.schema_revisions"}})
			if err != nil {
				t.Fatal(err)
			}
			want, err := loadedDrv.InspectRealm(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			changes, err := migratedDrv.RealmDiff(have, want)
			if err != nil {
				t.Fatal(err)
			}
			if len(changes) > 0 {
				plan, err := migratedDrv.PlanChanges(ctx, "drift", changes)
				if err != nil {
					t.Fatalf("migrations differ from schema.sql by %d changes (%v)", len(changes), err)
				}
				var sql []string
				for _, c := range plan.Changes {
					sql = append(sql, c.Cmd)
				}
				t.Fatalf("migrations differ from schema.sql; run llmproxy migrate diff <name>. Missing:\n%s", strings.Join(sql, ";\n"))
			}
		})
	}
}

func atlasDriver(t *testing.T, d migrate.Dialect, db *sql.DB) atlas.Driver {
	t.Helper()
	open := sqlite.Open
	if d == migrate.Postgres {
		open = postgres.Open
	}
	drv, err := open(db)
	if err != nil {
		t.Fatal(err)
	}
	return drv
}
