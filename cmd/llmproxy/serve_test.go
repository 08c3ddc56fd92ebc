package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/llmproxy/llmproxy/internal/config"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/internal/upstreamtest"
	"github.com/llmproxy/llmproxy/service"
)

func TestServeHelp(t *testing.T) {
	t.Parallel()
	var stdout bytes.Buffer
	if err := serve(t.Context(), []string{"--help"}, func(string) string { return "" }, &stdout, io.Discard, nil); err != nil {
		t.Fatalf("serve --help: %v", err)
	}
	if !strings.Contains(stdout.String(), config.Help) {
		t.Errorf("serve --help does not print config.Help:\n%s", stdout.String())
	}
	err := serve(t.Context(), []string{"--port=1"}, func(string) string { return "" }, io.Discard, io.Discard, nil)
	if !errors.Is(err, errUsage) {
		t.Errorf("serve --port=1 = %v, want a usage error", err)
	}
}

// A bad configuration ends serve with an error naming the variable, before
// anything listens.
func TestServeBadConfig(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	cases := map[string]map[string]string{
		"DB_DRIVER":        {"DB_DRIVER": "mysql"},
		"UPSTREAM_URL":     {"UPSTREAM_URL": "not a url"},
		"LOG_LEVEL":        {"LOG_LEVEL": "chatty"},
		"ENCRYPTION_KEY":   {"ENCRYPTION_KEY": "short"},
		"MANAGEMENT_TOKEN": {"MANAGEMENT_TOKEN": "has space"},
		"TRUSTED_PROXIES":  {"TRUSTED_PROXIES": "10.0.0.0/8,proxy.example"},
		"TLS_KEY_FILE":     {"TLS_CERT_FILE": "/etc/hostname"},
		"TLS_CERT_FILE":    {"TLS_CERT_FILE": "/nonexistent/cert.pem", "TLS_KEY_FILE": "/nonexistent/key.pem"},
		"LISTEN_ADDR":      {"LISTEN_ADDR": busy.Addr().String()},
		"DATABASE_URL": {"DB_DRIVER": "postgres", "ENCRYPTION_KEY": secrets.NewKey(),
			"DATABASE_URL": "postgres://postgres@127.0.0.1:1/none?sslmode=disable"},
		"DATABASE_PATH": {"DATABASE_PATH": "/proc/llmproxy/db.sqlite", "ENCRYPTION_KEY": secrets.NewKey()},
	}
	for variable, env := range cases {
		t.Run(variable, func(t *testing.T) {
			t.Parallel()
			env := testEnv(t, env)
			err := serve(t.Context(), nil, func(name string) string { return env[name] }, io.Discard, io.Discard,
				func(net.Addr) { t.Error("serve listened with a bad configuration") })
			if err == nil || !strings.HasPrefix(err.Error(), variable) {
				t.Errorf("serve = %v, want an error starting with %s", err, variable)
			}
		})
	}
}

func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	for _, b := range testBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			hold := make(chan struct{})
			upstream := upstreamtest.New(t, upstreamtest.Options{HoldFinal: hold})
			env := b.env(t)
			env["UPSTREAM_URL"] = upstream.URL
			env["MANAGEMENT_TOKEN"] = "" // unset: serve generates one
			s := startServe(t, env)

			// MANAGEMENT_TOKEN is unset: the generated one is printed once and works.
			tokens := regexp.MustCompile(`mgmt-[A-Z2-7]+`).FindAllString(s.stderr.String(), -1)
			if len(tokens) != 1 {
				t.Fatalf("stderr shows %d management tokens, want 1:\n%s", len(tokens), s.stderr)
			}
			admin := tokens[0]
			for _, path := range []string{"/health", "/ready", "/metrics"} {
				if resp, body := call(t, "GET", s.url+path, "", nil); resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s = %d %s", path, resp.StatusCode, body)
				}
			}
			var project, token map[string]any
			resp, body := call(t, "POST", s.url+"/manage/projects", admin, map[string]string{"name": "e2e", "api_key": "sk-upstream-e2e"})
			if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &project) != nil {
				t.Fatalf("create project = %d %s", resp.StatusCode, body)
			}
			resp, body = call(t, "POST", s.url+"/manage/tokens", admin, map[string]any{"project_id": project["id"], "duration_minutes": 10})
			if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &token) != nil {
				t.Fatalf("create token = %d %s", resp.StatusCode, body)
			}
			secret := token["token"].(string)

			resp, body = call(t, "POST", s.url+"/v1/chat/completions", secret, map[string]any{"model": "gpt-e2e", "messages": []any{}})
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "gpt-e2e") {
				t.Fatalf("POST /v1/chat/completions = %d %s", resp.StatusCode, body)
			}
			if got := upstream.Requests()[0].Header.Get("Authorization"); got != "Bearer sk-upstream-e2e" {
				t.Errorf("upstream saw Authorization %q", got)
			}

			// Streams in flight at SIGTERM finish, and their usage is written before exit.
			const streams = 4
			readers := make([]*bufio.Reader, streams)
			bodies := make([]io.ReadCloser, streams)
			for i := range streams {
				data, _ := json.Marshal(map[string]any{"model": "gpt-stream", "stream": true})
				req, _ := http.NewRequestWithContext(t.Context(), "POST", s.url+"/v1/chat/completions", bytes.NewReader(data))
				req.Header.Set("Authorization", "Bearer "+secret)
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("stream %d: %v %v", i, resp, err)
				}
				bodies[i], readers[i] = resp.Body, bufio.NewReader(resp.Body)
				if line, err := readers[i].ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
					t.Fatalf("stream %d first line %q, %v", i, line, err)
				}
			}
			s.stop()
			// Once the listener is closed the server is draining.
			for {
				conn, err := net.Dial("tcp", s.addr)
				if err != nil {
					break
				}
				conn.Close()
			}
			close(hold)
			for i, r := range readers {
				rest, err := io.ReadAll(r)
				bodies[i].Close()
				if err != nil || !strings.Contains(string(rest), "data: [DONE]") || !strings.Contains(string(rest), `"usage"`) {
					t.Errorf("stream %d cut short: %v\n%s", i, err, rest)
				}
			}
			if err := s.wait(); err != nil {
				t.Fatalf("serve after SIGTERM: %v", err)
			}

			cfg, err := config.Load(func(name string) string { return s.env[name] })
			if err != nil {
				t.Fatal(err)
			}
			store, err := service.Open(t.Context(), cfg.Storage)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			totals, err := store.UsageTotals(t.Context(), &service.UsageFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if totals.Requests != 1+streams || totals.PromptTokens != 11*(1+streams) {
				t.Errorf("usage after shutdown = %+v, want %d requests with 11 prompt tokens each", totals.UsageCounts, 1+streams)
			}
			tokens2, err := store.TokenList(t.Context(), &service.TokenListParams{})
			if err != nil || len(tokens2) != 1 || tokens2[0].RequestCount != 1+streams {
				t.Errorf("token after shutdown = %+v, %v; want request_count %d", tokens2, err, 1+streams)
			}
		})
	}
}
