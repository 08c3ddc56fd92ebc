// Package proxy serves /v1/*: it admits each request against its token
// through the store's atomic admission (so limits are exact across
// instances), forwards it to the upstream with the project's key, streams
// the answer back unchanged, and records one usage event per forwarded
// request.
package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/llmproxy/llmproxy/internal/metrics"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/service"
)

// DefaultMaxRequestBytes bounds a request body the proxy reads (to find the
// model) and forwards.
const DefaultMaxRequestBytes = 32 << 20

// DefaultBodyReadTimeout bounds the time a client takes to send its body.
const DefaultBodyReadTimeout = 60 * time.Second

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
	Metrics  *metrics.Metrics // nil records nothing
	Logger   *slog.Logger     // nil: discard
	// Transport sends requests upstream; nil means NewTransport with the defaults.
	Transport http.RoundTripper
	// MaxRequestBytes bounds request bodies (413 above it); 0 means DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// BodyReadTimeout bounds the time a client takes to send its body (408
	// after it); 0 means DefaultBodyReadTimeout.
	BodyReadTimeout time.Duration
	// AccessLog, when not nil, gets one line per request (access.go).
	AccessLog *slog.Logger
	// ClientAddr names a request's client in the access log (behind a
	// trusted proxy, from X-Forwarded-For); nil: the TCP peer.
	ClientAddr func(*http.Request) string
}

// Handler serves /v1/*. Close it after the last request has finished.
type Handler struct {
	store      service.Store
	admissions *admissionQueue
	keys       *secrets.Keys
	recorder   Recorder
	metrics    *metrics.Metrics
	log        *slog.Logger
	transport  http.RoundTripper
	maxBody    int64
	bodyWait   time.Duration
	accessLog  *slog.Logger // nil: none
	clientAddr func(*http.Request) string

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
		bodyWait:       opts.BodyReadTimeout,
		accessLog:      opts.AccessLog,
		clientAddr:     opts.ClientAddr,
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
		h.transport = NewTransport(TransportOptions{})
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxRequestBytes
	}
	if h.bodyWait <= 0 {
		h.bodyWait = DefaultBodyReadTimeout
	}
	if h.clientAddr == nil {
		h.clientAddr = peerAddr
	}
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{start: time.Now()}
	defer h.logAccess(r, x) // also when the handler aborts the connection
	ctx := r.Context()

	secret, ok := secrets.BearerToken(r.Header.Get("Authorization"))
	if !ok || !secrets.ValidTokenSyntax(secret) {
		h.refuse(w, r, x, errInvalidToken, nil)
		return
	}
	secretHash := h.keys.HashToken(secret)
	// The body is read only for a token that may be admitted, so a client
	// without one cannot make the proxy hold its body or wait for it.
	if hasBody(r) {
		if err := h.authenticate(ctx, secretHash); err != nil {
			h.refuse(w, r, x, storeError(err), err)
			return
		}
	}
	// The body is read before admission so that a request that cannot be
	// forwarded (too large, too slow, client gone) is not counted.
	var own overhead
	reading := time.Now()
	body, apiErr := h.readBody(w, r)
	own.waitedSince(reading) // for the client's body
	x.bodyRead = apiErr == nil
	if apiErr != nil {
		h.refuse(w, r, x, apiErr, nil)
		return
	}
	// Parsed before admission too: a body refused for naming its model
	// twice is not counted.
	fields, apiErr := parseRequest(r.Header.Get("Content-Type"), body)
	if apiErr != nil {
		h.refuse(w, r, x, apiErr, nil)
		return
	}
	token, project, err := h.admit(ctx, secretHash)
	if err != nil {
		h.refuse(w, r, x, storeError(err), err)
		return
	}
	x.tokenID, x.projectID = token.ID, token.ProjectID
	apiKey, err := h.keys.Decrypt(project.APIKeyCiphertext)
	if err != nil {
		h.refuse(w, r, x, errInternal, err)
		return
	}
	h.observeAdmission("admitted")

	ev := &service.UsageEventCreateParams{
		TokenID:   token.ID,
		ProjectID: token.ProjectID,
		Method:    r.Method,
		Path:      r.URL.Path,
		Model:     fields.Model,
		CreatedAt: x.start.UTC(),
	}
	aborted := h.forward(w, r, x, ev, body, fields.Stream, apiKey, &own)
	ev.LatencyMS = time.Since(x.start).Milliseconds()
	x.status, x.model = int(ev.Status), ev.Model
	if !own.answered.IsZero() {
		h.observeOverhead(own.answered.Sub(x.start) - own.waited)
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

// authenticate says whether the token's state lets it be admitted (it
// exists, is active and unexpired, and its project is active), counting
// nothing: from the token's admission lease while one lasts, as admit
// would, else from the database.
func (h *Handler) authenticate(ctx context.Context, secretHash []byte) error {
	if h.admissions.leased(secretHash) {
		return nil
	}
	_, _, err := h.store.TokenAuthenticate(ctx, secretHash)
	return err
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
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, x *exchange, e *apiError, cause error) {
	if r.Context().Err() != nil && e != errBodyTimeout {
		// The client left; whatever failed failed because of that. (A body
		// read past its deadline ends the context too, but the client may
		// still be there to read the 408.)
		x.status = statusClientClosed
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
	if !x.bodyRead && hasBody(r) && r.ProtoMajor == 1 {
		// The body will not be read: close the connection rather than let
		// net/http read (and wait for) what is left of it.
		w.Header().Set("Connection", "close")
	}
	x.status = e.status
	x.requestID = e.write(w)
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

func (h *Handler) observeAdmission(result string) { h.metrics.ObserveAdmission(result) }

func (h *Handler) observeOverhead(elapsed time.Duration) { h.metrics.ObserveOverhead(elapsed) }

func (h *Handler) observeUpstream(code int, elapsed time.Duration) {
	h.metrics.ObserveUpstream(code, elapsed)
}
