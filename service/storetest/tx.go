package storetest

import (
	"errors"
	"testing"

	"github.com/llmproxy/llmproxy/service"
)

var errRollback = errors.New("storetest: roll back")

// writeEverything writes one row of every kind through st and returns the
// project and token it created.
func writeEverything(t *testing.T, st service.Store) (*service.Project, *service.Token, error) {
	p, err := st.ProjectCreate(t.Context(), projectParams())
	if err != nil {
		return nil, nil, err
	}
	tok, err := st.TokenCreate(t.Context(), tokenParams(p.ID))
	if err != nil {
		return nil, nil, err
	}
	if _, err := st.TokenAdmit(t.Context(), tok.ID); err != nil {
		return nil, nil, err
	}
	if _, err := st.UsageInsertBatch(t.Context(), []*service.UsageEventCreateParams{usageEvent(tok.ID, p.ID, usageBase)}); err != nil {
		return nil, nil, err
	}
	if _, err := st.AuditInsert(t.Context(), auditParams(&p.ID)); err != nil {
		return nil, nil, err
	}
	return p, tok, nil
}

// assertEmpty checks that s holds no row of any kind.
func assertEmpty(t *testing.T, s service.Store) {
	t.Helper()
	projects, err := s.ProjectList(t.Context(), &service.ProjectListParams{})
	if err != nil || len(projects) != 0 {
		t.Errorf("ProjectList = %d projects, %v; want none", len(projects), err)
	}
	tokens, err := s.TokenList(t.Context(), &service.TokenListParams{})
	if err != nil || len(tokens) != 0 {
		t.Errorf("TokenList = %d tokens, %v; want none", len(tokens), err)
	}
	assertUsageRequests(t, s, &service.UsageFilter{}, 0)
	audit, err := s.AuditList(t.Context(), &service.AuditListParams{})
	if err != nil || len(audit) != 0 {
		t.Errorf("AuditList = %d events, %v; want none", len(audit), err)
	}
}

var inTxCases = []storeCase{
	{"CommitsWhenFnReturnsNil", func(t *testing.T, s service.Store) {
		var p *service.Project
		var tok *service.Token
		err := s.InTx(t.Context(), func(tx service.Store) error {
			var err error
			if p, tok, err = writeEverything(t, tx); err != nil {
				return err
			}
			// The transaction sees its own writes.
			_, err = tx.TokenGetByHash(t.Context(), tok.SecretHash)
			return err
		})
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
		getProject(t, s, p.ID)
		assertRequestCount(t, s, tok.ID, 1)
		assertUsageRequests(t, s, &service.UsageFilter{ProjectID: &p.ID}, 1)
		audit, err := s.AuditList(t.Context(), &service.AuditListParams{ProjectID: &p.ID})
		if err != nil || len(audit) != 1 {
			t.Errorf("AuditList = %d events, %v; want 1", len(audit), err)
		}
	}},
	{"RollsBackWhenFnFails", func(t *testing.T, s service.Store) {
		var p *service.Project
		err := s.InTx(t.Context(), func(tx service.Store) error {
			var err error
			if p, _, err = writeEverything(t, tx); err != nil {
				return err
			}
			return errRollback
		})
		requireErrorIs(t, "InTx", err, errRollback)
		_, err = s.ProjectGetByID(t.Context(), p.ID)
		requireErrorIs(t, "ProjectGetByID after rollback", err, service.ErrNotFound)
		assertEmpty(t, s)
	}},
	{"RollsBackUpdates", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		tok := newToken(t, s, p.ID)
		err := s.InTx(t.Context(), func(tx service.Store) error {
			if _, err := tx.TokenAdmit(t.Context(), tok.ID); err != nil {
				return err
			}
			if _, err := tx.TokenRevokeAllForProject(t.Context(), p.ID); err != nil {
				return err
			}
			inactive := false
			if _, err := tx.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: p.ID, IsActive: &inactive}); err != nil {
				return err
			}
			return errRollback
		})
		requireErrorIs(t, "InTx", err, errRollback)
		assertProjectEqual(t, getProject(t, s, p.ID), p)
		assertTokenEqual(t, getToken(t, s, tok.ID), tok)
	}},
	{"RollsBackOnStoreError", func(t *testing.T, s service.Store) {
		params := projectParams()
		err := s.InTx(t.Context(), func(tx service.Store) error {
			if _, err := tx.ProjectCreate(t.Context(), params); err != nil {
				return err
			}
			_, err := tx.ProjectCreate(t.Context(), params)
			return err
		})
		requireErrorIs(t, "InTx creating a project twice", err, service.ErrConflict)
		assertEmpty(t, s)
		// The name is free again and the store still writes.
		if _, err := s.ProjectCreate(t.Context(), params); err != nil {
			t.Fatalf("ProjectCreate after rollback: %v", err)
		}
	}},
	{"NestedCallJoinsOuter", func(t *testing.T, s service.Store) {
		var outer, inner *service.Project
		err := s.InTx(t.Context(), func(tx service.Store) error {
			var err error
			if outer, err = tx.ProjectCreate(t.Context(), projectParams()); err != nil {
				return err
			}
			err = tx.InTx(t.Context(), func(nested service.Store) error {
				// The nested call sees the outer transaction's writes.
				if _, err := nested.ProjectGetByID(t.Context(), outer.ID); err != nil {
					return err
				}
				inner, err = nested.ProjectCreate(t.Context(), projectParams())
				return err
			})
			if err != nil {
				return err
			}
			if _, err := tx.ProjectGetByID(t.Context(), inner.ID); err != nil {
				return err
			}
			return errRollback
		})
		requireErrorIs(t, "InTx", err, errRollback)
		// The nested call committed nothing of its own.
		assertEmpty(t, s)
	}},
	{"NestedCallCommitsWithOuter", func(t *testing.T, s service.Store) {
		var inner *service.Project
		err := s.InTx(t.Context(), func(tx service.Store) error {
			return tx.InTx(t.Context(), func(nested service.Store) error {
				var err error
				inner, err = nested.ProjectCreate(t.Context(), projectParams())
				return err
			})
		})
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
		getProject(t, s, inner.ID)
	}},
}

var pingCases = []storeCase{
	{"Answers", func(t *testing.T, s service.Store) {
		if err := s.Ping(t.Context()); err != nil {
			t.Errorf("Ping: %v", err)
		}
	}},
}
