package storetest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// TestRun checks the suite itself against memStore, a small in-memory
// implementation of the contract.
func TestRun(t *testing.T) {
	Run(t, func(t *testing.T) service.Store {
		s := newMemStore()
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestSuiteCoversEveryMethod(t *testing.T) {
	covered := map[string]bool{"Close": true} // the factory's cleanup calls it
	for _, m := range suite() {
		covered[m.name] = true
	}
	store := reflect.TypeFor[service.Store]()
	for i := range store.NumMethod() {
		if name := store.Method(i).Name; !covered[name] {
			t.Errorf("no conformance cases for Store.%s", name)
		}
	}
}

type memState struct {
	projects map[int64]service.Project
	tokens   map[int64]service.Token
	usage    []service.UsageEvent // ascending id
	daily    []service.UsageDaily // ascending key
	audit    []service.AuditEvent // ascending id
	sessions map[string]service.Session
	lastIDs  map[string]int64 // each table's sequence
}

func (st *memState) clone() *memState {
	c := *st
	c.projects, c.tokens = maps.Clone(st.projects), maps.Clone(st.tokens)
	c.usage, c.daily, c.audit = slices.Clone(st.usage), slices.Clone(st.daily), slices.Clone(st.audit)
	c.lastIDs, c.sessions = maps.Clone(st.lastIDs), maps.Clone(st.sessions)
	return &c
}

func (st *memState) nextID(table string) int64 {
	st.lastIDs[table]++
	return st.lastIDs[table]
}

// memStore serialises every call with one mutex; a transaction holds it
// throughout and works on a copy of the state that replaces it on commit.
// Rows are stored by value and replaced whole, never mutated in place.
type memStore struct {
	mu    *sync.Mutex
	st    *memState
	inTx  bool
	txing *atomic.Bool // a transaction holds the store's one "connection"
	// In a transaction: the tokens whose admission leases its commit waits out.
	leases *service.LeaseScope
}

func newMemStore() *memStore {
	return &memStore{mu: new(sync.Mutex), txing: new(atomic.Bool), st: &memState{
		projects: map[int64]service.Project{}, tokens: map[int64]service.Token{}, lastIDs: map[string]int64{},
		sessions: map[string]service.Session{},
	}}
}

func (m *memStore) lock() func() {
	if m.inTx {
		return func() {}
	}
	m.mu.Lock()
	return m.mu.Unlock
}

func now() time.Time { return time.Now().UTC() }

func (m *memStore) ProjectCreate(_ context.Context, p *service.ProjectCreateParams) (*service.Project, error) {
	defer m.lock()()
	if err := m.checkName(0, p.Name); err != nil {
		return nil, err
	}
	at := now()
	row := service.Project{ID: m.st.nextID(service.TableProjects), Name: p.Name, APIKeyCiphertext: bytes.Clone(p.APIKeyCiphertext),
		APIKeyHint: p.APIKeyHint, IsActive: true, CreatedAt: at, UpdatedAt: at}
	m.st.projects[row.ID] = row
	return &row, nil
}

func (m *memStore) checkName(id int64, name string) error {
	if name == "" {
		return service.ErrInvalid
	}
	for _, p := range m.st.projects {
		if p.Name == name && p.ID != id {
			return service.ErrConflict
		}
	}
	return nil
}

func (m *memStore) ProjectGetByID(_ context.Context, id int64) (*service.Project, error) {
	defer m.lock()()
	p, ok := m.st.projects[id]
	if !ok {
		return nil, service.ErrNotFound
	}
	return &p, nil
}

func (m *memStore) ProjectList(_ context.Context, params *service.ProjectListParams) ([]*service.Project, error) {
	defer m.lock()()
	return page(m.st.projects, params.AfterID, params.Limit, func(*service.Project) bool { return true }), nil
}

// page lists rows with ids above afterID in ascending id order.
func page[T any](rows map[int64]T, afterID int64, limit int, keep func(*T) bool) []*T {
	var out []*T
	for _, id := range slices.Sorted(maps.Keys(rows)) {
		if row := rows[id]; id > afterID && keep(&row) && int64(len(out)) < service.PageLimit(limit) {
			out = append(out, &row)
		}
	}
	return out
}

func (m *memStore) ProjectUpdate(ctx context.Context, params *service.ProjectUpdateParams) (*service.Project, error) {
	leases := &service.LeaseScope{}
	defer m.outlast(ctx, leases) // after the unlock
	defer m.lock()()
	if params.RestrictsAdmission() {
		leases.AddProject(params.ID)
	}
	p, ok := m.st.projects[params.ID]
	if !ok {
		return nil, service.ErrNotFound
	}
	if params.Name != nil {
		if err := m.checkName(p.ID, *params.Name); err != nil {
			return nil, err
		}
		p.Name = *params.Name
	}
	if params.APIKeyCiphertext != nil {
		p.APIKeyCiphertext = bytes.Clone(params.APIKeyCiphertext)
	}
	if params.APIKeyHint != nil {
		p.APIKeyHint = *params.APIKeyHint
	}
	if params.IsActive != nil {
		p.IsActive = *params.IsActive
	}
	p.UpdatedAt = now()
	m.st.projects[p.ID] = p
	return &p, nil
}

func (m *memStore) TokenCreate(_ context.Context, params *service.TokenCreateParams) (*service.Token, error) {
	defer m.lock()()
	p, ok := m.st.projects[params.ProjectID]
	switch {
	case !ok:
		return nil, service.ErrNotFound
	case !p.IsActive:
		return nil, service.ErrProjectInactive
	case params.MaxRequests != nil && *params.MaxRequests <= 0:
		return nil, service.ErrInvalid
	}
	for _, tok := range m.st.tokens {
		if bytes.Equal(tok.SecretHash, params.SecretHash) {
			return nil, service.ErrConflict
		}
	}
	at := now()
	tok := service.Token{ID: m.st.nextID(service.TableTokens), ProjectID: p.ID, SecretHash: bytes.Clone(params.SecretHash),
		TokenPrefix: params.TokenPrefix, ExpiresAt: params.ExpiresAt.UTC(), MaxRequests: params.MaxRequests,
		IsActive: true, CreatedAt: at, UpdatedAt: at}
	m.st.tokens[tok.ID] = tok
	return &tok, nil
}

func (m *memStore) TokenGetByID(_ context.Context, id int64) (*service.Token, error) {
	defer m.lock()()
	tok, ok := m.st.tokens[id]
	if !ok {
		return nil, service.ErrNotFound
	}
	return &tok, nil
}

func (m *memStore) TokenGetByHash(_ context.Context, secretHash []byte) (*service.Token, error) {
	defer m.lock()()
	for _, tok := range m.st.tokens {
		if bytes.Equal(tok.SecretHash, secretHash) {
			return &tok, nil
		}
	}
	return nil, service.ErrNotFound
}

func (m *memStore) TokenAuthenticate(_ context.Context, secretHash []byte) (*service.Token, *service.Project, error) {
	defer m.lock()()
	for _, tok := range m.st.tokens {
		if bytes.Equal(tok.SecretHash, secretHash) {
			p := m.st.projects[tok.ProjectID]
			if err := service.AuthenticationRefusal(&tok, &p, !now().Before(tok.ExpiresAt)); err != nil {
				return nil, nil, err
			}
			return &tok, &p, nil
		}
	}
	return nil, nil, service.ErrNotFound
}

func (m *memStore) TokenList(_ context.Context, params *service.TokenListParams) ([]*service.Token, error) {
	defer m.lock()()
	return page(m.st.tokens, params.AfterID, params.Limit, func(tok *service.Token) bool {
		return params.ProjectID == nil || tok.ProjectID == *params.ProjectID
	}), nil
}

func (m *memStore) TokenAdmit(_ context.Context, id int64) (*service.Token, error) {
	defer m.lock()()
	tok, ok := m.st.tokens[id]
	if !ok {
		return nil, service.ErrNotFound
	}
	p := m.st.projects[tok.ProjectID]
	at := now()
	if !tok.IsActive || !p.IsActive || !at.Before(tok.ExpiresAt) ||
		tok.MaxRequests != nil && tok.RequestCount >= *tok.MaxRequests {
		return nil, service.AdmissionRefusal(&tok, &p)
	}
	tok.RequestCount++
	tok.LastUsedAt = &at
	m.st.tokens[id] = tok
	return &tok, nil
}

func (m *memStore) TokenUpdate(ctx context.Context, params *service.TokenUpdateParams) (*service.Token, error) {
	leases := &service.LeaseScope{}
	defer m.outlast(ctx, leases)
	defer m.lock()()
	if params.RestrictsAdmission() {
		leases.AddToken(params.ID)
	}
	tok, ok := m.st.tokens[params.ID]
	if !ok {
		return nil, service.ErrNotFound
	}
	if params.IsActive != nil {
		tok.IsActive = *params.IsActive
	}
	if params.SetMaxRequests {
		if params.MaxRequests != nil && *params.MaxRequests <= 0 {
			return nil, service.ErrInvalid
		}
		tok.MaxRequests = params.MaxRequests
	}
	tok.UpdatedAt = now()
	m.st.tokens[tok.ID] = tok
	return &tok, nil
}

func (m *memStore) TokenRevokeAllForProject(ctx context.Context, projectID int64) (*service.RevokeResult, error) {
	leases := &service.LeaseScope{}
	defer m.outlast(ctx, leases)
	defer m.lock()()
	if _, ok := m.st.projects[projectID]; !ok {
		return nil, service.ErrNotFound
	}
	var res service.RevokeResult
	for id, tok := range m.st.tokens {
		switch {
		case tok.ProjectID != projectID:
		case tok.IsActive:
			tok.IsActive, tok.UpdatedAt = false, now()
			m.st.tokens[id] = tok
			res.RevokedCount++
			leases.ProjectIDs = []int64{projectID} // once, however many tokens
		default:
			res.AlreadyRevokedCount++
		}
	}
	return &res, nil
}

func (m *memStore) UsageInsertBatch(_ context.Context, events []*service.UsageEventCreateParams) (int64, error) {
	defer m.lock()()
	var written int64
	for _, e := range events {
		if e.EventID != nil && slices.ContainsFunc(m.st.usage, func(u service.UsageEvent) bool { return bytes.Equal(u.EventID, e.EventID) }) {
			continue
		}
		m.st.usage = append(m.st.usage, service.UsageEvent{ID: m.st.nextID(service.TableUsageEvents), TokenID: e.TokenID, ProjectID: e.ProjectID,
			Method: e.Method, Path: e.Path, Model: e.Model, Status: e.Status, PromptTokens: e.PromptTokens,
			CompletionTokens: e.CompletionTokens, TotalTokens: e.TotalTokens, LatencyMS: e.LatencyMS, CreatedAt: e.CreatedAt.UTC(),
			EventID: e.EventID})
		written++
	}
	return written, nil
}

// UsageTotalsByDay is, as the interface defines it, UsageTotals of each
// day's piece of the range, for the days that have events or rollups in it.
func (m *memStore) UsageTotalsByDay(ctx context.Context, f *service.UsageFilter) ([]*service.DayUsage, error) {
	since, until := service.UsageTimeRange(f)
	var days []time.Time
	unlock := m.lock()
	for _, e := range m.st.usage {
		if !e.CreatedAt.Before(since) && e.CreatedAt.Before(until) {
			days = append(days, service.UsageDay(e.CreatedAt))
		}
	}
	for _, d := range m.st.daily {
		if !d.Day.Before(since) && d.Day.Before(until) {
			days = append(days, d.Day)
		}
	}
	unlock()
	slices.SortFunc(days, time.Time.Compare)
	days = slices.CompactFunc(days, time.Time.Equal)
	out := []*service.DayUsage{}
	for _, day := range days {
		piece := *f
		piece.Since, piece.Until = service.UsageDayPiece(since, until, day)
		totals, err := m.UsageTotals(ctx, &piece)
		if err != nil {
			return nil, err
		}
		if totals.Requests > 0 {
			out = append(out, &service.DayUsage{Day: day, UsageTotals: *totals})
		}
	}
	return out, nil
}

func (m *memStore) UsageTotals(_ context.Context, f *service.UsageFilter) (*service.UsageTotals, error) {
	defer m.lock()()
	since, until := service.UsageTimeRange(f)
	sinceDay, untilDay := service.UsageDayRange(since, until)
	var totals service.UsageTotals
	byModel := map[string]*service.ModelUsage{}
	add := func(model string, n service.UsageCounts) {
		if byModel[model] == nil {
			byModel[model] = &service.ModelUsage{Model: model}
		}
		for _, c := range []*service.UsageCounts{&totals.UsageCounts, &byModel[model].UsageCounts} {
			c.Requests += n.Requests
			c.Errors += n.Errors
			c.PromptTokens += n.PromptTokens
			c.CompletionTokens += n.CompletionTokens
			c.TotalTokens += n.TotalTokens
		}
	}
	for _, e := range m.st.usage {
		if !matches(f.ProjectID, e.ProjectID) || !matches(f.TokenID, e.TokenID) || e.CreatedAt.Before(since) || !e.CreatedAt.Before(until) {
			continue
		}
		n := service.UsageCounts{Requests: 1, PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens, TotalTokens: e.TotalTokens}
		if e.Status >= 400 {
			n.Errors = 1
		}
		add(e.Model, n)
	}
	for _, d := range m.st.daily {
		if !matches(f.ProjectID, d.ProjectID) || !matches(f.TokenID, d.TokenID) || d.Day.Before(sinceDay) || !d.Day.Before(untilDay) {
			continue
		}
		add(d.Model, service.UsageCounts{Requests: d.Requests, Errors: d.Errors, PromptTokens: d.PromptTokens,
			CompletionTokens: d.CompletionTokens, TotalTokens: d.TotalTokens})
	}
	for _, m := range byModel {
		totals.ByModel = append(totals.ByModel, *m)
	}
	slices.SortFunc(totals.ByModel, func(a, b service.ModelUsage) int { return cmp.Compare(a.Model, b.Model) })
	return &totals, nil
}

func matches(want *int64, got int64) bool { return want == nil || *want == got }

func (m *memStore) UsageList(_ context.Context, params *service.UsageListParams) ([]*service.UsageEvent, error) {
	defer m.lock()()
	return newestFirst(m.st.usage, params.BeforeID, params.Limit, func(e *service.UsageEvent) (int64, bool) {
		return e.ID, matches(params.ProjectID, e.ProjectID) && matches(params.TokenID, e.TokenID)
	}), nil
}

// newestFirst lists rows (stored in ascending id order) with ids below beforeID.
func newestFirst[T any](rows []T, beforeID int64, limit int, keep func(*T) (id int64, ok bool)) []*T {
	var out []*T
	for i := len(rows) - 1; i >= 0 && int64(len(out)) < service.PageLimit(limit); i-- {
		row := rows[i]
		if id, ok := keep(&row); ok && (beforeID == 0 || id < beforeID) {
			out = append(out, &row)
		}
	}
	return out
}

func (m *memStore) AuditInsert(_ context.Context, params *service.AuditInsertParams) (*service.AuditEvent, error) {
	defer m.lock()()
	details := json.RawMessage(`{}`)
	if params.Details != nil {
		if !json.Valid(params.Details) {
			return nil, service.ErrInvalid
		}
		details = bytes.Clone(params.Details)
	}
	e := service.AuditEvent{ID: m.st.nextID(service.TableAuditEvents), Actor: params.Actor, Action: params.Action, ProjectID: params.ProjectID,
		TokenID: params.TokenID, Result: params.Result, Details: details, CreatedAt: now()}
	m.st.audit = append(m.st.audit, e)
	return &e, nil
}

func (m *memStore) AuditList(_ context.Context, params *service.AuditListParams) ([]*service.AuditEvent, error) {
	defer m.lock()()
	return newestFirst(m.st.audit, params.BeforeID, params.Limit, func(e *service.AuditEvent) (int64, bool) {
		return e.ID, params.ProjectID == nil || e.ProjectID != nil && *e.ProjectID == *params.ProjectID
	}), nil
}

func (m *memStore) InTx(ctx context.Context, fn func(tx service.Store) error) error {
	if m.inTx {
		return fn(m)
	}
	tx := &memStore{mu: m.mu, inTx: true, txing: m.txing, leases: &service.LeaseScope{}}
	if err := m.run(tx, fn); err != nil {
		return err
	}
	service.AwaitLeases(ctx, tx.leases, memLeases{m})
	return nil
}

// run runs fn on tx, holding the lock, on a copy of the state that replaces
// it if fn returns nil.
func (m *memStore) run(tx *memStore, fn func(tx service.Store) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.txing.Store(true)
	defer m.txing.Store(false)
	tx.st = m.st.clone()
	if err := fn(tx); err != nil {
		return err
	}
	*m.st = *tx.st
	return nil
}

// outlast waits out the admission leases of the tokens in scope once the
// change has committed: at once outside a transaction (after the unlock),
// else when the transaction commits.
func (m *memStore) outlast(ctx context.Context, scope *service.LeaseScope) {
	if m.inTx {
		m.leases.TokenIDs = append(m.leases.TokenIDs, scope.TokenIDs...)
		m.leases.ProjectIDs = append(m.leases.ProjectIDs, scope.ProjectIDs...)
		return
	}
	service.AwaitLeases(ctx, scope, memLeases{m})
}

// memLeases reads the leases recorded in tokens' LeaseUntil.
type memLeases struct{ m *memStore }

func (r memLeases) TokenLeaseRemaining(_ context.Context, id int64) (time.Duration, error) {
	return r.remaining(func(tok *service.Token) bool { return tok.ID == id }), nil
}

func (r memLeases) ProjectLeaseRemaining(_ context.Context, id int64) (time.Duration, error) {
	return r.remaining(func(tok *service.Token) bool { return tok.ProjectID == id }), nil
}

func (r memLeases) remaining(of func(*service.Token) bool) time.Duration {
	defer r.m.lock()()
	var left time.Duration
	for _, tok := range r.m.st.tokens {
		if of(&tok) && tok.LeaseUntil != nil {
			left = max(left, time.Until(*tok.LeaseUntil))
		}
	}
	return left
}

func (m *memStore) Ping(context.Context) error { return nil }
func (m *memStore) Close() error               { return nil }
