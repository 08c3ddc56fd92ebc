// Package proxy serves /v1/*: it admits each request against its token
// through the store's atomic admission (so limits are exact across
// instances), forwards it to the upstream with the project's key, streams
// the answer back unchanged, and records one usage event per forwarded
// request.
package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/llmproxy/llmproxy/internal/metrics"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/internal/upstream"
	"github.com/llmproxy/llmproxy/service"
)

// DefaultMaxRequestBytes bounds a request body the proxy reads (to find the
// model) and forwards.
const DefaultMaxRequestBytes = 32 << 20

// unauthenticatedBodyBytes is the most the proxy buffers before it knows the
// token exists; a typical chat request is far smaller.
const unauthenticatedBodyBytes = 1 << 20

// statusClientClosed is recorded (nginx's convention) when the client went
// away before the upstream answered; no response reaches anyone.
const statusClientClosed = 499

// Recorder takes one usage event per forwarded request; *usage.Recorder is one.
type Recorder interface {
	Record(ctx context.Context, ev *service.UsageEventCreateParams) error
}

// Options are New's dependencies. Store, Keys, Upstream and Recorder are required.
type Options struct {
	Store    service.Store
	Keys     *secrets.Keys
	Upstream *url.URL // base URL; the request path (/v1/...) is appended unchanged
	Recorder Recorder
	Metrics  *metrics.Metrics // nil: no metrics
	Logger   *slog.Logger     // nil: discard
	// Transport sends requests upstream; nil means NewTransport(Upstream).
	Transport http.RoundTripper
	// MaxRequestBytes bounds request bodies (413 above it); 0 means DefaultMaxRequestBytes.
	MaxRequestBytes int64
}

// NewTransport is the default transport to the upstream at base. A plain
// http:// upstream reached without an HTTP proxy gets upstream.Transport,
// a keep-alive pool without net/http's per-connection goroutines (the
// cheaper leg on a loaded machine; docs/performance.md). Anything else
// (TLS with HTTP/2, HTTP_PROXY) gets net/http's Transport. Both bound
// connection set-up, wait up to 10 minutes for a slow model's headers,
// and leave compression to the client, so bodies pass through byte for
// byte.
func NewTransport(base *url.URL) http.RoundTripper {
	if proxyURL, err := http.ProxyFromEnvironment(&http.Request{URL: base}); base.Scheme == "http" && proxyURL == nil && err == nil {
		return &upstream.Transport{} // its defaults are the settings below
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: upstream.DefaultDialTimeout, KeepAlive: upstream.DefaultTCPKeepAlive}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          upstream.DefaultMaxIdleConns,
		MaxIdleConnsPerHost:   upstream.DefaultMaxIdleConns,
		IdleConnTimeout:       upstream.DefaultIdleConnTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: upstream.DefaultResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// Handler serves /v1/*. Close it after the last request has finished.
type Handler struct {
	store      service.Store
	admissions *admissionQueue // when the store can admit in one statement
	keys       *secrets.Keys
	recorder   Recorder
	metrics    *metrics.Metrics
	log        *slog.Logger
	transport  http.RoundTripper
	maxBody    int64

	// The upstream base, split once: scheme, host, and path without a
	// trailing slash, decoded and escaped.
	scheme, host          string
	basePath, baseRawPath string
	baseHasRawPath        bool
}

// New returns the /v1/* handler. It panics if a required option is missing,
// which is a programming error, not a configuration one.
func New(opts Options) *Handler {
	if opts.Store == nil || opts.Keys == nil || opts.Upstream == nil || opts.Recorder == nil {
		panic("proxy.New: Store, Keys, Upstream and Recorder are required")
	}
	h := &Handler{
		store:          opts.Store,
		keys:           opts.Keys,
		recorder:       opts.Recorder,
		metrics:        opts.Metrics,
		log:            opts.Logger,
		transport:      opts.Transport,
		maxBody:        opts.MaxRequestBytes,
		scheme:         opts.Upstream.Scheme,
		host:           opts.Upstream.Host,
		basePath:       strings.TrimSuffix(opts.Upstream.Path, "/"),
		baseRawPath:    strings.TrimSuffix(opts.Upstream.EscapedPath(), "/"),
		baseHasRawPath: opts.Upstream.RawPath != "",
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.admissions = newAdmissionQueue(opts.Store, h.log)
	if h.transport == nil {
		h.transport = NewTransport(opts.Upstream)
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxRequestBytes
	}
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx := r.Context()

	secret, ok := secrets.BearerToken(r.Header.Get("Authorization"))
	if !ok || !secrets.ValidTokenSyntax(secret) {
		h.refuse(w, r, errInvalidToken, nil)
		return
	}
	secretHash := h.keys.HashToken(secret)
	// A large body, or one of unknown length, is buffered only for a token
	// that exists, so a client without one cannot make the proxy hold
	// megabytes per request.
	if r.ContentLength > unauthenticatedBodyBytes || r.ContentLength < 0 {
		if _, err := h.store.TokenGetByHash(ctx, secretHash); err != nil {
			h.refuse(w, r, storeError(err), err)
			return
		}
	}
	// The body is read before admission so that a request that cannot be
	// forwarded (too large, client gone) is not counted against the token.
	var own overhead
	reading := time.Now()
	body, apiErr := h.readBody(w, r)
	own.waitedSince(reading) // for the client's body
	if apiErr != nil {
		h.refuse(w, r, apiErr, nil)
		return
	}
	token, project, err := h.admit(ctx, secretHash)
	if err != nil {
		h.refuse(w, r, storeError(err), err)
		return
	}
	apiKey, err := h.keys.Decrypt(project.APIKeyCiphertext)
	if err != nil {
		h.refuse(w, r, errInternal, err)
		return
	}
	h.observeAdmission("admitted")

	fields := parseRequest(body)
	ev := &service.UsageEventCreateParams{
		TokenID:   token.ID,
		ProjectID: token.ProjectID,
		Method:    r.Method,
		Path:      r.URL.Path,
		Model:     fields.Model,
		CreatedAt: start.UTC(),
	}
	aborted := h.forward(w, r, ev, body, fields.Stream, apiKey, &own)
	ev.LatencyMS = time.Since(start).Milliseconds()
	if !own.answered.IsZero() {
		h.observeOverhead(own.answered.Sub(start) - own.waited)
	}
	// Record waits only when the usage queue is full (back-pressure); the
	// client's departure must not cancel that wait and lose the event.
	if err := h.recorder.Record(context.WithoutCancel(ctx), ev); err != nil {
		h.log.Error("proxy: usage event not recorded", "error", err,
			"token_id", ev.TokenID, "project_id", ev.ProjectID, "path", ev.Path, "status", ev.Status)
	}
	if aborted {
		panic(http.ErrAbortHandler)
	}
}

// Close ends the admission leases and gives back the requests they
// reserved and did not use, so that request_count equals the requests
// admitted. Requests served after Close are admitted one statement at a time.
func (h *Handler) Close(ctx context.Context) error {
	return h.admissions.Close(ctx)
}

// admit authenticates the request by its secret's hash and makes the one
// atomic decision (revocation, expiry, project state and the request limit
// as the database sees them now), returning the token and its project, in
// one statement shared by the token's requests that arrive together.
func (h *Handler) admit(ctx context.Context, secretHash []byte) (*service.Token, *service.Project, error) {
	return h.admissions.admit(ctx, secretHash)
}

// refuse answers a request that will not be forwarded. cause, when not
// nil, is the store or decryption error behind it, logged when it is ours.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, e *apiError, cause error) {
	if r.Context().Err() != nil {
		// The client left; whatever failed failed because of that.
		w.WriteHeader(statusClientClosed)
		return
	}
	switch e {
	case errInternal:
		h.log.Error("proxy: request failed", "error", cause, "path", r.URL.Path)
	case errDatabaseUnavailable:
		h.log.Warn("proxy: database unavailable", "error", cause, "path", r.URL.Path)
	}
	h.observeAdmission(e.code)
	e.write(w)
}

// storeError maps a store error to the answer the client gets.
func storeError(err error) *apiError {
	switch {
	case errors.Is(err, service.ErrTokenExpired):
		return errTokenExpired
	case errors.Is(err, service.ErrTokenRevoked):
		return errTokenRevoked
	case errors.Is(err, service.ErrProjectInactive):
		return errProjectInactive
	case errors.Is(err, service.ErrLimitReached):
		return errRequestLimit
	case errors.Is(err, service.ErrNotFound):
		return errInvalidToken
	case errors.Is(err, service.ErrUnavailable):
		return errDatabaseUnavailable
	}
	return errInternal
}

// readBody reads the whole request body, up to maxBody.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	if r.ContentLength > h.maxBody {
		return nil, errBodyTooLarge
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	if r.ContentLength > 0 {
		body := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, errBadBody
		}
		return body, nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errBodyTooLarge
		}
		return nil, errBadBody
	}
	return body, nil
}

func (h *Handler) observeAdmission(result string) {
	if h.metrics != nil {
		h.metrics.ObserveAdmission(result)
	}
}

func (h *Handler) observeOverhead(elapsed time.Duration) {
	if h.metrics != nil {
		h.metrics.ObserveOverhead(elapsed)
	}
}

func (h *Handler) observeUpstream(code int, elapsed time.Duration) {
	if h.metrics != nil {
		h.metrics.ObserveUpstream(code, elapsed)
	}
}
