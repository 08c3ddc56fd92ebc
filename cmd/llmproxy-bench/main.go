// Command llmproxy-bench measures the overhead llmproxy adds. It starts a
// fake OpenAI upstream on loopback, loads it directly, then through the
// real llmproxy binary (a subprocess, so its CPU and memory can be read)
// on SQLite and on PostgreSQL, with unlimited and with max_requests
// tokens, at each concurrency, and prints one table. After every run it
// checks the proxy's exactness (statuses, bodies, admitted requests,
// request_count, usage records after a SIGTERM and restart) and exits
// non-zero if a check fails.
//
//	go run ./cmd/llmproxy-bench [flags]   (or: make loadtest)
//
// With the first argument scale, it times usage reads on databases of
// growing size instead (see scale.go):
//
//	go run ./cmd/llmproxy-bench scale [--rows 100000,1000000] [flags]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

const defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func main() {
	if len(os.Args) == 2 && os.Args[1] == forwarderCommand {
		os.Exit(runForwarder(os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var code int
	if len(os.Args) >= 2 && os.Args[1] == scaleCommand {
		code = runScale(ctx, os.Args[2:], os.Stdout, os.Stderr)
	} else {
		code = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	os.Exit(code)
}

// run returns the exit code: 0 when every check passed, 1 when a check or
// the run failed, 2 on bad flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("llmproxy-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := Config{Progress: stderr}
	concurrency := fs.String("concurrency", "32,128", "comma-separated client `counts`, one run each")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured `time` of each run")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured `time` before each run's window")
	fs.Float64Var(&cfg.Rate, "rate", 0, "requests/s the clients offer together, on a fixed schedule (`0`: a closed loop, as fast as answers come)")
	modes := fs.String("modes", "json", "comma-separated upstream answers: json (chat completion), sse (stream)")
	backends := fs.String("backends", "sqlite,postgres", "comma-separated backends to run the proxy on: sqlite, postgres, and forwarder (a bare forwarder in llmproxy's place, for reference)")
	fs.StringVar(&cfg.PostgresURL, "pg-url", defaultPostgresURL, "PostgreSQL `server` on which a fresh database is created and dropped")
	fs.StringVar(&cfg.Binary, "llmproxy", "", "llmproxy `binary` to run (default: go build ./cmd/llmproxy)")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: llmproxy-bench [flags]\n\nMeasures llmproxy against a fake upstream on loopback and checks its exactness.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "llmproxy-bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var err error
	if cfg.Concurrency, err = parseInts(*concurrency); err != nil {
		fmt.Fprintf(stderr, "llmproxy-bench: --concurrency: %v\n", err)
		return 2
	}
	cfg.Modes, cfg.Backends = splitList(*modes), splitList(*backends)
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "llmproxy-bench: %v\n", err)
		return 2
	}

	report, err := Run(ctx, cfg)
	if report != nil {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(report)
		} else {
			printTable(stdout, report)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "llmproxy-bench: %v\n", err)
		return 1
	}
	if len(report.Failures()) > 0 {
		return 1
	}
	return 0
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// printTable writes the report for people: one row per run, then skipped
// backends and the outcome of the checks.
func printTable(w io.Writer, r *Report) {
	fmt.Fprintf(w, "machine: %s; %s, GOMAXPROCS %d\n", r.Machine, r.GoVersion, r.GOMAXPROCS)
	fmt.Fprintf(w, "each run: %s warm-up, then %s measured, in slices alternating with direct runs (direct rps, × direct, +p50/+p99);\n", r.Warmup, r.Duration)
	load := "closed loop"
	if r.Rate > 0 {
		load = fmt.Sprintf("paced at %g requests/s offered (limit_hit runs: closed loop), latency from each request's scheduled start", r.Rate)
	}
	fmt.Fprintf(w, "%s, one kept-alive connection per client; direct rows add up all direct slices of their mode and concurrency\n\n", load)
	// Right-aligned numbers; the scenarios are padded to one width so they
	// read left-aligned, and the last column is not a cell, so it is too.
	scenarioWidth := len("scenario")
	checks := make([]string, len(r.Rows))
	for i, row := range r.Rows {
		checks[i] = "ok"
		if len(row.Failures) > 0 {
			checks[i] = "FAIL"
		}
		if row.Tokens == tokensLimitHit {
			checks[i] += fmt.Sprintf(" (%d/%d admitted, %d×429)", row.Admitted, row.Limit, row.Statuses[http.StatusTooManyRequests])
		}
		scenarioWidth = max(scenarioWidth, len(row.Scenario))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\trps\tdirect rps\t× direct\tp50 ms\tp99 ms\t+p50 ms\t+p99 ms\town p99 ms\tproxy CPU\tdb CPU\tproxy RSS MB\tharness CPU\t  check\n",
		scenarioWidth, "scenario")
	for i, row := range r.Rows {
		fmt.Fprintf(tw, "%-*s\t%.0f\t%s\t%s\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t  %s\n",
			scenarioWidth, row.Scenario, row.RPS, optional(row.DirectRPS, "%.0f"), optional(row.RatioToDirect, "%.2f"),
			row.P50MS, row.P99MS, optional(row.AddedP50MS, "%+.2f"), optional(row.AddedP99MS, "%+.2f"), optional(row.OwnP99MS, "%.2f"),
			optional(row.ProxyCPUCores, "%.2f"), optional(row.DatabaseCPUCores, "%.2f"), optional(row.ProxyMaxRSSMB, "%.1f"), optional(row.HarnessCPUCores, "%.2f"),
			checks[i])
	}
	tw.Flush()
	for _, line := range r.Skipped {
		fmt.Fprintln(w, line)
	}
	failures := r.Failures()
	if len(failures) == 0 {
		fmt.Fprintf(w, "\nchecks: all passed (%d runs)\n", len(r.Rows))
		return
	}
	fmt.Fprintf(w, "\nchecks: %d FAILED\n", len(failures))
	for _, f := range failures {
		fmt.Fprintln(w, "  "+f)
	}
}

// optional formats v, or "-" when the figure does not apply or could not be read.
func optional(v *float64, format string) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
}
