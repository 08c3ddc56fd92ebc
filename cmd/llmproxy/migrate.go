package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/llmproxy/llmproxy/migrate"
	"github.com/llmproxy/llmproxy/service"
)

const migrateHelp = `Usage: llmproxy migrate <command> [flags]

Commands:
  apply                 apply pending migrations to the configured database
  status                show the applied and pending migrations of the configured database
  diff <name>           plan a migration per dialect from schema/<dialect>/schema.sql and
                        write it to schema/<dialect>/migrations with its atlas.sum
  diff --check          fail if schema.sql and the migrations differ or atlas.sum is wrong
  lint [--latest N]     run atlas's analyzers (destructive, data-dependent and
                        backward-incompatible changes) on the migration files

apply and status use DB_DRIVER, DATABASE_PATH and DATABASE_URL (see serve --help).
diff and lint read atlas.hcl and plan on its dev databases: SQLite in memory, and for
Postgres a scratch database created (and dropped) on the server of ATLAS_DEV_URL,
default postgres://postgres@127.0.0.1:5432/postgres.

Flags of diff and lint:
  --config PATH     atlas.hcl to read (default atlas.hcl)
  --dialect NAME    sqlite or postgres (default both)
`

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: migrate: missing command (apply, status, diff or lint)", errUsage)
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "apply", "status":
		return runMigrateDB(ctx, cmd, rest, stdout)
	case "diff":
		return runMigrateDiff(ctx, rest, stdout)
	case "lint":
		return runMigrateLint(ctx, rest, stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, migrateHelp)
		return nil
	default:
		return fmt.Errorf("%w: migrate: unknown command %q (want apply, status, diff or lint)", errUsage, cmd)
	}
}

// parseFlags parses flags given before or after positional arguments and
// returns the positional ones; help reports whether --help was asked for.
func parseFlags(fs *flag.FlagSet, args []string) (positional []string, help bool, err error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, true, nil
			}
			return nil, false, fmt.Errorf("%w: migrate %s: %v", errUsage, fs.Name(), err)
		}
		if fs.NArg() == 0 {
			return positional, false, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runMigrateDB(ctx context.Context, cmd string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	positional, help, err := parseFlags(fs, args)
	if help || err != nil {
		if help {
			fmt.Fprint(stdout, migrateHelp)
		}
		return err
	}
	if len(positional) > 0 {
		return fmt.Errorf("%w: migrate %s takes no arguments", errUsage, cmd)
	}
	cfg, err := service.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	db, dialect, err := openMigrationDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	if cmd == "apply" {
		applied, err := migrate.Apply(ctx, db, dialect)
		for _, name := range applied {
			fmt.Fprintf(stdout, "applied %s\n", name)
		}
		if err != nil {
			return err
		}
		if len(applied) == 0 {
			fmt.Fprintln(stdout, "no pending migrations")
		}
		return nil
	}
	report, err := migrate.Status(ctx, db, dialect)
	if err != nil {
		return err
	}
	printStatus(stdout, dialect, report)
	return nil
}

func printStatus(w io.Writer, d migrate.Dialect, r *migrate.StatusReport) {
	current := r.Current
	if current == "" {
		current = "none (empty database)"
	}
	fmt.Fprintf(w, "dialect: %s\ncurrent version: %s\n", d, current)
	for _, rev := range r.Applied {
		if rev.Error != "" {
			fmt.Fprintf(w, "failed   %s_%s at %s: %s\n", rev.Version, rev.Description, rev.ExecutedAt.Format(time.RFC3339), rev.Error)
			continue
		}
		fmt.Fprintf(w, "applied  %s_%s at %s (%s)\n", rev.Version, rev.Description, rev.ExecutedAt.Format(time.RFC3339), rev.ExecutionTime)
	}
	for _, name := range r.Pending {
		fmt.Fprintf(w, "pending  %s\n", name)
	}
}

// openMigrationDB opens the database of a validated config the way
// migrate.Apply needs it: for SQLite one connection with the store's settings.
func openMigrationDB(ctx context.Context, cfg service.Config) (*sql.DB, migrate.Dialect, error) {
	var (
		db      *sql.DB
		dialect migrate.Dialect
		err     error
	)
	if cfg.Driver == service.DriverPostgres {
		dialect = migrate.Postgres
		if db, err = migrate.OpenPostgres(cfg.DatabaseURL); err != nil {
			return nil, "", fmt.Errorf("DB_DRIVER=postgres: %w", err)
		}
	} else {
		dialect = migrate.SQLite
		abs, err := filepath.Abs(cfg.SQLitePath)
		if err != nil {
			return nil, "", fmt.Errorf("DATABASE_PATH=%q: %w", cfg.SQLitePath, err)
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
			return nil, "", fmt.Errorf("DATABASE_PATH=%q: create its directory: %w", cfg.SQLitePath, err)
		}
		params := "_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate"
		if db, err = sql.Open("sqlite", "file:"+(&url.URL{Path: abs}).EscapedPath()+"?"+params); err != nil {
			return nil, "", err
		}
		db.SetMaxOpenConns(1)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, "", fmt.Errorf("open %s database: %w", dialect, err)
	}
	return db, dialect, nil
}

// configFlags registers the flags diff and lint share.
func configFlags(fs *flag.FlagSet) (config, dialect *string) {
	return fs.String("config", "atlas.hcl", "atlas.hcl to read"), fs.String("dialect", "", "sqlite or postgres")
}

func parseDialects(s string) ([]migrate.Dialect, error) {
	if s == "" {
		return nil, nil
	}
	d, err := migrate.ParseDialect(s)
	if err != nil {
		return nil, fmt.Errorf("%w: --dialect: %v", errUsage, err)
	}
	return []migrate.Dialect{d}, nil
}

func runMigrateDiff(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("diff", flag.ContinueOnError)
	config, dialect := configFlags(fs)
	check := fs.Bool("check", false, "fail if the migrations are stale")
	positional, help, err := parseFlags(fs, args)
	if help || err != nil {
		if help {
			fmt.Fprint(stdout, migrateHelp)
		}
		return err
	}
	opts := migrate.DiffOptions{Config: *config, Check: *check}
	switch {
	case *check && len(positional) > 0:
		return fmt.Errorf("%w: migrate diff --check takes no name", errUsage)
	case !*check && len(positional) != 1:
		return fmt.Errorf("%w: migrate diff needs exactly one name, e.g. llmproxy migrate diff add_tokens_label", errUsage)
	case !*check:
		opts.Name = positional[0]
	}
	if opts.Dialects, err = parseDialects(*dialect); err != nil {
		return err
	}
	results, err := migrate.Diff(ctx, opts)
	for _, r := range results {
		switch {
		case r.File != "":
			fmt.Fprintf(stdout, "%s: wrote %s\n", r.Dialect, r.File)
		case err == nil:
			fmt.Fprintf(stdout, "%s: no changes\n", r.Dialect)
		}
	}
	return err
}

func runMigrateLint(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("lint", flag.ContinueOnError)
	config, dialect := configFlags(fs)
	latest := fs.Int("latest", 0, "lint only the newest N files")
	positional, help, err := parseFlags(fs, args)
	if help || err != nil {
		if help {
			fmt.Fprint(stdout, migrateHelp)
		}
		return err
	}
	if len(positional) > 0 {
		return fmt.Errorf("%w: migrate lint takes no arguments: %s", errUsage, strings.Join(positional, " "))
	}
	if *latest < 0 {
		return fmt.Errorf("%w: --latest %d: want a positive number, or 0 for every file", errUsage, *latest)
	}
	dialects, err := parseDialects(*dialect)
	if err != nil {
		return err
	}
	diags, err := migrate.Lint(ctx, migrate.LintOptions{Config: *config, Dialects: dialects, Latest: *latest})
	for _, d := range diags {
		fmt.Fprintln(stdout, d)
	}
	if err == nil {
		fmt.Fprintf(stdout, "lint: %d warnings, no errors\n", len(diags))
	}
	return err
}
