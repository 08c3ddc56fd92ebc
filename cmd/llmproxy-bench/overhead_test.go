package main

import (
	"bufio"
	"math"
	"strings"
	"testing"
)

func TestHistogramQuantile(t *testing.T) {
	const before = `# HELP llmproxy_proxy_overhead_seconds whatever
# TYPE llmproxy_proxy_overhead_seconds histogram
llmproxy_proxy_overhead_seconds_bucket{le="0.001"} 10
llmproxy_proxy_overhead_seconds_bucket{le="0.002"} 10
llmproxy_proxy_overhead_seconds_bucket{le="0.004"} 10
llmproxy_proxy_overhead_seconds_bucket{le="+Inf"} 10
llmproxy_proxy_overhead_seconds_sum 0.005
llmproxy_proxy_overhead_seconds_count 10
llmproxy_http_request_duration_seconds_bucket{route="x",le="0.001"} 99
`
	// 100 more: 50 up to 1 ms, 40 in (1, 2] ms, 10 in (2, 4] ms.
	const after = `llmproxy_proxy_overhead_seconds_bucket{le="0.001"} 60
llmproxy_proxy_overhead_seconds_bucket{le="0.002"} 100
llmproxy_proxy_overhead_seconds_bucket{le="0.004"} 110
llmproxy_proxy_overhead_seconds_bucket{le="+Inf"} 110
`
	parse := func(text string) *histogram {
		h, err := parseHistogram(bufio.NewScanner(strings.NewReader(text)), overheadMetric)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	d := parse(after).since(parse(before))
	for _, c := range []struct{ q, want float64 }{
		{0.25, 0.0005}, // rank 25 of the 50 in [0, 1 ms]
		{0.50, 0.001},
		{0.70, 0.0015}, // rank 70: 20 of the 40 in (1, 2] ms
		{0.95, 0.003},  // rank 95: 5 of the 10 in (2, 4] ms
	} {
		if got, ok := d.quantile(c.q); !ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, %v; want %v", c.q, got, ok, c.want)
		}
	}
	slow := parse(strings.ReplaceAll(after, `le="+Inf"} 110`, `le="+Inf"} 200`))
	if got, ok := slow.quantile(0.99); !ok || got != 0.004 {
		t.Errorf("quantile in the +Inf bucket = %v, %v; want the highest finite bound 0.004", got, ok)
	}
	if _, ok := parse(before).since(parse(before)).quantile(0.99); ok {
		t.Error("quantile of no observations reported a value")
	}
	if _, err := parseHistogram(bufio.NewScanner(strings.NewReader("other_metric 1\n")), overheadMetric); err == nil {
		t.Error("metrics without the histogram parsed")
	}
}
