package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// The whole-table methods of db copy, export and import, and the store's
// housekeeping (Backup, PoolStats).

// bulkTime is a past instant at millisecond precision, as every engine keeps it.
var bulkTime = time.Date(2024, 5, 6, 7, 8, 9, 123_000_000, time.UTC)

// dumpAll pages through a dump with pages of 2 rows, checking each page's
// size, and returns every row.
func dumpAll[T any](t *testing.T, what string, dump func(*service.DumpParams) ([]*T, error), id func(*T) int64) []*T {
	t.Helper()
	var rows []*T
	params := &service.DumpParams{Limit: 2}
	for range 1000 {
		page, err := dump(params)
		if err != nil {
			t.Fatalf("%s(after %d): %v", what, params.AfterID, err)
		}
		if len(page) > 2 {
			t.Fatalf("%s(Limit 2) returned %d rows", what, len(page))
		}
		rows = append(rows, page...)
		if len(page) < 2 {
			return rows
		}
		params.AfterID = id(page[len(page)-1])
	}
	t.Fatalf("%s did not end after 1000 pages", what)
	return nil
}

func assertAscendingIDs[T any](t *testing.T, what string, rows []*T, id func(*T) int64, want int) {
	t.Helper()
	got := ids(rows, id)
	if len(got) != want || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != want {
		t.Errorf("%s ids = %v, want %d ids in ascending order", what, got, want)
	}
}

func assertAuditEqual(t *testing.T, got, want *service.AuditEvent) {
	t.Helper()
	if got.ID != want.ID || got.Actor != want.Actor || got.Action != want.Action || !equalPtr(got.ProjectID, want.ProjectID) ||
		!equalPtr(got.TokenID, want.TokenID) || got.Result != want.Result {
		t.Errorf("audit event = %+v, want %+v", got, want)
	}
	assertJSONEqual(t, "audit Details", got.Details, string(want.Details))
	assertSameInstant(t, "audit CreatedAt", got.CreatedAt, want.CreatedAt)
}

func assertUsageRowEqual(t *testing.T, got, want *service.UsageEvent) {
	t.Helper()
	if got.ID != want.ID {
		t.Errorf("usage event id = %d, want %d", got.ID, want.ID)
	}
	assertUsageEvent(t, got, &service.UsageEventCreateParams{
		TokenID: want.TokenID, ProjectID: want.ProjectID, Method: want.Method, Path: want.Path, Model: want.Model,
		Status: want.Status, PromptTokens: want.PromptTokens, CompletionTokens: want.CompletionTokens,
		TotalTokens: want.TotalTokens, LatencyMS: want.LatencyMS, CreatedAt: want.CreatedAt, EventID: want.EventID,
	})
}

func assertCounts(t *testing.T, s service.Store, want map[string]int64) {
	t.Helper()
	got, err := s.TableCounts(t.Context())
	if err != nil {
		t.Fatalf("TableCounts: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TableCounts = %v, want %v", got, want)
	}
}

func counts(projects, tokens, usageEvents, usageDaily, auditEvents int64) map[string]int64 {
	return map[string]int64{
		service.TableProjects: projects, service.TableTokens: tokens, service.TableUsageEvents: usageEvents,
		service.TableUsageDaily: usageDaily, service.TableAuditEvents: auditEvents,
	}
}

// fullRows are rows of every table as a copy writes them: ids chosen,
// times in the past, every nullable column both set and not.
type fullRows struct {
	projects []*service.Project
	tokens   []*service.Token
	usage    []*service.UsageEvent
	daily    []*service.UsageDaily
	audit    []*service.AuditEvent
}

func newFullRows() *fullRows {
	limit := int64(9)
	used, leased := bulkTime.Add(time.Minute), bulkTime.Add(time.Minute+service.AdmissionLease)
	projectID, tokenID := int64(30), int64(41)
	return &fullRows{
		projects: []*service.Project{
			{ID: 30, Name: uniqueName("full"), APIKeyCiphertext: []byte{0, 1, 0xff}, APIKeyHint: "sk-...0001", IsActive: true, CreatedAt: bulkTime, UpdatedAt: bulkTime.Add(time.Second)},
			{ID: 31, Name: uniqueName("full"), APIKeyCiphertext: []byte{2}, APIKeyHint: "sk-...0002", IsActive: false, CreatedAt: bulkTime, UpdatedAt: bulkTime},
		},
		tokens: []*service.Token{
			{ID: 40, ProjectID: 30, SecretHash: randomBytes(32), TokenPrefix: "sk-a", ExpiresAt: bulkTime.Add(time.Hour), IsActive: true, CreatedAt: bulkTime, UpdatedAt: bulkTime},
			{ID: 41, ProjectID: 31, SecretHash: randomBytes(32), TokenPrefix: "sk-b", ExpiresAt: bulkTime.Add(2 * time.Hour), MaxRequests: &limit,
				RequestCount: 7, RequestsReserved: 2, IsActive: false, CreatedAt: bulkTime, UpdatedAt: bulkTime.Add(time.Second), LastUsedAt: &used, LeaseUntil: &leased},
		},
		usage: []*service.UsageEvent{
			{ID: 50, TokenID: 40, ProjectID: 30, Method: "POST", Path: "/v1/chat/completions", Model: "gpt-ü", Status: 200,
				PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3, LatencyMS: 4, CreatedAt: bulkTime, EventID: randomBytes(16)},
			{ID: 52, TokenID: 41, ProjectID: 31, Method: "GET", Path: "/v1/models", Status: 503, CreatedAt: bulkTime.Add(time.Second)},
		},
		daily: []*service.UsageDaily{
			{Day: service.UsageDay(bulkTime), ProjectID: 30, TokenID: 40, Model: "é", Requests: 5, Errors: 1, PromptTokens: 6, CompletionTokens: 7, TotalTokens: 13},
			{Day: service.UsageDay(bulkTime), ProjectID: 30, TokenID: 40, Model: "Z", Requests: 1},
			{Day: service.UsageDay(bulkTime).AddDate(0, 0, -1), ProjectID: 31, TokenID: 41, Model: "a", Requests: 2, Errors: 2},
		},
		audit: []*service.AuditEvent{
			{ID: 60, Actor: "admin", Action: "project.create", ProjectID: &projectID, Result: "ok", Details: json.RawMessage(`{"b":1,"a":[1,2]}`), CreatedAt: bulkTime},
			{ID: 61, Actor: "api", Action: "token.revoke", ProjectID: &projectID, TokenID: &tokenID, Result: "denied", Details: json.RawMessage(`{}`), CreatedAt: bulkTime},
		},
	}
}

// insert writes the rows through the *InsertFullMany methods.
func (r *fullRows) insert(t *testing.T, s service.Store) {
	t.Helper()
	ctx := t.Context()
	if err := s.ProjectInsertFullMany(ctx, r.projects); err != nil {
		t.Fatalf("ProjectInsertFullMany: %v", err)
	}
	if err := s.TokenInsertFullMany(ctx, r.tokens); err != nil {
		t.Fatalf("TokenInsertFullMany: %v", err)
	}
	if err := s.UsageInsertFullMany(ctx, r.usage); err != nil {
		t.Fatalf("UsageInsertFullMany: %v", err)
	}
	if err := s.UsageDailyInsertFullMany(ctx, r.daily); err != nil {
		t.Fatalf("UsageDailyInsertFullMany: %v", err)
	}
	if err := s.AuditInsertFullMany(ctx, r.audit); err != nil {
		t.Fatalf("AuditInsertFullMany: %v", err)
	}
}

func dumpProjects(t *testing.T, s service.Store) []*service.Project {
	t.Helper()
	return dumpAll(t, "ProjectDump", func(p *service.DumpParams) ([]*service.Project, error) { return s.ProjectDump(t.Context(), p) }, projectID)
}

func dumpTokens(t *testing.T, s service.Store) []*service.Token {
	t.Helper()
	return dumpAll(t, "TokenDump", func(p *service.DumpParams) ([]*service.Token, error) { return s.TokenDump(t.Context(), p) }, tokenID)
}

func dumpUsage(t *testing.T, s service.Store) []*service.UsageEvent {
	t.Helper()
	return dumpAll(t, "UsageDump", func(p *service.DumpParams) ([]*service.UsageEvent, error) { return s.UsageDump(t.Context(), p) }, usageID)
}

func dumpAudit(t *testing.T, s service.Store) []*service.AuditEvent {
	t.Helper()
	return dumpAll(t, "AuditDump", func(p *service.DumpParams) ([]*service.AuditEvent, error) { return s.AuditDump(t.Context(), p) }, auditID)
}

var projectDumpCases = []storeCase{
	{"PagesEveryRowInIDOrder", func(t *testing.T, s service.Store) {
		var ps []*service.Project
		for range 5 {
			ps = append(ps, newProject(t, s))
		}
		setProjectActive(t, s, ps[1].ID, false)
		rows := dumpProjects(t, s)
		assertAscendingIDs(t, "ProjectDump", rows, projectID, 5)
		for _, r := range rows {
			assertProjectEqual(t, r, getProject(t, s, r.ID))
		}
	}},
	{"EmptyIsEmpty", func(t *testing.T, s service.Store) {
		rows, err := s.ProjectDump(t.Context(), &service.DumpParams{})
		if err != nil || rows == nil || len(rows) != 0 {
			t.Errorf("ProjectDump of no rows = %v, %v; want an empty list", rows, err)
		}
	}},
}

var tokenDumpCases = []storeCase{
	{"PagesEveryRowInIDOrder", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		var toks []*service.Token
		for i := range 5 {
			toks = append(toks, newToken(t, s, p.ID, withMaxRequests(int64(10+i))))
		}
		admit(t, s, toks[1].ID, 2)
		if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: toks[2].SecretHash, N: 1, Reserve: 3, Lease: service.AdmissionLease}); err != nil {
			t.Fatal(err)
		}
		setTokenActive(t, s, toks[3].ID, false)
		rows := dumpTokens(t, s)
		assertAscendingIDs(t, "TokenDump", rows, tokenID, 5)
		for _, r := range rows {
			assertTokenEqual(t, r, getToken(t, s, r.ID))
		}
	}},
}

var usageDumpCases = []storeCase{
	{"PagesEveryRowInIDOrder", func(t *testing.T, s service.Store) {
		var events []*service.UsageEventCreateParams
		for i := range 7 {
			e := usageEvent(1, 1, usageBase.Add(time.Duration(i)*time.Second))
			e.PromptTokens = int64(i)
			if i%2 == 0 {
				e.EventID = service.NewEventID(e.CreatedAt)
			}
			events = append(events, e)
		}
		insertUsage(t, s, events...)
		rows := dumpUsage(t, s)
		assertAscendingIDs(t, "UsageDump", rows, usageID, 7)
		for i, r := range rows {
			assertUsageEvent(t, r, events[i])
		}
	}},
}

var auditDumpCases = []storeCase{
	{"PagesEveryRowInIDOrder", func(t *testing.T, s service.Store) {
		var want []*service.AuditEvent
		for i := range 5 {
			want = append(want, insertAudit(t, s, &service.AuditInsertParams{Actor: "admin", Action: "a", Result: "ok",
				Details: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}))
		}
		rows := dumpAudit(t, s)
		assertAscendingIDs(t, "AuditDump", rows, auditID, 5)
		for i, r := range rows {
			assertAuditEqual(t, r, want[i])
		}
	}},
}

var usageDailyDumpCases = []storeCase{
	{"PagesInKeyOrder", func(t *testing.T, s service.Store) {
		rows := newFullRows()
		rows.insert(t, s)
		got := dailyRows(t, s)
		want := slices.Clone(rows.daily)
		slices.SortFunc(want, func(a, b *service.UsageDaily) int { return a.Key().Compare(b.Key()) })
		if !reflect.DeepEqual(got, want) {
			t.Errorf("UsageDailyDump =\n%s\nwant\n%s", showDaily(got), showDaily(want))
		}
		page, err := s.UsageDailyDump(t.Context(), &service.UsageDailyDumpParams{After: want[0].Key(), Limit: 1})
		if err != nil || len(page) != 1 || !reflect.DeepEqual(page[0], want[1]) {
			t.Errorf("UsageDailyDump(after the first, Limit 1) = %v, %v; want the second row", page, err)
		}
	}},
}

var tableCountsCases = []storeCase{
	{"CountsEveryTable", func(t *testing.T, s service.Store) {
		assertCounts(t, s, counts(0, 0, 0, 0, 0))
		newFullRows().insert(t, s)
		newToken(t, s, newProject(t, s).ID)
		assertCounts(t, s, counts(3, 3, 2, 3, 2))
	}},
}

var projectInsertFullManyCases = []storeCase{
	{"KeepsIDsAndEveryColumn", func(t *testing.T, s service.Store) {
		rows := newFullRows()
		if err := s.ProjectInsertFullMany(t.Context(), rows.projects); err != nil {
			t.Fatalf("ProjectInsertFullMany: %v", err)
		}
		got := dumpProjects(t, s)
		if len(got) != len(rows.projects) {
			t.Fatalf("ProjectDump = %d rows, want %d", len(got), len(rows.projects))
		}
		for i, r := range got {
			assertProjectEqual(t, r, rows.projects[i])
		}
	}},
	{"WritesAllOrNone", func(t *testing.T, s service.Store) {
		taken := newProject(t, s)
		fresh := *newFullRows().projects[0]
		clash := fresh
		clash.ID, clash.Name = taken.ID, uniqueName("clash")
		err := s.ProjectInsertFullMany(t.Context(), []*service.Project{&fresh, &clash})
		requireErrorIs(t, "ProjectInsertFullMany with an id taken", err, service.ErrConflict)
		assertCounts(t, s, counts(1, 0, 0, 0, 0))
	}},
	{"NoRowsIsNoOp", func(t *testing.T, s service.Store) {
		if err := s.ProjectInsertFullMany(t.Context(), nil); err != nil {
			t.Errorf("ProjectInsertFullMany(nil): %v", err)
		}
	}},
}

var tokenInsertFullManyCases = []storeCase{
	{"KeepsIDsAndEveryColumn", func(t *testing.T, s service.Store) {
		rows := newFullRows()
		rows.insert(t, s)
		got := dumpTokens(t, s)
		if len(got) != len(rows.tokens) {
			t.Fatalf("TokenDump = %d rows, want %d", len(got), len(rows.tokens))
		}
		for i, r := range got {
			assertTokenEqual(t, r, rows.tokens[i])
		}
	}},
	{"UnknownProjectIsReference", func(t *testing.T, s service.Store) {
		rows := newFullRows()
		if err := s.ProjectInsertFullMany(t.Context(), rows.projects); err != nil {
			t.Fatal(err)
		}
		orphan := *rows.tokens[1]
		orphan.ProjectID = 999
		err := s.TokenInsertFullMany(t.Context(), []*service.Token{rows.tokens[0], &orphan})
		requireErrorIs(t, "TokenInsertFullMany of a token of no project", err, service.ErrReference)
		assertCounts(t, s, counts(2, 0, 0, 0, 0))
	}},
}

var usageInsertFullManyCases = []storeCase{
	{"KeepsIDsAndEveryColumn", func(t *testing.T, s service.Store) {
		rows := newFullRows()
		rows.insert(t, s)
		got := dumpUsage(t, s)
		if len(got) != len(rows.usage) {
			t.Fatalf("UsageDump = %d rows, want %d", len(got), len(rows.usage))
		}
		for i, r := range got {
			assertUsageRowEqual(t, r, rows.usage[i])
		}
	}},
	{"WritesAllOrNone", func(t *testing.T, s service.Store) {
		rows := newFullRows()
		twice := *rows.usage[0]
		twice.EventID = nil
		err := s.UsageInsertFullMany(t.Context(), []*service.UsageEvent{rows.usage[1], rows.usage[0], &twice})
		requireErrorIs(t, "UsageInsertFullMany with an id twice", err, service.ErrConflict)
		assertCounts(t, s, counts(0, 0, 0, 0, 0))
	}},
}

var usageDailyInsertFullManyCases = []storeCase{
	{"KeepsEveryColumn", func(t *testing.T, s service.Store) {
		rows := newFullRows()
		if err := s.UsageDailyInsertFullMany(t.Context(), rows.daily); err != nil {
			t.Fatalf("UsageDailyInsertFullMany: %v", err)
		}
		got := dailyRows(t, s)
		for _, want := range rows.daily {
			if !slices.ContainsFunc(got, func(r *service.UsageDaily) bool { return reflect.DeepEqual(r, want) }) {
				t.Errorf("usage_daily lacks %+v; has\n%s", *want, showDaily(got))
			}
		}
	}},
	{"RefusesADayThatIsNotMidnight", func(t *testing.T, s service.Store) {
		rows := newFullRows()
		late := *rows.daily[1]
		late.Day = late.Day.Add(time.Hour)
		err := s.UsageDailyInsertFullMany(t.Context(), []*service.UsageDaily{rows.daily[0], &late})
		requireErrorIs(t, "UsageDailyInsertFullMany of a day at 01:00", err, service.ErrInvalid)
		assertCounts(t, s, counts(0, 0, 0, 0, 0))
	}},
	{"RefusesAKeyTwice", func(t *testing.T, s service.Store) {
		rows := newFullRows()
		err := s.UsageDailyInsertFullMany(t.Context(), []*service.UsageDaily{rows.daily[0], rows.daily[1], rows.daily[0]})
		requireErrorIs(t, "UsageDailyInsertFullMany with a key twice", err, service.ErrConflict)
		assertCounts(t, s, counts(0, 0, 0, 0, 0))
	}},
}

var auditInsertFullManyCases = []storeCase{
	{"KeepsIDsAndEveryColumn", func(t *testing.T, s service.Store) {
		rows := newFullRows()
		rows.insert(t, s)
		got := dumpAudit(t, s)
		if len(got) != len(rows.audit) {
			t.Fatalf("AuditDump = %d rows, want %d", len(got), len(rows.audit))
		}
		for i, r := range got {
			assertAuditEqual(t, r, rows.audit[i])
		}
	}},
	{"WritesAllOrNone", func(t *testing.T, s service.Store) {
		taken := insertAudit(t, s, &service.AuditInsertParams{Actor: "admin", Action: "a", Result: "ok"})
		rows := newFullRows()
		clash := *rows.audit[1]
		clash.ID = taken.ID
		err := s.AuditInsertFullMany(t.Context(), []*service.AuditEvent{rows.audit[0], &clash})
		requireErrorIs(t, "AuditInsertFullMany with an id taken", err, service.ErrConflict)
		assertCounts(t, s, counts(0, 0, 0, 0, 1))
	}},
}

var tableTruncateAllCases = []storeCase{
	{"EmptiesEveryTable", func(t *testing.T, s service.Store) {
		newFullRows().insert(t, s)
		p := newProject(t, s)
		tok := newToken(t, s, p.ID)
		insertUsage(t, s, usageEvent(tok.ID, p.ID, usageBase))
		insertAudit(t, s, &service.AuditInsertParams{Actor: "admin", Action: "a", Result: "ok"})
		if err := s.TableTruncateAll(t.Context()); err != nil {
			t.Fatalf("TableTruncateAll: %v", err)
		}
		assertCounts(t, s, counts(0, 0, 0, 0, 0))
		// The tables take rows again, the same ones included.
		newFullRows().insert(t, s)
	}},
	{"EndsSessions", func(t *testing.T, s service.Store) {
		sess := newSession(t, s, time.Hour)
		if err := s.TableTruncateAll(t.Context()); err != nil {
			t.Fatal(err)
		}
		assertSessionGone(t, s, sess, "after TableTruncateAll")
	}},
}

var tableSequencesResetCases = []storeCase{
	{"NextIDsFollowTheLargest", func(t *testing.T, s service.Store) {
		newFullRows().insert(t, s)
		next, err := s.TableSequencesReset(t.Context())
		if err != nil {
			t.Fatalf("TableSequencesReset: %v", err)
		}
		want := map[string]int64{service.TableProjects: 32, service.TableTokens: 42, service.TableUsageEvents: 53, service.TableAuditEvents: 62}
		if !reflect.DeepEqual(next, want) {
			t.Fatalf("TableSequencesReset = %v, want %v", next, want)
		}
		p := newProject(t, s)
		tok := newToken(t, s, p.ID)
		insertUsage(t, s, usageEvent(tok.ID, p.ID, usageBase))
		events, err := s.UsageList(t.Context(), &service.UsageListParams{Limit: 1})
		if err != nil || len(events) != 1 {
			t.Fatalf("UsageList = %v, %v", events, err)
		}
		audit := insertAudit(t, s, &service.AuditInsertParams{Actor: "admin", Action: "a", Result: "ok"})
		if got := []int64{p.ID, tok.ID, events[0].ID, audit.ID}; !slices.Equal(got, []int64{32, 42, 53, 62}) {
			t.Errorf("ids of new rows = %v, want [32 42 53 62]", got)
		}
	}},
	{"EmptyTablesStartAtOne", func(t *testing.T, s service.Store) {
		next, err := s.TableSequencesReset(t.Context())
		want := map[string]int64{service.TableProjects: 1, service.TableTokens: 1, service.TableUsageEvents: 1, service.TableAuditEvents: 1}
		if err != nil || !reflect.DeepEqual(next, want) {
			t.Errorf("TableSequencesReset on empty tables = %v, %v; want %v", next, err, want)
		}
	}},
}

var backupCases = []storeCase{
	{"WritesANewFileOnly", func(t *testing.T, s service.Store) {
		newToken(t, s, newProject(t, s).ID)
		path := filepath.Join(t.TempDir(), "backup.db")
		err := s.Backup(t.Context(), path)
		if errors.Is(err, service.ErrNotImplemented) {
			t.Skipf("%T backs up with other tools: %v", s, err)
		}
		if err != nil {
			t.Fatalf("Backup: %v", err)
		}
		info, err := os.Stat(path)
		if err != nil || info.Size() == 0 {
			t.Fatalf("backup file: %v, %v; want a file with the database", info, err)
		}
		requireErrorIs(t, "Backup to an existing file", s.Backup(t.Context(), path), fs.ErrExist)
		if after, err := os.Stat(path); err != nil || !after.ModTime().Equal(info.ModTime()) || after.Size() != info.Size() {
			t.Errorf("a refused Backup changed the existing file")
		}
		missing := filepath.Join(t.TempDir(), "no such dir", "backup.db")
		if err := s.Backup(t.Context(), missing); err == nil {
			t.Errorf("Backup into a missing directory succeeded")
		}
	}},
}

var poolStatsCases = []storeCase{
	{"CountsAreConsistent", func(t *testing.T, s service.Store) {
		newProject(t, s)
		st := s.PoolStats()
		if st.MaxOpen < 1 || st.Open > st.MaxOpen || st.InUse < 0 || st.Idle < 0 || st.InUse+st.Idle > st.Open ||
			st.WaitCount < 0 || st.WaitDuration < 0 {
			t.Errorf("PoolStats = %+v, want 0 ≤ InUse + Idle ≤ Open ≤ MaxOpen, MaxOpen ≥ 1", st)
		}
	}},
	{"CountsATransactionsConnection", func(t *testing.T, s service.Store) {
		err := s.InTx(t.Context(), func(tx service.Store) error {
			if _, err := tx.ProjectCreate(t.Context(), projectParams()); err != nil {
				return err
			}
			if st := s.PoolStats(); st.InUse < 1 || st.Open < 1 {
				t.Errorf("PoolStats during a transaction = %+v, want a connection in use", st)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
	}},
}
