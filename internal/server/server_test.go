package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/authlimit"
	"github.com/llmproxy/llmproxy/internal/config"
	"github.com/llmproxy/llmproxy/internal/logtest"
	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/internal/metrics"
	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/internal/server"
	"github.com/llmproxy/llmproxy/migrate"
	"github.com/llmproxy/llmproxy/service"
	_ "github.com/llmproxy/llmproxy/service/pgstore"
	_ "github.com/llmproxy/llmproxy/service/sqlitestore"
)

const managementToken = "test-management-token"

// backend gives the environment of a fresh, empty database of one kind.
type backend struct {
	name string
	env  func(t *testing.T) map[string]string
}

var backends = []backend{
	{"sqlite", func(t *testing.T) map[string]string {
		return map[string]string{"DATABASE_PATH": filepath.Join(t.TempDir(), "llmproxy.db")}
	}},
	{"postgres", func(t *testing.T) map[string]string {
		return map[string]string{
			"DB_DRIVER":      "postgres",
			"DATABASE_URL":   migratedPostgres(t),
			"ENCRYPTION_KEY": secrets.NewKey(),
		}
	}},
}

// migratedPostgres is a fresh database cloned from one that service.Open
// migrated, keyed by the migrations so a change rebuilds the template.
func migratedPostgres(t *testing.T) string {
	t.Helper()
	key, err := migrate.Fingerprint(migrate.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	return pgtest.NewDatabaseFromTemplate(t, "server-"+key, func(ctx context.Context, url string) error {
		cfg := service.DefaultConfig()
		cfg.Driver, cfg.DatabaseURL = service.DriverPostgres, url
		store, err := service.Open(ctx, cfg)
		if err != nil {
			return err
		}
		return store.Close()
	})
}

// forEachBackend runs test once per backend, in parallel.
func forEachBackend(t *testing.T, test func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			test(t, b)
		})
	}
}

// client talks to one server over real HTTP.
type client struct {
	t       *testing.T
	url     string
	store   service.Store
	handler http.Handler // the server's, for requests from other addresses
}

// startServer serves a fresh database of backend b, configured as serve
// does, with wrap (if any) between the server and the store; options, if
// any, change the server's options.
func startServer(t *testing.T, b backend, wrap func(service.Store) service.Store, options ...func(*server.Options)) *client {
	t.Helper()
	vars := b.env(t)
	vars["MANAGEMENT_TOKEN"] = managementToken
	cfg, err := config.Load(func(name string) string { return vars[name] })
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	store, err := service.Open(t.Context(), cfg.Storage)
	if err != nil {
		t.Fatalf("service.Open: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	served := store
	if wrap != nil {
		served = wrap(store)
	}
	opts := server.Options{
		Store:           served,
		Manager:         manage.New(served, cfg.Keys, nil),
		Metrics:         metrics.New(),
		Proxy:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "proxied "+r.URL.Path) }),
		ManagementToken: cfg.ManagementToken,
	}
	for _, o := range options {
		o(&opts)
	}
	handler := server.New(opts)
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return &client{t: t, url: srv.URL, store: store, handler: handler}
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// request sends body (nil: none; string or []byte: as is; else JSON) with
// the management token unless auth says otherwise ("" for none).
func (c *client) request(method, path string, body any, auth ...string) response {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	case io.Reader:
		r = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.url+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	authorization := "Bearer " + managementToken
	if len(auth) > 0 {
		authorization = auth[0]
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// ok sends a request that must answer status, decoding the JSON answer into out.
func (c *client) ok(method, path string, body any, status int, out any) response {
	c.t.Helper()
	resp := c.request(method, path, body)
	if resp.status != status {
		c.t.Fatalf("%s %s = %d %s, want %d", method, path, resp.status, resp.body, status)
	}
	if out != nil {
		if ct := resp.header.Get("Content-Type"); ct != "application/json" {
			c.t.Errorf("%s %s: Content-Type %q", method, path, ct)
		}
		if err := json.Unmarshal(resp.body, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, resp.body, err)
		}
	}
	return resp
}

// wantError checks an error answer: its status, JSON content type and
// exactly {"error": <message>, "code": code}.
func wantError(t *testing.T, what string, resp response, status int, code string) {
	t.Helper()
	if resp.status != status {
		t.Errorf("%s = %d %s, want %d %s", what, resp.status, resp.body, status, code)
		return
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	var body map[string]any
	if err := json.Unmarshal(resp.body, &body); err != nil {
		t.Errorf("%s: body %q is not JSON: %v", what, resp.body, err)
		return
	}
	msg, _ := body["error"].(string)
	if len(body) != 2 || body["code"] != code || msg == "" {
		t.Errorf("%s: body %s, want {\"error\": <message>, \"code\": %q}", what, resp.body, code)
	}
}

// keys returns the sorted keys of a JSON object.
func keys(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func wantKeys(t *testing.T, what string, raw json.RawMessage, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := keys(t, raw); !slices.Equal(got, want) {
		t.Errorf("%s keys = %v, want %v", what, got, want)
	}
}

// wantUTC checks an RFC 3339 UTC time.
func wantUTC(t *testing.T, what, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || !strings.HasSuffix(s, "Z") {
		t.Errorf("%s = %q, want an RFC 3339 UTC time", what, s)
	}
	return at
}

type project struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	IsActive   bool   `json:"is_active"`
	APIKeyHint string `json:"api_key_hint"`
	CreatedAt  string `json:"created_at"`
	UpdatedAt  string `json:"updated_at"`
}

type token struct {
	ID           string  `json:"id"`
	Token        string  `json:"token"`
	ProjectID    string  `json:"project_id"`
	TokenPrefix  string  `json:"token_prefix"`
	ExpiresAt    string  `json:"expires_at"`
	MaxRequests  *int64  `json:"max_requests"`
	RequestCount int64   `json:"request_count"`
	IsActive     bool    `json:"is_active"`
	CreatedAt    string  `json:"created_at"`
	LastUsedAt   *string `json:"last_used_at"`
}

type auditEvent struct {
	ID        string          `json:"id"`
	Actor     string          `json:"actor"`
	Action    string          `json:"action"`
	ProjectID *string         `json:"project_id"`
	TokenID   *string         `json:"token_id"`
	Result    string          `json:"result"`
	Details   json.RawMessage `json:"details"`
	CreatedAt string          `json:"created_at"`
}

var projectKeys = []string{"id", "name", "is_active", "api_key_hint", "created_at", "updated_at"}
var tokenKeys = []string{"id", "project_id", "token_prefix", "expires_at", "max_requests", "request_count", "is_active", "created_at", "last_used_at"}

func (c *client) createProject(name string) project {
	c.t.Helper()
	var p project
	c.ok("POST", "/manage/projects", map[string]string{"name": name, "api_key": "sk-upstream-" + name}, http.StatusCreated, &p)
	return p
}

func (c *client) createToken(projectID string, body map[string]any) token {
	c.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	body["project_id"] = projectID
	if _, ok := body["duration_minutes"]; !ok {
		body["duration_minutes"] = 60
	}
	var tok token
	c.ok("POST", "/manage/tokens", body, http.StatusCreated, &tok)
	return tok
}

// lastAudit checks the newest audit event and returns it.
func (c *client) lastAudit(action, result string) auditEvent {
	c.t.Helper()
	var events []auditEvent
	c.ok("GET", "/manage/audit?limit=1", nil, http.StatusOK, &events)
	if len(events) != 1 {
		c.t.Fatalf("audit = %d events, want 1", len(events))
	}
	ev := events[0]
	if ev.Action != action || ev.Result != result || !strings.HasPrefix(ev.Actor, "api@") {
		c.t.Errorf("last audit event = %s %s by %s, want %s %s by api@...", ev.Action, ev.Result, ev.Actor, action, result)
	}
	return ev
}

func TestManagementAuth(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		// Many failures from one address: throttling is TestManagementAuthThrottled's.
		c := startServer(t, b, nil, func(o *server.Options) { o.AuthLimiter = authlimit.New(authlimit.Options{MaxFailures: 1000}) })
		routes := [][2]string{
			{"POST", "/manage/projects"}, {"GET", "/manage/projects"}, {"GET", "/manage/projects/1"},
			{"PATCH", "/manage/projects/1"}, {"DELETE", "/manage/projects/1"}, {"POST", "/manage/projects/1/tokens/revoke"},
			{"POST", "/manage/tokens"}, {"GET", "/manage/tokens"}, {"GET", "/manage/tokens/1"}, {"PATCH", "/manage/tokens/1"},
			{"DELETE", "/manage/tokens/1"}, {"GET", "/manage/audit"}, {"GET", "/manage/usage"}, {"GET", "/manage/nothing-here"},
		}
		for _, auth := range []string{"", "Bearer", "Bearer wrong-token", "Basic " + managementToken, managementToken, "Bearer " + managementToken + "x"} {
			for _, rt := range routes {
				resp := c.request(rt[0], rt[1], `{"name":"x","api_key":"k"}`, auth)
				wantError(t, rt[0]+" "+rt[1]+" with Authorization "+auth, resp, http.StatusUnauthorized, "unauthorized")
				if resp.header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s: 401 without WWW-Authenticate", rt[0], rt[1])
				}
			}
		}
		// Refused requests change nothing and leave no trace in the database.
		if ps, _ := c.store.ProjectList(t.Context(), &service.ProjectListParams{}); len(ps) != 0 {
			t.Errorf("unauthorized requests created %d projects", len(ps))
		}
		if evs, _ := c.store.AuditList(t.Context(), &service.AuditListParams{}); len(evs) != 0 {
			t.Errorf("unauthorized requests wrote %d audit events", len(evs))
		}
		// The scheme is case-insensitive.
		if resp := c.request("GET", "/manage/projects", nil, "bearer "+managementToken); resp.status != http.StatusOK {
			t.Errorf("lower-case bearer = %d %s", resp.status, resp.body)
		}
	})
}

func TestProjects(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		c := startServer(t, b, nil)
		var empty []project
		if resp := c.ok("GET", "/manage/projects", nil, http.StatusOK, &empty); string(bytes.TrimSpace(resp.body)) != "[]" {
			t.Errorf("empty list = %s, want []", resp.body)
		}

		before := time.Now().Add(-time.Minute)
		var raw json.RawMessage
		c.ok("POST", "/manage/projects", map[string]string{"name": "alpha", "api_key": "sk-proj-secret-abcd"}, http.StatusCreated, &raw)
		wantKeys(t, "created project", raw, projectKeys...)
		if strings.Contains(string(raw), "sk-proj-secret") {
			t.Errorf("project %s shows the key", raw)
		}
		var p project
		json.Unmarshal(raw, &p)
		if p.Name != "alpha" || !p.IsActive || p.APIKeyHint != "sk-...abcd" || p.ID == "" {
			t.Errorf("created = %+v", p)
		}
		if at := wantUTC(t, "created_at", p.CreatedAt); at.Before(before) {
			t.Errorf("created_at %s is in the past", p.CreatedAt)
		}
		wantUTC(t, "updated_at", p.UpdatedAt)
		if ev := c.lastAudit(manage.ActionProjectCreate, manage.ResultSuccess); ev.ProjectID == nil || *ev.ProjectID != p.ID {
			t.Errorf("audit project_id = %v, want %s", ev.ProjectID, p.ID)
		}

		wantError(t, "duplicate name", c.request("POST", "/manage/projects", map[string]string{"name": "alpha", "api_key": "k"}), http.StatusConflict, "conflict")
		c.lastAudit(manage.ActionProjectCreate, "conflict")

		var got project
		c.ok("GET", "/manage/projects/"+p.ID, nil, http.StatusOK, &got)
		if got != p {
			t.Errorf("get = %+v, want %+v", got, p)
		}
		other := c.createProject("beta")
		var list []project
		c.ok("GET", "/manage/projects", nil, http.StatusOK, &list)
		if len(list) != 2 || list[0] != p || list[1] != other {
			t.Errorf("list = %+v", list)
		}

		var patched project
		c.ok("PATCH", "/manage/projects/"+p.ID, map[string]any{"name": "alpha2", "api_key": "sk-new-9876"}, http.StatusOK, &patched)
		if patched.Name != "alpha2" || patched.APIKeyHint != "sk-...9876" || !patched.IsActive || patched.CreatedAt != p.CreatedAt {
			t.Errorf("patched = %+v", patched)
		}
		c.lastAudit(manage.ActionProjectUpdate, manage.ResultSuccess)
		wantError(t, "rename to a taken name", c.request("PATCH", "/manage/projects/"+p.ID, map[string]any{"name": "beta"}), http.StatusConflict, "conflict")
		c.lastAudit(manage.ActionProjectUpdate, "conflict")
		wantError(t, "empty patch", c.request("PATCH", "/manage/projects/"+p.ID, `{}`), http.StatusBadRequest, "invalid_request")
		wantError(t, "empty name", c.request("PATCH", "/manage/projects/"+p.ID, `{"name":""}`), http.StatusBadRequest, "invalid_request")
		wantError(t, "unknown project", c.request("PATCH", "/manage/projects/999999", `{"is_active":false}`), http.StatusNotFound, "not_found")
		c.lastAudit(manage.ActionProjectUpdate, "not_found")
		wantError(t, "get unknown", c.request("GET", "/manage/projects/999999", nil), http.StatusNotFound, "not_found")

		// Deactivation with revoke_tokens revokes every token of the project at once.
		t1, t2 := c.createToken(p.ID, nil), c.createToken(p.ID, nil)
		otherTok := c.createToken(other.ID, nil)
		c.ok("DELETE", "/manage/tokens/"+t1.ID, nil, http.StatusNoContent, nil)
		c.ok("PATCH", "/manage/projects/"+p.ID, map[string]any{"is_active": false, "revoke_tokens": true}, http.StatusOK, &patched)
		if patched.IsActive {
			t.Error("project still active")
		}
		ev := c.lastAudit(manage.ActionProjectUpdate, manage.ResultSuccess)
		var d map[string]any
		json.Unmarshal(ev.Details, &d)
		if d["revoked_count"] != 1.0 || d["already_revoked_count"] != 1.0 || d["is_active"] != false {
			t.Errorf("audit details = %s", ev.Details)
		}
		var tok token
		c.ok("GET", "/manage/tokens/"+t2.ID, nil, http.StatusOK, &tok)
		if tok.IsActive {
			t.Error("token of the deactivated project still active")
		}
		c.ok("GET", "/manage/tokens/"+otherTok.ID, nil, http.StatusOK, &tok)
		if !tok.IsActive {
			t.Error("another project's token revoked")
		}
		wantError(t, "token for inactive project", c.request("POST", "/manage/tokens", map[string]any{"project_id": p.ID, "duration_minutes": 5}), http.StatusForbidden, "project_inactive")
		c.lastAudit(manage.ActionTokenCreate, "project_inactive")
		c.ok("PATCH", "/manage/projects/"+p.ID, map[string]any{"is_active": true}, http.StatusOK, &patched)
		if !patched.IsActive {
			t.Error("project not reactivated")
		}

		// Projects are deactivated, never deleted.
		resp := c.request("DELETE", "/manage/projects/"+p.ID, nil)
		wantError(t, "DELETE project", resp, http.StatusMethodNotAllowed, "method_not_allowed")
		if allow := resp.header.Get("Allow"); allow != "GET, HEAD, PATCH" {
			t.Errorf("Allow = %q", allow)
		}
		c.ok("GET", "/manage/projects/"+p.ID, nil, http.StatusOK, nil)
	})
}

func TestRevokeProjectTokens(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		c := startServer(t, b, nil)
		p := c.createProject("p")
		t1 := c.createToken(p.ID, nil)
		c.createToken(p.ID, nil)
		c.createToken(p.ID, nil)
		c.ok("DELETE", "/manage/tokens/"+t1.ID, nil, http.StatusNoContent, nil)

		var raw json.RawMessage
		c.ok("POST", "/manage/projects/"+p.ID+"/tokens/revoke", nil, http.StatusOK, &raw)
		wantKeys(t, "revoke result", raw, "revoked_count", "already_revoked_count")
		if string(raw) != `{"revoked_count":2,"already_revoked_count":1}` {
			t.Errorf("revoke = %s, want 2 revoked, 1 already", raw)
		}
		if ev := c.lastAudit(manage.ActionProjectRevokeTokens, manage.ResultSuccess); ev.ProjectID == nil || *ev.ProjectID != p.ID {
			t.Errorf("audit project_id = %v", ev.ProjectID)
		}
		c.ok("POST", "/manage/projects/"+p.ID+"/tokens/revoke", nil, http.StatusOK, &raw)
		if string(raw) != `{"revoked_count":0,"already_revoked_count":3}` {
			t.Errorf("second revoke = %s", raw)
		}
		wantError(t, "revoke unknown project", c.request("POST", "/manage/projects/424242/tokens/revoke", nil), http.StatusNotFound, "not_found")
		c.lastAudit(manage.ActionProjectRevokeTokens, "not_found")
		wantError(t, "GET revoke", c.request("GET", "/manage/projects/"+p.ID+"/tokens/revoke", nil), http.StatusMethodNotAllowed, "method_not_allowed")
	})
}

func TestTokens(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		c := startServer(t, b, nil)
		p, other := c.createProject("p"), c.createProject("other")

		before := time.Now()
		var raw json.RawMessage
		c.ok("POST", "/manage/tokens", map[string]any{"project_id": p.ID, "duration_minutes": 30, "max_requests": 50}, http.StatusCreated, &raw)
		wantKeys(t, "created token", raw, append([]string{"token"}, tokenKeys...)...)
		var tok token
		json.Unmarshal(raw, &tok)
		if !secrets.ValidTokenSyntax(tok.Token) || !strings.HasPrefix(tok.Token, tok.TokenPrefix) || len(tok.TokenPrefix) < 4 {
			t.Errorf("secret %q with prefix %q", tok.Token, tok.TokenPrefix)
		}
		if tok.ProjectID != p.ID || tok.MaxRequests == nil || *tok.MaxRequests != 50 || tok.RequestCount != 0 || !tok.IsActive || tok.LastUsedAt != nil {
			t.Errorf("created = %+v", tok)
		}
		expires := wantUTC(t, "expires_at", tok.ExpiresAt)
		if expires.Before(before.Add(29*time.Minute)) || expires.After(time.Now().Add(31*time.Minute)) {
			t.Errorf("expires_at %s is not 30 minutes from now", tok.ExpiresAt)
		}
		wantUTC(t, "created_at", tok.CreatedAt)
		ev := c.lastAudit(manage.ActionTokenCreate, manage.ResultSuccess)
		if ev.TokenID == nil || *ev.TokenID != tok.ID || ev.ProjectID == nil || *ev.ProjectID != p.ID {
			t.Errorf("audit ids = %v %v", ev.ProjectID, ev.TokenID)
		}

		// The secret is shown once: never by get, list or patch, nor in the audit log.
		c.ok("GET", "/manage/tokens/"+tok.ID, nil, http.StatusOK, &raw)
		wantKeys(t, "token", raw, tokenKeys...)
		var all json.RawMessage
		c.ok("GET", "/manage/tokens", nil, http.StatusOK, &all)
		var auditRaw json.RawMessage
		c.ok("GET", "/manage/audit", nil, http.StatusOK, &auditRaw)
		for what, body := range map[string]json.RawMessage{"get": raw, "list": all, "audit": auditRaw} {
			if strings.Contains(string(body), tok.Token) {
				t.Errorf("%s shows the secret: %s", what, body)
			}
		}

		// project_id may be a number too; max_requests 0, null or absent is unlimited.
		var numeric, zero, null token
		c.ok("POST", "/manage/tokens", strings.NewReader(`{"project_id": `+other.ID+`, "duration_minutes": 1}`), http.StatusCreated, &numeric)
		c.ok("POST", "/manage/tokens", map[string]any{"project_id": p.ID, "duration_minutes": 525600, "max_requests": 0}, http.StatusCreated, &zero)
		c.ok("POST", "/manage/tokens", `{"project_id":"`+p.ID+`","duration_minutes":1,"max_requests":null}`, http.StatusCreated, &null)
		for _, tk := range []token{numeric, zero, null} {
			if tk.MaxRequests != nil {
				t.Errorf("token %s max_requests = %d, want null", tk.ID, *tk.MaxRequests)
			}
		}
		if numeric.ProjectID != other.ID {
			t.Errorf("numeric project_id: token for project %s", numeric.ProjectID)
		}
		if resp := c.request("GET", "/manage/tokens/"+zero.ID, nil); !bytes.Contains(resp.body, []byte(`"max_requests":null`)) {
			t.Errorf("unlimited token = %s, want max_requests null", resp.body)
		}

		var list []token
		c.ok("GET", "/manage/tokens", nil, http.StatusOK, &list)
		if len(list) != 4 || list[0].ID != tok.ID || list[1].ID != numeric.ID {
			t.Errorf("list = %+v", list)
		}
		c.ok("GET", "/manage/tokens?project_id="+other.ID, nil, http.StatusOK, &list)
		if len(list) != 1 || list[0].ID != numeric.ID {
			t.Errorf("list of project %s = %+v", other.ID, list)
		}
		if resp := c.ok("GET", "/manage/tokens?project_id=987654", nil, http.StatusOK, &list); string(bytes.TrimSpace(resp.body)) != "[]" {
			t.Errorf("tokens of an unknown project = %s, want []", resp.body)
		}

		// PATCH: absent leaves max_requests, null or 0 makes it unlimited.
		var patched token
		c.ok("PATCH", "/manage/tokens/"+tok.ID, `{"max_requests": 7}`, http.StatusOK, &patched)
		if patched.MaxRequests == nil || *patched.MaxRequests != 7 {
			t.Errorf("patched max_requests = %v, want 7", patched.MaxRequests)
		}
		c.lastAudit(manage.ActionTokenUpdate, manage.ResultSuccess)
		c.ok("PATCH", "/manage/tokens/"+tok.ID, `{"is_active": false}`, http.StatusOK, &patched)
		if patched.IsActive || patched.MaxRequests == nil || *patched.MaxRequests != 7 {
			t.Errorf("patched = %+v, want inactive with max 7", patched)
		}
		c.ok("PATCH", "/manage/tokens/"+tok.ID, `{"is_active": true, "max_requests": null}`, http.StatusOK, &patched)
		if !patched.IsActive || patched.MaxRequests != nil {
			t.Errorf("patched = %+v, want active and unlimited", patched)
		}
		c.ok("PATCH", "/manage/tokens/"+tok.ID, `{"max_requests": 3}`, http.StatusOK, &patched)
		c.ok("PATCH", "/manage/tokens/"+tok.ID, `{"max_requests": 0}`, http.StatusOK, &patched)
		if patched.MaxRequests != nil {
			t.Errorf("max_requests 0 gave %d, want unlimited", *patched.MaxRequests)
		}
		wantError(t, "empty token patch", c.request("PATCH", "/manage/tokens/"+tok.ID, `{}`), http.StatusBadRequest, "invalid_request")
		c.lastAudit(manage.ActionTokenUpdate, "invalid_request")
		wantError(t, "negative max_requests", c.request("PATCH", "/manage/tokens/"+tok.ID, `{"max_requests": -1}`), http.StatusBadRequest, "invalid_request")
		wantError(t, "patch unknown token", c.request("PATCH", "/manage/tokens/999999", `{"is_active": false}`), http.StatusNotFound, "not_found")
		c.lastAudit(manage.ActionTokenUpdate, "not_found")

		// DELETE revokes and keeps the row; again is fine.
		for range 2 {
			resp := c.request("DELETE", "/manage/tokens/"+tok.ID, nil)
			if resp.status != http.StatusNoContent || len(resp.body) != 0 {
				t.Errorf("DELETE = %d %q, want 204 without body", resp.status, resp.body)
			}
			c.lastAudit(manage.ActionTokenRevoke, manage.ResultSuccess)
		}
		c.ok("GET", "/manage/tokens/"+tok.ID, nil, http.StatusOK, &patched)
		if patched.IsActive {
			t.Error("deleted token still active")
		}
		wantError(t, "delete unknown token", c.request("DELETE", "/manage/tokens/999999", nil), http.StatusNotFound, "not_found")
		c.lastAudit(manage.ActionTokenRevoke, "not_found")
		wantError(t, "get unknown token", c.request("GET", "/manage/tokens/999999", nil), http.StatusNotFound, "not_found")

		for _, tc := range []struct {
			body   string
			status int
			code   string
		}{
			{`{"project_id":"999999","duration_minutes":5}`, http.StatusNotFound, "not_found"},
			{`{"duration_minutes":5}`, http.StatusBadRequest, "invalid_request"},
			{`{"project_id":"` + p.ID + `"}`, http.StatusBadRequest, "invalid_request"},
			{`{"project_id":"` + p.ID + `","duration_minutes":0}`, http.StatusBadRequest, "invalid_request"},
			{`{"project_id":"` + p.ID + `","duration_minutes":525601}`, http.StatusBadRequest, "invalid_request"},
			{`{"project_id":"` + p.ID + `","duration_minutes":5,"max_requests":-1}`, http.StatusBadRequest, "invalid_request"},
		} {
			wantError(t, "create token "+tc.body, c.request("POST", "/manage/tokens", tc.body), tc.status, tc.code)
			c.lastAudit(manage.ActionTokenCreate, tc.code)
		}
	})
}

func TestAudit(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		c := startServer(t, b, nil)
		p := c.createProject("p")
		other := c.createProject("other")
		tok := c.createToken(p.ID, nil)
		c.request("POST", "/manage/projects", `{"name": 1}`) // a failed change is audited too

		var events []auditEvent
		var raw []json.RawMessage
		c.ok("GET", "/manage/audit", nil, http.StatusOK, &raw)
		if len(raw) != 4 {
			t.Fatalf("audit = %d events, want 4", len(raw))
		}
		for _, r := range raw {
			wantKeys(t, "audit event", r, "id", "actor", "action", "project_id", "token_id", "result", "details", "created_at")
		}
		c.ok("GET", "/manage/audit", nil, http.StatusOK, &events)
		want := []struct{ action, result string }{
			{manage.ActionProjectCreate, "invalid_request"},
			{manage.ActionTokenCreate, manage.ResultSuccess},
			{manage.ActionProjectCreate, manage.ResultSuccess},
			{manage.ActionProjectCreate, manage.ResultSuccess},
		}
		for i, ev := range events {
			if ev.Action != want[i].action || ev.Result != want[i].result {
				t.Errorf("event %d = %s %s, want %s %s (newest first)", i, ev.Action, ev.Result, want[i].action, want[i].result)
			}
			wantUTC(t, "audit created_at", ev.CreatedAt)
		}
		if events[0].ProjectID != nil || events[1].TokenID == nil || *events[1].TokenID != tok.ID {
			t.Errorf("audit ids: %+v", events[:2])
		}

		c.ok("GET", "/manage/audit?project_id="+p.ID, nil, http.StatusOK, &events)
		if len(events) != 2 || events[0].Action != manage.ActionTokenCreate || *events[1].ProjectID != p.ID {
			t.Errorf("audit of project %s = %+v", p.ID, events)
		}
		c.ok("GET", "/manage/audit?project_id="+other.ID+"&limit=5", nil, http.StatusOK, &events)
		if len(events) != 1 || *events[0].ProjectID != other.ID {
			t.Errorf("audit of project %s = %+v", other.ID, events)
		}
		c.ok("GET", "/manage/audit?limit=2", nil, http.StatusOK, &events)
		if len(events) != 2 {
			t.Errorf("limit=2 gave %d events", len(events))
		}
		for _, q := range []string{"limit=0", "limit=-1", "limit=1001", "limit=x", "project_id=abc", "project_id=0"} {
			wantError(t, "audit?"+q, c.request("GET", "/manage/audit?"+q, nil), http.StatusBadRequest, "invalid_request")
		}
	})
}

func TestUsage(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		c := startServer(t, b, nil)
		var raw json.RawMessage
		c.ok("GET", "/manage/usage", nil, http.StatusOK, &raw)
		if string(raw) != `{"requests":0,"errors":0,"prompt_tokens":0,"completion_tokens":0,"total_tokens":0,"by_model":[]}` {
			t.Errorf("empty usage = %s", raw)
		}

		base := time.Date(2030, 3, 1, 12, 0, 0, 0, time.UTC)
		event := func(tokenID, projectID int64, model string, status, prompt, completion int64, at time.Time) *service.UsageEventCreateParams {
			return &service.UsageEventCreateParams{
				TokenID: tokenID, ProjectID: projectID, Method: "POST", Path: "/v1/chat/completions", Model: model,
				Status: status, PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion,
				LatencyMS: 12, CreatedAt: at,
			}
		}
		if _, err := c.store.UsageInsertBatch(t.Context(), []*service.UsageEventCreateParams{
			event(1, 1, "gpt-4o", 200, 10, 5, base),
			event(1, 1, "gpt-4o-mini", 200, 3, 2, base.Add(time.Hour)),
			event(2, 1, "gpt-4o", 500, 0, 0, base.Add(2*time.Hour)),
			event(3, 2, "gpt-4o", 200, 100, 50, base.Add(3*time.Hour)),
		}); err != nil {
			t.Fatalf("UsageInsertBatch: %v", err)
		}
		type counts struct {
			Requests, Errors, PromptTokens, CompletionTokens, TotalTokens int64
		}
		type usage struct {
			Requests         int64 `json:"requests"`
			Errors           int64 `json:"errors"`
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
			TotalTokens      int64 `json:"total_tokens"`
			ByModel          []struct {
				Model            string `json:"model"`
				Requests         int64  `json:"requests"`
				Errors           int64  `json:"errors"`
				PromptTokens     int64  `json:"prompt_tokens"`
				CompletionTokens int64  `json:"completion_tokens"`
				TotalTokens      int64  `json:"total_tokens"`
			} `json:"by_model"`
		}
		var u usage
		c.ok("GET", "/manage/usage", nil, http.StatusOK, &raw)
		wantKeys(t, "usage", raw, "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "by_model")
		json.Unmarshal(raw, &u)
		if u.Requests != 4 || u.Errors != 1 || u.PromptTokens != 113 || u.CompletionTokens != 57 || u.TotalTokens != 170 || len(u.ByModel) != 2 {
			t.Errorf("usage = %+v", u)
		}
		if m := u.ByModel[0]; m.Model != "gpt-4o" || m.Requests != 3 || m.Errors != 1 || m.TotalTokens != 165 {
			t.Errorf("by_model[0] = %+v", m)
		}

		for query, want := range map[string]int64{
			"project_id=1":                      3,
			"project_id=2":                      1,
			"token_id=1":                        2,
			"project_id=1&token_id=2":           1,
			"since=2030-03-01T13:00:00Z":        3,
			"until=2030-03-01T13:00:00Z":        1, // until is exclusive
			"since=2030-03-01T13:00:00%2B01:00": 4, // offsets are honoured: 12:00 UTC
			"since=2030-03-01T12:30:00.5Z&until=2030-03-01T14:00:00Z": 1,
			"project_id=77": 0,
		} {
			c.ok("GET", "/manage/usage?"+query, nil, http.StatusOK, &u)
			if u.Requests != want {
				t.Errorf("usage?%s: %d requests, want %d", query, u.Requests, want)
			}
		}
		for _, q := range []string{"since=yesterday", "until=2030-03-01", "token_id=-4", "project_id=1.5",
			"since=2030-03-01T13:00:00Z&until=2030-03-01T13:00:00Z", "since=2030-03-02T00:00:00Z&until=2030-03-01T00:00:00Z", "project_id=%zz"} {
			wantError(t, "usage?"+q, c.request("GET", "/manage/usage?"+q, nil), http.StatusBadRequest, "invalid_request")
		}
	})
}

type badRequest struct {
	name, method, path string
	body               any
	status             int
	code               string
}

// Malformed requests get a 4xx JSON error, never a 500, and change nothing.
func TestMalformedRequests(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		c := startServer(t, b, nil)
		p := c.createProject("p")
		tok := c.createToken(p.ID, nil)
		huge := `{"name":"` + strings.Repeat("x", 1<<20) + `","api_key":"k"}`
		cases := []badRequest{
			{"no body", "POST", "/manage/projects", nil, 400, "invalid_json"},
			{"empty body", "POST", "/manage/projects", "", 400, "invalid_json"},
			{"whitespace body", "POST", "/manage/projects", " \n", 400, "invalid_json"},
			{"truncated JSON", "POST", "/manage/projects", `{"name":"x"`, 400, "invalid_json"},
			{"syntax error", "POST", "/manage/projects", `{"name":x}`, 400, "invalid_json"},
			{"single quotes", "POST", "/manage/projects", `{'name':'x'}`, 400, "invalid_json"},
			{"two objects", "POST", "/manage/projects", `{"name":"x","api_key":"k"}{"name":"y"}`, 400, "invalid_json"},
			{"trailing garbage", "POST", "/manage/projects", `{"name":"x","api_key":"k"} xyz`, 400, "invalid_json"},
			{"array body", "POST", "/manage/projects", `[{"name":"x","api_key":"k"}]`, 400, "invalid_request"},
			{"string body", "POST", "/manage/projects", `"x"`, 400, "invalid_request"},
			{"null body", "POST", "/manage/projects", `null`, 400, "invalid_request"},
			{"form body", "POST", "/manage/projects", `name=x&api_key=k`, 400, "invalid_json"},
			{"unknown field", "POST", "/manage/projects", `{"name":"x","api_key":"k","admin":true}`, 400, "invalid_request"},
			{"name is a number", "POST", "/manage/projects", `{"name":5,"api_key":"k"}`, 400, "invalid_request"},
			{"api_key is an object", "POST", "/manage/projects", `{"name":"x","api_key":{}}`, 400, "invalid_request"},
			{"missing api_key", "POST", "/manage/projects", `{"name":"x"}`, 400, "invalid_request"},
			{"missing name", "POST", "/manage/projects", `{"api_key":"k"}`, 400, "invalid_request"},
			{"body over 1 MiB", "POST", "/manage/projects", huge, 413, "body_too_large"},
			{"chunked body over 1 MiB", "POST", "/manage/projects", io.MultiReader(strings.NewReader(huge)), 413, "body_too_large"},
			{"1 MiB of whitespace after JSON", "POST", "/manage/projects", `{"name":"x","api_key":"k"}` + strings.Repeat(" ", 1<<20), 413, "body_too_large"},
			{"is_active is a string", "PATCH", "/manage/projects/" + p.ID, `{"is_active":"false"}`, 400, "invalid_request"},
			{"revoke_tokens is a number", "PATCH", "/manage/projects/" + p.ID, `{"revoke_tokens":1}`, 400, "invalid_request"},
			{"patch unknown field", "PATCH", "/manage/projects/" + p.ID, `{"id":"7"}`, 400, "invalid_request"},
			{"patch huge", "PATCH", "/manage/projects/" + p.ID, huge, 413, "body_too_large"},
			{"project_id is bool", "POST", "/manage/tokens", `{"project_id":true,"duration_minutes":5}`, 400, "invalid_request"},
			{"project_id not numeric", "POST", "/manage/tokens", `{"project_id":"abc","duration_minutes":5}`, 400, "invalid_request"},
			{"project_id negative", "POST", "/manage/tokens", `{"project_id":-1,"duration_minutes":5}`, 400, "invalid_request"},
			{"project_id fraction", "POST", "/manage/tokens", `{"project_id":1.5,"duration_minutes":5}`, 400, "invalid_request"},
			{"project_id overflow", "POST", "/manage/tokens", `{"project_id":"99999999999999999999","duration_minutes":5}`, 400, "invalid_request"},
			{"duration is a string", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":"5"}`, 400, "invalid_request"},
			{"duration fraction", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":1.5}`, 400, "invalid_request"},
			{"duration overflow", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":1e40}`, 400, "invalid_request"},
			{"max_requests is a string", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":5,"max_requests":"5"}`, 400, "invalid_request"},
			{"token body unknown field", "POST", "/manage/tokens", `{"project_id":"` + p.ID + `","duration_minutes":5,"token":"sk-mine"}`, 400, "invalid_request"},
			{"token patch max_requests bool", "PATCH", "/manage/tokens/" + tok.ID, `{"max_requests":true}`, 400, "invalid_request"},
			{"token patch is_active null string", "PATCH", "/manage/tokens/" + tok.ID, `{"is_active":"null"}`, 400, "invalid_request"},
			{"token patch request_count", "PATCH", "/manage/tokens/" + tok.ID, `{"request_count":0}`, 400, "invalid_request"},
			{"token patch bad JSON", "PATCH", "/manage/tokens/" + tok.ID, `{"is_active":fals}`, 400, "invalid_json"},
			{"token patch huge", "PATCH", "/manage/tokens/" + tok.ID, huge, 413, "body_too_large"},
		}
		for _, id := range []string{"abc", "0", "-1", "01", "1.0", "%20", "99999999999999999999", "1e3", "0x1"} {
			cases = append(cases,
				badRequest{"get project " + id, "GET", "/manage/projects/" + id, nil, 400, "invalid_request"},
				badRequest{"patch project " + id, "PATCH", "/manage/projects/" + id, `{"name":"n"}`, 400, "invalid_request"},
				badRequest{"revoke project " + id, "POST", "/manage/projects/" + id + "/tokens/revoke", nil, 400, "invalid_request"},
				badRequest{"get token " + id, "GET", "/manage/tokens/" + id, nil, 400, "invalid_request"},
				badRequest{"patch token " + id, "PATCH", "/manage/tokens/" + id, `{"is_active":true}`, 400, "invalid_request"},
				badRequest{"delete token " + id, "DELETE", "/manage/tokens/" + id, nil, 400, "invalid_request"},
				badRequest{"tokens of project " + id, "GET", "/manage/tokens?project_id=" + id, nil, 400, "invalid_request"},
			)
		}
		for _, tc := range cases {
			wantError(t, tc.name, c.request(tc.method, tc.path, tc.body), tc.status, tc.code)
		}

		// Nothing changed: one project, one token, both as created.
		var projects []project
		c.ok("GET", "/manage/projects", nil, http.StatusOK, &projects)
		if len(projects) != 1 || projects[0].Name != "p" || !projects[0].IsActive {
			t.Errorf("projects after malformed requests: %+v", projects)
		}
		var tokens []token
		c.ok("GET", "/manage/tokens", nil, http.StatusOK, &tokens)
		if len(tokens) != 1 || !tokens[0].IsActive || tokens[0].MaxRequests != nil {
			t.Errorf("tokens after malformed requests: %+v", tokens)
		}

		// A body of exactly 1 MiB is read; its content decides.
		exact := `{"name":"` + strings.Repeat("y", 1<<20-len(`{"name":"","api_key":"k"}`)) + `","api_key":"k"}`
		wantError(t, "1 MiB body", c.request("POST", "/manage/projects", exact), http.StatusBadRequest, "invalid_request")

		// Each refused change left a failure audit event, none a success.
		var events []auditEvent
		c.ok("GET", "/manage/audit?limit=1000", nil, http.StatusOK, &events)
		failures := map[string]int{}
		for _, ev := range events {
			if ev.Result != manage.ResultSuccess {
				failures[ev.Result]++
			}
		}
		if failures["invalid_json"] == 0 || failures["invalid_request"] == 0 || failures["body_too_large"] == 0 {
			t.Errorf("failure audit results = %v, want invalid_json, invalid_request and body_too_large", failures)
		}
		if successes := len(events) - sumValues(failures); successes != 2 {
			t.Errorf("%d success audit events, want 2 (the setup)", successes)
		}
	})
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func TestOperationsAndRouting(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		c := startServer(t, b, nil)
		for path, want := range map[string]string{"/health": `{"status":"ok"}`, "/ready": `{"status":"ready"}`} {
			resp := c.request("GET", path, nil, "")
			if resp.status != http.StatusOK || strings.TrimSpace(string(resp.body)) != want {
				t.Errorf("GET %s = %d %s", path, resp.status, resp.body)
			}
		}
		c.request("GET", "/manage/projects", nil)
		resp := c.request("GET", "/metrics", nil, "")
		if resp.status != http.StatusOK || !strings.Contains(string(resp.body), `llmproxy_http_requests_total{code="200",method="GET",route="GET /manage/projects"} 1`) {
			t.Errorf("GET /metrics = %d, without the management request:\n%s", resp.status, resp.body)
		}
		resp = c.request("POST", "/v1/chat/completions", `{}`, "Bearer sk-client")
		if resp.status != http.StatusOK || string(resp.body) != "proxied /v1/chat/completions" {
			t.Errorf("POST /v1/chat/completions = %d %s, want the proxy's answer", resp.status, resp.body)
		}
		for _, path := range []string{"/", "/nope", "/v2/chat", "/health/x"} {
			wantError(t, "GET "+path, c.request("GET", path, nil, ""), http.StatusNotFound, "not_found")
		}
		for _, path := range []string{"/manage/", "/manage/nothing", "/manage/projects/1/tokens", "/manage/tokens/1/x"} {
			wantError(t, "GET "+path, c.request("GET", path, nil), http.StatusNotFound, "not_found")
		}
		for _, rt := range [][3]string{
			{"POST", "/health", "GET, HEAD"}, {"DELETE", "/ready", "GET, HEAD"}, {"PUT", "/metrics", "GET, HEAD"},
			{"PUT", "/manage/projects", "GET, HEAD, POST"}, {"DELETE", "/manage/projects", "GET, HEAD, POST"},
			{"POST", "/manage/projects/1", "GET, HEAD, PATCH"}, {"PUT", "/manage/tokens/1", "DELETE, GET, HEAD, PATCH"},
			{"DELETE", "/manage/tokens", "GET, HEAD, POST"}, {"POST", "/manage/audit", "GET, HEAD"}, {"POST", "/manage/usage", "GET, HEAD"},
		} {
			resp := c.request(rt[0], rt[1], nil)
			wantError(t, rt[0]+" "+rt[1], resp, http.StatusMethodNotAllowed, "method_not_allowed")
			if allow := resp.header.Get("Allow"); allow != rt[2] {
				t.Errorf("%s %s: Allow = %q, want %q", rt[0], rt[1], allow, rt[2])
			}
		}
		if resp := c.request("HEAD", "/manage/projects", nil); resp.status != http.StatusOK {
			t.Errorf("HEAD /manage/projects = %d", resp.status)
		}
		if cc := c.request("GET", "/manage/projects", nil).header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control = %q, want no-store", cc)
		}
	})
}

// failingStore makes every call fail with err, as a lost database does.
type failingStore struct {
	service.Store
	err error
}

func (s *failingStore) Ping(context.Context) error { return s.err }
func (s *failingStore) InTx(context.Context, func(service.Store) error) error {
	return s.err
}
func (s *failingStore) ProjectList(context.Context, *service.ProjectListParams) ([]*service.Project, error) {
	return nil, s.err
}
func (s *failingStore) TokenGetByID(context.Context, int64) (*service.Token, error) {
	return nil, s.err
}
func (s *failingStore) UsageTotals(context.Context, *service.UsageFilter) (*service.UsageTotals, error) {
	return nil, s.err
}

func TestStoreFailures(t *testing.T) {
	t.Parallel()
	requests := [][3]string{
		{"GET", "/manage/projects", ""},
		{"POST", "/manage/projects", `{"name":"p","api_key":"k"}`},
		{"GET", "/manage/tokens/1", ""},
		{"DELETE", "/manage/tokens/1", ""},
		{"GET", "/manage/usage", ""},
	}
	t.Run("unavailable", func(t *testing.T) {
		t.Parallel()
		forEachBackend(t, func(t *testing.T, b backend) {
			unavailable := fmt.Errorf("%w: dial tcp 10.0.0.1:5432: connection refused", service.ErrUnavailable)
			c := startServer(t, b, func(s service.Store) service.Store { return &failingStore{Store: s, err: unavailable} })
			wantError(t, "GET /ready", c.request("GET", "/ready", nil, ""), http.StatusServiceUnavailable, "database_unavailable")
			for _, rq := range requests {
				resp := c.request(rq[0], rq[1], rq[2])
				wantError(t, rq[0]+" "+rq[1], resp, http.StatusServiceUnavailable, "database_unavailable")
				if strings.Contains(string(resp.body), "10.0.0.1") {
					t.Errorf("%s %s leaks the cause: %s", rq[0], rq[1], resp.body)
				}
			}
			if resp := c.request("GET", "/health", nil, ""); resp.status != http.StatusOK {
				t.Errorf("GET /health = %d while the database is down, want 200", resp.status)
			}
		})
	})
	t.Run("internal", func(t *testing.T) {
		t.Parallel()
		forEachBackend(t, func(t *testing.T, b backend) {
			bug := errors.New(`pq: relation "secret_table" does not exist`)
			c := startServer(t, b, func(s service.Store) service.Store { return &failingStore{Store: s, err: bug} })
			for _, rq := range requests {
				resp := c.request(rq[0], rq[1], rq[2])
				wantError(t, rq[0]+" "+rq[1], resp, http.StatusInternalServerError, "internal_error")
				if strings.Contains(string(resp.body), "secret_table") {
					t.Errorf("%s %s leaks the cause: %s", rq[0], rq[1], resp.body)
				}
			}
			// The failed change is audited (outside the failed transaction).
			evs, err := c.store.AuditList(t.Context(), &service.AuditListParams{})
			if err != nil || len(evs) != 2 || evs[0].Result != "internal_error" || evs[1].Action != manage.ActionProjectCreate {
				t.Errorf("audit after internal errors = %+v, %v", evs, err)
			}
		})
	})
}

// clock is a settable time.
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

// After 10 failed authentications in a minute, a client address is refused
// with 429 too_many_attempts for the rest of the minute, even with the
// right token; other addresses are not; every failure is logged without
// the token tried.
func TestManagementAuthThrottled(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		clk := &clock{now: time.Date(2026, 11, 23, 17, 0, 0, 0, time.UTC)}
		var log logtest.Buffer
		c := startServer(t, b, nil, func(o *server.Options) {
			o.AuthLimiter = authlimit.New(authlimit.Options{Now: clk.Now})
			o.Logger = slog.New(slog.NewJSONHandler(&log, nil))
		})
		send := func(remote, method, path, auth string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(method, path, nil)
			req.RemoteAddr = remote
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			rec := httptest.NewRecorder()
			c.handler.ServeHTTP(rec, req)
			return rec
		}
		const attacker, other = "198.51.100.7:40000", "198.51.100.8:40000"
		// Wrong tokens, a missing one, unknown routes and wrong methods all count.
		for i := range 10 {
			auth, path, method := fmt.Sprintf("Bearer guess-%d-secret", i), "/manage/projects", "GET"
			switch i {
			case 3:
				auth = ""
			case 4:
				path = "/manage/nothing-here"
			case 5:
				method = "DELETE"
			}
			if rec := send(attacker, method, path, auth); rec.Code != http.StatusUnauthorized {
				t.Fatalf("failure %d: %d %s, want 401", i+1, rec.Code, rec.Body)
			}
		}
		clk.Advance(15 * time.Second)
		for _, auth := range []string{"Bearer guess-10-secret", "Bearer " + managementToken} {
			rec := send(attacker, "GET", "/manage/projects", auth)
			wantError(t, "11th attempt with "+auth, response{rec.Code, rec.Header(), rec.Body.Bytes()}, http.StatusTooManyRequests, "too_many_attempts")
			if got := rec.Header().Get("Retry-After"); got != "45" {
				t.Errorf("Retry-After = %q, want 45 (the rest of the minute)", got)
			}
		}
		if rec := send(other, "GET", "/manage/projects", "Bearer "+managementToken); rec.Code != http.StatusOK {
			t.Errorf("another address with the right token: %d %s", rec.Code, rec.Body)
		}
		clk.Advance(44 * time.Second)
		if rec := send(attacker, "GET", "/manage/projects", "Bearer "+managementToken); rec.Code != http.StatusTooManyRequests {
			t.Errorf("a second before the minute ends: %d, want 429", rec.Code)
		}
		clk.Advance(time.Second)
		if rec := send(attacker, "GET", "/manage/projects", "Bearer "+managementToken); rec.Code != http.StatusOK {
			t.Errorf("once the minute has ended: %d %s, want 200", rec.Code, rec.Body)
		}

		logged := log.String()
		if strings.Contains(logged, "guess-") || strings.Contains(logged, managementToken) {
			t.Errorf("the log shows a token tried:\n%s", logged)
		}
		var failures int
		for line := range strings.Lines(logged) {
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) == nil && entry["msg"] == "management authentication failed" {
				failures++
				if entry["level"] != "WARN" || entry["client"] != "198.51.100.7" || !strings.HasPrefix(entry["path"].(string), "/manage/") {
					t.Errorf("failure log line %s, want WARN with client 198.51.100.7 and the path", line)
				}
			}
		}
		if failures != 10 {
			t.Errorf("%d failures logged, want 10:\n%s", failures, logged)
		}
	})
}

// The client's message hides the cause; the log line of a failed request
// must name it, or an operator cannot tell a locked file from a lost server.
func TestStoreFailureLogsCause(t *testing.T) {
	t.Parallel()
	store := &failingStore{err: fmt.Errorf("%w: database is locked (5) (SQLITE_BUSY)", service.ErrUnavailable)}
	var log bytes.Buffer
	handler := server.New(server.Options{
		Store:           store,
		Manager:         manage.New(store, nil, nil),
		Metrics:         metrics.New(),
		ManagementToken: managementToken,
		Logger:          slog.New(slog.NewTextHandler(&log, nil)),
	})
	req := httptest.NewRequest("GET", "/manage/projects", nil)
	req.Header.Set("Authorization", "Bearer "+managementToken)
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req) // on this goroutine, so log needs no lock
	if rec.Code != http.StatusServiceUnavailable || strings.Contains(rec.Body.String(), "SQLITE_BUSY") {
		t.Errorf("GET /manage/projects = %d %s, want 503 without the cause", rec.Code, rec.Body)
	}
	if !strings.Contains(log.String(), "SQLITE_BUSY") {
		t.Errorf("log does not name the cause:\n%s", log.String())
	}
}
