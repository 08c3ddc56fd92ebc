package proxy_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/proxy"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/internal/upstreamtest"
	"github.com/llmproxy/llmproxy/service"
)

func TestRefusals(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const maxBody = 4096
		e := newEnv(t, b, envOptions{maxRequestBytes: maxBody})
		project, _ := e.project(t)

		// A case builds its request and returns the token it uses (nil for
		// none) and the request_count that token must have afterwards.
		type built struct {
			req   *http.Request
			token *service.Token
			count int64
		}
		chatRequest := func(t *testing.T, secret string) *http.Request {
			return e.request(t, http.MethodPost, "/v1/chat/completions", secret, strings.NewReader(chatBody))
		}
		withAuthorization := func(header string) func(t *testing.T) built {
			return func(t *testing.T) built {
				req := chatRequest(t, "")
				if header != "" {
					req.Header.Set("Authorization", header)
				}
				return built{req: req}
			}
		}
		withToken := func(o tokenOptions, change func(t *testing.T, tok *service.Token)) func(t *testing.T) built {
			return func(t *testing.T) built {
				tok, secret := e.token(t, project.ID, o)
				if change != nil {
					change(t, tok)
				}
				return built{req: chatRequest(t, secret), token: tok}
			}
		}
		unknown, _ := secrets.NewToken()
		cases := []struct {
			name      string
			build     func(t *testing.T) built
			status    int
			typ, code string
		}{
			{"MissingAuthorization", withAuthorization(""), 401, "authentication_error", "invalid_token"},
			{"NotBearer", withAuthorization("Basic dXNlcjpwYXNz"), 401, "authentication_error", "invalid_token"},
			{"Malformed", withAuthorization("Bearer not-a-token"), 401, "authentication_error", "invalid_token"},
			{"Unknown", withAuthorization("Bearer " + unknown), 401, "authentication_error", "invalid_token"},
			{"Expired", withToken(tokenOptions{expiresAt: time.Now().Add(-time.Minute)}, nil),
				401, "authentication_error", "token_expired"},
			{"Revoked", withToken(tokenOptions{}, func(t *testing.T, tok *service.Token) {
				if _, err := e.store.TokenUpdate(t.Context(), &service.TokenUpdateParams{ID: tok.ID, IsActive: new(false)}); err != nil {
					t.Fatalf("TokenUpdate: %v", err)
				}
			}), 401, "authentication_error", "token_revoked"},
			{"ProjectInactive", func(t *testing.T) built {
				p, _ := e.project(t)
				tok, secret := e.token(t, p.ID, tokenOptions{})
				if _, err := e.store.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: p.ID, IsActive: new(false)}); err != nil {
					t.Fatalf("ProjectUpdate: %v", err)
				}
				return built{req: chatRequest(t, secret), token: tok}
			}, 403, "permission_error", "project_inactive"},
			{"LimitReached", func(t *testing.T) built {
				tok, secret := e.token(t, project.ID, tokenOptions{maxRequests: 1})
				if resp, body := e.do(t, chatRequest(t, secret)); resp.StatusCode != http.StatusOK {
					t.Fatalf("first request: status %d, body %s", resp.StatusCode, body)
				}
				return built{req: chatRequest(t, secret), token: tok, count: 1}
			}, 429, "rate_limit_error", "request_limit_exceeded"},
			{"BodyTooLarge", func(t *testing.T) built {
				tok, secret := e.token(t, project.ID, tokenOptions{})
				req := e.request(t, http.MethodPost, "/v1/chat/completions", secret, bytes.NewReader(make([]byte, maxBody+1)))
				return built{req: req, token: tok}
			}, 413, "invalid_request_error", "body_too_large"},
			{"BodyTooLargeChunked", func(t *testing.T) built {
				tok, secret := e.token(t, project.ID, tokenOptions{})
				// A reader of unknown length makes the client send it chunked.
				body := io.MultiReader(strings.NewReader(`{"model":"`), strings.NewReader(strings.Repeat("x", maxBody)))
				return built{req: e.request(t, http.MethodPost, "/v1/chat/completions", secret, body), token: tok}
			}, 413, "invalid_request_error", "body_too_large"},
		}
		t.Run("Cases", func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					bc := c.build(t)
					resp, body := e.do(t, bc.req)
					assertAPIError(t, resp, body, c.status, c.typ, c.code)
					assertFinal(t, resp) // none of these clears by asking again
					if c.status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
						t.Error("401 without WWW-Authenticate")
					}
					if bc.token != nil {
						if got := e.requestCount(t, bc.token.ID); got != bc.count {
							t.Errorf("request_count = %d after the refusal, want %d", got, bc.count)
						}
					}
				})
			}
		})
		// Only LimitReached's first request reached the upstream.
		if n := e.upstream.Count(); n != 1 {
			t.Errorf("upstream received %d requests, want 1", n)
		}
		if events := e.usageEvents(t); len(events) != 1 {
			t.Errorf("%d usage events, want 1 (refusals record none)", len(events))
		}
	})
}

// unavailableStore fails token lookups as a database that cannot be reached does.
type unavailableStore struct{ service.Store }

var errUnavailable = fmt.Errorf("%w: connection refused", service.ErrUnavailable)

func (unavailableStore) TokenGetByHash(context.Context, []byte) (*service.Token, error) {
	return nil, errUnavailable
}

func (unavailableStore) TokenAuthenticate(context.Context, []byte) (*service.Token, *service.Project, error) {
	return nil, nil, errUnavailable
}

func (unavailableStore) TokenAdmitByHash(context.Context, *service.TokenAdmitByHashParams) (*service.Token, *service.Project, error) {
	return nil, nil, errUnavailable
}

// brokenStore fails token lookups with an error the proxy does not expect.
type brokenStore struct{ service.Store }

var errBroken = fmt.Errorf("disk I/O error, at /secret/path")

func (brokenStore) TokenGetByHash(context.Context, []byte) (*service.Token, error) {
	return nil, errBroken
}

func (brokenStore) TokenAuthenticate(context.Context, []byte) (*service.Token, *service.Project, error) {
	return nil, nil, errBroken
}

func (brokenStore) TokenAdmitByHash(context.Context, *service.TokenAdmitByHashParams) (*service.Token, *service.Project, error) {
	return nil, nil, errBroken
}

func TestStoreFailures(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, c := range []struct {
			name      string
			wrap      func(service.Store) service.Store
			status    int
			code      string
			forbidden string // must not leak into the answer
		}{
			{"Unavailable", func(s service.Store) service.Store { return unavailableStore{s} }, 503, "database_unavailable", "connection refused"},
			{"Internal", func(s service.Store) service.Store { return brokenStore{s} }, 500, "internal_error", "/secret/path"},
		} {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, b, envOptions{wrapStore: c.wrap})
				_, secret, _ := e.newToken(t)
				resp, body := e.chat(t, secret)
				assertAPIError(t, resp, body, c.status, "api_error", c.code)
				if bytes.Contains(body, []byte(c.forbidden)) {
					t.Errorf("error body %s leaks the cause", body)
				}
				if n := e.upstream.Count(); n != 0 {
					t.Errorf("upstream received %d requests, want 0", n)
				}
			})
		}
	})
}

func TestForwardsRequestAndResponse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		tok, secret, apiKey := e.newToken(t)
		before := time.Now()

		req := e.request(t, http.MethodPost, "/v1/chat/completions?x=1&y=a%2Fb", secret, strings.NewReader(chatBody))
		req.Header.Set("X-Client", "kept")
		req.Header.Set("Connection", "X-Named-By-Connection")
		req.Header.Set("X-Named-By-Connection", "dropped")
		req.Header.Set("Keep-Alive", "timeout=5")
		req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
		req.Header.Set("Upgrade", "example/1")
		req.Header.Set(upstreamtest.HeaderHop, "1")
		resp, body := e.do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, body %s", resp.StatusCode, body)
		}

		reqs := e.upstream.Requests()
		if len(reqs) != 1 {
			t.Fatalf("upstream received %d requests, want 1", len(reqs))
		}
		got := reqs[0]
		if got.Method != http.MethodPost || got.Path != "/v1/chat/completions" || got.RawQuery != "x=1&y=a%2Fb" {
			t.Errorf("upstream saw %s %s?%s, want POST /v1/chat/completions?x=1&y=a%%2Fb", got.Method, got.Path, got.RawQuery)
		}
		if string(got.Body) != chatBody {
			t.Errorf("upstream body = %s, want %s", got.Body, chatBody)
		}
		if auth := got.Header.Get("Authorization"); auth != "Bearer "+apiKey {
			t.Errorf("upstream Authorization = %q, want the project's key", auth)
		}
		if v := got.Header.Get("X-Client"); v != "kept" {
			t.Errorf("upstream X-Client = %q, want kept", v)
		}
		for _, name := range []string{"Connection", "X-Named-By-Connection", "Keep-Alive", "Proxy-Authorization", "Upgrade"} {
			if v, ok := got.Header[name]; ok {
				t.Errorf("hop-by-hop request header %s = %q reached the upstream", name, v)
			}
		}

		// The answer is the upstream's: compare with asking it directly.
		direct, err := http.NewRequest(http.MethodPost, e.upstream.URL+"/v1/chat/completions", strings.NewReader(chatBody))
		if err != nil {
			t.Fatal(err)
		}
		directResp, directBody := e.do(t, direct)
		if !bytes.Equal(body, directBody) {
			t.Errorf("proxied body %s differs from the upstream's %s", body, directBody)
		}
		if ct, want := resp.Header.Get("Content-Type"), directResp.Header.Get("Content-Type"); ct != want {
			t.Errorf("Content-Type = %q, want the upstream's %q", ct, want)
		}
		if resp.Header.Get("X-Upstreamtest-Request") != "1" {
			t.Errorf("upstream's own header missing: %v", resp.Header)
		}
		for _, name := range upstreamtest.HopHeaders {
			if v, ok := resp.Header[name]; ok {
				t.Errorf("hop-by-hop response header %s = %q reached the client", name, v)
			}
		}

		events := e.usageEvents(t)
		if len(events) != 1 {
			t.Fatalf("%d usage events, want 1", len(events))
		}
		ev := events[0]
		want := *ev // id, latency, time and any bookkeeping fields are checked apart
		want.TokenID, want.ProjectID, want.Method, want.Path = tok.ID, tok.ProjectID, "POST", "/v1/chat/completions"
		want.Model, want.Status, want.PromptTokens, want.CompletionTokens, want.TotalTokens = "gpt-test", 200, 11, 7, 18
		if !reflect.DeepEqual(*ev, want) {
			t.Errorf("usage event = %+v, want %+v", *ev, want)
		}
		if ev.LatencyMS < 0 || ev.CreatedAt.Before(before.Truncate(time.Millisecond)) || ev.CreatedAt.After(time.Now()) {
			t.Errorf("usage event latency %dms at %v, want a non-negative latency at a time during the test", ev.LatencyMS, ev.CreatedAt)
		}
		if n := e.requestCount(t, tok.ID); n != 1 {
			t.Errorf("request_count = %d, want 1", n)
		}
	})
}

// gatedRecorder holds each Record until its gate opens or a timeout passes.
type gatedRecorder struct {
	proxy.Recorder
	gate     chan struct{}
	timedOut atomic.Bool
}

func (r *gatedRecorder) Record(ctx context.Context, ev *service.UsageEventCreateParams) error {
	select {
	case <-r.gate:
	case <-time.After(5 * time.Second):
		r.timedOut.Store(true)
	}
	return r.Recorder.Record(ctx, ev)
}

func TestAnswerReachesClientBeforeUsageIsRecorded(t *testing.T) {
	t.Parallel()
	rec := &gatedRecorder{gate: make(chan struct{})}
	e := newEnv(t, backends[0], envOptions{wrapRecorder: func(r proxy.Recorder) proxy.Recorder {
		rec.Recorder = r
		return rec
	}})
	_, secret, _ := e.newToken(t)
	resp, body := e.do(t, e.request(t, http.MethodPost, "/v1/chat/completions", secret, strings.NewReader(chatBody)))
	close(rec.gate)
	if resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
	if rec.timedOut.Load() {
		t.Error("the client had the answer only after its usage was recorded")
	}
	if events := e.usageEvents(t); len(events) != 1 {
		t.Errorf("%d usage events, want 1", len(events))
	}
}

func TestOverheadLeavesOutUpstreamWaits(t *testing.T) {
	t.Parallel()
	const wait = 300 * time.Millisecond
	e := newEnv(t, backends[0], envOptions{upstream: upstreamtest.Options{Chunks: 3, ChunkDelay: wait / 3}})
	_, secret, _ := e.newToken(t)
	var count uint64
	var sum float64
	check := func(what string, req *http.Request, wantObserved bool) {
		t.Helper()
		resp, _ := e.do(t, req)
		// The answer reaches the client before the handler observes it; a
		// refusal is written only as the handler returns.
		c, s := overheadHistogram(t, e)
		for deadline := time.Now().Add(10 * time.Second); wantObserved && c == count && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
			c, s = overheadHistogram(t, e)
		}
		n, took := c-count, time.Duration((s-sum)*float64(time.Second))
		count, sum = c, s
		switch {
		case !wantObserved:
			if n != 0 {
				t.Errorf("%s (status %d): %d overhead observations, want none", what, resp.StatusCode, n)
			}
		case n != 1:
			t.Errorf("%s (status %d): %d overhead observations, want 1", what, resp.StatusCode, n)
		case took <= 0 || took >= wait/2:
			// The upstream took at least wait; the proxy's own part is far less.
			t.Errorf("%s: overhead %v, want more than 0 and well under the upstream's %v", what, took, wait)
		}
	}
	slow := e.request(t, http.MethodPost, "/v1/chat/completions", secret, strings.NewReader(chatBody))
	slow.Header.Set(upstreamtest.HeaderDelay, wait.String())
	check("answer after a delay", slow, true)
	check("stream with pauses", e.request(t, http.MethodPost, "/v1/chat/completions", secret,
		strings.NewReader(`{"model":"gpt-stream","stream":true}`)), true)
	check("refused", e.request(t, http.MethodPost, "/v1/chat/completions", "", strings.NewReader(chatBody)), false)
}

// overheadHistogram reads llmproxy_proxy_overhead_seconds: observations and their sum.
func overheadHistogram(t *testing.T, e *env) (count uint64, sum float64) {
	t.Helper()
	families, err := e.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "llmproxy_proxy_overhead_seconds" {
			h := f.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("llmproxy_proxy_overhead_seconds not registered")
	return 0, 0
}

func TestUpstreamPathAndModel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		// Same fake upstream, reached through a base path.
		based := newEnv(t, b, envOptions{upstreamURL: e.upstream.URL + "/base/"})
		_, secret, _ := based.newToken(t)

		resp, body := based.do(t, based.request(t, http.MethodGet, "/v1/models", secret, nil))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, body %s", resp.StatusCode, body)
		}
		reqs := e.upstream.Requests()
		if len(reqs) != 1 || reqs[0].Path != "/base/v1/models" || reqs[0].Method != http.MethodGet {
			t.Fatalf("upstream received %+v, want one GET /base/v1/models", reqs)
		}
		events := based.usageEvents(t)
		if len(events) != 1 || events[0].Model != upstreamtest.DefaultModel || events[0].Method != http.MethodGet {
			t.Errorf("usage events %+v, want one GET with the model the response named", events)
		}
	})
}

func TestUpstreamErrorsPassThrough(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		tok, secret, _ := e.newToken(t)
		req := e.request(t, http.MethodPost, "/v1/chat/completions", secret, strings.NewReader(chatBody))
		req.Header.Set(upstreamtest.HeaderStatus, "503")
		resp, body := e.do(t, req)

		direct, err := http.NewRequest(http.MethodPost, e.upstream.URL+"/v1/chat/completions", nil)
		if err != nil {
			t.Fatal(err)
		}
		direct.Header.Set(upstreamtest.HeaderStatus, "503")
		_, directBody := e.do(t, direct)
		if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Equal(body, directBody) {
			t.Errorf("got %d %s, want the upstream's 503 %s unchanged", resp.StatusCode, body, directBody)
		}
		events := e.usageEvents(t)
		if len(events) != 1 || events[0].Status != 503 || events[0].TokenID != tok.ID {
			t.Errorf("usage events %+v, want one with status 503", events)
		}
	})
}

func TestGzipResponseUsage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		_, secret, _ := e.newToken(t)
		req := e.request(t, http.MethodPost, "/v1/chat/completions", secret, strings.NewReader(chatBody))
		req.Header.Set("Accept-Encoding", "br, gzip;q=0.8")
		// The raw transport does not decompress: the test sees the bytes as sent.
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Content-Encoding = %q, want gzip", resp.Header.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var completion struct {
			Model string `json:"model"`
		}
		if err := json.NewDecoder(zr).Decode(&completion); err != nil || completion.Model != "gpt-test" {
			t.Errorf("decoded body: model %q, error %v", completion.Model, err)
		}
		if ae := e.upstream.Requests()[0].Header.Get("Accept-Encoding"); ae != "gzip" {
			t.Errorf("upstream Accept-Encoding = %q, want gzip only (what the proxy can read)", ae)
		}
		events := e.usageEvents(t)
		if len(events) != 1 || events[0].TotalTokens != 18 || events[0].PromptTokens != 11 {
			t.Errorf("usage events %+v, want token counts read from the gzipped body", events)
		}
	})
}

// readEvent reads one SSE event (up to its blank line) and returns its data.
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (after %q)", err, line)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return data
		}
		if v, ok := strings.CutPrefix(line, "data: "); ok {
			data += v
		}
	}
}

func TestStreamsEventsAsTheyArrive(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		hold := make(chan struct{})
		e := newEnv(t, b, envOptions{upstream: upstreamtest.Options{Chunks: 2, HoldFinal: hold}})
		tok, secret, _ := e.newToken(t)
		req := e.request(t, http.MethodPost, "/v1/chat/completions", secret,
			strings.NewReader(`{"model":"gpt-stream","stream":true}`))
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("Content-Type = %q, want text/event-stream", ct)
		}
		r := bufio.NewReader(resp.Body)
		// The upstream holds its last events until hold is closed, so these
		// arrive while the upstream has not finished.
		for i := 1; i <= 2; i++ {
			if data := readEvent(t, r); !strings.Contains(data, fmt.Sprintf("part %d", i)) {
				t.Fatalf("event %d = %s, want part %d", i, data, i)
			}
		}
		close(hold)
		if data := readEvent(t, r); !strings.Contains(data, `"usage":{"prompt_tokens":11`) {
			t.Errorf("last event before [DONE] = %s, want the usage", data)
		}
		if data := readEvent(t, r); data != "[DONE]" {
			t.Errorf("final event = %q, want [DONE]", data)
		}
		if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
			t.Errorf("after [DONE]: %q, %v", rest, err)
		}
		if ae, ok := e.upstream.Requests()[0].Header["Accept-Encoding"]; ok {
			t.Errorf("stream request reached the upstream with Accept-Encoding %q; want none", ae)
		}

		events := e.usageEvents(t)
		if len(events) != 1 {
			t.Fatalf("%d usage events, want 1", len(events))
		}
		ev := events[0]
		if ev.TokenID != tok.ID || ev.Model != "gpt-stream" || ev.Status != 200 ||
			ev.PromptTokens != 11 || ev.CompletionTokens != 7 || ev.TotalTokens != 18 {
			t.Errorf("usage event %+v, want gpt-stream, 200 and 11+7=18 tokens from the last event", *ev)
		}
	})
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		hold := make(chan struct{}) // never closed: only the cancellation ends the stream
		e := newEnv(t, b, envOptions{upstream: upstreamtest.Options{Chunks: 1, HoldFinal: hold}})
		tok, secret, _ := e.newToken(t)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		req := e.request(t, http.MethodPost, "/v1/chat/completions", secret,
			strings.NewReader(`{"model":"gpt-stream","stream":true}`)).WithContext(ctx)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if data := readEvent(t, bufio.NewReader(resp.Body)); !strings.Contains(data, "part 1") {
			t.Fatalf("first event = %s", data)
		}
		cancel()
		select {
		case <-e.upstream.Canceled():
		case <-time.After(time.Minute):
			t.Fatal("the upstream request was not cancelled after the client left")
		}
		events := e.usageEvents(t)
		if len(events) != 1 || events[0].TokenID != tok.ID || events[0].Status != 499 || events[0].TotalTokens != 0 {
			t.Errorf("usage events %+v, want one, status 499 (the client left), no token counts", events)
		}
	})
}

func TestRequestLimitIsExactUnderConcurrency(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const limit, clients = 50, 200
		e := newEnv(t, b, envOptions{})
		p, _ := e.project(t)
		tok, secret := e.token(t, p.ID, tokenOptions{maxRequests: limit})

		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			statuses = map[int]int{}
			start    = make(chan struct{})
		)
		for range clients {
			wg.Go(func() {
				req := e.request(t, http.MethodPost, "/v1/chat/completions", secret, strings.NewReader(chatBody))
				<-start
				resp, err := e.client.Do(req)
				if err != nil {
					t.Errorf("request: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()

		if statuses[http.StatusOK] != limit || statuses[http.StatusTooManyRequests] != clients-limit || len(statuses) != 2 {
			t.Errorf("statuses %v, want %d × 200 and %d × 429", statuses, limit, clients-limit)
		}
		if n := e.upstream.Count(); n != limit {
			t.Errorf("upstream received %d requests, want %d", n, limit)
		}
		if n := e.requestCount(t, tok.ID); n != limit {
			t.Errorf("request_count = %d, want %d", n, limit)
		}
		if events := e.usageEvents(t); len(events) != limit {
			t.Errorf("%d usage events, want %d", len(events), limit)
		}
	})
}

// TestRequestLimitWaitsForOtherInstancesReservations: the limit counts what
// another instance reserved; a request it refuses waits for what that
// instance gives back unused, so every request the limit has room for is
// admitted, and no more.
func TestRequestLimitWaitsForOtherInstancesReservations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const limit, otherReserved = 30, 5
		e := newEnv(t, b, envOptions{})
		p, _ := e.project(t)
		tok, secret := e.token(t, p.ID, tokenOptions{maxRequests: limit})
		other := e.store
		if _, _, err := other.TokenAdmitByHash(t.Context(), &service.TokenAdmitByHashParams{SecretHash: tok.SecretHash, N: 1, Reserve: otherReserved}); err != nil {
			t.Fatalf("the other instance's admission: %v", err)
		}
		go func() {
			// Its lease ends unused: it gives its reservation back, as its
			// sweeper would, after the clients have used all else.
			time.Sleep(service.AdmissionLease + service.AdmissionLease/2)
			if err := other.TokenSettleReserved(context.Background(), tok.ID, otherReserved, otherReserved); err != nil {
				t.Errorf("the other instance's release: %v", err)
			}
		}()

		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					resp, err := e.client.Do(e.request(t, http.MethodPost, "/v1/chat/completions", secret, strings.NewReader(chatBody)))
					if err != nil {
						t.Errorf("request: %v", err)
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						assertAPIError(t, resp, body, http.StatusTooManyRequests, "rate_limit_error", "request_limit_exceeded")
						return
					}
					admitted.Add(1)
				}
			})
		}
		wg.Wait()
		if got := admitted.Load(); got != limit-1 {
			t.Errorf("%d admitted before the first refusals, want all the %d the other instance left", got, limit-1)
		}
		if got := e.requestCount(t, tok.ID); got != limit {
			t.Errorf("request_count = %d, want %d", got, limit)
		}
	})
}

func TestStateChangesApplyToTheNextRequest(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		ctx := t.Context()
		expect := func(t *testing.T, secret string, status int, code string) {
			t.Helper()
			resp, body := e.chat(t, secret)
			if status == http.StatusOK {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d, body %s; want 200", resp.StatusCode, body)
				}
				return
			}
			assertAPIError(t, resp, body, status, map[int]string{401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}[status], code)
		}
		// busy uses the token enough for it to hold an admission lease with
		// requests reserved and unused, which the change must not let through.
		busy := func(t *testing.T, secret string) {
			t.Helper()
			for range 5 {
				expect(t, secret, 200, "")
			}
		}

		t.Run("RevokeToken", func(t *testing.T) {
			tok, secret, _ := e.newToken(t)
			busy(t, secret)
			if _, err := e.store.TokenUpdate(ctx, &service.TokenUpdateParams{ID: tok.ID, IsActive: new(false)}); err != nil {
				t.Fatal(err)
			}
			expect(t, secret, 401, "token_revoked")
		})
		t.Run("RevokeAllForProject", func(t *testing.T) {
			tok, secret, _ := e.newToken(t)
			busy(t, secret)
			if _, err := e.store.TokenRevokeAllForProject(ctx, tok.ProjectID); err != nil {
				t.Fatal(err)
			}
			expect(t, secret, 401, "token_revoked")
		})
		t.Run("DeactivateAndReactivateProject", func(t *testing.T) {
			tok, secret, _ := e.newToken(t)
			busy(t, secret)
			for _, active := range []bool{false, true} {
				if _, err := e.store.ProjectUpdate(ctx, &service.ProjectUpdateParams{ID: tok.ProjectID, IsActive: &active}); err != nil {
					t.Fatal(err)
				}
				if active {
					expect(t, secret, 200, "")
				} else {
					expect(t, secret, 403, "project_inactive")
				}
			}
		})
		t.Run("LowerLimit", func(t *testing.T) {
			tok, secret, _ := e.newToken(t)
			busy(t, secret)
			if _, err := e.store.TokenUpdate(ctx, &service.TokenUpdateParams{ID: tok.ID, SetMaxRequests: true, MaxRequests: new(int64(1))}); err != nil {
				t.Fatal(err)
			}
			expect(t, secret, 429, "request_limit_exceeded")
		})
		t.Run("NewProjectKey", func(t *testing.T) {
			tok, secret, _ := e.newToken(t)
			busy(t, secret)
			newKey := "sk-rotated-key"
			if _, err := e.store.ProjectUpdate(ctx, &service.ProjectUpdateParams{ID: tok.ProjectID, APIKeyCiphertext: e.keys.Encrypt(newKey)}); err != nil {
				t.Fatal(err)
			}
			expect(t, secret, 200, "")
			reqs := e.upstream.Requests()
			if auth := reqs[len(reqs)-1].Header.Get("Authorization"); auth != "Bearer "+newKey {
				t.Errorf("after a key change the upstream saw %q, want the new key", auth)
			}
		})
	})
}

func TestRequestCountSettlesOnRequestsAdmitted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		tok, secret, _ := e.newToken(t)
		const requests = 20
		for range requests {
			if resp, body := e.chat(t, secret); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, body %s", resp.StatusCode, body)
			}
		}
		if got := e.requestCount(t, tok.ID); got < requests {
			t.Fatalf("request_count = %d during use, below the %d admitted", got, requests)
		}
		if err := e.proxy.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := e.requestCount(t, tok.ID); got != requests {
			t.Errorf("request_count = %d after Close, want the %d admitted", got, requests)
		}
	})
}

func TestUpstreamUnreachable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		// A loopback port nobody listens on any more.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		down := "http://" + l.Addr().String()
		l.Close()
		e := newEnv(t, b, envOptions{upstreamURL: down})
		tok, secret, _ := e.newToken(t)
		resp, body := e.chat(t, secret)
		assertAPIError(t, resp, body, http.StatusBadGateway, "api_error", "upstream_unavailable")
		if n := e.requestCount(t, tok.ID); n != 1 {
			t.Errorf("request_count = %d, want 1 (the request was admitted)", n)
		}
		events := e.usageEvents(t)
		if len(events) != 1 || events[0].Status != http.StatusBadGateway || events[0].Model != "gpt-test" {
			t.Errorf("usage events %+v, want one with status 502 and the request's model", events)
		}
	})
}

// A large body (or one of unknown length) is not read for a token that does
// not exist, so clients without a token cannot make the proxy buffer it.
func TestLargeBodyNotReadForUnknownToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		target, err := url.Parse(e.upstream.URL)
		if err != nil {
			t.Fatal(err)
		}
		h := proxy.New(proxy.Options{Store: e.store, Keys: e.keys, Upstream: target, Recorder: e.recorder})
		t.Cleanup(func() { h.Close(context.Background()) })
		project, _ := e.project(t)
		_, secret := e.token(t, project.ID, tokenOptions{})
		unknown, _ := secrets.NewToken()

		serve := func(secret string, length int64) (*httptest.ResponseRecorder, *countingReader) {
			body := &countingReader{r: strings.NewReader(chatBody)}
			req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", body)
			req.ContentLength = length
			req.Header.Set("Authorization", "Bearer "+secret)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec, body
		}
		for _, length := range []int64{2 << 20, -1} {
			rec, body := serve(unknown, length)
			assertAPIError(t, rec.Result(), rec.Body.Bytes(), 401, "authentication_error", "invalid_token")
			if body.n != 0 {
				t.Errorf("Content-Length %d: read %d body bytes for an unknown token, want 0", length, body.n)
			}
		}
		// A known token's body of unknown length is read and forwarded.
		rec, body := serve(secret, -1)
		if rec.Code != http.StatusOK || body.n != int64(len(chatBody)) {
			t.Fatalf("valid token, unknown length: status %d, read %d bytes: %s", rec.Code, body.n, rec.Body)
		}
	})
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// An upstream that closes its idle keep-alive connections (a restart, an
// idle timeout) costs the next request nothing: a closed connection is
// noticed while idle, or the request is sent again on a new one.
func TestUpstreamDroppingIdleConnections(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		_, secret, _ := e.newToken(t)
		for i := range 5 {
			if resp, body := e.chat(t, secret); resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d after the upstream dropped its connections: status %d, body %s", i, resp.StatusCode, body)
			}
			e.upstream.DropConnections()
		}
		if n := e.upstream.Count(); n != 5 {
			t.Fatalf("upstream saw %d requests, want 5", n)
		}
	})
}
