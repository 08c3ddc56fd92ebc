package service

import (
	"context"
	"errors"
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
)

// ExplainAdmissionRefusal is what a backend's TokenAdmit returns after its
// atomic update matched no row: it reads the token and its project as they
// are now and says which rule refused the request (ErrNotFound when the
// token does not exist).
func ExplainAdmissionRefusal(ctx context.Context, s Store, tokenID int64) error {
	token, err := s.TokenGetByID(ctx, tokenID)
	if err != nil {
		return err
	}
	project, err := s.ProjectGetByID(ctx, token.ProjectID)
	if err != nil {
		return err
	}
	return AdmissionRefusal(token, project)
}

// AdmissionRefusal explains why TokenAdmit counted nothing, given the token
// and its project as read after the refusal. Expiry comes last: it is the
// only rule that depends on the clock, which is the database's, not ours.
func AdmissionRefusal(token *Token, project *Project) error {
	switch {
	case !token.IsActive:
		return ErrTokenRevoked
	case !project.IsActive:
		return ErrProjectInactive
	case token.MaxRequests != nil && token.RequestCount >= *token.MaxRequests:
		return ErrLimitReached
	}
	return ErrTokenExpired
}

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
