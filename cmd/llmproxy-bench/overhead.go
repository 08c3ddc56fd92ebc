package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// overheadMetric is llmproxy's histogram of the time a request spends in
// the proxy itself, apart from waiting for the upstream and the client.
// Read before and after a run, it gives the proxy's own share of the
// latency the clients see, free of what the extra hop costs on a busy
// machine.
const overheadMetric = "llmproxy_proxy_overhead_seconds"

// ownTime reads the overhead histogram of the llmproxy at base before and
// after the measured slices of a run. A nil *ownTime reads nothing.
type ownTime struct {
	base          string
	client        *http.Client
	before, after *histogram
	err           error
}

func (o *ownTime) begin(ctx context.Context) {
	if o != nil {
		o.before, o.err = readOverhead(ctx, o.client, o.base)
	}
}

func (o *ownTime) end(ctx context.Context) {
	if o != nil && o.err == nil {
		o.after, o.err = readOverhead(ctx, o.client, o.base)
	}
}

// fill sets the row's own-time percentiles from what the measured slices
// observed.
func (o *ownTime) fill(row *Row) error {
	if o.err != nil {
		return fmt.Errorf("reading %s: %w", overheadMetric, o.err)
	}
	d := o.after.since(o.before)
	if p50, ok := d.quantile(0.50); ok {
		row.OwnP50MS = ptr(p50 * 1000)
	}
	if p99, ok := d.quantile(0.99); ok {
		row.OwnP99MS = ptr(p99 * 1000)
	}
	return nil
}

// histogram is a cumulative Prometheus histogram: counts[i] observations
// were at most bounds[i] seconds; the last bound is +Inf.
type histogram struct {
	bounds []float64
	counts []float64
}

// readOverhead scrapes base/metrics for the overhead histogram.
func readOverhead(ctx context.Context, client *http.Client, base string) (*histogram, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseHistogram(bufio.NewScanner(resp.Body), overheadMetric)
}

// parseHistogram reads the buckets of the histogram name from the
// Prometheus text format.
func parseHistogram(lines *bufio.Scanner, name string) (*histogram, error) {
	prefix := name + `_bucket{le="`
	h := &histogram{}
	for lines.Scan() {
		rest, ok := strings.CutPrefix(lines.Text(), prefix)
		if !ok {
			continue
		}
		le, count, ok := strings.Cut(rest, `"} `)
		if !ok {
			return nil, fmt.Errorf("%s: unreadable bucket %q", name, lines.Text())
		}
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: bucket bound %q: %w", name, le, err)
		}
		n, err := strconv.ParseFloat(count, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: bucket count %q: %w", name, count, err)
		}
		h.bounds, h.counts = append(h.bounds, bound), append(h.counts, n)
	}
	if err := lines.Err(); err != nil {
		return nil, err
	}
	if len(h.bounds) == 0 || !math.IsInf(h.bounds[len(h.bounds)-1], 1) {
		return nil, fmt.Errorf("%s: no histogram in the metrics", name)
	}
	return h, nil
}

// since is what was observed after earlier, a snapshot of the same histogram.
func (h *histogram) since(earlier *histogram) *histogram {
	d := &histogram{bounds: h.bounds, counts: make([]float64, len(h.counts))}
	for i := range h.counts {
		d.counts[i] = h.counts[i]
		if earlier != nil && i < len(earlier.counts) {
			d.counts[i] -= earlier.counts[i]
		}
	}
	return d
}

// quantile estimates the q-quantile in seconds as Prometheus'
// histogram_quantile does: interpolating linearly inside its bucket, or the
// highest finite bound when it falls in the +Inf bucket. ok is false
// without observations.
func (h *histogram) quantile(q float64) (seconds float64, ok bool) {
	total := h.counts[len(h.counts)-1]
	if total <= 0 {
		return 0, false
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, bound := range h.bounds {
		if h.counts[i] >= rank {
			if math.IsInf(bound, 1) {
				return lower, i > 0
			}
			inBucket := h.counts[i] - below
			if inBucket <= 0 {
				return bound, true
			}
			return lower + (bound-lower)*(rank-below)/inBucket, true
		}
		lower, below = bound, h.counts[i]
	}
	return 0, false
}
