package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// admitByHash admits tok through its secret hash and checks that what comes
// back is the token and project as stored after the admission.
func admitByHash(t *testing.T, s service.Store, tok *service.Token) *service.Token {
	t.Helper()
	got, project, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Reserve: 0})
	if err != nil {
		t.Fatalf("TokenAdmitByHash: %v", err)
	}
	assertTokenEqual(t, got, getToken(t, s, tok.ID))
	assertProjectEqual(t, project, getProject(t, s, tok.ProjectID))
	return got
}

// refuseByHash checks that admitting tok through its hash fails with want
// and returns neither a token nor a project.
func refuseByHash(t *testing.T, s service.Store, tok *service.Token, want error) {
	t.Helper()
	got, project, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Reserve: 0})
	requireErrorIs(t, "TokenAdmitByHash", err, want)
	if got != nil || project != nil {
		t.Errorf("refused TokenAdmitByHash returned token %+v, project %+v; want nil, nil", got, project)
	}
}

var tokenAdmitByHashCases = []storeCase{
	{"CountsOneRequestAndReturnsProject", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withMaxRequests(5))
		for want := int64(1); want <= 2; want++ {
			got := admitByHash(t, s, tok)
			if got.RequestCount != want {
				t.Errorf("RequestCount = %d, want %d", got.RequestCount, want)
			}
			if got.LastUsedAt == nil {
				t.Fatal("LastUsedAt = nil after an admission")
			}
			assertRecent(t, "LastUsedAt", *got.LastUsedAt)
		}
	}},
	{"AdmitsOnlyTheTokenWithThatHash", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		tok := newToken(t, s, p.ID)
		other := newToken(t, s, newProject(t, s).ID)
		admitByHash(t, s, tok)
		assertRequestCount(t, s, tok.ID, 1)
		assertRequestCount(t, s, other.ID, 0)
	}},
	{"RefusesRevokedToken", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		admitByHash(t, s, tok)
		setTokenActive(t, s, tok.ID, false)
		refuseByHash(t, s, tok, service.ErrTokenRevoked)
		assertRequestCount(t, s, tok.ID, 1)
	}},
	{"RefusesExpiredToken", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withExpiresAt(time.Now().Add(-time.Hour)))
		refuseByHash(t, s, tok, service.ErrTokenExpired)
		if got := getToken(t, s, tok.ID); got.RequestCount != 0 || got.LastUsedAt != nil {
			t.Errorf("refused admission left RequestCount %d, LastUsedAt %s", got.RequestCount, show(got.LastUsedAt))
		}
	}},
	{"RefusesWhenLimitReached", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withMaxRequests(2))
		admitByHash(t, s, tok)
		admitByHash(t, s, tok)
		for range 2 {
			refuseByHash(t, s, tok, service.ErrLimitReached)
		}
		assertRequestCount(t, s, tok.ID, 2)
	}},
	{"RefusesWhenProjectInactive", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		tok := newToken(t, s, p.ID)
		setProjectActive(t, s, p.ID, false)
		refuseByHash(t, s, tok, service.ErrProjectInactive)
		assertRequestCount(t, s, tok.ID, 0)

		setProjectActive(t, s, p.ID, true)
		admitByHash(t, s, tok)
		assertRequestCount(t, s, tok.ID, 1)
	}},
	{"ReportsRefusalsInAdmissionRefusalOrder", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		expired := newToken(t, s, p.ID, withExpiresAt(time.Now().Add(-time.Hour)))
		usedUp := newToken(t, s, p.ID, withMaxRequests(1))
		revoked := newToken(t, s, p.ID, withExpiresAt(time.Now().Add(-time.Hour)))
		admitByHash(t, s, usedUp)
		setTokenActive(t, s, usedUp.ID, false)
		setTokenActive(t, s, revoked.ID, false)
		setProjectActive(t, s, p.ID, false)
		refuseByHash(t, s, revoked, service.ErrTokenRevoked)
		refuseByHash(t, s, usedUp, service.ErrTokenRevoked)
		refuseByHash(t, s, expired, service.ErrProjectInactive)
		setTokenActive(t, s, usedUp.ID, true)
		refuseByHash(t, s, usedUp, service.ErrProjectInactive)
		setProjectActive(t, s, p.ID, true)
		refuseByHash(t, s, usedUp, service.ErrLimitReached)
	}},
	{"UnknownHashIsNotFound", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		unknown := &service.Token{ID: tok.ID + 1000, SecretHash: randomBytes(32)}
		refuseByHash(t, s, unknown, service.ErrNotFound)
		assertRequestCount(t, s, tok.ID, 0)
	}},
	{"CountsExactlyToLimitUnderConcurrency", func(t *testing.T, s service.Store) {
		admitConcurrently(t, s, "TokenAdmitByHash", func(tok *service.Token) (int64, error) {
			_, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Reserve: 0})
			return 1, err
		})
	}},
	{"AdmitsSeveralAtOnce", func(t *testing.T, s service.Store) {
		limited := newToken(t, s, newProject(t, s).ID, withMaxRequests(5))
		unlimited := newToken(t, s, newProject(t, s).ID)
		for _, c := range []struct {
			tok  *service.Token
			n    int64
			want int64
		}{{limited, 3, 3}, {limited, 2, 5}, {unlimited, 1000, 1000}, {unlimited, 1, 1001}} {
			got, project, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: c.tok.SecretHash, N: c.n, Reserve: 0})
			if err != nil {
				t.Fatalf("TokenAdmitByHash(n=%d): %v", c.n, err)
			}
			if got.RequestCount != c.want {
				t.Errorf("after admitting %d: RequestCount = %d, want %d", c.n, got.RequestCount, c.want)
			}
			assertTokenEqual(t, got, getToken(t, s, c.tok.ID))
			assertProjectEqual(t, project, getProject(t, s, c.tok.ProjectID))
		}
	}},
	{"AdmitsAllOrNoneAndSaysHowManyAreLeft", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withMaxRequests(5))
		if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 3, Reserve: 0}); err != nil {
			t.Fatal(err)
		}
		got, project, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 3, Reserve: 0})
		left, ok := errors.AsType[*service.LimitError](err)
		if !ok || *left != (service.LimitError{Left: 2}) || !errors.Is(err, service.ErrLimitReached) || got != nil || project != nil {
			t.Fatalf("admitting 3 with 2 left = %v, %v, %v; want a *LimitError{Left: 2} that is ErrLimitReached", got, project, err)
		}
		assertRequestCount(t, s, tok.ID, 3)
		if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 2, Reserve: 0}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []int64{1, 4} {
			_, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: n, Reserve: 0})
			if left, ok := errors.AsType[*service.LimitError](err); !ok || *left != (service.LimitError{}) {
				t.Errorf("admitting %d with none left: %v, want a *LimitError with none left and none reserved", n, err)
			}
		}
		assertRequestCount(t, s, tok.ID, 5)
	}},
	{"RefusesSeveralLikeOne", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		revoked := newToken(t, s, p.ID, withMaxRequests(2))
		setTokenActive(t, s, revoked.ID, false)
		expired := newToken(t, s, p.ID, withExpiresAt(time.Now().Add(-time.Hour)))
		for _, c := range []struct {
			tok  *service.Token
			want error
		}{{revoked, service.ErrTokenRevoked}, {expired, service.ErrTokenExpired}} {
			_, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: c.tok.SecretHash, N: 5, Reserve: 0})
			requireErrorIs(t, "TokenAdmitByHash(n=5)", err, c.want)
			assertRequestCount(t, s, c.tok.ID, 0)
		}
	}},
	{"RefusesFewerThanOne", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		for _, c := range [][2]int64{{0, 0}, {-1, 0}, {-1, 2}, {2, -1}} {
			_, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: c[0], Reserve: c[1]})
			requireErrorIs(t, fmt.Sprintf("TokenAdmitByHash(n=%d, reserve=%d)", c[0], c[1]), err, service.ErrInvalid)
		}
		assertRequestCount(t, s, tok.ID, 0)
		// Reserving alone renews a lease.
		got, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 0, Reserve: 3})
		if err != nil || got.RequestCount != 3 || got.RequestsReserved != 3 {
			t.Fatalf("TokenAdmitByHash(n=0, reserve=3) = %+v, %v; want RequestCount 3, RequestsReserved 3", got, err)
		}
	}},
	{"CountsExactlyToLimitAdmittingSeveralConcurrently", func(t *testing.T, s service.Store) {
		admitConcurrently(t, s, "TokenAdmitByHash(n>1)", func(tok *service.Token) (int64, error) {
			n := rand.Int64N(5) + 1
			for {
				_, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: n, Reserve: 0})
				left, ok := errors.AsType[*service.LimitError](err)
				if !ok || left.Left == 0 {
					return n, err
				}
				n = left.Left // fewer fit: take what is left, if still there
			}
		})
	}},
}
