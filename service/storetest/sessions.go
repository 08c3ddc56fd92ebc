package storetest

import (
	"bytes"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

func sessionParams(expiresIn time.Duration) *service.SessionCreateParams {
	return &service.SessionCreateParams{
		SecretHash: randomBytes(32),
		CSRFToken:  "csrf-" + uniqueName("token"),
		ExpiresAt:  time.Now().Add(expiresIn).UTC(),
	}
}

func newSession(t *testing.T, s service.Store, expiresIn time.Duration) *service.Session {
	t.Helper()
	sess, err := s.SessionCreate(t.Context(), sessionParams(expiresIn))
	if err != nil {
		t.Fatalf("SessionCreate: %v", err)
	}
	return sess
}

func assertSessionEqual(t *testing.T, got, want *service.Session) {
	t.Helper()
	if !bytes.Equal(got.SecretHash, want.SecretHash) || got.CSRFToken != want.CSRFToken {
		t.Errorf("session = %+v, want %+v", got, want)
	}
	assertSameInstant(t, "session ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	assertSameInstant(t, "session CreatedAt", got.CreatedAt, want.CreatedAt)
}

// assertSessionGone checks that the session is not found.
func assertSessionGone(t *testing.T, s service.Store, sess *service.Session, why string) {
	t.Helper()
	got, err := s.SessionGetByHash(t.Context(), sess.SecretHash)
	requireErrorIs(t, "SessionGetByHash of a session "+why, err, service.ErrNotFound)
	if got != nil {
		t.Errorf("SessionGetByHash of a session %s returned %+v", why, got)
	}
}

var sessionCreateCases = []storeCase{
	{"StoresEveryField", func(t *testing.T, s service.Store) {
		p := sessionParams(time.Hour)
		got, err := s.SessionCreate(t.Context(), p)
		if err != nil {
			t.Fatalf("SessionCreate: %v", err)
		}
		if !bytes.Equal(got.SecretHash, p.SecretHash) || got.CSRFToken != p.CSRFToken {
			t.Errorf("SessionCreate = %+v, want the given hash and CSRF token", got)
		}
		assertSameInstant(t, "ExpiresAt", got.ExpiresAt, p.ExpiresAt)
		assertRecent(t, "CreatedAt", got.CreatedAt)
	}},
	{"RefusesAHashTwice", func(t *testing.T, s service.Store) {
		first := newSession(t, s, time.Hour)
		p := sessionParams(2 * time.Hour)
		p.SecretHash = first.SecretHash
		_, err := s.SessionCreate(t.Context(), p)
		requireErrorIs(t, "SessionCreate of a hash taken", err, service.ErrConflict)
		got, err := s.SessionGetByHash(t.Context(), first.SecretHash)
		if err != nil {
			t.Fatalf("SessionGetByHash: %v", err)
		}
		assertSessionEqual(t, got, first)
	}},
}

var sessionGetByHashCases = []storeCase{
	{"ReturnsTheSession", func(t *testing.T, s service.Store) {
		sess := newSession(t, s, time.Hour)
		newSession(t, s, time.Hour)
		got, err := s.SessionGetByHash(t.Context(), sess.SecretHash)
		if err != nil {
			t.Fatalf("SessionGetByHash: %v", err)
		}
		assertSessionEqual(t, got, sess)
	}},
	{"UnknownIsNotFound", func(t *testing.T, s service.Store) {
		newSession(t, s, time.Hour)
		assertSessionGone(t, s, &service.Session{SecretHash: randomBytes(32)}, "never created")
	}},
	{"ExpiredIsNotFound", func(t *testing.T, s service.Store) {
		assertSessionGone(t, s, newSession(t, s, -time.Second), "that expired")
		// One that ends soon is found until then.
		soon := newSession(t, s, 50*time.Millisecond)
		time.Sleep(100 * time.Millisecond)
		assertSessionGone(t, s, soon, "that expired since")
	}},
}

var sessionDeleteCases = []storeCase{
	{"EndsTheSessionOnly", func(t *testing.T, s service.Store) {
		sess, other := newSession(t, s, time.Hour), newSession(t, s, time.Hour)
		if err := s.SessionDelete(t.Context(), sess.SecretHash); err != nil {
			t.Fatalf("SessionDelete: %v", err)
		}
		assertSessionGone(t, s, sess, "deleted")
		if _, err := s.SessionGetByHash(t.Context(), other.SecretHash); err != nil {
			t.Errorf("SessionGetByHash of another session: %v", err)
		}
		requireErrorIs(t, "SessionDelete again", s.SessionDelete(t.Context(), sess.SecretHash), service.ErrNotFound)
	}},
}

var sessionDeleteExpiredCases = []storeCase{
	{"DeletesExpiredOnly", func(t *testing.T, s service.Store) {
		live := newSession(t, s, time.Hour)
		for range 3 {
			newSession(t, s, -time.Minute)
		}
		n, err := s.SessionDeleteExpired(t.Context())
		if err != nil || n != 3 {
			t.Fatalf("SessionDeleteExpired = %d, %v; want 3", n, err)
		}
		if n, err := s.SessionDeleteExpired(t.Context()); err != nil || n != 0 {
			t.Errorf("SessionDeleteExpired again = %d, %v; want 0", n, err)
		}
		if _, err := s.SessionGetByHash(t.Context(), live.SecretHash); err != nil {
			t.Errorf("SessionGetByHash of the live session: %v", err)
		}
	}},
}
