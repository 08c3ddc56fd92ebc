// Package sqlitestore implements service.Store on SQLite (modernc.org/sqlite,
// no cgo): one writer connection for every write and transaction, and a pool
// of query-only connections for reads, which WAL lets run alongside the writer.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/llmproxy/llmproxy/gen/sqlitedb"
	"github.com/llmproxy/llmproxy/migrate"
	"github.com/llmproxy/llmproxy/service"
)

func init() {
	service.Register(service.DriverSQLite, func(ctx context.Context, cfg service.Config) (service.Store, error) {
		return Open(ctx, cfg)
	})
}

var _ service.Store = (*Store)(nil)

// Connection parameters. Every connection needs foreign_keys and busy_timeout
// (both are per connection); journal_mode is stored in the file, so the
// writer sets it once. _txlock=immediate takes the write lock at BEGIN, so a
// transaction never fails half-way on a lock it could not upgrade. The
// writer checkpoints the WAL itself only as a backstop (walBackstopPages);
// checkpointing is the background checkpointer's work.
var (
	writerParams = []string{
		"_pragma=foreign_keys(1)",
		"_pragma=journal_mode(WAL)",
		"_pragma=busy_timeout(10000)",
		"_pragma=synchronous(NORMAL)",
		"_pragma=wal_autocheckpoint(" + strconv.Itoa(walBackstopPages) + ")",
		"_txlock=immediate",
	}
	readerParams = []string{
		"_pragma=foreign_keys(1)",
		"_pragma=busy_timeout(10000)",
		"_pragma=query_only(1)",
	}
)

// Store is a service.Store on one SQLite file. The Store handed to an InTx
// callback has tx set and runs everything in that transaction.
type Store struct {
	path   string // absolute
	writer *sql.DB
	reader *sql.DB
	// Prepared statements on writer and reader. Transactions (never on the
	// request path) run their SQL text on tx directly.
	writeStmts *stmtCache
	readStmts  *stmtCache
	q          *sqlitedb.Queries
	tx         *sql.Tx
	// Inside a transaction: the tokens whose admission leases its commit
	// waits out, as it restricts their admission.
	leases *service.LeaseScope

	checkpointer *checkpointer
}

// Open opens (creating if needed) the database file cfg.SQLitePath and its
// directory and, unless cfg.SkipMigrate, applies pending migrations.
func Open(ctx context.Context, cfg service.Config) (*Store, error) {
	path := cfg.SQLitePath
	if path == "" {
		return nil, errors.New("DATABASE_PATH: must not be empty")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("SQLite database %q: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("SQLite database %q: create its directory: %w", path, err)
	}
	if err := createPrivate(abs); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("SQLite database %q: %w", path, err)
	}

	writer, err := openDB(ctx, abs, writerParams, 1)
	if err != nil {
		return nil, fmt.Errorf("SQLite database %q: %w", path, err)
	}
	if !cfg.SkipMigrate {
		if _, err := migrate.Apply(ctx, writer, migrate.SQLite); err != nil {
			_ = writer.Close()
			return nil, fmt.Errorf("SQLite database %q: migrate: %w", path, err)
		}
	}
	// The reader opens after the writer so that the file exists and is in WAL mode.
	reader, err := openDB(ctx, abs, readerParams, max(4, runtime.NumCPU()))
	if err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("SQLite database %q: %w", path, err)
	}
	s := &Store{
		path:       abs,
		writer:     writer,
		reader:     reader,
		writeStmts: newStmtCache(writer),
		readStmts:  newStmtCache(reader),
		q:          sqlitedb.New(),
	}
	s.checkpointer = startCheckpointer(reader, checkpointInterval)
	return s, nil
}

// createPrivate creates the empty file path (an empty SQLite database),
// readable by its owner only, as the key file is: SQLite would create it
// 0644, and it creates the -wal and -shm files with the mode of the
// database file. A file that exists keeps its mode (fs.ErrExist).
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// openDB opens a pool of at most conns connections and connects once, which
// creates the file and reports an unusable path at once rather than on first use.
func openDB(ctx context.Context, path string, params []string, conns int) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn(path, params))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, mapError(err)
	}
	return db, nil
}

// dsn builds a file: URI; the path is escaped so that '?', '#' and '%' in it
// stay part of the file name (SQLite decodes them back).
func dsn(path string, params []string) string {
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + strings.Join(params, "&")
}

// reads is where a read runs: the transaction, else the reader pool.
func (s *Store) reads() sqlitedb.DBTX {
	if s.tx != nil {
		return s.tx
	}
	return s.readStmts
}

// writes is where a write runs: the transaction, else the writer connection.
func (s *Store) writes() sqlitedb.DBTX {
	if s.tx != nil {
		return s.tx
	}
	return s.writeStmts
}

// InTx runs fn in one transaction on the writer connection. Inside fn, use
// only the Store fn is given: the writer has one connection, held by the
// transaction, so a write through the outer Store would wait for it.
func (s *Store) InTx(ctx context.Context, fn func(tx service.Store) error) error {
	_, err := inTx(ctx, s, func(tx *Store) (struct{}, error) {
		return struct{}{}, fn(tx)
	})
	return err
}

// inTx runs fn in a transaction, joining the one s is bound to, if any.
// database/sql rolls the transaction back by itself when ctx ends, and the
// deferred Rollback (whose driver call ignores ctx) covers errors and panics.
func inTx[T any](ctx context.Context, s *Store, fn func(tx *Store) (T, error)) (T, error) {
	if s.tx != nil {
		return fn(s)
	}
	var zero T
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return zero, mapError(err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	txStore := *s
	txStore.tx, txStore.leases = tx, &service.LeaseScope{}
	result, err := fn(&txStore)
	if err != nil {
		return zero, err
	}
	if err := tx.Commit(); err != nil {
		return zero, mapError(err)
	}
	service.AwaitLeases(ctx, txStore.leases, leaseReader{s})
	return result, nil
}

// leaseReader reads leases on the reader pool, after the commit: SQLite
// runs one writing statement at a time, so every admission that began
// before the commit has recorded its lease by then.
type leaseReader struct{ s *Store }

func (r leaseReader) TokenLeaseRemaining(ctx context.Context, id int64) (time.Duration, error) {
	ms, err := r.s.q.TokenLeaseRemaining(ctx, r.s.readStmts, id)
	return time.Duration(ms) * time.Millisecond, mapError(err)
}

func (r leaseReader) ProjectLeaseRemaining(ctx context.Context, id int64) (time.Duration, error) {
	ms, err := r.s.q.TokenLeaseRemainingForProject(ctx, r.s.readStmts, id)
	return time.Duration(ms) * time.Millisecond, mapError(err)
}

// Ping checks the writer, or inside a transaction the reader pool, since the
// transaction holds the writer's only connection.
func (s *Store) Ping(ctx context.Context) error {
	if s.tx != nil {
		return mapError(s.reader.PingContext(ctx))
	}
	return mapError(s.writer.PingContext(ctx))
}

// Close closes the prepared statements and both pools. The Store of a
// transaction cannot be closed.
func (s *Store) Close() error {
	if s.tx != nil {
		return errors.New("sqlitestore: Close called on a transaction's Store")
	}
	s.checkpointer.stop()
	return errors.Join(s.writeStmts.close(), s.readStmts.close(), s.writer.Close(), s.reader.Close())
}
