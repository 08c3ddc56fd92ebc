package admin_test

import (
	"crypto/rand"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/admin"
	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/service"
	_ "github.com/llmproxy/llmproxy/service/pgstore"
	_ "github.com/llmproxy/llmproxy/service/sqlitestore"
)

const managementToken = "test-management-token"

// clock is a settable time for session expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// dashboard is the admin handler over a fresh SQLite database, served over
// HTTP to a client with a cookie jar that does not follow redirects.
type dashboard struct {
	t       *testing.T
	url     string
	handler http.Handler
	store   service.Store
	manager *manage.Manager
	keys    *secrets.Keys
	clock   *clock
	client  *http.Client
}

func newDashboard(t *testing.T) *dashboard {
	t.Helper()
	cfg := service.DefaultConfig()
	cfg.SQLitePath = filepath.Join(t.TempDir(), "llmproxy.db")
	return newDashboardOn(t, cfg)
}

// newDashboardOn serves the database cfg opens; wrap, if given, stands
// between the dashboard and the store.
func newDashboardOn(t *testing.T, cfg service.Config, wrap ...func(service.Store) service.Store) *dashboard {
	t.Helper()
	return newDashboardWithToken(t, cfg, managementToken, wrap...)
}

// newDashboardWithToken is newDashboardOn with another management token.
func newDashboardWithToken(t *testing.T, cfg service.Config, token string, wrap ...func(service.Store) service.Store) *dashboard {
	t.Helper()
	opened, err := service.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("service.Open: %v", err)
	}
	t.Cleanup(func() { opened.Close() })
	store := opened
	for _, w := range wrap {
		store = w(store)
	}
	master := make([]byte, secrets.KeySize)
	rand.Read(master)
	keys, err := secrets.NewKeys(master)
	if err != nil {
		t.Fatal(err)
	}
	d := &dashboard{t: t, store: store, manager: manage.New(store, keys, nil), keys: keys, clock: &clock{now: time.Now()}}
	d.handler = admin.New(admin.Options{
		Manager: d.manager, Store: store, ManagementToken: token, Now: d.clock.Now,
	})
	srv := httptest.NewServer(d.handler)
	t.Cleanup(srv.Close)
	d.url = srv.URL
	d.client = newClient()
	return d
}

func newClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// newBrowser is another client of the same dashboard, with its own cookies.
func (d *dashboard) newBrowser() *dashboard {
	other := *d
	other.client = newClient()
	return &other
}

// answer is a finished request.
type answer struct {
	status int
	header http.Header
	body   string
}

func (p answer) location() string { return p.header.Get("Location") }

func (d *dashboard) do(req *http.Request) answer {
	d.t.Helper()
	resp, err := d.client.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (d *dashboard) get(path string) answer {
	d.t.Helper()
	req, err := http.NewRequestWithContext(d.t.Context(), http.MethodGet, d.url+path, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	return d.do(req)
}

// postRaw sends form exactly as given, with extra headers.
func (d *dashboard) postRaw(path string, form url.Values, headers ...string) answer {
	d.t.Helper()
	req, err := http.NewRequestWithContext(d.t.Context(), http.MethodPost, d.url+path, strings.NewReader(form.Encode()))
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return d.do(req)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the form token from a signed-in page.
func (d *dashboard) csrf() string {
	d.t.Helper()
	p := d.get("/admin/projects")
	m := csrfField.FindStringSubmatch(p.body)
	if m == nil {
		d.t.Fatalf("no CSRF field on /admin/projects (%d): %s", p.status, p.body)
	}
	return m[1]
}

// post submits a form with the session's CSRF token, as the browser would.
func (d *dashboard) post(path string, fields ...string) answer {
	d.t.Helper()
	form := url.Values{"csrf": {d.csrf()}}
	for i := 0; i+1 < len(fields); i += 2 {
		form.Add(fields[i], fields[i+1])
	}
	return d.postRaw(path, form)
}

// login signs the client in and fails the test if that does not work.
func (d *dashboard) login() *dashboard {
	d.t.Helper()
	p := d.postRaw("/admin/login", url.Values{"token": {managementToken}})
	if p.status != http.StatusSeeOther {
		d.t.Fatalf("login = %d %s, want 303", p.status, p.body)
	}
	return d
}

// follow checks that p redirects to want and returns the page there.
func (d *dashboard) follow(p answer, want string) answer {
	d.t.Helper()
	if p.status != http.StatusSeeOther || p.location() != want {
		d.t.Fatalf("got %d to %q, want 303 to %q; body: %s", p.status, p.location(), want, p.body)
	}
	return d.get(want)
}

// wantPage checks a page's status and that it contains every snippet.
func wantPage(t *testing.T, what string, p answer, status int, snippets ...string) {
	t.Helper()
	if p.status != status {
		t.Fatalf("%s = %d, want %d; body:\n%s", what, p.status, status, p.body)
	}
	for _, s := range snippets {
		if !strings.Contains(p.body, s) {
			t.Errorf("%s: body lacks %q:\n%s", what, s, p.body)
		}
	}
}

// wantNot checks that a page contains none of the snippets.
func wantNot(t *testing.T, what string, p answer, snippets ...string) {
	t.Helper()
	for _, s := range snippets {
		if strings.Contains(p.body, s) {
			t.Errorf("%s: body has %q but should not", what, s)
		}
	}
}

// createProject makes a project through the Manager, as the API would.
func (d *dashboard) createProject(name string) *service.Project {
	d.t.Helper()
	p, err := d.manager.CreateProject(d.t.Context(), "test", manage.ProjectInput{Name: name, APIKey: "sk-test-upstream-key-" + name})
	if err != nil {
		d.t.Fatalf("create project %q: %v", name, err)
	}
	return p
}

func (d *dashboard) createToken(projectID int64, maxRequests int64) *manage.CreatedToken {
	d.t.Helper()
	tok, err := d.manager.CreateToken(d.t.Context(), "test", manage.TokenInput{ProjectID: projectID, DurationMinutes: 60, MaxRequests: maxRequests})
	if err != nil {
		d.t.Fatalf("create token: %v", err)
	}
	return tok
}

// lastAudit is the newest audit event.
func (d *dashboard) lastAudit() *service.AuditEvent {
	d.t.Helper()
	events, err := d.store.AuditList(d.t.Context(), &service.AuditListParams{Limit: 1})
	if err != nil || len(events) == 0 {
		d.t.Fatalf("audit list: %v (%d events)", err, len(events))
	}
	return events[0]
}

func wantAudit(t *testing.T, e *service.AuditEvent, action, result string) {
	t.Helper()
	if e.Actor != admin.Actor || e.Action != action || e.Result != result {
		t.Errorf("audit event = %s %s %s (%s), want %s %s %s", e.Actor, e.Action, e.Result, e.Details, admin.Actor, action, result)
	}
}

// selectOptions is the markup of the options of the select with id.
func selectOptions(t *testing.T, body, id string) string {
	t.Helper()
	_, rest, ok := strings.Cut(body, `<select id="`+id+`"`)
	if !ok {
		t.Fatalf("no select %q in page", id)
	}
	options, _, _ := strings.Cut(rest, "</select>")
	return options
}
