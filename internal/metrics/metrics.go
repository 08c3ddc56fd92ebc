// Package metrics holds llmproxy's Prometheus collectors, on a registry of
// its own so tests and several servers in one process do not collide.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/llmproxy/llmproxy/service"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the collectors one server updates. A nil *Metrics is a valid
// one that records nothing, so a part built without metrics (a test, a
// tool) needs no checks of its own.
type Metrics struct {
	Registry *prometheus.Registry

	requests        *prometheus.CounterVec   // route, method, code
	requestDuration *prometheus.HistogramVec // route
	upstreamLatency *prometheus.HistogramVec // code
	overhead        prometheus.Histogram     // forwarded /v1 requests
	admissions      *prometheus.CounterVec   // result
}

// New registers the collectors, plus Go runtime and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmproxy_http_requests_total",
			Help: "HTTP requests served, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "llmproxy_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route pattern (streams: until the last byte).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
		}, []string{"route"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "llmproxy_upstream_response_seconds",
			Help:    "Time from sending a request upstream to its response headers, by upstream status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
		}, []string{"code"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "llmproxy_proxy_overhead_seconds",
			Help: "Time a forwarded /v1 request spent in llmproxy itself (authentication, admission, " +
				"forwarding, usage capture) until its answer was complete, not counting waits for the upstream or the client.",
			// Fine enough to read a p99 of tens of microseconds to tens of milliseconds.
			Buckets: prometheus.ExponentialBuckets(0.00002, 1.5, 20),
		}),
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmproxy_admissions_total",
			Help: "Proxy admission decisions, by result (admitted or the refusal code).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.requests, m.requestDuration, m.upstreamLatency, m.overhead, m.admissions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format (nil: an empty one).
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{})
	}
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// ObserveRequest records one served request.
func (m *Metrics) ObserveRequest(route, method string, code int, elapsed time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	m.requestDuration.WithLabelValues(route).Observe(elapsed.Seconds())
}

// ObserveUpstream records the upstream's time to response headers.
func (m *Metrics) ObserveUpstream(code int, elapsed time.Duration) {
	if m == nil {
		return
	}
	m.upstreamLatency.WithLabelValues(strconv.Itoa(code)).Observe(elapsed.Seconds())
}

// ObserveOverhead records a forwarded request's time in llmproxy itself.
func (m *Metrics) ObserveOverhead(elapsed time.Duration) {
	if m == nil {
		return
	}
	m.overhead.Observe(elapsed.Seconds())
}

// ObserveAdmission counts an admission decision ("admitted" or a refusal code).
func (m *Metrics) ObserveAdmission(result string) {
	if m == nil {
		return
	}
	m.admissions.WithLabelValues(result).Inc()
}

// GaugeFunc registers a gauge read at scrape time (queue depth, pool stats).
func (m *Metrics) GaugeFunc(name, help string, read func() float64) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, read))
}

// Middleware records every request under the route pattern that served it
// (r.Pattern from http.ServeMux), so label cardinality stays bounded.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	if m == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.ObserveRequest(route, r.Method, sw.code, time.Since(start))
	})
}

type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and deadlines (streaming).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// DatabasePool registers the store's connection pool figures, read at scrape time.
func (m *Metrics) DatabasePool(stats func() service.PoolStats) {
	if m == nil {
		return
	}
	gauge := func(name, help string, read func(service.PoolStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return read(stats()) })
	}
	counter := func(name, help string, read func(service.PoolStats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return read(stats()) })
	}
	m.Registry.MustRegister(
		gauge("llmproxy_db_connections_max", "Database connections allowed.", func(s service.PoolStats) float64 { return float64(s.MaxOpen) }),
		gauge("llmproxy_db_connections_open", "Database connections open.", func(s service.PoolStats) float64 { return float64(s.Open) }),
		gauge("llmproxy_db_connections_in_use", "Database connections in use.", func(s service.PoolStats) float64 { return float64(s.InUse) }),
		gauge("llmproxy_db_connections_idle", "Database connections idle.", func(s service.PoolStats) float64 { return float64(s.Idle) }),
		counter("llmproxy_db_connection_waits_total", "Connection acquisitions that had to wait.", func(s service.PoolStats) float64 { return float64(s.WaitCount) }),
		counter("llmproxy_db_connection_wait_seconds_total", "Time spent waiting for a connection.", func(s service.PoolStats) float64 { return s.WaitDuration.Seconds() }),
	)
}
