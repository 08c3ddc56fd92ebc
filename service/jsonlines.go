package service

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"time"
)

// The rows of an export, keyed by column name. Each has the fields of its
// domain type, so converting between the two fails to compile if they drift.
type (
	projectLine struct {
		ID               int64     `json:"id"`
		Name             string    `json:"name"`
		APIKeyCiphertext []byte    `json:"api_key_ciphertext"` // base64
		APIKeyHint       string    `json:"api_key_hint"`
		IsActive         bool      `json:"is_active"`
		CreatedAt        time.Time `json:"created_at"`
		UpdatedAt        time.Time `json:"updated_at"`
	}
	tokenLine struct {
		ID           int64      `json:"id"`
		ProjectID    int64      `json:"project_id"`
		SecretHash   []byte     `json:"secret_hash"` // base64
		TokenPrefix  string     `json:"token_prefix"`
		ExpiresAt    time.Time  `json:"expires_at"`
		MaxRequests  *int64     `json:"max_requests"`
		RequestCount int64      `json:"request_count"`
		IsActive     bool       `json:"is_active"`
		CreatedAt    time.Time  `json:"created_at"`
		UpdatedAt    time.Time  `json:"updated_at"`
		LastUsedAt   *time.Time `json:"last_used_at"`
		// Added after the first release: exports made before may lack it.
		RequestsReserved int64      `json:"requests_reserved" optional:"true"`
		LeaseUntil       *time.Time `json:"lease_until" optional:"true"`
	}
	usageLine struct {
		ID               int64     `json:"id"`
		TokenID          int64     `json:"token_id"`
		ProjectID        int64     `json:"project_id"`
		Method           string    `json:"method"`
		Path             string    `json:"path"`
		Model            string    `json:"model"`
		Status           int64     `json:"status"`
		PromptTokens     int64     `json:"prompt_tokens"`
		CompletionTokens int64     `json:"completion_tokens"`
		TotalTokens      int64     `json:"total_tokens"`
		LatencyMS        int64     `json:"latency_ms"`
		CreatedAt        time.Time `json:"created_at"`
		EventID          []byte    `json:"event_id"`
	}
	usageDailyLine struct {
		Day              time.Time `json:"day"`
		ProjectID        int64     `json:"project_id"`
		TokenID          int64     `json:"token_id"`
		Model            string    `json:"model"`
		Requests         int64     `json:"requests"`
		Errors           int64     `json:"errors"`
		PromptTokens     int64     `json:"prompt_tokens"`
		CompletionTokens int64     `json:"completion_tokens"`
		TotalTokens      int64     `json:"total_tokens"`
	}
	auditLine struct {
		ID        int64           `json:"id"`
		Actor     string          `json:"actor"`
		Action    string          `json:"action"`
		ProjectID *int64          `json:"project_id"`
		TokenID   *int64          `json:"token_id"`
		Result    string          `json:"result"`
		Details   json.RawMessage `json:"details"`
		CreatedAt time.Time       `json:"created_at"`
	}
)

// line is one line of an export.
type line struct {
	Table string          `json:"table"`
	Row   json.RawMessage `json:"row"`
}

// jsonLinesWriter is the Loader Export writes to.
type jsonLinesWriter struct {
	w   *bufio.Writer
	enc *json.Encoder
}

func newJSONLinesWriter(w io.Writer) *jsonLinesWriter {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	return &jsonLinesWriter{w: bw, enc: enc}
}

func (j *jsonLinesWriter) flush() error { return j.w.Flush() }

func (j *jsonLinesWriter) ProjectInsertFullMany(_ context.Context, rows []*Project) error {
	return writeLines(j, TableProjects, rows, func(r *Project) any { return (*projectLine)(r) })
}

func (j *jsonLinesWriter) TokenInsertFullMany(_ context.Context, rows []*Token) error {
	return writeLines(j, TableTokens, rows, func(r *Token) any { return (*tokenLine)(r) })
}

func (j *jsonLinesWriter) UsageInsertFullMany(_ context.Context, rows []*UsageEvent) error {
	return writeLines(j, TableUsageEvents, rows, func(r *UsageEvent) any { return (*usageLine)(r) })
}

func (j *jsonLinesWriter) UsageDailyInsertFullMany(_ context.Context, rows []*UsageDaily) error {
	return writeLines(j, TableUsageDaily, rows, func(r *UsageDaily) any { return (*usageDailyLine)(r) })
}

func (j *jsonLinesWriter) AuditInsertFullMany(_ context.Context, rows []*AuditEvent) error {
	return writeLines(j, TableAuditEvents, rows, func(r *AuditEvent) any { return (*auditLine)(r) })
}

func writeLines[T any](j *jsonLinesWriter, table string, rows []*T, toLine func(*T) any) error {
	for _, r := range rows {
		err := j.enc.Encode(struct {
			Table string `json:"table"`
			Row   any    `json:"row"`
		}{table, toLine(r)})
		if err != nil {
			return err
		}
	}
	return nil
}

// jsonLinesReader is the source Import reads: it serves each table's rows
// in the order they come, so an export must list the tables in copy order
// and each table's rows in ascending key order (id; usage_daily's primary
// key), as Export writes them.
type jsonLinesReader struct {
	r       *bufio.Reader
	lineNo  int
	next    *line // read but not yet served: the first row of a later table
	nextNo  int
	current int // index in tables of the table being served
	last    any // the last row served from it, a *T; nil: none yet
	eof     bool
}

func newJSONLinesReader(r io.Reader) *jsonLinesReader {
	return &jsonLinesReader{r: bufio.NewReaderSize(r, 1<<16)}
}

func (j *jsonLinesReader) ProjectDump(ctx context.Context, p *DumpParams) ([]*Project, error) {
	return readLines(ctx, j, TableProjects, p.MaxRows(), func(l *projectLine) *Project { return (*Project)(l) })
}

func (j *jsonLinesReader) TokenDump(ctx context.Context, p *DumpParams) ([]*Token, error) {
	return readLines(ctx, j, TableTokens, p.MaxRows(), func(l *tokenLine) *Token { return (*Token)(l) })
}

func (j *jsonLinesReader) UsageDump(ctx context.Context, p *DumpParams) ([]*UsageEvent, error) {
	return readLines(ctx, j, TableUsageEvents, p.MaxRows(), func(l *usageLine) *UsageEvent { return (*UsageEvent)(l) })
}

func (j *jsonLinesReader) UsageDailyDump(ctx context.Context, p *UsageDailyDumpParams) ([]*UsageDaily, error) {
	return readLines(ctx, j, TableUsageDaily, p.MaxRows(), func(l *usageDailyLine) *UsageDaily { return (*UsageDaily)(l) })
}

func (j *jsonLinesReader) AuditDump(ctx context.Context, p *DumpParams) ([]*AuditEvent, error) {
	return readLines(ctx, j, TableAuditEvents, p.MaxRows(), func(l *auditLine) *AuditEvent { return (*AuditEvent)(l) })
}

// readLines returns the next rows of table, at most limit, and none once a
// line of a later table or the end of the stream comes. Each row's key must
// be above the one before and, like the first page of a dump, above the
// zero key (id 0).
func readLines[L, T any](ctx context.Context, j *jsonLinesReader, name string, limit int64, convert func(*L) *T) ([]*T, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	want := slices.IndexFunc(tables, func(t tableCopier) bool { return t.name() == name })
	t := tables[want].(*table[T])
	if want != j.current {
		j.current, j.last = want, nil
	}
	columns := columnsOf[L]()
	var rows []*T
	for int64(len(rows)) < limit {
		l, no, err := j.peek()
		if err != nil || l == nil {
			return rows, err
		}
		index := slices.IndexFunc(tables, func(t tableCopier) bool { return t.name() == l.Table })
		switch {
		case index < 0:
			return nil, fmt.Errorf("line %d: unknown table %q", no, l.Table)
		case index < want:
			return nil, fmt.Errorf("line %d: a %s row after the %s rows: tables must come in the order %s", no, l.Table, name, tableOrder())
		case index > want:
			return rows, nil
		}
		j.next = nil
		var row L
		if err := decodeRow(l.Row, columns, &row); err != nil {
			return nil, fmt.Errorf("line %d: %s row: %w", no, name, err)
		}
		r := convert(&row)
		prev, _ := j.last.(*T)
		if prev == nil {
			prev = new(T)
		}
		if t.compare(r, prev) <= 0 {
			return nil, fmt.Errorf("line %d: %s %s after %s: rows must come in ascending order", no, name, t.describe(r), t.describe(prev))
		}
		last := *r // dst may change r
		j.last = &last
		rows = append(rows, r)
	}
	return rows, nil
}

// peek returns the next line without consuming it (nil at the end) and its number.
func (j *jsonLinesReader) peek() (*line, int, error) {
	for j.next == nil && !j.eof {
		text, err := j.r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			j.eof = true
		} else if err != nil {
			return nil, 0, err
		}
		j.lineNo++
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		var l line
		if err := decodeRow(text, rowKeys{required: []string{"table", "row"}}, &l); err != nil {
			return nil, 0, fmt.Errorf("line %d: %w", j.lineNo, err)
		}
		j.next, j.nextNo = &l, j.lineNo
	}
	return j.next, j.nextNo, nil
}

// decodeRow decodes the JSON object data into v, which must have exactly
// the given keys, but for optional ones: a missing column would otherwise
// load as a zero value.
func decodeRow(data []byte, keys rowKeys, v any) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return err
	}
	if fields == nil {
		return errors.New("want an object, got null")
	}
	for _, k := range keys.required {
		if _, ok := fields[k]; !ok {
			return fmt.Errorf("no %q", k)
		}
	}
	for k := range fields {
		if !slices.Contains(keys.required, k) && !slices.Contains(keys.optional, k) {
			return fmt.Errorf("unknown field %q", k)
		}
	}
	return json.Unmarshal(data, v)
}

// rowKeys are the keys of a row's JSON object; optional ones are columns
// added later, which older exports lack, loaded as their zero value.
type rowKeys struct{ required, optional []string }

// columnsOf returns the JSON keys of the struct type L; a field tagged
// optional:"true" is optional.
func columnsOf[L any]() rowKeys {
	t := reflect.TypeFor[L]()
	var keys rowKeys
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if t.Field(i).Tag.Get("optional") == "true" {
			keys.optional = append(keys.optional, key)
		} else {
			keys.required = append(keys.required, key)
		}
	}
	return keys
}

func tableOrder() string {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.name()
	}
	return fmt.Sprint(names)
}
