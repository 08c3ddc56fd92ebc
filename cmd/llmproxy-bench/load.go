package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// requestTimeout bounds one request, so a stuck proxy cannot hang a run.
const requestTimeout = 30 * time.Second

// loadSpec is one closed-loop run: Concurrency clients each send a request,
// read the whole answer and send the next, for Warmup and then Duration.
type loadSpec struct {
	Client      *http.Client // from newLoadClient; reused across runs to keep connections
	URL         string       // the endpoint
	Body        string
	Secret      string // bearer token; "" sends no Authorization
	WantBody    string // the exact body of every 200
	Concurrency int
	// Rate, if positive, paces the clients: together they start Rate
	// requests per second on a fixed schedule, and a latency counts from
	// the request's scheduled start, so time spent behind schedule is
	// counted too. 0 is a closed loop, each client sending as fast as
	// answers come back.
	Rate     float64
	Warmup   time.Duration
	Duration time.Duration
	// UntilLimited keeps the clients going after the end until one has
	// seen a 429, for at most MaxOverrun (bounded even if it never comes).
	UntilLimited bool
	MaxOverrun   time.Duration
	// WindowStart and WindowEnd, if set, are called when the measured
	// window opens and closes, to sample CPU time.
	WindowStart, WindowEnd func()
}

// loadResult counts every response, warm-up included (the correctness
// checks need all of them), and keeps the latencies of those that
// completed inside the measured window.
type loadResult struct {
	Window    time.Duration
	Latencies []time.Duration // sorted
	Status    map[int]int64

	TransportErrors int64
	FirstError      string
	BadBodies       int64  // 200s whose body differs from the upstream's
	BadLimitBodies  int64  // 429s that are not the proxy's request_limit_exceeded
	OtherBody       string // the body of the first answer that was neither 200 nor 429
}

// OK is how many requests got a 200.
func (r *loadResult) OK() int64 { return r.Status[http.StatusOK] }

func (r *loadResult) RPS() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Window.Seconds()
}

// Percentile is the nearest-rank q-quantile of the window's latencies.
func (r *loadResult) Percentile(q float64) time.Duration {
	n := len(r.Latencies)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(float64(n)*q)) - 1
	return r.Latencies[min(max(i, 0), n-1)]
}

// newLoadClient keeps one kept-alive connection per client goroutine and
// never goes through an environment proxy.
func newLoadClient(concurrency int) *http.Client {
	return &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        2 * concurrency,
			MaxIdleConnsPerHost: 2 * concurrency,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// runLoad runs spec and returns once every request it started has ended.
func runLoad(ctx context.Context, spec loadSpec) *loadResult {
	start := time.Now()
	windowStart := start.Add(spec.Warmup)
	windowEnd := windowStart.Add(spec.Duration)
	hardEnd := windowEnd.Add(spec.MaxOverrun)
	var limited atomic.Bool

	workers := make([]workerStats, spec.Concurrency)
	var interval time.Duration // between one client's scheduled requests
	if spec.Rate > 0 {
		interval = time.Duration(float64(spec.Concurrency) / spec.Rate * float64(time.Second))
	}
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		w.status = map[int]int64{}
		// Paced clients start staggered, so requests are evenly spread.
		next := start.Add(interval * time.Duration(i) / time.Duration(spec.Concurrency))
		wg.Go(func() {
			var buf bytes.Buffer
			for ctx.Err() == nil {
				if interval > 0 && time.Now().Before(next) {
					sleepUntil(ctx, next)
				}
				if now := time.Now(); !now.Before(windowEnd) {
					if !spec.UntilLimited || limited.Load() || !now.Before(hardEnd) {
						return
					}
				}
				sent := time.Now()
				if interval > 0 {
					sent, next = next, next.Add(interval)
				}
				status, err := w.do(ctx, spec, &buf)
				done := time.Now()
				if err != nil {
					w.transportErrors++
					if w.firstError == "" {
						w.firstError = err.Error()
					}
					continue
				}
				if status == http.StatusTooManyRequests {
					limited.Store(true)
				}
				if !done.Before(windowStart) && done.Before(windowEnd) {
					w.latencies = append(w.latencies, done.Sub(sent))
				}
			}
		})
	}

	sleepUntil(ctx, windowStart)
	if spec.WindowStart != nil {
		spec.WindowStart()
	}
	sleepUntil(ctx, windowEnd)
	if spec.WindowEnd != nil {
		spec.WindowEnd()
	}
	wg.Wait()

	parts := make([]*loadResult, len(workers))
	for i := range workers {
		w := &workers[i]
		parts[i] = &loadResult{
			Latencies: w.latencies, Status: w.status, TransportErrors: w.transportErrors, FirstError: w.firstError,
			BadBodies: w.badBodies, BadLimitBodies: w.badLimitBodies, OtherBody: w.otherBody,
		}
	}
	res := combine(parts...)
	res.Window = spec.Duration
	return res
}

// combine adds up results: windows, counts and latencies.
func combine(results ...*loadResult) *loadResult {
	res := &loadResult{Status: map[int]int64{}}
	for _, r := range results {
		res.Window += r.Window
		res.Latencies = append(res.Latencies, r.Latencies...)
		for code, n := range r.Status {
			res.Status[code] += n
		}
		res.TransportErrors += r.TransportErrors
		res.BadBodies += r.BadBodies
		res.BadLimitBodies += r.BadLimitBodies
		if res.FirstError == "" {
			res.FirstError = r.FirstError
		}
		if res.OtherBody == "" {
			res.OtherBody = r.OtherBody
		}
	}
	slices.Sort(res.Latencies)
	return res
}

type workerStats struct {
	latencies       []time.Duration
	status          map[int]int64
	transportErrors int64
	firstError      string
	badBodies       int64
	badLimitBodies  int64
	otherBody       string
}

// do sends one request, reads the whole answer into buf and checks it.
func (w *workerStats) do(ctx context.Context, spec loadSpec, buf *bytes.Buffer) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, spec.URL, strings.NewReader(spec.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if spec.Secret != "" {
		req.Header.Set("Authorization", "Bearer "+spec.Secret)
	}
	resp, err := spec.Client.Do(req)
	if err != nil {
		return 0, err
	}
	buf.Reset()
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("reading a %d answer: %w", resp.StatusCode, err)
	}
	w.status[resp.StatusCode]++
	switch resp.StatusCode {
	case http.StatusOK:
		if string(buf.Bytes()) != spec.WantBody { // compared without a copy
			w.badBodies++
		}
	case http.StatusTooManyRequests:
		if !bytes.Contains(buf.Bytes(), []byte(`"request_limit_exceeded"`)) {
			w.badLimitBodies++
		}
	default:
		if w.otherBody == "" {
			w.otherBody = fmt.Sprintf("%d %s", resp.StatusCode, truncate(buf.String(), 200))
		}
	}
	return resp.StatusCode, nil
}

func sleepUntil(ctx context.Context, t time.Time) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
