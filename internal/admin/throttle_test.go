package admin_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/admin"
	"github.com/llmproxy/llmproxy/internal/authlimit"
)

// After 10 wrong tokens in a minute, a client address gets the login page
// with 429 for the rest of the minute, even with the right token; other
// addresses log in; each wrong token is logged, never the token itself.
func TestLoginThrottled(t *testing.T) {
	t.Parallel()
	d := newDashboard(t)
	var log bytes.Buffer // written on this goroutine only: requests go straight to the handler
	h := admin.New(admin.Options{
		Manager: d.manager, Store: d.store, ManagementToken: managementToken, Now: d.clock.Now,
		AuthLimiter: authlimit.New(authlimit.Options{Now: d.clock.Now}),
		Logger:      slog.New(slog.NewJSONHandler(&log, nil)),
	})
	login := func(remote, token string) answer {
		req := httptest.NewRequest(http.MethodPost, "/admin/login", strings.NewReader(url.Values{"token": {token}, "next": {"/admin/audit"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return answer{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
	}
	const attacker, other = "203.0.113.5:50000", "203.0.113.6:50000"

	// An empty form tries no token, so it does not count.
	for range 5 {
		wantPage(t, "empty token", login(attacker, ""), http.StatusUnauthorized, "Enter the management token.")
	}
	for i := range 10 {
		wantPage(t, fmt.Sprintf("wrong token %d", i+1), login(attacker, fmt.Sprintf("guess-%d-secret", i)), http.StatusUnauthorized, "That is not the management token.")
	}
	d.clock.Advance(10 * time.Second)
	for _, token := range []string{"guess-10-secret", managementToken} {
		p := login(attacker, token)
		wantPage(t, "11th login", p, http.StatusTooManyRequests,
			"Too many failed logins from your address. Try again in 50 seconds.", `role="alert"`, `name="next" value="/admin/audit"`)
		if got := p.header.Get("Retry-After"); got != "50" {
			t.Errorf("Retry-After = %q, want 50", got)
		}
		if cookies := p.header.Values("Set-Cookie"); len(cookies) != 0 {
			t.Errorf("refused login set cookies %q", cookies)
		}
	}
	if p := login(other, managementToken); p.status != http.StatusSeeOther {
		t.Errorf("another address with the right token: %d, want 303", p.status)
	}
	d.clock.Advance(50 * time.Second)
	if p := login(attacker, managementToken); p.status != http.StatusSeeOther {
		t.Errorf("once the minute has ended: %d, want 303", p.status)
	}

	if strings.Contains(log.String(), "guess-") || strings.Contains(log.String(), managementToken) {
		t.Errorf("the log shows a token tried:\n%s", log.String())
	}
	failures := 0
	for line := range strings.Lines(log.String()) {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) == nil && entry["msg"] == "management authentication failed" {
			failures++
			if entry["level"] != "WARN" || entry["client"] != "203.0.113.5" || entry["path"] != "/admin/login" {
				t.Errorf("failure log line %s, want WARN with client 203.0.113.5 and path /admin/login", line)
			}
		}
	}
	if failures != 10 {
		t.Errorf("%d failures logged, want 10:\n%s", failures, log.String())
	}
}
