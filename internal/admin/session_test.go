package admin_test

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/admin"
	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/service"
)

// sessionBackends are fresh databases of each kind.
var sessionBackends = []struct {
	name   string
	config func(t *testing.T) service.Config
}{
	{"SQLite", func(t *testing.T) service.Config {
		cfg := service.DefaultConfig()
		cfg.SQLitePath = filepath.Join(t.TempDir(), "llmproxy.db")
		return cfg
	}},
	{"Postgres", func(t *testing.T) service.Config {
		cfg := service.DefaultConfig()
		cfg.Driver, cfg.DatabaseURL = service.DriverPostgres, pgtest.NewDatabase(t)
		return cfg
	}},
}

// browsing returns d's instance used by the browser of from (cookie jars
// do not tell loopback servers apart by port).
func (d *dashboard) browsing(from *dashboard) *dashboard {
	other := *d
	other.client = from.client
	return &other
}

func signedIn(d *dashboard) bool {
	d.t.Helper()
	p := d.get("/admin/projects")
	if p.status != http.StatusOK && p.status != http.StatusSeeOther {
		d.t.Fatalf("/admin/projects = %d: %s", p.status, p.body)
	}
	return p.status == http.StatusOK
}

// Sessions live in the database: every instance on it accepts a session,
// and a logout on one holds on the others and after a restart.
func TestSessionsLiveInTheDatabase(t *testing.T) {
	t.Parallel()
	for _, b := range sessionBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			cfg := b.config(t)
			first := newDashboardOn(t, cfg).login()
			second := newDashboardOn(t, cfg).browsing(first)
			if !signedIn(second) {
				t.Fatal("another instance on the database refuses the session")
			}
			stolen := first.client.Jar.Cookies(mustURL(t, first.url+"/admin/"))

			if p := second.post("/admin/logout"); p.status != http.StatusSeeOther || p.location() != "/admin/login" {
				t.Fatalf("logout on the second instance = %d to %q", p.status, p.location())
			}
			first.client.Jar.SetCookies(mustURL(t, first.url+"/admin/"), stolen)
			if signedIn(first) {
				t.Error("the first instance accepts a cookie logged out on the second")
			}
			restarted := newDashboardOn(t, cfg).browsing(first)
			if signedIn(restarted) {
				t.Error("an instance started after the logout accepts the logged-out cookie")
			}
		})
	}
}

// A session that has expired by the database's clock is refused, even by
// an instance whose own clock is behind.
func TestSessionExpiredInDatabaseIsRefused(t *testing.T) {
	t.Parallel()
	for _, b := range sessionBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			d := newDashboardOn(t, b.config(t))
			// Its clock is so far behind that the session it starts expired
			// an hour ago, in real time.
			d.clock.Advance(-admin.DefaultSessionTTL - time.Hour)
			d.login()
			if signedIn(d) {
				t.Error("a session expired by the database's clock was accepted")
			}
		})
	}
}

// A login deletes the sessions that have expired.
func TestLoginDeletesExpiredSessions(t *testing.T) {
	t.Parallel()
	d := newDashboard(t)
	for range 3 {
		if _, err := d.store.SessionCreate(t.Context(), &service.SessionCreateParams{
			SecretHash: []byte(rand.Text()), CSRFToken: "x", ExpiresAt: time.Now().Add(-time.Minute),
		}); err != nil {
			t.Fatal(err)
		}
	}
	d.login()
	if n, err := d.store.SessionDeleteExpired(t.Context()); err != nil || n != 0 {
		t.Errorf("SessionDeleteExpired after a login = %d, %v; want the login to have deleted them", n, err)
	}
	if !signedIn(d) {
		t.Error("the new session was deleted with the expired ones")
	}
}

// Only a cookie the dashboard issued, under this management token, whose
// session is stored, signs in.
func TestForgedSessionCookies(t *testing.T) {
	t.Parallel()
	cfg := sessionBackends[0].config(t)
	d := newDashboardOn(t, cfg).login()
	genuine := d.client.Jar.Cookies(mustURL(t, d.url+"/admin/"))
	if len(genuine) != 1 {
		t.Fatalf("cookies = %v", genuine)
	}
	random := make([]byte, 32)
	rand.Read(random)
	for name, forged := range map[string]string{
		"unknown secret":  "v2." + base64.RawURLEncoding.EncodeToString(random),
		"short secret":    "v2." + base64.RawURLEncoding.EncodeToString(random[:16]),
		"signed v1":       "v1.9999999999.AAAAAAAAAAAAAAAAAAAAAA.c2lnbmF0dXJl",
		"no version":      genuine[0].Value[len("v2."):],
		"not base64":      "v2.%%%",
		"genuine doubled": genuine[0].Value + genuine[0].Value[len("v2."):],
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, d.url+"/admin/projects", nil)
		req.AddCookie(&http.Cookie{Name: "llmproxy_admin", Value: forged})
		if p := newDashboard(t).browsing(d).do(req); p.status != http.StatusSeeOther {
			t.Errorf("%s: forged cookie gives %d, want a redirect to log in", name, p.status)
		}
	}
	// Another instance on the database under another management token:
	// changing the token ends every session.
	if signedIn(newDashboardWithToken(t, cfg, managementToken+"-rotated").browsing(d)) {
		t.Error("a session survived a change of MANAGEMENT_TOKEN")
	}
	if !signedIn(newDashboardOn(t, cfg).browsing(d)) {
		t.Error("the genuine cookie is refused by an instance with the same token")
	}
}
