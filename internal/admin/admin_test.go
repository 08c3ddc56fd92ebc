package admin_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/admin"
	"github.com/llmproxy/llmproxy/service"
)

// pages are every signed-in page, with the heading each shows.
var pages = []struct{ path, heading string }{
	{"/admin/projects", "<h1>Projects</h1>"},
	{"/admin/tokens", "<h1>Tokens</h1>"},
	{"/admin/usage", "<h1>Usage</h1>"},
	{"/admin/audit", "<h1>Audit log</h1>"},
}

func TestLoginRequired(t *testing.T) {
	t.Parallel()
	d := newDashboard(t)
	for _, pg := range pages {
		p := d.get(pg.path + "?x=1")
		if p.status != http.StatusSeeOther || p.location() != "/admin/login?next="+url.QueryEscape(pg.path+"?x=1") {
			t.Errorf("GET %s signed out = %d to %q, want 303 to the login page with next", pg.path, p.status, p.location())
		}
	}
	for _, path := range []string{"/admin/projects", "/admin/projects/1/active", "/admin/tokens", "/admin/tokens/1/revoke", "/admin/logout"} {
		p := d.postRaw(path, url.Values{"name": {"x"}, "api_key": {"sk-1234567890"}})
		if p.status != http.StatusSeeOther || p.location() != "/admin/login" {
			t.Errorf("POST %s signed out = %d to %q, want 303 to /admin/login", path, p.status, p.location())
		}
	}
	if p := d.get("/admin/"); p.location() != "/admin/login" {
		t.Errorf("GET /admin/ signed out goes to %q, want /admin/login", p.location())
	}
	projects, err := d.manager.Projects(t.Context())
	if err != nil || len(projects) != 0 {
		t.Errorf("signed-out posts created projects: %v %v", projects, err)
	}
}

func TestLoginPage(t *testing.T) {
	t.Parallel()
	d := newDashboard(t)
	p := d.get("/admin/login?next=/admin/usage")
	wantPage(t, "login page", p, http.StatusOK,
		`<label for="token">Management token</label>`, `type="password" id="token" name="token"`,
		`name="next" value="/admin/usage"`)
	wantNot(t, "login page", p, `action="/admin/logout"`, `<nav aria-label="Main">`)
}

func TestLoginWrongToken(t *testing.T) {
	t.Parallel()
	d := newDashboard(t)
	for _, tc := range []struct{ token, message string }{
		{"not-the-token", "That is not the management token."},
		{managementToken + "x", "That is not the management token."},
		{"", "Enter the management token."},
	} {
		p := d.postRaw("/admin/login", url.Values{"token": {tc.token}, "next": {"/admin/audit"}})
		wantPage(t, "login with "+tc.token, p, http.StatusUnauthorized, tc.message, `role="alert"`, `aria-invalid="true"`, `name="next" value="/admin/audit"`)
		if cookies := p.header.Values("Set-Cookie"); len(cookies) != 0 {
			t.Errorf("failed login set cookies %q", cookies)
		}
	}
	if p := d.get("/admin/projects"); p.status != http.StatusSeeOther {
		t.Errorf("after failed logins, /admin/projects = %d, want a redirect to log in", p.status)
	}
}

func TestLoginCookie(t *testing.T) {
	t.Parallel()
	d := newDashboard(t)
	p := d.postRaw("/admin/login", url.Values{"token": {managementToken}, "next": {"/admin/usage?days=7"}})
	if p.status != http.StatusSeeOther || p.location() != "/admin/usage?days=7" {
		t.Fatalf("login = %d to %q, want 303 to /admin/usage?days=7", p.status, p.location())
	}
	c := sessionCookie(t, p.header)
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/admin/" || c.MaxAge != int(admin.DefaultSessionTTL/time.Second) {
		t.Errorf("session cookie over plain HTTP = %+v, want HttpOnly, SameSite=Strict, not Secure, Path=/admin/, MaxAge 12h", c)
	}
	wantPage(t, "page after login", d.get("/admin/usage?days=7"), http.StatusOK, "<h1>Usage</h1>", `action="/admin/logout"`)

	// Over TLS, directly or behind a proxy that says so, the cookie is Secure.
	for name, setup := range map[string]func(r *http.Request){
		"tls":               func(r *http.Request) { r.TLS = &tls.ConnectionState{} },
		"x-forwarded-proto": func(r *http.Request) { r.Header.Set("X-Forwarded-Proto", "https") },
	} {
		req := httptest.NewRequest(http.MethodPost, "/admin/login", strings.NewReader("token="+managementToken))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		setup(req)
		rec := httptest.NewRecorder()
		d.handler.ServeHTTP(rec, req)
		if c := sessionCookie(t, rec.Header()); !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
			t.Errorf("%s: session cookie = %+v, want Secure, HttpOnly, SameSite=Strict", name, c)
		}
	}
}

func sessionCookie(t *testing.T, h http.Header) *http.Cookie {
	t.Helper()
	for _, line := range h.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err == nil && c.Name == "llmproxy_admin" {
			return c
		}
	}
	t.Fatalf("no session cookie in %q", h.Values("Set-Cookie"))
	return nil
}

func TestLoginNextStaysInDashboard(t *testing.T) {
	t.Parallel()
	d := newDashboard(t)
	for next, want := range map[string]string{
		"":                      "/admin/projects",
		"/admin/audit?result=x": "/admin/audit?result=x",
		"//evil.example/admin/": "/admin/projects",
		"https://evil.example/": "/admin/projects",
		"/manage/projects":      "/admin/projects",
		`/admin/\evil`:          "/admin/projects",
		"/admin/../manage/x":    "/admin/projects",
	} {
		p := d.postRaw("/admin/login", url.Values{"token": {managementToken}, "next": {next}})
		if p.location() != want {
			t.Errorf("login with next=%q goes to %q, want %q", next, p.location(), want)
		}
	}
	// Signed in, the login page sends the browser on.
	if p := d.get("/admin/login?next=/admin/tokens"); p.status != http.StatusSeeOther || p.location() != "/admin/tokens" {
		t.Errorf("login page when signed in = %d to %q, want 303 to /admin/tokens", p.status, p.location())
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	stolen := d.client.Jar.Cookies(mustURL(t, d.url+"/admin/"))
	p := d.post("/admin/logout")
	if p.status != http.StatusSeeOther || p.location() != "/admin/login" {
		t.Fatalf("logout = %d to %q", p.status, p.location())
	}
	if c := sessionCookie(t, p.header); c.MaxAge >= 0 {
		t.Errorf("logout cookie %+v does not delete the session", c)
	}
	if p := d.get("/admin/projects"); p.status != http.StatusSeeOther {
		t.Errorf("after logout /admin/projects = %d, want a redirect to log in", p.status)
	}
	// A copy of the cookie taken before logout is refused too.
	d.client.Jar.SetCookies(mustURL(t, d.url+"/admin/"), stolen)
	if p := d.get("/admin/projects"); p.status != http.StatusSeeOther {
		t.Errorf("replayed session cookie after logout = %d, want a redirect to log in", p.status)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestSessionExpires(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	d.clock.Advance(admin.DefaultSessionTTL - time.Minute)
	if p := d.get("/admin/projects"); p.status != http.StatusOK {
		t.Fatalf("session before its expiry = %d, want 200", p.status)
	}
	d.clock.Advance(time.Minute)
	if p := d.get("/admin/projects"); p.status != http.StatusSeeOther {
		t.Errorf("session at its expiry = %d, want a redirect to log in", p.status)
	}
}

func TestCSRF(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	token := d.csrf()
	for name, tc := range map[string]struct {
		form    url.Values
		headers []string
	}{
		"no token":         {url.Values{"name": {"a"}, "api_key": {"sk-1234567890"}}, nil},
		"wrong token":      {url.Values{"csrf": {token + "x"}, "name": {"a"}, "api_key": {"sk-1234567890"}}, nil},
		"cross-site fetch": {url.Values{"csrf": {token}, "name": {"a"}, "api_key": {"sk-1234567890"}}, []string{"Sec-Fetch-Site", "cross-site"}},
		"foreign origin":   {url.Values{"csrf": {token}, "name": {"a"}, "api_key": {"sk-1234567890"}}, []string{"Origin", "https://evil.example"}},
	} {
		p := d.postRaw("/admin/projects", tc.form, tc.headers...)
		wantPage(t, name, p, http.StatusForbidden, `role="alert"`)
	}
	// A cross-site login is refused as well.
	p := d.postRaw("/admin/login", url.Values{"token": {managementToken}}, "Sec-Fetch-Site", "cross-site")
	wantPage(t, "cross-site login", p, http.StatusForbidden)

	projects, err := d.manager.Projects(t.Context())
	if err != nil || len(projects) != 0 {
		t.Errorf("refused forms created projects: %v %v", projects, err)
	}
	// The token of one session is no good for another.
	p = d.postRaw("/admin/projects", url.Values{"csrf": {d.newBrowser().login().csrf()}, "name": {"a"}, "api_key": {"sk-1234567890"}})
	wantPage(t, "another session's token", p, http.StatusForbidden)
	// Same-origin browser posts pass.
	p = d.postRaw("/admin/projects", url.Values{"csrf": {token}, "name": {"a"}, "api_key": {"sk-1234567890"}},
		"Sec-Fetch-Site", "same-origin", "Origin", d.url)
	if p.status != http.StatusSeeOther {
		t.Errorf("same-origin post = %d %s, want 303", p.status, p.body)
	}
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	for _, path := range []string{"/admin/login", "/admin/projects", "/admin/usage"} {
		h := d.get(path).header
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		for name, want := range map[string]string{
			"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
			"Content-Type": "text/html; charset=utf-8",
		} {
			if got := h.Get(name); got != want {
				t.Errorf("%s: %s = %q, want %q", path, name, got, want)
			}
		}
	}
}

func TestEveryPageRenders(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	for _, pg := range pages {
		p := d.get(pg.path)
		wantPage(t, pg.path, p, http.StatusOK, pg.heading, `<html lang="en">`, `href="/admin/static/admin.css"`,
			`aria-current="page"`, `<main id="main"`, `aria-live="polite"`)
	}
	if p := d.get("/admin/"); p.status != http.StatusSeeOther || p.location() != "/admin/projects" {
		t.Errorf("GET /admin/ = %d to %q, want 303 to /admin/projects", p.status, p.location())
	}
	wantPage(t, "unknown page", d.get("/admin/nope"), http.StatusNotFound, "There is no page at /admin/nope.")
}

func TestStaticAssets(t *testing.T) {
	t.Parallel()
	d := newDashboard(t) // no login needed
	for path, contentType := range map[string]string{
		"/admin/static/admin.css": "text/css; charset=utf-8",
		"/admin/static/admin.js":  "text/javascript; charset=utf-8",
	} {
		p := d.get(path)
		if p.status != http.StatusOK || p.header.Get("Content-Type") != contentType || p.header.Get("ETag") == "" {
			t.Errorf("GET %s = %d %q ETag %q", path, p.status, p.header.Get("Content-Type"), p.header.Get("ETag"))
			continue
		}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, d.url+path, nil)
		req.Header.Set("If-None-Match", p.header.Get("ETag"))
		if again := d.do(req); again.status != http.StatusNotModified {
			t.Errorf("GET %s with its ETag = %d, want 304", path, again.status)
		}
	}
	for _, path := range []string{"/admin/static/", "/admin/static/missing.css"} {
		if p := d.get(path); p.status != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, p.status)
		}
	}
}

// failingStore fails the listings it is told to, with err.
type failingStore struct {
	service.Store
	err             error
	projects, audit bool
}

func (s failingStore) ProjectList(ctx context.Context, p *service.ProjectListParams) ([]*service.Project, error) {
	if s.projects {
		return nil, s.err
	}
	return s.Store.ProjectList(ctx, p)
}

func (s failingStore) AuditList(ctx context.Context, p *service.AuditListParams) ([]*service.AuditEvent, error) {
	if s.audit {
		return nil, s.err
	}
	return s.Store.AuditList(ctx, p)
}

func TestStoreFailures(t *testing.T) {
	t.Parallel()
	unavailable := fmt.Errorf("%w: connection refused", service.ErrUnavailable)
	for _, tc := range []struct {
		name            string
		err             error
		projects, audit bool
		path            string
		status          int
		message         string
	}{
		{"unavailable via manager", unavailable, true, false, "/admin/projects", http.StatusServiceUnavailable, "database unavailable, try again"},
		{"unavailable via store", unavailable, false, true, "/admin/audit", http.StatusServiceUnavailable, "database unavailable, try again"},
		{"bug", errors.New("corrupt page 7"), true, false, "/admin/tokens", http.StatusInternalServerError, "Something went wrong; the error was logged."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := service.DefaultConfig()
			cfg.SQLitePath = filepath.Join(t.TempDir(), "llmproxy.db")
			d := newDashboardOn(t, cfg, func(s service.Store) service.Store {
				return failingStore{Store: s, err: tc.err, projects: tc.projects, audit: tc.audit}
			}).login()
			p := d.get(tc.path)
			wantPage(t, tc.path, p, tc.status, tc.message)
			wantNot(t, tc.path, p, "connection refused", "corrupt")
		})
	}
}
