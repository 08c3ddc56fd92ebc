package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Cookie names. Both are scoped to /admin/.
const (
	sessionCookie = "llmproxy_admin"
	flashCookie   = "llmproxy_admin_flash"
)

// flashTTL bounds how long a message waits for the page after a redirect.
const flashTTL = time.Minute

// session is a signed-in browser. Sessions are signed cookies, not server
// state, so every instance behind a load balancer accepts them and a
// restart keeps them; changing MANAGEMENT_TOKEN ends them all.
type session struct {
	id      string
	expires time.Time
	csrf    string // the form token bound to this session
}

// sessions signs and checks session and flash cookies with a key derived
// from the management token.
type sessions struct {
	key []byte
	ttl time.Duration
	now func() time.Time

	// loggedOut holds sessions ended on this instance until they expire, so
	// a copied cookie is useless here after logout; other instances only see
	// the browser's cookie gone.
	mu        sync.Mutex
	loggedOut map[string]time.Time
}

func newSessions(managementToken string, ttl time.Duration, now func() time.Time) *sessions {
	mac := hmac.New(sha256.New, []byte(managementToken))
	mac.Write([]byte("llmproxy admin session v1"))
	return &sessions{key: mac.Sum(nil), ttl: ttl, now: now, loggedOut: map[string]time.Time{}}
}

func (s *sessions) sign(parts ...string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(strings.Join(parts, ".")))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (s *sessions) verify(signature string, parts ...string) bool {
	return hmac.Equal([]byte(signature), []byte(s.sign(parts...)))
}

func (s *sessions) withCSRF(id string, expires time.Time) *session {
	return &session{id: id, expires: expires, csrf: s.sign("csrf", id)}
}

// start makes a new session and sets its cookie.
func (s *sessions) start(w http.ResponseWriter, r *http.Request) *session {
	raw := make([]byte, 16)
	rand.Read(raw)
	id := base64.RawURLEncoding.EncodeToString(raw)
	expires := s.now().Add(s.ttl).Truncate(time.Second)
	exp := strconv.FormatInt(expires.Unix(), 10)
	value := "v1." + exp + "." + id + "." + s.sign("v1", exp, id)
	setCookie(w, r, sessionCookie, value, s.ttl)
	return s.withCSRF(id, expires)
}

// get returns the request's session, or nil when it has none that is
// validly signed, unexpired and not logged out.
func (s *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	parts := strings.Split(c.Value, ".")
	if len(parts) != 4 || parts[0] != "v1" || !s.verify(parts[3], parts[:3]...) {
		return nil
	}
	unix, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return nil
	}
	expires := time.Unix(unix, 0)
	if !s.now().Before(expires) {
		return nil
	}
	s.mu.Lock()
	_, ended := s.loggedOut[parts[2]]
	s.mu.Unlock()
	if ended {
		return nil
	}
	return s.withCSRF(parts[2], expires)
}

// end logs a session out: its cookie is cleared and this instance refuses it.
func (s *sessions) end(w http.ResponseWriter, r *http.Request, sess *session) {
	now := s.now()
	s.mu.Lock()
	for id, expires := range s.loggedOut {
		if !now.Before(expires) {
			delete(s.loggedOut, id)
		}
	}
	s.loggedOut[sess.id] = sess.expires
	s.mu.Unlock()
	setCookie(w, r, sessionCookie, "", -1)
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
