package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// The fake upstream's fixed answers. Every request gets the same bytes, so
// the load generator can check that the proxy passed the body unchanged,
// and the same usage, so the harness can check the recorded token counts.
const (
	benchModel        = "bench-model"
	usagePrompt       = 9
	usageCompletion   = 12
	usageTotal        = usagePrompt + usageCompletion
	usageJSON         = `{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}`
	chatRequestBody   = `{"model":"bench-model","messages":[{"role":"user","content":"Hello"}]}`
	streamRequestBody = `{"model":"bench-model","messages":[{"role":"user","content":"Hello"}],"stream":true,"stream_options":{"include_usage":true}}`
)

var chatResponseBody = `{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],` +
	`"usage":` + usageJSON + `}`

// streamEvents are sent (and flushed) one by one: content chunks, the final
// chunk carrying usage, and [DONE].
var streamEvents = func() []string {
	const chunk = `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model",`
	var events []string
	for _, content := range []string{"Hello!", " How can I", " help you today?"} {
		events = append(events, chunk+`"choices":[{"index":0,"delta":{"content":"`+content+`"},"finish_reason":null}]}`+"\n\n")
	}
	events = append(events, chunk+`"choices":[],"usage":`+usageJSON+"}\n\n", "data: [DONE]\n\n")
	return events
}()

var streamResponseBody = strings.Join(streamEvents, "")

// upstream is a fake OpenAI chat-completions server on loopback. Like a
// real one it decodes the request body; "stream": true gets the SSE answer.
type upstream struct {
	URL   string
	srv   *http.Server
	count atomic.Int64 // requests answered; the proxy must forward each admitted request once
}

func startUpstream() (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{URL: "http://" + ln.Addr().String()}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	// Serve returns only when Close is called; a broken listener shows up
	// as failed requests in the run.
	go u.srv.Serve(ln)
	return u, nil
}

func (u *upstream) Close() error { return u.srv.Close() }

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "fake upstream: want a JSON body: "+err.Error(), http.StatusBadRequest)
		return
	}
	u.count.Add(1)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(chatResponseBody))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher, _ := w.(http.Flusher)
	for _, event := range streamEvents {
		if _, err := w.Write([]byte(event)); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}
