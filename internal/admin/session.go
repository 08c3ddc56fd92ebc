package admin

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// Cookie names. Both are scoped to /admin/.
const (
	sessionCookie = "llmproxy_admin"
	flashCookie   = "llmproxy_admin_flash"
)

// flashTTL bounds how long a message waits for the page after a redirect.
const flashTTL = time.Minute

// session is a signed-in browser: a row of the store's sessions table,
// found by a keyed hash of the random secret its cookie holds. Every
// instance on the database accepts it (no sticky sessions needed), a
// logout holds on all of them and across restarts, and changing
// MANAGEMENT_TOKEN, which keys the hash, ends every session.
type session struct {
	hash    []byte // the stored key of the session
	expires time.Time
	csrf    string // the form token bound to this session
}

// sessionVersion prefixes the cookie value; cookies of another form
// (signed ones, before sessions were stored) are refused.
const sessionVersion = "v2."

// sessions keeps sessions in the store and signs flash cookies, with a key
// derived from the management token.
type sessions struct {
	store service.Store
	log   *slog.Logger
	key   []byte
	ttl   time.Duration
	now   func() time.Time
}

func newSessions(store service.Store, log *slog.Logger, managementToken string, ttl time.Duration, now func() time.Time) *sessions {
	mac := hmac.New(sha256.New, []byte(managementToken))
	mac.Write([]byte("llmproxy admin session v1"))
	return &sessions{store: store, log: log, key: mac.Sum(nil), ttl: ttl, now: now}
}

func (s *sessions) sign(parts ...string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(strings.Join(parts, ".")))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (s *sessions) verify(signature string, parts ...string) bool {
	return hmac.Equal([]byte(signature), []byte(s.sign(parts...)))
}

// hash is what the store keeps of a session's secret.
func (s *sessions) hash(secret []byte) []byte {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte("session\x00"))
	mac.Write(secret)
	return mac.Sum(nil)
}

func randomText(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// start stores a new session and sets its cookie. It first deletes the
// sessions that have expired, so that they do not pile up.
func (s *sessions) start(w http.ResponseWriter, r *http.Request) (*session, error) {
	ctx := r.Context()
	if _, err := s.store.SessionDeleteExpired(ctx); err != nil {
		s.log.Warn("admin: expired sessions not deleted; the next login tries again", "err", err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	row, err := s.store.SessionCreate(ctx, &service.SessionCreateParams{
		SecretHash: s.hash(secret), CSRFToken: randomText(32), ExpiresAt: s.now().Add(s.ttl),
	})
	if err != nil {
		return nil, err
	}
	setCookie(w, r, sessionCookie, sessionVersion+base64.RawURLEncoding.EncodeToString(secret), s.ttl)
	return &session{hash: row.SecretHash, expires: row.ExpiresAt, csrf: row.CSRFToken}, nil
}

// get returns the request's session, or nil when it has none that is
// stored and unexpired, by the database's clock and by ours.
func (s *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	encoded, ok := strings.CutPrefix(c.Value, sessionVersion)
	secret, err := base64.RawURLEncoding.DecodeString(encoded)
	if !ok || err != nil || len(secret) != 32 {
		return nil
	}
	row, err := s.store.SessionGetByHash(r.Context(), s.hash(secret))
	if err != nil {
		if !errors.Is(err, service.ErrNotFound) && r.Context().Err() == nil {
			s.log.Warn("admin: session not read; treated as signed out", "err", err)
		}
		return nil
	}
	if !s.now().Before(row.ExpiresAt) {
		return nil
	}
	return &session{hash: row.SecretHash, expires: row.ExpiresAt, csrf: row.CSRFToken}
}

// end logs a session out: it is deleted from the store, so no instance
// accepts a copy of its cookie, and the cookie is cleared. The browser
// leaving does not stop it half-way.
func (s *sessions) end(w http.ResponseWriter, r *http.Request, sess *session) error {
	err := s.store.SessionDelete(context.WithoutCancel(r.Context()), sess.hash)
	if err != nil && !errors.Is(err, service.ErrNotFound) { // not found: ended meanwhile
		return err
	}
	setCookie(w, r, sessionCookie, "", -1)
	return nil
}

// validCSRF compares a submitted form token with the session's.
func (sess *session) validCSRF(token string) bool {
	return hmac.Equal([]byte(token), []byte(sess.csrf))
}

// flash is a one-time message shown on the page a change redirects to.
type flash struct {
	Kind    string // "success" or "error"
	Message string
}

func (s *sessions) setFlash(w http.ResponseWriter, r *http.Request, f flash) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(f.Kind + "\n" + f.Message))
	setCookie(w, r, flashCookie, payload+"."+s.sign("flash", payload), flashTTL)
}

// takeFlash returns the pending message, if any, and clears it.
func (s *sessions) takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return nil
	}
	setCookie(w, r, flashCookie, "", -1)
	payload, signature, ok := strings.Cut(c.Value, ".")
	if !ok || !s.verify(signature, "flash", payload) {
		return nil
	}
	text, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil
	}
	kind, message, _ := strings.Cut(string(text), "\n")
	return &flash{Kind: kind, Message: message}
}

// setCookie writes an admin cookie: HttpOnly, SameSite=Strict, and Secure
// when the browser reached us over TLS (directly or through a proxy that
// says so). maxAge < 0 deletes the cookie.
func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	c := &http.Cookie{
		Name: name, Value: value, Path: Prefix,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r),
		MaxAge: int(maxAge / time.Second),
	}
	if maxAge < 0 {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}

// overTLS trusts X-Forwarded-Proto only to add Secure, which a forged header
// cannot turn against the user.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}
