package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

const (
	chatPath = "/v1/chat/completions"
	// unhitLimit is the max_requests of the runs that measure a limited
	// token's cost: far more than any run can send.
	unhitLimit = 1_000_000_000_000
)

// Token kinds of the proxied runs.
const backendForwarder = "forwarder"

const (
	tokensUnlimited = "unlimited"
	tokensLimited   = "max_requests"
	tokensLimitHit  = "limit_hit"
)

// Config is one harness run.
type Config struct {
	Concurrency []int         // client goroutines, one run each
	Duration    time.Duration // measured time of each run (and of its direct slices)
	Warmup      time.Duration // before each run; its requests are checked but not measured
	Rate        float64       // requests/s offered by the clients together; 0: a closed loop
	Modes       []string      // "json", "sse"
	Backends    []string      // "sqlite", "postgres", "forwarder"
	PostgresURL string        // server on which a fresh database is created and dropped
	Binary      string        // the llmproxy binary; "" builds it
	Progress    io.Writer     // one line per run; nil discards
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Concurrency) == 0 {
		errs = append(errs, errors.New("--concurrency: want at least one value"))
	}
	for _, n := range c.Concurrency {
		if n <= 0 {
			errs = append(errs, fmt.Errorf("--concurrency: %d is not positive", n))
		}
	}
	if c.Duration <= 0 {
		errs = append(errs, errors.New("--duration: want a positive duration"))
	}
	if c.Warmup < 0 {
		errs = append(errs, errors.New("--warmup: want zero or more"))
	}
	if c.Rate < 0 {
		errs = append(errs, errors.New("--rate: want zero (a closed loop) or a positive rate"))
	}
	if len(c.Modes) == 0 {
		errs = append(errs, errors.New("--modes: want json, sse or both"))
	}
	for _, m := range c.Modes {
		if m != "json" && m != "sse" {
			errs = append(errs, fmt.Errorf("--modes: unknown mode %q (want json or sse)", m))
		}
	}
	for _, b := range c.Backends {
		if b != "sqlite" && b != "postgres" && b != backendForwarder {
			errs = append(errs, fmt.Errorf("--backends: unknown backend %q (want sqlite, postgres or forwarder)", b))
		}
	}
	return errors.Join(errs...)
}

// sliceLength is how long each side runs before the other takes over when
// a proxied run alternates with direct runs (see measurePaired).
const sliceLength = 500 * time.Millisecond

// Report is what a harness run measured and checked.
type Report struct {
	Machine    string   `json:"machine"`
	GoVersion  string   `json:"go_version"`
	GOMAXPROCS int      `json:"gomaxprocs"`
	Started    string   `json:"started"`
	Duration   string   `json:"duration"`
	Warmup     string   `json:"warmup"`
	Rate       float64  `json:"rate,omitempty"` // requests/s offered; absent for a closed loop
	Rows       []*Row   `json:"rows"`
	Skipped    []string `json:"skipped"`
}

// Row is one scenario. A proxied row is compared with the direct runs
// interleaved with it (DirectRPS, the added latencies, the ratio); nil
// means not applicable or not readable.
type Row struct {
	Scenario    string `json:"scenario"`
	Backend     string `json:"backend"` // direct, sqlite, postgres
	Mode        string `json:"mode"`
	Tokens      string `json:"tokens,omitempty"`
	Concurrency int    `json:"concurrency"`

	Requests      int64    `json:"requests"` // completed inside the measured windows
	RPS           float64  `json:"rps"`
	P50MS         float64  `json:"p50_ms"`
	P99MS         float64  `json:"p99_ms"`
	DirectRPS     *float64 `json:"direct_rps,omitempty"`
	AddedP50MS    *float64 `json:"added_p50_ms,omitempty"`
	AddedP99MS    *float64 `json:"added_p99_ms,omitempty"`
	RatioToDirect *float64 `json:"ratio_to_direct,omitempty"`
	// The proxy's own time per request over the measured windows, apart
	// from waiting for the upstream and the client (llmproxy's
	// llmproxy_proxy_overhead_seconds, read from /metrics; estimated
	// within its bucket).
	OwnP50MS *float64 `json:"own_p50_ms,omitempty"`
	OwnP99MS *float64 `json:"own_p99_ms,omitempty"`
	// CPU in cores (CPU seconds per second) over the measured windows: the
	// proxy process, and the harness itself (load generator and fake upstream).
	ProxyCPUCores   *float64 `json:"proxy_cpu_cores,omitempty"`
	HarnessCPUCores *float64 `json:"harness_cpu_cores,omitempty"`
	// The PostgreSQL server's processes, when it runs on this machine
	// (SQLite runs inside the proxy, so its CPU is the proxy's).
	DatabaseCPUCores *float64 `json:"database_cpu_cores,omitempty"`
	ProxyMaxRSSMB    *float64 `json:"proxy_max_rss_mb,omitempty"`

	// Whole run, warm-up included.
	Admitted int64         `json:"admitted"` // 200s
	Statuses map[int]int64 `json:"statuses"`
	Limit    int64         `json:"max_requests,omitempty"`
	Failures []string      `json:"failures"`
}

// Failures lists every failed check, prefixed by its scenario.
func (r *Report) Failures() []string {
	var out []string
	for _, row := range r.Rows {
		for _, f := range row.Failures {
			out = append(out, row.Scenario+": "+f)
		}
	}
	return out
}

type harness struct {
	cfg      Config
	report   *Report
	upstream *upstream
	binary   string
	progress io.Writer
	direct   map[string]*directRuns // by directKey
}

// directRuns gathers every direct measurement of one mode and concurrency.
type directRuns struct {
	results []*loadResult
	cpu     cpuWindow
}

// Run measures llmproxy on each backend against the fake upstream, each
// proxied run interleaved with direct runs, and checks every run. The
// error is for set-up failures; failed checks are in the report's rows.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	h := &harness{cfg: cfg, progress: cfg.Progress, binary: cfg.Binary, direct: map[string]*directRuns{}}
	if h.progress == nil {
		h.progress = io.Discard
	}
	h.report = &Report{
		Machine:    machineDescription(),
		GoVersion:  runtime.Version(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Started:    time.Now().UTC().Format(time.RFC3339),
		Duration:   cfg.Duration.String(),
		Warmup:     cfg.Warmup.String(),
		Rate:       cfg.Rate,
		Rows:       []*Row{},
		Skipped:    []string{},
	}

	tmp, err := os.MkdirTemp("", "llmproxy-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if h.binary == "" && slices.ContainsFunc(cfg.Backends, func(b string) bool { return b != backendForwarder }) {
		fmt.Fprintln(h.progress, "building llmproxy …")
		if h.binary, err = buildProxy(ctx, tmp); err != nil {
			return nil, err
		}
	}

	if h.upstream, err = startUpstream(); err != nil {
		return nil, fmt.Errorf("fake upstream: %w", err)
	}
	defer h.upstream.Close()

	for _, backend := range cfg.Backends {
		var err error
		if backend == backendForwarder {
			err = h.measureForwarder(ctx)
		} else {
			err = h.runBackend(ctx, backend, tmp)
		}
		if err != nil {
			h.addDirectRows()
			return h.report, fmt.Errorf("%s: %w", backend, err)
		}
	}
	// Without any proxied run (none asked for, or all skipped), the direct
	// figures are measured on their own.
	for _, mode := range cfg.Modes {
		for _, c := range cfg.Concurrency {
			if h.direct[directKey(mode, c)] == nil && ctx.Err() == nil {
				h.measurePaired(ctx, mode, c, nil, nil, "", nil)
			}
		}
	}
	h.addDirectRows()
	return h.report, ctx.Err()
}

func modeRequest(mode string) (body, want string) {
	if mode == "sse" {
		return streamRequestBody, streamResponseBody
	}
	return chatRequestBody, chatResponseBody
}

func directKey(mode string, concurrency int) string { return fmt.Sprintf("%s/%d", mode, concurrency) }

// measurePaired measures the proxy (spec; nil for none) and the upstream
// directly, alternating in slices of sliceLength after a warm-up of each,
// so that both sides see the same share of whatever else the machine is
// doing. The direct results are also kept for the direct rows. With own
// set, it reads llmproxy's overhead histogram there before and after the
// measured slices.
func (h *harness) measurePaired(ctx context.Context, mode string, concurrency int, spec *loadSpec, cpu *cpuWindow, pid string, own *ownTime) (proxied, direct *loadResult) {
	body, want := modeRequest(mode)
	directSpec := loadSpec{
		Client: newLoadClient(concurrency), URL: h.upstream.URL + chatPath, Body: body, WantBody: want,
		Concurrency: concurrency, Rate: h.cfg.Rate,
	}
	defer directSpec.Client.CloseIdleConnections()
	runs := h.direct[directKey(mode, concurrency)]
	if runs == nil {
		runs = &directRuns{}
		h.direct[directKey(mode, concurrency)] = runs
	}

	warmup := func(s loadSpec) *loadResult {
		s.Warmup, s.Duration = h.cfg.Warmup, 0
		return runLoad(ctx, s)
	}
	measure := func(s loadSpec, d time.Duration, cpu *cpuWindow, pid string) *loadResult {
		s.Duration = d
		s.WindowStart = func() { cpu.begin(pid) }
		s.WindowEnd = func() { cpu.end(pid) }
		return runLoad(ctx, s)
	}
	n := max(1, int((h.cfg.Duration+sliceLength/2)/sliceLength))
	slice := h.cfg.Duration / time.Duration(n)
	directParts := []*loadResult{warmup(directSpec)}
	var proxyParts []*loadResult
	if spec != nil {
		proxyParts = append(proxyParts, warmup(*spec))
	}
	own.begin(ctx)
	for range n {
		directParts = append(directParts, measure(directSpec, slice, &runs.cpu, ""))
		if spec != nil {
			proxyParts = append(proxyParts, measure(*spec, slice, cpu, pid))
		}
	}
	own.end(ctx)
	direct = combine(directParts...)
	runs.results = append(runs.results, direct)
	if spec == nil {
		return nil, direct
	}
	return combine(proxyParts...), direct
}

// addDirectRows puts first one row per mode and concurrency with all the
// direct measurements taken for it.
func (h *harness) addDirectRows() {
	var rows []*Row
	for _, mode := range h.cfg.Modes {
		for _, c := range h.cfg.Concurrency {
			runs := h.direct[directKey(mode, c)]
			if runs == nil {
				continue
			}
			res := combine(runs.results...)
			row := &Row{Scenario: fmt.Sprintf("direct %s c%d", mode, c), Backend: "direct", Mode: mode, Concurrency: c}
			fill(row, res, &runs.cpu, "", nil)
			// The upstream's count is shared with the proxied slices, so
			// forwarding is checked on the proxied rows only.
			row.Failures = checkRun(runOutcome{load: res, forwarded: res.OK()})
			h.printRow(row)
			rows = append(rows, row)
		}
	}
	h.report.Rows = append(rows, h.report.Rows...)
}

// measureForwarder measures the reference forwarder (see forwarder.go) like
// an unlimited token's runs, and checks that it forwarded every answer.
func (h *harness) measureForwarder(ctx context.Context) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	env := append(os.Environ(), "LISTEN_ADDR=127.0.0.1:0", "UPSTREAM_URL="+h.upstream.URL)
	for _, mode := range h.cfg.Modes {
		for _, c := range h.cfg.Concurrency {
			row := &Row{Scenario: fmt.Sprintf("%s %s c%d", backendForwarder, mode, c), Backend: backendForwarder, Mode: mode, Concurrency: c}
			p, err := startProxy(ctx, self, env, forwarderCommand)
			if err != nil {
				return err
			}
			body, want := modeRequest(mode)
			spec := loadSpec{
				Client: newLoadClient(c), URL: p.URL + chatPath, Body: body, WantBody: want,
				Concurrency: c, Rate: h.cfg.Rate,
			}
			var cpu cpuWindow
			forwardedBefore := h.upstream.count.Load()
			res, direct := h.measurePaired(ctx, mode, c, &spec, &cpu, p.PID, nil)
			spec.Client.CloseIdleConnections()
			fill(row, res, &cpu, p.PID, direct)
			row.Failures = checkRun(runOutcome{
				load: res, forwarded: h.upstream.count.Load() - forwardedBefore - direct.OK(), stopErr: p.stop(),
			})
			h.printRow(row)
			h.report.Rows = append(h.report.Rows, row)
		}
	}
	return nil
}

// backendState is what the runs on one backend share.
type backendState struct {
	name      string
	localDB   bool // a PostgreSQL server on this machine, whose CPU is measured
	env       []string
	projectID string
	mgmtToken string
}

func (h *harness) runBackend(ctx context.Context, name, tmp string) error {
	mgmtToken := "bench-" + randomKey(24)
	settings := map[string]string{
		"LISTEN_ADDR":      "127.0.0.1:0",
		"UPSTREAM_URL":     h.upstream.URL,
		"MANAGEMENT_TOKEN": mgmtToken,
		"ENCRYPTION_KEY":   randomKey(32),
	}
	switch name {
	case "sqlite":
		settings["DB_DRIVER"] = "sqlite"
		settings["DATABASE_PATH"] = filepath.Join(tmp, "sqlite", "llmproxy.db")
	case "postgres":
		dbURL, drop, err := createPostgresDatabase(ctx, h.cfg.PostgresURL)
		if errors.Is(err, errPostgresUnreachable) {
			line := fmt.Sprintf("postgres: skipped, the server is unreachable (%v)", err)
			fmt.Fprintln(h.progress, line)
			h.report.Skipped = append(h.report.Skipped, line)
			return nil
		}
		if err != nil {
			return err
		}
		defer func() {
			if err := drop(context.WithoutCancel(ctx)); err != nil {
				fmt.Fprintf(h.progress, "postgres: dropping the bench database: %v\n", err)
			}
		}()
		settings["DB_DRIVER"] = "postgres"
		settings["DATABASE_URL"] = dbURL
	}
	be := &backendState{
		name: name, env: proxyEnv(settings), mgmtToken: mgmtToken,
		localDB: name == "postgres" && onThisMachine(h.cfg.PostgresURL),
	}

	limitedRate := map[string]float64{} // admitted per second of load, by mode/concurrency
	for _, mode := range h.cfg.Modes {
		for _, c := range h.cfg.Concurrency {
			if _, err := h.proxyRun(ctx, be, mode, c, tokensUnlimited, 0); err != nil {
				return err
			}
			row, err := h.proxyRun(ctx, be, mode, c, tokensLimited, unhitLimit)
			if err != nil {
				return err
			}
			limitedRate[directKey(mode, c)] = float64(row.Admitted) / (h.cfg.Warmup + h.cfg.Duration).Seconds()
		}
	}
	// The exactness run: the most concurrent clients race for a limit set
	// to about half of what the previous run admitted, so it runs out
	// mid-run and most requests after that are refused.
	mode, c := h.cfg.Modes[0], slices.Max(h.cfg.Concurrency)
	limit := max(int64(c), int64(limitedRate[directKey(mode, c)]*(h.cfg.Warmup+h.cfg.Duration).Seconds()/2))
	_, err := h.proxyRun(ctx, be, mode, c, tokensLimitHit, limit)
	return err
}

// proxyRun measures one scenario through a fresh proxy process, stops it
// with SIGTERM, and checks the counts as a restarted proxy reports them,
// which proves that a graceful stop loses no usage record.
func (h *harness) proxyRun(ctx context.Context, be *backendState, mode string, concurrency int, tokens string, limit int64) (*Row, error) {
	row := &Row{
		Scenario: fmt.Sprintf("%s %s c%d %s", be.name, mode, concurrency, tokens),
		Backend:  be.name, Mode: mode, Tokens: tokens, Concurrency: concurrency, Limit: limit,
	}
	if tokens == tokensLimited {
		row.Limit = 0 // the sentinel limit is not worth showing
	}
	p, err := startProxy(ctx, h.binary, be.env)
	if err != nil {
		return nil, err
	}
	mgmt := newManageClient(p.URL, be.mgmtToken)
	if be.projectID == "" {
		if be.projectID, err = mgmt.createProject(ctx); err != nil {
			p.kill()
			return nil, err
		}
	}
	token, err := mgmt.createToken(ctx, be.projectID, limit)
	if err != nil {
		p.kill()
		return nil, err
	}

	body, want := modeRequest(mode)
	spec := loadSpec{
		Client: newLoadClient(concurrency), URL: p.URL + chatPath, Body: body, Secret: token.Token, WantBody: want,
		Concurrency: concurrency, Rate: h.cfg.Rate,
	}
	var (
		cpu             = cpuWindow{database: be.localDB}
		own             = &ownTime{base: p.URL, client: mgmt.client}
		res, direct     *loadResult
		forwardedBefore = h.upstream.count.Load()
	)
	if tokens == tokensLimitHit {
		// Its figures mix admitted and refused requests, so it is not
		// compared with direct runs; it runs until the limit is used up.
		spec.Warmup, spec.Duration = h.cfg.Warmup, h.cfg.Duration
		spec.UntilLimited = true
		spec.Rate = 0 // as fast as it goes, to race for the last requests
		spec.MaxOverrun = 2*(h.cfg.Warmup+h.cfg.Duration) + 10*time.Second
		spec.WindowStart = func() { cpu.begin(p.PID) }
		spec.WindowEnd = func() { cpu.end(p.PID) }
		res = runLoad(ctx, spec)
	} else {
		res, direct = h.measurePaired(ctx, mode, concurrency, &spec, &cpu, p.PID, own)
	}
	spec.Client.CloseIdleConnections()
	forwarded := h.upstream.count.Load() - forwardedBefore
	if direct != nil {
		forwarded -= direct.OK()
	}
	fill(row, res, &cpu, p.PID, direct)
	if direct != nil {
		if err := own.fill(row); err != nil {
			p.kill()
			return nil, err
		}
	}
	stopErr := p.stop()

	// A second process reads what the first one left in the database.
	q, err := startProxy(ctx, h.binary, be.env)
	if err != nil {
		return nil, fmt.Errorf("restarting the proxy to read the counts: %w", err)
	}
	mgmt = newManageClient(q.URL, be.mgmtToken)
	after, tokenErr := mgmt.token(ctx, token.ID)
	usage, usageErr := mgmt.usage(ctx, token.ID)
	if err := q.stop(); err != nil {
		return nil, fmt.Errorf("the restarted proxy: %w", err)
	}
	if err := errors.Join(tokenErr, usageErr); err != nil {
		return nil, err
	}

	row.Failures = checkRun(runOutcome{
		load: res, forwarded: forwarded, proxied: true, limit: limit, limitHit: tokens == tokensLimitHit,
		token: after, usage: usage, stopErr: stopErr,
	})
	h.printRow(row)
	h.report.Rows = append(h.report.Rows, row)
	return row, nil
}

// fill sets a row's measurements from a load run and, for a proxied run
// (pid set), compares it with its direct runs.
func fill(row *Row, res *loadResult, cpu *cpuWindow, pid string, direct *loadResult) {
	row.Requests = int64(len(res.Latencies))
	row.RPS = res.RPS()
	row.P50MS = ms(res.Percentile(0.50))
	row.P99MS = ms(res.Percentile(0.99))
	row.Admitted = res.OK()
	row.Statuses = res.Status
	row.HarnessCPUCores = cpu.cores("")
	if pid == "" {
		return
	}
	row.ProxyCPUCores = cpu.cores(pid)
	row.DatabaseCPUCores = cpu.databaseCores()
	if rss, ok := peakRSS(pid); ok {
		row.ProxyMaxRSSMB = ptr(float64(rss) / (1 << 20))
	}
	if direct != nil && direct.RPS() > 0 {
		row.DirectRPS = ptr(direct.RPS())
		row.RatioToDirect = ptr(row.RPS / direct.RPS())
		row.AddedP50MS = ptr(row.P50MS - ms(direct.Percentile(0.50)))
		row.AddedP99MS = ptr(row.P99MS - ms(direct.Percentile(0.99)))
	}
}

func (h *harness) printRow(row *Row) {
	fmt.Fprintf(h.progress, "%-36s %7.0f rps  p50 %7.2f ms  p99 %7.2f ms", row.Scenario, row.RPS, row.P50MS, row.P99MS)
	if row.RatioToDirect != nil {
		fmt.Fprintf(h.progress, "  %.2f× direct (%.0f rps)", *row.RatioToDirect, *row.DirectRPS)
	}
	if row.OwnP99MS != nil {
		fmt.Fprintf(h.progress, "  own p99 %.2f ms", *row.OwnP99MS)
	}
	if len(row.Failures) > 0 {
		fmt.Fprintf(h.progress, "  FAILED: %s", strings.Join(row.Failures, "; "))
	}
	fmt.Fprintln(h.progress)
}

// cpuWindow adds up the CPU time used inside measured windows, by the
// proxy (by pid), by the harness (""), and with database set by the local
// PostgreSQL server's processes.
type cpuWindow struct {
	database                bool
	t0                      time.Time
	proxy0, self0           time.Duration
	db0                     map[string]time.Duration
	wall, proxy, self, db   time.Duration
	proxyFailed, selfFailed bool // /proc could not be read
	dbFailed                bool
}

func (w *cpuWindow) begin(pid string) {
	w.t0 = time.Now()
	var ok bool
	if w.self0, ok = cpuTime("self"); !ok {
		w.selfFailed = true
	}
	if pid != "" {
		if w.proxy0, ok = cpuTime(pid); !ok {
			w.proxyFailed = true
		}
	}
	if w.database {
		if w.db0, ok = postgresCPU(); !ok {
			w.dbFailed = true
		}
	}
}

func (w *cpuWindow) end(pid string) {
	w.wall += time.Since(w.t0)
	if self, ok := cpuTime("self"); ok {
		w.self += self - w.self0
	} else {
		w.selfFailed = true
	}
	if pid != "" {
		if proxy, ok := cpuTime(pid); ok {
			w.proxy += proxy - w.proxy0
		} else {
			w.proxyFailed = true
		}
	}
	if w.database {
		now, ok := postgresCPU()
		if !ok || len(now) == 0 {
			w.dbFailed = true // not on this machine
		}
		// A process started inside the window (a new connection) used
		// all its time there; one that ended inside it is not counted.
		for pid, d := range now {
			w.db += d - w.db0[pid]
		}
	}
}

// cores is the CPU time used per second of the windows; nil when /proc
// could not be read.
func (w *cpuWindow) cores(pid string) *float64 {
	switch {
	case w.wall <= 0:
		return nil
	case pid == "" && !w.selfFailed:
		return ptr(w.self.Seconds() / w.wall.Seconds())
	case pid != "" && !w.proxyFailed:
		return ptr(w.proxy.Seconds() / w.wall.Seconds())
	}
	return nil
}

// databaseCores is cores for the PostgreSQL server; nil when it was not
// measured.
func (w *cpuWindow) databaseCores() *float64 {
	if !w.database || w.dbFailed || w.wall <= 0 {
		return nil
	}
	return ptr(w.db.Seconds() / w.wall.Seconds())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ptr[T any](v T) *T { return &v }

// runOutcome is everything a run's checks look at.
type runOutcome struct {
	load      *loadResult
	forwarded int64 // requests the fake upstream answered during the run
	proxied   bool
	limit     int64 // the token's max_requests; 0 unlimited
	limitHit  bool  // the run is meant to use the limit up
	token     *tokenView
	usage     *usageView
	stopErr   error // from the SIGTERM of the measured proxy
}

// checkRun returns the run's failed checks: every answer a 200 (or the
// proxy's 429 once a limit is used up) with the upstream's exact body, no
// request forwarded that the client did not get back, no over-admission,
// and request_count and usage records equal to the admitted requests as a
// restarted proxy sees them.
func checkRun(o runOutcome) []string {
	failures := []string{}
	fail := func(format string, args ...any) { failures = append(failures, fmt.Sprintf(format, args...)) }
	res := o.load
	admitted := res.OK()

	if res.TransportErrors > 0 {
		fail("%d requests failed without an answer (first: %s)", res.TransportErrors, res.FirstError)
	}
	for _, code := range slices.Sorted(maps.Keys(res.Status)) {
		if code == http.StatusOK || (code == http.StatusTooManyRequests && o.limitHit) {
			continue
		}
		fail("%d answers with status %d (first: %s)", res.Status[code], code, res.OtherBody)
	}
	if res.BadBodies > 0 {
		fail("%d answers with status 200 whose body differs from the upstream's", res.BadBodies)
	}
	if res.BadLimitBodies > 0 {
		fail("%d answers with status 429 are not the proxy's request_limit_exceeded", res.BadLimitBodies)
	}
	if admitted == 0 {
		fail("no request succeeded")
	}
	if o.forwarded != admitted {
		fail("the upstream answered %d requests, the clients got %d 200s", o.forwarded, admitted)
	}
	if o.stopErr != nil {
		fail("%v", o.stopErr)
	}
	if !o.proxied {
		return failures
	}

	if o.limit > 0 && admitted > o.limit {
		fail("over-admission: %d requests admitted with max_requests %d", admitted, o.limit)
	}
	if o.limitHit {
		refused := res.Status[http.StatusTooManyRequests]
		switch {
		case refused == 0:
			fail("the limit of %d was never reached (%d admitted)", o.limit, admitted)
		case admitted < o.limit:
			fail("only %d of max_requests %d admitted, yet %d requests were refused", admitted, o.limit, refused)
		}
	}
	if o.token.RequestCount != admitted {
		fail("request_count is %d after restart, %d requests were admitted", o.token.RequestCount, admitted)
	}
	want := usageView{
		Requests: admitted, PromptTokens: admitted * usagePrompt,
		CompletionTokens: admitted * usageCompletion, TotalTokens: admitted * usageTotal,
	}
	if *o.usage != want {
		fail("usage after SIGTERM and restart is %+v, want %+v", *o.usage, want)
	}
	return failures
}
