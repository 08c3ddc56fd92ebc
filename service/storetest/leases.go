package storetest

import (
	"context"
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
		got, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 2, Reserve: 5})
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
		if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 2, Reserve: 5}); err != nil {
			t.Fatalf("TokenAdmitByHash(n=2, reserve=5) under a limit of 10: %v", err)
		}
		// 3 left: neither 2 with 2 reserved nor 4 fit, and nothing is counted.
		for _, c := range [][2]int64{{2, 2}, {4, 0}} {
			_, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: c[0], Reserve: c[1]})
			if left, ok := errors.AsType[*service.LimitError](err); !ok || *left != (service.LimitError{Left: 3, Reserved: 5}) {
				t.Errorf("TokenAdmitByHash(n=%d, reserve=%d) with 3 left and 5 reserved: %v, want *LimitError{Left: 3, Reserved: 5}", c[0], c[1], err)
			}
		}
		got, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Reserve: 2})
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
		if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 4, Reserve: 0}); err != nil {
			t.Errorf("admitting the 4 given back: %v", err)
		}
	}},
	{"RefusesNegativeReserve", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		_, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Reserve: -1})
		requireErrorIs(t, "TokenAdmitByHash(reserve=-1)", err, service.ErrInvalid)
		assertRequestCount(t, s, tok.ID, 0)
	}},
	{"RecordsTheLeaseItGrants", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		admitWithLease := func(lease time.Duration) *service.Token {
			t.Helper()
			got, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Lease: lease})
			if err != nil {
				t.Fatalf("TokenAdmitByHash(Lease %v): %v", lease, err)
			}
			assertTokenEqual(t, got, getToken(t, s, tok.ID))
			return got
		}
		if got := admitWithLease(0); got.LeaseUntil != nil {
			t.Errorf("LeaseUntil = %v after an admission without a lease, want nil", *got.LeaseUntil)
		}
		before := time.Now()
		first := admitWithLease(service.MaxAdmissionLease)
		if first.LeaseUntil == nil || first.LeaseUntil.Before(before.Add(service.MaxAdmissionLease-precision)) {
			t.Fatalf("LeaseUntil = %s after the longest lease from %v, want at least that much later", show(first.LeaseUntil), before)
		}
		assertRecent(t, "LeaseUntil less the lease", first.LeaseUntil.Add(-service.MaxAdmissionLease))
		// A shorter lease, or none, leaves the longer one in place.
		for _, lease := range []time.Duration{service.AdmissionLease, 0} {
			if got := admitWithLease(lease); got.LeaseUntil == nil || got.LeaseUntil.Before(*first.LeaseUntil) {
				t.Errorf("LeaseUntil = %s after a lease of %v, want still %v", show(got.LeaseUntil), lease, *first.LeaseUntil)
			}
		}
	}},
	{"RefusesALeaseOutOfRange", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		for _, lease := range []time.Duration{-time.Millisecond, service.MaxAdmissionLease + time.Millisecond} {
			_, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Lease: lease})
			requireErrorIs(t, fmt.Sprintf("TokenAdmitByHash(Lease %v)", lease), err, service.ErrInvalid)
		}
		assertRequestCount(t, s, tok.ID, 0)
	}},
	{"RestrictingChangesOutlastLeases", func(t *testing.T, s service.Store) {
		// This build's lease, and a longer one, as another build would grant
		// during a rolling upgrade.
		for _, lease := range []time.Duration{service.AdmissionLease, 3 * service.AdmissionLease} {
			for _, c := range restrictingChanges(t, s) {
				tok := newToken(t, s, newProject(t, s).ID)
				leaseStart := time.Now()
				if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Reserve: 10, Lease: lease}); err != nil {
					t.Fatalf("%s: TokenAdmitByHash: %v", c.name, err)
				}
				var waits []time.Duration
				ctx := service.WithLeaseWaitObserver(t.Context(), func(d time.Duration) { waits = append(waits, d) })
				if err := c.change(ctx, tok); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				// The lease ends lease after leaseStart; the change must not be
				// reported done before that.
				if elapsed := time.Since(leaseStart); elapsed < lease {
					t.Errorf("%s returned %v after a lease of %v began, before it ended", c.name, elapsed, lease)
				}
				// The wait itself may be 0 on a machine slow enough for the
				// lease to end before the commit.
				if len(waits) != 1 {
					t.Errorf("%s waited %v for leases, want one wait", c.name, waits)
				}
				_, project, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1})
				if c.want != nil {
					requireErrorIs(t, c.name+": TokenAdmitByHash", err, c.want)
				} else if err != nil || string(project.APIKeyCiphertext) != string(c.newKey) {
					t.Errorf("%s: TokenAdmitByHash = project %v, %v; want the new key", c.name, project, err)
				}
			}
		}
	}},
	{"RestrictingChangesWithoutLeasesDoNotWait", func(t *testing.T, s service.Store) {
		for _, c := range restrictingChanges(t, s) {
			p := newProject(t, s)
			unused := newToken(t, s, p.ID)
			noLease := newToken(t, s, p.ID)
			ended := newToken(t, s, p.ID)
			if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: noLease.SecretHash, N: 1}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: ended.SecretHash, N: 1, Lease: time.Millisecond}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // the millisecond's lease has ended
			// Another project's lease does not concern the change.
			other := newToken(t, s, newProject(t, s).ID)
			if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: other.SecretHash, N: 1, Lease: service.MaxAdmissionLease}); err != nil {
				t.Fatal(err)
			}
			for _, tok := range []*service.Token{unused, noLease, ended} {
				var waits []time.Duration
				ctx := service.WithLeaseWaitObserver(t.Context(), func(d time.Duration) { waits = append(waits, d) })
				if err := c.change(ctx, tok); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if len(waits) != 1 || waits[0] != 0 {
					t.Errorf("%s of a token without a lease outstanding waited %v for leases, want one wait of 0", c.name, waits)
				}
				if c.wholeProject {
					break // the first change covered the project's every token
				}
			}
		}
	}},
	{"TokenChangesWaitOnlyForThatTokensLease", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		leased, plain := newToken(t, s, p.ID), newToken(t, s, p.ID)
		if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: leased.SecretHash, N: 1, Lease: service.MaxAdmissionLease}); err != nil {
			t.Fatal(err)
		}
		var waits []time.Duration
		ctx := service.WithLeaseWaitObserver(t.Context(), func(d time.Duration) { waits = append(waits, d) })
		deactivate := false
		if _, err := s.TokenUpdate(ctx, &service.TokenUpdateParams{ID: plain.ID, IsActive: &deactivate}); err != nil {
			t.Fatal(err)
		}
		if len(waits) != 1 || waits[0] != 0 {
			t.Errorf("deactivating a token beside a leased one waited %v, want one wait of 0", waits)
		}
	}},
	{"ChangesThatDoNotRestrictDoNotWait", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withMaxRequests(10))
		if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Lease: service.MaxAdmissionLease}); err != nil {
			t.Fatal(err)
		}
		var waits []time.Duration
		ctx := service.WithLeaseWaitObserver(t.Context(), func(d time.Duration) { waits = append(waits, d) })
		activate, name, hint := true, uniqueName("renamed"), "sk-...new"
		if _, err := s.TokenUpdate(ctx, &service.TokenUpdateParams{ID: tok.ID, IsActive: &activate}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.TokenUpdate(ctx, &service.TokenUpdateParams{ID: tok.ID, SetMaxRequests: true}); err != nil { // unlimited
			t.Fatal(err)
		}
		if _, err := s.ProjectUpdate(ctx, &service.ProjectUpdateParams{ID: tok.ProjectID, Name: &name, APIKeyHint: &hint, IsActive: &activate}); err != nil {
			t.Fatal(err)
		}
		if len(waits) != 0 {
			t.Errorf("changes that restrict nothing waited %v for leases, want no wait", waits)
		}
	}},
}

// restrictingChange is a change that restricts a token's admission, and
// what admitting the token gives after it.
type restrictingChange struct {
	name         string
	change       func(ctx context.Context, tok *service.Token) error
	want         error  // of the admission after the change; nil: admitted
	newKey       []byte // the project's key after the change
	wholeProject bool   // it changes every token of the project
}

func restrictingChanges(t *testing.T, s service.Store) []restrictingChange {
	deactivate, limit, newKey := false, int64(1), randomBytes(48)
	return []restrictingChange{
		{name: "token deactivated", change: func(ctx context.Context, tok *service.Token) error {
			_, err := s.TokenUpdate(ctx, &service.TokenUpdateParams{ID: tok.ID, IsActive: &deactivate})
			return err
		}, want: service.ErrTokenRevoked},
		{name: "token limited", change: func(ctx context.Context, tok *service.Token) error {
			_, err := s.TokenUpdate(ctx, &service.TokenUpdateParams{ID: tok.ID, SetMaxRequests: true, MaxRequests: &limit})
			return err
		}, want: service.ErrLimitReached},
		{name: "project deactivated", change: func(ctx context.Context, tok *service.Token) error {
			_, err := s.ProjectUpdate(ctx, &service.ProjectUpdateParams{ID: tok.ProjectID, IsActive: &deactivate})
			return err
		}, want: service.ErrProjectInactive, wholeProject: true},
		{name: "project key changed", change: func(ctx context.Context, tok *service.Token) error {
			_, err := s.ProjectUpdate(ctx, &service.ProjectUpdateParams{ID: tok.ProjectID, APIKeyCiphertext: newKey})
			return err
		}, newKey: newKey, wholeProject: true},
		{name: "project tokens revoked", change: func(ctx context.Context, tok *service.Token) error {
			_, err := s.TokenRevokeAllForProject(ctx, tok.ProjectID)
			return err
		}, want: service.ErrTokenRevoked, wholeProject: true},
		{name: "token deactivated in a transaction", change: func(ctx context.Context, tok *service.Token) error {
			return s.InTx(ctx, func(tx service.Store) error {
				_, err := tx.TokenUpdate(ctx, &service.TokenUpdateParams{ID: tok.ID, IsActive: &deactivate})
				return err
			})
		}, want: service.ErrTokenRevoked},
		{name: "tokens revoked, then project renamed, in one transaction", change: func(ctx context.Context, tok *service.Token) error {
			return s.InTx(ctx, func(tx service.Store) error {
				if _, err := tx.TokenRevokeAllForProject(ctx, tok.ProjectID); err != nil {
					return err
				}
				name := uniqueName("renamed")
				_, err := tx.ProjectUpdate(ctx, &service.ProjectUpdateParams{ID: tok.ProjectID, Name: &name})
				return err
			})
		}, want: service.ErrTokenRevoked, wholeProject: true},
	}
}

var tokenSettleReservedCases = []storeCase{
	{"SettlesReserved", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		if _, _, err := s.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Reserve: 9}); err != nil {
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
