package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

var tokenCreateCases = []storeCase{
	{"ReturnsUnusedActiveToken", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		params := tokenParams(p.ID, withMaxRequests(10))
		tok, err := s.TokenCreate(t.Context(), params)
		if err != nil {
			t.Fatalf("TokenCreate: %v", err)
		}
		if tok.ID <= 0 {
			t.Errorf("ID = %d, want positive", tok.ID)
		}
		assertTokenEqual(t, tok, &service.Token{
			ID: tok.ID, ProjectID: p.ID, SecretHash: params.SecretHash, TokenPrefix: params.TokenPrefix,
			ExpiresAt: params.ExpiresAt, MaxRequests: ptr[int64](10), IsActive: true,
			CreatedAt: tok.CreatedAt, UpdatedAt: tok.UpdatedAt,
		})
		assertRecent(t, "CreatedAt", tok.CreatedAt)
		assertRecent(t, "UpdatedAt", tok.UpdatedAt)
	}},
	{"NilMaxRequestsIsUnlimited", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		if tok.MaxRequests != nil {
			t.Errorf("MaxRequests = %d, want nil", *tok.MaxRequests)
		}
		if getToken(t, s, tok.ID).MaxRequests != nil {
			t.Error("MaxRequests read back is not nil")
		}
	}},
	{"KeepsExpiresAtInstantFromAnyZone", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		at := time.Date(2031, 6, 7, 8, 9, 10, 123_456_789, time.FixedZone("x", 5*3600))
		tok := newToken(t, s, p.ID, withExpiresAt(at))
		assertSameInstant(t, "ExpiresAt", tok.ExpiresAt, at)
		assertSameInstant(t, "ExpiresAt read back", getToken(t, s, tok.ID).ExpiresAt, at)
	}},
	{"AcceptsPastExpiry", func(t *testing.T, s service.Store) {
		at := time.Now().Add(-time.Hour)
		tok := newToken(t, s, newProject(t, s).ID, withExpiresAt(at))
		assertSameInstant(t, "ExpiresAt", tok.ExpiresAt, at)
	}},
	{"UnknownProjectIsNotFound", func(t *testing.T, s service.Store) {
		unknown := newProject(t, s).ID + 1000
		_, err := s.TokenCreate(t.Context(), tokenParams(unknown))
		requireErrorIs(t, "TokenCreate for an unknown project", err, service.ErrNotFound)
	}},
	{"RefusesInactiveProject", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		setProjectActive(t, s, p.ID, false)
		_, err := s.TokenCreate(t.Context(), tokenParams(p.ID))
		requireErrorIs(t, "TokenCreate for an inactive project", err, service.ErrProjectInactive)
		listed, err := s.TokenList(t.Context(), &service.TokenListParams{})
		if err != nil {
			t.Fatalf("TokenList: %v", err)
		}
		if len(listed) != 0 {
			t.Errorf("refused TokenCreate left %d tokens", len(listed))
		}
	}},
	{"RefusesTakenSecretHash", func(t *testing.T, s service.Store) {
		first := newToken(t, s, newProject(t, s).ID)
		for _, projectID := range []int64{first.ProjectID, newProject(t, s).ID} {
			params := tokenParams(projectID)
			params.SecretHash = first.SecretHash
			_, err := s.TokenCreate(t.Context(), params)
			requireErrorIs(t, "TokenCreate with a taken secret hash", err, service.ErrConflict)
		}
	}},
	{"RefusesNonPositiveMaxRequests", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		for _, n := range []int64{0, -1} {
			_, err := s.TokenCreate(t.Context(), tokenParams(p.ID, withMaxRequests(n)))
			requireErrorIs(t, "TokenCreate with MaxRequests "+show(&n), err, service.ErrInvalid)
		}
	}},
	{"SucceedsConcurrently", func(t *testing.T, s service.Store) {
		projects := []*service.Project{newProject(t, s), newProject(t, s)}
		const n = 32
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = s.TokenCreate(t.Context(), tokenParams(projects[i%2].ID))
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent TokenCreate: %v", err)
		}
		for _, p := range projects {
			listed, err := s.TokenList(t.Context(), &service.TokenListParams{ProjectID: &p.ID})
			if err != nil {
				t.Fatalf("TokenList: %v", err)
			}
			if len(listed) != n/2 {
				t.Errorf("project %d has %d tokens, want %d", p.ID, len(listed), n/2)
			}
		}
	}},
}

var tokenGetByIDCases = []storeCase{
	{"ReturnsCreatedToken", func(t *testing.T, s service.Store) {
		want := newToken(t, s, newProject(t, s).ID, withMaxRequests(5))
		assertTokenEqual(t, getToken(t, s, want.ID), want)
	}},
	{"UnknownIDIsNotFound", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		_, err := s.TokenGetByID(t.Context(), tok.ID+1000)
		requireErrorIs(t, "TokenGetByID(unknown)", err, service.ErrNotFound)
	}},
}

var tokenGetByHashCases = []storeCase{
	{"ReturnsToken", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		want := newToken(t, s, p.ID)
		newToken(t, s, p.ID)
		admit(t, s, want.ID, 1)
		want = getToken(t, s, want.ID)
		got, err := s.TokenGetByHash(t.Context(), want.SecretHash)
		if err != nil {
			t.Fatalf("TokenGetByHash: %v", err)
		}
		assertTokenEqual(t, got, want)
	}},
	{"UnknownHashIsNotFound", func(t *testing.T, s service.Store) {
		newToken(t, s, newProject(t, s).ID)
		_, err := s.TokenGetByHash(t.Context(), randomBytes(32))
		requireErrorIs(t, "TokenGetByHash(unknown)", err, service.ErrNotFound)
	}},
}

var tokenListCases = []storeCase{
	{"ListsInAscendingIDOrder", func(t *testing.T, s service.Store) {
		a, b := newProject(t, s), newProject(t, s)
		var want []*service.Token
		for i := range 6 {
			want = append(want, newToken(t, s, []int64{a.ID, b.ID}[i%2]))
		}
		got, err := s.TokenList(t.Context(), &service.TokenListParams{})
		if err != nil {
			t.Fatalf("TokenList: %v", err)
		}
		assertEqualSlices(t, "TokenList ids", ids(got, tokenID), ids(want, tokenID))
		if len(got) == len(want) {
			for i := range got {
				assertTokenEqual(t, got[i], want[i])
			}
		}
	}},
	{"FiltersByProject", func(t *testing.T, s service.Store) {
		a, b, empty := newProject(t, s), newProject(t, s), newProject(t, s)
		var inA []*service.Token
		for range 3 {
			inA = append(inA, newToken(t, s, a.ID))
			newToken(t, s, b.ID)
		}
		for _, c := range []struct {
			projectID int64
			want      []*service.Token
		}{{a.ID, inA}, {empty.ID, nil}, {b.ID + 1000, nil}} {
			got, err := s.TokenList(t.Context(), &service.TokenListParams{ProjectID: &c.projectID})
			if err != nil {
				t.Fatalf("TokenList(project %d): %v", c.projectID, err)
			}
			assertEqualSlices(t, "TokenList ids", ids(got, tokenID), ids(c.want, tokenID))
		}
	}},
	{"PagesWithAfterID", func(t *testing.T, s service.Store) {
		a, b := newProject(t, s), newProject(t, s)
		var all, inA []*service.Token
		for range 5 {
			tok := newToken(t, s, a.ID)
			all = append(all, tok, newToken(t, s, b.ID))
			inA = append(inA, tok)
		}
		got, sizes := pageThrough(t, func(after int64) ([]*service.Token, error) {
			return s.TokenList(t.Context(), &service.TokenListParams{AfterID: after, Limit: 4})
		}, tokenID)
		assertEqualSlices(t, "all pages' ids", ids(got, tokenID), ids(all, tokenID))
		assertEqualSlices(t, "page sizes", sizes, []int{4, 4, 2, 0})

		got, sizes = pageThrough(t, func(after int64) ([]*service.Token, error) {
			return s.TokenList(t.Context(), &service.TokenListParams{ProjectID: &a.ID, AfterID: after, Limit: 2})
		}, tokenID)
		assertEqualSlices(t, "project pages' ids", ids(got, tokenID), ids(inA, tokenID))
		assertEqualSlices(t, "project page sizes", sizes, []int{2, 2, 1, 0})
	}},
}

var tokenUpdateCases = []storeCase{
	{"DeactivatesAndReactivates", func(t *testing.T, s service.Store) {
		before := newToken(t, s, newProject(t, s).ID, withMaxRequests(3))
		admit(t, s, before.ID, 1)
		before = getToken(t, s, before.ID)
		for _, active := range []bool{false, true} {
			got, err := s.TokenUpdate(t.Context(), &service.TokenUpdateParams{ID: before.ID, IsActive: &active})
			if err != nil {
				t.Fatalf("TokenUpdate(IsActive=%t): %v", active, err)
			}
			assertTokenUpdated(t, got, before, func(tok *service.Token) { tok.IsActive = active })
			assertTokenEqual(t, getToken(t, s, before.ID), got)
			before = got
		}
	}},
	{"SetsMaxRequests", func(t *testing.T, s service.Store) {
		before := newToken(t, s, newProject(t, s).ID, withMaxRequests(3))
		for _, limit := range []*int64{ptr[int64](50), nil, ptr[int64](1)} {
			got, err := s.TokenUpdate(t.Context(), &service.TokenUpdateParams{ID: before.ID, SetMaxRequests: true, MaxRequests: limit})
			if err != nil {
				t.Fatalf("TokenUpdate(MaxRequests=%s): %v", show(limit), err)
			}
			assertTokenUpdated(t, got, before, func(tok *service.Token) { tok.MaxRequests = limit })
			assertTokenEqual(t, getToken(t, s, before.ID), got)
			before = got
		}
	}},
	{"MaxRequestsWithoutSetIsIgnored", func(t *testing.T, s service.Store) {
		before := newToken(t, s, newProject(t, s).ID, withMaxRequests(3))
		got, err := s.TokenUpdate(t.Context(), &service.TokenUpdateParams{ID: before.ID, MaxRequests: ptr[int64](9)})
		if err != nil {
			t.Fatalf("TokenUpdate: %v", err)
		}
		assertTokenUpdated(t, got, before, func(*service.Token) {})
	}},
	{"ChangesBothFieldsAtOnce", func(t *testing.T, s service.Store) {
		before := newToken(t, s, newProject(t, s).ID)
		inactive := false
		got, err := s.TokenUpdate(t.Context(), &service.TokenUpdateParams{
			ID: before.ID, IsActive: &inactive, SetMaxRequests: true, MaxRequests: ptr[int64](7),
		})
		if err != nil {
			t.Fatalf("TokenUpdate: %v", err)
		}
		assertTokenUpdated(t, got, before, func(tok *service.Token) { tok.IsActive, tok.MaxRequests = false, ptr[int64](7) })
		assertTokenEqual(t, getToken(t, s, before.ID), got)
	}},
	{"NothingSetKeepsRow", func(t *testing.T, s service.Store) {
		before := newToken(t, s, newProject(t, s).ID, withMaxRequests(3))
		got, err := s.TokenUpdate(t.Context(), &service.TokenUpdateParams{ID: before.ID})
		if err != nil {
			t.Fatalf("TokenUpdate: %v", err)
		}
		assertTokenUpdated(t, got, before, func(*service.Token) {})
		assertTokenEqual(t, getToken(t, s, before.ID), got)
	}},
	{"RefusesNonPositiveMaxRequests", func(t *testing.T, s service.Store) {
		before := newToken(t, s, newProject(t, s).ID, withMaxRequests(3))
		inactive := false
		for _, n := range []int64{0, -1} {
			_, err := s.TokenUpdate(t.Context(), &service.TokenUpdateParams{
				ID: before.ID, IsActive: &inactive, SetMaxRequests: true, MaxRequests: &n,
			})
			requireErrorIs(t, "TokenUpdate with MaxRequests "+show(&n), err, service.ErrInvalid)
			assertTokenEqual(t, getToken(t, s, before.ID), before)
		}
	}},
	{"UnknownIDIsNotFound", func(t *testing.T, s service.Store) {
		unknown := newToken(t, s, newProject(t, s).ID).ID + 1000
		inactive := false
		for _, params := range []*service.TokenUpdateParams{
			{ID: unknown, IsActive: &inactive},
			{ID: unknown, SetMaxRequests: true, MaxRequests: ptr[int64](5)},
			{ID: unknown, SetMaxRequests: true},
			{ID: unknown},
		} {
			_, err := s.TokenUpdate(t.Context(), params)
			requireErrorIs(t, "TokenUpdate(unknown)", err, service.ErrNotFound)
		}
	}},
}

var tokenRevokeAllForProjectCases = []storeCase{
	{"RevokesActiveAndCountsAlreadyRevoked", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		var toks []*service.Token
		for range 4 {
			toks = append(toks, newToken(t, s, p.ID))
		}
		setTokenActive(t, s, toks[0].ID, false)
		got, err := s.TokenRevokeAllForProject(t.Context(), p.ID)
		if err != nil {
			t.Fatalf("TokenRevokeAllForProject: %v", err)
		}
		if *got != (service.RevokeResult{RevokedCount: 3, AlreadyRevokedCount: 1}) {
			t.Errorf("TokenRevokeAllForProject = %+v, want 3 revoked, 1 already revoked", *got)
		}
		for _, tok := range toks {
			if getToken(t, s, tok.ID).IsActive {
				t.Errorf("token %d is still active", tok.ID)
			}
			_, err := s.TokenAdmit(t.Context(), tok.ID)
			requireErrorIs(t, "TokenAdmit after revocation", err, service.ErrTokenRevoked)
		}
	}},
	{"RepeatedCallRevokesNothingNew", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		newToken(t, s, p.ID)
		newToken(t, s, p.ID)
		for _, want := range []service.RevokeResult{{RevokedCount: 2}, {AlreadyRevokedCount: 2}} {
			got, err := s.TokenRevokeAllForProject(t.Context(), p.ID)
			if err != nil {
				t.Fatalf("TokenRevokeAllForProject: %v", err)
			}
			if *got != want {
				t.Errorf("TokenRevokeAllForProject = %+v, want %+v", *got, want)
			}
		}
	}},
	{"LeavesOtherProjectsUntouched", func(t *testing.T, s service.Store) {
		p, other := newProject(t, s), newProject(t, s)
		newToken(t, s, p.ID)
		kept := newToken(t, s, other.ID)
		if _, err := s.TokenRevokeAllForProject(t.Context(), p.ID); err != nil {
			t.Fatalf("TokenRevokeAllForProject: %v", err)
		}
		assertTokenEqual(t, getToken(t, s, kept.ID), kept)
	}},
	{"ProjectWithoutTokensRevokesNothing", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		got, err := s.TokenRevokeAllForProject(t.Context(), p.ID)
		if err != nil {
			t.Fatalf("TokenRevokeAllForProject: %v", err)
		}
		if *got != (service.RevokeResult{}) {
			t.Errorf("TokenRevokeAllForProject = %+v, want zero counts", *got)
		}
	}},
	{"UnknownProjectIsNotFound", func(t *testing.T, s service.Store) {
		unknown := newProject(t, s).ID + 1000
		_, err := s.TokenRevokeAllForProject(t.Context(), unknown)
		requireErrorIs(t, "TokenRevokeAllForProject(unknown)", err, service.ErrNotFound)
	}},
}
