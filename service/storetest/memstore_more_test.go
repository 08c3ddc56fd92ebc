package storetest

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// The rest of memStore: admission by hash, pruning, whole tables.

func (m *memStore) tokenByHash(secretHash []byte) (service.Token, bool) {
	for _, tok := range m.st.tokens {
		if bytes.Equal(tok.SecretHash, secretHash) {
			return tok, true
		}
	}
	return service.Token{}, false
}

func (m *memStore) TokenAdmitByHash(_ context.Context, params *service.TokenAdmitByHashParams) (*service.Token, *service.Project, error) {
	if err := service.CheckAdmission(params); err != nil {
		return nil, nil, err
	}
	n, reserve := params.N, params.Reserve
	defer m.lock()()
	tok, ok := m.tokenByHash(params.SecretHash)
	if !ok {
		return nil, nil, service.ErrNotFound
	}
	p := m.st.projects[tok.ProjectID]
	at := now()
	if !tok.IsActive || !p.IsActive || !at.Before(tok.ExpiresAt) ||
		tok.MaxRequests != nil && tok.RequestCount+n+reserve > *tok.MaxRequests {
		return nil, nil, service.BatchRefusal(&tok, &p, n+reserve)
	}
	tok.RequestCount += n + reserve
	tok.RequestsReserved += reserve
	tok.LastUsedAt = &at
	if end := at.Add(params.Lease); params.Lease > 0 && (tok.LeaseUntil == nil || end.After(*tok.LeaseUntil)) {
		tok.LeaseUntil = &end
	}
	m.st.tokens[tok.ID] = tok
	return &tok, &p, nil
}

func (m *memStore) TokenSettleReserved(_ context.Context, tokenID, reserved, unused int64) error {
	if err := service.CheckSettlement(reserved, unused); err != nil {
		return err
	}
	defer m.lock()()
	tok, ok := m.st.tokens[tokenID]
	switch {
	case !ok:
		return service.ErrNotFound
	case tok.RequestsReserved < reserved:
		return service.ErrInvalid
	}
	tok.RequestsReserved -= reserved
	tok.RequestCount -= unused
	m.st.tokens[tokenID] = tok
	return nil
}

// UsagePrune moves events past the retention into usage_daily directly:
// memStore keeps no hourly rollup (its reads sum the events), so it has no
// hours to fold, and UsageRollUp finds nothing to do.
func (m *memStore) UsagePrune(ctx context.Context, params *service.UsagePruneParams) (*service.UsagePruneResult, error) {
	return service.PruneUsage(ctx, params, service.UsagePruneSteps{DeleteEvents: func(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		defer m.lock()()
		var batch []*service.UsageEvent
		m.st.usage = slices.DeleteFunc(m.st.usage, func(e service.UsageEvent) bool {
			if len(batch) < limit && e.CreatedAt.Before(cutoff) {
				batch = append(batch, &e)
				return true
			}
			return false
		})
		for _, d := range rollUpDays(batch) {
			i, found := slices.BinarySearchFunc(m.st.daily, d.Key(), func(row service.UsageDaily, key service.UsageDailyKey) int {
				return row.Key().Compare(key)
			})
			if !found {
				m.st.daily = slices.Insert(m.st.daily, i, service.UsageDaily{Day: d.Day, ProjectID: d.ProjectID, TokenID: d.TokenID, Model: d.Model})
			}
			row := &m.st.daily[i]
			row.Requests += d.Requests
			row.Errors += d.Errors
			row.PromptTokens += d.PromptTokens
			row.CompletionTokens += d.CompletionTokens
			row.TotalTokens += d.TotalTokens
		}
		return int64(len(batch)), nil
	}, FoldHour: func(context.Context, time.Time) (int, error) { return 0, nil }})
}

func (m *memStore) UsageRollUp(ctx context.Context, _ int) (int64, error) {
	return 0, ctx.Err()
}

func (m *memStore) ProjectDump(_ context.Context, p *service.DumpParams) ([]*service.Project, error) {
	defer m.lock()()
	return dump(sortedValues(m.st.projects), p, func(r *service.Project) int64 { return r.ID }), nil
}

func (m *memStore) TokenDump(_ context.Context, p *service.DumpParams) ([]*service.Token, error) {
	defer m.lock()()
	return dump(sortedValues(m.st.tokens), p, func(r *service.Token) int64 { return r.ID }), nil
}

func (m *memStore) UsageDump(_ context.Context, p *service.DumpParams) ([]*service.UsageEvent, error) {
	defer m.lock()()
	return dump(m.st.usage, p, func(r *service.UsageEvent) int64 { return r.ID }), nil
}

func (m *memStore) AuditDump(_ context.Context, p *service.DumpParams) ([]*service.AuditEvent, error) {
	defer m.lock()()
	return dump(m.st.audit, p, func(r *service.AuditEvent) int64 { return r.ID }), nil
}

func (m *memStore) UsageDailyDump(_ context.Context, p *service.UsageDailyDumpParams) ([]*service.UsageDaily, error) {
	defer m.lock()()
	out := []*service.UsageDaily{}
	for _, r := range m.st.daily {
		if r.Key().Compare(p.After) > 0 && int64(len(out)) < p.MaxRows() {
			out = append(out, &r)
		}
	}
	return out, nil
}

func sortedValues[T any](rows map[int64]T) []T {
	out := make([]T, 0, len(rows))
	for _, id := range slices.Sorted(maps.Keys(rows)) {
		out = append(out, rows[id])
	}
	return out
}

// dump pages rows, in ascending id order, after p.AfterID.
func dump[T any](rows []T, p *service.DumpParams, id func(*T) int64) []*T {
	out := []*T{}
	for _, r := range rows {
		if id(&r) > p.AfterID && int64(len(out)) < p.MaxRows() {
			out = append(out, &r)
		}
	}
	return out
}

func (m *memStore) TableCounts(context.Context) (map[string]int64, error) {
	defer m.lock()()
	return map[string]int64{
		service.TableProjects:    int64(len(m.st.projects)),
		service.TableTokens:      int64(len(m.st.tokens)),
		service.TableUsageEvents: int64(len(m.st.usage)),
		service.TableUsageDaily:  int64(len(m.st.daily)),
		service.TableAuditEvents: int64(len(m.st.audit)),
	}, nil
}

// insertFull adds rows to a table, all or none: an id already there (or
// twice in rows) is ErrConflict, a row that check refuses its error.
func insertFull[T any](m *memStore, rows []*T, id func(*T) int64, has func(int64) bool, check func(*T) error, add func(T)) error {
	defer m.lock()()
	seen := map[int64]bool{}
	for _, r := range rows {
		if has(id(r)) || seen[id(r)] {
			return fmt.Errorf("%w: id %d", service.ErrConflict, id(r))
		}
		seen[id(r)] = true
		if err := check(r); err != nil {
			return err
		}
	}
	for _, r := range rows {
		add(*r)
	}
	return nil
}

func noCheck[T any](*T) error { return nil }

func (m *memStore) ProjectInsertFullMany(_ context.Context, rows []*service.Project) error {
	return insertFull(m, rows, func(r *service.Project) int64 { return r.ID },
		func(id int64) bool { _, ok := m.st.projects[id]; return ok },
		func(r *service.Project) error {
			for _, p := range m.st.projects {
				if p.Name == r.Name {
					return service.ErrConflict
				}
			}
			return nil
		},
		func(r service.Project) { m.st.projects[r.ID] = r })
}

func (m *memStore) TokenInsertFullMany(_ context.Context, rows []*service.Token) error {
	return insertFull(m, rows, func(r *service.Token) int64 { return r.ID },
		func(id int64) bool { _, ok := m.st.tokens[id]; return ok },
		func(r *service.Token) error {
			if _, ok := m.st.projects[r.ProjectID]; !ok {
				return service.ErrReference
			}
			if _, dup := m.tokenByHash(r.SecretHash); dup {
				return service.ErrConflict
			}
			return nil
		},
		func(r service.Token) { m.st.tokens[r.ID] = r })
}

func (m *memStore) UsageInsertFullMany(_ context.Context, rows []*service.UsageEvent) error {
	return insertFull(m, rows, func(r *service.UsageEvent) int64 { return r.ID },
		func(id int64) bool {
			return slices.ContainsFunc(m.st.usage, func(e service.UsageEvent) bool { return e.ID == id })
		},
		noCheck[service.UsageEvent],
		func(r service.UsageEvent) {
			m.st.usage = append(m.st.usage, r)
			slices.SortFunc(m.st.usage, func(a, b service.UsageEvent) int { return cmp.Compare(a.ID, b.ID) })
		})
}

func (m *memStore) AuditInsertFullMany(_ context.Context, rows []*service.AuditEvent) error {
	return insertFull(m, rows, func(r *service.AuditEvent) int64 { return r.ID },
		func(id int64) bool {
			return slices.ContainsFunc(m.st.audit, func(e service.AuditEvent) bool { return e.ID == id })
		},
		noCheck[service.AuditEvent],
		func(r service.AuditEvent) {
			m.st.audit = append(m.st.audit, r)
			slices.SortFunc(m.st.audit, func(a, b service.AuditEvent) int { return cmp.Compare(a.ID, b.ID) })
		})
}

func (m *memStore) UsageDailyInsertFullMany(_ context.Context, rows []*service.UsageDaily) error {
	defer m.lock()()
	daily := slices.Clone(m.st.daily)
	for _, r := range rows {
		if !r.Day.Equal(service.UsageDay(r.Day)) {
			return service.ErrInvalid
		}
		i, found := slices.BinarySearchFunc(daily, r.Key(), func(row service.UsageDaily, key service.UsageDailyKey) int {
			return row.Key().Compare(key)
		})
		if found {
			return service.ErrConflict
		}
		row := *r
		row.Day = row.Day.UTC()
		daily = slices.Insert(daily, i, row)
	}
	m.st.daily = daily
	return nil
}

func (m *memStore) TableTruncateAll(context.Context) error {
	defer m.lock()()
	m.st.projects, m.st.tokens = map[int64]service.Project{}, map[int64]service.Token{}
	m.st.usage, m.st.daily, m.st.audit = nil, nil, nil
	m.st.sessions = map[string]service.Session{}
	return nil
}

func (m *memStore) TableSequencesReset(context.Context) (map[string]int64, error) {
	defer m.lock()()
	largest := map[string]int64{
		service.TableProjects:    maxID(sortedValues(m.st.projects), func(r service.Project) int64 { return r.ID }),
		service.TableTokens:      maxID(sortedValues(m.st.tokens), func(r service.Token) int64 { return r.ID }),
		service.TableUsageEvents: maxID(m.st.usage, func(r service.UsageEvent) int64 { return r.ID }),
		service.TableAuditEvents: maxID(m.st.audit, func(r service.AuditEvent) int64 { return r.ID }),
	}
	next := map[string]int64{}
	for table, id := range largest {
		m.st.lastIDs[table] = id
		next[table] = id + 1
	}
	return next, nil
}

func maxID[T any](rows []T, id func(T) int64) int64 {
	var largest int64
	for _, r := range rows {
		largest = max(largest, id(r))
	}
	return largest
}

// Backup: the memory store has no file to copy.
func (m *memStore) Backup(context.Context, string) error {
	return fmt.Errorf("memory store: backup: %w", service.ErrNotImplemented)
}

// PoolStats reports one connection, which a transaction holds.
func (m *memStore) PoolStats() service.PoolStats {
	stats := service.PoolStats{MaxOpen: 1, Open: 1, Idle: 1}
	if m.txing.Load() {
		stats.InUse, stats.Idle = 1, 0
	}
	return stats
}

func (m *memStore) SessionCreate(_ context.Context, p *service.SessionCreateParams) (*service.Session, error) {
	defer m.lock()()
	if _, taken := m.st.sessions[string(p.SecretHash)]; taken {
		return nil, service.ErrConflict
	}
	row := service.Session{SecretHash: bytes.Clone(p.SecretHash), CSRFToken: p.CSRFToken, ExpiresAt: p.ExpiresAt.UTC(), CreatedAt: now()}
	m.st.sessions[string(p.SecretHash)] = row
	return &row, nil
}

func (m *memStore) SessionGetByHash(_ context.Context, secretHash []byte) (*service.Session, error) {
	defer m.lock()()
	row, ok := m.st.sessions[string(secretHash)]
	if !ok || !now().Before(row.ExpiresAt) {
		return nil, service.ErrNotFound
	}
	return &row, nil
}

func (m *memStore) SessionDelete(_ context.Context, secretHash []byte) error {
	defer m.lock()()
	if _, ok := m.st.sessions[string(secretHash)]; !ok {
		return service.ErrNotFound
	}
	delete(m.st.sessions, string(secretHash))
	return nil
}

func (m *memStore) SessionDeleteExpired(context.Context) (int64, error) {
	defer m.lock()()
	var n int64
	for key, row := range m.st.sessions {
		if !now().Before(row.ExpiresAt) {
			delete(m.st.sessions, key)
			n++
		}
	}
	return n, nil
}

// rollUpDays sums events per UTC day, project, token and model, in key
// order.
func rollUpDays(events []*service.UsageEvent) []*service.UsageDaily {
	byKey := make(map[service.UsageDailyKey]*service.UsageDaily)
	for _, e := range events {
		key := service.UsageDailyKey{Day: service.UsageDay(e.CreatedAt), ProjectID: e.ProjectID, TokenID: e.TokenID, Model: e.Model}
		d := byKey[key]
		if d == nil {
			d = &service.UsageDaily{Day: key.Day, ProjectID: e.ProjectID, TokenID: e.TokenID, Model: e.Model}
			byKey[key] = d
		}
		d.Requests++
		if e.Status >= 400 {
			d.Errors++
		}
		d.PromptTokens += e.PromptTokens
		d.CompletionTokens += e.CompletionTokens
		d.TotalTokens += e.TotalTokens
	}
	rows := make([]*service.UsageDaily, 0, len(byKey))
	for _, d := range byKey {
		rows = append(rows, d)
	}
	slices.SortFunc(rows, func(a, b *service.UsageDaily) int { return a.Key().Compare(b.Key()) })
	return rows
}
