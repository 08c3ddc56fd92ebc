package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// stmtCache is a sqlitedb.DBTX that runs every query through a statement
// prepared once per query text: sqlc passes SQL text on each call, and SQLite
// would otherwise parse and compile it every time. The texts are sqlc's
// constants, so the cache stays small. database/sql prepares a statement
// again on each pool connection the first time it runs there.
type stmtCache struct {
	db    *sql.DB
	stmts sync.Map // query text → *sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db}
}

func (c *stmtCache) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if stmt, ok := c.stmts.Load(query); ok {
		return stmt.(*sql.Stmt), nil
	}
	stmt, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := c.stmts.LoadOrStore(query, stmt); loaded {
		// Another goroutine prepared the same text first.
		_ = stmt.Close()
		return prev.(*sql.Stmt), nil
	}
	return stmt, nil
}

func (c *stmtCache) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	stmt, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return stmt.ExecContext(ctx, args...)
}

func (c *stmtCache) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return c.db.PrepareContext(ctx, query)
}

func (c *stmtCache) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	stmt, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return stmt.QueryContext(ctx, args...)
}

func (c *stmtCache) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	stmt, err := c.stmt(ctx, query)
	if err != nil {
		// Only database/sql can make a Row that carries an error; the
		// unprepared query fails the same way the prepare did.
		return c.db.QueryRowContext(ctx, query, args...)
	}
	return stmt.QueryRowContext(ctx, args...)
}

// close closes every cached statement; call it before closing db.
func (c *stmtCache) close() error {
	var errs []error
	c.stmts.Range(func(query, stmt any) bool {
		errs = append(errs, stmt.(*sql.Stmt).Close())
		c.stmts.Delete(query)
		return true
	})
	return errors.Join(errs...)
}
