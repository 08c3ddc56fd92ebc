package service

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"reflect"
	"time"
)

// tables are copied in this order: each after the tables it references.
var tables = []tableCopier{
	byID(TableProjects, func(r *Project) int64 { return r.ID }, rowSource.ProjectDump, Loader.ProjectInsertFullMany),
	byID(TableTokens, func(r *Token) int64 { return r.ID }, rowSource.TokenDump, Loader.TokenInsertFullMany),
	byID(TableUsageEvents, func(r *UsageEvent) int64 { return r.ID }, rowSource.UsageDump, Loader.UsageInsertFullMany),
	&table[UsageDaily]{
		table: TableUsageDaily,
		dump: func(src rowSource, ctx context.Context, after *UsageDaily, limit int) ([]*UsageDaily, error) {
			p := &UsageDailyDumpParams{Limit: limit}
			if after != nil {
				p.After = after.Key()
			}
			return src.UsageDailyDump(ctx, p)
		},
		insert:  Loader.UsageDailyInsertFullMany,
		compare: func(a, b *UsageDaily) int { return a.Key().Compare(b.Key()) },
		describe: func(r *UsageDaily) string {
			return fmt.Sprintf("key (%s, %d, %d, %q)", r.Day.Format(time.DateOnly), r.ProjectID, r.TokenID, r.Model)
		},
	},
	byID(TableAuditEvents, func(r *AuditEvent) int64 { return r.ID }, rowSource.AuditDump, Loader.AuditInsertFullMany),
}

// tableCopier copies one table, whatever its row type.
type tableCopier interface {
	name() string
	// copy reads every row of the table from src in key order, writes each
	// batch to dst (unless dst is nil: then it only sums) and returns the
	// count and checksum of the rows read.
	copy(ctx context.Context, src rowSource, dst Loader, phase CopyPhase, total int64, opts CopyOptions) (*tableSum, error)
}

// table is a tableCopier for rows of type T, read in pages that each start
// after the last row of the one before.
type table[T any] struct {
	table string
	// dump reads the next page of at most limit rows after the row after
	// (nil: from the start).
	dump   func(src rowSource, ctx context.Context, after *T, limit int) ([]*T, error)
	insert func(Loader, context.Context, []*T) error
	// compare orders rows by key, the order dump reads them in.
	compare func(a, b *T) int
	// describe names a row by its key, for errors.
	describe func(*T) string
}

// byID is the table of rows keyed by an id, paged with DumpParams.
func byID[T any](name string, id func(*T) int64, dump func(rowSource, context.Context, *DumpParams) ([]*T, error), insert func(Loader, context.Context, []*T) error) *table[T] {
	return &table[T]{
		table: name,
		dump: func(src rowSource, ctx context.Context, after *T, limit int) ([]*T, error) {
			p := &DumpParams{Limit: limit}
			if after != nil {
				p.AfterID = id(after)
			}
			return dump(src, ctx, p)
		},
		insert:   insert,
		compare:  func(a, b *T) int { return cmp.Compare(id(a), id(b)) },
		describe: func(r *T) string { return fmt.Sprintf("id %d", id(r)) },
	}
}

func (t *table[T]) name() string { return t.table }

func (t *table[T]) copy(ctx context.Context, src rowSource, dst Loader, phase CopyPhase, total int64, opts CopyOptions) (*tableSum, error) {
	batch := int(dumpLimit(opts.BatchSize))
	var last *T // of the previous page
	sum := newTableSum()
	report := func(done bool) {
		if opts.Progress != nil {
			opts.Progress(CopyProgress{Phase: phase, Table: t.table, Rows: sum.rows, Total: total, Done: done})
		}
	}
	report(false)
	for {
		rows, err := t.dump(src, ctx, last, batch)
		if err != nil {
			after := "from the start"
			if last != nil {
				after = "after " + t.describe(last)
			}
			return nil, fmt.Errorf("%s: read rows %s: %w", t.table, after, err)
		}
		if len(rows) > 0 {
			// Summed and kept before dst sees them, so that nothing dst does
			// to them can reach the checksum it is verified against or the
			// key the next page starts after.
			for _, r := range rows {
				sum.add(r)
			}
			end := *rows[len(rows)-1]
			if dst != nil {
				if err := t.insert(dst, ctx, rows); err != nil {
					return nil, fmt.Errorf("%s: write rows %s to %s: %w", t.table, t.describe(rows[0]), t.describe(&end), err)
				}
			}
			last = &end
		}
		if len(rows) < batch {
			break
		}
		report(false)
	}
	report(true)
	return sum, nil
}

// tableSum counts rows and hashes their canonical encoding.
type tableSum struct {
	rows int64
	hash hash.Hash
	buf  []byte
}

func newTableSum() *tableSum { return &tableSum{hash: sha256.New()} }

func (s *tableSum) add(row any) {
	s.buf = appendCanonical(s.buf[:0], reflect.ValueOf(row).Elem())
	s.hash.Write(s.buf)
	s.rows++
}

func (s *tableSum) report(table string) TableReport {
	return TableReport{Table: table, Rows: s.rows, Checksum: hex.EncodeToString(s.hash.Sum(nil))}
}

var (
	timeType    = reflect.TypeFor[time.Time]()
	rawJSONType = reflect.TypeFor[json.RawMessage]()
)

// appendCanonical encodes every field of the struct v, in order, so that
// the same row reads the same from every backend: each field starts with a
// tag byte, strings and bytes carry their length, times are UTC unix
// milliseconds (SQLite's precision) and JSON is re-encoded with sorted keys
// (Postgres jsonb reorders keys and drops spaces). It works on the fields
// themselves, so a column added to a domain type is checked too; a field
// of a type it does not know is a bug and panics.
func appendCanonical(buf []byte, v reflect.Value) []byte {
	for i := range v.NumField() {
		buf = appendField(buf, v.Field(i))
	}
	return buf
}

func appendField(buf []byte, f reflect.Value) []byte {
	switch {
	case f.Type() == timeType:
		t := f.Interface().(time.Time)
		return binary.BigEndian.AppendUint64(append(buf, 't'), uint64(t.UnixMilli()))
	case f.Type() == rawJSONType:
		return appendBytes(append(buf, 'j'), canonicalJSON(f.Bytes()))
	}
	switch f.Kind() {
	case reflect.Pointer:
		if f.IsNil() {
			return append(buf, 'n')
		}
		return appendField(append(buf, 'p'), f.Elem())
	case reflect.Int64:
		return binary.BigEndian.AppendUint64(append(buf, 'i'), uint64(f.Int()))
	case reflect.Bool:
		if f.Bool() {
			return append(buf, 'T')
		}
		return append(buf, 'F')
	case reflect.String:
		return appendBytes(append(buf, 's'), []byte(f.String()))
	case reflect.Slice:
		if f.Type().Elem().Kind() == reflect.Uint8 {
			return appendBytes(append(buf, 'b'), f.Bytes())
		}
	}
	panic(fmt.Sprintf("service: checksum of a %s field is not defined", f.Type()))
}

func appendBytes(buf, b []byte) []byte {
	return append(binary.AppendUvarint(buf, uint64(len(b))), b...)
}

// canonicalJSON re-encodes a JSON document with sorted keys, no spaces and
// its numbers as written; text that is not JSON is returned as it is.
func canonicalJSON(doc []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return doc
	}
	out, err := json.Marshal(v)
	if err != nil {
		return doc
	}
	return out
}
