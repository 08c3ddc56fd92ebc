package proxy_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/metrics"
	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/internal/proxy"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/internal/upstreamtest"
	"github.com/llmproxy/llmproxy/internal/usage"
	"github.com/llmproxy/llmproxy/service"
	_ "github.com/llmproxy/llmproxy/service/pgstore"
	_ "github.com/llmproxy/llmproxy/service/sqlitestore"
)

type backend struct {
	name string
	open func(t testing.TB) service.Store
}

var backends = []backend{
	{service.DriverSQLite, func(t testing.TB) service.Store {
		cfg := service.DefaultConfig()
		cfg.SQLitePath = t.TempDir() + "/proxy.db"
		return openStore(t, cfg)
	}},
	{service.DriverPostgres, func(t testing.TB) service.Store {
		cfg := service.DefaultConfig()
		cfg.Driver, cfg.DatabaseURL = service.DriverPostgres, pgtest.NewDatabase(t)
		return openStore(t, cfg)
	}},
}

func openStore(t testing.TB, cfg service.Config) service.Store {
	t.Helper()
	store, err := service.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("service.Open(%s): %v", cfg.Driver, err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// forEachBackend runs test once per storage backend, in parallel.
func forEachBackend(t *testing.T, test func(t *testing.T, b backend)) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			test(t, b)
		})
	}
}

type envOptions struct {
	upstream        upstreamtest.Options
	upstreamURL     string // instead of the fake's (an address that refuses, a base path)
	wrapStore       func(service.Store) service.Store
	wrapRecorder    func(proxy.Recorder) proxy.Recorder
	maxRequestBytes int64
	bodyReadTimeout time.Duration
	readTimeout     time.Duration // the server's, as serve sets it
	accessLog       *slog.Logger
}

// env is a proxy served on a loopback port, in front of a fake upstream,
// on its own database.
type env struct {
	store    service.Store
	keys     *secrets.Keys
	upstream *upstreamtest.Server
	recorder *usage.Recorder
	proxy    *proxy.Handler
	metrics  *metrics.Metrics
	server   *httptest.Server // the proxy's
	url      string
	client   *http.Client
}

func newEnv(t testing.TB, b backend, o envOptions) *env {
	t.Helper()
	store := b.open(t)
	master, err := secrets.ParseKey(secrets.NewKey())
	if err != nil {
		t.Fatalf("ParseKey: %v", err)
	}
	keys, err := secrets.NewKeys(master)
	if err != nil {
		t.Fatalf("NewKeys: %v", err)
	}
	up := upstreamtest.New(t, o.upstream)
	upstreamURL := up.URL
	if o.upstreamURL != "" {
		upstreamURL = o.upstreamURL
	}
	target, err := url.Parse(upstreamURL)
	if err != nil {
		t.Fatalf("upstream URL: %v", err)
	}
	rec := usage.NewRecorder(store, usage.Options{FlushInterval: time.Millisecond})
	t.Cleanup(func() { rec.Close(context.Background()) })

	proxyStore := store
	if o.wrapStore != nil {
		proxyStore = o.wrapStore(store)
	}
	var proxyRecorder proxy.Recorder = rec
	if o.wrapRecorder != nil {
		proxyRecorder = o.wrapRecorder(rec)
	}
	m := metrics.New()
	mux := http.NewServeMux()
	handler := proxy.New(proxy.Options{
		Store:           proxyStore,
		Keys:            keys,
		Upstream:        target,
		Recorder:        proxyRecorder,
		Metrics:         m,
		MaxRequestBytes: o.maxRequestBytes,
		BodyReadTimeout: o.bodyReadTimeout,
		AccessLog:       o.accessLog,
	})
	t.Cleanup(func() { handler.Close(context.Background()) })
	mux.Handle("/v1/", handler)
	srv := httptest.NewUnstartedServer(m.Middleware(proxy.RefuseUnsafePaths(mux, "/v1/"))) // as server.New does
	srv.Config.ReadTimeout = o.readTimeout
	srv.Start()
	t.Cleanup(srv.Close)

	// No automatic Accept-Encoding: tests that want gzip ask for it.
	transport := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	t.Cleanup(transport.CloseIdleConnections)
	return &env{
		store: store, keys: keys, upstream: up, recorder: rec, proxy: handler, metrics: m, server: srv, url: srv.URL,
		client: &http.Client{Transport: transport},
	}
}

// project creates an active project and returns it with its upstream key.
func (e *env) project(t testing.TB) (*service.Project, string) {
	t.Helper()
	apiKey := "sk-upstream-" + rand.Text()
	p, err := e.store.ProjectCreate(context.Background(), &service.ProjectCreateParams{
		Name:             "project-" + rand.Text(),
		APIKeyCiphertext: e.keys.Encrypt(apiKey),
		APIKeyHint:       secrets.KeyHint(apiKey),
	})
	if err != nil {
		t.Fatalf("ProjectCreate: %v", err)
	}
	return p, apiKey
}

type tokenOptions struct {
	maxRequests int64 // 0: unlimited
	expiresAt   time.Time
}

// token creates a token for project and returns it with its secret.
func (e *env) token(t testing.TB, projectID int64, o tokenOptions) (*service.Token, string) {
	t.Helper()
	secret, prefix := secrets.NewToken()
	params := &service.TokenCreateParams{
		ProjectID:   projectID,
		SecretHash:  e.keys.HashToken(secret),
		TokenPrefix: prefix,
		ExpiresAt:   time.Now().Add(time.Hour),
	}
	if !o.expiresAt.IsZero() {
		params.ExpiresAt = o.expiresAt
	}
	if o.maxRequests > 0 {
		params.MaxRequests = &o.maxRequests
	}
	tok, err := e.store.TokenCreate(context.Background(), params)
	if err != nil {
		t.Fatalf("TokenCreate: %v", err)
	}
	return tok, secret
}

// newToken is a project and an unlimited token for it.
func (e *env) newToken(t testing.TB) (tok *service.Token, secret, apiKey string) {
	t.Helper()
	p, apiKey := e.project(t)
	tok, secret = e.token(t, p.ID, tokenOptions{})
	return tok, secret, apiKey
}

// request builds a request to the proxy authorised with secret (none when empty).
func (e *env) request(t testing.TB, method, path, secret string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// do sends req and returns the response with its body read.
func (e *env) do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL.Path, err)
	}
	return resp, body
}

const chatBody = `{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}`

// chat posts a chat completion with secret and returns the response.
func (e *env) chat(t testing.TB, secret string) (*http.Response, []byte) {
	t.Helper()
	return e.do(t, e.request(t, http.MethodPost, "/v1/chat/completions", secret, strings.NewReader(chatBody)))
}

// usageEvents shuts the proxy down as serve does (wait for in-flight
// requests, then flush the recorder) and returns every stored usage event,
// oldest first.
func (e *env) usageEvents(t testing.TB) []*service.UsageEvent {
	t.Helper()
	e.server.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.recorder.Close(ctx); err != nil {
		t.Fatalf("closing the usage recorder: %v", err)
	}
	events, err := e.store.UsageList(ctx, &service.UsageListParams{Limit: service.MaxPageLimit})
	if err != nil {
		t.Fatalf("UsageList: %v", err)
	}
	for i, j := 0, len(events)-1; i < j; i, j = i+1, j-1 {
		events[i], events[j] = events[j], events[i]
	}
	return events
}

// requestCount reads the token's request_count from the store.
func (e *env) requestCount(t testing.TB, tokenID int64) int64 {
	t.Helper()
	tok, err := e.store.TokenGetByID(context.Background(), tokenID)
	if err != nil {
		t.Fatalf("TokenGetByID: %v", err)
	}
	return tok.RequestCount
}

// assertAPIError checks an error the proxy made: status, JSON content type,
// and exactly OpenAI's shape with the given type and code.
func assertAPIError(t testing.TB, resp *http.Response, body []byte, status int, typ, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var got struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("error body %s is not OpenAI's error shape: %v", body, err)
	}
	if got.Error.Type != typ || got.Error.Code != code || got.Error.Message == "" {
		t.Errorf("error = %+v, want type %q, code %q and a message", got.Error, typ, code)
	}
}
