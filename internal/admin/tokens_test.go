package admin_test

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/service"
)

var secretField = regexp.MustCompile(`id="token-secret" class="secret" value="(sk-[A-Za-z0-9_-]{43})" readonly`)

func TestTokenCreate(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	d.createProject("team-a")
	form := selectOptions(t, d.get("/admin/tokens?project_id=1").body, "token-project")
	if !strings.Contains(form, `<option value="1" selected>team-a</option>`) {
		t.Errorf("create form does not preselect the filtered project: %s", form)
	}

	p := d.post("/admin/tokens", "project_id", "1", "duration", "2", "unit", "hours", "max_requests", "500")
	wantPage(t, "created", p, http.StatusCreated, "<h1>Token created</h1>", "This is the only time it is shown.",
		`data-copy="token-secret"`, "Request limit</dt><dd>500</dd>", "(in 2 h)")
	m := secretField.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no read-only secret field in:\n%s", p.body)
	}
	// The secret shown is the token's.
	tok, err := d.store.TokenGetByHash(t.Context(), d.keys.HashToken(m[1]))
	if err != nil {
		t.Fatalf("the secret shown matches no token: %v", err)
	}
	if tok.ProjectID != 1 || *tok.MaxRequests != 500 || tok.ExpiresAt.Sub(tok.CreatedAt).Round(time.Minute) != 2*time.Hour {
		t.Errorf("token = %+v, want project 1, limit 500, valid 2 h", tok)
	}
	wantAudit(t, d.lastAudit(), manage.ActionTokenCreate, manage.ResultSuccess)
	// Nowhere else: not in the list.
	wantNot(t, "token list", d.get("/admin/tokens"), m[1])

	p = d.post("/admin/tokens", "project_id", "1", "duration", "365", "unit", "days", "max_requests", "")
	wantPage(t, "unlimited, one year", p, http.StatusCreated, "Request limit</dt><dd>unlimited</dd>")
}

func TestTokenCreateInvalid(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	d.createProject("team-a")
	inactive := d.createProject("team-off")
	if _, err := d.manager.UpdateProject(t.Context(), "test", inactive.ID, manage.ProjectPatch{IsActive: new(false)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		project, duration, unit, max string
		status                       int
		code, message                string
	}{
		{"", "1", "days", "", http.StatusBadRequest, manage.CodeInvalidRequest, "Choose a project."},
		{"1", "0", "days", "", http.StatusBadRequest, manage.CodeInvalidRequest, "Valid for: enter a whole number of days, from 1 up to one year (365)."},
		{"1", "366", "days", "", http.StatusBadRequest, manage.CodeInvalidRequest, "from 1 up to one year (365)"},
		{"1", "8761", "hours", "", http.StatusBadRequest, manage.CodeInvalidRequest, "whole number of hours, from 1 up to one year (8760)"},
		{"1", "1.5", "hours", "", http.StatusBadRequest, manage.CodeInvalidRequest, "whole number of hours"},
		{"1", "1", "weeks", "", http.StatusBadRequest, manage.CodeInvalidRequest, "Choose minutes, hours or days."},
		{"1", "1", "days", "-1", http.StatusBadRequest, manage.CodeInvalidRequest, "Request limit: enter a whole number"},
		{"1", "1", "days", "lots", http.StatusBadRequest, manage.CodeInvalidRequest, "Request limit: enter a whole number"},
		{"2", "1", "days", "", http.StatusForbidden, manage.CodeProjectInactive, "project 2 is inactive"},
		{"99", "1", "days", "", http.StatusNotFound, manage.CodeNotFound, "project 99 not found"},
	} {
		what := fmt.Sprintf("create %+v", tc)
		p := d.post("/admin/tokens", "project_id", tc.project, "duration", tc.duration, "unit", tc.unit, "max_requests", tc.max)
		wantPage(t, what, p, tc.status, tc.message, `id="create-token-error" role="alert"`,
			`name="duration" value="`+tc.duration+`"`, `name="max_requests" value="`+tc.max+`"`)
		wantNot(t, what, p, "Token created")
		wantAudit(t, d.lastAudit(), manage.ActionTokenCreate, tc.code)
	}
	tokens, _ := d.manager.Tokens(t.Context(), nil)
	if len(tokens) != 0 {
		t.Errorf("failed creates made %d tokens", len(tokens))
	}
}

// tokenInState makes a token of project 1 that is in state.
func (d *dashboard) tokenInState(state string) *service.Token {
	d.t.Helper()
	ctx := d.t.Context()
	switch state {
	case "active":
		return d.createToken(1, 0).Token
	case "revoked":
		tok := d.createToken(1, 0)
		if err := d.manager.RevokeToken(ctx, "test", tok.ID); err != nil {
			d.t.Fatal(err)
		}
		return tok.Token
	case "used up":
		tok := d.createToken(1, 1)
		if _, err := d.store.TokenAdmit(ctx, tok.ID); err != nil {
			d.t.Fatal(err)
		}
		return tok.Token
	case "expired":
		hash := make([]byte, 32)
		rand.Read(hash)
		tok, err := d.store.TokenCreate(ctx, &service.TokenCreateParams{
			ProjectID: 1, SecretHash: hash, TokenPrefix: "sk-expir", ExpiresAt: time.Now().Add(-time.Hour),
		})
		if err != nil {
			d.t.Fatal(err)
		}
		return tok
	}
	d.t.Fatalf("no state %q", state)
	return nil
}

func TestTokenList(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	d.createProject("team-a")
	d.createProject("team-b")
	byState := map[string]*service.Token{}
	for _, state := range []string{"active", "revoked", "used up", "expired"} {
		byState[state] = d.tokenInState(state)
	}
	other := d.createToken(2, 0)

	p := d.get("/admin/tokens")
	wantPage(t, "all tokens", p, http.StatusOK, "5 tokens.", `<th scope="col">Requests / limit</th>`, "1 / 1", "0 / unlimited", "never", "1 h ago")
	// Newest first.
	if strings.Index(p.body, other.TokenPrefix) > strings.Index(p.body, byState["active"].TokenPrefix) {
		t.Error("tokens are not listed newest first")
	}
	// Revoke buttons only for tokens that are not revoked.
	if n := strings.Count(p.body, `class="button-danger button-small"`); n != 4 {
		t.Errorf("%d revoke buttons, want 4 (every token but the revoked one)", n)
	}

	p = d.get("/admin/tokens?project_id=2")
	wantPage(t, "project 2", p, http.StatusOK, "1 token.", other.TokenPrefix, `<option value="2" selected>team-b</option>`)
	for state, tok := range byState {
		p := d.get("/admin/tokens?state=" + strings.ReplaceAll(state, " ", "+"))
		wantPage(t, "state "+state, p, http.StatusOK, `badge-`, ">"+state+"</span>")
		want := 1
		if state == "active" {
			want = 2 // and project 2's
		}
		if n := strings.Count(p.body, `<td class="num">`+manage.FormatID(tok.ID)+`</td>`); n != 1 {
			t.Errorf("state %s: token %d listed %d times", state, tok.ID, n)
		}
		if !strings.Contains(p.body, fmt.Sprintf("%d token", want)) {
			t.Errorf("state %s: want %d tokens", state, want)
		}
	}
	p = d.get("/admin/tokens?project_id=1&state=active")
	wantPage(t, "project 1 active", p, http.StatusOK, "1 token.")

	for _, query := range []string{"state=gone", "project_id=x", "page=0"} {
		wantPage(t, query, d.get("/admin/tokens?"+query), http.StatusBadRequest)
	}
}

func TestTokenListPages(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	d.createProject("team-a")
	for range 101 {
		d.createToken(1, 0)
	}
	p := d.get("/admin/tokens?project_id=1")
	wantPage(t, "page 1", p, http.StatusOK, "101 tokens, page 1 of 2.", `href="/admin/tokens?page=2&amp;project_id=1" rel="next"`)
	wantNot(t, "page 1", p, `rel="prev"`, `<td class="num">1</td>`)
	p = d.get("/admin/tokens?project_id=1&page=2")
	wantPage(t, "page 2", p, http.StatusOK, "page 2 of 2.", `<td class="num">1</td>`, `rel="prev"`)
	wantNot(t, "page 2", p, `rel="next"`, `<td class="num">2</td>`)
	wantPage(t, "past the end", d.get("/admin/tokens?page=9"), http.StatusOK, "No tokens match.")
}

func TestTokenRevoke(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	d.createProject("team-a")
	tok := d.createToken(1, 0)

	p := d.follow(d.post("/admin/tokens/1/revoke", "return", "/admin/tokens?state=revoked"), "/admin/tokens?state=revoked")
	wantPage(t, "revoked", p, http.StatusOK, "Token #1 revoked.", "<code>"+tok.TokenPrefix+"…</code>")
	if got, _ := d.manager.Token(t.Context(), tok.ID); got.IsActive {
		t.Error("token still active")
	}
	wantAudit(t, d.lastAudit(), manage.ActionTokenRevoke, manage.ResultSuccess)

	// Revoking again succeeds, as in the API; the return address stays inside the dashboard.
	if p := d.post("/admin/tokens/1/revoke", "return", "https://evil.example/"); p.location() != "/admin/projects" {
		t.Errorf("revoke with a foreign return address goes to %q", p.location())
	}
	if p := d.post("/admin/tokens/1/revoke"); p.location() != "/admin/tokens" {
		t.Errorf("revoke without a return address goes to %q, want /admin/tokens", p.location())
	}
	wantPage(t, "unknown token", d.post("/admin/tokens/99/revoke"), http.StatusNotFound, "token 99 not found")
	wantAudit(t, d.lastAudit(), manage.ActionTokenRevoke, manage.CodeNotFound)
	wantPage(t, "bad id", d.post("/admin/tokens/x/revoke"), http.StatusNotFound)
}
