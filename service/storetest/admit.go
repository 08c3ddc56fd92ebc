package storetest

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

var tokenAdmitCases = []storeCase{
	{"CountsOneRequest", func(t *testing.T, s service.Store) {
		before := newToken(t, s, newProject(t, s).ID, withMaxRequests(5))
		for want := int64(1); want <= 2; want++ {
			got, err := s.TokenAdmit(t.Context(), before.ID)
			if err != nil {
				t.Fatalf("TokenAdmit: %v", err)
			}
			if got.RequestCount != want {
				t.Errorf("RequestCount = %d, want %d", got.RequestCount, want)
			}
			if got.LastUsedAt == nil {
				t.Fatal("LastUsedAt = nil after an admission")
			}
			assertRecent(t, "LastUsedAt", *got.LastUsedAt)
			if before.LastUsedAt != nil && got.LastUsedAt.Before(*before.LastUsedAt) {
				t.Errorf("LastUsedAt moved back from %v to %v", *before.LastUsedAt, *got.LastUsedAt)
			}
			assertTokenEqual(t, getToken(t, s, before.ID), got)
			before = got
		}
	}},
	{"RefusesRevokedToken", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		admit(t, s, tok.ID, 1)
		setTokenActive(t, s, tok.ID, false)
		_, err := s.TokenAdmit(t.Context(), tok.ID)
		requireErrorIs(t, "TokenAdmit on a revoked token", err, service.ErrTokenRevoked)
		assertRequestCount(t, s, tok.ID, 1)
	}},
	{"RefusesExpiredToken", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withExpiresAt(time.Now().Add(-time.Hour)))
		_, err := s.TokenAdmit(t.Context(), tok.ID)
		requireErrorIs(t, "TokenAdmit on an expired token", err, service.ErrTokenExpired)
		if got := getToken(t, s, tok.ID); got.RequestCount != 0 || got.LastUsedAt != nil {
			t.Errorf("refused admission left RequestCount %d, LastUsedAt %s", got.RequestCount, show(got.LastUsedAt))
		}
	}},
	{"RefusesWhenLimitReached", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withMaxRequests(2))
		admit(t, s, tok.ID, 2)
		for range 2 {
			_, err := s.TokenAdmit(t.Context(), tok.ID)
			requireErrorIs(t, "TokenAdmit past the limit", err, service.ErrLimitReached)
		}
		assertRequestCount(t, s, tok.ID, 2)
	}},
	{"RefusesWhenProjectInactive", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		tok := newToken(t, s, p.ID)
		setProjectActive(t, s, p.ID, false)
		_, err := s.TokenAdmit(t.Context(), tok.ID)
		requireErrorIs(t, "TokenAdmit in an inactive project", err, service.ErrProjectInactive)
		assertRequestCount(t, s, tok.ID, 0)

		setProjectActive(t, s, p.ID, true)
		admit(t, s, tok.ID, 1)
		assertRequestCount(t, s, tok.ID, 1)
	}},
	{"UnknownIDIsNotFound", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		_, err := s.TokenAdmit(t.Context(), tok.ID+1000)
		requireErrorIs(t, "TokenAdmit(unknown)", err, service.ErrNotFound)
		assertRequestCount(t, s, tok.ID, 0)
	}},
	{"ReportsRefusalsInAdmissionRefusalOrder", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		expired := newToken(t, s, p.ID, withExpiresAt(time.Now().Add(-time.Hour)))
		usedUp := newToken(t, s, p.ID, withMaxRequests(1))
		revoked := newToken(t, s, p.ID, withExpiresAt(time.Now().Add(-time.Hour)))
		admit(t, s, usedUp.ID, 1)
		setTokenActive(t, s, usedUp.ID, false)
		setTokenActive(t, s, revoked.ID, false)
		setProjectActive(t, s, p.ID, false)
		for _, c := range []struct {
			tok  *service.Token
			want error
		}{{revoked, service.ErrTokenRevoked}, {usedUp, service.ErrTokenRevoked}, {expired, service.ErrProjectInactive}} {
			_, err := s.TokenAdmit(t.Context(), c.tok.ID)
			requireErrorIs(t, "TokenAdmit", err, c.want)
		}
		setTokenActive(t, s, usedUp.ID, true)
		_, err := s.TokenAdmit(t.Context(), usedUp.ID)
		requireErrorIs(t, "TokenAdmit used up in an inactive project", err, service.ErrProjectInactive)
		setProjectActive(t, s, p.ID, true)
		_, err = s.TokenAdmit(t.Context(), usedUp.ID)
		requireErrorIs(t, "TokenAdmit used up", err, service.ErrLimitReached)
	}},
	{"UnlimitedTokenNeverRunsOut", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		admit(t, s, tok.ID, 150)
		assertRequestCount(t, s, tok.ID, 150)
	}},
	{"FollowsChangedLimit", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withMaxRequests(10))
		admit(t, s, tok.ID, 5)
		setLimit := func(limit *int64) {
			t.Helper()
			if _, err := s.TokenUpdate(t.Context(), &service.TokenUpdateParams{ID: tok.ID, SetMaxRequests: true, MaxRequests: limit}); err != nil {
				t.Fatalf("TokenUpdate(MaxRequests=%s): %v", show(limit), err)
			}
		}

		setLimit(ptr[int64](3))
		_, err := s.TokenAdmit(t.Context(), tok.ID)
		requireErrorIs(t, "TokenAdmit with the limit lowered below the count", err, service.ErrLimitReached)
		assertRequestCount(t, s, tok.ID, 5)

		setLimit(ptr[int64](6))
		admit(t, s, tok.ID, 1)
		_, err = s.TokenAdmit(t.Context(), tok.ID)
		requireErrorIs(t, "TokenAdmit with the raised limit used up", err, service.ErrLimitReached)

		setLimit(nil)
		admit(t, s, tok.ID, 2)
		assertRequestCount(t, s, tok.ID, 8)
	}},
	{"ReactivatedTokenAdmitsAgain", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		setTokenActive(t, s, tok.ID, false)
		setTokenActive(t, s, tok.ID, true)
		admit(t, s, tok.ID, 1)
		assertRequestCount(t, s, tok.ID, 1)
	}},
	{"CountsExactlyToLimitUnderConcurrency", func(t *testing.T, s service.Store) {
		admitConcurrently(t, s, "TokenAdmit", func(tok *service.Token) (int64, error) {
			_, err := s.TokenAdmit(t.Context(), tok.ID)
			return 1, err
		})
	}},
}

// admitConcurrently has 64 workers admit through admit, which returns how
// many requests it admitted, on a token limited to 100 requests until
// refused: exactly 100 must be admitted, every refusal must be
// ErrLimitReached, and the token must count exactly 100.
func admitConcurrently(t *testing.T, s service.Store, method string, admit func(tok *service.Token) (int64, error)) {
	t.Helper()
	const workers, limit = 64, 100
	tok := newToken(t, s, newProject(t, s).ID, withMaxRequests(limit))
	var admitted atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// A correct store refuses every worker by then; the bound
			// only keeps a broken one from looping forever.
			for range limit + 1 {
				n, err := admit(tok)
				switch {
				case errors.Is(err, service.ErrLimitReached):
					return
				case err != nil:
					errs[w] = err
					return
				}
				admitted.Add(n)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Errorf("concurrent %s failed other than with ErrLimitReached: %v", method, err)
	}
	if got := admitted.Load(); got != limit {
		t.Errorf("%d admissions succeeded, want exactly %d", got, limit)
	}
	assertRequestCount(t, s, tok.ID, limit)
}
