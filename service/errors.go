package service

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Backends wrap them together with the driver's error
// (fmt.Errorf("%w: %w", ErrConflict, err)) so both survive.
var (
	ErrNotFound        = errors.New("not found")
	ErrConflict        = errors.New("conflicts with an existing row")
	ErrReference       = errors.New("references a row that does not exist")
	ErrInvalid         = errors.New("violates a constraint")
	ErrTokenRevoked    = errors.New("token revoked")
	ErrTokenExpired    = errors.New("token expired")
	ErrLimitReached    = errors.New("token request limit reached")
	ErrProjectInactive = errors.New("project inactive")
	// ErrUnavailable means the database could not be reached; callers may retry.
	ErrUnavailable = errors.New("database unavailable")
	// ErrNotImplemented is a Store method this backend cannot provide.
	ErrNotImplemented = errors.New("not implemented by this database backend")
)

// AdmitOrExplain runs admit, a backend's atomic admission statement for n
// requests (those reserved included), which reports matched false when a
// rule refused them, and explains a refusal: it reads the token (with
// readToken) and its project as they are now and says which rule refused
// (ErrNotFound when the token does not exist). An explanation that finds
// the token admissible after all (it changed in between: reserved requests
// given back, a token or project reactivated) tries again, a few times; then
// only expiry is left, by the database's clock, which may be ahead of ours.
func AdmitOrExplain[T any](ctx context.Context, s Store, n int64, admit func() (row T, matched bool, err error), readToken func() (*Token, error)) (T, error) {
	const attempts = 3
	var none T
	for attempt := 1; ; attempt++ {
		row, matched, err := admit()
		if err != nil || matched {
			return row, err
		}
		token, err := readToken()
		if err != nil {
			return none, err
		}
		project, err := s.ProjectGetByID(ctx, token.ProjectID)
		if err != nil {
			return none, err
		}
		err = BatchRefusal(token, project, n)
		if errors.Is(err, ErrTokenExpired) && token.ExpiresAt.After(time.Now()) && attempt < attempts {
			continue
		}
		return none, err
	}
}

// CheckAdmission refuses a TokenAdmitByHash that asks for nothing, or for
// a lease out of range.
func CheckAdmission(p *TokenAdmitByHashParams) error {
	if p.N < 0 || p.Reserve < 0 || p.N+p.Reserve < 1 {
		return fmt.Errorf("%w: admit %d requests reserving %d", ErrInvalid, p.N, p.Reserve)
	}
	if p.Lease < 0 || p.Lease > MaxAdmissionLease {
		return fmt.Errorf("%w: admission lease %v, want 0 to %v", ErrInvalid, p.Lease, MaxAdmissionLease)
	}
	return nil
}

// LeaseIn returns lease in whole units of unit, rounded up, plus one: the
// database's clock reads a time truncated to unit, and a recorded lease
// must not end before the caller's.
func LeaseIn(lease, unit time.Duration) int64 {
	if lease <= 0 {
		return 0
	}
	return int64((lease+unit-1)/unit) + 1
}

// CheckSettlement refuses a TokenSettleReserved that could never apply.
func CheckSettlement(reserved, unused int64) error {
	if reserved < 1 || unused < 0 || unused > reserved {
		return fmt.Errorf("%w: settle %d reserved requests, %d unused", ErrInvalid, reserved, unused)
	}
	return nil
}

// ExplainSettlementRefusal explains why TokenSettleReserved took nothing
// off: the token does not exist (ErrNotFound), or has fewer reserved.
func ExplainSettlementRefusal(ctx context.Context, s Store, tokenID, reserved int64) error {
	if _, err := s.TokenGetByID(ctx, tokenID); err != nil {
		return err
	}
	return fmt.Errorf("%w: token %d has fewer than %d requests reserved", ErrInvalid, tokenID, reserved)
}

// AdmissionRefusal explains why TokenAdmit counted nothing, given the token
// and its project as read after the refusal. Expiry comes last: it is the
// only rule that depends on the clock, which is the database's, not ours.
func AdmissionRefusal(token *Token, project *Project) error {
	return BatchRefusal(token, project, 1)
}

// BatchRefusal is AdmissionRefusal for n requests admitted at once (with
// those reserved counted in n). The limit's refusal is a *LimitError.
func BatchRefusal(token *Token, project *Project, n int64) error {
	switch {
	case !token.IsActive:
		return ErrTokenRevoked
	case !project.IsActive:
		return ErrProjectInactive
	case token.MaxRequests != nil && token.RequestCount+n > *token.MaxRequests:
		return &LimitError{Left: max(0, *token.MaxRequests-token.RequestCount), Reserved: token.RequestsReserved}
	}
	return ErrTokenExpired
}

// AuthenticationRefusal is AdmissionRefusal without the limit, for
// TokenAuthenticate: expired is the database's verdict on the token's
// ExpiresAt. It returns nil for a token that may be used.
func AuthenticationRefusal(token *Token, project *Project, expired bool) error {
	switch {
	case !token.IsActive:
		return ErrTokenRevoked
	case !project.IsActive:
		return ErrProjectInactive
	case expired:
		return ErrTokenExpired
	}
	return nil
}

// LimitError refuses an admission because the token's limit leaves fewer
// requests than asked for; it is an ErrLimitReached. Both counts are as
// the refusal was explained.
type LimitError struct {
	Left int64 // requests the limit leaves, maybe 0
	// Reserved of the requests counted are reserved by proxies and may yet
	// be given back, when their leases end.
	Reserved int64
}

func (e *LimitError) Error() string {
	switch {
	case e.Left == 0 && e.Reserved == 0:
		return ErrLimitReached.Error()
	case e.Reserved == 0:
		return fmt.Sprintf("%v: only %d requests left", ErrLimitReached, e.Left)
	}
	return fmt.Sprintf("%v: %d requests left, %d more reserved by proxies", ErrLimitReached, e.Left, e.Reserved)
}

func (e *LimitError) Is(target error) bool { return target == ErrLimitReached }

// UsageTimeRange returns the filter's bounds with zero values replaced by
// ones every backend can store.
func UsageTimeRange(f *UsageFilter) (since, until time.Time) {
	since, until = f.Since.UTC(), f.Until.UTC()
	if f.Since.IsZero() {
		since = time.Unix(0, 0).UTC()
	}
	if f.Until.IsZero() {
		until = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return since, until
}
