package migrate

import (
	"context"
	"database/sql"
	"time"

	atlas "ariga.io/atlas/sql/migrate"
)

// Revision is a migration file as the database recorded it.
type Revision struct {
	Version       string
	Description   string
	ExecutedAt    time.Time // UTC
	ExecutionTime time.Duration
	Error         string // why the last attempt failed; "" once applied
}

// StatusReport is where a database stands against the embedded migrations.
type StatusReport struct {
	Current string     // version of the last applied migration; "" when none
	Applied []Revision // oldest first, including a failed attempt
	Pending []string   // files not applied yet, oldest first
}

// Status reads the revision table of db without changing anything. It fails
// like Apply on a database newer than the binary or with edited files.
func Status(ctx context.Context, db *sql.DB, d Dialect) (*StatusReport, error) {
	dir, err := EmbeddedDir(d)
	if err != nil {
		return nil, err
	}
	return StatusDir(ctx, db, d, dir)
}

// StatusDir is Status with the migrations of dir.
func StatusDir(ctx context.Context, db *sql.DB, d Dialect, dir atlas.Dir) (*StatusReport, error) {
	schemaName, err := currentSchema(ctx, db, d)
	if err != nil {
		return nil, err
	}
	history, err := newRevisions(db, d, schemaName).readIfExists(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkHistory(history, dir); err != nil {
		return nil, err
	}
	files, err := dir.Files()
	if err != nil {
		return nil, err
	}
	report := &StatusReport{}
	done := make(map[string]bool, len(history))
	for _, rev := range history {
		report.Applied = append(report.Applied, Revision{
			Version:       rev.Version,
			Description:   rev.Description,
			ExecutedAt:    rev.ExecutedAt,
			ExecutionTime: rev.ExecutionTime,
			Error:         rev.Error,
		})
		if complete(rev) {
			done[rev.Version] = true
			report.Current = rev.Version
		}
	}
	for _, f := range files {
		if !done[f.Version()] {
			report.Pending = append(report.Pending, f.Name())
		}
	}
	return report, nil
}
