package migrate_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	atlas "ariga.io/atlas/sql/migrate"

	"github.com/llmproxy/llmproxy/migrate"
)

// addTokenLabel adds a column to tokens in each dialect's schema.sql.
var addTokenLabel = map[migrate.Dialect][2]string{
	migrate.SQLite:   {"  last_used_at  INTEGER,\n", "  last_used_at  INTEGER,\n  label         TEXT    NOT NULL DEFAULT '',\n"},
	migrate.Postgres: {"  last_used_at  timestamptz NULL,\n", "  last_used_at  timestamptz NULL,\n  label         text        NOT NULL DEFAULT '',\n"},
}

func schemaPath(config string, d migrate.Dialect) string {
	return filepath.Join(filepath.Dir(config), "schema", string(d), "schema.sql")
}

func TestDiffUpToDate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	config := newProject(t, migrate.Dialects...)
	if _, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Check: true}); err != nil {
		t.Fatalf("check: %v", err)
	}
	res, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Name: "nothing"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(migrate.Dialects) {
		t.Fatalf("results %+v, want one per dialect", res)
	}
	for _, r := range res {
		if r.File != "" {
			t.Errorf("%s: wrote %s, want no changes", r.Dialect, r.File)
		}
		if n := len(migrationFiles(t, config, r.Dialect)); n != len(embeddedFiles(t, r.Dialect)) {
			t.Errorf("%s: %d files, want the embedded ones only", r.Dialect, n)
		}
	}
}

func TestDiffWritesNewMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	config := newProject(t, migrate.Dialects...)
	for _, d := range migrate.Dialects {
		editFile(t, schemaPath(config, d), addTokenLabel[d][0], addTokenLabel[d][1])
	}
	_, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Check: true})
	if !errors.Is(err, migrate.ErrStale) || !strings.Contains(err.Error(), "run llmproxy migrate diff <name>") {
		t.Fatalf("check: err = %v, want ErrStale", err)
	}

	res, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Name: "add_token_label"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !strings.HasSuffix(r.File, "_add_token_label.sql") || filepath.Base(r.File) != filepath.Base(res[0].File) {
			t.Fatalf("%s: wrote %q, want <version>_add_token_label.sql with one version for every dialect", r.Dialect, r.File)
		}
		if files := migrationFiles(t, config, r.Dialect); files[len(files)-1] != r.File {
			t.Fatalf("%s: %s is not the newest file of %v", r.Dialect, r.File, files)
		}
		if !strings.Contains(readFile(t, r.File), "label") {
			t.Fatalf("%s: %s does not add the column:\n%s", r.Dialect, r.File, readFile(t, r.File))
		}
		dir := localDir(t, filepath.Dir(r.File))
		if err := atlas.Validate(dir); err != nil {
			t.Fatalf("%s: atlas.sum not updated: %v", r.Dialect, err)
		}
	}
	if _, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Check: true}); err != nil {
		t.Fatalf("check after diff: %v", err)
	}

	// The new file applies on top of the released ones.
	db := openSQLite(t)
	applied, err := migrate.ApplyDir(ctx, db, migrate.SQLite, localDir(t, filepath.Dir(res[0].File)))
	if err != nil || len(applied) != len(embeddedFiles(t, migrate.SQLite))+1 {
		t.Fatalf("applied %v, err %v", applied, err)
	}
}

func TestDiffOneDialect(t *testing.T) {
	t.Parallel()
	config := newProject(t, migrate.SQLite)
	editFile(t, schemaPath(config, migrate.SQLite), addTokenLabel[migrate.SQLite][0], addTokenLabel[migrate.SQLite][1])
	res, err := migrate.Diff(context.Background(), migrate.DiffOptions{Config: config, Name: "label", Dialects: []migrate.Dialect{migrate.SQLite}})
	if err != nil || len(res) != 1 || res[0].Dialect != migrate.SQLite || res[0].File == "" {
		t.Fatalf("results %+v, err %v; want one new sqlite file", res, err)
	}
	if _, err := migrate.Diff(context.Background(), migrate.DiffOptions{Config: config, Name: "x", Dialects: []migrate.Dialect{migrate.Postgres}}); err == nil {
		t.Fatal("diff for a dialect without env succeeded")
	}
}

func TestDiffRefuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("BadName", func(t *testing.T) {
		t.Parallel()
		config := newProject(t, migrate.SQLite)
		if _, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Name: "Add Label"}); err == nil || !strings.Contains(err.Error(), "Add Label") {
			t.Fatalf("err = %v, want the name refused", err)
		}
	})

	t.Run("StaleAtlasSum", func(t *testing.T) {
		t.Parallel()
		config := newProject(t, migrate.SQLite)
		files := migrationFiles(t, config, migrate.SQLite)
		writeFile(t, files[0], readFile(t, files[0])+"\n-- edited\n")
		_, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Check: true})
		if !errors.Is(err, atlas.ErrChecksumMismatch) || !strings.Contains(err.Error(), filepath.Base(files[0])) {
			t.Fatalf("err = %v, want a checksum mismatch naming %s", err, filepath.Base(files[0]))
		}
	})

	t.Run("BrokenSchema", func(t *testing.T) {
		t.Parallel()
		config := newProject(t, migrate.SQLite)
		writeFile(t, schemaPath(config, migrate.SQLite), "CREATE TABLE ok (id INTEGER PRIMARY KEY);\n\nCREATE TABLE broken (id NO_SUCH_TYPE) STRICT;\n")
		_, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Name: "broken"})
		if err == nil || !strings.Contains(err.Error(), "schema.sql:3") {
			t.Fatalf("err = %v, want the failing line of schema.sql", err)
		}
	})
}

func TestLint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("ReleasedMigrationsPass", func(t *testing.T) {
		t.Parallel()
		diags, err := migrate.Lint(ctx, migrate.LintOptions{Config: newProject(t, migrate.Dialects...)})
		if err != nil {
			t.Fatalf("err = %v, diagnostics %v", err, diags)
		}
	})

	for _, d := range migrate.Dialects {
		t.Run("ReportsDroppedColumn/"+string(d), func(t *testing.T) {
			t.Parallel()
			config := newProject(t, d)
			drop := map[migrate.Dialect]string{
				migrate.SQLite:   "  model             TEXT    NOT NULL DEFAULT '',\n",
				migrate.Postgres: "  model             text        NOT NULL DEFAULT '',\n",
			}[d]
			editFile(t, schemaPath(config, d), drop, "")
			res, err := migrate.Diff(ctx, migrate.DiffOptions{Config: config, Name: "drop_usage_model"})
			if err != nil {
				t.Fatal(err)
			}
			diags, err := migrate.Lint(ctx, migrate.LintOptions{Config: config, Latest: 1})
			if !errors.Is(err, migrate.ErrLint) {
				t.Fatalf("err = %v, want ErrLint", err)
			}
			i := slices.IndexFunc(diags, func(g migrate.Diagnostic) bool {
				return g.Error && g.File == res[0].File && g.Line > 0 && g.Code == "DS103" && strings.Contains(g.Text, "model")
			})
			if i < 0 {
				t.Fatalf("diagnostics %v, want an error DS103 for dropping model in %s", diags, res[0].File)
			}

			// A deliberate drop is accepted with atlas's nolint directive.
			lines := strings.SplitAfter(readFile(t, res[0].File), "\n")
			lines = slices.Insert(lines, diags[i].Line-1, "-- atlas:nolint destructive\n")
			writeFile(t, res[0].File, strings.Join(lines, ""))
			dir := localDir(t, filepath.Dir(res[0].File))
			sum, err := dir.Checksum()
			if err != nil {
				t.Fatal(err)
			}
			if err := atlas.WriteSumFile(dir, sum); err != nil {
				t.Fatal(err)
			}
			if diags, err := migrate.Lint(ctx, migrate.LintOptions{Config: config, Latest: 1}); err != nil {
				t.Fatalf("after nolint: err = %v, diagnostics %v", err, diags)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"postgres://dev.example:5432/dev", "postgres://dev.example:5432/dev"},
		{"", "postgres://postgres@127.0.0.1:5432/postgres?search_path=public&sslmode=disable"},
	} {
		t.Setenv("ATLAS_DEV_URL", tc.env)
		envs, err := migrate.LoadConfig("../atlas.hcl")
		if err != nil {
			t.Fatal(err)
		}
		want := []migrate.Env{
			{Dialect: migrate.SQLite, Src: "../schema/sqlite/schema.sql", Dir: "../schema/sqlite/migrations", DevURL: "sqlite://dev?mode=memory"},
			{Dialect: migrate.Postgres, Src: "../schema/postgres/schema.sql", Dir: "../schema/postgres/migrations", DevURL: tc.want},
		}
		if !slices.Equal(envs, want) {
			t.Fatalf("ATLAS_DEV_URL=%q: envs %+v, want %+v", tc.env, envs, want)
		}
	}
}
