package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/llmproxy/llmproxy/service"
)

// mapError wraps err under the service sentinel it is an instance of,
// keeping the driver error (and so the constraint name) as the cause.
// Context errors pass through unchanged; so does anything unrecognised.
func mapError(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if sentinel := sentinelFor(err); sentinel != nil {
		return fmt.Errorf("%w: %w", sentinel, err)
	}
	return err
}

func sentinelFor(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return service.ErrNotFound
	}
	// Connection failures first: a server error during a reconnect arrives
	// wrapped in a ConnectError.
	var connectErr *pgconn.ConnectError
	var netErr *net.OpError
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, pgconn.ErrConnClosed), pgconn.SafeToRetry(err):
		return service.ErrUnavailable
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return nil
	}
	switch {
	case pgErr.Code == pgerrcode.UniqueViolation:
		return service.ErrConflict
	case pgErr.Code == pgerrcode.ForeignKeyViolation:
		return service.ErrReference
	case pgErr.Code == pgerrcode.CheckViolation, pgErr.Code == pgerrcode.NotNullViolation,
		pgerrcode.IsDataException(pgErr.Code): // bad input: malformed JSON, out-of-range numbers
		return service.ErrInvalid
	case pgerrcode.IsConnectionException(pgErr.Code),
		pgErr.Code == pgerrcode.AdminShutdown, pgErr.Code == pgerrcode.CrashShutdown,
		pgErr.Code == pgerrcode.CannotConnectNow,
		// A write reached a read-only server (a standby during failover).
		pgErr.Code == pgerrcode.ReadOnlySQLTransaction,
		// The server is out of disk, memory or connections: nothing is wrong
		// with the request, which can succeed once the server has room.
		pgerrcode.IsInsufficientResources(pgErr.Code):
		return service.ErrUnavailable
	}
	return nil
}

// connectError reports a failed first connection. Its message is built from
// the parsed configuration and the innermost cause, never from the driver's
// message or the connection string, so it cannot carry the password. It
// unwraps to service.ErrUnavailable and, when the caller gave up, to the
// context's error.
type connectError struct {
	msg    string
	causes []error
}

func (e *connectError) Error() string   { return e.msg }
func (e *connectError) Unwrap() []error { return e.causes }

func newConnectError(ctx context.Context, cfg *pgx.ConnConfig, err error) error {
	reason := rootCause(err).Error()
	if cfg.Password != "" {
		reason = strings.ReplaceAll(reason, cfg.Password, "xxxxx")
	}
	e := &connectError{
		msg: fmt.Sprintf("postgres: cannot connect to %s database %q as user %q: %s",
			net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), cfg.Database, cfg.User, reason),
		causes: []error{service.ErrUnavailable},
	}
	if ctx.Err() != nil {
		e.causes = append(e.causes, ctx.Err())
	}
	return e
}

// rootCause follows err's wrapping down to the error that started it: the
// server's message, a system call's error or a timeout. For a failure with
// several causes (one per address tried) it follows the last.
func rootCause(err error) error {
	for {
		switch e := err.(type) {
		case interface{ Unwrap() error }:
			if inner := e.Unwrap(); inner != nil {
				err = inner
				continue
			}
		case interface{ Unwrap() []error }:
			if inner := e.Unwrap(); len(inner) > 0 {
				err = inner[len(inner)-1]
				continue
			}
		}
		return err
	}
}
