package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// Upstream connection settings. They are those a reverse proxy needs (as
// Caddy's sets them): connection set-up bounded, a slow model's headers
// waited for, enough idle connections kept for every client of a busy
// instance, bodies passed byte for byte (no compression added), headers
// bounded.
const (
	DefaultUpstreamIdleTimeout = 90 * time.Second
	upstreamDialTimeout        = 10 * time.Second
	upstreamTCPKeepAlive       = 30 * time.Second
	upstreamTLSTimeout         = 10 * time.Second
	upstreamHeaderTimeout      = 10 * time.Minute
	upstreamMaxIdleConns       = 1024
	upstreamMaxHeaderBytes     = 1 << 20
)

// TransportOptions configure NewTransport; zero values take the defaults.
type TransportOptions struct {
	// IdleTimeout closes a kept-alive upstream connection left idle this
	// long. Below the upstream's own keep-alive timeout (uvicorn's, and so
	// vLLM's, is 5 s), the proxy closes first and never picks a connection
	// the upstream is closing.
	IdleTimeout time.Duration
	// DialContext opens connections; nil means a net.Dialer with the
	// timeouts above. (Tests use it to count connections.)
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSClientConfig, when not nil, verifies https upstreams (a private
	// CA); nil: the system's roots.
	TLSClientConfig *tls.Config
}

// NewTransport is the client for every upstream, http or https (HTTP/2
// when the upstream offers it), honouring HTTP_PROXY and HTTPS_PROXY:
// net/http's Transport, with one addition. A request that failed on a
// reused connection before a single byte of answer arrived is sent once
// more on a new connection: the upstream closed that connection as the
// request went out (an idle timeout, or a server that closes after N
// answers without saying so), so it did not process the request there.
// Browsers do the same; net/http itself does it only for requests it
// considers idempotent, which a POST is not.
func NewTransport(opts TransportOptions) http.RoundTripper {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultUpstreamIdleTimeout
	}
	if opts.DialContext == nil {
		opts.DialContext = (&net.Dialer{Timeout: upstreamDialTimeout, KeepAlive: upstreamTCPKeepAlive}).DialContext
	}
	pooled := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            opts.DialContext,
		ForceAttemptHTTP2:      true, // a custom DialContext turns it off otherwise
		MaxIdleConns:           upstreamMaxIdleConns,
		MaxIdleConnsPerHost:    upstreamMaxIdleConns,
		IdleConnTimeout:        opts.IdleTimeout,
		TLSHandshakeTimeout:    upstreamTLSTimeout,
		ResponseHeaderTimeout:  upstreamHeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: upstreamMaxHeaderBytes,
		DisableCompression:     true,
		TLSClientConfig:        opts.TLSClientConfig,
	}
	fresh := pooled.Clone()
	fresh.DisableKeepAlives = true // a new connection for the one resend, kept for nothing else
	return &resendingTransport{pooled: pooled, fresh: fresh}
}

// resendingTransport is net/http's Transport plus the one resend of
// NewTransport's comment.
type resendingTransport struct {
	pooled, fresh *http.Transport
}

func (t *resendingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reused, answering atomic.Bool // set from the Transport's goroutines
	trace := &httptrace.ClientTrace{
		GotConn:              func(info httptrace.GotConnInfo) { reused.Store(info.Reused) },
		GotFirstResponseByte: func() { answering.Store(true) },
	}
	resp, err := t.pooled.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err == nil || !reused.Load() || answering.Load() || !resendable(req, err) {
		return resp, err
	}
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		if again.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	return t.fresh.RoundTrip(again)
}

// resendable says whether a request that failed with err before any
// answer may be sent again: its body can be sent again, the client is
// still waiting, and the failure is not a timeout (after one, the upstream
// may well be working on it).
func resendable(req *http.Request, err error) bool {
	if req.Context().Err() != nil {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	var netErr net.Error
	return !errors.As(err, &netErr) || !netErr.Timeout()
}

// CloseIdleConnections closes the kept-alive connections (at shutdown).
func (t *resendingTransport) CloseIdleConnections() {
	t.pooled.CloseIdleConnections()
}
