// Package server is llmproxy's HTTP surface: the management API under
// /manage, the operations endpoints, and /v1 handed to the proxy.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/llmproxy/llmproxy/internal/authlimit"
	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/internal/metrics"
	"github.com/llmproxy/llmproxy/internal/proxy"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/service"
)

// Codes of errors made here rather than by manage.
const (
	codeUnauthorized     = "unauthorized"
	codeTooManyAttempts  = "too_many_attempts"
	codeMethodNotAllowed = "method_not_allowed"
	codeBodyTooLarge     = "body_too_large"
)

// readyTimeout bounds the database ping of /ready, so a hung database
// answers 503 rather than never.
const readyTimeout = 2 * time.Second

// Options are the server's parts. All are required except Proxy (no /v1
// routes without it), Admin (no /admin/ dashboard), Metrics (nil: nothing
// recorded, /metrics empty), AuthLimiter (nil: one of its own) and Logger
// (nil: discarded).
type Options struct {
	Store           service.Store
	Manager         *manage.Manager
	Metrics         *metrics.Metrics
	Proxy           http.Handler
	Admin           http.Handler // serves every path under /admin/
	ManagementToken string
	// AuthLimiter throttles failed management authentication per client;
	// the dashboard's login should share it. nil: one of its own.
	AuthLimiter *authlimit.Limiter
	Logger      *slog.Logger
}

type server struct {
	Options
	// managementTokenSum is compared with the presented token's hash, in
	// constant time and independent of the token's length.
	managementTokenSum [sha256.Size]byte
}

// route is one management route; handle returns the status and the value to
// send as JSON (nil: no body), or an error.
type route struct {
	method, path string
	handle       func(r *http.Request) (int, any, error)
}

// New returns the handler for every route, wrapped with metrics.
func New(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.AuthLimiter == nil {
		opts.AuthLimiter = authlimit.New(authlimit.Options{})
	}
	s := &server{Options: opts, managementTokenSum: sha256.Sum256([]byte(opts.ManagementToken))}
	mux := http.NewServeMux()

	s.handleMethods(mux, "/health", map[string]http.Handler{http.MethodGet: http.HandlerFunc(s.health)})
	s.handleMethods(mux, "/ready", map[string]http.Handler{http.MethodGet: http.HandlerFunc(s.ready)})
	s.handleMethods(mux, "/metrics", map[string]http.Handler{http.MethodGet: opts.Metrics.Handler()})
	if opts.Proxy != nil {
		mux.Handle("/v1/", opts.Proxy)
	}
	if opts.Admin != nil {
		mux.Handle("/admin/", opts.Admin)
	}

	routes := []route{
		{http.MethodPost, "/manage/projects", s.createProject},
		{http.MethodGet, "/manage/projects", s.listProjects},
		{http.MethodGet, "/manage/projects/{id}", s.getProject},
		{http.MethodPatch, "/manage/projects/{id}", s.updateProject},
		{http.MethodPost, "/manage/projects/{id}/tokens/revoke", s.revokeProjectTokens},
		{http.MethodPost, "/manage/tokens", s.createToken},
		{http.MethodGet, "/manage/tokens", s.listTokens},
		{http.MethodGet, "/manage/tokens/{id}", s.getToken},
		{http.MethodPatch, "/manage/tokens/{id}", s.updateToken},
		{http.MethodDelete, "/manage/tokens/{id}", s.deleteToken},
		{http.MethodGet, "/manage/audit", s.listAudit},
		{http.MethodGet, "/manage/usage", s.usage},
	}
	byPath := map[string]map[string]http.Handler{}
	var paths []string
	for _, rt := range routes {
		if byPath[rt.path] == nil {
			byPath[rt.path] = map[string]http.Handler{}
			paths = append(paths, rt.path)
		}
		byPath[rt.path][rt.method] = s.authorize(s.api(rt.handle))
	}
	for _, path := range paths {
		s.handleMethods(mux, path, byPath[path])
	}
	mux.Handle("/manage/", s.authorize(http.HandlerFunc(s.notFound)))
	mux.HandleFunc("/", s.notFound)
	// Ahead of the mux, which would redirect plain dot segments elsewhere.
	return opts.Metrics.Middleware(proxy.RefuseUnsafePaths(mux, "/v1/"))
}

// handleMethods registers a handler per method for path, and for every other
// method a JSON 405 that lists the allowed ones (ServeMux's own is plain text).
func (s *server) handleMethods(mux *http.ServeMux, path string, handlers map[string]http.Handler) {
	allowed := make([]string, 0, len(handlers)+1)
	for method, h := range handlers {
		mux.Handle(method+" "+path, h)
		allowed = append(allowed, method)
		if method == http.MethodGet {
			allowed = append(allowed, http.MethodHead) // ServeMux routes HEAD to GET
		}
	}
	slices.Sort(allowed)
	allow := strings.Join(allowed, ", ")
	notAllowed := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		s.writeError(w, r, &manage.Error{Code: codeMethodNotAllowed, Message: r.Method + " is not allowed here; allowed: " + allow})
	}))
	if strings.HasPrefix(path, "/manage/") {
		notAllowed = s.authorize(notAllowed)
	}
	mux.Handle(path, notAllowed)
}

// authorize lets through requests that present the management token. A
// client with too many recent failures is refused whatever it presents,
// so the token cannot be guessed at network speed.
func (s *server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempt, wait := s.AuthLimiter.Begin(r)
		if attempt == nil {
			retry := authlimit.RetryAfter(wait)
			w.Header().Set("Retry-After", strconv.Itoa(retry))
			s.writeError(w, r, &manage.Error{Code: codeTooManyAttempts,
				Message: "too many failed management authentication attempts from this address; retry in " + strconv.Itoa(retry) + " s"})
			return
		}
		token, ok := secrets.BearerToken(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(token))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.managementTokenSum[:]) != 1 {
			// Never the token tried: it may be a real secret sent to the wrong place.
			s.Logger.Warn("management authentication failed", "client", attempt.Client, "method", r.Method, "path", r.URL.Path, "failures", attempt.Failures)
			w.Header().Set("WWW-Authenticate", `Bearer realm="llmproxy management"`)
			s.writeError(w, r, &manage.Error{Code: codeUnauthorized, Message: "missing or invalid management token (Authorization: Bearer <MANAGEMENT_TOKEN>)"})
			return
		}
		attempt.Succeeded()
		next.ServeHTTP(w, r)
	})
}

// api adapts a route's handle function to http.Handler, with the body
// limited to maxBodyBytes.
func (s *server) api(handle func(r *http.Request) (int, any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		status, body, err := handle(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if body == nil {
			w.WriteHeader(status)
			return
		}
		writeJSON(w, status, body)
	})
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := s.Store.Ping(ctx); err != nil {
		s.Logger.Warn("not ready: database ping failed", "err", err)
		s.writeError(w, r, &manage.Error{Code: manage.CodeDatabaseUnavailable, Message: "database unavailable", Err: err})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, &manage.Error{Code: manage.CodeNotFound, Message: "no route for " + r.Method + " " + r.URL.Path})
}

// statuses maps error codes to HTTP statuses; unknown codes are 500.
var statuses = map[string]int{
	manage.CodeInvalidRequest:      http.StatusBadRequest,
	manage.CodeInvalidJSON:         http.StatusBadRequest,
	codeUnauthorized:               http.StatusUnauthorized,
	codeTooManyAttempts:            http.StatusTooManyRequests,
	manage.CodeProjectInactive:     http.StatusForbidden,
	manage.CodeNotFound:            http.StatusNotFound,
	codeMethodNotAllowed:           http.StatusMethodNotAllowed,
	manage.CodeConflict:            http.StatusConflict,
	codeBodyTooLarge:               http.StatusRequestEntityTooLarge,
	manage.CodeDatabaseUnavailable: http.StatusServiceUnavailable,
	manage.CodeCanceled:            http.StatusServiceUnavailable,
}

// writeError sends {"error", "code"}. Only an *manage.Error's message is
// shown; anything else is logged and answered with a bare internal_error.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, message, cause := manage.CodeInternal, "internal error", err
	if e, ok := errors.AsType[*manage.Error](err); ok {
		code, message = e.Code, e.Message
		if e.Err != nil {
			cause = e.Err // the message is for the client; the log needs what failed
		}
	}
	status, ok := statuses[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if status >= http.StatusInternalServerError {
		s.Logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", cause)
	}
	writeJSON(w, status, errorBody{Error: message, Code: code})
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store") // responses may carry a token secret
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // JSON for programs, not for embedding in HTML
	_ = enc.Encode(body)     // the client may be gone; nothing to do about it
}

// actor names who made a management change for the audit log: the API and
// the client's address (the one shared token identifies nobody further).
func (s *server) actor(r *http.Request) string {
	return "api@" + s.AuthLimiter.ClientAddr(r)
}
