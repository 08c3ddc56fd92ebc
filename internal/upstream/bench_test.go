package upstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkRoundTrip posts a small JSON body and reads a small JSON answer
// through this Transport and through net/http's, from 16 clients per CPU.
func BenchmarkRoundTrip(b *testing.B) {
	answer := `{"id":"x","object":"chat.completion","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	b.Cleanup(srv.Close)
	transports := []struct {
		name string
		rt   http.RoundTripper
	}{
		{"upstream", &Transport{}},
		{"net-http", &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}},
	}
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
					resp, err := tr.rt.RoundTrip(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}
