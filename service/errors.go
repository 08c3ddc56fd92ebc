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
)

// ExplainAdmissionRefusal is what a backend's TokenAdmit returns after its
// atomic update matched no row: it reads the token and its project as they
// are now and says which rule refused the request (ErrNotFound when the
// token does not exist).
func ExplainAdmissionRefusal(ctx context.Context, s Store, tokenID int64) error {
	return ExplainBatchRefusal(ctx, s, tokenID, 1)
}

// ExplainBatchRefusal is ExplainAdmissionRefusal for an admission of n
// requests at once.
func ExplainBatchRefusal(ctx context.Context, s Store, tokenID, n int64) error {
	token, err := s.TokenGetByID(ctx, tokenID)
	if err != nil {
		return err
	}
	project, err := s.ProjectGetByID(ctx, token.ProjectID)
	if err != nil {
		return err
	}
	return BatchRefusal(token, project, n)
}

// ExplainReleaseRefusal explains why TokenReleaseReserved took nothing
// off: the token does not exist (ErrNotFound), or counts fewer than n.
func ExplainReleaseRefusal(ctx context.Context, s Store, tokenID, n int64) error {
	if _, err := s.TokenGetByID(ctx, tokenID); err != nil {
		return err
	}
	return fmt.Errorf("%w: token %d has fewer than %d requests counted", ErrInvalid, tokenID, n)
}

// AdmissionRefusal explains why TokenAdmit counted nothing, given the token
// and its project as read after the refusal. Expiry comes last: it is the
// only rule that depends on the clock, which is the database's, not ours.
func AdmissionRefusal(token *Token, project *Project) error {
	return BatchRefusal(token, project, 1)
}

// BatchRefusal is AdmissionRefusal for n requests admitted at once: when
// some but fewer than n requests are left, it is a *RequestsLeftError.
func BatchRefusal(token *Token, project *Project, n int64) error {
	switch {
	case !token.IsActive:
		return ErrTokenRevoked
	case !project.IsActive:
		return ErrProjectInactive
	case token.MaxRequests != nil && token.RequestCount >= *token.MaxRequests:
		return ErrLimitReached
	case token.MaxRequests != nil && token.RequestCount+n > *token.MaxRequests:
		return &RequestsLeftError{Left: *token.MaxRequests - token.RequestCount}
	}
	return ErrTokenExpired
}

// RequestsLeftError refuses an admission of several requests at once when
// fewer are left under the token's limit; it is an ErrLimitReached.
type RequestsLeftError struct {
	Left int64 // requests left when the refusal was explained, at least 1
}

func (e *RequestsLeftError) Error() string {
	return fmt.Sprintf("%v: only %d requests left", ErrLimitReached, e.Left)
}

func (e *RequestsLeftError) Is(target error) bool { return target == ErrLimitReached }

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
