package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// admissionLeaseCases test TokenAdmitByHash's reserve and that changes
// restricting admission outlast the leases granted before.
var admissionLeaseCases = []storeCase{
	{"ReservesForTokenWithoutLimit", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		got, _, err := s.TokenAdmitByHash(t.Context(), tok.SecretHash, 2, 5)
		if err != nil {
			t.Fatalf("TokenAdmitByHash(n=2, reserve=5): %v", err)
		}
		if got.MaxRequests != nil || got.RequestCount != 7 || got.RequestsReserved != 5 {
			t.Errorf("returned MaxRequests %v, RequestCount %d, RequestsReserved %d; want nil, 7, 5", got.MaxRequests, got.RequestCount, got.RequestsReserved)
		}
		assertTokenEqual(t, got, getToken(t, s, tok.ID))
	}},
	{"LimitCountsReservations", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withMaxRequests(10))
		if _, _, err := s.TokenAdmitByHash(t.Context(), tok.SecretHash, 2, 5); err != nil {
			t.Fatalf("TokenAdmitByHash(n=2, reserve=5) under a limit of 10: %v", err)
		}
		// 3 left: neither 2 with 2 reserved nor 4 fit, and nothing is counted.
		for _, c := range [][2]int64{{2, 2}, {4, 0}} {
			_, _, err := s.TokenAdmitByHash(t.Context(), tok.SecretHash, c[0], c[1])
			if left, ok := errors.AsType[*service.LimitError](err); !ok || *left != (service.LimitError{Left: 3, Reserved: 5}) {
				t.Errorf("TokenAdmitByHash(n=%d, reserve=%d) with 3 left and 5 reserved: %v, want *LimitError{Left: 3, Reserved: 5}", c[0], c[1], err)
			}
		}
		got, _, err := s.TokenAdmitByHash(t.Context(), tok.SecretHash, 1, 2)
		if err != nil || got.RequestCount != 10 || got.RequestsReserved != 7 {
			t.Fatalf("TokenAdmitByHash(n=1, reserve=2) with 3 left = %+v, %v; want RequestCount 10, RequestsReserved 7", got, err)
		}
		// 3 of the 7 reserved were used: 4 come back under the limit.
		if err := s.TokenSettleReserved(t.Context(), tok.ID, 7, 4); err != nil {
			t.Fatalf("TokenSettleReserved(7 reserved, 4 unused): %v", err)
		}
		if got := getToken(t, s, tok.ID); got.RequestCount != 6 || got.RequestsReserved != 0 {
			t.Errorf("after settling: RequestCount %d, RequestsReserved %d; want 6, 0", got.RequestCount, got.RequestsReserved)
		}
		if _, _, err := s.TokenAdmitByHash(t.Context(), tok.SecretHash, 4, 0); err != nil {
			t.Errorf("admitting the 4 given back: %v", err)
		}
	}},
	{"RefusesNegativeReserve", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		_, _, err := s.TokenAdmitByHash(t.Context(), tok.SecretHash, 1, -1)
		requireErrorIs(t, "TokenAdmitByHash(reserve=-1)", err, service.ErrInvalid)
		assertRequestCount(t, s, tok.ID, 0)
	}},
	{"RestrictingChangesOutlastLeases", func(t *testing.T, s service.Store) {
		deactivate, limit, newKey := false, int64(1), randomBytes(48)
		for _, c := range []struct {
			name   string
			change func(tok *service.Token) error
			want   error // of the admission after the change; nil: admitted
		}{
			{"token deactivated", func(tok *service.Token) error {
				_, err := s.TokenUpdate(t.Context(), &service.TokenUpdateParams{ID: tok.ID, IsActive: &deactivate})
				return err
			}, service.ErrTokenRevoked},
			{"token limited", func(tok *service.Token) error {
				_, err := s.TokenUpdate(t.Context(), &service.TokenUpdateParams{ID: tok.ID, SetMaxRequests: true, MaxRequests: &limit})
				return err
			}, service.ErrLimitReached},
			{"project deactivated", func(tok *service.Token) error {
				_, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: tok.ProjectID, IsActive: &deactivate})
				return err
			}, service.ErrProjectInactive},
			{"project key changed", func(tok *service.Token) error {
				_, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: tok.ProjectID, APIKeyCiphertext: newKey})
				return err
			}, nil},
			{"project tokens revoked", func(tok *service.Token) error {
				_, err := s.TokenRevokeAllForProject(t.Context(), tok.ProjectID)
				return err
			}, service.ErrTokenRevoked},
			{"token deactivated in a transaction", func(tok *service.Token) error {
				return s.InTx(t.Context(), func(tx service.Store) error {
					_, err := tx.TokenUpdate(t.Context(), &service.TokenUpdateParams{ID: tok.ID, IsActive: &deactivate})
					return err
				})
			}, service.ErrTokenRevoked},
			{"tokens revoked, then project renamed, in one transaction", func(tok *service.Token) error {
				return s.InTx(t.Context(), func(tx service.Store) error {
					if _, err := tx.TokenRevokeAllForProject(t.Context(), tok.ProjectID); err != nil {
						return err
					}
					name := uniqueName("renamed")
					_, err := tx.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: tok.ProjectID, Name: &name})
					return err
				})
			}, service.ErrTokenRevoked},
		} {
			tok := newToken(t, s, newProject(t, s).ID)
			leaseStart := time.Now()
			if _, _, err := s.TokenAdmitByHash(t.Context(), tok.SecretHash, 1, 10); err != nil {
				t.Fatalf("%s: TokenAdmitByHash: %v", c.name, err)
			}
			if err := c.change(tok); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			// The lease ends AdmissionLease after leaseStart; the change must not
			// be reported done before that.
			if elapsed := time.Since(leaseStart); elapsed < service.AdmissionLease {
				t.Errorf("%s returned %v after a lease began, before the lease (%v) ended", c.name, elapsed, service.AdmissionLease)
			}
			_, project, err := s.TokenAdmitByHash(t.Context(), tok.SecretHash, 1, 0)
			if c.want != nil {
				requireErrorIs(t, c.name+": TokenAdmitByHash", err, c.want)
			} else if err != nil || string(project.APIKeyCiphertext) != string(newKey) {
				t.Errorf("%s: TokenAdmitByHash = project %v, %v; want the new key", c.name, project, err)
			}
		}
	}},
}

var tokenSettleReservedCases = []storeCase{
	{"SettlesReserved", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		if _, _, err := s.TokenAdmitByHash(t.Context(), tok.SecretHash, 1, 9); err != nil {
			t.Fatalf("TokenAdmitByHash(n=1, reserve=9): %v", err)
		}
		if err := s.TokenSettleReserved(t.Context(), tok.ID, 4, 3); err != nil {
			t.Fatalf("TokenSettleReserved(4 reserved, 3 unused): %v", err)
		}
		assertTokenCounts := func(count, reserved int64) {
			t.Helper()
			if got := getToken(t, s, tok.ID); got.RequestCount != count || got.RequestsReserved != reserved {
				t.Errorf("RequestCount %d, RequestsReserved %d; want %d, %d", got.RequestCount, got.RequestsReserved, count, reserved)
			}
		}
		assertTokenCounts(7, 5)
		// 5 reserved: not 6; and never more unused than reserved, or fewer than none.
		for _, c := range [][2]int64{{6, 0}, {0, 0}, {-1, 0}, {2, 3}, {2, -1}} {
			err := s.TokenSettleReserved(t.Context(), tok.ID, c[0], c[1])
			requireErrorIs(t, fmt.Sprintf("TokenSettleReserved(%d reserved, %d unused)", c[0], c[1]), err, service.ErrInvalid)
		}
		assertTokenCounts(7, 5)
		err := s.TokenSettleReserved(t.Context(), tok.ID+1000, 1, 0)
		requireErrorIs(t, "TokenSettleReserved(unknown token)", err, service.ErrNotFound)
		if err := s.TokenSettleReserved(t.Context(), tok.ID, 5, 0); err != nil {
			t.Fatalf("TokenSettleReserved(5 reserved, all used): %v", err)
		}
		assertTokenCounts(7, 0)
	}},
}
