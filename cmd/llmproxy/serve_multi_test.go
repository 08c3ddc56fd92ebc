package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/internal/upstreamtest"
)

// Two instances on one Postgres database behave as one proxy: limits are
// shared exactly, and a revocation through one is refused by the other at once.
func TestServeTwoInstancesShareOnePostgres(t *testing.T) {
	t.Parallel()
	upstream := upstreamtest.New(t, upstreamtest.Options{})
	env := map[string]string{
		"DB_DRIVER":      "postgres",
		"DATABASE_URL":   pgtest.NewDatabase(t),
		"ENCRYPTION_KEY": secrets.NewKey(),
		"UPSTREAM_URL":   upstream.URL,
	}
	a, b := startServe(t, env), startServe(t, env)
	admin := a.admin

	var project map[string]any
	resp, body := call(t, "POST", a.url+"/manage/projects", admin, map[string]string{"name": "shared", "api_key": "sk-upstream-shared"})
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &project) != nil {
		t.Fatalf("create project = %d %s", resp.StatusCode, body)
	}
	newToken := func(maxRequests int) (id, secret string) {
		var token map[string]any
		resp, body := call(t, "POST", a.url+"/manage/tokens", admin, map[string]any{"project_id": project["id"], "duration_minutes": 10, "max_requests": maxRequests})
		if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &token) != nil {
			t.Fatalf("create token = %d %s", resp.StatusCode, body)
		}
		return token["id"].(string), token["token"].(string)
	}
	// chat returns status -1 on a transport error: it also runs off the test goroutine.
	chat := func(url, secret string) (int, string) {
		req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-multi","messages":[]}`))
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1, err.Error()
		}
		defer resp.Body.Close()
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error.Code
	}

	t.Run("LimitSharedExactly", func(t *testing.T) {
		id, secret := newToken(50)
		before := upstream.Count()
		var mu sync.Mutex
		codes := map[int]int{}
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				url := a.url
				if i%2 == 1 {
					url = b.url
				}
				code, _ := chat(url, secret)
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if codes[http.StatusOK] != 50 || codes[http.StatusTooManyRequests] != 150 {
			t.Fatalf("status counts = %v, want 50×200 and 150×429", codes)
		}
		if forwarded := upstream.Count() - before; forwarded != 50 {
			t.Fatalf("upstream saw %d requests, want 50", forwarded)
		}
		var token map[string]any
		_, body := call(t, "GET", b.url+"/manage/tokens/"+id, admin, nil)
		if json.Unmarshal(body, &token) != nil || token["request_count"] != float64(50) {
			t.Fatalf("token seen by the other instance = %s, want request_count 50", body)
		}
	})

	t.Run("RevocationSeenByOtherInstanceAtOnce", func(t *testing.T) {
		id, secret := newToken(0)
		if code, _ := chat(b.url, secret); code != http.StatusOK {
			t.Fatalf("before revoke: %d", code)
		}
		if resp, body := call(t, "DELETE", a.url+"/manage/tokens/"+id, admin, nil); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("revoke = %d %s", resp.StatusCode, body)
		}
		if code, errCode := chat(b.url, secret); code != http.StatusUnauthorized || errCode != "token_revoked" {
			t.Fatalf("after revoke through the other instance: %d %q, want 401 token_revoked", code, errCode)
		}
	})

	t.Run("DeactivationSeenByOtherInstanceAtOnce", func(t *testing.T) {
		_, secret := newToken(0)
		if code, _ := chat(a.url, secret); code != http.StatusOK {
			t.Fatalf("before deactivate: %d", code)
		}
		if resp, body := call(t, "PATCH", b.url+"/manage/projects/"+project["id"].(string), admin, map[string]any{"is_active": false}); resp.StatusCode != http.StatusOK {
			t.Fatalf("deactivate = %d %s", resp.StatusCode, body)
		}
		if code, errCode := chat(a.url, secret); code != http.StatusForbidden || errCode != "project_inactive" {
			t.Fatalf("after deactivation through the other instance: %d %q, want 403 project_inactive", code, errCode)
		}
	})
}
