package admin_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/llmproxy/llmproxy/internal/manage"
)

func TestProjectsList(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	wantPage(t, "empty list", d.get("/admin/projects"), http.StatusOK, "No projects yet.")
	a, b := d.createProject("team-a"), d.createProject("team-<b>")
	if _, err := d.manager.UpdateProject(t.Context(), "test", b.ID, manage.ProjectPatch{IsActive: new(false)}); err != nil {
		t.Fatal(err)
	}
	p := d.get("/admin/projects")
	wantPage(t, "list", p, http.StatusOK,
		`<th scope="col">Name</th>`,
		`<a href="/admin/projects/1">team-a</a>`, a.APIKeyHint,
		`<a href="/admin/projects/2">team-&lt;b&gt;</a>`, `badge-off">inactive`)
	wantNot(t, "list", p, "No projects yet.", "team-<b>")
}

func TestProjectCreate(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	p := d.follow(d.post("/admin/projects", "name", "team-a", "api_key", "sk-proj-abcdefghijklmnop1234"), "/admin/projects/1")
	wantPage(t, "new project", p, http.StatusOK, `<h1>team-a</h1>`, `Project &#34;team-a&#34; created.`, "sk-...1234")
	wantAudit(t, d.lastAudit(), manage.ActionProjectCreate, manage.ResultSuccess)
	// The message is shown once.
	wantNot(t, "project page again", d.get("/admin/projects/1"), "created.")
}

func TestProjectCreateInvalid(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	d.createProject("taken")
	for _, tc := range []struct {
		name, key string
		status    int
		message   string
	}{
		{"   ", "sk-proj-abcdefghijklmnop1234", http.StatusBadRequest, "name is required"},
		{"ok-name", "has spaces in it", http.StatusBadRequest, "api_key must be printable ASCII without spaces"},
		{"ok-name", "", http.StatusBadRequest, "api_key is required"},
		{"taken", "sk-proj-abcdefghijklmnop1234", http.StatusConflict, "a project named &#34;taken&#34; already exists"},
	} {
		p := d.post("/admin/projects", "name", tc.name, "api_key", tc.key)
		wantPage(t, "create "+tc.name, p, tc.status, tc.message, `id="create-project-error" role="alert"`,
			`name="name" value="`+tc.name+`"`, `aria-describedby="create-project-error"`)
		if tc.key != "" {
			wantNot(t, "create "+tc.name, p, tc.key) // the key is never echoed
		}
		wantAudit(t, d.lastAudit(), manage.ActionProjectCreate, auditResult(tc.status))
	}
	projects, _ := d.manager.Projects(t.Context())
	if len(projects) != 1 {
		t.Errorf("failed creates left %d projects, want 1", len(projects))
	}
}

func TestProjectPage(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	pr := d.createProject("team-a")
	tok := d.createToken(pr.ID, 10)
	p := d.get("/admin/projects/1")
	wantPage(t, "project page", p, http.StatusOK,
		`<h1>team-a</h1>`, `value="team-a"`, `Deactivate project`, `Revoke all tokens`,
		"<code>"+tok.TokenPrefix+"…</code>", "0 / 10", `action="/admin/tokens/1/revoke"`,
		`name="return" value="/admin/projects/1"`, `href="/admin/usage?project_id=1"`)
	wantPage(t, "unknown project", d.get("/admin/projects/99"), http.StatusNotFound, "project 99 not found")
	wantPage(t, "bad id", d.get("/admin/projects/01"), http.StatusNotFound, "There is no page at /admin/projects/01.")
}

func TestProjectUpdate(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	pr := d.createProject("team-a")
	d.createProject("taken")

	p := d.follow(d.post("/admin/projects/1", "name", "team-renamed", "api_key", ""), "/admin/projects/1")
	wantPage(t, "renamed", p, http.StatusOK, `<h1>team-renamed</h1>`, `Project &#34;team-renamed&#34; saved.`, pr.APIKeyHint)
	wantAudit(t, d.lastAudit(), manage.ActionProjectUpdate, manage.ResultSuccess)

	p = d.follow(d.post("/admin/projects/1", "name", "team-renamed", "api_key", "sk-new-key-zzzz9876"), "/admin/projects/1")
	wantPage(t, "new key", p, http.StatusOK, "sk-...9876")

	for _, tc := range []struct {
		name, key string
		status    int
		message   string
	}{
		{"team-renamed", "", http.StatusBadRequest, "Nothing changed: edit the name or enter a new API key."},
		{"", "", http.StatusBadRequest, "name is required"},
		{"taken", "", http.StatusConflict, "a project named &#34;taken&#34; already exists"},
		{"team-renamed", "bad key", http.StatusBadRequest, "api_key must be printable ASCII without spaces"},
	} {
		p := d.post("/admin/projects/1", "name", tc.name, "api_key", tc.key)
		wantPage(t, "update "+tc.name+"/"+tc.key, p, tc.status, tc.message, `id="edit-error" role="alert"`, `name="name" value="`+tc.name+`"`)
		wantAudit(t, d.lastAudit(), manage.ActionProjectUpdate, auditResult(tc.status))
	}
	wantPage(t, "update unknown", d.post("/admin/projects/99", "name", "x"), http.StatusNotFound, "project 99 not found")
}

func TestProjectActivation(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	d.createProject("team-a")

	p := d.follow(d.post("/admin/projects/1/active", "active", "false"), "/admin/projects/1")
	wantPage(t, "deactivated", p, http.StatusOK, `deactivated: its tokens are refused`, `badge-off">inactive`, `Activate project`, `name="active" value="true"`)
	if got, _ := d.manager.Project(t.Context(), 1); got.IsActive {
		t.Error("project still active")
	}
	wantAudit(t, d.lastAudit(), manage.ActionProjectUpdate, manage.ResultSuccess)
	// An inactive project is not offered for new tokens.
	if choices := selectOptions(t, d.get("/admin/tokens").body, "token-project"); strings.Contains(choices, "team-a") {
		t.Errorf("create-token form offers the inactive project: %s", choices)
	}

	p = d.follow(d.post("/admin/projects/1/active", "active", "true"), "/admin/projects/1")
	wantPage(t, "activated", p, http.StatusOK, `Project &#34;team-a&#34; activated.`, `Deactivate project`)

	wantPage(t, "bad value", d.post("/admin/projects/1/active", "active", "maybe"), http.StatusBadRequest, `must set &#34;active&#34; to true or false`)
	wantAudit(t, d.lastAudit(), manage.ActionProjectUpdate, manage.CodeInvalidRequest)
	wantPage(t, "unknown project", d.post("/admin/projects/99/active", "active", "false"), http.StatusNotFound, "project 99 not found")
}

func TestProjectRevokeTokens(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	pr := d.createProject("team-a")
	first, second := d.createToken(pr.ID, 0), d.createToken(pr.ID, 0)
	if err := d.manager.RevokeToken(t.Context(), "test", first.ID); err != nil {
		t.Fatal(err)
	}

	p := d.post("/admin/projects/1/revoke-tokens")
	wantPage(t, "unconfirmed", p, http.StatusBadRequest, "Tick the box to confirm", `id="revoke-error" role="alert"`)
	if tok, _ := d.manager.Token(t.Context(), second.ID); !tok.IsActive {
		t.Fatal("unconfirmed bulk revoke revoked a token")
	}

	p = d.follow(d.post("/admin/projects/1/revoke-tokens", "confirm", "yes"), "/admin/projects/1")
	wantPage(t, "revoked", p, http.StatusOK, "Revoked 1 tokens (1 were revoked already).")
	if tok, _ := d.manager.Token(t.Context(), second.ID); tok.IsActive {
		t.Error("token still active after bulk revoke")
	}
	wantAudit(t, d.lastAudit(), manage.ActionProjectRevokeTokens, manage.ResultSuccess)
	if strings.Contains(p.body, `action="/admin/tokens/`) {
		t.Error("revoked tokens still offer a revoke button")
	}
	wantPage(t, "unknown project", d.post("/admin/projects/99/revoke-tokens", "confirm", "yes"), http.StatusNotFound, "project 99 not found")
}

// auditResult is the audit result of a form refused with status.
func auditResult(status int) string {
	if status == http.StatusConflict {
		return manage.CodeConflict
	}
	return manage.CodeInvalidRequest
}
