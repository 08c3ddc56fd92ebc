package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/config"
	"github.com/llmproxy/llmproxy/internal/tlstest"
	"github.com/llmproxy/llmproxy/service"
)

// stepWait bounds each wait for the other side of a stepped exchange: a
// guard against a hang, far above what any step takes, not a timing check.
const stepWait = time.Minute

// h2cClient speaks HTTP/2 without TLS by prior knowledge, as
// `curl --http2-prior-knowledge` does.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// steppedUpstream is an OpenAI-like upstream whose streams send each event
// only when the test says so, so a test can see every event reach the
// client before the next one exists.
type steppedUpstream struct {
	URL      string
	step     chan struct{} // one per stream event
	canceled chan struct{} // closed when a stream's request ends before its last event
	once     sync.Once
}

// Request headers that change the stepped upstream's answer.
const (
	headerHop   = "X-Test-Hop"   // add hop-by-hop headers a proxy must drop
	headerBreak = "X-Test-Break" // break the connection after the first event
)

var steppedEvents = []string{
	`{"id":"c","object":"chat.completion.chunk","model":"gpt-h2","choices":[{"index":0,"delta":{"content":"one"}}]}`,
	`{"id":"c","object":"chat.completion.chunk","model":"gpt-h2","choices":[{"index":0,"delta":{"content":"two"}}]}`,
	`{"id":"c","object":"chat.completion.chunk","model":"gpt-h2","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`,
	`[DONE]`,
}

func newSteppedUpstream(t *testing.T) *steppedUpstream {
	u := &steppedUpstream{step: make(chan struct{}), canceled: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(srv.Close)
	u.URL = srv.URL
	return u
}

func (u *steppedUpstream) serve(w http.ResponseWriter, r *http.Request) {
	var req struct{ Stream bool }
	json.NewDecoder(r.Body).Decode(&req)
	if r.Header.Get(headerHop) != "" {
		w.Header().Set("Connection", "X-Hop-Only")
		w.Header().Set("X-Hop-Only", "must not pass a proxy")
		w.Header().Set("Keep-Alive", "timeout=5")
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c","object":"chat.completion","model":"gpt-h2","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	for i, event := range steppedEvents {
		select {
		case <-u.step:
		case <-r.Context().Done():
			u.once.Do(func() { close(u.canceled) })
			return
		}
		if i == 1 && r.Header.Get(headerBreak) != "" {
			panic(http.ErrAbortHandler) // the connection drops mid-body
		}
		fmt.Fprintf(w, "data: %s\n\n", event)
		rc.Flush()
	}
}

// release lets the upstream send its next event.
func (u *steppedUpstream) release(t *testing.T) {
	t.Helper()
	select {
	case u.step <- struct{}{}:
	case <-time.After(stepWait):
		t.Fatal("the upstream is not waiting to send an event")
	}
}

// readEvent reads one SSE event's data line and the blank line after it.
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading an event: %q, %v", line, err)
	}
	if blank, err := r.ReadString('\n'); err != nil || blank != "\n" {
		t.Fatalf("after event %q: %q, %v; want a blank line", line, blank, err)
	}
	data, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: ")
	if !ok {
		t.Fatalf("event line %q, want data: ...", line)
	}
	return data
}

// openStream starts a streamed chat completion, lets the upstream send its
// first event (the proxy sends the status line and headers with the first
// bytes of the body) and checks its headers. A stream that hangs (an event
// never flushed) fails after stepWait.
func openStream(t *testing.T, ctx context.Context, client *http.Client, upstream *steppedUpstream, url, secret string, headers ...string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepWait)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-h2","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	go func() {
		select {
		case upstream.step <- struct{}{}:
		case <-ctx.Done():
		}
	}()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream = %d %s %q, want 200 over HTTP/2.0 with text/event-stream", resp.StatusCode, resp.Proto, resp.Header.Get("Content-Type"))
	}
	return resp, bufio.NewReader(resp.Body)
}

// The proxy over HTTP/2 without TLS (prior knowledge): operations, the
// management API and /v1 answer; hop-by-hop headers from the upstream are
// dropped (they are forbidden in HTTP/2); stream events are flushed one by
// one; a client that cancels its stream cancels the upstream request; an
// upstream that breaks mid-stream resets the client's stream instead of
// ending it cleanly; and SIGTERM lets a running stream finish.
func TestServeH2C(t *testing.T) {
	t.Parallel()
	for _, b := range testBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			upstream := newSteppedUpstream(t)
			env := b.env(t)
			env["UPSTREAM_URL"] = upstream.URL
			s := startServe(t, env)
			client := h2cClient()

			resp, body := callWith(t, client, "GET", s.url+"/health", "", nil)
			if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" {
				t.Fatalf("GET /health over h2c = %d %s %s", resp.StatusCode, resp.Proto, body)
			}
			var project, token map[string]any
			resp, body = callWith(t, client, "POST", s.url+"/manage/projects", s.admin, map[string]string{"name": "h2", "api_key": "sk-upstream-h2"})
			if resp.StatusCode != http.StatusCreated || resp.Proto != "HTTP/2.0" || json.Unmarshal(body, &project) != nil {
				t.Fatalf("create project over h2c = %d %s %s", resp.StatusCode, resp.Proto, body)
			}
			resp, body = callWith(t, client, "POST", s.url+"/manage/tokens", s.admin, map[string]any{"project_id": project["id"], "duration_minutes": 10})
			if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &token) != nil {
				t.Fatalf("create token over h2c = %d %s", resp.StatusCode, body)
			}
			secret := token["token"].(string)

			t.Run("JSON", func(t *testing.T) {
				req, _ := http.NewRequestWithContext(t.Context(), "POST", s.url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-h2","messages":[]}`))
				req.Header.Set("Authorization", "Bearer "+secret)
				req.Header.Set(headerHop, "1")
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" || !strings.Contains(string(body), `"model":"gpt-h2"`) {
					t.Fatalf("POST /v1/chat/completions over h2c = %d %s %s, %v", resp.StatusCode, resp.Proto, body, err)
				}
				for _, h := range []string{"Connection", "X-Hop-Only", "Keep-Alive"} {
					if v := resp.Header.Get(h); v != "" {
						t.Errorf("hop-by-hop header %s: %q reached the HTTP/2 client", h, v)
					}
				}

				// A body of unknown length: HTTP/2 DATA frames without content-length.
				req, _ = http.NewRequestWithContext(t.Context(), "POST", s.url+"/v1/chat/completions", struct{ io.Reader }{strings.NewReader(`{"model":"gpt-h2"}`)})
				req.Header.Set("Authorization", "Bearer "+secret)
				resp, err = client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"model":"gpt-h2"`) {
					t.Fatalf("POST without content-length over h2c = %d %s, %v", resp.StatusCode, body, err)
				}
			})

			t.Run("StreamEventsOneByOne", func(t *testing.T) {
				_, events := openStream(t, t.Context(), client, upstream, s.url, secret)
				for i, want := range steppedEvents {
					if i > 0 {
						upstream.release(t)
					}
					// The upstream has not sent event i+1 yet: event i was flushed on its own.
					if got := readEvent(t, events); got != want {
						t.Fatalf("event %d = %s, want %s", i, got, want)
					}
				}
				if rest, err := io.ReadAll(events); err != nil || len(rest) != 0 {
					t.Errorf("after [DONE]: %q, %v; want a clean end", rest, err)
				}
			})

			t.Run("ClientGoneCancelsUpstream", func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				_, events := openStream(t, ctx, client, upstream, s.url, secret)
				readEvent(t, events)
				cancel() // RST_STREAM on the client's connection, which stays open
				select {
				case <-upstream.canceled:
				case <-time.After(stepWait):
					t.Fatal("the upstream request went on after the HTTP/2 client canceled its stream")
				}
			})

			t.Run("BrokenUpstreamResetsStream", func(t *testing.T) {
				_, events := openStream(t, t.Context(), client, upstream, s.url, secret, headerBreak, "1")
				readEvent(t, events)
				upstream.release(t) // the upstream breaks off instead of sending event 2
				rest, err := io.ReadAll(events)
				if err == nil {
					t.Fatalf("the client's stream ended cleanly after %q although the upstream broke off", rest)
				}
				// The one stream is reset, not the connection: the client goes on.
				if resp, _ := callWith(t, client, "GET", s.url+"/health", "", nil); resp.StatusCode != http.StatusOK {
					t.Errorf("GET /health after the reset stream = %d", resp.StatusCode)
				}
			})

			t.Run("ShutdownDrainsStream", func(t *testing.T) {
				_, events := openStream(t, t.Context(), client, upstream, s.url, secret)
				readEvent(t, events)
				s.stop()
				// Once the listener is closed the server is draining.
				for {
					conn, err := net.Dial("tcp", s.addr)
					if err != nil {
						break
					}
					conn.Close()
				}
				for i, want := range steppedEvents[1:] {
					upstream.release(t)
					if got := readEvent(t, events); got != want {
						t.Fatalf("event %d while draining = %s, want %s", i+1, got, want)
					}
				}
				if err := s.wait(); err != nil {
					t.Fatalf("serve after SIGTERM: %v\n%s", err, s.stderr)
				}
			})
			if t.Failed() {
				return
			}

			// Every forwarded request was recorded: two JSON, three streams, and the broken one.
			cfg, err := config.Load(func(name string) string { return s.env[name] })
			if err != nil {
				t.Fatal(err)
			}
			store, err := service.Open(t.Context(), cfg.Storage)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			totals, err := store.UsageTotals(t.Context(), &service.UsageFilter{})
			if err != nil || totals.Requests != 6 {
				t.Errorf("usage after shutdown = %+v, %v; want 6 requests", totals, err)
			}
		})
	}
}

// HTTPS with TLS_CERT_FILE and TLS_KEY_FILE: HTTP/2 negotiated by ALPN and
// HTTP/1.1 both reach operations, the management API and /v1.
func TestServeHTTPS(t *testing.T) {
	t.Parallel()
	pair := tlstest.Write(t)
	upstream := newSteppedUpstream(t)
	s := startServe(t, map[string]string{"UPSTREAM_URL": upstream.URL, "TLS_CERT_FILE": pair.CertFile, "TLS_KEY_FILE": pair.KeyFile})
	if !strings.HasPrefix(s.url, "https://") {
		t.Fatalf("url %s", s.url)
	}
	var h1 http.Protocols
	h1.SetHTTP1(true)
	clients := map[string]*http.Client{
		"HTTP/2.0": {Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pair.Pool}, ForceAttemptHTTP2: true}},
		"HTTP/1.1": {Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pair.Pool}, Protocols: &h1}},
	}
	var project map[string]any
	resp, body := callWith(t, clients["HTTP/1.1"], "POST", s.url+"/manage/projects", s.admin, map[string]string{"name": "tls", "api_key": "sk-upstream-tls"})
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &project) != nil {
		t.Fatalf("create project over HTTPS = %d %s", resp.StatusCode, body)
	}
	for proto, client := range clients {
		t.Run(proto, func(t *testing.T) {
			var token map[string]any
			resp, body := callWith(t, client, "POST", s.url+"/manage/tokens", s.admin, map[string]any{"project_id": project["id"], "duration_minutes": 10})
			if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &token) != nil {
				t.Fatalf("create token = %d %s", resp.StatusCode, body)
			}
			for _, path := range []string{"/health", "/v1/chat/completions"} {
				resp, body := callWith(t, client, "POST", s.url+path, token["token"].(string), map[string]any{"model": "gpt-h2"})
				if path == "/health" {
					resp, body = callWith(t, client, "GET", s.url+path, "", nil)
				}
				if resp.StatusCode != http.StatusOK || resp.Proto != proto || resp.TLS == nil {
					t.Errorf("%s = %d %s (TLS %v) %s, want 200 over %s", path, resp.StatusCode, resp.Proto, resp.TLS != nil, body, proto)
				}
				if resp.TLS != nil && (resp.TLS.NegotiatedProtocol == "h2") != (proto == "HTTP/2.0") {
					t.Errorf("%s over %s: ALPN %q", path, proto, resp.TLS.NegotiatedProtocol)
				}
			}
		})
	}
	// Plain HTTP on the HTTPS port is refused, never served in the clear.
	resp, err := http.Get("http://" + s.addr + "/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the HTTPS port = %d, want 400", resp.StatusCode)
		}
	} else if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("plain HTTP to the HTTPS port: %v", err)
	}
}
