package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	proxyPackage = "github.com/llmproxy/llmproxy/cmd/llmproxy"
	startTimeout = time.Minute
	// stopTimeout exceeds the proxy's own shutdown budget (30 s drain +
	// 30 s usage flush), so a slow but correct shutdown is not cut off.
	stopTimeout  = 90 * time.Second
	logTailLines = 20
)

// buildProxy compiles the llmproxy binary into dir with `go build`, which
// needs the working directory to be inside this repository.
func buildProxy(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "llmproxy")
	if runtime.GOOS == "windows" {
		out += ".exe"
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, proxyPackage)
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s (run from inside the repository, or pass --llmproxy): %v\n%s", proxyPackage, err, output)
	}
	return out, nil
}

// configVars are the proxy's environment variables; the harness sets the
// ones it needs and removes the others a user may have exported.
var configVars = []string{
	"LISTEN_ADDR", "DB_DRIVER", "DATABASE_PATH", "DATABASE_URL", "DATABASE_POOL_SIZE",
	"DATABASE_MAX_IDLE_CONNS", "DATABASE_CONN_MAX_LIFETIME", "UPSTREAM_URL", "MANAGEMENT_TOKEN",
	"ENCRYPTION_KEY", "LOG_LEVEL",
}

// proxyEnv is the environment of a proxy process: the harness's own minus
// the proxy's variables, plus settings.
func proxyEnv(settings map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(configVars, name) {
			env = append(env, kv)
		}
	}
	for name, value := range settings {
		env = append(env, name+"="+value)
	}
	return env
}

// randomKey returns n random bytes in the encoding the proxy's secrets use.
func randomKey(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// proxyProcess is a running `llmproxy serve`.
type proxyProcess struct {
	URL    string // http://127.0.0.1:port
	PID    string
	cmd    *exec.Cmd
	log    *logWatcher
	exited chan struct{}
	err    error // the exit status, once exited is closed
}

// startProxy runs `binary serve` (or binary with args) on a free loopback
// port and returns once it listens (it logs the address it bound).
func startProxy(ctx context.Context, binary string, env []string, args ...string) (*proxyProcess, error) {
	log := &logWatcher{listening: make(chan string, 1)}
	if len(args) == 0 {
		args = []string{"serve"}
	}
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the proxy: %w", err)
	}
	p := &proxyProcess{cmd: cmd, log: log, exited: make(chan struct{}), PID: strconv.Itoa(cmd.Process.Pid)}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case addr := <-log.listening:
		p.URL = "http://" + addr
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("the proxy exited at start (%v):\n%s", p.err, log.tail())
	case <-timer.C:
		cmd.Process.Kill()
		<-p.exited
		return nil, fmt.Errorf("the proxy did not listen within %s:\n%s", startTimeout, log.tail())
	case <-ctx.Done():
		<-p.exited
		return nil, ctx.Err()
	}
}

// stop sends SIGTERM and waits for a clean exit: the proxy drains its
// requests and flushes its usage queue before it exits 0.
func (p *proxyProcess) stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.exited:
	case <-timer.C:
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("the proxy did not exit within %s of SIGTERM; killed:\n%s", stopTimeout, p.log.tail())
	}
	if p.err != nil {
		return fmt.Errorf("the proxy exited with %v after SIGTERM:\n%s", p.err, p.log.tail())
	}
	return nil
}

// kill ends the process without a clean shutdown, for error paths.
func (p *proxyProcess) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// logWatcher takes the proxy's output: it keeps the last lines for error
// messages and reports the address of the "listening" log record.
type logWatcher struct {
	listening chan string

	mu      sync.Mutex
	partial []byte
	lines   []string
	found   bool
}

func (w *logWatcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if len(w.lines) == logTailLines {
			w.lines = w.lines[1:]
		}
		w.lines = append(w.lines, line)
		if !w.found {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" && rec.Addr != "" {
				w.found = true
				w.listening <- rec.Addr
			}
		}
	}
	return len(b), nil
}

func (w *logWatcher) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return "    " + strings.Join(w.lines, "\n    ")
}

// manageClient calls the proxy's management API, as a user's script would.
type manageClient struct {
	base, secret string
	client       *http.Client
}

func newManageClient(base, token string) *manageClient {
	return &manageClient{base: base, secret: token, client: &http.Client{Timeout: 30 * time.Second}}
}

func (m *manageClient) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, m.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+m.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, truncate(string(data), 300))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

type tokenView struct {
	ID           string `json:"id"`
	Token        string `json:"token"`
	MaxRequests  *int64 `json:"max_requests"`
	RequestCount int64  `json:"request_count"`
}

type usageView struct {
	Requests         int64 `json:"requests"`
	Errors           int64 `json:"errors"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

func (m *manageClient) createProject(ctx context.Context) (string, error) {
	var project struct{ ID string }
	err := m.call(ctx, http.MethodPost, "/manage/projects",
		map[string]string{"name": "bench", "api_key": "sk-bench-upstream-key"}, &project)
	return project.ID, err
}

// createToken issues a token for an hour; maxRequests 0 is unlimited.
func (m *manageClient) createToken(ctx context.Context, projectID string, maxRequests int64) (*tokenView, error) {
	in := map[string]any{"project_id": projectID, "duration_minutes": 60}
	if maxRequests > 0 {
		in["max_requests"] = maxRequests
	}
	var token tokenView
	return &token, m.call(ctx, http.MethodPost, "/manage/tokens", in, &token)
}

func (m *manageClient) token(ctx context.Context, id string) (*tokenView, error) {
	var token tokenView
	return &token, m.call(ctx, http.MethodGet, "/manage/tokens/"+url.PathEscape(id), nil, &token)
}

func (m *manageClient) usage(ctx context.Context, tokenID string) (*usageView, error) {
	var usage usageView
	return &usage, m.call(ctx, http.MethodGet, "/manage/usage?token_id="+url.QueryEscape(tokenID), nil, &usage)
}

// errPostgresUnreachable is wrapped by createPostgresDatabase when it cannot
// connect: the harness then skips Postgres instead of failing.
var errPostgresUnreachable = errors.New("cannot connect")

// createPostgresDatabase creates a fresh database on the server at
// serverURL and returns its URL and a function that drops it.
// onThisMachine reports whether a postgres:// URL names a server on this
// machine (loopback or a Unix socket), whose processes' CPU the harness
// can then read.
func onThisMachine(serverURL string) bool {
	u, err := url.Parse(serverURL)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if h := u.Query().Get("host"); h != "" {
		host = h
	}
	if host == "" || host == "localhost" || strings.HasPrefix(host, "/") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func createPostgresDatabase(ctx context.Context, serverURL string) (string, func(context.Context) error, error) {
	u, err := url.Parse(serverURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", nil, fmt.Errorf("--pg-url: want a postgres:// URL")
	}
	suffix := make([]byte, 6)
	rand.Read(suffix)
	name := "llmproxy_bench_" + hex.EncodeToString(suffix)
	runSQL := func(ctx context.Context, sql string) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			return fmt.Errorf("%w: %w", errPostgresUnreachable, err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		_, err = conn.Exec(ctx, sql)
		return err
	}
	// The name is ours (hex), so quoting it is enough.
	if err := runSQL(ctx, `CREATE DATABASE "`+name+`"`); err != nil {
		return "", nil, fmt.Errorf("%s: creating a database: %w", u.Redacted(), err)
	}
	drop := func(ctx context.Context) error {
		return runSQL(ctx, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`)
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}
