//go:build !nopostgres

package migrate

import (
	"database/sql"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// OpenPostgres returns a database/sql handle on a Postgres URL or key=value
// connection string, the way Apply, Status and the dev database need it. It
// does not connect; the first use does. A build with -tags nopostgres has no
// Postgres driver and returns an error instead.
func OpenPostgres(dsn string) (*sql.DB, error) {
	return sql.Open("pgx", dsn)
}
