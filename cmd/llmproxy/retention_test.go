package main

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// TestServeRollsUpOldUsage: serve prunes at start, by USAGE_RETENTION_DAYS
// (deleting the old raw events and folding their hours into days), and the
// usage totals do not change.
func TestServeRollsUpOldUsage(t *testing.T) {
	t.Parallel()
	for _, b := range testBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			env := b.env(t)
			env["USAGE_RETENTION_DAYS"] = "2"
			cfg, err := service.ConfigFromEnv(func(name string) string { return env[name] })
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now().UTC()
			var events []*service.UsageEventCreateParams
			for _, age := range []time.Duration{240 * time.Hour, 72 * time.Hour, 72 * time.Hour, time.Hour} {
				events = append(events, &service.UsageEventCreateParams{
					TokenID: 1, ProjectID: 1, Method: "POST", Path: "/v1/chat/completions", Model: "gpt-old",
					Status: 200, PromptTokens: 2, CompletionTokens: 3, TotalTokens: 5, CreatedAt: now.Add(-age),
				})
			}
			withStore(t, cfg, func(s service.Store) {
				if _, err := s.UsageInsertBatch(t.Context(), events); err != nil {
					t.Fatal(err)
				}
			})

			s := startServe(t, env)
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(s.stderr.String(), `"deleted":3,"batches":1,"hours":2`); {
				if time.Now().After(deadline) {
					t.Fatalf("serve did not prune the 3 old events:\n%s", s.stderr)
				}
				time.Sleep(10 * time.Millisecond)
			}
			resp, body := call(t, "GET", s.url+"/manage/usage", s.admin, nil)
			var totals map[string]any
			if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &totals) != nil {
				t.Fatalf("GET /manage/usage = %d %s", resp.StatusCode, body)
			}
			want := map[string]any{"requests": 4.0, "errors": 0.0, "prompt_tokens": 8.0, "completion_tokens": 12.0, "total_tokens": 20.0}
			for k, v := range want {
				if !reflect.DeepEqual(totals[k], v) {
					t.Errorf("usage %s = %v, want %v (all events, raw or rolled up): %s", k, totals[k], v, body)
				}
			}
			s.stop()
			if err := s.wait(); err != nil {
				t.Fatalf("serve: %v", err)
			}

			withStore(t, cfg, func(s service.Store) {
				raw, err := s.UsageList(t.Context(), &service.UsageListParams{})
				if err != nil || len(raw) != 1 || !raw[0].CreatedAt.After(now.Add(-2*time.Hour)) {
					t.Errorf("raw usage events after pruning: %d, %v; want only the recent one", len(raw), err)
				}
			})
		})
	}
}

// withStore opens the database of cfg for fn and closes it.
func withStore(t *testing.T, cfg service.Config, fn func(service.Store)) {
	t.Helper()
	s, err := service.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fn(s)
}
