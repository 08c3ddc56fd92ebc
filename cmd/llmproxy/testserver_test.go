package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/llmproxy/llmproxy/internal/logtest"
	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/service"
)

// testManagementToken is the management token of test servers that do not
// choose their own.
const testManagementToken = "mgmt-test-token-0123456789"

// testBackends give the environment of a fresh database of each kind.
var testBackends = []struct {
	name string
	env  func(t *testing.T) map[string]string
}{
	{"sqlite", func(t *testing.T) map[string]string {
		return map[string]string{"DATABASE_PATH": filepath.Join(t.TempDir(), "data", "llmproxy.db")}
	}},
	{"postgres", func(t *testing.T) map[string]string {
		return map[string]string{"DB_DRIVER": "postgres", "DATABASE_URL": pgtest.NewDatabase(t), "ENCRYPTION_KEY": secrets.NewKey()}
	}},
}

// testEnv completes env (a copy) with what every test server needs unless
// env sets it: a free loopback port, testManagementToken, and a fresh
// SQLite database when env names none. A variable set to "" stays unset,
// as MANAGEMENT_TOKEN: "" has serve generate a token.
func testEnv(t *testing.T, env map[string]string) map[string]string {
	t.Helper()
	env = maps.Clone(env)
	if env == nil {
		env = map[string]string{}
	}
	defaults := map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "MANAGEMENT_TOKEN": testManagementToken}
	if env["DB_DRIVER"] != service.DriverPostgres {
		defaults["DATABASE_PATH"] = filepath.Join(t.TempDir(), "data", "llmproxy.db")
	}
	for name, value := range defaults {
		if _, set := env[name]; !set {
			env[name] = value
		}
	}
	return env
}

// runningServer is `llmproxy serve` running in this process.
type runningServer struct {
	url    string // http://host:port, or https:// when TLS_CERT_FILE is set
	addr   string
	admin  string            // the management token; "" when serve generated one
	env    map[string]string // the environment serve runs with
	stderr *logtest.Buffer
	stop   context.CancelFunc // as SIGTERM does
	done   chan error
}

// startServe runs serve with testEnv(env) and returns once it accepts
// connections. It is the one way tests start a server: the test's end
// stops it (unless the test did) and fails the test if serve failed.
func startServe(t *testing.T, env map[string]string) *runningServer {
	t.Helper()
	env = testEnv(t, env)
	ctx, cancel := context.WithCancel(context.Background())
	s := &runningServer{admin: env["MANAGEMENT_TOKEN"], env: env, stderr: &logtest.Buffer{}, stop: cancel, done: make(chan error, 1)}
	addrc := make(chan net.Addr, 1)
	go func() {
		s.done <- serve(ctx, nil, func(name string) string { return env[name] }, io.Discard, s.stderr, func(a net.Addr) { addrc <- a })
	}()
	select {
	case a := <-addrc:
		s.addr = a.String()
		s.url = "http://" + s.addr
		if env["TLS_CERT_FILE"] != "" {
			s.url = "https://" + s.addr
		}
	case err := <-s.done:
		cancel()
		t.Fatalf("serve: %v\n%s", err, s.stderr)
	}
	t.Cleanup(func() {
		cancel()
		if err, ok := <-s.done; ok && err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

// wait stops waiting for serve and returns its result.
func (s *runningServer) wait() error {
	err := <-s.done
	close(s.done)
	return err
}

func call(t *testing.T, method, url, auth string, body any) (*http.Response, []byte) {
	t.Helper()
	return callWith(t, http.DefaultClient, method, url, auth, body)
}

// callWith sends body as JSON with client and returns the answer, read whole.
func callWith(t *testing.T, client *http.Client, method, url, auth string, body any) (*http.Response, []byte) {
	t.Helper()
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+auth)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}
