// Package admin is the browser dashboard served at /admin/: server-rendered
// pages for projects, tokens, usage and the audit log, signed in with the
// management token. Every change goes through manage.Manager, so it is
// validated and audited exactly like the API, with actor "admin-ui".
// Pages work without JavaScript; the one script only adds copy buttons.
package admin

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/llmproxy/llmproxy/internal/authlimit"
	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/service"
)

// Prefix is where the dashboard is mounted.
const Prefix = "/admin/"

// Actor names the dashboard in audit events.
const Actor = "admin-ui"

// DefaultSessionTTL is how long a login lasts.
const DefaultSessionTTL = 12 * time.Hour

// maxFormBytes bounds a form body; the largest field is an upstream key.
const maxFormBytes = 64 << 10

//go:embed templates static
var assets embed.FS

// Options are the dashboard's parts; Logger may be nil (discarded).
type Options struct {
	Manager *manage.Manager
	// Store keeps the sessions and serves the reads the Manager has no
	// paging for (the audit log).
	Store           service.Store
	ManagementToken string
	// AuthLimiter throttles failed logins per client; share the management
	// API's, so both count against one limit. nil: one of its own.
	AuthLimiter *authlimit.Limiter
	Logger      *slog.Logger
	SessionTTL  time.Duration // 0: DefaultSessionTTL
	Now         func() time.Time
}

type handler struct {
	manager  *manage.Manager
	store    service.Store
	log      *slog.Logger
	now      func() time.Time
	sessions *sessions
	limiter  *authlimit.Limiter
	// tokenSum is compared with the hash of a presented token, in constant
	// time whatever the lengths.
	tokenSum [sha256.Size]byte
}

// authedFunc is a page or form handler behind the login.
type authedFunc func(w http.ResponseWriter, r *http.Request, sess *session)

// New returns the dashboard handler for every path under Prefix.
func New(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.AuthLimiter == nil {
		opts.AuthLimiter = authlimit.New(authlimit.Options{})
	}
	h := &handler{
		manager: opts.Manager, store: opts.Store, log: opts.Logger, now: opts.Now,
		sessions: newSessions(opts.Store, opts.Logger, opts.ManagementToken, opts.SessionTTL, opts.Now),
		limiter:  opts.AuthLimiter,
		tokenSum: sha256.Sum256([]byte(opts.ManagementToken)),
	}

	mux := http.NewServeMux()
	mux.Handle("GET /admin/static/", staticHandler())
	mux.HandleFunc("GET /admin/login", h.loginPage)
	mux.HandleFunc("POST /admin/login", h.login)
	pages := map[string]authedFunc{
		"POST /admin/logout":                      h.logout,
		"GET /admin/{$}":                          h.home,
		"GET /admin/projects":                     h.projectsPage,
		"POST /admin/projects":                    h.createProject,
		"GET /admin/projects/{id}":                h.projectPage,
		"POST /admin/projects/{id}":               h.updateProject,
		"POST /admin/projects/{id}/active":        h.setProjectActive,
		"POST /admin/projects/{id}/revoke-tokens": h.revokeProjectTokens,
		"GET /admin/tokens":                       h.tokensPage,
		"POST /admin/tokens":                      h.createToken,
		"POST /admin/tokens/{id}/revoke":          h.revokeToken,
		"GET /admin/usage":                        h.usagePage,
		"GET /admin/audit":                        h.auditPage,
		"/admin/":                                 h.notFound,
	}
	for pattern, page := range pages {
		mux.Handle(pattern, h.authenticated(page))
	}

	// Forms carry a per-session token; this also refuses cross-origin
	// browser posts (Sec-Fetch-Site, else Origin against Host), login included.
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.renderError(w, r, h.sessions.get(r), http.StatusForbidden, "This form was sent from another site, so it was refused.")
	}))
	return securityHeaders(csrf.Handler(mux))
}

// securityHeaders keeps pages out of caches and frames, and lets them load
// only the dashboard's own style sheet and script.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "+
			"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, Prefix+"static/") {
			h.Set("Cache-Control", "no-store") // pages may show a token secret
		}
		next.ServeHTTP(w, r)
	})
}

// staticHandler serves the embedded CSS and script with an ETag, so
// browsers revalidate cheaply and never run a stale copy.
func staticHandler() http.Handler {
	static, _ := fs.Sub(assets, "static") // the directory is embedded
	etags := map[string]string{}
	_ = fs.WalkDir(static, ".", func(name string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := fs.ReadFile(static, name)
			sum := sha256.Sum256(data)
			etags["/"+name] = `"` + hex.EncodeToString(sum[:8]) + `"`
		}
		return nil
	})
	files := http.StripPrefix("/admin/static", http.FileServerFS(static))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		etag, ok := etags[strings.TrimPrefix(r.URL.Path, "/admin/static")]
		if !ok {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// authenticated sends visitors without a session to the login page and,
// for posts, checks the form's CSRF token.
func (h *handler) authenticated(page authedFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess := h.sessions.get(r)
		if sess == nil {
			target := Prefix + "login"
			if r.Method == http.MethodGet && r.URL.Path != Prefix {
				target += "?next=" + url.QueryEscape(r.URL.RequestURI())
			}
			http.Redirect(w, r, target, http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := r.ParseForm(); err != nil {
				h.renderError(w, r, sess, http.StatusBadRequest, "The form could not be read.")
				return
			}
			if !sess.validCSRF(r.PostForm.Get("csrf")) {
				h.renderError(w, r, sess, http.StatusForbidden, "The form has expired or did not come from this dashboard. Reload the page and try again.")
				return
			}
		}
		page(w, r, sess)
	})
}

func (h *handler) validToken(token string) bool {
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], h.tokenSum[:]) == 1
}

type loginView struct {
	Next  string
	Error string
}

func (h *handler) loginPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if h.sessions.get(r) != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	h.render(w, r, nil, http.StatusOK, "login", "Log in", loginView{Next: next})
}

// login starts a session for the right token. A client with too many
// recent failures is refused whatever it sends (429), as on /manage.
func (h *handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.renderError(w, r, nil, http.StatusBadRequest, "The form could not be read.")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	attempt, wait := h.limiter.Begin(r)
	if attempt == nil {
		retry := authlimit.RetryAfter(wait)
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		h.render(w, r, nil, http.StatusTooManyRequests, "login", "Log in", loginView{Next: next,
			Error: fmt.Sprintf("Too many failed logins from your address. Try again in %d seconds.", retry)})
		return
	}
	token := r.PostForm.Get("token")
	if token == "" {
		attempt.Succeeded() // no token was tried
		h.render(w, r, nil, http.StatusUnauthorized, "login", "Log in", loginView{Next: next, Error: "Enter the management token."})
		return
	}
	if !h.validToken(token) {
		// Never the token tried: it may be a real secret typed into the wrong place.
		h.log.Warn("management authentication failed", "client", attempt.Client, "method", r.Method, "path", r.URL.Path, "failures", attempt.Failures)
		h.render(w, r, nil, http.StatusUnauthorized, "login", "Log in", loginView{Next: next, Error: "That is not the management token."})
		return
	}
	attempt.Succeeded()
	if _, err := h.sessions.start(w, r); err != nil {
		h.fail(w, r, nil, err)
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *handler) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	if err := h.sessions.end(w, r, sess); err != nil {
		h.fail(w, r, sess, err)
		return
	}
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

func (h *handler) home(w http.ResponseWriter, r *http.Request, sess *session) {
	http.Redirect(w, r, Prefix+"projects", http.StatusSeeOther)
}

func (h *handler) notFound(w http.ResponseWriter, r *http.Request, sess *session) {
	h.renderError(w, r, sess, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
}

// safeNext keeps post-login redirects inside the dashboard.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(path.Clean(u.Path)+"/", Prefix) ||
		strings.HasPrefix(next, "//") || strings.Contains(next, `\`) {
		return Prefix + "projects"
	}
	return u.RequestURI()
}

// redirectWith sends the browser to target with a message for the next page.
func (h *handler) redirectWith(w http.ResponseWriter, r *http.Request, target string, f flash) {
	h.sessions.setFlash(w, r, f)
	http.Redirect(w, r, safeNext(target), http.StatusSeeOther)
}

// statuses gives the HTTP status of a manage error code, as the API does.
var statuses = map[string]int{
	manage.CodeInvalidRequest:      http.StatusBadRequest,
	manage.CodeNotFound:            http.StatusNotFound,
	manage.CodeConflict:            http.StatusConflict,
	manage.CodeProjectInactive:     http.StatusForbidden,
	manage.CodeDatabaseUnavailable: http.StatusServiceUnavailable,
	manage.CodeCanceled:            http.StatusServiceUnavailable,
}

// userError returns the status and message to show for err when it is one
// the user can act on (bad input, a taken name, an unavailable database).
func userError(err error) (int, string, bool) {
	e, ok := errors.AsType[*manage.Error](err)
	if !ok {
		return 0, "", false
	}
	status, ok := statuses[e.Code]
	if !ok {
		return 0, "", false
	}
	return status, e.Message, true
}

// fail renders err as an error page; unexpected errors are logged, not shown.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	if status, message, ok := userError(err); ok {
		if status >= http.StatusInternalServerError {
			h.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "code", manage.Code(err), "err", errors.Unwrap(err))
		}
		h.renderError(w, r, sess, status, message)
		return
	}
	if errors.Is(err, service.ErrUnavailable) { // a store read the Manager did not classify
		h.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		h.renderError(w, r, sess, http.StatusServiceUnavailable, "database unavailable, try again")
		return
	}
	h.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	h.renderError(w, r, sess, http.StatusInternalServerError, "Something went wrong; the error was logged.")
}

type errorView struct {
	Status  int
	Message string
}

func (h *handler) renderError(w http.ResponseWriter, r *http.Request, sess *session, status int, message string) {
	h.render(w, r, sess, status, "error", http.StatusText(status), errorView{Status: status, Message: message})
}

// view is what every template receives.
type view struct {
	Title string
	Nav   string // the page's top-level section, marked as current
	CSRF  string // empty when signed out
	Flash *flash
	Page  any
}

// render executes a page into a buffer first, so a template error becomes a
// clean 500 rather than half a page.
func (h *handler) render(w http.ResponseWriter, r *http.Request, sess *session, status int, name, title string, page any) {
	v := view{Title: title, Nav: name, Page: page}
	if sess != nil {
		v.CSRF = sess.csrf
		v.Flash = h.sessions.takeFlash(w, r)
	}
	var buf bytes.Buffer
	if err := templates[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		h.log.Error("admin template failed", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w) // the browser may be gone; nothing to do about it
}
