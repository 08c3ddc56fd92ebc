package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/llmproxy/llmproxy/migrate"
	"github.com/llmproxy/llmproxy/service"
)

const dbHelp = `Usage: llmproxy db <command> [flags]

Commands:
  copy --from SRC --to DST   copy every row from one database to another, keeping ids
                             and times, then check row counts and checksums; SRC and
                             DST are each a SQLite file path or a postgres:// URL
  backup FILE                write a consistent copy of the configured SQLite database
                             to the new file FILE while it stays in use (for PostgreSQL
                             it prints the pg_dump command to use instead)
  export [--out FILE]        write every row of the configured database as JSON lines
                             to the new file FILE, or to stdout
  import FILE                load an export (FILE, or - for stdin) into the configured
                             database, then check row counts and checksums

Flags of copy and import:
  --force     a target that has rows is emptied first (every table, in one
              transaction) instead of refused
  --batch N   rows per batch, each written in one transaction (default 1000)

The source of copy and export must be at this llmproxy's schema version (run
llmproxy migrate apply on it); the target of copy and import is created and
migrated as needed. Stop llmproxy while copying: rows written during the copy
make the final check fail. backup, export and import use DB_DRIVER,
DATABASE_PATH and DATABASE_URL (see serve --help). See docs/database.md.
`

// runDB runs `llmproxy db <command>`.
func runDB(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: db: missing command (copy, backup, export or import)", errUsage)
	}
	cmd, args := args[0], args[1:]
	flags := flag.NewFlagSet("db "+cmd, flag.ContinueOnError)
	var opts service.CopyOptions
	if cmd == "copy" || cmd == "import" {
		flags.BoolVar(&opts.Force, "force", false, "empty a target that has rows")
	}
	if cmd == "copy" || cmd == "import" || cmd == "export" {
		flags.IntVar(&opts.BatchSize, "batch", service.DefaultCopyBatchSize, "rows per batch")
	}
	var from, to, out *string
	switch cmd {
	case "copy":
		from = flags.String("from", "", "source: SQLite file path or postgres:// URL")
		to = flags.String("to", "", "target: SQLite file path or postgres:// URL")
	case "export":
		out = flags.String("out", "", "file to create (default stdout)")
	case "backup", "import":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, dbHelp)
		return nil
	default:
		return fmt.Errorf("%w: db: unknown command %q (want copy, backup, export or import)", errUsage, cmd)
	}
	wantArgs := 0
	if cmd == "backup" || cmd == "import" {
		wantArgs = 1
	}
	positional, help, err := parseDBArgs(flags, args, wantArgs)
	if help || err != nil {
		if help {
			fmt.Fprint(stdout, dbHelp)
		}
		return err
	}
	if opts.BatchSize <= 0 && cmd != "backup" {
		return fmt.Errorf("%w: db %s: --batch %d: want a positive number", errUsage, cmd, opts.BatchSize)
	}

	switch cmd {
	case "copy":
		if *from == "" || *to == "" {
			return fmt.Errorf("%w: db copy needs --from and --to", errUsage)
		}
		return dbCopy(ctx, endpointConfig(*from), endpointConfig(*to), opts, stdout, stderr)
	case "backup":
		return dbBackup(ctx, getenv, positional[0], stdout)
	case "export":
		return dbExport(ctx, getenv, *out, opts, stdout, stderr)
	default:
		return dbImport(ctx, getenv, positional[0], stdin, opts, stdout, stderr)
	}
}

// parseDBArgs parses flags given before or after the arguments, of which
// there must be exactly wantArgs, and returns those; help reports --help.
func parseDBArgs(flags *flag.FlagSet, args []string, wantArgs int) (positional []string, help bool, err error) {
	flags.SetOutput(io.Discard)
	flags.Usage = func() {}
	for {
		if err := flags.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, true, nil
			}
			return nil, false, fmt.Errorf("%w: %s: %v", errUsage, flags.Name(), err)
		}
		if flags.NArg() == 0 {
			break
		}
		positional = append(positional, flags.Arg(0))
		args = flags.Args()[1:]
	}
	if len(positional) != wantArgs {
		what := "no arguments"
		if wantArgs == 1 {
			what = "one file name"
		}
		return nil, false, fmt.Errorf("%w: %s takes %s, got %d", errUsage, flags.Name(), what, len(positional))
	}
	return positional, false, nil
}

// endpointConfig is the configuration of a --from or --to: a postgres://
// URL, or else a SQLite file path.
func endpointConfig(s string) service.Config {
	cfg := service.DefaultConfig()
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		cfg.Driver, cfg.DatabaseURL = service.DriverPostgres, s
	} else {
		cfg.SQLitePath = s
	}
	return cfg
}

func dbCopy(ctx context.Context, from, to service.Config, opts service.CopyOptions, stdout, stderr io.Writer) error {
	if sameDatabase(from, to) {
		return fmt.Errorf("%w: db copy: --from and --to are the same database", errUsage)
	}
	src, err := openSource(ctx, from)
	if err != nil {
		return fmt.Errorf("source (--from): %w", err)
	}
	defer src.Close()
	dst, err := openTarget(ctx, to)
	if err != nil {
		return fmt.Errorf("target (--to): %w", err)
	}
	defer dst.Close()

	opts.Progress = newProgressPrinter(stderr)
	reports, err := service.Copy(ctx, src, dst, opts)
	if err != nil {
		return copyError("db copy", err)
	}
	printReports(stdout, reports, true)
	return nil
}

func dbBackup(ctx context.Context, getenv func(string) string, file string, stdout io.Writer) error {
	cfg, err := service.ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	if cfg.Driver == service.DriverPostgres {
		return fmt.Errorf("db backup: PostgreSQL is backed up with its own tools; run\n"+
			"  pg_dump --format=custom --file=%q \"$DATABASE_URL\"\n"+
			"and restore with pg_restore (see docs/database.md, Backup and restore)", file)
	}
	// A backup copies the file as it is, whatever its schema version.
	store, err := openExisting(ctx, cfg)
	if err != nil {
		return fmt.Errorf("DATABASE_PATH: %w", err)
	}
	defer store.Close()
	if err := store.Backup(ctx, file); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("db backup: %s already exists; choose a new file name", file)
		}
		return err
	}
	fmt.Fprintf(stdout, "backed up %s to %s\n", cfg.SQLitePath, file)
	return nil
}

func dbExport(ctx context.Context, getenv func(string) string, file string, opts service.CopyOptions, stdout, stderr io.Writer) (err error) {
	cfg, err := service.ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	out := stdout
	if file != "" {
		f, createErr := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if createErr != nil {
			return fmt.Errorf("db export: %w", createErr)
		}
		defer func() {
			if closeErr := f.Close(); err == nil && closeErr != nil {
				err = fmt.Errorf("db export: %w", closeErr)
			}
			if err != nil {
				_ = os.Remove(file) // an incomplete export must not be mistaken for one
			}
		}()
		out = f
	}
	store, err := openSource(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", locationVariable(cfg), err)
	}
	defer store.Close()

	opts.Progress = newProgressPrinter(stderr)
	reports, err := service.Export(ctx, store, out, opts)
	if err != nil {
		return copyError("db export", err)
	}
	// stdout may be the export itself.
	printReports(stderr, reports, false)
	return nil
}

func dbImport(ctx context.Context, getenv func(string) string, file string, stdin io.Reader, opts service.CopyOptions, stdout, stderr io.Writer) error {
	cfg, err := service.ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	in := stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("db import: %w", err)
		}
		defer f.Close()
		in = f
	}
	store, err := openTarget(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", locationVariable(cfg), err)
	}
	defer store.Close()

	opts.Progress = newProgressPrinter(stderr)
	reports, err := service.Import(ctx, in, store, opts)
	if err != nil {
		return copyError("db import "+file, err)
	}
	printReports(stdout, reports, true)
	return nil
}

func copyError(what string, err error) error {
	if errors.Is(err, service.ErrTargetNotEmpty) {
		return fmt.Errorf("%s: %w; pass --force to delete its rows first", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// openExisting opens an existing database as it is, without migrating it.
func openExisting(ctx context.Context, cfg service.Config) (service.Store, error) {
	if cfg.Driver == service.DriverSQLite {
		// Opening would create a missing file.
		if _, err := os.Stat(cfg.SQLitePath); err != nil {
			return nil, err
		}
	}
	cfg.SkipMigrate = true
	return service.Open(ctx, cfg)
}

// openSource opens an existing database to read every row of, refusing one
// whose schema is not this binary's latest: the copy reads its columns as
// this version has them.
func openSource(ctx context.Context, cfg service.Config) (service.Store, error) {
	store, err := openExisting(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := checkSchemaCurrent(ctx, cfg); err != nil {
		store.Close()
		return nil, err
	}
	return store, nil
}

func checkSchemaCurrent(ctx context.Context, cfg service.Config) error {
	db, dialect, err := openMigrationDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	report, err := migrate.Status(ctx, db, dialect)
	switch {
	case err != nil:
		return err
	case report.Current == "":
		return errors.New("not an llmproxy database: it has no applied migrations")
	case len(report.Pending) > 0:
		return fmt.Errorf("schema version %s is behind this llmproxy's (%d migrations pending): run llmproxy migrate apply on it first",
			report.Current, len(report.Pending))
	}
	return nil
}

// openTarget opens, creating and migrating as needed, a database to copy into.
func openTarget(ctx context.Context, cfg service.Config) (service.Store, error) {
	cfg.SkipMigrate = false
	return service.Open(ctx, cfg)
}

func sameDatabase(a, b service.Config) bool {
	if a.Driver != b.Driver {
		return false
	}
	if a.Driver == service.DriverPostgres {
		return a.DatabaseURL == b.DatabaseURL
	}
	absA, errA := filepath.Abs(a.SQLitePath)
	absB, errB := filepath.Abs(b.SQLitePath)
	return errA == nil && errB == nil && absA == absB
}

func locationVariable(cfg service.Config) string {
	if cfg.Driver == service.DriverPostgres {
		return "DATABASE_URL"
	}
	return "DATABASE_PATH"
}

// printReports prints one line per table; verified says the target was
// checked (copy and import), which also reports the ids it generates next.
func printReports(w io.Writer, reports []service.TableReport, verified bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if verified {
		fmt.Fprintln(tw, "table\trows\tnext id\tsha256")
	} else {
		fmt.Fprintln(tw, "table\trows\tsha256")
	}
	for _, r := range reports {
		if verified {
			next := "-" // a table without ids
			if r.NextID != 0 {
				next = fmt.Sprint(r.NextID)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.Table, r.Rows, next, r.Checksum)
		} else {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", r.Table, r.Rows, r.Checksum)
		}
	}
	tw.Flush()
	if verified {
		fmt.Fprintln(w, "verified: the target's row counts and checksums match the source's")
	}
}

// newProgressPrinter reports a copy's progress on w: on a terminal a bar per
// table and phase, redrawn in place; otherwise a line at each tenth of a
// table and at its end, for logs.
func newProgressPrinter(w io.Writer) func(service.CopyProgress) {
	tty := isTerminal(w)
	var printed int64 // tenths of the current table already logged
	return func(p service.CopyProgress) {
		label := fmt.Sprintf("%-12s %-12s", p.Phase, p.Table)
		if tty {
			fmt.Fprintf(w, "\r%s %s", label, progressBar(p))
			if p.Done {
				fmt.Fprintln(w)
			}
			return
		}
		if p.Rows == 0 && !p.Done {
			printed = 0
			return
		}
		switch {
		case p.Done:
			fmt.Fprintf(w, "%s %d rows, done\n", label, p.Rows)
		case p.Total > 0 && p.Rows*10/p.Total > printed:
			printed = p.Rows * 10 / p.Total
			fmt.Fprintf(w, "%s %d of %d rows\n", label, p.Rows, p.Total)
		}
	}
}

func progressBar(p service.CopyProgress) string {
	if p.Total < 0 { // an import stream: no total known
		return fmt.Sprintf("%d rows", p.Rows)
	}
	const width = 30
	filled := width
	if p.Total > 0 {
		filled = int(min(p.Rows, p.Total) * width / p.Total)
	}
	return fmt.Sprintf("[%s%s] %d/%d", strings.Repeat("#", filled), strings.Repeat(".", width-filled), p.Rows, p.Total)
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
