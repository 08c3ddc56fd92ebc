package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Table names, in the order Copy writes them: each after those it references.
const (
	TableProjects    = "projects"
	TableTokens      = "tokens"
	TableUsageEvents = "usage_events"
	TableUsageDaily  = "usage_daily"
	TableAuditEvents = "audit_events"
)

// DefaultCopyBatchSize is the number of rows Copy reads and writes at a time.
const DefaultCopyBatchSize = 1000

// DumpParams pages a whole table in ascending id order. Unlike listings,
// Limit is not capped: it is the copy's batch size.
type DumpParams struct {
	AfterID int64 // 0: from the start
	Limit   int   // 0 or less: DefaultCopyBatchSize
}

// MaxRows is the page size to query.
func (p *DumpParams) MaxRows() int64 { return dumpLimit(p.Limit) }

// UsageDailyDumpParams pages usage_daily, which has no id, in key order.
type UsageDailyDumpParams struct {
	After UsageDailyKey // the key of the previous page's last row; zero: from the start
	Limit int           // 0 or less: DefaultCopyBatchSize
}

// MaxRows is the page size to query.
func (p *UsageDailyDumpParams) MaxRows() int64 { return dumpLimit(p.Limit) }

func dumpLimit(limit int) int64 {
	if limit <= 0 {
		return DefaultCopyBatchSize
	}
	return int64(limit)
}

// Dumper reads whole tables, rows exactly as stored, for db copy and export:
// a Store is one.
type Dumper interface {
	ProjectDump(ctx context.Context, params *DumpParams) ([]*Project, error)
	TokenDump(ctx context.Context, params *DumpParams) ([]*Token, error)
	UsageDump(ctx context.Context, params *DumpParams) ([]*UsageEvent, error)
	UsageDailyDump(ctx context.Context, params *UsageDailyDumpParams) ([]*UsageDaily, error)
	AuditDump(ctx context.Context, params *DumpParams) ([]*AuditEvent, error)
	// TableCounts returns the number of rows of every table, keyed by table name.
	TableCounts(ctx context.Context) (map[string]int64, error)
}

// Loader writes rows exactly as given, ids and times included (SQLite keeps
// milliseconds). Each call writes all of its rows or none. A Store is one,
// and so is the stream Export writes.
type Loader interface {
	ProjectInsertFullMany(ctx context.Context, rows []*Project) error
	TokenInsertFullMany(ctx context.Context, rows []*Token) error
	UsageInsertFullMany(ctx context.Context, rows []*UsageEvent) error
	UsageDailyInsertFullMany(ctx context.Context, rows []*UsageDaily) error
	AuditInsertFullMany(ctx context.Context, rows []*AuditEvent) error
}

// ErrTargetNotEmpty refuses to copy or import into a database that has rows.
var ErrTargetNotEmpty = errors.New("target database is not empty")

// VerifyError reports a table whose copy does not match its source.
type VerifyError struct {
	Table  string
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("verify %s: %s", e.Table, e.Reason)
}

// CopyOptions tune Copy, Export and Import.
type CopyOptions struct {
	BatchSize int // rows per read and per write transaction; 0: DefaultCopyBatchSize
	// Force empties a non-empty target (TableTruncateAll) instead of refusing it.
	Force bool
	// Progress, when set, is called as each table advances.
	Progress func(CopyProgress)
}

// CopyPhase is what a copy is doing to a table.
type CopyPhase string

const (
	PhaseCopy        CopyPhase = "copy"         // reading the source, writing the target
	PhaseCheckTarget CopyPhase = "check target" // reading the target back
	PhaseCheckSource CopyPhase = "check source" // reading the source again
	PhaseChecksum    CopyPhase = "checksum"     // Checksums reading a database
)

// CopyProgress is where a copy stands in one table.
type CopyProgress struct {
	Phase CopyPhase
	Table string
	Rows  int64 // rows done so far
	Total int64 // rows the table has; -1 when unknown (an import stream)
	Done  bool  // the table is finished
}

// TableReport describes one table as copied, exported or imported.
type TableReport struct {
	Table string
	Rows  int64
	// Checksum is the hex SHA-256 of every row's fields in key order, times
	// truncated to milliseconds and JSON in a canonical form, so it is the
	// same on every backend.
	Checksum string
	// NextID is the id the target generates next (Copy and Import only);
	// 0 for usage_daily, which has no id.
	NextID int64
}

// Copy copies every table of src into dst, in batches of opts.BatchSize, each
// batch in a transaction, keeping ids and times. dst must be empty unless
// opts.Force. Afterwards dst's id sequences follow the copied ids, and
// both databases are read back: the row counts and checksums of each table
// must equal those of the rows copied, else the error is a *VerifyError
// naming the table (for the source: it was written to during the copy).
func Copy(ctx context.Context, src Dumper, dst Store, opts CopyOptions) ([]TableReport, error) {
	totals, err := src.TableCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("source: count rows: %w", err)
	}
	reports, err := load(ctx, src, totals, dst, opts)
	if err != nil {
		return nil, err
	}
	if err := verifyUnchanged(ctx, src, reports, opts); err != nil {
		return nil, err
	}
	return reports, nil
}

// Export writes every row of src to w as JSON lines, one object per row:
// {"table": "projects", "row": {column: value, ...}}, tables in copy order
// and rows in id order. src is read back at the end: if it changed during
// the export, the error is a *VerifyError.
func Export(ctx context.Context, src Dumper, w io.Writer, opts CopyOptions) ([]TableReport, error) {
	totals, err := src.TableCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("count rows: %w", err)
	}
	out := newJSONLinesWriter(w)
	reports, err := copyTables(ctx, src, totals, out, opts)
	if err != nil {
		return nil, err
	}
	if err := out.flush(); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if err := verifyUnchanged(ctx, src, reports, opts); err != nil {
		return nil, err
	}
	return reports, nil
}

// Import loads the JSON lines Export writes into dst, like Copy: dst must be
// empty unless opts.Force, and it is verified against the rows read.
func Import(ctx context.Context, r io.Reader, dst Store, opts CopyOptions) ([]TableReport, error) {
	return load(ctx, newJSONLinesReader(r), nil, dst, opts)
}

// Checksums reads every table of src and returns its row count and checksum.
func Checksums(ctx context.Context, src Dumper, opts CopyOptions) ([]TableReport, error) {
	totals, err := src.TableCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("count rows: %w", err)
	}
	return checksums(ctx, src, totals, PhaseChecksum, opts)
}

func checksums(ctx context.Context, src rowSource, totals map[string]int64, phase CopyPhase, opts CopyOptions) ([]TableReport, error) {
	reports := make([]TableReport, 0, len(tables))
	for _, t := range tables {
		sum, err := t.copy(ctx, src, nil, phase, totals[t.name()], opts)
		if err != nil {
			return nil, err
		}
		reports = append(reports, sum.report(t.name()))
	}
	return reports, nil
}

// rowSource is what a copy reads: a database or an import stream.
type rowSource interface {
	ProjectDump(ctx context.Context, params *DumpParams) ([]*Project, error)
	TokenDump(ctx context.Context, params *DumpParams) ([]*Token, error)
	UsageDump(ctx context.Context, params *DumpParams) ([]*UsageEvent, error)
	UsageDailyDump(ctx context.Context, params *UsageDailyDumpParams) ([]*UsageDaily, error)
	AuditDump(ctx context.Context, params *DumpParams) ([]*AuditEvent, error)
}

// load empties dst if allowed, copies src into it, resets its sequences and
// verifies it against what was copied.
func load(ctx context.Context, src rowSource, totals map[string]int64, dst Store, opts CopyOptions) ([]TableReport, error) {
	counts, err := dst.TableCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("target: count rows: %w", err)
	}
	if nonEmpty := describeCounts(counts); nonEmpty != "" {
		if !opts.Force {
			return nil, fmt.Errorf("%w (%s)", ErrTargetNotEmpty, nonEmpty)
		}
		if err := dst.TableTruncateAll(ctx); err != nil {
			return nil, fmt.Errorf("target: empty tables: %w", err)
		}
	}
	reports, err := copyTables(ctx, src, totals, dst, opts)
	if err != nil {
		return nil, err
	}
	next, err := dst.TableSequencesReset(ctx)
	if err != nil {
		return nil, fmt.Errorf("target: reset id sequences: %w", err)
	}
	for i := range reports {
		reports[i].NextID = next[reports[i].Table]
	}

	if counts, err = dst.TableCounts(ctx); err != nil {
		return nil, fmt.Errorf("target: count rows: %w", err)
	}
	for _, r := range reports {
		if counts[r.Table] != r.Rows {
			return nil, &VerifyError{Table: r.Table, Reason: fmt.Sprintf("target has %d rows, %d were copied", counts[r.Table], r.Rows)}
		}
	}
	readBack, err := checksums(ctx, dst, counts, PhaseCheckTarget, opts)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if err := compare(reports, readBack, "target"); err != nil {
		return nil, err
	}
	return reports, nil
}

// verifyUnchanged reads src again and compares it with what was copied.
func verifyUnchanged(ctx context.Context, src Dumper, copied []TableReport, opts CopyOptions) error {
	totals, err := src.TableCounts(ctx)
	if err != nil {
		return fmt.Errorf("source: count rows: %w", err)
	}
	now, err := checksums(ctx, src, totals, PhaseCheckSource, opts)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if err := compare(copied, now, "source"); err != nil {
		return fmt.Errorf("%w (was it written to meanwhile? stop llmproxy and start over)", err)
	}
	return nil
}

func compare(copied, readBack []TableReport, side string) error {
	for i, c := range copied {
		r := readBack[i]
		switch {
		case r.Rows != c.Rows:
			return &VerifyError{Table: c.Table, Reason: fmt.Sprintf("%s has %d rows, %d were copied", side, r.Rows, c.Rows)}
		case r.Checksum != c.Checksum:
			return &VerifyError{Table: c.Table, Reason: fmt.Sprintf("%s checksum %s differs from the copied rows' %s", side, r.Checksum, c.Checksum)}
		}
	}
	return nil
}

// describeCounts lists the tables that have rows, "" when none has.
func describeCounts(counts map[string]int64) string {
	var parts []string
	for _, t := range tables {
		if n := counts[t.name()]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d rows", t.name(), n))
		}
	}
	return strings.Join(parts, ", ")
}

// copyTables copies every table from src to dst, computing each checksum
// from the rows as read.
func copyTables(ctx context.Context, src rowSource, totals map[string]int64, dst Loader, opts CopyOptions) ([]TableReport, error) {
	reports := make([]TableReport, 0, len(tables))
	for _, t := range tables {
		total := int64(-1)
		if totals != nil {
			total = totals[t.name()]
		}
		sum, err := t.copy(ctx, src, dst, PhaseCopy, total, opts)
		if err != nil {
			return nil, err
		}
		reports = append(reports, sum.report(t.name()))
	}
	return reports, nil
}
