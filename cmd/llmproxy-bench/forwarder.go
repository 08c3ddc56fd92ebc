package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/llmproxy/llmproxy/internal/proxy"
)

// The reference forwarder (backend "forwarder") makes the same two hops as
// llmproxy — a net/http server in front, llmproxy's upstream transport
// (proxy.NewTransport) behind, streams flushed as they pass — and nothing else: no token, no
// database, no usage record. Its rows tell what one more process and one
// more loopback hop cost on the machine, apart from what llmproxy's
// features cost. The harness runs its own binary with this argument.
const forwarderCommand = "forwarder"

// runForwarder serves on LISTEN_ADDR until SIGTERM, forwarding to
// UPSTREAM_URL, and logs its address as llmproxy does.
func runForwarder(stderr io.Writer) int {
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	base, err := url.Parse(os.Getenv("UPSTREAM_URL"))
	if err != nil || base.Scheme != "http" || base.Host == "" {
		log.Error("UPSTREAM_URL: want an http:// URL", "value", os.Getenv("UPSTREAM_URL"))
		return 2
	}
	ln, err := net.Listen("tcp", os.Getenv("LISTEN_ADDR"))
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	srv := &http.Server{Handler: &forwarder{base: base, transport: proxy.NewTransport(proxy.TransportOptions{})}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	select {
	case err = <-errc:
	case <-ctx.Done():
		err = srv.Shutdown(context.Background())
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		return 1
	}
	return 0
}

var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

type forwarder struct {
	base      *url.URL
	transport http.RoundTripper
}

func (f *forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Read whole first, as llmproxy does: net/http's server may refuse
	// further reads of a request body once part of the answer is flushed,
	// which would break off a request the transport is still writing.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, fmt.Sprintf("forwarder: reading the body: %v", err), http.StatusBadRequest)
		return
	}
	out := r.Clone(r.Context())
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	out.RequestURI, out.Host = "", ""
	out.URL.Scheme, out.URL.Host = f.base.Scheme, f.base.Host
	resp, err := f.transport.RoundTrip(out)
	if err != nil {
		http.Error(w, fmt.Sprintf("forwarder: %v", err), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for name, values := range resp.Header {
		w.Header()[name] = values
	}
	w.WriteHeader(resp.StatusCode)
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	io.CopyBuffer(flushWriter{w, http.NewResponseController(w)}, resp.Body, *bufp)
}

// flushWriter sends each piece on at once, as llmproxy does for streams.
type flushWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (f flushWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}
