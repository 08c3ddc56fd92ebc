package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// exchange is what one request's access log line says about it.
type exchange struct {
	start          time.Time
	status         int // the status the client got (or 499: it left first)
	upstreamStatus int // 0: not forwarded, or no answer
	tokenID        int64
	projectID      int64
	model          string
	requestID      string // ours for the proxy's own answers, else the upstream's
	bodyRead       bool
}

// logAccess writes the request's access log line: what was asked and
// answered, never a secret or a body.
func (h *Handler) logAccess(r *http.Request, x *exchange) {
	if h.accessLog == nil {
		return
	}
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs,
		slog.String("client", h.clientAddr(r)),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", x.status),
		slog.Int64("latency_ms", time.Since(x.start).Milliseconds()),
	)
	if x.tokenID != 0 {
		attrs = append(attrs, slog.Int64("token_id", x.tokenID), slog.Int64("project_id", x.projectID))
	}
	if x.model != "" {
		attrs = append(attrs, slog.String("model", x.model))
	}
	if x.upstreamStatus != 0 {
		attrs = append(attrs, slog.Int("upstream_status", x.upstreamStatus))
	}
	if x.requestID != "" {
		attrs = append(attrs, slog.String("request_id", x.requestID))
	}
	h.accessLog.LogAttrs(context.WithoutCancel(r.Context()), slog.LevelInfo, "access", attrs...)
}

// peerAddr is the request's TCP peer, without its port.
func peerAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
