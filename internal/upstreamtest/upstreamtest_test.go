package upstreamtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/upstreamtest"
)

func post(t *testing.T, ctx context.Context, url, body string, header map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestCompletionEchoesModelAndReportsUsage(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{Usage: upstreamtest.Usage{PromptTokens: 3, CompletionTokens: 4}})
	resp, body, err := post(t, t.Context(), s.URL, `{"model":"m1"}`, map[string]string{"Authorization": "Bearer k"})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Model string             `json:"model"`
		Usage upstreamtest.Usage `json:"usage"`
	}
	if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, body %s: %v", resp.StatusCode, body, err)
	}
	if got.Model != "m1" || got.Usage != (upstreamtest.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}) {
		t.Errorf("got %+v", got)
	}
	reqs := s.Requests()
	if s.Count() != 1 || len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer k" || string(reqs[0].Body) != `{"model":"m1"}` {
		t.Errorf("recorded %d: %+v", s.Count(), reqs)
	}
}

func TestStreamEndsWithUsageAndDone(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{Chunks: 2})
	resp, body, err := post(t, t.Context(), s.URL, `{"stream":true}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	events := strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n\n")
	if resp.Header.Get("Content-Type") != "text/event-stream" || len(events) != 4 ||
		!strings.Contains(events[2], `"total_tokens":18`) || events[3] != "data: [DONE]" {
		t.Errorf("stream: %q", events)
	}
}

func TestFailingModes(t *testing.T) {
	t.Parallel()
	failing := upstreamtest.New(t, upstreamtest.Options{FailStatus: 500})
	resp, body, err := post(t, t.Context(), failing.URL, `{}`, nil)
	if err != nil || resp.StatusCode != 500 || !strings.Contains(string(body), `"code":"upstreamtest_failure"`) {
		t.Errorf("FailStatus: %v %v %s", resp, err, body)
	}
	healthy := upstreamtest.New(t, upstreamtest.Options{})
	resp, _, err = post(t, t.Context(), healthy.URL, `{}`, map[string]string{upstreamtest.HeaderStatus: "429"})
	if err != nil || resp.StatusCode != 429 {
		t.Errorf("%s: %v %v", upstreamtest.HeaderStatus, resp, err)
	}
}

func TestSlowRequestNoticesCancellation(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{Delay: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := http.DefaultClient.Do(req)
		done <- err
	}()
	for i := 0; s.Count() == 0; i++ {
		if i == 60000 {
			t.Fatal("the request never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("client error = %v, want context.Canceled", err)
	}
	<-s.Canceled()
	if n := s.CanceledCount(); n != 1 {
		t.Errorf("CanceledCount = %d, want 1", n)
	}
	resp, _, err := post(t, t.Context(), s.URL, `{}`, map[string]string{upstreamtest.HeaderDelay: "0s"})
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("%s: 0s overrides the slow default: %v %v", upstreamtest.HeaderDelay, resp, err)
	}
}
