// Package migrate applies, inspects, plans and lints llmproxy's versioned
// schema migrations with the ariga.io/atlas library. The files live in
// schema/<dialect>/migrations in atlas's format and are embedded in the binary.
package migrate

import (
	"fmt"
	"io/fs"
	"path"

	atlas "ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/postgres"
	atlasschema "ariga.io/atlas/sql/schema"
	"ariga.io/atlas/sql/sqlite"

	llmschema "github.com/llmproxy/llmproxy/schema"
)

// Dialect names a database engine; each has its own schema and migrations.
type Dialect string

// Supported dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Dialects lists every supported dialect in the order commands visit them.
var Dialects = []Dialect{SQLite, Postgres}

// ParseDialect accepts "sqlite" or "postgres".
func ParseDialect(s string) (Dialect, error) {
	for _, d := range Dialects {
		if string(d) == s {
			return d, nil
		}
	}
	return "", fmt.Errorf("unknown dialect %q: want %q or %q", s, SQLite, Postgres)
}

// driver returns atlas's driver for d over conn (a *sql.DB or *sql.Tx).
func (d Dialect) driver(conn atlasschema.ExecQuerier) (atlas.Driver, error) {
	switch d {
	case SQLite:
		return sqlite.Open(conn)
	case Postgres:
		return postgres.Open(conn)
	default:
		return nil, fmt.Errorf("unknown dialect %q", d)
	}
}

// EmbeddedDir returns the migration directory of d compiled into the binary.
func EmbeddedDir(d Dialect) (atlas.Dir, error) {
	if _, err := ParseDialect(string(d)); err != nil {
		return nil, err
	}
	root := path.Join(string(d), "migrations")
	entries, err := fs.ReadDir(llmschema.FS, root)
	if err != nil {
		return nil, err
	}
	dir := &atlas.MemDir{}
	for _, e := range entries {
		b, err := fs.ReadFile(llmschema.FS, path.Join(root, e.Name()))
		if err != nil {
			return nil, err
		}
		if err := dir.WriteFile(e.Name(), b); err != nil {
			return nil, err
		}
	}
	return dir, nil
}

// Fingerprint identifies the embedded migrations of d (atlas.sum's total
// hash): a database built from one fingerprint can be reused as a template.
func Fingerprint(d Dialect) (string, error) {
	dir, err := EmbeddedDir(d)
	if err != nil {
		return "", err
	}
	if err := atlas.Validate(dir); err != nil {
		return "", fmt.Errorf("%s migrations: %w", d, err)
	}
	sum, err := dir.Checksum()
	if err != nil {
		return "", err
	}
	return sum.Sum(), nil
}
