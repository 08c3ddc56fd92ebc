package admin_test

import (
	"cmp"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/internal/metrics"
	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/internal/server"
	"github.com/llmproxy/llmproxy/service"
)

// browserTimeout bounds one whole browser session, so a hung browser fails
// the test instead of stalling the run.
const browserTimeout = 3 * time.Minute

// chromiumPath finds Debian's chromium (CHROMIUM overrides). Without one the
// test skips, except under CI=true, where it fails: CI must run it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	path := cmp.Or(os.Getenv("CHROMIUM"), "/usr/bin/chromium")
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no browser at %s, and CI=true requires the browser test (apt-get install chromium): %v", path, err)
		}
		t.Skipf("no browser at %s (apt-get install chromium, or set CHROMIUM): %v", path, err)
	}
	return path
}

// TestBrowser drives the dashboard in headless Chromium, mounted in the real
// server: log in, create a project and a token, revoke it, read the usage
// chart and the audit log. Screenshots of each page are test artifacts
// (go test -artifacts keeps them); UPDATE_SCREENSHOTS=1 also writes the
// SQLite run's into docs/img for docs/admin.md.
func TestBrowser(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	for _, backend := range []struct {
		name   string
		config func(t *testing.T) service.Config
	}{
		{"sqlite", func(t *testing.T) service.Config {
			cfg := service.DefaultConfig()
			cfg.SQLitePath = filepath.Join(t.TempDir(), "llmproxy.db")
			return cfg
		}},
		{"postgres", func(t *testing.T) service.Config {
			cfg := service.DefaultConfig()
			cfg.Driver, cfg.DatabaseURL = service.DriverPostgres, pgtest.NewDatabase(t)
			return cfg
		}},
	} {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			d := newDashboardOn(t, backend.config(t))
			srv := httptest.NewServer(server.New(server.Options{
				Store: d.store, Manager: d.manager, Metrics: metrics.New(), Admin: d.handler, ManagementToken: managementToken,
			}))
			t.Cleanup(srv.Close)
			docs := ""
			if os.Getenv("UPDATE_SCREENSHOTS") == "1" && backend.name == "sqlite" {
				docs = filepath.Join("..", "..", "docs", "img")
			}
			b := newBrowser(t, chromium, srv.URL, docs)
			b.run(d)
		})
	}
}

// browser is one headless Chromium with a fresh profile.
type browser struct {
	t        *testing.T
	ctx      context.Context
	url      string
	docsDir  string // "" unless screenshots go into the docs too
	mu       sync.Mutex
	problems []string // console errors, failed loads, uncaught exceptions
}

func newBrowser(t *testing.T, chromium, url, docsDir string) *browser {
	t.Helper()
	ctx, cancelTimeout := context.WithTimeout(t.Context(), browserTimeout)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox, // tests may run as root, where the sandbox cannot start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancelBrowser := chromedp.NewContext(ctx, chromedp.WithErrorf(t.Logf))
	// Close the browser before the test ends, so it logs nothing afterwards.
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancelTimeout()
	})
	b := &browser{t: t, ctx: ctx, url: url, docsDir: docsDir}
	err := chromedp.Listen(ctx, func(ev any) {
		var problem string
		switch ev := ev.(type) {
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError {
				problem = fmt.Sprintf("console %s: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
			}
		case *runtime.EventExceptionThrown:
			problem = "uncaught exception: " + ev.ExceptionDetails.Text
		}
		if problem != "" {
			b.mu.Lock()
			b.problems = append(b.problems, problem)
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	return b
}

// do runs steps and fails the test, saying what was being done, if one fails.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.shot("failed")
		b.t.Fatalf("%s: %v", what, err)
	}
}

func run[T any](b *browser, what string, action chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, action)
	if err != nil {
		b.shot("failed")
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// open navigates and waits until the element with id is shown.
func (b *browser) open(path, id string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.url+path), chromedp.WaitVisible(chromedp.ID(id)))
}

// submit clicks the button (or link) css selects, which loads a new page,
// and waits until the element with id is shown there.
func (b *browser) submit(css, id string) {
	b.t.Helper()
	run(b, "click "+css, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(css))))
	b.do("wait for #"+id, chromedp.WaitVisible(chromedp.ID(id)))
}

// text is the text of the first element css selects.
func (b *browser) text(css string) string {
	b.t.Helper()
	return run(b, "read "+css, chromedp.Text(chromedp.CSS(css)))
}

// shot saves a full-page screenshot as a test artifact, and into the docs
// when asked.
func (b *browser) shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	dirs := []string{b.t.ArtifactDir()}
	if b.docsDir != "" && name != "failed" {
		dirs = append(dirs, b.docsDir)
	}
	for _, dir := range dirs {
		path := filepath.Join(dir, "admin-"+name+".png")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.t.Errorf("save screenshot: %v", err)
			continue
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			b.t.Errorf("save screenshot: %v", err)
			continue
		}
		b.t.Logf("screenshot: %s", path)
	}
}

var secretSyntax = regexp.MustCompile(`^sk-[A-Za-z0-9_-]{43}$`)

func (b *browser) run(d *dashboard) {
	t := b.t
	seedDemo(t, d)

	// Signed out, the dashboard asks for the management token.
	b.open("/admin/", "token")
	b.shot("login")
	b.do("type a wrong token", chromedp.SendKeys(chromedp.ID("token"), "wrong"))
	b.submit(`form[action="/admin/login"] button`, "token-error")
	if got := b.text("#token-error"); got != "That is not the management token." {
		t.Errorf("wrong token: error %q", got)
	}
	if got := b.takeProblems(); len(got) != 1 || !strings.Contains(got[0], "status of 401") {
		t.Errorf("wrong token: browser reports %q, want the 401 alone", got)
	}
	b.do("type the token", chromedp.SendKeys(chromedp.ID("token"), managementToken))
	b.submit(`form[action="/admin/login"] button`, "project-name")
	// The style sheet applies (CSP allows it): the header is dark.
	if bg := run(b, "read style", chromedp.Evaluate[string](`getComputedStyle(document.querySelector(".site-header")).backgroundColor`)); bg != "rgb(22, 32, 44)" {
		t.Errorf("header background %q: admin.css not applied", bg)
	}

	// Create a project.
	b.do("fill the project form",
		chromedp.SendKeys(chromedp.ID("project-name"), "team-a"),
		chromedp.SendKeys(chromedp.ID("project-key"), "sk-proj-browser-test-key-4242"))
	b.submit(`form[action="/admin/projects"] button`, "edit-name")
	if got := b.text(".flash"); got != `Project "team-a" created.` {
		t.Errorf("flash after creating the project: %q", got)
	}
	projects, err := d.manager.Projects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	project := projects[len(projects)-1]
	if project.Name != "team-a" || project.APIKeyHint != "sk-...4242" {
		t.Fatalf("newest project = %+v, want team-a", project)
	}
	b.shot("project")
	b.submit(`nav a[href="/admin/projects"]`, "project-name")
	b.shot("projects")

	// Create a token for it; the secret is shown once, with a copy button.
	b.open("/admin/projects/"+manage.FormatID(project.ID), "edit-name")
	b.submit(`a[href="/admin/tokens?project_id=`+manage.FormatID(project.ID)+`"]`, "token-duration")
	b.do("fill the token form",
		chromedp.SetValue(chromedp.ID("token-duration"), "7"),
		chromedp.SetValue(chromedp.ID("token-unit"), "days"),
		chromedp.SendKeys(chromedp.ID("token-max"), "1000"))
	b.submit(`form[action="/admin/tokens"] button`, "token-secret")
	secret := run(b, "read the secret", chromedp.Value(chromedp.ID("token-secret")))
	if !secretSyntax.MatchString(secret) {
		t.Fatalf("secret field holds %q", secret)
	}
	token, err := d.store.TokenGetByHash(t.Context(), d.keys.HashToken(secret))
	if err != nil || token.ProjectID != project.ID || token.MaxRequests == nil || *token.MaxRequests != 1000 {
		t.Fatalf("the secret shown is not the new token's: %+v %v", token, err)
	}
	b.do("copy the secret",
		chromedp.WaitVisible(chromedp.CSS("button[data-copy]")), // the script shows it
		chromedp.Click(chromedp.CSS("button[data-copy]")))
	status := run(b, "read the copy status", chromedp.Poll[string](`document.getElementById("copy-status").textContent`, chromedp.WithPollingTimeout(10*time.Second)))
	if !strings.HasPrefix(status, "Copied") && !strings.HasPrefix(status, "Could not copy") {
		t.Errorf("copy status %q", status)
	}
	b.shot("token-created")

	// Revoke it from the token list.
	id := manage.FormatID(token.ID)
	b.open("/admin/tokens", "filter-state")
	b.submit(`form[action="/admin/tokens/`+id+`/revoke"] button`, "filter-state")
	if got := b.text(".flash"); got != "Token #"+id+" revoked." {
		t.Errorf("flash after revoking: %q", got)
	}
	if got, err := d.manager.Token(t.Context(), token.ID); err != nil || got.IsActive {
		t.Errorf("token after revoking in the browser: %+v %v", got, err)
	}
	b.shot("tokens")

	// The usage chart renders, with the new token's requests in it.
	if _, err := d.store.UsageInsertBatch(t.Context(), []*service.UsageEventCreateParams{{
		TokenID: token.ID, ProjectID: project.ID, Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o",
		Status: 200, PromptTokens: 12, CompletionTokens: 30, TotalTokens: 42, LatencyMS: 300, CreatedAt: time.Now(),
	}}); err != nil {
		t.Fatal(err)
	}
	b.open("/admin/usage?days=14", "usage-chart")
	bars := run(b, "count bars", chromedp.Evaluate[int](`document.querySelectorAll("#usage-chart rect").length`))
	height := run(b, "measure the chart", chromedp.Evaluate[float64](`document.getElementById("usage-chart").getBoundingClientRect().height`))
	if bars < 14 || height < 200 {
		t.Errorf("usage chart has %d bars and is %.0f px high, want a bar per day and model, drawn large", bars, height)
	}
	b.shot("usage")
	b.open("/admin/usage?days=14&project_id="+manage.FormatID(project.ID)+"&token_id="+id, "usage-chart")
	if got := b.text(".totals div:first-child dd"); got != "1" {
		t.Errorf("requests of the new token = %q, want 1", got)
	}

	// The audit log shows what the browser did.
	b.open("/admin/audit?result=success", "audit-action")
	audit := b.text("table.audit tbody")
	for _, want := range []string{"admin-ui\ttoken.revoke", "admin-ui\ttoken.create", "admin-ui\tproject.create"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log lacks %q:\n%s", want, audit)
		}
	}
	b.open("/admin/audit", "audit-action")
	b.shot("audit")

	// Logging out ends the session.
	b.submit(`form[action="/admin/logout"] button`, "token")
	b.open("/admin/tokens", "token")

	for _, p := range b.takeProblems() {
		t.Errorf("browser: %s", p)
	}
}

// takeProblems returns the problems the browser reported so far and forgets them.
func (b *browser) takeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	problems := b.problems
	b.problems = nil
	return problems
}

// seedDemo fills the database with a few projects, tokens and two weeks of
// usage, so the pages and screenshots show something like real use.
func seedDemo(t *testing.T, d *dashboard) {
	t.Helper()
	ctx := t.Context()
	project := func(name, key string) *service.Project {
		p, err := d.manager.CreateProject(ctx, "cli", manage.ProjectInput{Name: name, APIKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	token := func(p *service.Project, days, maxRequests int64) *manage.CreatedToken {
		tok, err := d.manager.CreateToken(ctx, "api@10.0.0.7", manage.TokenInput{ProjectID: p.ID, DurationMinutes: days * 24 * 60, MaxRequests: maxRequests})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	research := project("research", "sk-proj-Xw3kR9tLq2mVb7NpH4cD8fGj1a5e")
	support := project("support-bot", "sk-proj-Jm6pT2wQz8rLx4vB9nKc3hY7s1Ud")
	legacy := project("legacy-app", "sk-legacy-9f8e7d6c5b4a3f2e1d0c7b7c")
	tokens := []*manage.CreatedToken{token(research, 30, 5000), token(research, 7, 0), token(support, 90, 20000)}
	old := token(legacy, 1, 0)
	if err := d.manager.RevokeToken(ctx, "cli", old.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.manager.UpdateProject(ctx, "cli", legacy.ID, manage.ProjectPatch{IsActive: new(false)}); err != nil {
		t.Fatal(err)
	}
	models := []string{"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var events []*service.UsageEventCreateParams
	for day := range 14 {
		for m, model := range models {
			// A weekly rhythm and a slow rise, different per model.
			n := 4 + (day*7+m*5)%11 + day/2 - 2*m
			for i := range max(n, 1) {
				tok := tokens[(day+i+m)%len(tokens)]
				status := int64(200)
				if (day+i)%17 == 0 {
					status = 429
				}
				events = append(events, &service.UsageEventCreateParams{
					TokenID: tok.ID, ProjectID: tok.ProjectID, Method: "POST", Path: "/v1/chat/completions", Model: model,
					Status: status, PromptTokens: int64(200 + 37*i), CompletionTokens: int64(80 + 11*i), TotalTokens: int64(280 + 48*i),
					LatencyMS: 400, CreatedAt: today.AddDate(0, 0, day-13).Add(time.Duration(9+i%8) * time.Hour),
				})
			}
		}
	}
	if _, err := d.store.UsageInsertBatch(ctx, events); err != nil {
		t.Fatal(err)
	}
	for range 42 {
		if _, err := d.store.TokenAdmit(ctx, tokens[0].ID); err != nil {
			t.Fatal(err)
		}
	}
}
