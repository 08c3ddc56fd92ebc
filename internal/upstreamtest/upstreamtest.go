// Package upstreamtest is an in-process fake of the OpenAI API for tests:
// JSON chat completions that echo the model and report usage, SSE streams
// whose last event carries usage, slow and failing modes, and a record of
// every request it received.
//
// Every request is answered the same way whatever its path. A JSON body
// with "stream": true gets an SSE stream. Two request headers, which a
// proxy passes through, change the answer per request:
//
//	X-Upstreamtest-Status: 503    fail with this status and an OpenAI error body
//	X-Upstreamtest-Delay: 200ms   wait this long before the response headers
//	X-Upstreamtest-Hop: 1         add hop-by-hop headers a proxy must drop
package upstreamtest

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Per-request mode headers (see the package comment).
const (
	HeaderStatus = "X-Upstreamtest-Status"
	HeaderDelay  = "X-Upstreamtest-Delay"
	HeaderHop    = "X-Upstreamtest-Hop"
)

// HopHeaders are the hop-by-hop headers sent in answer to HeaderHop: the
// connection-specific one named by Connection, and Keep-Alive.
var HopHeaders = []string{"X-Upstreamtest-Hop-By-Hop", "Keep-Alive"}

// DefaultModel is the model reported when the request names none.
const DefaultModel = "fake-model"

// Usage is the token count the fake reports.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// Options configure a Server; zero values take the defaults.
type Options struct {
	Usage      Usage         // default 11 prompt + 7 completion tokens
	Chunks     int           // content events in a stream before the usage event; default 3
	ChunkDelay time.Duration // pause between stream events
	Delay      time.Duration // pause before the response headers (slow mode)
	FailStatus int           // non-zero: every request fails with this status
	// HoldFinal, when set, makes a stream wait until it is closed (or the
	// request ends) before sending the usage event and [DONE], so a test can
	// see earlier events arrive before the upstream has finished.
	HoldFinal <-chan struct{}
	// CloseAfter, when positive, closes each connection right after its
	// CloseAfter-th JSON answer, without saying so (no Connection: close),
	// as some servers do after a fixed number of requests.
	CloseAfter int
	// IdleTimeout, when positive, closes connections left idle this long
	// (net/http's server does it without notice, as uvicorn does after 5 s).
	IdleTimeout time.Duration
}

// Request is what the fake received.
type Request struct {
	Method   string
	Path     string
	RawQuery string
	Header   http.Header
	Body     []byte
}

// Server is a running fake upstream on a loopback address.
type Server struct {
	URL string // base URL, e.g. http://127.0.0.1:1234

	opts Options
	srv  *httptest.Server

	count        atomic.Int64
	conns        atomic.Int64
	cancelCount  atomic.Int64
	canceled     chan struct{}
	canceledOnce sync.Once

	mu       sync.Mutex
	requests []Request
}

// New starts a fake upstream that is closed when the test ends.
func New(t testing.TB, opts Options) *Server {
	if opts.Usage == (Usage{}) {
		opts.Usage = Usage{PromptTokens: 11, CompletionTokens: 7}
	}
	if opts.Usage.TotalTokens == 0 {
		opts.Usage.TotalTokens = opts.Usage.PromptTokens + opts.Usage.CompletionTokens
	}
	if opts.Chunks <= 0 {
		opts.Chunks = 3
	}
	s := &Server{opts: opts, canceled: make(chan struct{})}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Config.IdleTimeout = opts.IdleTimeout
	s.srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, answersKey{}, new(int))
	}
	s.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.srv.Start()
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// DropConnections closes every connection to the server, as an upstream
// does when it restarts or times out idle keep-alive connections.
func (s *Server) DropConnections() { s.srv.CloseClientConnections() }

// Connections is how many connections have been opened to the server.
func (s *Server) Connections() int64 { return s.conns.Load() }

// Count is how many requests have arrived.
func (s *Server) Count() int64 { return s.count.Load() }

// Requests returns a copy of every request received, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Canceled is closed the first time a request ends (the client went away)
// before its response was complete.
func (s *Server) Canceled() <-chan struct{} { return s.canceled }

// CanceledCount is how many requests ended before their response was complete.
func (s *Server) CanceledCount() int64 { return s.cancelCount.Load() }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.count.Add(1)
	s.mu.Lock()
	s.requests = append(s.requests, Request{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), Body: body,
	})
	s.mu.Unlock()

	delay := s.opts.Delay
	if v := r.Header.Get(HeaderDelay); v != "" {
		if delay, err = time.ParseDuration(v); err != nil {
			http.Error(w, HeaderDelay+": "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	if !s.pause(r, delay) {
		return
	}

	if r.Header.Get(HeaderHop) != "" {
		w.Header().Set("Connection", HopHeaders[0])
		w.Header().Set(HopHeaders[0], "must not pass a proxy")
		w.Header().Set("Keep-Alive", "timeout=5")
	}
	w.Header().Set("X-Upstreamtest-Request", strconv.FormatInt(s.count.Load(), 10))

	status := s.opts.FailStatus
	if v := r.Header.Get(HeaderStatus); v != "" {
		if status, err = strconv.Atoi(v); err != nil || status < 200 || status > 599 {
			http.Error(w, HeaderStatus+": want a status code", http.StatusBadRequest)
			return
		}
	}
	if status != 0 {
		writeJSON(w, r, status, map[string]any{"error": map[string]any{
			"message": "the fake upstream was asked to fail",
			"type":    "server_error",
			"code":    "upstreamtest_failure",
		}})
		return
	}

	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	json.Unmarshal(body, &req) // any body is accepted; the fields stay zero
	model := req.Model
	if model == "" {
		model = DefaultModel
	}
	if req.Stream {
		s.stream(w, r, model)
		return
	}
	answer := map[string]any{
		"id":      "chatcmpl-upstreamtest",
		"object":  "chat.completion",
		"created": 0,
		"model":   model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": "Hello from the fake upstream."},
			"finish_reason": "stop",
		}},
		"usage": s.opts.Usage,
	}
	answers := r.Context().Value(answersKey{}).(*int) // one goroutine per connection
	if *answers++; s.opts.CloseAfter > 0 && *answers%s.opts.CloseAfter == 0 {
		answerAndClose(w, answer)
		return
	}
	writeJSON(w, r, http.StatusOK, answer)
}

// answersKey holds, in a connection's context, how many JSON answers it carried.
type answersKey struct{}

// answerAndClose sends v whole (with its length, so the client can tell it
// is complete) and closes the connection without a Connection: close.
func answerAndClose(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	if conn, _, err := rc.Hijack(); err == nil {
		conn.Close()
	}
}

// stream sends Chunks content events, then (after HoldFinal) the usage
// event and [DONE], flushing each as OpenAI does.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, model string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(data string) bool {
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	chunk := func(delta map[string]any, usage *Usage) string {
		choices := []any{}
		if delta != nil {
			choices = append(choices, map[string]any{"index": 0, "delta": delta, "finish_reason": nil})
		}
		b, _ := json.Marshal(map[string]any{
			"id": "chatcmpl-upstreamtest", "object": "chat.completion.chunk", "created": 0,
			"model": model, "choices": choices, "usage": usage,
		})
		return string(b)
	}
	for i := range s.opts.Chunks {
		if i > 0 && !s.pause(r, s.opts.ChunkDelay) {
			return
		}
		if !send(chunk(map[string]any{"content": fmt.Sprintf("part %d ", i+1)}, nil)) {
			return
		}
	}
	if s.opts.HoldFinal != nil {
		select {
		case <-s.opts.HoldFinal:
		case <-r.Context().Done():
			s.noteCanceled()
			return
		}
	}
	if !s.pause(r, s.opts.ChunkDelay) {
		return
	}
	usage := s.opts.Usage
	if send(chunk(nil, &usage)) {
		send("[DONE]")
	}
}

// pause waits d, or reports false if the request ended first.
func (s *Server) pause(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		s.noteCanceled()
		return false
	}
}

func (s *Server) noteCanceled() {
	s.cancelCount.Add(1)
	s.canceledOnce.Do(func() { close(s.canceled) })
}

// writeJSON answers v, gzipped when the client accepts gzip (as OpenAI does).
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
		return
	}
	w.Header().Set("Content-Encoding", "gzip")
	w.WriteHeader(status)
	zw := gzip.NewWriter(w)
	json.NewEncoder(zw).Encode(v)
	zw.Close()
}
