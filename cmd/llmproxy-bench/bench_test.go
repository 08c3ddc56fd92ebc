package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/pgtest"
)

// The proxy binary is built once for all tests, into a directory removed
// after them.
var (
	binaryDir  string
	binaryOnce sync.Once
	binary     string
	binaryErr  error
)

func TestMain(m *testing.M) {
	// The forwarder backend runs the harness's own binary, here this one.
	if len(os.Args) == 2 && os.Args[1] == forwarderCommand {
		os.Exit(runForwarder(os.Stderr))
	}
	code := m.Run()
	if binaryDir != "" {
		os.RemoveAll(binaryDir)
	}
	os.Exit(code)
}

func proxyBinary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		if binaryDir, binaryErr = os.MkdirTemp("", "llmproxy-bench-test-"); binaryErr != nil {
			return
		}
		binary, binaryErr = buildProxy(context.Background(), binaryDir)
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binary
}

// The harness end to end, briefly: every run's checks pass and the report
// has a row per scenario. Speed is not asserted.
func TestHarnessSQLite(t *testing.T) {
	t.Parallel()
	testHarness(t, "sqlite", "")
}

func TestHarnessPostgres(t *testing.T) {
	t.Parallel()
	testHarness(t, "postgres", pgtest.ServerURL(t))
}

func TestHarnessForwarder(t *testing.T) {
	t.Parallel()
	report := runBriefly(t, backendForwarder, "", "")
	var got []string
	for _, row := range report.Rows {
		got = append(got, row.Scenario)
		if row.Backend == backendForwarder && (row.RatioToDirect == nil || row.Requests == 0) {
			t.Errorf("%s: not measured against the direct run: %+v", row.Scenario, row)
		}
	}
	if want := []string{"direct json c4", "direct sse c4", "forwarder json c4", "forwarder sse c4"}; !slices.Equal(got, want) {
		t.Errorf("scenarios:\n got %q\nwant %q", got, want)
	}
}

// runBriefly runs the harness on one backend, JSON and SSE at c4 for
// 300 ms each, and fails the test if the run or any check fails.
func runBriefly(t *testing.T, backend, pgURL, binary string) *Report {
	t.Helper()
	report, err := Run(t.Context(), Config{
		Concurrency: []int{4},
		Duration:    300 * time.Millisecond,
		Warmup:      100 * time.Millisecond,
		Modes:       []string{"json", "sse"},
		Backends:    []string{backend},
		PostgresURL: pgURL,
		Binary:      binary,
		Progress:    t.Output(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if failures := report.Failures(); len(failures) > 0 {
		t.Fatalf("checks failed:\n%s", strings.Join(failures, "\n"))
	}
	return report
}

func testHarness(t *testing.T, backend, pgURL string) {
	report := runBriefly(t, backend, pgURL, proxyBinary(t))
	want := []string{
		"direct json c4", "direct sse c4",
		backend + " json c4 unlimited", backend + " json c4 max_requests",
		backend + " sse c4 unlimited", backend + " sse c4 max_requests",
		backend + " json c4 limit_hit",
	}
	var got []string
	for _, row := range report.Rows {
		got = append(got, row.Scenario)
		if row.Requests == 0 || row.RPS <= 0 || row.P50MS <= 0 || row.P99MS < row.P50MS {
			t.Errorf("%s: no measurement: %+v", row.Scenario, row)
		}
		if row.Backend == "direct" || runtime.GOOS != "linux" {
			continue
		}
		if row.ProxyCPUCores == nil || row.ProxyMaxRSSMB == nil || *row.ProxyMaxRSSMB <= 0 {
			t.Errorf("%s: proxy CPU or RSS not read from /proc", row.Scenario)
		}
		// The test's PostgreSQL server runs on this machine; SQLite is
		// inside the proxy.
		if measured := row.DatabaseCPUCores != nil; measured != (backend == "postgres") {
			t.Errorf("%s: database CPU %s, want it measured only on postgres", row.Scenario, optional(row.DatabaseCPUCores, "%.3f"))
		}
		if row.Tokens != tokensLimitHit && (row.RatioToDirect == nil || row.AddedP99MS == nil) {
			t.Errorf("%s: not compared with the direct run", row.Scenario)
		}
		// The proxy's own time is part of what the clients waited, up to
		// the histogram's bucket width (1.5×).
		if row.Tokens != tokensLimitHit && (row.OwnP99MS == nil || *row.OwnP99MS <= 0 || *row.OwnP99MS > 1.5*row.P99MS) {
			t.Errorf("%s: own p99 %s ms, want more than 0 and at most the clients' p99 %.2f ms (within a bucket)",
				row.Scenario, optional(row.OwnP99MS, "%.3f"), row.P99MS)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("scenarios:\n got %q\nwant %q", got, want)
	}
	var sb strings.Builder
	printTable(&sb, report)
	for _, scenario := range want {
		if !strings.Contains(sb.String(), scenario) {
			t.Errorf("the table has no row %q:\n%s", scenario, sb.String())
		}
	}
}

// checkRun must flag each way a proxy can be wrong.
func TestCheckRun(t *testing.T) {
	t.Parallel()
	okLoad := func(admitted int64) *loadResult {
		return &loadResult{Status: map[int]int64{http.StatusOK: admitted}}
	}
	exactUsage := func(n int64) *usageView {
		return &usageView{Requests: n, PromptTokens: n * usagePrompt, CompletionTokens: n * usageCompletion, TotalTokens: n * usageTotal}
	}
	good := func() runOutcome {
		return runOutcome{load: okLoad(100), forwarded: 100, proxied: true, token: &tokenView{RequestCount: 100}, usage: exactUsage(100)}
	}
	tests := []struct {
		name   string
		change func(*runOutcome)
		want   string // a substring of the one failure; "" for none
	}{
		{"exact", func(*runOutcome) {}, ""},
		{"direct", func(o *runOutcome) { *o = runOutcome{load: okLoad(10), forwarded: 10} }, ""},
		{"server error", func(o *runOutcome) { o.load.Status[500] = 1 }, "status 500"},
		{"429 without a limit", func(o *runOutcome) { o.load.Status[429] = 1 }, "status 429"},
		{"transport error", func(o *runOutcome) { o.load.TransportErrors, o.load.FirstError = 2, "EOF" }, "2 requests failed"},
		{"changed body", func(o *runOutcome) { o.load.BadBodies = 1 }, "body differs"},
		{"nothing admitted", func(o *runOutcome) { *o = runOutcome{load: okLoad(0)} }, "no request succeeded"},
		{"forwarded twice", func(o *runOutcome) { o.forwarded = 101 }, "upstream answered 101"},
		{"unclean stop", func(o *runOutcome) { o.stopErr = errors.New("exit status 1") }, "exit status 1"},
		{"request_count", func(o *runOutcome) { o.token.RequestCount = 99 }, "request_count is 99"},
		{"usage lost", func(o *runOutcome) { o.usage = exactUsage(98) }, "usage after SIGTERM"},
		{"usage tokens", func(o *runOutcome) { o.usage.TotalTokens-- }, "usage after SIGTERM"},
		{"over-admission", func(o *runOutcome) { o.limit = 99 }, "over-admission"},
		{"limit never hit", func(o *runOutcome) { o.limit, o.limitHit = 200, true }, "never reached"},
		{"limit hit exactly", func(o *runOutcome) { o.limit, o.limitHit = 100, true; o.load.Status[429] = 50 }, ""},
		{"refused early", func(o *runOutcome) { o.limit, o.limitHit = 150, true; o.load.Status[429] = 50 }, "only 100 of max_requests 150"},
		{"wrong 429", func(o *runOutcome) {
			o.limit, o.limitHit = 100, true
			o.load.Status[429], o.load.BadLimitBodies = 50, 1
		}, "not the proxy's request_limit_exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := good()
			tt.change(&o)
			failures := checkRun(o)
			switch {
			case tt.want == "" && len(failures) > 0:
				t.Errorf("unexpected failures: %q", failures)
			case tt.want != "" && (len(failures) != 1 || !strings.Contains(failures[0], tt.want)):
				t.Errorf("failures %q, want one containing %q", failures, tt.want)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	t.Parallel()
	// The command name may hold spaces and parentheses.
	stat := "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 12345 1000000 500 18446744073709551615\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Errorf("got %v, want %v (250+75 ticks)", got, want)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("a short line parsed")
	}
}

func TestParseVmHWM(t *testing.T) {
	t.Parallel()
	status := "Name:\tllmproxy\nVmPeak:\t 1300000 kB\nVmHWM:\t   30720 kB\nVmRSS:\t   20000 kB\n"
	got, err := parseVmHWM(strings.NewReader(status))
	if err != nil || got != 30<<20 {
		t.Errorf("got %d, %v; want %d", got, err, 30<<20)
	}
	if _, err := parseVmHWM(strings.NewReader("Name:\tx\n")); err == nil {
		t.Error("no VmHWM line parsed")
	}
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--modes", "xml"},
		{"--concurrency", "0"},
		{"--concurrency", "many"},
		{"--backends", "mysql"},
		{"--duration", "0s"},
		{"extra"},
	} {
		if code := run(t.Context(), args, io.Discard, io.Discard); code != 2 {
			t.Errorf("%q: exit code %d, want 2", args, code)
		}
	}
}

// A paced run starts no more requests than its schedule allows: Rate per
// second over the run, plus one per client for the staggered starts.
func TestPacedLoadKeepsToItsSchedule(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	spec := loadSpec{
		Client: newLoadClient(4), URL: srv.URL, Body: "{}", WantBody: "ok",
		Concurrency: 4, Rate: 200, Duration: 500 * time.Millisecond,
	}
	defer spec.Client.CloseIdleConnections()
	res := runLoad(t.Context(), spec)
	if res.TransportErrors > 0 || res.BadBodies > 0 {
		t.Fatalf("errors: %d transport, %d bad bodies (%s)", res.TransportErrors, res.BadBodies, res.FirstError)
	}
	sent := res.OK()
	if limit := int64(200*0.5) + 4; sent == 0 || sent > limit {
		t.Fatalf("%d requests sent, want 1 to %d", sent, limit)
	}
}

func TestOnThisMachine(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]bool{
		"postgres://postgres@127.0.0.1:5432/postgres":   true,
		"postgres://u@localhost/db":                     true,
		"postgresql://u@[::1]:5433/db":                  true,
		"postgres:///db?host=/var/run/postgresql":       true,
		"postgres://u@db.example.com/db":                false,
		"postgres://u@10.0.0.5/db":                      false,
		"postgres://u@127.0.0.1/db?host=db.example.com": false,
		"::not a url": false,
	} {
		if got := onThisMachine(url); got != want {
			t.Errorf("onThisMachine(%q) = %v, want %v", url, got, want)
		}
	}
}

// The scale mode end to end on a small database per backend: every read
// answers, and the API's totals are the events written (RunScale fails
// otherwise). Speed is not asserted.
func TestScale(t *testing.T) {
	t.Parallel()
	rows, err := RunScale(t.Context(), ScaleConfig{
		Rows: []int64{3000}, Backends: []string{"sqlite", "postgres"}, Calls: 1,
		PostgresURL: pgtest.ServerURL(t), Binary: proxyBinary(t), Progress: t.Output(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.Backend+" "+r.Read)
		if r.Rows != 3000 || r.Median <= 0 {
			t.Errorf("row %+v", r)
		}
	}
	var want []string
	for _, b := range []string{"sqlite", "postgres"} {
		for _, read := range []string{"GET /manage/usage", "GET /manage/usage?project_id= (busiest)", "GET /manage/usage?token_id= (busiest)", "/admin/usage?days=90"} {
			want = append(want, b+" "+read)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("reads:\n got %q\nwant %q", got, want)
	}
}

func TestScaleBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--rows", "0"}, {"--rows", "x"}, {"--backends", "mysql"}, {"--calls", "0"}, {"extra"}} {
		var stderr strings.Builder
		if code := runScale(t.Context(), args, io.Discard, &stderr); code != 2 {
			t.Errorf("scale %q: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		} else if stderr.Len() == 0 {
			t.Errorf("scale %q: no message", args)
		}
	}
}
