package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/upstreamtest"
)

// sendChats sends n chat completions with secret from clients goroutines,
// each waiting pause between its requests, and returns a description of
// every request that did not get a 200.
func (e *env) sendChats(secret string, n, clients int, pause time.Duration) []string {
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := c; i < n; i += clients {
				if i >= clients {
					time.Sleep(pause)
				}
				req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(chatBody))
				req.Header.Set("Authorization", "Bearer "+secret)
				req.Header.Set("Content-Type", "application/json")
				resp, err := e.client.Do(req)
				failure := ""
				if err != nil {
					failure = err.Error()
				} else {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						failure = fmt.Sprintf("status %d: %s", resp.StatusCode, body)
					}
				}
				if failure != "" {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("request %d: %s", i, failure))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return failures
}

// checkEveryChatOnce checks that the upstream answered exactly the n
// requests the clients sent (a resend never doubles one) and that usage
// recorded each once, as a 200.
func (e *env) checkEveryChatOnce(t *testing.T, n int) {
	t.Helper()
	if got := e.upstream.Count(); got != int64(n) {
		t.Errorf("the upstream received %d requests; the clients sent %d", got, n)
	}
	events := e.usageEvents(t)
	if len(events) != n {
		t.Fatalf("%d usage events, want %d", len(events), n)
	}
	for _, ev := range events {
		if ev.Status != http.StatusOK {
			t.Errorf("usage event with status %d, want 200", ev.Status)
		}
	}
}

// An upstream that closes each keep-alive connection after 3 answers
// without saying so: the next request written to such a connection fails
// before any answer, and is sent again on a new one. No client sees it,
// and the upstream answers each request once.
func TestUpstreamClosingConnectionsAfterEveryThirdAnswer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{upstream: upstreamtest.Options{CloseAfter: 3}})
		_, secret, _ := e.newToken(t)
		const n = 300
		if failures := e.sendChats(secret, n, 8, 0); len(failures) > 0 {
			t.Fatalf("%d of %d requests failed: %s", len(failures), n, strings.Join(failures[:min(5, len(failures))], "; "))
		}
		if conns := e.upstream.Connections(); conns < n/3 {
			t.Fatalf("the upstream had %d connections for %d requests: it did not close every third", conns, n)
		}
		e.checkEveryChatOnce(t, n)
	})
}

// An upstream that closes connections idle for 30 ms, with requests
// arriving about that often: some of them meet a connection as the
// upstream closes it (uvicorn, and so vLLM, does this after 5 s).
func TestUpstreamClosingIdleConnections(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const idle = 30 * time.Millisecond
		e := newEnv(t, b, envOptions{upstream: upstreamtest.Options{IdleTimeout: idle}})
		_, secret, _ := e.newToken(t)
		const n = 120
		if failures := e.sendChats(secret, n, 4, idle); len(failures) > 0 {
			t.Fatalf("%d of %d requests failed: %s", len(failures), n, strings.Join(failures[:min(5, len(failures))], "; "))
		}
		e.checkEveryChatOnce(t, n)
	})
}
