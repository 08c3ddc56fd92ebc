package migrate_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	atlas "ariga.io/atlas/sql/migrate"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/migrate"
)

// futureFile is a migration a newer llmproxy could have; valid on both engines.
var futureFile = atlas.NewLocalFile("99990101000000_future.sql", []byte("CREATE TABLE future_things (id integer PRIMARY KEY);\n"))

func TestApply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, e := range engines {
		t.Run(string(e.dialect), func(t *testing.T) {
			t.Parallel()
			files := embeddedFiles(t, e.dialect)

			t.Run("AppliesAllThenNothing", func(t *testing.T) {
				t.Parallel()
				db := e.open(t)
				applied, err := migrate.Apply(ctx, db, e.dialect)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(applied, names(files)) {
					t.Fatalf("applied %v, want %v", applied, names(files))
				}
				again, err := migrate.Apply(ctx, db, e.dialect)
				if err != nil || len(again) != 0 {
					t.Fatalf("second Apply: applied %v, err %v; want nothing", again, err)
				}
				st, err := migrate.Status(ctx, db, e.dialect)
				if err != nil {
					t.Fatal(err)
				}
				last := files[len(files)-1].Version()
				if st.Current != last || len(st.Pending) != 0 || len(st.Applied) != len(files) {
					t.Fatalf("status %+v, want current %s, %d applied, none pending", st, last, len(files))
				}
			})

			t.Run("StatusOfEmptyDatabase", func(t *testing.T) {
				t.Parallel()
				st, err := migrate.Status(ctx, e.open(t), e.dialect)
				if err != nil {
					t.Fatal(err)
				}
				if st.Current != "" || len(st.Applied) != 0 || !slices.Equal(st.Pending, names(files)) {
					t.Fatalf("status %+v, want nothing applied and every file pending", st)
				}
			})

			t.Run("RefusesEditedFile", func(t *testing.T) {
				t.Parallel()
				db := e.open(t)
				if _, err := migrate.ApplyDir(ctx, db, e.dialect, memDir(t, files...)); err != nil {
					t.Fatal(err)
				}
				edited := slices.Clone(files)
				// Clipped: the parallel subtests share files[0]'s bytes, and an
				// append into their spare capacity would write them all.
				edited[0] = atlas.NewLocalFile(files[0].Name(), append(slices.Clip(files[0].Bytes()), "\n-- edited after release\n"...))
				_, err := migrate.ApplyDir(ctx, db, e.dialect, memDir(t, edited...))
				var mismatch *migrate.ChecksumMismatchError
				if !errors.As(err, &mismatch) || mismatch.File != files[0].Name() {
					t.Fatalf("err = %v, want a ChecksumMismatchError naming %s", err, files[0].Name())
				}
				if !strings.Contains(err.Error(), files[0].Name()) {
					t.Fatalf("message %q does not name the file", err)
				}
				if _, err := migrate.StatusDir(ctx, db, e.dialect, memDir(t, edited...)); !errors.As(err, &mismatch) {
					t.Fatalf("Status err = %v, want a ChecksumMismatchError", err)
				}
			})

			t.Run("RefusesStaleAtlasSum", func(t *testing.T) {
				t.Parallel()
				dir := memDir(t, files...)
				if err := dir.WriteFile(files[0].Name(), append(slices.Clip(files[0].Bytes()), "\n-- edited\n"...)); err != nil {
					t.Fatal(err)
				}
				_, err := migrate.ApplyDir(ctx, e.open(t), e.dialect, dir)
				if !errors.Is(err, atlas.ErrChecksumMismatch) || !strings.Contains(err.Error(), files[0].Name()) {
					t.Fatalf("err = %v, want a checksum mismatch naming %s", err, files[0].Name())
				}
			})

			t.Run("RefusesNewerDatabase", func(t *testing.T) {
				t.Parallel()
				db := e.open(t)
				if _, err := migrate.ApplyDir(ctx, db, e.dialect, memDir(t, append(slices.Clone(files), futureFile)...)); err != nil {
					t.Fatal(err)
				}
				_, err := migrate.Apply(ctx, db, e.dialect)
				var newer *migrate.NewerSchemaError
				if !errors.As(err, &newer) {
					t.Fatalf("err = %v, want a NewerSchemaError", err)
				}
				want := "database schema version 99990101000000 is newer than this llmproxy knows (latest " +
					files[len(files)-1].Version() + "); upgrade llmproxy"
				if err.Error() != want {
					t.Fatalf("message %q, want %q", err, want)
				}
				if _, err := migrate.Status(ctx, db, e.dialect); !errors.As(err, &newer) {
					t.Fatalf("Status err = %v, want a NewerSchemaError", err)
				}
			})

			t.Run("RefusesDatabaseWithoutHistory", func(t *testing.T) {
				t.Parallel()
				db := e.open(t)
				if _, err := db.ExecContext(ctx, "CREATE TABLE someone_elses (id integer PRIMARY KEY)"); err != nil {
					t.Fatal(err)
				}
				_, err := migrate.Apply(ctx, db, e.dialect)
				if err == nil || !strings.Contains(err.Error(), "no llmproxy migration history") {
					t.Fatalf("err = %v, want a refusal of the non-empty database", err)
				}
			})

			t.Run("RecordsFailedFileAndRetriesIt", func(t *testing.T) {
				t.Parallel()
				db := e.open(t)
				broken := atlas.NewLocalFile("99990101000000_broken.sql", []byte(
					"CREATE TABLE broken_a (id integer PRIMARY KEY);\nSELECT * FROM no_such_table;\n"))
				_, err := migrate.ApplyDir(ctx, db, e.dialect, memDir(t, append(slices.Clone(files), broken)...))
				if err == nil || !strings.Contains(err.Error(), broken.Name()) {
					t.Fatalf("err = %v, want a failure naming %s", err, broken.Name())
				}
				if tableExists(t, db, e.dialect, "broken_a") {
					t.Fatal("broken_a exists: the failed file was not rolled back")
				}
				st, err := migrate.StatusDir(ctx, db, e.dialect, memDir(t, append(slices.Clone(files), broken)...))
				if err != nil {
					t.Fatal(err)
				}
				if st.Current != files[len(files)-1].Version() || !slices.Equal(st.Pending, []string{broken.Name()}) {
					t.Fatalf("status %+v, want the broken file pending after the embedded ones", st)
				}
				if last := st.Applied[len(st.Applied)-1]; last.Version != broken.Version() || last.Error == "" {
					t.Fatalf("last revision %+v, want the failure of %s recorded", last, broken.Name())
				}

				fixed := atlas.NewLocalFile(broken.Name(), []byte(
					"CREATE TABLE broken_a (id integer PRIMARY KEY);\nCREATE TABLE broken_b (id integer PRIMARY KEY);\n"))
				applied, err := migrate.ApplyDir(ctx, db, e.dialect, memDir(t, append(slices.Clone(files), fixed)...))
				if err != nil || !slices.Equal(applied, []string{fixed.Name()}) {
					t.Fatalf("retry: applied %v, err %v; want %s", applied, err, fixed.Name())
				}
				st, err = migrate.StatusDir(ctx, db, e.dialect, memDir(t, append(slices.Clone(files), fixed)...))
				if err != nil {
					t.Fatal(err)
				}
				if last := st.Applied[len(st.Applied)-1]; st.Current != fixed.Version() || last.Error != "" {
					t.Fatalf("status %+v, want %s applied without error", st, fixed.Name())
				}
			})

			t.Run("KeepsDataAcrossUpgrades", func(t *testing.T) {
				t.Parallel()
				for i := range files {
					db := e.open(t)
					if _, err := migrate.ApplyDir(ctx, db, e.dialect, memDir(t, files[:i+1]...)); err != nil {
						t.Fatal(err)
					}
					var seeded []seedRow
					for _, row := range seedRows[e.dialect] {
						if tableExists(t, db, e.dialect, row.table) {
							if _, err := db.ExecContext(ctx, row.insert); err != nil {
								t.Fatalf("at %s: %s: %v", files[i].Name(), row.insert, err)
							}
							seeded = append(seeded, row)
						}
					}
					if _, err := migrate.ApplyDir(ctx, db, e.dialect, memDir(t, files...)); err != nil {
						t.Fatal(err)
					}
					for _, row := range seeded {
						if n := count(t, db, "SELECT count(*) FROM "+row.table+" WHERE "+row.key); n != 1 {
							t.Fatalf("seeded at %s: %s row %s is gone after upgrading", files[i].Name(), row.table, row.key)
						}
					}
				}
			})
		})
	}
}

// seedRow is a representative row, inserted when its table exists and
// found again by key, a condition on its primary key.
type seedRow struct {
	table  string
	key    string
	insert string
}

// seedRows are in dependency order. When a migration adds a required
// column, extend these so every version can be seeded.
var seedRows = map[migrate.Dialect][]seedRow{
	migrate.SQLite: {
		{"projects", "id = 1001", `INSERT INTO projects (id, name, api_key_ciphertext, api_key_hint) VALUES (1001, 'upgrade', x'00', 'sk-...1234')`},
		{"tokens", "id = 2001", `INSERT INTO tokens (id, project_id, secret_hash, token_prefix, expires_at) VALUES (2001, 1001, x'01', 'tok_', 4102444800000)`},
		{"usage_events", "id = 3001", `INSERT INTO usage_events (id, token_id, project_id, method, path, status, created_at) VALUES (3001, 2001, 1001, 'POST', '/v1/chat/completions', 200, 1700000000000)`},
		{"usage_daily", "day = 1699920000000 AND model = 'm'", `INSERT INTO usage_daily (day, project_id, token_id, model, requests, errors, prompt_tokens, completion_tokens, total_tokens) VALUES (1699920000000, 1001, 2001, 'm', 2, 1, 3, 4, 7)`},
		{"audit_events", "id = 4001", `INSERT INTO audit_events (id, actor, action, project_id, result) VALUES (4001, 'admin', 'project.create', 1001, 'ok')`},
		{"sessions", "secret_hash = x'05'", `INSERT INTO sessions (secret_hash, csrf_token, expires_at) VALUES (x'05', 'csrf', 4102444800000)`},
	},
	migrate.Postgres: {
		{"projects", "id = 1001", `INSERT INTO projects (id, name, api_key_ciphertext, api_key_hint) VALUES (1001, 'upgrade', '\x00', 'sk-...1234')`},
		{"tokens", "id = 2001", `INSERT INTO tokens (id, project_id, secret_hash, token_prefix, expires_at) VALUES (2001, 1001, '\x01', 'tok_', '2100-01-01T00:00:00Z')`},
		{"usage_events", "id = 3001", `INSERT INTO usage_events (id, token_id, project_id, method, path, status, created_at) VALUES (3001, 2001, 1001, 'POST', '/v1/chat/completions', 200, '2023-11-14T22:13:20Z')`},
		{"usage_daily", "day = '2023-11-14' AND model = 'm'", `INSERT INTO usage_daily (day, project_id, token_id, model, requests, errors, prompt_tokens, completion_tokens, total_tokens) VALUES ('2023-11-14', 1001, 2001, 'm', 2, 1, 3, 4, 7)`},
		{"audit_events", "id = 4001", `INSERT INTO audit_events (id, actor, action, project_id, result) VALUES (4001, 'admin', 'project.create', 1001, 'ok')`},
		{"sessions", `secret_hash = '\x05'`, `INSERT INTO sessions (secret_hash, csrf_token, expires_at) VALUES ('\x05', 'csrf', '2100-01-01T00:00:00Z')`},
	},
}

func TestApplyConcurrentPostgresAppliesOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	files := embeddedFiles(t, migrate.Postgres)
	var (
		wg      sync.WaitGroup
		applied [2][]string
		errs    [2]error
	)
	for i := range 2 {
		db := openPostgresURL(t, url)
		wg.Go(func() { applied[i], errs[i] = migrate.Apply(ctx, db, migrate.Postgres) })
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		t.Fatal(err)
	}
	if all := slices.Sorted(slices.Values(append(slices.Clone(applied[0]), applied[1]...))); !slices.Equal(all, names(files)) {
		t.Fatalf("applied %v and %v, want each of %v once", applied[0], applied[1], names(files))
	}
	if n := count(t, openPostgresURL(t, url), "SELECT count(*) FROM schema_revisions"); n != len(files) {
		t.Fatalf("%d revisions, want %d", n, len(files))
	}
}

func TestApplySQLiteNeedsOneConnection(t *testing.T) {
	t.Parallel()
	db := openSQLite(t)
	db.SetMaxOpenConns(4)
	if _, err := migrate.Apply(context.Background(), db, migrate.SQLite); err == nil || !strings.Contains(err.Error(), "SetMaxOpenConns(1)") {
		t.Fatalf("err = %v, want a refusal asking for one connection", err)
	}
}

// TestSQLiteTableCopyKeepsCascadingChildren plans a change SQLite can only
// make by copying the parent table, and checks that applying it does not
// cascade-delete the children, while running the same file in a plain
// transaction does.
func TestSQLiteTableCopyKeepsCascadingChildren(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	config := newProject(t, migrate.SQLite)
	schemaFile := filepath.Join(filepath.Dir(config), "schema", "sqlite", "schema.sql")
	migrations := filepath.Join(filepath.Dir(config), "schema", "sqlite", "migrations")
	// Start from an empty history with this test's own schema.
	for _, f := range migrationFiles(t, config, migrate.SQLite) {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(migrations, "atlas.sum"), "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
	writeFile(t, schemaFile, `
CREATE TABLE parents (id INTEGER PRIMARY KEY, name TEXT NOT NULL) STRICT;
CREATE TABLE children (
  id        INTEGER PRIMARY KEY,
  parent_id INTEGER NOT NULL REFERENCES parents (id) ON DELETE CASCADE
) STRICT;
`)
	if _, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Name: "parents_children"}); err != nil {
		t.Fatal(err)
	}
	seed := func(db *sql.DB) {
		t.Helper()
		for _, stmt := range []string{
			`INSERT INTO parents (id, name) VALUES (1, 'a')`,
			`INSERT INTO children (id, parent_id) VALUES (1, 1), (2, 1)`,
		} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
	}
	ours, plain := openSQLite(t), openSQLite(t)
	for _, db := range []*sql.DB{ours, plain} {
		if _, err := migrate.ApplyDir(ctx, db, migrate.SQLite, localDir(t, migrations)); err != nil {
			t.Fatal(err)
		}
		seed(db)
	}

	editFile(t, schemaFile, "name TEXT NOT NULL)", "name TEXT NOT NULL CHECK (name <> ''))")
	res, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Name: "parents_name_check"})
	if err != nil {
		t.Fatal(err)
	}
	v2 := readFile(t, res[0].File)
	if !strings.Contains(v2, "DROP TABLE `parents`") {
		t.Fatalf("atlas did not plan a table copy, so this test proves nothing:\n%s", v2)
	}

	if _, err := migrate.ApplyDir(ctx, ours, migrate.SQLite, localDir(t, migrations)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, ours, "SELECT count(*) FROM children"); n != 2 {
		t.Fatalf("%d children after Apply, want 2", n)
	}

	tx, err := plain.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	stmts, err := atlas.NewLocalFile("v2.sql", []byte(v2)).Stmts()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, plain, "SELECT count(*) FROM children"); n != 0 {
		t.Fatalf("%d children after a plain transaction, want 0 (the hazard this test guards against)", n)
	}
}

func localDir(t *testing.T, path string) *atlas.LocalDir {
	t.Helper()
	dir, err := atlas.NewLocalDir(path)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
