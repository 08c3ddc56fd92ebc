package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

func TestMiddlewareCountsByRoutePattern(t *testing.T) {
	t.Parallel()
	m := New()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		http.NewResponseController(w).Flush() // must reach the real writer through Unwrap
	})
	h := m.Middleware(mux)
	for _, path := range []string{"/items/1", "/items/2", "/nowhere"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	m.GaugeFunc("llmproxy_test_gauge", "test", func() float64 { return 42 })
	m.DatabasePool(func() service.PoolStats {
		return service.PoolStats{MaxOpen: 25, InUse: 3, WaitDuration: 1500 * time.Millisecond}
	})

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`llmproxy_http_requests_total{code="418",method="GET",route="GET /items/{id}"} 2`,
		`llmproxy_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`llmproxy_test_gauge 42`,
		`llmproxy_db_connections_max 25`,
		`llmproxy_db_connections_in_use 3`,
		`llmproxy_db_connection_wait_seconds_total 1.5`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics output lacks %q", want)
		}
	}
}

// Every method works on a nil *Metrics and records nothing, so no caller
// needs a check of its own. Methods are found by reflection, so a new one
// without its nil case fails here.
func TestNilMetricsRecordNothing(t *testing.T) {
	t.Parallel()
	var m *Metrics
	v := reflect.ValueOf(m)
	for i := range v.NumMethod() {
		method := v.Type().Method(i)
		args := make([]reflect.Value, method.Type.NumIn()-1)
		for j := range args {
			args[j] = reflect.Zero(method.Type.In(j + 1))
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("(*Metrics)(nil).%s panics: %v", method.Name, p)
				}
			}()
			v.Method(i).Call(args)
		}()
	}

	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	rec := httptest.NewRecorder()
	m.Middleware(next).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusTeapot {
		t.Errorf("nil Middleware: status %d, want the handler's 418", rec.Code)
	}
	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "llmproxy_") {
		t.Errorf("nil Handler: %d %q, want 200 and no llmproxy metrics", rec.Code, rec.Body)
	}
}
