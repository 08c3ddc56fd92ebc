package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/upstreamtest"
	"github.com/llmproxy/llmproxy/service"
)

// memStore keeps in memory the part of service.Store that setting up a
// token and proxying need, so a benchmark can tell the proxy's own cost
// from the database's. Admission is atomic under mu.
type memStore struct {
	service.Store
	mu       sync.Mutex
	projects []service.Project
	tokens   []service.Token
}

func (s *memStore) ProjectCreate(_ context.Context, p *service.ProjectCreateParams) (*service.Project, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.projects = append(s.projects, service.Project{
		ID: int64(len(s.projects) + 1), Name: p.Name, APIKeyCiphertext: p.APIKeyCiphertext, IsActive: true,
	})
	project := s.projects[len(s.projects)-1]
	return &project, nil
}

func (s *memStore) TokenCreate(_ context.Context, p *service.TokenCreateParams) (*service.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = append(s.tokens, service.Token{
		ID: int64(len(s.tokens) + 1), ProjectID: p.ProjectID, SecretHash: p.SecretHash, ExpiresAt: p.ExpiresAt, IsActive: true,
	})
	token := s.tokens[len(s.tokens)-1]
	return &token, nil
}

func (s *memStore) TokenGetByHash(_ context.Context, hash []byte) (*service.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		if bytes.Equal(t.SecretHash, hash) {
			return &t, nil
		}
	}
	return nil, service.ErrNotFound
}

func (s *memStore) ProjectGetByID(_ context.Context, id int64) (*service.Project, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	project := s.projects[id-1]
	return &project, nil
}

func (s *memStore) TokenAuthenticate(_ context.Context, hash []byte) (*service.Token, *service.Project, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		if !bytes.Equal(t.SecretHash, hash) {
			continue
		}
		project := s.projects[t.ProjectID-1]
		if err := service.AuthenticationRefusal(&t, &project, !time.Now().Before(t.ExpiresAt)); err != nil {
			return nil, nil, err
		}
		return &t, &project, nil
	}
	return nil, nil, service.ErrNotFound
}

func (s *memStore) TokenAdmitByHash(_ context.Context, p *service.TokenAdmitByHashParams) (*service.Token, *service.Project, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.tokens {
		t := &s.tokens[i]
		if !bytes.Equal(t.SecretHash, p.SecretHash) {
			continue
		}
		if !t.IsActive || !time.Now().Before(t.ExpiresAt) {
			return nil, nil, service.ErrTokenRevoked
		}
		t.RequestCount += p.N + p.Reserve
		t.RequestsReserved += p.Reserve
		token, project := *t, s.projects[t.ProjectID-1]
		return &token, &project, nil
	}
	return nil, nil, service.ErrNotFound
}

func (s *memStore) TokenSettleReserved(_ context.Context, id, reserved, unused int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &s.tokens[id-1]
	t.RequestsReserved -= reserved
	t.RequestCount -= unused
	return nil
}

func (s *memStore) UsageInsertBatch(_ context.Context, events []*service.UsageEventCreateParams) (int64, error) {
	return int64(len(events)), nil
}

func (s *memStore) Close() error { return nil }

// BenchmarkProxyChat posts a small chat completion through the proxy (auth,
// admission, forward, usage) to the fake upstream, from 16 clients per CPU
// (32 on the 2-core machines here, like the load harness's c32);
// "direct" is the same request straight to the upstream, for comparison.
func BenchmarkProxyChat(b *testing.B) {
	memory := backend{"memory", func(testing.TB) service.Store { return &memStore{} }}
	for _, be := range append([]backend{memory}, backends...) {
		e := newEnv(b, be, envOptions{})
		_, secret, _ := e.newToken(b)
		if be.name == "memory" {
			b.Run("direct", func(b *testing.B) { benchmarkChat(b, e, e.upstream.URL, "") })
		}
		b.Run(be.name, func(b *testing.B) { benchmarkChat(b, e, e.url, secret) })
	}
}

func benchmarkChat(b *testing.B, e *env, baseURL, secret string) {
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, err := http.NewRequest(http.MethodPost, baseURL+"/v1/chat/completions", strings.NewReader(chatBody))
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			if secret != "" {
				req.Header.Set("Authorization", "Bearer "+secret)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

// BenchmarkProxyStream streams a 100-event completion through the proxy.
func BenchmarkProxyStream(b *testing.B) {
	e := newEnv(b, backend{"memory", func(testing.TB) service.Store { return &memStore{} }},
		envOptions{upstream: upstreamtest.Options{Chunks: 100}})
	_, secret, _ := e.newToken(b)
	body := `{"model":"gpt-stream","stream":true}`
	b.ReportAllocs()
	for b.Loop() {
		req := e.request(b, http.MethodPost, "/v1/chat/completions", secret, strings.NewReader(body))
		resp, err := e.client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
