package storetest

import (
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// authenticate checks that tok authenticates and that what comes back is
// the token and project as stored, then returns them.
func authenticate(t *testing.T, s service.Store, tok *service.Token) (*service.Token, *service.Project) {
	t.Helper()
	got, project, err := s.TokenAuthenticate(t.Context(), tok.SecretHash)
	if err != nil {
		t.Fatalf("TokenAuthenticate: %v", err)
	}
	assertTokenEqual(t, got, getToken(t, s, tok.ID))
	assertProjectEqual(t, project, getProject(t, s, tok.ProjectID))
	return got, project
}

// refuseAuthentication checks that tok's hash is refused with want and
// returns neither a token nor a project.
func refuseAuthentication(t *testing.T, s service.Store, tok *service.Token, want error) {
	t.Helper()
	got, project, err := s.TokenAuthenticate(t.Context(), tok.SecretHash)
	requireErrorIs(t, "TokenAuthenticate", err, want)
	if got != nil || project != nil {
		t.Errorf("refused TokenAuthenticate returned token %+v, project %+v; want nil, nil", got, project)
	}
}

var tokenAuthenticateCases = []storeCase{
	{"ReturnsTokenAndProject", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		tok := newToken(t, s, p.ID, withMaxRequests(5))
		newToken(t, s, newProject(t, s).ID) // another token, in another project
		got, project := authenticate(t, s, tok)
		if got.ID != tok.ID || project.ID != p.ID {
			t.Errorf("TokenAuthenticate = token %d, project %d; want %d, %d", got.ID, project.ID, tok.ID, p.ID)
		}
	}},
	{"CountsNothing", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withMaxRequests(5))
		admit(t, s, tok.ID, 1)
		before := getToken(t, s, tok.ID)
		for range 3 {
			authenticate(t, s, tok)
		}
		after := getToken(t, s, tok.ID)
		assertTokenEqual(t, after, before)
		if after.LastUsedAt == nil || !after.LastUsedAt.Equal(*before.LastUsedAt) {
			t.Errorf("LastUsedAt = %s after authenticating, want %s as before", show(after.LastUsedAt), show(before.LastUsedAt))
		}
	}},
	{"IgnoresTheLimit", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withMaxRequests(1))
		admit(t, s, tok.ID, 1)
		_, err := s.TokenAdmit(t.Context(), tok.ID)
		requireErrorIs(t, "TokenAdmit at the limit", err, service.ErrLimitReached)
		got, _ := authenticate(t, s, tok)
		if got.RequestCount != 1 {
			t.Errorf("RequestCount = %d, want 1", got.RequestCount)
		}
	}},
	{"UnknownHashIsNotFound", func(t *testing.T, s service.Store) {
		newToken(t, s, newProject(t, s).ID)
		refuseAuthentication(t, s, &service.Token{SecretHash: randomBytes(32)}, service.ErrNotFound)
	}},
	{"RefusesRevokedToken", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID)
		setTokenActive(t, s, tok.ID, false)
		refuseAuthentication(t, s, tok, service.ErrTokenRevoked)
		setTokenActive(t, s, tok.ID, true)
		authenticate(t, s, tok)
	}},
	{"RefusesExpiredToken", func(t *testing.T, s service.Store) {
		tok := newToken(t, s, newProject(t, s).ID, withExpiresAt(time.Now().Add(-time.Second)))
		refuseAuthentication(t, s, tok, service.ErrTokenExpired)
		assertRequestCount(t, s, tok.ID, 0)
	}},
	{"RefusesWhenProjectInactive", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		tok := newToken(t, s, p.ID)
		setProjectActive(t, s, p.ID, false)
		refuseAuthentication(t, s, tok, service.ErrProjectInactive)
		setProjectActive(t, s, p.ID, true)
		authenticate(t, s, tok)
	}},
	{"ReportsRefusalsInAdmissionRefusalOrder", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		expired := newToken(t, s, p.ID, withExpiresAt(time.Now().Add(-time.Hour)), withMaxRequests(1))
		revoked := newToken(t, s, p.ID, withExpiresAt(time.Now().Add(-time.Hour)))
		setTokenActive(t, s, revoked.ID, false)
		setProjectActive(t, s, p.ID, false)
		refuseAuthentication(t, s, revoked, service.ErrTokenRevoked)
		refuseAuthentication(t, s, expired, service.ErrProjectInactive)
		setProjectActive(t, s, p.ID, true)
		refuseAuthentication(t, s, expired, service.ErrTokenExpired)
	}},
	{"SeesChangesAtOnce", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		tok := newToken(t, s, p.ID)
		authenticate(t, s, tok)
		key, hint := randomBytes(48), "sk-...wxyz"
		if _, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: p.ID, APIKeyCiphertext: key, APIKeyHint: &hint}); err != nil {
			t.Fatalf("ProjectUpdate: %v", err)
		}
		if _, project := authenticate(t, s, tok); string(project.APIKeyCiphertext) != string(key) || project.APIKeyHint != hint {
			t.Errorf("TokenAuthenticate after a key change = project %+v, want the new key", project)
		}
	}},
}
