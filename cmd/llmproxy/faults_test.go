package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llmproxy/internal/config"
	"github.com/llmproxy/llmproxy/internal/logtest"
	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/internal/upstreamtest"
	"github.com/llmproxy/llmproxy/service"
)

// faultClientTimeout turns a request that hangs into a failed test rather
// than a stuck one. It is no timing assertion: it is far above what any
// answer takes, including SQLite's busy_timeout (10 s) plus queueing.
const faultClientTimeout = 2 * time.Minute

// faultWait bounds each wait for the load to reach a milestone.
const faultWait = 3 * time.Minute

// answer is what a client got: a status and an error code, or a transport error.
type answer struct {
	status int
	code   string
	openAI bool // the error came in OpenAI's shape (/v1), not as {"error","code"} (/manage)
	err    error
}

func (a answer) String() string {
	if a.err != nil {
		return "transport error: " + a.err.Error()
	}
	return fmt.Sprintf("%d %s (OpenAI shape: %v)", a.status, a.code, a.openAI)
}

func (a answer) ok() bool { return a.err == nil && a.status == http.StatusOK }

func (a answer) unavailable() bool {
	return a.err == nil && a.status == http.StatusServiceUnavailable && a.code == "database_unavailable"
}

// proxyUnavailable is /v1's refusal, in OpenAI's shape.
func (a answer) proxyUnavailable() bool { return a.unavailable() && a.openAI }

// manageUnavailable is the management API's and /ready's refusal.
func (a answer) manageUnavailable() bool { return a.unavailable() && !a.openAI }

// ask sends one request and decodes the error code of either error shape.
// It is safe off the test goroutine.
func ask(client *http.Client, method, url, auth, body string) answer {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+auth)
	resp, err := client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	var shapes struct {
		Error json.RawMessage `json:"error"`
		Code  string          `json:"code"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&shapes); err != nil {
		return answer{status: resp.StatusCode, err: fmt.Errorf("status %d, undecodable body: %w", resp.StatusCode, err)}
	}
	var openAI struct {
		Code string `json:"code"`
	}
	if json.Unmarshal(shapes.Error, &openAI) == nil { // an object, not a message
		return answer{status: resp.StatusCode, code: openAI.Code, openAI: true}
	}
	return answer{status: resp.StatusCode, code: shapes.Code}
}

const chatBody = `{"model":"gpt-faults","messages":[]}`

// newProjectToken creates a project and an unlimited token through the
// management API and returns the token's id and secret.
func newProjectToken(t *testing.T, url, admin string) (id, secret string) {
	t.Helper()
	var project, token map[string]any
	resp, body := call(t, "POST", url+"/manage/projects", admin, map[string]string{"name": "faults", "api_key": "sk-upstream-faults"})
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &project) != nil {
		t.Fatalf("create project = %d %s", resp.StatusCode, body)
	}
	resp, body = call(t, "POST", url+"/manage/tokens", admin, map[string]any{"project_id": project["id"], "duration_minutes": 60})
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &token) != nil {
		t.Fatalf("create token = %d %s", resp.StatusCode, body)
	}
	return token["id"].(string), token["token"].(string)
}

// settledRequestCount is the token's request_count once settled(count) or,
// failing that, after 10 s: while a token is busy its count includes the
// requests an admission lease reserved, given back shortly after the lease
// ends.
func settledRequestCount(t *testing.T, url, admin, id string, settled func(int) bool) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := requestCount(t, url, admin, id)
		if settled(got) || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requestCount reads the token's request_count through the management API.
func requestCount(t *testing.T, url, admin, id string) int {
	t.Helper()
	var token struct {
		RequestCount int `json:"request_count"`
	}
	resp, body := call(t, "GET", url+"/manage/tokens/"+id, admin, nil)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &token) != nil {
		t.Fatalf("get token = %d %s", resp.StatusCode, body)
	}
	return token.RequestCount
}

// usageRequests opens the database serve used (serve has stopped) and
// counts the usage rows written.
func usageRequests(t *testing.T, env map[string]string) int64 {
	t.Helper()
	cfg, err := config.Load(func(name string) string { return env[name] })
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
	return totals.Requests
}

// Load phases of TestServePostgresRestart.
const (
	phaseUp         int32 = iota
	phaseDown             // stopped, leases from before ended: every request fails fast
	phaseRestarting       // starting: requests may fail
	phaseBack             // started: requests succeed after a few retries at most
)

// backRetries bounds the refusals in a row one client may get once the
// server is back (a pooled connection may still be a dead one).
const backRetries = 10

// loadTally counts the answers of the load by the phases in which each
// request started and ended, and keeps those that break the rules.
type loadTally struct {
	mu       sync.Mutex
	sent     int
	ok       int   // 200s, in any phase
	okBack   int   // 200s to requests started once the server was back
	down     int   // 503s to requests started and answered while it was down
	inARow   []int // per client, refusals in a row since it was back
	failures []string
	progress chan struct{} // signalled after each answer
}

func newLoadTally(clients int) *loadTally {
	return &loadTally{inARow: make([]int, clients), progress: make(chan struct{}, 1)}
}

func (l *loadTally) add(client int, started, ended int32, a answer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent++
	whollyDown := started == phaseDown && ended == phaseDown
	switch {
	case a.ok() && whollyDown:
		l.failures = append(l.failures, "200 while the database was down")
	case a.ok():
		l.ok++
		if started == phaseBack {
			l.okBack++
			l.inARow[client] = 0
		}
	case a.proxyUnavailable():
		if whollyDown {
			l.down++
		}
		if started == phaseBack {
			if l.inARow[client]++; l.inARow[client] > backRetries {
				l.failures = append(l.failures, fmt.Sprintf("client %d still refused after %d retries once the database was back", client, backRetries))
			}
		}
	default:
		l.failures = append(l.failures, fmt.Sprintf("%v (phases %d→%d)", a, started, ended))
	}
	select {
	case l.progress <- struct{}{}:
	default:
	}
}

// waitFor waits until cond holds (under the tally's lock), failing the test
// if a rule was broken, the load ran out of requests or faultWait passed.
func (l *loadTally) waitFor(t *testing.T, what string, loadDone <-chan struct{}, cond func() bool) {
	t.Helper()
	deadline := time.After(faultWait)
	for {
		l.mu.Lock()
		done, failures, sent := cond(), l.failures, l.sent
		l.mu.Unlock()
		if len(failures) > 0 {
			t.Fatalf("while waiting for %s: wrong answers: %v", what, failures[:min(len(failures), 10)])
		}
		if done {
			return
		}
		select {
		case <-l.progress:
		case <-loadDone:
			t.Fatalf("the load ended (%d requests) before %s", sent, what)
		case <-deadline:
			t.Fatalf("no %s after %v (%d requests)", what, faultWait, sent)
		}
	}
}

// A PostgreSQL restart under load: while the server is down every request
// fails fast with 503 database_unavailable (never a 500 or a hang), /ready
// says so, and when it is back requests succeed again without restarting
// llmproxy. No admission is lost, and every usage event, also those queued
// while the server was down, is written once.
func TestServePostgresRestart(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	conn, err := pgx.Connect(t.Context(), cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), "CREATE DATABASE llmproxy"); err != nil {
		t.Fatal(err)
	}
	conn.Close(t.Context())

	// Streams wait for hold before they end; the load's JSON answers do not.
	hold := make(chan struct{})
	upstream := upstreamtest.New(t, upstreamtest.Options{HoldFinal: hold})
	s := startServe(t, map[string]string{
		"DB_DRIVER":      "postgres",
		"DATABASE_URL":   cluster.URL("llmproxy"),
		"ENCRYPTION_KEY": secrets.NewKey(),
		"UPSTREAM_URL":   upstream.URL,
	})
	admin := s.admin
	tokenID, secret := newProjectToken(t, s.url, admin)
	httpClient := &http.Client{Timeout: faultClientTimeout}

	// The load: a few clients sending requests back to back, each bounded.
	const clients, perClient = 4, 5000
	var phase atomic.Int32
	tally := newLoadTally(clients)
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	var wg sync.WaitGroup
	for client := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perClient {
				select {
				case <-stopLoad:
					return
				default:
				}
				started := phase.Load()
				a := ask(httpClient, "POST", s.url+"/v1/chat/completions", secret, chatBody)
				tally.add(client, started, phase.Load(), a)
				if !a.ok() {
					// Back off a little, as a client would, so a fast 503
					// does not use up the budget in a tight loop.
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	go func() { wg.Wait(); close(loadDone) }()
	endLoad := sync.OnceFunc(func() {
		close(stopLoad)
		<-loadDone
	})
	defer endLoad()

	tally.waitFor(t, "20 answered requests before the stop", loadDone, func() bool { return tally.ok >= 20 })
	// A stream admitted before the stop ends while the database is down, so
	// its usage event must wait in the recorder for the database to return.
	req, _ := http.NewRequest("POST", s.url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-stream","stream":true}`))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := httpClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	stream := bufio.NewReader(resp.Body)
	if line, err := stream.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("stream's first line %q, %v", line, err)
	}

	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	// An admission lease granted just before the stop admits the token's
	// requests without the database until it ends; after that every
	// request needs the database.
	time.Sleep(service.AdmissionLease)
	phase.Store(phaseDown)
	close(hold)
	if rest, err := io.ReadAll(stream); err != nil || !strings.Contains(string(rest), "data: [DONE]") || !strings.Contains(string(rest), `"usage"`) {
		t.Fatalf("stream cut short while the database is down: %v\n%s", err, rest)
	}
	tally.waitFor(t, "20 answers while the database is down", loadDone, func() bool { return tally.down >= 20 })
	for _, check := range []struct {
		path, auth string
		want       func(answer) bool
	}{
		{"/ready", "", answer.manageUnavailable},
		{"/manage/tokens/" + tokenID, admin, answer.manageUnavailable},
		{"/health", "", answer.ok},
	} {
		if a := ask(httpClient, "GET", s.url+check.path, check.auth, ""); !check.want(a) {
			t.Errorf("GET %s while the database is down = %v", check.path, a)
		}
	}
	if a := ask(httpClient, "POST", s.url+"/manage/projects", admin, `{"name":"down","api_key":"sk-down"}`); !a.manageUnavailable() {
		t.Errorf("POST /manage/projects while the database is down = %v, want 503 database_unavailable", a)
	}
	checkLogLine(t, s.stderr.String(), `"msg":"proxy: database unavailable"`, "connect")
	checkLogLine(t, s.stderr.String(), `"path":"/manage/projects"`, "connect")
	waitForLog(t, s.stderr, `"msg":"usage: writing a batch failed, will retry"`)

	phase.Store(phaseRestarting)
	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	phase.Store(phaseBack)
	tally.waitFor(t, "20 answered requests after the restart", loadDone, func() bool { return tally.okBack >= 20 })
	endLoad()

	if a := ask(httpClient, "GET", s.url+"/ready", "", ""); !a.ok() {
		t.Errorf("GET /ready after the restart = %v", a)
	}
	answered := tally.ok + 1 // and the stream
	// An admission can commit just as the server is killed and its reply be
	// lost with the connection: the client gets a 503 for a counted request.
	// No database can tell that client otherwise; only the requests in
	// flight at the stop, one per client, can be in that state.
	got := settledRequestCount(t, s.url, admin, tokenID, func(n int) bool { return n <= answered+clients })
	if got < answered || got > answered+clients {
		t.Errorf("request_count = %d, want %d (the 200 answers), or up to %d more", got, answered, clients)
	} else if got > answered {
		t.Logf("request_count = %d: %d admissions committed as the server was killed", got, got-answered)
	}
	s.stop()
	if err := s.wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, s.stderr)
	}
	if got := usageRequests(t, s.env); got != int64(answered) {
		t.Errorf("usage rows = %d, want %d (the 200 answers)", got, answered)
	}
	t.Logf("%d requests: %d answered, %d refused while the database was down", tally.sent, tally.ok, tally.down)
}

// checkIntegrity runs SQLite's full consistency check on the file.
func checkIntegrity(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var result string
	if err := db.QueryRowContext(t.Context(), "PRAGMA integrity_check").Scan(&result); err != nil || result != "ok" {
		t.Errorf("PRAGMA integrity_check = %q, %v; want ok", result, err)
	}
}

// Another connection holding SQLite's write lock past busy_timeout: writes
// get 503 database_unavailable and a log line naming the lock, reads go on
// (WAL), nothing is corrupted, and writes work again once it lets go.
func TestServeSQLiteLocked(t *testing.T) {
	t.Parallel()
	upstream := upstreamtest.New(t, upstreamtest.Options{})
	path := filepath.Join(t.TempDir(), "llmproxy.db")
	s := startServe(t, map[string]string{"DATABASE_PATH": path, "ENCRYPTION_KEY": secrets.NewKey(), "UPSTREAM_URL": upstream.URL})
	admin := s.admin
	tokenID, secret := newProjectToken(t, s.url, admin)
	client := &http.Client{Timeout: faultClientTimeout}
	chat := func() answer { return ask(client, "POST", s.url+"/v1/chat/completions", secret, chatBody) }

	holder, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	lock, err := holder.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	// Both writes wait for the lock for busy_timeout, one after the other
	// on the single writer connection.
	var wg sync.WaitGroup
	var admission, creation answer
	wg.Go(func() { admission = chat() })
	wg.Go(func() {
		creation = ask(client, "POST", s.url+"/manage/projects", admin, `{"name":"locked","api_key":"sk-locked"}`)
	})
	// Reads do not need the lock.
	if a := ask(client, "GET", s.url+"/manage/tokens/"+tokenID, admin, ""); !a.ok() {
		t.Errorf("GET /manage/tokens/%s while the file is locked = %v, want 200", tokenID, a)
	}
	wg.Wait()
	if !admission.proxyUnavailable() {
		t.Errorf("POST /v1/chat/completions while the file is locked = %v, want 503 database_unavailable", admission)
	}
	if !creation.manageUnavailable() {
		t.Errorf("POST /manage/projects while the file is locked = %v, want 503 database_unavailable", creation)
	}
	checkLogLine(t, s.stderr.String(), `"msg":"proxy: database unavailable"`, "database is locked")
	checkLogLine(t, s.stderr.String(), `"path":"/manage/projects"`, "database is locked")
	if _, err := lock.ExecContext(t.Context(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}

	if a := chat(); !a.ok() {
		t.Fatalf("after the lock is released: %v", a)
	}
	if got := requestCount(t, s.url, admin, tokenID); got != 1 {
		t.Errorf("request_count = %d, want 1", got)
	}
	s.stop()
	if err := s.wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, s.stderr)
	}
	if got := usageRequests(t, s.env); got != 1 {
		t.Errorf("usage rows = %d, want 1", got)
	}
	checkIntegrity(t, path)
}

// checkLogLine checks that one line of log has every one of parts.
func checkLogLine(t *testing.T, log string, parts ...string) {
	t.Helper()
	for line := range strings.Lines(log) {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			return
		}
	}
	t.Errorf("no log line has all of %q:\n%s", parts, log)
}

// waitForLog waits until the log has a line with part.
func waitForLog(t *testing.T, log *logtest.Buffer, part string) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(faultWait)
	for !strings.Contains(log.String(), part) {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("no log line %s after %v:\n%s", part, faultWait, log)
		}
	}
}

// A database migrated by a newer llmproxy: serve refuses to start, and the
// binary exits with status 1 and a message saying to upgrade.
func TestServeRefusesNewerSchema(t *testing.T) {
	if os.Getenv("LLMPROXY_TEST_MAIN") == "1" {
		// The child process: run the real main, which exits.
		os.Args = []string{"llmproxy", "serve"}
		main()
		return
	}
	t.Parallel()
	for _, b := range testBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			env := testEnv(t, b.env(t))
			if b.name == "sqlite" {
				env["ENCRYPTION_KEY"] = secrets.NewKey()
			}
			insertFutureRevision(t, env)

			ctx, cancel := context.WithTimeout(t.Context(), faultClientTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestServeRefusesNewerSchema$")
			cmd.Env = append(os.Environ(), "LLMPROXY_TEST_MAIN=1", "DB_DRIVER=", "DATABASE_PATH=", "DATABASE_URL=")
			for name, value := range env {
				cmd.Env = append(cmd.Env, name+"="+value)
			}
			out, err := cmd.CombinedOutput()
			exit, _ := errors.AsType[*exec.ExitError](err)
			if exit == nil || exit.ExitCode() != 1 {
				t.Fatalf("serve on a newer schema: %v, want exit status 1\n%s", err, out)
			}
			want := "database schema version 99990101000000 is newer than this llmproxy knows"
			if !strings.Contains(string(out), want) || !strings.Contains(string(out), "upgrade llmproxy") {
				t.Errorf("output does not say %q and to upgrade:\n%s", want, out)
			}
			if strings.Contains(string(out), `"msg":"listening"`) {
				t.Errorf("serve listened on a newer schema:\n%s", out)
			}
		})
	}
}

// insertFutureRevision migrates the database of env, then records a
// migration newer than any this binary has, as a newer llmproxy would.
func insertFutureRevision(t *testing.T, env map[string]string) {
	t.Helper()
	cfg, err := config.Load(func(name string) string { return env[name] })
	if err != nil {
		t.Fatal(err)
	}
	store, err := service.Open(t.Context(), cfg.Storage)
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	const columns = `INSERT INTO schema_revisions (version, description, type, applied, total, hash,
	  partial_hashes, executed_at, execution_time_us, error, error_stmt, operator_version) `
	if cfg.Storage.Driver == service.DriverPostgres {
		conn, err := pgx.Connect(t.Context(), cfg.Storage.DatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(t.Context())
		if _, err := conn.Exec(t.Context(), columns+`VALUES ('99990101000000', 'future', 2, 1, 1, 'h', '[]', now(), 0, '', '', 'future')`); err != nil {
			t.Fatal(err)
		}
		return
	}
	db, err := sql.Open("sqlite", cfg.Storage.SQLitePath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), columns+`VALUES ('99990101000000', 'future', 2, 1, 1, 'h', '[]', 0, 0, '', '', 'future')`); err != nil {
		t.Fatal(err)
	}
}
