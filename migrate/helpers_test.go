package migrate_test

import (
	"context"
	"database/sql"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	atlas "ariga.io/atlas/sql/migrate"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/migrate"
)

// engines are the dialects with a way to get an empty database of each.
var engines = []struct {
	dialect migrate.Dialect
	open    func(t *testing.T) *sql.DB
}{
	{migrate.SQLite, openSQLite},
	{migrate.Postgres, openPostgres},
}

// openSQLite opens a fresh file the way the store's writer does.
func openSQLite(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func openPostgres(t *testing.T) *sql.DB {
	t.Helper()
	return openPostgresURL(t, pgtest.NewDatabase(t))
}

func openPostgresURL(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func embeddedFiles(t *testing.T, d migrate.Dialect) []atlas.File {
	t.Helper()
	dir, err := migrate.EmbeddedDir(d)
	if err != nil {
		t.Fatal(err)
	}
	files, err := dir.Files()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no embedded %s migrations", d)
	}
	return files
}

// memDir holds files with a matching atlas.sum.
func memDir(t *testing.T, files ...atlas.File) *atlas.MemDir {
	t.Helper()
	dir := &atlas.MemDir{}
	if err := dir.CopyFiles(files); err != nil {
		t.Fatal(err)
	}
	return dir
}

func names(files []atlas.File) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Name()
	}
	return out
}

// newProject copies the repository's schema files and migrations of the
// given dialects into a temp dir with an atlas.hcl of its own, so tests
// never touch the repository's files. It returns the atlas.hcl path.
func newProject(t *testing.T, dialects ...migrate.Dialect) string {
	t.Helper()
	root := t.TempDir()
	var hcl strings.Builder
	for _, d := range dialects {
		for _, sub := range []string{"schema.sql", "migrations"} {
			copyTree(t, filepath.Join("..", "schema", string(d), sub), filepath.Join(root, "schema", string(d), sub))
		}
		dev := "sqlite://dev?mode=memory"
		if d == migrate.Postgres {
			dev = pgtest.ServerURL(t)
		}
		hcl.WriteString(`env "` + string(d) + `" {
  src = "file://schema/` + string(d) + `/schema.sql"
  dev = "` + dev + `"
  migration {
    dir = "file://schema/` + string(d) + `/migrations"
  }
}
`)
	}
	config := filepath.Join(root, "atlas.hcl")
	writeFile(t, config, hcl.String())
	return config
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(to, rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// editFile replaces old, which must occur, in the file at path.
func editFile(t *testing.T, path, old, new string) {
	t.Helper()
	s := readFile(t, path)
	if !strings.Contains(s, old) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	writeFile(t, path, strings.Replace(s, old, new, 1))
}

// migrationFiles lists the .sql files of a project's migration directory.
func migrationFiles(t *testing.T, config string, d migrate.Dialect) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(config), "schema", string(d), "migrations", "*.sql"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(matches)
	return matches
}

func tableExists(t *testing.T, db *sql.DB, d migrate.Dialect, table string) bool {
	t.Helper()
	query := `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1`
	if d == migrate.Postgres {
		query = `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1`
	}
	var n int
	if err := db.QueryRowContext(context.Background(), query, table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func count(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}
