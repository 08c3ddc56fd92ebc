package manage

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/service"
	_ "github.com/llmproxy/llmproxy/service/sqlitestore"
)

const actor = "test"

func newKeys(t *testing.T) *secrets.Keys {
	t.Helper()
	master, err := secrets.ParseKey(secrets.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secrets.NewKeys(master)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// newStore opens a fresh SQLite database for one test.
func newStore(t *testing.T) service.Store {
	t.Helper()
	cfg := service.DefaultConfig()
	cfg.SQLitePath = filepath.Join(t.TempDir(), "llmproxy.db")
	store, err := service.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("service.Open: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func newManager(t *testing.T) (*Manager, service.Store) {
	t.Helper()
	store := newStore(t)
	return New(store, newKeys(t), nil), store
}

// faultyStore fails the methods named in fail, in and out of transactions.
type faultyStore struct {
	service.Store
	fail map[string]error
}

func (s *faultyStore) InTx(ctx context.Context, fn func(tx service.Store) error) error {
	if err := s.fail["InTx"]; err != nil {
		return err
	}
	return s.Store.InTx(ctx, func(tx service.Store) error {
		return fn(&faultyStore{Store: tx, fail: s.fail})
	})
}

func (s *faultyStore) AuditInsert(ctx context.Context, p *service.AuditInsertParams) (*service.AuditEvent, error) {
	if err := s.fail["AuditInsert"]; err != nil {
		return nil, err
	}
	return s.Store.AuditInsert(ctx, p)
}

func (s *faultyStore) ProjectList(ctx context.Context, p *service.ProjectListParams) ([]*service.Project, error) {
	if err := s.fail["ProjectList"]; err != nil {
		return nil, err
	}
	return s.Store.ProjectList(ctx, p)
}

func (s *faultyStore) ProjectGetByID(ctx context.Context, id int64) (*service.Project, error) {
	if err := s.fail["ProjectGetByID"]; err != nil {
		return nil, err
	}
	return s.Store.ProjectGetByID(ctx, id)
}

// audits returns the store's audit events, oldest first.
func audits(t *testing.T, store service.Store) []*service.AuditEvent {
	t.Helper()
	events, err := store.AuditList(t.Context(), &service.AuditListParams{Limit: service.MaxPageLimit})
	if err != nil {
		t.Fatalf("AuditList: %v", err)
	}
	for i, j := 0, len(events)-1; i < j; i, j = i+1, j-1 {
		events[i], events[j] = events[j], events[i]
	}
	return events
}

// lastAudit checks the newest audit event's action and result and returns it.
func lastAudit(t *testing.T, store service.Store, action, result string) *service.AuditEvent {
	t.Helper()
	events := audits(t, store)
	if len(events) == 0 {
		t.Fatalf("no audit event, want %s %s", action, result)
	}
	ev := events[len(events)-1]
	if ev.Action != action || ev.Result != result || ev.Actor != actor {
		t.Fatalf("last audit event = %s %s by %s, want %s %s by %s", ev.Action, ev.Result, ev.Actor, action, result, actor)
	}
	return ev
}

func details(t *testing.T, ev *service.AuditEvent) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(ev.Details, &d); err != nil {
		t.Fatalf("details %s: %v", ev.Details, err)
	}
	return d
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %s", code)
	}
	if got := Code(err); got != code {
		t.Fatalf("Code(%v) = %s, want %s", err, got, code)
	}
}

func createProject(t *testing.T, m *Manager, name string) *service.Project {
	t.Helper()
	p, err := m.CreateProject(t.Context(), actor, ProjectInput{Name: name, APIKey: "sk-upstream-" + name})
	if err != nil {
		t.Fatalf("CreateProject(%q): %v", name, err)
	}
	return p
}

func createToken(t *testing.T, m *Manager, projectID int64) *CreatedToken {
	t.Helper()
	tok, err := m.CreateToken(t.Context(), actor, TokenInput{ProjectID: projectID, DurationMinutes: 60})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return tok
}

func ptr[T any](v T) *T { return &v }

func TestCreateProject(t *testing.T) {
	t.Parallel()
	m, store := newManager(t)
	const key = "sk-proj-0123456789abcdef"
	p, err := m.CreateProject(t.Context(), actor, ProjectInput{Name: "alpha", APIKey: key})
	if err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	if p.Name != "alpha" || !p.IsActive || p.APIKeyHint != "sk-...cdef" {
		t.Errorf("project = %+v", p)
	}
	if plain, err := m.keys.Decrypt(p.APIKeyCiphertext); err != nil || plain != key {
		t.Errorf("stored key decrypts to %q, %v", plain, err)
	}
	if strings.Contains(string(p.APIKeyCiphertext), key) {
		t.Error("key stored in clear")
	}
	ev := lastAudit(t, store, ActionProjectCreate, ResultSuccess)
	if ev.ProjectID == nil || *ev.ProjectID != p.ID {
		t.Errorf("audit project_id = %v, want %d", ev.ProjectID, p.ID)
	}
	if strings.Contains(string(ev.Details), key) {
		t.Errorf("audit details %s contain the key", ev.Details)
	}
	if d := details(t, ev); d["name"] != "alpha" || d["api_key_hint"] != "sk-...cdef" {
		t.Errorf("audit details = %v", d)
	}
}

func TestCreateProjectRefusesBadInput(t *testing.T) {
	t.Parallel()
	cases := map[string]ProjectInput{
		"empty name":        {Name: "", APIKey: "k"},
		"blank name":        {Name: " \t", APIKey: "k"},
		"long name":         {Name: strings.Repeat("n", MaxNameLength+1), APIKey: "k"},
		"control character": {Name: "a\nb", APIKey: "k"},
		"invalid UTF-8":     {Name: "a\xffb", APIKey: "k"},
		"empty key":         {Name: "n", APIKey: ""},
		"key with space":    {Name: "n", APIKey: "sk abc"},
		"key with newline":  {Name: "n", APIKey: "sk\r\nX-Injected: 1"},
		"non-ASCII key":     {Name: "n", APIKey: "sk-é"},
		"long key":          {Name: "n", APIKey: strings.Repeat("k", MaxAPIKeyLength+1)},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, store := newManager(t)
			_, err := m.CreateProject(t.Context(), actor, in)
			wantCode(t, err, CodeInvalidRequest)
			ev := lastAudit(t, store, ActionProjectCreate, CodeInvalidRequest)
			if d := details(t, ev); d["error"] != err.Error() {
				t.Errorf("audit details = %v, want the error message", d)
			}
			if ps, _ := m.Projects(t.Context()); len(ps) != 0 {
				t.Errorf("%d projects created", len(ps))
			}
		})
	}
	t.Run("longest name", func(t *testing.T) {
		t.Parallel()
		m, _ := newManager(t)
		if _, err := m.CreateProject(t.Context(), actor, ProjectInput{Name: strings.Repeat("é", MaxNameLength), APIKey: "k"}); err != nil {
			t.Errorf("name of %d characters refused: %v", MaxNameLength, err)
		}
	})
}

func TestCreateProjectConflict(t *testing.T) {
	t.Parallel()
	m, store := newManager(t)
	createProject(t, m, "dup")
	_, err := m.CreateProject(t.Context(), actor, ProjectInput{Name: "dup", APIKey: "k"})
	wantCode(t, err, CodeConflict)
	if !errors.Is(err, service.ErrConflict) {
		t.Errorf("err %v does not wrap service.ErrConflict", err)
	}
	lastAudit(t, store, ActionProjectCreate, CodeConflict)
}

// A change and its audit event commit together: when the audit cannot be
// written, the change is rolled back and the failure is reported.
func TestChangeRolledBackWithoutAudit(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	faulty := &faultyStore{Store: store, fail: map[string]error{"AuditInsert": errors.New("disk on fire")}}
	m := New(faulty, newKeys(t), nil)
	_, err := m.CreateProject(t.Context(), actor, ProjectInput{Name: "lost", APIKey: "k"})
	wantCode(t, err, CodeInternal)
	if ps, _ := m.Projects(t.Context()); len(ps) != 0 {
		t.Errorf("project kept without its audit event: %+v", ps[0])
	}
}

func TestChangeStoreUnavailable(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	m := New(&faultyStore{Store: store, fail: map[string]error{"InTx": service.ErrUnavailable}}, newKeys(t), nil)
	_, err := m.CreateProject(t.Context(), actor, ProjectInput{Name: "p", APIKey: "k"})
	wantCode(t, err, CodeDatabaseUnavailable)
	lastAudit(t, store, ActionProjectCreate, CodeDatabaseUnavailable)

	// The failure is audited even when the caller's context is already done.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	m = New(&faultyStore{Store: store, fail: map[string]error{"InTx": context.Canceled}}, newKeys(t), nil)
	_, err = m.CreateProject(ctx, actor, ProjectInput{Name: "p", APIKey: "k"})
	wantCode(t, err, CodeCanceled)
	lastAudit(t, store, ActionProjectCreate, CodeCanceled)
}

func TestReadErrors(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	m := New(&faultyStore{Store: store, fail: map[string]error{
		"ProjectList":    service.ErrUnavailable,
		"ProjectGetByID": errors.New("boom"),
	}}, newKeys(t), nil)
	_, err := m.Projects(t.Context())
	wantCode(t, err, CodeDatabaseUnavailable)
	_, err = m.Project(t.Context(), 1)
	wantCode(t, err, CodeInternal)
}

func TestUpdateProject(t *testing.T) {
	t.Parallel()
	m, store := newManager(t)
	p := createProject(t, m, "before")
	tok := createToken(t, m, p.ID)

	updated, err := m.UpdateProject(t.Context(), actor, p.ID, ProjectPatch{Name: ptr("after"), APIKey: ptr("sk-new-key-9999")})
	if err != nil {
		t.Fatalf("UpdateProject: %v", err)
	}
	if updated.Name != "after" || updated.APIKeyHint != "sk-...9999" || !updated.IsActive {
		t.Errorf("updated = %+v", updated)
	}
	if plain, _ := m.keys.Decrypt(updated.APIKeyCiphertext); plain != "sk-new-key-9999" {
		t.Errorf("new key decrypts to %q", plain)
	}
	ev := lastAudit(t, store, ActionProjectUpdate, ResultSuccess)
	if d := details(t, ev); d["name"] != "after" || d["api_key_hint"] != "sk-...9999" || strings.Contains(string(ev.Details), "sk-new-key") {
		t.Errorf("audit details = %s", ev.Details)
	}

	updated, err = m.UpdateProject(t.Context(), actor, p.ID, ProjectPatch{IsActive: ptr(false), RevokeTokens: true})
	if err != nil {
		t.Fatalf("UpdateProject(deactivate, revoke): %v", err)
	}
	if updated.IsActive || updated.Name != "after" {
		t.Errorf("updated = %+v", updated)
	}
	if got, _ := m.Token(t.Context(), tok.ID); got.IsActive {
		t.Error("token still active after revoke_tokens")
	}
	ev = lastAudit(t, store, ActionProjectUpdate, ResultSuccess)
	if d := details(t, ev); d["is_active"] != false || d["revoked_count"] != 1.0 || d["already_revoked_count"] != 0.0 {
		t.Errorf("audit details = %v", d)
	}

	// revoke_tokens alone still returns the project.
	updated, err = m.UpdateProject(t.Context(), actor, p.ID, ProjectPatch{RevokeTokens: true})
	if err != nil || updated.ID != p.ID {
		t.Fatalf("UpdateProject(revoke only) = %+v, %v", updated, err)
	}
	if d := details(t, lastAudit(t, store, ActionProjectUpdate, ResultSuccess)); d["revoked_count"] != 0.0 || d["already_revoked_count"] != 1.0 {
		t.Errorf("audit details = %v", d)
	}
}

func TestUpdateProjectErrors(t *testing.T) {
	t.Parallel()
	m, store := newManager(t)
	p := createProject(t, m, "one")
	createProject(t, m, "two")
	cases := []struct {
		name  string
		id    int64
		patch ProjectPatch
		code  string
	}{
		{"nothing", p.ID, ProjectPatch{}, CodeInvalidRequest},
		{"empty name", p.ID, ProjectPatch{Name: ptr("")}, CodeInvalidRequest},
		{"bad key", p.ID, ProjectPatch{APIKey: ptr("a b")}, CodeInvalidRequest},
		{"taken name", p.ID, ProjectPatch{Name: ptr("two")}, CodeConflict},
		{"unknown", 999, ProjectPatch{IsActive: ptr(false)}, CodeNotFound},
		{"unknown revoke", 999, ProjectPatch{RevokeTokens: true}, CodeNotFound},
	}
	for _, tc := range cases {
		_, err := m.UpdateProject(t.Context(), actor, tc.id, tc.patch)
		wantCode(t, err, tc.code)
		ev := lastAudit(t, store, ActionProjectUpdate, tc.code)
		if ev.ProjectID == nil || *ev.ProjectID != tc.id {
			t.Errorf("%s: audit project_id = %v, want %d", tc.name, ev.ProjectID, tc.id)
		}
	}
	if got, _ := m.Project(t.Context(), p.ID); got.Name != "one" || !got.IsActive {
		t.Errorf("failed updates changed the project: %+v", got)
	}
}

func TestRevokeProjectTokens(t *testing.T) {
	t.Parallel()
	m, store := newManager(t)
	p := createProject(t, m, "p")
	other := createProject(t, m, "other")
	t1, t2 := createToken(t, m, p.ID), createToken(t, m, p.ID)
	otherTok := createToken(t, m, other.ID)
	if err := m.RevokeToken(t.Context(), actor, t1.ID); err != nil {
		t.Fatal(err)
	}
	result, err := m.RevokeProjectTokens(t.Context(), actor, p.ID)
	if err != nil {
		t.Fatalf("RevokeProjectTokens: %v", err)
	}
	if *result != (service.RevokeResult{RevokedCount: 1, AlreadyRevokedCount: 1}) {
		t.Errorf("result = %+v, want 1 revoked, 1 already", result)
	}
	if got, _ := m.Token(t.Context(), t2.ID); got.IsActive {
		t.Error("token still active")
	}
	if got, _ := m.Token(t.Context(), otherTok.ID); !got.IsActive {
		t.Error("another project's token revoked")
	}
	if d := details(t, lastAudit(t, store, ActionProjectRevokeTokens, ResultSuccess)); d["revoked_count"] != 1.0 {
		t.Errorf("audit details = %v", d)
	}
	_, err = m.RevokeProjectTokens(t.Context(), actor, 12345)
	wantCode(t, err, CodeNotFound)
	lastAudit(t, store, ActionProjectRevokeTokens, CodeNotFound)
}

func TestCreateToken(t *testing.T) {
	t.Parallel()
	m, store := newManager(t)
	now := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	p := createProject(t, m, "p")

	created, err := m.CreateToken(t.Context(), actor, TokenInput{ProjectID: p.ID, DurationMinutes: 90, MaxRequests: 5})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	if !secrets.ValidTokenSyntax(created.Secret) || !strings.HasPrefix(created.Secret, created.TokenPrefix) {
		t.Errorf("secret %q, prefix %q", created.Secret, created.TokenPrefix)
	}
	if !created.ExpiresAt.Equal(now.Add(90*time.Minute)) || created.MaxRequests == nil || *created.MaxRequests != 5 ||
		created.ProjectID != p.ID || !created.IsActive || created.RequestCount != 0 {
		t.Errorf("token = %+v", created.Token)
	}
	byHash, err := store.TokenGetByHash(t.Context(), m.keys.HashToken(created.Secret))
	if err != nil || byHash.ID != created.ID {
		t.Errorf("token not found by the hash of its secret: %v", err)
	}
	ev := lastAudit(t, store, ActionTokenCreate, ResultSuccess)
	if ev.TokenID == nil || *ev.TokenID != created.ID || ev.ProjectID == nil || *ev.ProjectID != p.ID {
		t.Errorf("audit ids = %v, %v", ev.ProjectID, ev.TokenID)
	}
	if strings.Contains(string(ev.Details), created.Secret) {
		t.Errorf("audit details %s contain the secret", ev.Details)
	}
	if d := details(t, ev); d["token_prefix"] != created.TokenPrefix || d["max_requests"] != 5.0 || d["duration_minutes"] != 90.0 {
		t.Errorf("audit details = %v", d)
	}

	unlimited, err := m.CreateToken(t.Context(), actor, TokenInput{ProjectID: p.ID, DurationMinutes: MaxDurationMinutes})
	if err != nil || unlimited.MaxRequests != nil {
		t.Errorf("CreateToken(max 0) = %+v, %v; want unlimited", unlimited, err)
	}
	if unlimited.Secret == created.Secret {
		t.Error("two tokens share a secret")
	}
}

func TestCreateTokenErrors(t *testing.T) {
	t.Parallel()
	m, store := newManager(t)
	p := createProject(t, m, "p")
	inactive := createProject(t, m, "inactive")
	if _, err := m.UpdateProject(t.Context(), actor, inactive.ID, ProjectPatch{IsActive: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		in   TokenInput
		code string
	}{
		{"zero duration", TokenInput{ProjectID: p.ID}, CodeInvalidRequest},
		{"negative duration", TokenInput{ProjectID: p.ID, DurationMinutes: -1}, CodeInvalidRequest},
		{"duration too long", TokenInput{ProjectID: p.ID, DurationMinutes: MaxDurationMinutes + 1}, CodeInvalidRequest},
		{"negative max_requests", TokenInput{ProjectID: p.ID, DurationMinutes: 1, MaxRequests: -1}, CodeInvalidRequest},
		{"unknown project", TokenInput{ProjectID: 999, DurationMinutes: 1}, CodeNotFound},
		{"inactive project", TokenInput{ProjectID: inactive.ID, DurationMinutes: 1}, CodeProjectInactive},
	}
	for _, tc := range cases {
		_, err := m.CreateToken(t.Context(), actor, tc.in)
		wantCode(t, err, tc.code)
		ev := lastAudit(t, store, ActionTokenCreate, tc.code)
		if ev.TokenID != nil {
			t.Errorf("%s: audit token_id = %d for a token never created", tc.name, *ev.TokenID)
		}
	}
	if tokens, _ := m.Tokens(t.Context(), nil); len(tokens) != 0 {
		t.Errorf("%d tokens created", len(tokens))
	}
}

func TestUpdateToken(t *testing.T) {
	t.Parallel()
	m, store := newManager(t)
	p := createProject(t, m, "p")
	tok := createToken(t, m, p.ID)

	got, err := m.UpdateToken(t.Context(), actor, tok.ID, TokenPatch{SetMaxRequests: true, MaxRequests: 7})
	if err != nil || got.MaxRequests == nil || *got.MaxRequests != 7 || !got.IsActive {
		t.Fatalf("UpdateToken(max 7) = %+v, %v", got, err)
	}
	ev := lastAudit(t, store, ActionTokenUpdate, ResultSuccess)
	if ev.ProjectID == nil || *ev.ProjectID != p.ID || details(t, ev)["max_requests"] != 7.0 {
		t.Errorf("audit = %+v %s", ev, ev.Details)
	}
	got, err = m.UpdateToken(t.Context(), actor, tok.ID, TokenPatch{IsActive: ptr(false), SetMaxRequests: true})
	if err != nil || got.MaxRequests != nil || got.IsActive {
		t.Fatalf("UpdateToken(inactive, unlimited) = %+v, %v", got, err)
	}
	got, err = m.UpdateToken(t.Context(), actor, tok.ID, TokenPatch{IsActive: ptr(true)})
	if err != nil || !got.IsActive {
		t.Fatalf("UpdateToken(reactivate) = %+v, %v", got, err)
	}

	for _, tc := range []struct {
		id    int64
		patch TokenPatch
		code  string
	}{
		{tok.ID, TokenPatch{}, CodeInvalidRequest},
		{tok.ID, TokenPatch{SetMaxRequests: true, MaxRequests: -3}, CodeInvalidRequest},
		{999, TokenPatch{IsActive: ptr(false)}, CodeNotFound},
	} {
		_, err := m.UpdateToken(t.Context(), actor, tc.id, tc.patch)
		wantCode(t, err, tc.code)
		lastAudit(t, store, ActionTokenUpdate, tc.code)
	}
}

func TestRevokeToken(t *testing.T) {
	t.Parallel()
	m, store := newManager(t)
	p := createProject(t, m, "p")
	tok := createToken(t, m, p.ID)
	for i, already := range []bool{false, true} {
		if err := m.RevokeToken(t.Context(), actor, tok.ID); err != nil {
			t.Fatalf("RevokeToken #%d: %v", i+1, err)
		}
		ev := lastAudit(t, store, ActionTokenRevoke, ResultSuccess)
		if details(t, ev)["already_revoked"] != already || *ev.ProjectID != p.ID || *ev.TokenID != tok.ID {
			t.Errorf("revoke #%d audit = %+v %s", i+1, ev, ev.Details)
		}
	}
	if got, _ := m.Token(t.Context(), tok.ID); got.IsActive {
		t.Error("token still active")
	}
	wantCode(t, m.RevokeToken(t.Context(), actor, 999), CodeNotFound)
	lastAudit(t, store, ActionTokenRevoke, CodeNotFound)
}

func TestReads(t *testing.T) {
	t.Parallel()
	m, _ := newManager(t)
	a, b := createProject(t, m, "a"), createProject(t, m, "b")
	ta, tb := createToken(t, m, a.ID), createToken(t, m, b.ID)

	if ps, err := m.Projects(t.Context()); err != nil || len(ps) != 2 || ps[0].ID != a.ID || ps[1].ID != b.ID {
		t.Errorf("Projects = %v, %v", ps, err)
	}
	_, err := m.Project(t.Context(), 999)
	wantCode(t, err, CodeNotFound)
	if ts, err := m.Tokens(t.Context(), nil); err != nil || len(ts) != 2 || ts[0].ID != ta.ID || ts[1].ID != tb.ID {
		t.Errorf("Tokens(all) = %v, %v", ts, err)
	}
	if ts, err := m.Tokens(t.Context(), &b.ID); err != nil || len(ts) != 1 || ts[0].ID != tb.ID {
		t.Errorf("Tokens(b) = %v, %v", ts, err)
	}
	if ts, err := m.Tokens(t.Context(), ptr[int64](999)); err != nil || len(ts) != 0 {
		t.Errorf("Tokens(unknown) = %v, %v", ts, err)
	}
	_, err = m.Token(t.Context(), 999)
	wantCode(t, err, CodeNotFound)

	if evs, err := m.AuditEvents(t.Context(), &a.ID, 0); err != nil || len(evs) != 2 || evs[0].Action != ActionTokenCreate {
		t.Errorf("AuditEvents(a) = %v, %v", evs, err)
	}
	if evs, err := m.AuditEvents(t.Context(), nil, 1); err != nil || len(evs) != 1 || *evs[0].TokenID != tb.ID {
		t.Errorf("AuditEvents(limit 1) = %v, %v", evs, err)
	}
	for _, limit := range []int{-1, service.MaxPageLimit + 1} {
		_, err := m.AuditEvents(t.Context(), nil, limit)
		wantCode(t, err, CodeInvalidRequest)
	}

	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err = m.Usage(t.Context(), service.UsageFilter{Since: at, Until: at})
	wantCode(t, err, CodeInvalidRequest)
	if u, err := m.Usage(t.Context(), service.UsageFilter{ProjectID: &a.ID}); err != nil || u.Requests != 0 {
		t.Errorf("Usage = %+v, %v", u, err)
	}
}

func TestListAllPages(t *testing.T) {
	t.Parallel()
	const total = 2*service.MaxPageLimit + 3
	var calls []int64
	got, err := listAll(func(afterID int64) ([]int64, error) {
		calls = append(calls, afterID)
		var page []int64
		for id := afterID + 1; id <= total && len(page) < service.MaxPageLimit; id++ {
			page = append(page, id)
		}
		return page, nil
	}, func(id int64) int64 { return id })
	if err != nil || len(got) != total || got[total-1] != total {
		t.Fatalf("listAll = %d items, %v", len(got), err)
	}
	if want := []int64{0, service.MaxPageLimit, 2 * service.MaxPageLimit}; len(calls) != len(want) || calls[1] != want[1] || calls[2] != want[2] {
		t.Errorf("pages requested after %v, want %v", calls, want)
	}
}

func TestParseID(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]int64{"1": 1, "42": 42, "9223372036854775807": 1<<63 - 1} {
		if got, err := ParseID(s); err != nil || got != want {
			t.Errorf("ParseID(%q) = %d, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "0", "-1", "+1", "01", " 1", "1 ", "1.0", "1e3", "abc", "9223372036854775808", "0x10"} {
		if got, err := ParseID(s); err == nil {
			t.Errorf("ParseID(%q) = %d, want an error", s, got)
		}
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"1", "0", "-5", "007", "9223372036854775808"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err == nil && (id <= 0 || FormatID(id) != s) {
			t.Fatalf("ParseID(%q) = %d: not canonical", s, id)
		}
	})
}
