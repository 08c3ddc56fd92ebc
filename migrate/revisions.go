package migrate

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	atlas "ariga.io/atlas/sql/migrate"
	atlasschema "ariga.io/atlas/sql/schema"
)

// revisionTable records which migration files a database has applied.
const revisionTable = "schema_revisions"

// Times follow the project's conventions: unix milliseconds on SQLite,
// timestamptz on Postgres. Durations are microseconds on both.
var revisionTableDDL = map[Dialect]string{
	SQLite: `CREATE TABLE IF NOT EXISTS schema_revisions (
  version           TEXT    PRIMARY KEY,
  description       TEXT    NOT NULL,
  type              INTEGER NOT NULL,
  applied           INTEGER NOT NULL,
  total             INTEGER NOT NULL,
  hash              TEXT    NOT NULL,
  partial_hashes    TEXT    NOT NULL,
  executed_at       INTEGER NOT NULL,
  execution_time_us INTEGER NOT NULL,
  error             TEXT    NOT NULL,
  error_stmt        TEXT    NOT NULL,
  operator_version  TEXT    NOT NULL
) STRICT`,
	Postgres: `CREATE TABLE IF NOT EXISTS schema_revisions (
  version           text        PRIMARY KEY,
  description       text        NOT NULL,
  type              bigint      NOT NULL,
  applied           bigint      NOT NULL,
  total             bigint      NOT NULL,
  hash              text        NOT NULL,
  partial_hashes    text        NOT NULL,
  executed_at       timestamptz NOT NULL,
  execution_time_us bigint      NOT NULL,
  error             text        NOT NULL,
  error_stmt        text        NOT NULL,
  operator_version  text        NOT NULL
)`,
}

var revisionTableExists = map[Dialect]string{
	SQLite:   `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_revisions')`,
	Postgres: `SELECT to_regclass('schema_revisions') IS NOT NULL`,
}

const revisionColumns = `version, description, type, applied, total, hash, partial_hashes,
  executed_at, execution_time_us, error, error_stmt, operator_version`

// conn is a *sql.DB or a *sql.Tx.
type conn interface {
	atlasschema.ExecQuerier
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// revisions implements atlas's RevisionReadWriter on our own table, so the
// executor can record a file in the same transaction that applies it.
type revisions struct {
	conn    conn
	dialect Dialect
	ident   *atlas.TableIdent
	// started, when set, is when the file's transaction began. Atlas
	// restamps ExecutedAt on every write, which would time only the last
	// statement; the file is timed from here instead.
	started time.Time
}

var _ atlas.RevisionReadWriter = (*revisions)(nil)

// newRevisions returns the revision store of conn; schemaName is where the
// table lives on Postgres (atlas's clean check must recognise it).
func newRevisions(conn conn, d Dialect, schemaName string) *revisions {
	return &revisions{conn: conn, dialect: d, ident: &atlas.TableIdent{Name: revisionTable, Schema: schemaName}}
}

func (r *revisions) Ident() *atlas.TableIdent { return r.ident }

func (r *revisions) ReadRevisions(ctx context.Context) ([]*atlas.Revision, error) {
	rows, err := r.conn.QueryContext(ctx, `SELECT `+revisionColumns+` FROM schema_revisions ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", revisionTable, err)
	}
	defer rows.Close()
	var revs []*atlas.Revision
	for rows.Next() {
		rev, err := r.scan(rows)
		if err != nil {
			return nil, err
		}
		revs = append(revs, rev)
	}
	return revs, rows.Err()
}

func (r *revisions) ReadRevision(ctx context.Context, version string) (*atlas.Revision, error) {
	row := r.conn.QueryRowContext(ctx, `SELECT `+revisionColumns+` FROM schema_revisions WHERE version = $1`, version)
	rev, err := r.scan(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, atlas.ErrRevisionNotExist
	}
	return rev, err
}

func (r *revisions) scan(row interface{ Scan(...any) error }) (*atlas.Revision, error) {
	var (
		rev            atlas.Revision
		partial        string
		executedAt     any
		executionMicro int64
	)
	if r.dialect == SQLite {
		executedAt = new(int64)
	} else {
		executedAt = new(time.Time)
	}
	if err := row.Scan(&rev.Version, &rev.Description, &rev.Type, &rev.Applied, &rev.Total, &rev.Hash, &partial,
		executedAt, &executionMicro, &rev.Error, &rev.ErrorStmt, &rev.OperatorVersion); err != nil {
		return nil, fmt.Errorf("scan %s: %w", revisionTable, err)
	}
	if err := json.Unmarshal([]byte(partial), &rev.PartialHashes); err != nil {
		return nil, fmt.Errorf("%s %s: partial_hashes: %w", revisionTable, rev.Version, err)
	}
	switch t := executedAt.(type) {
	case *int64:
		rev.ExecutedAt = time.UnixMilli(*t).UTC()
	case *time.Time:
		rev.ExecutedAt = t.UTC()
	}
	rev.ExecutionTime = time.Duration(executionMicro) * time.Microsecond
	return &rev, nil
}

func (r *revisions) WriteRevision(ctx context.Context, rev *atlas.Revision) error {
	partial, err := json.Marshal(rev.PartialHashes)
	if err != nil {
		return err
	}
	at, took := rev.ExecutedAt, rev.ExecutionTime
	if !r.started.IsZero() {
		at, took = r.started, time.Since(r.started)
	}
	var executedAt any = at.UTC()
	if r.dialect == SQLite {
		executedAt = at.UnixMilli()
	}
	_, err = r.conn.ExecContext(ctx, `INSERT INTO schema_revisions (`+revisionColumns+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (version) DO UPDATE SET
  description = excluded.description, type = excluded.type, applied = excluded.applied,
  total = excluded.total, hash = excluded.hash, partial_hashes = excluded.partial_hashes,
  executed_at = excluded.executed_at, execution_time_us = excluded.execution_time_us,
  error = excluded.error, error_stmt = excluded.error_stmt, operator_version = excluded.operator_version`,
		rev.Version, rev.Description, int64(rev.Type), rev.Applied, rev.Total, rev.Hash, string(partial),
		executedAt, took.Microseconds(), rev.Error, rev.ErrorStmt, rev.OperatorVersion)
	if err != nil {
		return fmt.Errorf("write %s %s: %w", revisionTable, rev.Version, err)
	}
	return nil
}

func (r *revisions) DeleteRevision(ctx context.Context, version string) error {
	if _, err := r.conn.ExecContext(ctx, `DELETE FROM schema_revisions WHERE version = $1`, version); err != nil {
		return fmt.Errorf("delete %s %s: %w", revisionTable, version, err)
	}
	return nil
}

// create makes the table if it does not exist yet.
func (r *revisions) create(ctx context.Context) error {
	if _, err := r.conn.ExecContext(ctx, revisionTableDDL[r.dialect]); err != nil {
		return fmt.Errorf("create %s: %w", revisionTable, err)
	}
	return nil
}

// readIfExists is ReadRevisions for read-only callers: a database that never
// ran a migration has no table and no revisions.
func (r *revisions) readIfExists(ctx context.Context) ([]*atlas.Revision, error) {
	var exists bool
	if err := r.conn.QueryRowContext(ctx, revisionTableExists[r.dialect]).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look for %s: %w", revisionTable, err)
	}
	if !exists {
		return nil, nil
	}
	return r.ReadRevisions(ctx)
}

// complete tells a fully applied revision from one that failed.
func complete(rev *atlas.Revision) bool {
	return rev.Applied == rev.Total && rev.Error == ""
}
