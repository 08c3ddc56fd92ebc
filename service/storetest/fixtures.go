package storetest

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// newProject creates an active project with a unique name.
func newProject(t *testing.T, s service.Store) *service.Project {
	t.Helper()
	p, err := s.ProjectCreate(t.Context(), projectParams())
	if err != nil {
		t.Fatalf("ProjectCreate: %v", err)
	}
	return p
}

func projectParams() *service.ProjectCreateParams {
	return &service.ProjectCreateParams{
		Name:             uniqueName("project"),
		APIKeyCiphertext: randomBytes(48),
		APIKeyHint:       "sk-...abcd",
	}
}

type tokenOption func(*service.TokenCreateParams)

func withMaxRequests(n int64) tokenOption {
	return func(p *service.TokenCreateParams) { p.MaxRequests = &n }
}

func withExpiresAt(at time.Time) tokenOption {
	return func(p *service.TokenCreateParams) { p.ExpiresAt = at }
}

// tokenParams describes an unlimited token with a random 32-byte hash that
// expires in an hour, changed by opts.
func tokenParams(projectID int64, opts ...tokenOption) *service.TokenCreateParams {
	p := &service.TokenCreateParams{
		ProjectID:   projectID,
		SecretHash:  randomBytes(32),
		TokenPrefix: "sk-" + rand.Text()[:8],
		ExpiresAt:   time.Now().Add(time.Hour).UTC(),
	}
	for _, opt := range opts {
		opt(p)
	}
	return p
}

func newToken(t *testing.T, s service.Store, projectID int64, opts ...tokenOption) *service.Token {
	t.Helper()
	tok, err := s.TokenCreate(t.Context(), tokenParams(projectID, opts...))
	if err != nil {
		t.Fatalf("TokenCreate: %v", err)
	}
	return tok
}

func getProject(t *testing.T, s service.Store, id int64) *service.Project {
	t.Helper()
	p, err := s.ProjectGetByID(t.Context(), id)
	if err != nil {
		t.Fatalf("ProjectGetByID(%d): %v", id, err)
	}
	return p
}

func getToken(t *testing.T, s service.Store, id int64) *service.Token {
	t.Helper()
	tok, err := s.TokenGetByID(t.Context(), id)
	if err != nil {
		t.Fatalf("TokenGetByID(%d): %v", id, err)
	}
	return tok
}

func setProjectActive(t *testing.T, s service.Store, id int64, active bool) {
	t.Helper()
	if _, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: id, IsActive: &active}); err != nil {
		t.Fatalf("ProjectUpdate(IsActive=%t): %v", active, err)
	}
}

func setTokenActive(t *testing.T, s service.Store, id int64, active bool) {
	t.Helper()
	if _, err := s.TokenUpdate(t.Context(), &service.TokenUpdateParams{ID: id, IsActive: &active}); err != nil {
		t.Fatalf("TokenUpdate(IsActive=%t): %v", active, err)
	}
}

// admit admits n requests on the token, failing the test on any refusal.
func admit(t *testing.T, s service.Store, id int64, n int) {
	t.Helper()
	for i := range n {
		if _, err := s.TokenAdmit(t.Context(), id); err != nil {
			t.Fatalf("TokenAdmit #%d: %v", i+1, err)
		}
	}
}

// usageEvent is a successful request at the given time.
func usageEvent(tokenID, projectID int64, at time.Time) *service.UsageEventCreateParams {
	return &service.UsageEventCreateParams{
		TokenID:          tokenID,
		ProjectID:        projectID,
		Method:           "POST",
		Path:             "/v1/chat/completions",
		Model:            "gpt-test",
		Status:           200,
		PromptTokens:     3,
		CompletionTokens: 4,
		TotalTokens:      7,
		LatencyMS:        12,
		CreatedAt:        at,
	}
}

func insertUsage(t *testing.T, s service.Store, events ...*service.UsageEventCreateParams) {
	t.Helper()
	n, err := s.UsageInsertBatch(t.Context(), events)
	if err != nil {
		t.Fatalf("UsageInsertBatch: %v", err)
	}
	if n != int64(len(events)) {
		t.Fatalf("UsageInsertBatch wrote %d rows, want %d", n, len(events))
	}
}

func insertAudit(t *testing.T, s service.Store, params *service.AuditInsertParams) *service.AuditEvent {
	t.Helper()
	e, err := s.AuditInsert(t.Context(), params)
	if err != nil {
		t.Fatalf("AuditInsert: %v", err)
	}
	return e
}

func uniqueName(prefix string) string { return prefix + "-" + rand.Text() }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return b
}

func ptr[T any](v T) *T { return &v }
