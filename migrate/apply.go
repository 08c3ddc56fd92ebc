package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	atlas "ariga.io/atlas/sql/migrate"
	atlasschema "ariga.io/atlas/sql/schema"
	"ariga.io/atlas/sql/sqlite"
)

// Postgres instances starting together take this advisory lock, so each
// file is applied once.
const (
	lockName    = "llmproxy_migrate"
	lockTimeout = 30 * time.Second
)

// NewerSchemaError refuses a database migrated by a newer llmproxy.
type NewerSchemaError struct {
	Version string // the database's unknown revision
	Latest  string // the newest version this binary has
}

func (e *NewerSchemaError) Error() string {
	return fmt.Sprintf("database schema version %s is newer than this llmproxy knows (latest %s); upgrade llmproxy", e.Version, e.Latest)
}

// ChecksumMismatchError reports a migration file edited after it was applied.
type ChecksumMismatchError struct {
	File string
}

func (e *ChecksumMismatchError) Error() string {
	return fmt.Sprintf("migration %s was edited after it was applied to this database: restore it and put the change in a new migration", e.File)
}

// Apply applies the pending embedded migrations of d and returns the names
// of the files it applied, oldest first; on error, those applied before it.
// Each file runs in a transaction of its own, recorded in schema_revisions.
//
// For SQLite, db must be limited to one connection (SetMaxOpenConns(1)):
// each file runs with foreign keys switched off on that connection, so a
// table copy does not cascade deletes. For Postgres, db needs two
// connections: one holds the advisory lock while another applies.
func Apply(ctx context.Context, db *sql.DB, d Dialect) ([]string, error) {
	dir, err := EmbeddedDir(d)
	if err != nil {
		return nil, err
	}
	return ApplyDir(ctx, db, d, dir)
}

// ApplyDir is Apply with the migrations of dir.
func ApplyDir(ctx context.Context, db *sql.DB, d Dialect, dir atlas.Dir) ([]string, error) {
	if err := atlas.Validate(dir); err != nil {
		return nil, fmt.Errorf("%s migrations: %w", d, describeChecksumError(err))
	}
	if d == SQLite && db.Stats().MaxOpenConnections != 1 {
		return nil, errors.New("sqlite migrations need a *sql.DB limited to one connection (SetMaxOpenConns(1))")
	}
	drv, err := d.driver(db)
	if err != nil {
		return nil, err
	}
	if d == Postgres {
		unlock, err := drv.Lock(ctx, lockName, lockTimeout)
		if errors.Is(err, atlasschema.ErrLocked) {
			return nil, fmt.Errorf("another llmproxy held the migration lock for %s: %w", lockTimeout, err)
		}
		if err != nil {
			return nil, fmt.Errorf("take migration lock: %w", err)
		}
		defer unlock()
	}
	schemaName, err := currentSchema(ctx, db, d)
	if err != nil {
		return nil, err
	}
	revs := newRevisions(db, d, schemaName)
	if err := revs.create(ctx); err != nil {
		return nil, err
	}
	history, err := revs.ReadRevisions(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkHistory(history, dir); err != nil {
		return nil, err
	}
	ex, err := atlas.NewExecutor(drv, dir, revs)
	if err != nil {
		return nil, err
	}
	pending, err := ex.Pending(ctx)
	var notClean *atlas.NotCleanError
	switch {
	case errors.Is(err, atlas.ErrNoPendingFiles):
		return nil, nil
	case errors.As(err, &notClean):
		return nil, fmt.Errorf("database has tables but no llmproxy migration history (%s): use an empty database", notClean.Reason)
	case err != nil:
		return nil, err
	}
	var applied []string
	for _, f := range pending {
		done, err := applyFile(ctx, db, d, schemaName, dir, f)
		if err != nil {
			if rerr := recordFailure(ctx, revs, dir, f, err); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return applied, fmt.Errorf("apply %s: %w", f.Name(), err)
		}
		if done {
			applied = append(applied, f.Name())
		}
	}
	return applied, nil
}

// applyFile applies f and records it in one transaction. It reports false
// when another process applied f first (SQLite has no advisory lock; its
// write transactions serialise instead).
func applyFile(ctx context.Context, db *sql.DB, d Dialect, schemaName string, dir atlas.Dir, f atlas.File) (bool, error) {
	var (
		tx     *sql.Tx
		commit func() error
		abort  func() error
	)
	if d == SQLite {
		stx, err := sqlite.OpenTx(ctx, db, nil)
		if err != nil {
			return false, err
		}
		tx, commit, abort = stx.Tx, stx.Commit, stx.Rollback
	} else {
		ptx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return false, err
		}
		tx, commit, abort = ptx, ptx.Commit, ptx.Rollback
	}
	run := func() (bool, error) {
		revs := newRevisions(tx, d, schemaName)
		revs.started = time.Now()
		switch rev, err := revs.ReadRevision(ctx, f.Version()); {
		case err == nil && complete(rev):
			return false, nil
		case err == nil:
			// A failed attempt, recorded outside its rolled back
			// transaction: start over with the file as it is now.
			if err := revs.DeleteRevision(ctx, f.Version()); err != nil {
				return false, err
			}
		case !errors.Is(err, atlas.ErrRevisionNotExist):
			return false, err
		}
		drv, err := d.driver(tx)
		if err != nil {
			return false, err
		}
		ex, err := atlas.NewExecutor(drv, dir, revs)
		if err != nil {
			return false, err
		}
		return true, ex.Execute(ctx, f)
	}
	done, err := run()
	if err != nil {
		// After a failed statement atlas also fails to record the revision
		// in the aborted transaction; the statement's error is the one to report.
		var stmtErr *atlas.StmtExecError
		if errors.As(err, &stmtErr) {
			err = stmtErr
		}
		return false, errors.Join(err, abort())
	}
	return done, commit()
}

// recordFailure keeps the error of a rolled back file in the revision table,
// where status shows it.
func recordFailure(ctx context.Context, revs *revisions, dir atlas.Dir, f atlas.File, cause error) error {
	sum, err := dir.Checksum()
	if err != nil {
		return err
	}
	hash, err := sum.SumByName(f.Name())
	if err != nil {
		return err
	}
	stmts, err := f.Stmts()
	if err != nil {
		return err
	}
	rev := &atlas.Revision{
		Version:     f.Version(),
		Description: f.Desc(),
		Type:        atlas.RevisionTypeExecute,
		Total:       len(stmts),
		Hash:        hash,
		ExecutedAt:  time.Now(),
		Error:       cause.Error(),
	}
	var stmtErr *atlas.StmtExecError
	if errors.As(cause, &stmtErr) {
		rev.ErrorStmt = stmtErr.Stmt.Text
	}
	return revs.WriteRevision(context.WithoutCancel(ctx), rev)
}

// checkHistory refuses a database that applied files this binary does not
// have, or whose applied files changed since.
func checkHistory(history []*atlas.Revision, dir atlas.Dir) error {
	sum, err := dir.Checksum()
	if err != nil {
		return err
	}
	known := make(map[string]struct{ name, hash string }, len(sum))
	latest := ""
	for _, f := range sum {
		v := atlas.NewLocalFile(f.N, nil).Version()
		known[v] = struct{ name, hash string }{f.N, f.H}
		latest = max(latest, v)
	}
	for _, rev := range history {
		f, ok := known[rev.Version]
		switch {
		case !ok && rev.Version > latest:
			return &NewerSchemaError{Version: rev.Version, Latest: latest}
		case !ok:
			return fmt.Errorf("database has applied migration %s_%s, which this llmproxy does not have", rev.Version, rev.Description)
		case rev.Type.Has(atlas.RevisionTypeExecute) && complete(rev) && rev.Hash != f.hash:
			return &ChecksumMismatchError{File: f.name}
		}
	}
	return nil
}

// describeChecksumError names the file behind an atlas.sum mismatch.
func describeChecksumError(err error) error {
	var cerr *atlas.ChecksumError
	if errors.As(err, &cerr) {
		return fmt.Errorf("atlas.sum does not match the files (%s %s): run llmproxy migrate diff, or restore the file: %w", cerr.File, cerr.Reason, err)
	}
	return err
}

// currentSchema is where the revision table lives: the connection's
// current schema on Postgres, none on SQLite.
func currentSchema(ctx context.Context, db *sql.DB, d Dialect) (string, error) {
	if d != Postgres {
		return "", nil
	}
	var name string
	if err := db.QueryRowContext(ctx, "SELECT current_schema()").Scan(&name); err != nil {
		return "", fmt.Errorf("query current schema: %w", err)
	}
	return name, nil
}
