//go:build nopostgres

package migrate

import (
	"database/sql"
	"errors"
)

// errNoPostgres says how to get a build that can open Postgres.
var errNoPostgres = errors.New("this llmproxy was built with -tags nopostgres and has no PostgreSQL support; " +
	"use the standard build (go build ./cmd/llmproxy) or the container image")

// OpenPostgres always fails: this build leaves the pgx driver out.
func OpenPostgres(string) (*sql.DB, error) {
	return nil, errNoPostgres
}
