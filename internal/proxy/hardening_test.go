package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/logtest"
	"github.com/llmproxy/llmproxy/internal/proxy"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/internal/upstreamtest"
	"github.com/llmproxy/llmproxy/service"
)

// rawRequest writes request as it is to the proxy (Go's client would clean
// or re-encode some of it) and returns the answer with its body read.
func rawRequest(t *testing.T, e *env, request string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", e.server.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", request, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body of the answer to %q: %v", request, err)
	}
	return resp, body
}

func chatRequestTo(path, secret, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", path, secret, len(body), body)
}

var requestIDPattern = regexp.MustCompile(`^req_[0-9a-f]{32}$`)

// assertFinal checks the headers of a refusal that asking again will not
// change: x-should-retry: false, and a request ID of the proxy's.
func assertFinal(t *testing.T, resp *http.Response) {
	t.Helper()
	if got := resp.Header.Get("X-Should-Retry"); got != "false" {
		t.Errorf("X-Should-Retry = %q, want false", got)
	}
	if id := resp.Header.Get("X-Request-Id"); !requestIDPattern.MatchString(id) {
		t.Errorf("X-Request-Id = %q, want req_ and 32 hex digits", id)
	}
}

func TestUnsafePathsAreNotForwarded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		tok, secret, _ := e.newToken(t)
		for _, path := range []string{
			"/v1/%2e%2e/manage/projects", "/v1/..%2F..%2Fx", "/v1/%5c..", "/v1/../manage/projects",
			"/v1/./chat/completions", "/v1/chat/%2E%2E", "/v1/chat%2fcompletions", "/v1/%2e%2e%5cx",
		} {
			resp, body := rawRequest(t, e, chatRequestTo(path, secret, chatBody))
			assertAPIError(t, resp, body, http.StatusBadRequest, "invalid_request_error", "invalid_request")
			assertFinal(t, resp)
		}
		// Dots inside a segment are names, and pass.
		for _, path := range []string{"/v1/files/file-a.b/content", "/v1/models/ft:gpt-4o:org:x", "/v1/x/..."} {
			resp, body := rawRequest(t, e, chatRequestTo(path, secret, chatBody))
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d, body %s", path, resp.StatusCode, body)
			}
		}
		var forwarded []string
		for _, r := range e.upstream.Requests() {
			forwarded = append(forwarded, r.Path)
		}
		if want := []string{"/v1/files/file-a.b/content", "/v1/models/ft:gpt-4o:org:x", "/v1/x/..."}; strings.Join(forwarded, " ") != strings.Join(want, " ") {
			t.Errorf("upstream received %q, want only %q", forwarded, want)
		}
		if err := e.proxy.Close(t.Context()); err != nil { // gives back what leases reserved
			t.Fatal(err)
		}
		if n := e.requestCount(t, tok.ID); n != 3 {
			t.Errorf("request_count = %d, want 3 (refused paths are not counted)", n)
		}
	})
}

// A body is read only for a token whose state lets it in: whatever the
// refusal, not a byte of it is read, and the connection is closed rather
// than left to wait for it.
func TestBodyNotReadForARefusedToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		target, err := url.Parse(e.upstream.URL)
		if err != nil {
			t.Fatal(err)
		}
		h := proxy.New(proxy.Options{Store: e.store, Keys: e.keys, Upstream: target, Recorder: e.recorder})
		t.Cleanup(func() { h.Close(context.Background()) })
		project, _ := e.project(t)
		inactive, _ := e.project(t)
		unknown, _ := secrets.NewToken()
		_, expired := e.token(t, project.ID, tokenOptions{expiresAt: time.Now().Add(-time.Minute)})
		revokedTok, revoked := e.token(t, project.ID, tokenOptions{})
		_, ofInactive := e.token(t, inactive.ID, tokenOptions{})
		ctx := t.Context()
		if _, err := e.store.TokenUpdate(ctx, &service.TokenUpdateParams{ID: revokedTok.ID, IsActive: new(false)}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.ProjectUpdate(ctx, &service.ProjectUpdateParams{ID: inactive.ID, IsActive: new(false)}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name, secret string
			status       int
			code         string
		}{
			{"Unknown", unknown, 401, "invalid_token"},
			{"Expired", expired, 401, "token_expired"},
			{"Revoked", revoked, 401, "token_revoked"},
			{"ProjectInactive", ofInactive, 403, "project_inactive"},
		} {
			for _, length := range []int64{int64(len(chatBody)), 32 << 20, -1} {
				body := &countingReader{r: strings.NewReader(chatBody)}
				req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", body)
				req.ContentLength = length
				req.Header.Set("Authorization", "Bearer "+c.secret)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != c.status || !strings.Contains(rec.Body.String(), c.code) {
					t.Errorf("%s, Content-Length %d: %d %s, want %d %s", c.name, length, rec.Code, rec.Body, c.status, c.code)
				}
				if body.n != 0 {
					t.Errorf("%s, Content-Length %d: read %d body bytes, want 0", c.name, length, body.n)
				}
				if got := rec.Header().Get("Connection"); got != "close" {
					t.Errorf("%s, Content-Length %d: Connection %q, want close", c.name, length, got)
				}
				assertFinal(t, rec.Result())
			}
		}
		if n := e.upstream.Count(); n != 0 {
			t.Errorf("upstream received %d requests, want 0", n)
		}
	})
}

// stallingBody gives its bytes, then waits until the test ends, as a
// client that stops sending does.
type stallingBody struct {
	data []byte
	stop <-chan struct{}
}

func (s *stallingBody) Read(p []byte) (int, error) {
	if len(s.data) > 0 {
		n := copy(p, s.data)
		s.data = s.data[n:]
		return n, nil
	}
	<-s.stop
	return 0, io.ErrUnexpectedEOF
}

// The buffer for a body grows with the bytes that arrive, whatever the
// Content-Length claims.
func TestBodyBufferGrowsWithTheBytesThatArrive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backends[0], envOptions{})
	target, _ := url.Parse(e.upstream.URL)
	h := proxy.New(proxy.Options{Store: e.store, Keys: e.keys, Upstream: target, Recorder: e.recorder})
	t.Cleanup(func() { h.Close(context.Background()) })
	_, secret, _ := e.newToken(t)
	stop := make(chan struct{})
	close(stop) // the body ends early, with an error, after 100 bytes
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", &stallingBody{data: make([]byte, 100), stop: stop})
	req.ContentLength = 30 << 20
	req.Header.Set("Authorization", "Bearer "+secret)
	rec := httptest.NewRecorder()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h.ServeHTTP(rec, req)
	runtime.ReadMemStats(&after)
	assertAPIError(t, rec.Result(), rec.Body.Bytes(), 400, "invalid_request_error", "invalid_request")
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 1<<20 {
		t.Errorf("allocated %d bytes for a body that sent 100 of the 30 MiB it claimed; want under 1 MiB", allocated)
	}
}

func TestStalledBodyGets408(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{bodyReadTimeout: 100 * time.Millisecond})
		tok, secret, _ := e.newToken(t)
		// Ten bytes of a thousand, then nothing: the client stalls.
		resp, body := rawRequest(t, e, fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"+
			"Authorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":", secret))
		assertAPIError(t, resp, body, http.StatusRequestTimeout, "invalid_request_error", "request_timeout")
		if !resp.Close {
			t.Error("the connection was kept open after a body that did not arrive")
		}
		if resp.Header.Get("X-Should-Retry") != "" || !requestIDPattern.MatchString(resp.Header.Get("X-Request-Id")) {
			t.Errorf("headers %v: want a request ID and no X-Should-Retry (a network fault may clear)", resp.Header)
		}
		if n := e.requestCount(t, tok.ID); n != 0 {
			t.Errorf("request_count = %d, want 0", n)
		}
		if n := e.upstream.Count(); n != 0 {
			t.Errorf("upstream received %d requests, want 0", n)
		}
		// A body sent slowly but within the timeout is fine.
		resp, body = e.chat(t, secret)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, body %s", resp.StatusCode, body)
		}
	})
}

// A stream may last longer than the server's ReadTimeout: the deadline
// that bounds reading the request must not end the answer.
func TestStreamOutlastsTheServersReadTimeout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const readTimeout = 200 * time.Millisecond
		e := newEnv(t, b, envOptions{
			readTimeout: readTimeout, bodyReadTimeout: readTimeout / 2,
			upstream: upstreamtest.Options{Chunks: 3, ChunkDelay: readTimeout},
		})
		_, secret, _ := e.newToken(t)
		for _, body := range []io.Reader{strings.NewReader(`{"model":"gpt-stream","stream":true}`), nil} {
			method := http.MethodPost
			if body == nil {
				method = http.MethodGet // no body to read: the deadline must go all the same
			}
			req := e.request(t, method, "/v1/chat/completions", secret, body)
			req.Header.Set(upstreamtest.HeaderDelay, (2 * readTimeout).String())
			resp, data := e.do(t, req)
			if resp.StatusCode != http.StatusOK || (body != nil && !strings.HasSuffix(string(data), "data: [DONE]\n\n")) {
				t.Fatalf("%s: status %d, body %q", method, resp.StatusCode, data)
			}
		}
		for _, ev := range e.usageEvents(t) {
			if ev.Status != http.StatusOK {
				t.Errorf("usage event %+v, want status 200", *ev)
			}
		}
	})
}

// brokenUpstream answers every request with head, then part of a body (or
// none), then closes the connection without finishing.
func brokenUpstream(t *testing.T, head, partial string) (url string, received func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		n++
		mu.Unlock()
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		buf.WriteString(head + partial)
		buf.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func TestUpstreamBreakingOffIsRecordedAs502(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		jsonHead := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
		sseHead := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
		event := "data: {\"choices\":[]}\n\n"
		for _, c := range []struct {
			name, head, partial string
			// clean: the client gets the proxy's 502; else the status line
			// had gone out and its connection is cut instead.
			clean bool
		}{
			{"BeforeTheBody", jsonHead, "", true},
			{"MidBody", jsonHead, `{"id":"x",`, false},
			{"MidStream", sseHead, fmt.Sprintf("%x\r\n%s\r\n", len(event), event), false},
		} {
			t.Run(c.name, func(t *testing.T) {
				upstreamURL, received := brokenUpstream(t, c.head, c.partial)
				e := newEnv(t, b, envOptions{upstreamURL: upstreamURL})
				_, secret, _ := e.newToken(t)
				resp, err := e.client.Do(e.request(t, http.MethodPost, "/v1/chat/completions", secret, strings.NewReader(chatBody)))
				if c.clean {
					if err != nil {
						t.Fatalf("request: %v", err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					assertAPIError(t, resp, body, http.StatusBadGateway, "api_error", "upstream_unavailable")
				} else {
					if err == nil {
						_, err = io.ReadAll(resp.Body)
						resp.Body.Close()
					}
					if err == nil {
						t.Fatal("the client read a whole answer from an upstream that broke off")
					}
				}
				events := e.usageEvents(t)
				if len(events) != 1 || events[0].Status != http.StatusBadGateway {
					t.Errorf("usage events %+v, want one with status 502", events)
				}
				if n := received(); n != 1 {
					t.Errorf("upstream received %d requests, want 1", n)
				}
			})
		}
	})
}

// Proxy-made errors that may clear by themselves leave the SDKs to retry,
// but carry a request ID.
func TestTransientErrorsHaveARequestIDAndMayBeRetried(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	e := newEnv(t, backends[0], envOptions{upstreamURL: down})
	_, secret, _ := e.newToken(t)
	resp, body := e.chat(t, secret)
	assertAPIError(t, resp, body, http.StatusBadGateway, "api_error", "upstream_unavailable")
	if got := resp.Header.Get("X-Should-Retry"); got != "" {
		t.Errorf("X-Should-Retry = %q on a 502, want none", got)
	}
	if id := resp.Header.Get("X-Request-Id"); !requestIDPattern.MatchString(id) {
		t.Errorf("X-Request-Id = %q", id)
	}
}

func TestAccessLog(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		var out logtest.Buffer
		e := newEnv(t, b, envOptions{accessLog: slog.New(slog.NewJSONHandler(&out, nil))})
		tok, secret, apiKey := e.newToken(t)
		if resp, body := e.chat(t, secret); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, body %s", resp.StatusCode, body)
		}
		unknown, _ := secrets.NewToken()
		e.chat(t, unknown)
		e.server.Close() // the lines are written as the handlers return

		var lines []map[string]any
		for line := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("access log line %q is not JSON: %v", line, err)
			}
			lines = append(lines, m)
		}
		if len(lines) != 2 {
			t.Fatalf("%d access log lines, want 2:\n%s", len(lines), out.String())
		}
		ok, refused := lines[0], lines[1]
		want := map[string]any{
			"level": "INFO", "msg": "access", "client": "127.0.0.1", "method": "POST", "path": "/v1/chat/completions", "status": 200.0,
			"upstream_status": 200.0, "token_id": float64(tok.ID), "project_id": float64(tok.ProjectID), "model": "gpt-test",
		}
		for k, v := range want {
			if ok[k] != v {
				t.Errorf("forwarded request's line: %s = %v, want %v (line %v)", k, ok[k], v, ok)
			}
		}
		if _, has := ok["latency_ms"]; !has {
			t.Errorf("forwarded request's line has no latency_ms: %v", ok)
		}
		if refused["status"] != 401.0 || !requestIDPattern.MatchString(fmt.Sprint(refused["request_id"])) {
			t.Errorf("refused request's line %v: want status 401 and the request ID it was sent", refused)
		}
		if _, has := refused["upstream_status"]; has {
			t.Errorf("refused request's line %v has an upstream status", refused)
		}
		for _, secret := range []string{secret, unknown, apiKey, `"messages"`, "hi"} {
			if strings.Contains(out.String(), secret) {
				t.Errorf("access log contains %q:\n%s", secret, out.String())
			}
		}
	})
}
