//go:build !nopostgres

package main

// The standard build supports PostgreSQL; building with -tags nopostgres
// leaves this file, and with it pgx, out of the binary.
import _ "github.com/llmproxy/llmproxy/service/pgstore"
