package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Failed management authentication through serve: /manage and the
// dashboard's login count against one limit per client, the client behind
// a proxy listed in TRUSTED_PROXIES is told apart by X-Forwarded-For, and
// the 11th failure within a minute, and the right token after it, get 429
// while another client goes on. (The window's end is the unit tests',
// with a clock they control.)
func TestServeThrottlesManagementAuth(t *testing.T) {
	t.Parallel()
	s := startServe(t, map[string]string{"TRUSTED_PROXIES": "127.0.0.1, ::1"})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(forwardedFor, method, path, auth, form string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, s.url+path, strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", forwardedFor)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		if form != "" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp
	}
	manage := func(from, token string) int { return send(from, "GET", "/manage/projects", token, "").StatusCode }
	login := func(from, token string) int {
		return send(from, "POST", "/admin/login", "", url.Values{"token": {token}}.Encode()).StatusCode
	}

	const attacker, other = "198.51.100.20", "198.51.100.21"
	for i := range 5 {
		if got := manage(attacker, fmt.Sprintf("wrong-management-token-%d", i)); got != http.StatusUnauthorized {
			t.Fatalf("/manage failure %d = %d, want 401", i+1, got)
		}
		if got := login(attacker, fmt.Sprintf("wrong-login-token-%d", i)); got != http.StatusUnauthorized {
			t.Fatalf("/admin/login failure %d = %d, want 401", i+1, got)
		}
	}
	resp := send(attacker, "GET", "/manage/projects", "wrong-management-token-5", "")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("11th failure = %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if got := manage(attacker, s.admin); got != http.StatusTooManyRequests {
		t.Errorf("/manage with the right token after 10 failures = %d, want 429", got)
	}
	if got := login(attacker, s.admin); got != http.StatusTooManyRequests {
		t.Errorf("/admin/login with the right token after 10 failures = %d, want 429", got)
	}
	if got := manage(other, s.admin); got != http.StatusOK {
		t.Errorf("another client's right token = %d, want 200", got)
	}
	if got := login(other, s.admin); got != http.StatusSeeOther {
		t.Errorf("another client's login = %d, want 303", got)
	}
	// A forged left-most entry does not make the attacker someone else.
	if got := manage("192.0.2.99, "+attacker, s.admin); got != http.StatusTooManyRequests {
		t.Errorf("with a forged X-Forwarded-For entry = %d, want 429", got)
	}
	checkLogLine(t, s.stderr.String(), `"msg":"management authentication failed"`, `"level":"WARN"`, `"client":"198.51.100.20"`, `"path":"/admin/login"`)
	checkLogLine(t, s.stderr.String(), `"msg":"management authentication failed"`, `"client":"198.51.100.20"`, `"path":"/manage/projects"`)
	if strings.Contains(s.stderr.String(), "wrong-") {
		t.Errorf("the log shows a token tried:\n%s", s.stderr)
	}
}

// Without TRUSTED_PROXIES, X-Forwarded-For is the client's to write, so
// it is ignored: all of these come from one address.
func TestServeThrottleIgnoresUntrustedForwardedFor(t *testing.T) {
	t.Parallel()
	s := startServe(t, nil)
	for i := range 11 {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", s.url+"/manage/projects", nil)
		req.Header.Set("Authorization", "Bearer wrong-management-token")
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusUnauthorized
		if i == 10 {
			want = http.StatusTooManyRequests
		}
		if resp.StatusCode != want {
			t.Fatalf("attempt %d = %d, want %d", i+1, resp.StatusCode, want)
		}
	}
}
