package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// explainingStore serves the reads AdmitOrExplain makes; nothing else.
type explainingStore struct {
	service.Store
	token   service.Token
	project service.Project
}

func (s *explainingStore) TokenGetByID(context.Context, int64) (*service.Token, error) {
	token := s.token
	return &token, nil
}

func (s *explainingStore) ProjectGetByID(context.Context, int64) (*service.Project, error) {
	project := s.project
	return &project, nil
}

func TestAdmitOrExplain(t *testing.T) {
	t.Parallel()
	limit := int64(10)
	admissible := service.Token{ID: 1, IsActive: true, ExpiresAt: time.Now().Add(time.Hour), MaxRequests: &limit, RequestCount: 4}
	for _, c := range []struct {
		name     string
		token    service.Token
		matches  int // the statement matches on this attempt; 0: never
		want     error
		attempts int
	}{
		// Reserved requests were given back between the statement and the
		// reads: the next attempt is admitted.
		{"RaceThenAdmitted", admissible, 2, nil, 2},
		// Admissible by our clock but never by the database's: expired.
		{"DatabaseClockAhead", admissible, 0, service.ErrTokenExpired, 3},
		{"Expired", func() service.Token { t := admissible; t.ExpiresAt = time.Now().Add(-time.Minute); return t }(), 0, service.ErrTokenExpired, 1},
		{"LimitReached", func() service.Token { t := admissible; t.RequestCount, t.RequestsReserved = 9, 3; return t }(), 0, &service.LimitError{Left: 1, Reserved: 3}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &explainingStore{token: c.token, project: service.Project{ID: 1, IsActive: true}}
			attempts := 0
			row, err := service.AdmitOrExplain(t.Context(), s, 2, func() (string, bool, error) {
				attempts++
				if attempts == c.matches {
					return "row", true, nil
				}
				return "", false, nil
			}, func() (*service.Token, error) { return s.TokenGetByID(t.Context(), 1) })
			switch want := c.want.(type) {
			case nil:
				if err != nil || row != "row" {
					t.Errorf("AdmitOrExplain = %q, %v; want the row", row, err)
				}
			case *service.LimitError:
				if got, ok := errors.AsType[*service.LimitError](err); !ok || *got != *want {
					t.Errorf("AdmitOrExplain: %v, want %v", err, want)
				}
			default:
				if !errors.Is(err, want) {
					t.Errorf("AdmitOrExplain: %v, want %v", err, want)
				}
			}
			if attempts != c.attempts {
				t.Errorf("%d statements, want %d", attempts, c.attempts)
			}
		})
	}
}
