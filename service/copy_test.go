package service_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/migrate"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/pgstore"
	"github.com/llmproxy/llmproxy/service/sqlitestore"
)

type backend struct {
	name string
	open func(t *testing.T) service.Store
}

var backends = []backend{
	{"SQLite", newSQLite},
	{"Postgres", newPostgres},
}

// directions are the copies between different backends, both ways.
var directions = []struct{ from, to backend }{
	{backends[0], backends[1]},
	{backends[1], backends[0]},
}

func newSQLite(t *testing.T) service.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), service.Config{SQLitePath: filepath.Join(t.TempDir(), "copy.db")})
	if err != nil {
		t.Fatalf("sqlitestore.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newPostgres(t *testing.T) service.Store {
	t.Helper()
	key, err := migrate.Fingerprint(migrate.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	url := pgtest.NewDatabaseFromTemplate(t, "copy-"+key, func(ctx context.Context, url string) error {
		connCfg, err := pgx.ParseConfig(url)
		if err != nil {
			return err
		}
		db := stdlib.OpenDB(*connCfg)
		defer db.Close()
		_, err = migrate.Apply(ctx, db, migrate.Postgres)
		return err
	})
	cfg := service.DefaultConfig()
	cfg.Driver, cfg.DatabaseURL = service.DriverPostgres, url
	s, err := pgstore.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("pgstore.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// fill puts rows in every table: NULLs and non-NULLs in every nullable
// column, non-ASCII text, JSON whose key order Postgres changes, and
// usageRows usage events, enough for several batches.
func fill(t *testing.T, s service.Store, usageRows int) map[string]int64 {
	t.Helper()
	ctx := t.Context()
	names := []string{"ascii", "Ünïcødé – 日本語 🚀", "inactive"}
	var projects []*service.Project
	for i, name := range names {
		p, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{
			Name: name, APIKeyCiphertext: []byte{0, byte(i), 0xff, '\n'}, APIKeyHint: "sk-…" + fmt.Sprint(i),
		})
		if err != nil {
			t.Fatalf("ProjectCreate: %v", err)
		}
		projects = append(projects, p)
	}
	limit := int64(10)
	var tokens []*service.Token
	for i, maxRequests := range []*int64{nil, &limit, nil} {
		tok, err := s.TokenCreate(ctx, &service.TokenCreateParams{
			ProjectID: projects[i%2].ID, SecretHash: []byte(fmt.Sprintf("hash-%d-\x00é", i)),
			TokenPrefix: fmt.Sprintf("sk-%d", i), ExpiresAt: time.Now().Add(time.Duration(i+1) * time.Hour), MaxRequests: maxRequests,
		})
		if err != nil {
			t.Fatalf("TokenCreate: %v", err)
		}
		tokens = append(tokens, tok)
	}
	if _, err := s.TokenAdmit(ctx, tokens[1].ID); err != nil { // sets last_used_at
		t.Fatalf("TokenAdmit: %v", err)
	}
	if _, _, err := s.TokenAdmitByHash(ctx, &service.TokenAdmitByHashParams{SecretHash: tokens[0].SecretHash, N: 1, Reserve: 3, Lease: service.MaxAdmissionLease}); err != nil { // holds a lease and its reservation
		t.Fatalf("TokenAdmitByHash: %v", err)
	}
	inactive := false
	if _, err := s.TokenUpdate(ctx, &service.TokenUpdateParams{ID: tokens[2].ID, IsActive: &inactive}); err != nil {
		t.Fatalf("TokenUpdate: %v", err)
	}
	if _, err := s.ProjectUpdate(ctx, &service.ProjectUpdateParams{ID: projects[2].ID, IsActive: &inactive}); err != nil {
		t.Fatalf("ProjectUpdate: %v", err)
	}

	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	events := make([]*service.UsageEventCreateParams, usageRows)
	for i := range events {
		tok := tokens[i%len(tokens)]
		events[i] = &service.UsageEventCreateParams{
			TokenID: tok.ID, ProjectID: tok.ProjectID, Method: "POST", Path: "/v1/chat/completions",
			Model: []string{"gpt-4o", "", "modèle-ü"}[i%3], Status: []int64{200, 429, 500}[i%3],
			PromptTokens: int64(i), CompletionTokens: int64(2 * i), TotalTokens: int64(3 * i), LatencyMS: int64(i % 997),
			CreatedAt: base.Add(time.Duration(i) * time.Second),
		}
		if i%2 == 0 { // the others are rows from before event ids
			events[i].EventID = binary.BigEndian.AppendUint64(make([]byte, 8), uint64(i))
		}
	}
	if _, err := s.UsageInsertBatch(ctx, events); err != nil {
		t.Fatalf("UsageInsertBatch: %v", err)
	}
	dailyRows := rollUp(t, s, tokens)

	projectID, tokenID := projects[1].ID, tokens[0].ID
	for _, a := range []service.AuditInsertParams{
		{Actor: "admin", Action: "project.create", ProjectID: &projectID, Result: "ok", Details: json.RawMessage(`{"name": "Ünïcødé", "b": 1, "a": [1, 2.50, {"z": null}]}`)},
		{Actor: "admin", Action: "token.create", ProjectID: &projectID, TokenID: &tokenID, Result: "ok"},
		{Actor: "anonymous", Action: "auth", Result: "denied", Details: json.RawMessage(`{"reason":"unknown token <sk-…>"}`)},
	} {
		if _, err := s.AuditInsert(ctx, &a); err != nil {
			t.Fatalf("AuditInsert: %v", err)
		}
	}
	return map[string]int64{
		service.TableProjects: 3, service.TableTokens: 3, service.TableUsageEvents: int64(usageRows),
		service.TableUsageDaily: dailyRows, service.TableAuditEvents: 3,
	}
}

// rollUp fills usage_daily the way llmproxy does, by pruning events of
// earlier days, and returns the number of rows it made. Its models sort
// differently bytewise and in most locales ("Z" < "a" < "é" bytewise).
func rollUp(t *testing.T, s service.Store, tokens []*service.Token) int64 {
	t.Helper()
	const days = 10
	models := []string{"gpt-4o", "", "modèle-ü", "Zeta"}
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var events []*service.UsageEventCreateParams
	for day := range days {
		for i, tok := range tokens {
			for j, model := range models {
				for k, status := range []int64{200, 503} {
					events = append(events, &service.UsageEventCreateParams{
						TokenID: tok.ID, ProjectID: tok.ProjectID, Method: "POST", Path: "/v1/chat/completions",
						Model: model, Status: status, PromptTokens: int64(day + i), CompletionTokens: int64(j), TotalTokens: int64(day + i + j),
						CreatedAt: start.AddDate(0, 0, day).Add(time.Duration(i*j+k) * time.Hour),
					})
				}
			}
		}
	}
	if _, err := s.UsageInsertBatch(t.Context(), events); err != nil {
		t.Fatalf("UsageInsertBatch: %v", err)
	}
	result, err := s.UsagePrune(t.Context(), &service.UsagePruneParams{Before: start.AddDate(0, 0, days)})
	if err != nil || result.Events != int64(len(events)) {
		t.Fatalf("UsagePrune = %+v, %v; want %d events rolled up", result, err, len(events))
	}
	return int64(days * len(tokens) * len(models))
}

func TestCopy(t *testing.T) {
	t.Parallel()
	for _, d := range directions {
		t.Run(d.from.name+"To"+d.to.name, func(t *testing.T) {
			t.Parallel()
			src, dst := d.from.open(t), d.to.open(t)
			want := fill(t, src, 5000)

			var progress []service.CopyProgress
			reports, err := service.Copy(t.Context(), src, dst, service.CopyOptions{
				BatchSize: 50, // usage_events takes 100 batches, usage_daily 3
				Progress:  func(p service.CopyProgress) { progress = append(progress, p) },
			})
			if err != nil {
				t.Fatalf("Copy: %v", err)
			}
			for _, r := range reports {
				if r.Rows != want[r.Table] {
					t.Errorf("%s: copied %d rows, want %d", r.Table, r.Rows, want[r.Table])
				}
			}
			assertSameChecksums(t, reports, checksums(t, src))
			assertSameChecksums(t, reports, checksums(t, dst))
			assertSameRows(t, src, dst)
			assertProgress(t, progress, want)
			assertFreshIDs(t, dst, reports, want)
		})
	}
}

func TestCopyRefusesNonEmptyTarget(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			src, dst := newSQLite(t), b.open(t)
			want := fill(t, src, 1200)
			if _, err := dst.ProjectCreate(t.Context(), &service.ProjectCreateParams{Name: "ascii", APIKeyCiphertext: []byte{1}, APIKeyHint: "x"}); err != nil {
				t.Fatal(err)
			}

			_, err := service.Copy(t.Context(), src, dst, service.CopyOptions{})
			if !errors.Is(err, service.ErrTargetNotEmpty) || !strings.Contains(err.Error(), "projects: 1 rows") {
				t.Fatalf("Copy into a non-empty database: %v, want ErrTargetNotEmpty naming projects", err)
			}
			if counts := tableCounts(t, dst); counts[service.TableProjects] != 1 || counts[service.TableUsageEvents] != 0 {
				t.Fatalf("refused copy changed the target: %v", counts)
			}

			// --force empties the target first: a second forced copy leaves the same rows, not twice as many.
			for range 2 {
				reports, err := service.Copy(t.Context(), src, dst, service.CopyOptions{Force: true})
				if err != nil {
					t.Fatalf("Copy with Force: %v", err)
				}
				assertSameChecksums(t, reports, checksums(t, dst))
			}
			if counts := tableCounts(t, dst); !reflect.DeepEqual(counts, want) {
				t.Fatalf("after forced copies the target has %v, want %v", counts, want)
			}
			assertSameRows(t, src, dst)
		})
	}
}

// lossyTarget loses the last usage event of every batch it is given.
type lossyTarget struct{ service.Store }

func (l lossyTarget) UsageInsertFullMany(ctx context.Context, rows []*service.UsageEvent) error {
	return l.Store.UsageInsertFullMany(ctx, rows[:len(rows)-1])
}

// alteringTarget changes the model of every usage event it writes.
type alteringTarget struct{ service.Store }

func (a alteringTarget) UsageInsertFullMany(ctx context.Context, rows []*service.UsageEvent) error {
	for _, r := range rows {
		r.Model += "!"
	}
	return a.Store.UsageInsertFullMany(ctx, rows)
}

// writtenSource is a source that is written to while it is copied: a token
// is revoked once its table has been read.
type writtenSource struct {
	service.Store
	t *testing.T
}

func (w writtenSource) UsageDump(ctx context.Context, p *service.DumpParams) ([]*service.UsageEvent, error) {
	if p.AfterID == 0 {
		inactive := false
		if _, err := w.TokenUpdate(ctx, &service.TokenUpdateParams{ID: 1, IsActive: &inactive}); err != nil {
			w.t.Errorf("TokenUpdate: %v", err)
		}
	}
	return w.Store.UsageDump(ctx, p)
}

func TestCopyVerifies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		copy    func(t *testing.T, src, dst service.Store) error
		table   string
		message string
	}{
		{"TargetMissesRows", func(t *testing.T, src, dst service.Store) error {
			_, err := service.Copy(t.Context(), src, lossyTarget{dst}, service.CopyOptions{})
			return err
		}, service.TableUsageEvents, "target has 1198 rows, 1200 were copied"},
		{"TargetDiffers", func(t *testing.T, src, dst service.Store) error {
			_, err := service.Copy(t.Context(), src, alteringTarget{dst}, service.CopyOptions{})
			return err
		}, service.TableUsageEvents, "target checksum"},
		{"SourceWrittenDuringCopy", func(t *testing.T, src, dst service.Store) error {
			_, err := service.Copy(t.Context(), writtenSource{src, t}, dst, service.CopyOptions{})
			return err
		}, service.TableTokens, "source checksum"},
		{"SourceWrittenDuringExport", func(t *testing.T, src, _ service.Store) error {
			_, err := service.Export(t.Context(), writtenSource{src, t}, &bytes.Buffer{}, service.CopyOptions{})
			return err
		}, service.TableTokens, "source checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, dst := newSQLite(t), newSQLite(t)
			fill(t, src, 1200)
			err := tc.copy(t, src, dst)
			var verr *service.VerifyError
			if !errors.As(err, &verr) || verr.Table != tc.table || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("got %v, want a VerifyError on %s saying %q", err, tc.table, tc.message)
			}
		})
	}
}

func TestExportImportRoundTrip(t *testing.T) {
	t.Parallel()
	for _, d := range directions {
		t.Run(d.from.name+"To"+d.to.name, func(t *testing.T) {
			t.Parallel()
			src, dst := d.from.open(t), d.to.open(t)
			want := fill(t, src, 2500)
			var export bytes.Buffer
			exported, err := service.Export(t.Context(), src, &export, service.CopyOptions{BatchSize: 999})
			if err != nil {
				t.Fatalf("Export: %v", err)
			}
			if lines := bytes.Count(export.Bytes(), []byte("\n")); lines != 3+3+2500+120+3 {
				t.Errorf("export has %d lines, want one per row", lines)
			}
			imported, err := service.Import(t.Context(), &export, dst, service.CopyOptions{BatchSize: 999})
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			assertSameChecksums(t, exported, imported)
			assertSameChecksums(t, exported, checksums(t, dst))
			assertSameRows(t, src, dst)
			assertFreshIDs(t, dst, imported, want)

			// The same rules as Copy: a second import is refused unless forced.
			if _, err := service.Import(t.Context(), strings.NewReader(""), dst, service.CopyOptions{}); !errors.Is(err, service.ErrTargetNotEmpty) {
				t.Fatalf("Import into a non-empty database: %v, want ErrTargetNotEmpty", err)
			}
			if _, err := service.Import(t.Context(), strings.NewReader(""), dst, service.CopyOptions{Force: true}); err != nil {
				t.Fatalf("forced Import of nothing: %v", err)
			}
			if counts := tableCounts(t, dst); counts[service.TableUsageEvents] != 0 {
				t.Fatalf("forced import of nothing left %v", counts)
			}
		})
	}
}

func TestExportFormat(t *testing.T) {
	t.Parallel()
	s := newSQLite(t)
	p, err := s.ProjectCreate(t.Context(), &service.ProjectCreateParams{Name: "é<&>", APIKeyCiphertext: []byte{0xff}, APIKeyHint: "h"})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := service.Export(t.Context(), s, &out, service.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"table":"projects","row":{"id":%d,"name":"é<&>","api_key_ciphertext":"/w==","api_key_hint":"h","is_active":true,"created_at":%q,"updated_at":%q}}`+"\n",
		p.ID, p.CreatedAt.Format(time.RFC3339Nano), p.UpdatedAt.Format(time.RFC3339Nano))
	if out.String() != want {
		t.Fatalf("export:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestImportRejectsBadInput(t *testing.T) {
	t.Parallel()
	project := `{"table":"projects","row":{"id":%d,"name":"p%d","api_key_ciphertext":"AQ==","api_key_hint":"h","is_active":true,"created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-01T00:00:00Z"}}`
	usage := `{"table":"usage_events","row":{"id":1,"token_id":1,"project_id":1,"method":"GET","path":"/","model":"","status":200,"prompt_tokens":0,"completion_tokens":0,"total_tokens":0,"latency_ms":0,"created_at":"2025-01-01T00:00:00Z","event_id":null}}`
	daily := `{"table":"usage_daily","row":{"day":%q,"project_id":1,"token_id":2,"model":%q,"requests":2,"errors":1,"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`
	for _, tc := range []struct {
		name, input, want string
	}{
		{"NotJSON", "{\n", "line 1: "},
		{"UnknownTable", `{"table":"users","row":{}}`, `line 1: unknown table "users"`},
		{"NoRow", `{"table":"projects"}`, `line 1: no "row"`},
		{"NullRow", `{"table":"projects","row":null}`, "line 1: projects row: want an object"},
		{"UnknownField", `{"table":"projects","row":{"id":1}, "extra":1}`, `line 1: unknown field "extra"`},
		{"MissingColumn", `{"table":"projects","row":{"id":1}}`, `line 1: projects row: no "name"`},
		{"UnknownColumn", strings.Replace(fmt.Sprintf(project, 1, 1), `"id"`, `"color":"red","id"`, 1), `line 1: projects row: unknown field "color"`},
		{"WrongType", strings.Replace(fmt.Sprintf(project, 1, 1), `"is_active":true`, `"is_active":"yes"`, 1), "line 1: projects row: json: cannot unmarshal"},
		{"IDsDescending", fmt.Sprintf(project, 2, 2) + "\n\n" + fmt.Sprintf(project, 1, 1), "line 3: projects id 1 after id 2"},
		{"TablesOutOfOrder", usage + "\n" + fmt.Sprintf(project, 1, 1), "line 2: a projects row after the usage_events rows"},
		{"TokensAfterUsage", usage + "\n" + `{"table":"tokens","row":{}}`, "line 2: a tokens row after the usage_events rows"},
		{"UsageDailyKeysDescending", fmt.Sprintf(daily, "2025-01-02T00:00:00Z", "b") + "\n" + fmt.Sprintf(daily, "2025-01-02T00:00:00Z", "a"),
			`line 2: usage_daily key (2025-01-02, 1, 2, "a") after key (2025-01-02, 1, 2, "b")`},
		{"UsageDailyDayNotMidnight", fmt.Sprintf(daily, "2025-01-02T05:00:00Z", "a"), `usage_daily: write rows key (2025-01-02, 1, 2, "a") to key (2025-01-02, 1, 2, "a"): violates a constraint`},
		{"UnknownProject", `{"table":"tokens","row":{"id":1,"project_id":99,"secret_hash":"AQ==","token_prefix":"sk","expires_at":"2025-01-01T00:00:00Z","max_requests":null,"request_count":0,"is_active":true,"created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-01T00:00:00Z","last_used_at":null}}`, "tokens: write rows id 1 to id 1: references a row that does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := service.Import(t.Context(), strings.NewReader(tc.input), newSQLite(t), service.CopyOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Import: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestImportReadsExportsMadeBeforeLaterColumns: a column added later
// (requests_reserved, lease_until) may be missing and loads as its zero value.
func TestImportReadsExportsMadeBeforeLaterColumns(t *testing.T) {
	t.Parallel()
	input := `{"table":"projects","row":{"id":1,"name":"p","api_key_ciphertext":"AQ==","api_key_hint":"h","is_active":true,"created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-01T00:00:00Z"}}
{"table":"tokens","row":{"id":1,"project_id":1,"secret_hash":"AQ==","token_prefix":"sk","expires_at":"2025-01-01T00:00:00Z","max_requests":null,"request_count":4,"is_active":true,"created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-01T00:00:00Z","last_used_at":null}}
`
	s := newSQLite(t)
	if _, err := service.Import(t.Context(), strings.NewReader(input), s, service.CopyOptions{}); err != nil {
		t.Fatalf("Import: %v", err)
	}
	tok, err := s.TokenGetByID(t.Context(), 1)
	if err != nil || tok.RequestCount != 4 || tok.RequestsReserved != 0 || tok.LeaseUntil != nil {
		t.Fatalf("imported token = %+v, %v; want RequestCount 4, RequestsReserved 0, no LeaseUntil", tok, err)
	}
}

// TestImportRefusesUsageDayNotMidnight: a day is a UTC midnight on both
// backends, which Postgres's date column alone would not say.
func TestImportRefusesUsageDayNotMidnight(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for _, day := range []string{"2025-01-02T05:00:00Z", "2025-01-02T00:00:00+01:00"} {
				line := fmt.Sprintf(`{"table":"usage_daily","row":{"day":%q,"project_id":1,"token_id":2,"model":"m","requests":1,"errors":0,"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}`, day)
				_, err := service.Import(t.Context(), strings.NewReader(line), b.open(t), service.CopyOptions{})
				if !errors.Is(err, service.ErrInvalid) {
					t.Errorf("Import of day %s: %v, want ErrInvalid", day, err)
				}
			}
		})
	}
}

func checksums(t *testing.T, s service.Dumper) []service.TableReport {
	t.Helper()
	reports, err := service.Checksums(t.Context(), s, service.CopyOptions{})
	if err != nil {
		t.Fatalf("Checksums: %v", err)
	}
	return reports
}

func tableCounts(t *testing.T, s service.Dumper) map[string]int64 {
	t.Helper()
	counts, err := s.TableCounts(t.Context())
	if err != nil {
		t.Fatalf("TableCounts: %v", err)
	}
	return counts
}

func assertSameChecksums(t *testing.T, want, got []service.TableReport) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%d tables, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Table != want[i].Table || got[i].Rows != want[i].Rows || got[i].Checksum != want[i].Checksum {
			t.Errorf("%s: %d rows, checksum %s; want %s: %d rows, checksum %s",
				got[i].Table, got[i].Rows, got[i].Checksum, want[i].Table, want[i].Rows, want[i].Checksum)
		}
	}
}

// assertSameRows compares every row of every table, field by field, times
// to the millisecond and JSON by value.
func assertSameRows(t *testing.T, a, b service.Dumper) {
	t.Helper()
	all := &service.DumpParams{Limit: 100_000}
	compareTable(t, a.ProjectDump, b.ProjectDump, all, func(r *service.Project) {
		r.CreatedAt, r.UpdatedAt = ms(r.CreatedAt), ms(r.UpdatedAt)
	})
	compareTable(t, a.TokenDump, b.TokenDump, all, func(r *service.Token) {
		r.ExpiresAt, r.CreatedAt, r.UpdatedAt = ms(r.ExpiresAt), ms(r.CreatedAt), ms(r.UpdatedAt)
		for _, at := range []*time.Time{r.LastUsedAt, r.LeaseUntil} {
			if at != nil {
				*at = ms(*at)
			}
		}
	})
	compareTable(t, a.UsageDump, b.UsageDump, all, func(r *service.UsageEvent) { r.CreatedAt = ms(r.CreatedAt) })
	compareTable(t, a.UsageDailyDump, b.UsageDailyDump, &service.UsageDailyDumpParams{Limit: 100_000}, func(*service.UsageDaily) {})
	compareTable(t, a.AuditDump, b.AuditDump, all, func(r *service.AuditEvent) {
		r.CreatedAt = ms(r.CreatedAt)
		var v any
		if err := json.Unmarshal(r.Details, &v); err != nil {
			t.Fatalf("audit %d details: %v", r.ID, err)
		}
		r.Details, _ = json.Marshal(v)
	})
}

func ms(t time.Time) time.Time { return t.Truncate(time.Millisecond) }

func compareTable[T, P any](t *testing.T, dumpA, dumpB func(context.Context, *P) ([]*T, error), params *P, normalize func(*T)) {
	t.Helper()
	rowsA, err := dumpA(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	rowsB, err := dumpB(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(rowsA) != len(rowsB) || len(rowsA) == 0 {
		t.Fatalf("%T: %d rows and %d rows", rowsA, len(rowsA), len(rowsB))
	}
	for i := range rowsA {
		normalize(rowsA[i])
		normalize(rowsB[i])
		if !reflect.DeepEqual(rowsA[i], rowsB[i]) {
			t.Fatalf("row %d differs:\n%+v\n%+v", i, *rowsA[i], *rowsB[i])
		}
	}
}

// assertProgress checks that every table reported, in every phase, rising
// counts that end at its total.
func assertProgress(t *testing.T, events []service.CopyProgress, wantCounts map[string]int64) {
	t.Helper()
	last := map[string]service.CopyProgress{}
	for _, p := range events {
		key := fmt.Sprint(p.Phase, p.Table)
		if prev, ok := last[key]; ok && (prev.Done || p.Rows < prev.Rows) {
			t.Fatalf("progress went from %+v to %+v", prev, p)
		}
		last[key] = p
	}
	for table, want := range wantCounts {
		for _, phase := range []service.CopyPhase{service.PhaseCopy, service.PhaseCheckTarget, service.PhaseCheckSource} {
			p := last[fmt.Sprint(phase, table)]
			if !p.Done || p.Rows != want || p.Total != want {
				t.Errorf("last progress of %s %s: %+v, want done with %d of %d rows", phase, table, p, want, want)
			}
		}
	}
}

// assertFreshIDs checks that rows created after a copy get ids after the
// copied ones: the sequences were reset.
func assertFreshIDs(t *testing.T, s service.Store, reports []service.TableReport, wantCounts map[string]int64) {
	t.Helper()
	ctx := t.Context()
	next := map[string]int64{}
	for _, r := range reports {
		next[r.Table] = r.NextID
	}
	p, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "after the copy", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"})
	if err != nil {
		t.Fatalf("ProjectCreate after the copy: %v", err)
	}
	tok, err := s.TokenCreate(ctx, &service.TokenCreateParams{ProjectID: p.ID, SecretHash: []byte("new"), TokenPrefix: "sk-new", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatalf("TokenCreate after the copy: %v", err)
	}
	if _, err := s.UsageInsertBatch(ctx, []*service.UsageEventCreateParams{{TokenID: tok.ID, ProjectID: p.ID, Method: "GET", Path: "/", CreatedAt: time.Now()}}); err != nil {
		t.Fatalf("UsageInsertBatch after the copy: %v", err)
	}
	usage, err := s.UsageList(ctx, &service.UsageListParams{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	audit, err := s.AuditInsert(ctx, &service.AuditInsertParams{Actor: "a", Action: "b", Result: "ok"})
	if err != nil {
		t.Fatalf("AuditInsert after the copy: %v", err)
	}
	for table, id := range map[string]int64{
		service.TableProjects: p.ID, service.TableTokens: tok.ID, service.TableUsageEvents: usage[0].ID, service.TableAuditEvents: audit.ID,
	} {
		if id != next[table] || id <= wantCounts[table] {
			t.Errorf("%s: new row got id %d, want the reported next id %d, after the %d copied", table, id, next[table], wantCounts[table])
		}
	}
}
