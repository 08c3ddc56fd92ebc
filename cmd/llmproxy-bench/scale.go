package main

// The scale mode: how usage reads cost as the usage table grows. It fills
// a fresh database per backend and size with a deployment's worth of
// skewed usage, starts the real llmproxy on it and times the usage reads a
// user makes: GET /manage/usage unfiltered, for one project and for one
// token, and the dashboard's 90-day usage page. It also checks that the
// totals the API returns are the ones it wrote.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/llmproxy/llmproxy/service"
	_ "github.com/llmproxy/llmproxy/service/pgstore"     // registers postgres
	_ "github.com/llmproxy/llmproxy/service/sqlitestore" // registers sqlite
)

const scaleCommand = "scale"

// ScaleConfig is one scale run.
type ScaleConfig struct {
	Rows        []int64 // usage events per database, one database each
	Backends    []string
	PostgresURL string
	Binary      string
	Calls       int // timed calls per read, after as many untimed ones
	Progress    io.Writer
}

// The shape of the data: as the usage issue measured it.
const (
	scaleProjects = 50
	scaleTokens   = 2000
	scaleModels   = 10
	scaleDays     = 89 // inside the default retention, so nothing would be pruned meanwhile
	scaleBatch    = 5000
)

// ScaleRow is one read timed on one database.
type ScaleRow struct {
	Backend string
	Rows    int64
	FillS   float64 // seconds to write the events
	Read    string
	Median  time.Duration
	Min     time.Duration
	Max     time.Duration
}

func runScale(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("llmproxy-bench scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := ScaleConfig{Progress: stderr}
	rows := fs.String("rows", "100000,1000000", "comma-separated usage event `counts`, one fresh database each")
	backends := fs.String("backends", "sqlite,postgres", "comma-separated backends: sqlite, postgres")
	fs.IntVar(&cfg.Calls, "calls", 7, "timed `calls` per read (the median is reported), after as many untimed ones")
	fs.StringVar(&cfg.PostgresURL, "pg-url", defaultPostgresURL, "PostgreSQL `server` on which a fresh database is created and dropped")
	fs.StringVar(&cfg.Binary, "llmproxy", "", "llmproxy `binary` to run (default: go build ./cmd/llmproxy)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: llmproxy-bench scale [flags]\n\nTimes usage reads on databases of growing size and checks their totals.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "llmproxy-bench scale: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	for _, s := range splitList(*rows) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "llmproxy-bench scale: --rows: %q is not a positive count\n", s)
			return 2
		}
		cfg.Rows = append(cfg.Rows, n)
	}
	cfg.Backends = splitList(*backends)
	for _, b := range cfg.Backends {
		if b != "sqlite" && b != "postgres" {
			fmt.Fprintf(stderr, "llmproxy-bench scale: --backends: unknown backend %q (want sqlite, postgres)\n", b)
			return 2
		}
	}
	if len(cfg.Rows) == 0 || len(cfg.Backends) == 0 || cfg.Calls < 1 {
		fmt.Fprintln(stderr, "llmproxy-bench scale: --rows and --backends need at least one value, --calls at least 1")
		return 2
	}
	result, err := RunScale(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "llmproxy-bench scale: %v\n", err)
		return 1
	}
	printScale(stdout, result)
	return 0
}

// RunScale fills and measures a database per backend and size.
func RunScale(ctx context.Context, cfg ScaleConfig) ([]ScaleRow, error) {
	tmp, err := os.MkdirTemp("", "llmproxy-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	binary := cfg.Binary
	if binary == "" {
		if binary, err = buildProxy(ctx, tmp); err != nil {
			return nil, err
		}
	}
	var out []ScaleRow
	for _, backend := range cfg.Backends {
		for i, n := range cfg.Rows {
			rows, err := scaleOne(ctx, cfg, binary, backend, filepath.Join(tmp, fmt.Sprintf("%s-%d", backend, i)), n)
			if errors.Is(err, errPostgresUnreachable) {
				fmt.Fprintf(cfg.Progress, "postgres: skipped, the server is unreachable (%v)\n", err)
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s, %d rows: %w", backend, n, err)
			}
			out = append(out, rows...)
		}
	}
	return out, nil
}

func scaleOne(ctx context.Context, cfg ScaleConfig, binary, backend, dir string, n int64) ([]ScaleRow, error) {
	storeCfg := service.DefaultConfig()
	settings := map[string]string{
		"LISTEN_ADDR":          "127.0.0.1:0",
		"UPSTREAM_URL":         "http://127.0.0.1:9", // nothing is proxied
		"MANAGEMENT_TOKEN":     "bench-" + randomKey(24),
		"ENCRYPTION_KEY":       randomKey(32),
		"USAGE_RETENTION_DAYS": "0", // the reads, not the pruner
		"ACCESS_LOG":           "false",
	}
	switch backend {
	case "sqlite":
		storeCfg.SQLitePath = filepath.Join(dir, "llmproxy.db")
		settings["DB_DRIVER"], settings["DATABASE_PATH"] = "sqlite", storeCfg.SQLitePath
	case "postgres":
		dbURL, drop, err := createPostgresDatabase(ctx, cfg.PostgresURL)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err := drop(context.WithoutCancel(ctx)); err != nil {
				fmt.Fprintf(cfg.Progress, "postgres: dropping the scale database: %v\n", err)
			}
		}()
		storeCfg.Driver, storeCfg.DatabaseURL = service.DriverPostgres, dbURL
		settings["DB_DRIVER"], settings["DATABASE_URL"] = "postgres", dbURL
	}

	fmt.Fprintf(cfg.Progress, "%s: writing %d usage events\n", backend, n)
	began := time.Now()
	data, err := fillScale(ctx, storeCfg, n)
	if err != nil {
		return nil, err
	}
	fill := time.Since(began).Seconds()

	proxy, err := startProxy(ctx, binary, proxyEnv(settings))
	if err != nil {
		return nil, err
	}
	defer proxy.kill()
	client, err := dashboardClient(ctx, proxy.URL, settings["MANAGEMENT_TOKEN"])
	if err != nil {
		return nil, err
	}
	reads := []struct {
		name, path string
		want       int64 // requests the API must report; -1: an HTML page
	}{
		{"GET /manage/usage", "/manage/usage", n},
		{"GET /manage/usage?project_id= (busiest)", "/manage/usage?project_id=" + strconv.FormatInt(data.busiestProject, 10), data.projectEvents},
		{"GET /manage/usage?token_id= (busiest)", "/manage/usage?token_id=" + strconv.FormatInt(data.busiestToken, 10), data.tokenEvents},
		{"/admin/usage?days=90", "/admin/usage?days=90", -1},
	}
	var rows []ScaleRow
	for _, read := range reads {
		times := make([]time.Duration, 0, cfg.Calls)
		for call := range 2 * cfg.Calls {
			start := time.Now()
			requests, err := scaleRead(ctx, client, proxy.URL+read.path, settings["MANAGEMENT_TOKEN"], read.want >= 0)
			took := time.Since(start)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", read.name, err)
			}
			if read.want >= 0 && requests != read.want {
				return nil, fmt.Errorf("%s: requests = %d, want %d (the events written)", read.name, requests, read.want)
			}
			if call >= cfg.Calls { // the first calls settle caches and plans
				times = append(times, took)
			}
		}
		slices.Sort(times)
		rows = append(rows, ScaleRow{Backend: backend, Rows: n, FillS: fill, Read: read.name,
			Median: times[len(times)/2], Min: times[0], Max: times[len(times)-1]})
		fmt.Fprintf(cfg.Progress, "%s %d rows: %-42s median %s\n", backend, n, read.name, times[len(times)/2].Round(time.Microsecond))
	}
	if err := proxy.stop(); err != nil {
		return nil, err
	}
	return rows, nil
}

// scaleData names what the reads filter on, with the counts they must find.
type scaleData struct {
	busiestProject, busiestToken int64
	projectEvents, tokenEvents   int64
}

// fillScale writes the projects and tokens straight through the store (as
// db import does), and n usage events as serve writes them
// (UsageInsertBatch, which rolls them up), in time order over the last
// scaleDays days.
// Tokens are used with a Zipf skew (a few busy ones, a long tail), spread
// round-robin over the projects; models are skewed too; 2 % are errors.
func fillScale(ctx context.Context, cfg service.Config, n int64) (*scaleData, error) {
	store, err := service.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	now := time.Now().UTC().Truncate(time.Millisecond)
	start := now.Add(-scaleDays * 24 * time.Hour)

	projects := make([]*service.Project, scaleProjects)
	for i := range projects {
		projects[i] = &service.Project{ID: int64(i + 1), Name: fmt.Sprintf("project-%02d", i+1),
			APIKeyCiphertext: []byte{1}, APIKeyHint: "sk-...0000", IsActive: true, CreatedAt: start, UpdatedAt: start}
	}
	if err := store.ProjectInsertFullMany(ctx, projects); err != nil {
		return nil, fmt.Errorf("projects: %w", err)
	}
	tokens := make([]*service.Token, scaleTokens)
	for i := range tokens {
		hash := make([]byte, 32)
		copy(hash, fmt.Sprintf("scale-token-%d", i+1))
		tokens[i] = &service.Token{ID: int64(i + 1), ProjectID: int64(i%scaleProjects + 1), SecretHash: hash,
			TokenPrefix: "sk-scale", ExpiresAt: now.Add(24 * time.Hour), IsActive: true, CreatedAt: start, UpdatedAt: start}
	}
	if err := store.TokenInsertFullMany(ctx, tokens); err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}

	rng := rand.New(rand.NewPCG(1, 2)) // the same data every run
	tokenOf := rand.NewZipf(rng, 1.1, 1, scaleTokens-1)
	modelOf := rand.NewZipf(rng, 1.3, 1, scaleModels-1)
	perToken := make([]int64, scaleTokens)
	step := float64(now.Sub(start)) / float64(n)
	batch := make([]*service.UsageEventCreateParams, 0, scaleBatch)
	for id := int64(1); id <= n; id++ {
		token := tokens[tokenOf.Uint64()]
		perToken[token.ID-1]++
		at := start.Add(time.Duration(math.Round(float64(id-1) * step)))
		prompt, completion := int64(20+rng.IntN(2000)), int64(rng.IntN(800))
		status := int64(http.StatusOK)
		if rng.IntN(50) == 0 {
			status = []int64{http.StatusBadRequest, http.StatusTooManyRequests, http.StatusBadGateway}[rng.IntN(3)]
		}
		batch = append(batch, &service.UsageEventCreateParams{TokenID: token.ID, ProjectID: token.ProjectID,
			Method: http.MethodPost, Path: "/v1/chat/completions", Model: fmt.Sprintf("model-%d", modelOf.Uint64()),
			Status: status, PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion,
			LatencyMS: int64(50 + rng.IntN(3000)), CreatedAt: at, EventID: service.NewEventID(at)})
		if len(batch) == scaleBatch || id == n {
			if written, err := store.UsageInsertBatch(ctx, batch); err != nil || written != int64(len(batch)) {
				return nil, fmt.Errorf("usage events: %d of %d written: %v", written, len(batch), err)
			}
			batch = batch[:0]
		}
	}

	data := &scaleData{}
	perProject := make([]int64, scaleProjects)
	for i, count := range perToken {
		perProject[tokens[i].ProjectID-1] += count
	}
	busiest := func(counts []int64) (int64, int64) {
		i := slices.Index(counts, slices.Max(counts))
		return int64(i + 1), counts[i]
	}
	data.busiestToken, data.tokenEvents = busiest(perToken)
	data.busiestProject, data.projectEvents = busiest(perProject)
	return data, nil
}

// dashboardClient is an HTTP client logged in to the dashboard.
func dashboardClient(ctx context.Context, base, token string) (*http.Client, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Jar: jar, Timeout: 10 * time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/admin/login",
		strings.NewReader(url.Values{"token": {token}, "next": {"/admin/"}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("dashboard login: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return nil, fmt.Errorf("dashboard login: status %d, want 303", resp.StatusCode)
	}
	return client, nil
}

// scaleRead GETs one read; for the API it returns the requests counted.
func scaleRead(ctx context.Context, client *http.Client, target, token string, api bool) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return 0, err
	}
	if api {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d: %s", resp.StatusCode, truncate(string(body), 300))
	}
	if !api {
		return 0, nil
	}
	var usage usageView
	if err := json.Unmarshal(body, &usage); err != nil {
		return 0, err
	}
	return usage.Requests, nil
}

func printScale(w io.Writer, rows []ScaleRow) {
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "backend\tevents\tfill s\tread\tmedian ms\tmin ms\tmax ms\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%s\t%.1f\t%.1f\t%.1f\t\n", r.Backend, r.Rows, r.FillS, r.Read, ms(r.Median), ms(r.Min), ms(r.Max))
	}
	tw.Flush()
}
