package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/service"
)

// dbCmd runs `llmproxy db args...` with env as the environment.
func dbCmd(t *testing.T, env map[string]string, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = runDB(t.Context(), args, func(name string) string { return env[name] }, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

// seedDatabase creates the database of cfg and puts rows in every table:
// NULLs, non-ASCII text and enough usage events for several batches.
func seedDatabase(t *testing.T, cfg service.Config) {
	t.Helper()
	ctx := t.Context()
	s, err := service.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.Driver, err)
	}
	defer s.Close()
	p, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "prøject ✓", APIKeyCiphertext: []byte{0, 1, 2}, APIKeyHint: "sk-…1234"})
	if err != nil {
		t.Fatal(err)
	}
	limit := int64(5)
	var tokens []*service.Token
	for i, maxRequests := range []*int64{nil, &limit} {
		tok, err := s.TokenCreate(ctx, &service.TokenCreateParams{
			ProjectID: p.ID, SecretHash: []byte{byte(i)}, TokenPrefix: fmt.Sprintf("sk-%d", i),
			ExpiresAt: time.Now().Add(time.Hour), MaxRequests: maxRequests,
		})
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tok)
	}
	events := make([]*service.UsageEventCreateParams, 25)
	for i := range events {
		events[i] = &service.UsageEventCreateParams{
			TokenID: tokens[i%2].ID, ProjectID: p.ID, Method: "POST", Path: "/v1/chat/completions",
			Model: "modèle", Status: 200, TotalTokens: int64(i), CreatedAt: time.Now(),
		}
		if i%2 == 0 { // the others are rows from before event ids
			events[i].EventID = binary.BigEndian.AppendUint64(make([]byte, 8), uint64(i))
		}
	}
	if _, err := s.UsageInsertBatch(ctx, events); err != nil {
		t.Fatal(err)
	}
	// Events of two ended days, rolled up into 4 usage_daily rows.
	var old []*service.UsageEventCreateParams
	for _, age := range []time.Duration{72 * time.Hour, 96 * time.Hour} {
		for _, tok := range tokens {
			old = append(old, &service.UsageEventCreateParams{
				TokenID: tok.ID, ProjectID: p.ID, Method: "POST", Path: "/v1/chat/completions",
				Model: "modèle", Status: 500, TotalTokens: 9, CreatedAt: time.Now().Add(-age),
			})
		}
	}
	if _, err := s.UsageInsertBatch(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UsagePrune(ctx, &service.UsagePruneParams{Before: time.Now().Add(-48 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuditInsert(ctx, &service.AuditInsertParams{
		Actor: "cli", Action: "project.create", ProjectID: &p.ID, Result: "ok", Details: json.RawMessage(`{"z": "ü", "a": 1}`),
	}); err != nil {
		t.Fatal(err)
	}
}

func sqliteConfig(path string) service.Config {
	cfg := service.DefaultConfig()
	cfg.SQLitePath = path
	return cfg
}

func postgresConfig(url string) service.Config {
	cfg := service.DefaultConfig()
	cfg.Driver, cfg.DatabaseURL = service.DriverPostgres, url
	return cfg
}

// checksumLines returns the per-table lines of a report, without the header.
func checksumLines(report string) []string {
	var lines []string
	for _, l := range strings.Split(report, "\n") {
		if strings.HasPrefix(l, "projects") || strings.HasPrefix(l, "tokens") || strings.HasPrefix(l, "usage_") || strings.HasPrefix(l, "audit_events") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	return lines
}

func TestDBCopyBothDirections(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sqlitePath := filepath.Join(dir, "source.db")
	seedDatabase(t, sqliteConfig(sqlitePath))
	pgURL := pgtest.NewDatabase(t) // empty: copy migrates it

	toPostgres, progress, err := dbCmd(t, nil, "", "copy", "--from", sqlitePath, "--to", pgURL, "--batch", "7")
	if err != nil {
		t.Fatalf("copy SQLite to Postgres: %v\n%s", err, progress)
	}
	want := []string{"projects 1 2", "tokens 2 3", "usage_events 25 26", "usage_daily 4 -", "audit_events 1 2"}
	lines := checksumLines(toPostgres)
	if len(lines) != len(want) || !strings.Contains(toPostgres, "verified") {
		t.Fatalf("copy output:\n%s", toPostgres)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]+" ") {
			t.Errorf("copy output line %q, want it to start with %q (table, rows, next id)", lines[i], want[i])
		}
	}
	for _, l := range []string{"copy         usage_events 7 of 25 rows", "copy         usage_events 25 rows, done", "check target audit_events 1 rows, done", "check source tokens       2 rows, done"} {
		if !strings.Contains(progress, l+"\n") {
			t.Errorf("progress lacks %q:\n%s", l, progress)
		}
	}

	// Into a database that has rows: refused, then emptied and copied with --force.
	if _, _, err := dbCmd(t, nil, "", "copy", "--from", sqlitePath, "--to", pgURL); !errors.Is(err, service.ErrTargetNotEmpty) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("copy into a non-empty database: %v, want ErrTargetNotEmpty and a hint at --force", err)
	}
	forced, _, err := dbCmd(t, nil, "", "copy", "--force", "--from", sqlitePath, "--to", pgURL)
	if err != nil {
		t.Fatalf("copy --force: %v", err)
	}
	if forced != toPostgres {
		t.Errorf("copy --force reported\n%s\nthe first copy\n%s", forced, toPostgres)
	}

	// And back: Postgres to a new SQLite file gives the same rows.
	back := filepath.Join(dir, "sub", "back.db")
	toSQLite, _, err := dbCmd(t, nil, "", "copy", "--from", pgURL, "--to", back)
	if err != nil {
		t.Fatalf("copy Postgres to SQLite: %v", err)
	}
	if strings.Join(checksumLines(toSQLite), "\n") != strings.Join(lines, "\n") {
		t.Errorf("Postgres to SQLite reported\n%s\nSQLite to Postgres\n%s", toSQLite, toPostgres)
	}
}

func TestDBBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	source := filepath.Join(dir, "source.db")
	seedDatabase(t, sqliteConfig(source))
	notOurs := filepath.Join(dir, "other.db")
	if err := os.WriteFile(notOurs, nil, 0o600); err != nil { // an empty file is an empty SQLite database
		t.Fatal(err)
	}
	existing := filepath.Join(dir, "existing.jsonl")
	if err := os.WriteFile(existing, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DATABASE_PATH": source}
	target := filepath.Join(dir, "target.db")

	for _, tc := range []struct {
		args  []string
		usage bool   // errUsage: the usage text is printed and the exit code is 2
		want  string // in the message
	}{
		{nil, true, "missing command"},
		{[]string{"bogus"}, true, `unknown command "bogus"`},
		{[]string{"copy"}, true, "needs --from and --to"},
		{[]string{"copy", "--from", source}, true, "needs --from and --to"},
		{[]string{"copy", "--from", source, "--to", target, "--batch", "0"}, true, "--batch 0"},
		{[]string{"copy", "--from", source, "--to", target, "extra"}, true, "takes no arguments"},
		{[]string{"copy", "--nope"}, true, "flag provided but not defined: -nope"},
		{[]string{"copy", "--from", source, "--to", source}, true, "same database"},
		{[]string{"copy", "--from", filepath.Join(dir, "missing.db"), "--to", target}, false, "no such file"},
		{[]string{"copy", "--from", notOurs, "--to", target}, false, "not an llmproxy database"},
		{[]string{"copy", "--from", "postgres://x@[::1", "--to", target}, false, "source (--from)"},
		{[]string{"backup"}, true, "takes one file name, got 0"},
		{[]string{"backup", "a", "b"}, true, "takes one file name, got 2"},
		{[]string{"export", "x"}, true, "takes no arguments"},
		{[]string{"export", "--force"}, true, "flag provided but not defined: -force"},
		{[]string{"export", "--out", existing}, false, "file exists"},
		{[]string{"import"}, true, "takes one file name, got 0"},
		{[]string{"import", filepath.Join(dir, "missing.jsonl")}, false, "no such file"},
		{[]string{"import", "-", "--batch", "-1"}, true, "--batch -1"},
	} {
		_, _, err := dbCmd(t, env, "", tc.args...)
		if err == nil || errors.Is(err, errUsage) != tc.usage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("db %s: %v, want an error containing %q (usage error: %v)", strings.Join(tc.args, " "), err, tc.want, tc.usage)
		}
	}
	if data, _ := os.ReadFile(existing); string(data) != "keep" {
		t.Errorf("export --out overwrote an existing file: %q", data)
	}
	if _, err := os.Stat(target); err == nil {
		t.Errorf("a refused copy created its target %s", target)
	}
	failed := filepath.Join(dir, "failed.jsonl")
	if _, _, err := dbCmd(t, map[string]string{"DATABASE_PATH": notOurs}, "", "export", "--out", failed); err == nil || !strings.Contains(err.Error(), "not an llmproxy database") {
		t.Errorf("export of a database that is not llmproxy's: %v", err)
	}
	if _, err := os.Stat(failed); err == nil {
		t.Errorf("a failed export left its --out file")
	}
}

func TestDBHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"--help"}, {"copy", "--help"}, {"import", "-h"}} {
		out, _, err := dbCmd(t, nil, "", args...)
		if err != nil || !strings.Contains(out, "llmproxy db <command>") {
			t.Errorf("db %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func TestDBBackup(t *testing.T) {
	t.Parallel()
	t.Run("SQLite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		env := map[string]string{"DATABASE_PATH": filepath.Join(dir, "llmproxy.db")}
		seedDatabase(t, sqliteConfig(env["DATABASE_PATH"]))
		backup := filepath.Join(dir, "backup.db")
		out, _, err := dbCmd(t, env, "", "backup", backup)
		if err != nil || !strings.Contains(out, "backed up") {
			t.Fatalf("backup: %v\n%s", err, out)
		}
		// The backup is a database with the same rows: copying it verifies them.
		copied, _, err := dbCmd(t, nil, "", "copy", "--from", backup, "--to", filepath.Join(dir, "restored.db"))
		if err != nil || !strings.Contains(copied, "usage_events  25") {
			t.Fatalf("copy of the backup: %v\n%s", err, copied)
		}
		if _, _, err := dbCmd(t, env, "", "backup", backup); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("backup to an existing file: %v, want a refusal", err)
		}
		env["DATABASE_PATH"] = filepath.Join(dir, "missing.db")
		if _, _, err := dbCmd(t, env, "", "backup", filepath.Join(dir, "b2.db")); err == nil || !strings.Contains(err.Error(), "no such file") {
			t.Fatalf("backup of a missing database: %v", err)
		}
	})
	t.Run("Postgres", func(t *testing.T) {
		t.Parallel()
		// Nothing is contacted: the command only says how to use pg_dump.
		env := map[string]string{"DB_DRIVER": "postgres", "DATABASE_URL": "postgres://x@127.0.0.1:1/x"}
		_, _, err := dbCmd(t, env, "", "backup", "llmproxy.dump")
		if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), `pg_dump --format=custom --file="llmproxy.dump" "$DATABASE_URL"`) {
			t.Fatalf("backup on Postgres: %v, want an error giving the pg_dump command", err)
		}
	})
}

func TestDBExportImport(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	source := map[string]string{"DATABASE_PATH": filepath.Join(dir, "source.db")}
	seedDatabase(t, sqliteConfig(source["DATABASE_PATH"]))
	file := filepath.Join(dir, "export.jsonl")
	if out, summary, err := dbCmd(t, source, "", "export", "--out", file, "--batch", "10"); err != nil || out != "" {
		t.Fatalf("export --out: %v, stdout %q\n%s", err, out, summary)
	}
	toStdout, summary, err := dbCmd(t, source, "", "export")
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if data, _ := os.ReadFile(file); string(data) != toStdout {
		t.Fatalf("export --out wrote\n%s\nexport to stdout\n%s", data, toStdout)
	}
	exported := checksumLines(summary)

	for _, tc := range []struct {
		name string
		env  func(t *testing.T) map[string]string
	}{
		{"SQLite", func(t *testing.T) map[string]string {
			return map[string]string{"DATABASE_PATH": filepath.Join(t.TempDir(), "imported.db")}
		}},
		{"Postgres", func(t *testing.T) map[string]string {
			return map[string]string{"DB_DRIVER": "postgres", "DATABASE_URL": pgtest.NewDatabase(t)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := tc.env(t)
			out, _, err := dbCmd(t, env, "", "import", file)
			if err != nil {
				t.Fatalf("import: %v", err)
			}
			// The import's lines add the next id to the export's.
			imported := checksumLines(out)
			for i, l := range imported {
				f := strings.Fields(l)
				if strings.Join([]string{f[0], f[1], f[3]}, " ") != exported[i] {
					t.Errorf("import reported %q, export %q", l, exported[i])
				}
			}
			if _, _, err := dbCmd(t, env, toStdout, "import", "-"); !errors.Is(err, service.ErrTargetNotEmpty) {
				t.Fatalf("second import: %v, want ErrTargetNotEmpty", err)
			}
			again, _, err := dbCmd(t, env, toStdout, "import", "--force", "-")
			if err != nil || again != out {
				t.Fatalf("import --force from stdin: %v\n%s\nwant\n%s", err, again, out)
			}
			if _, _, err := dbCmd(t, env, "not json\n", "import", "--force", "-"); err == nil || !strings.Contains(err.Error(), "line 1") {
				t.Fatalf("import of a bad file: %v, want an error naming the line", err)
			}
		})
	}
}
