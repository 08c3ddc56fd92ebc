package migrate

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	atlas "ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/postgres"
	_ "ariga.io/atlas/sql/postgres/postgrescheck" // registers the Postgres analyzers
	atlasschema "ariga.io/atlas/sql/schema"
	"ariga.io/atlas/sql/sqlcheck"
	"ariga.io/atlas/sql/sqlclient"
	"ariga.io/atlas/sql/sqlite"
	_ "ariga.io/atlas/sql/sqlite/sqlitecheck" // registers the SQLite analyzers
)

// LintOptions configures Lint.
type LintOptions struct {
	Config   string    // path of atlas.hcl
	Dialects []Dialect // envs to lint; empty means every env of Config
	Latest   int       // lint only the newest N files of each dir; 0 means all
}

// Diagnostic is one finding of atlas's analyzers (destructive changes,
// data-dependent changes, backward-incompatible changes).
type Diagnostic struct {
	File  string // path of the migration file
	Line  int
	Code  string // atlas's check code, e.g. DS102
	Text  string
	Error bool // the analyzer fails the lint; otherwise a warning
}

func (d Diagnostic) String() string {
	level := "warning"
	if d.Error {
		level = "error"
	}
	return fmt.Sprintf("%s:%d: %s: %s %s", d.File, d.Line, level, d.Code, d.Text)
}

// ErrLint is returned by Lint when an analyzer reports an error.
var ErrLint = errors.New("migration lint failed")

// Lint replays each env's migration directory on its dev database and runs
// the dialect's atlas analyzers on every file (or the latest N), statement
// by statement. It returns every diagnostic, and ErrLint if any is an error.
func Lint(ctx context.Context, opts LintOptions) ([]Diagnostic, error) {
	if opts.Latest < 0 {
		return nil, fmt.Errorf("latest %d: want a positive number of files, or 0 for all", opts.Latest)
	}
	envs, err := selectEnvs(opts.Config, opts.Dialects)
	if err != nil {
		return nil, err
	}
	var (
		diags  []Diagnostic
		failed bool
	)
	for _, env := range envs {
		d, err := lintEnv(ctx, env, opts.Latest)
		diags = append(diags, d...)
		if errors.Is(err, ErrLint) {
			failed = true
			continue
		}
		if err != nil {
			return diags, fmt.Errorf("%s: %w", env.Dialect, err)
		}
	}
	if failed {
		return diags, ErrLint
	}
	return diags, nil
}

func lintEnv(ctx context.Context, env Env, latest int) (_ []Diagnostic, err error) {
	dir, err := atlas.NewLocalDir(env.Dir)
	if err != nil {
		return nil, err
	}
	if err := atlas.Validate(dir); err != nil {
		return nil, fmt.Errorf("%s: %w", env.Dir, describeChecksumError(err))
	}
	files, err := dir.Files()
	if err != nil {
		return nil, err
	}
	split := 0
	if latest > 0 && latest < len(files) {
		split = len(files) - latest
	}
	db, closeDev, err := openDev(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("dev database: %w", err)
	}
	defer closeDev()
	dev, err := devClient(db, env.Dialect)
	if err != nil {
		return nil, err
	}
	analyzers, err := sqlcheck.AnalyzerFor(dev.Name, nil)
	if err != nil {
		return nil, err
	}
	restore, err := dev.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("dev database: %w", err)
	}
	defer func() {
		if rerr := restore(ctx); rerr != nil {
			err = errors.Join(err, fmt.Errorf("clean dev database: %w", rerr))
		}
	}()
	for _, f := range files[:split] {
		if _, _, err := replay(ctx, dev, f, nil); err != nil {
			return nil, err
		}
	}
	current, err := dev.InspectRealm(ctx, nil)
	if err != nil {
		return nil, err
	}
	var (
		diags  []Diagnostic
		failed bool
	)
	for _, f := range files[split:] {
		file := &sqlcheck.File{File: f, From: current}
		if file.Changes, current, err = replay(ctx, dev, f, current); err != nil {
			return diags, err
		}
		file.To = current
		if file.Sum, err = dev.RealmDiff(file.From, file.To); err != nil {
			return diags, err
		}
		path := filepath.Join(env.Dir, f.Name())
		silenced := nolint(f, file.Changes)
		for _, az := range analyzers {
			var reports []sqlcheck.Report
			pass := &sqlcheck.Pass{File: file, Dev: dev, Reporter: sqlcheck.ReportWriterFunc(func(r sqlcheck.Report) {
				reports = append(reports, r)
			})}
			aerr := az.Analyze(ctx, pass)
			if aerr != nil && len(reports) == 0 {
				return diags, fmt.Errorf("%s: %w", path, aerr)
			}
			name := ""
			if named, ok := az.(sqlcheck.NamedAnalyzer); ok {
				name = named.Name()
			}
			for _, r := range reports {
				for _, d := range r.Diagnostics {
					if silenced(d.Pos, name, d.Code) {
						continue
					}
					failed = failed || aerr != nil
					diags = append(diags, Diagnostic{
						File: path, Line: lineAt(f.Bytes(), d.Pos), Code: d.Code, Text: d.Text, Error: aerr != nil,
					})
				}
			}
		}
	}
	if failed {
		return diags, ErrLint
	}
	return diags, nil
}

// replay executes the statements of f on the dev database. Given the state
// before f, it also returns the change each statement made and the state after.
func replay(ctx context.Context, dev *sqlclient.Client, f atlas.File, current *atlasschema.Realm) ([]*sqlcheck.Change, *atlasschema.Realm, error) {
	stmts, err := atlas.FileStmtDecls(dev, f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	var changes []*sqlcheck.Change
	for _, s := range stmts {
		if _, err := dev.ExecContext(ctx, s.Text); err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %w", f.Name(), lineAt(f.Bytes(), s.Pos), err)
		}
		if current == nil {
			continue
		}
		next, err := dev.InspectRealm(ctx, nil)
		if err != nil {
			return nil, nil, err
		}
		diff, err := dev.RealmDiff(current, next)
		if err != nil {
			return nil, nil, err
		}
		changes = append(changes, &sqlcheck.Change{Stmt: s, Changes: diff})
		current = next
	}
	return changes, current, nil
}

// nolint honours atlas's "-- atlas:nolint [analyzer or code ...]" directive,
// at the top of a file or before a statement; without arguments it silences
// everything. It reports whether a diagnostic at pos is silenced.
func nolint(f atlas.File, changes []*sqlcheck.Change) func(pos int, analyzer, code string) bool {
	var fileArgs []string
	if lf, ok := f.(*atlas.LocalFile); ok {
		fileArgs = lf.Directive("nolint")
	}
	stmtArgs := make(map[int][]string)
	for _, c := range changes {
		for _, comment := range c.Stmt.Comments {
			text := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(comment), "--"))
			if args, ok := strings.CutPrefix(text, "atlas:nolint"); ok && (args == "" || args[0] == ' ') {
				stmtArgs[c.Stmt.Pos] = append(stmtArgs[c.Stmt.Pos], args)
			}
		}
	}
	return func(pos int, analyzer, code string) bool {
		for _, args := range append(slices.Clone(fileArgs), stmtArgs[pos]...) {
			fields := strings.Fields(args)
			if len(fields) == 0 || slices.Contains(fields, code) || (analyzer != "" && slices.Contains(fields, analyzer)) {
				return true
			}
		}
		return false
	}
}

// devClient wraps the dev database the way atlas's analyzers expect.
func devClient(db *sql.DB, d Dialect) (*sqlclient.Client, error) {
	drv, err := d.driver(db)
	if err != nil {
		return nil, err
	}
	name := sqlite.DriverName
	if d == Postgres {
		name = postgres.DriverName
	}
	return &sqlclient.Client{Name: name, DB: db, Driver: drv}, nil
}

func lineAt(src []byte, pos int) int {
	return 1 + bytes.Count(src[:min(pos, len(src))], []byte("\n"))
}
