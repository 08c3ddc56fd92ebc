// Package schema holds each dialect's desired schema (schema.sql, read by
// sqlc and by `llmproxy migrate diff`) and its versioned migrations.
package schema

import "embed"

// FS holds <dialect>/schema.sql and <dialect>/migrations/ (files and atlas.sum)
// for the sqlite and postgres dialects.
//
//go:embed sqlite/schema.sql sqlite/migrations postgres/schema.sql postgres/migrations
var FS embed.FS
