package proxy

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// maxCaptureBytes bounds the copy of a JSON response kept to read its
// usage; a larger response is forwarded in full but records no token counts.
const maxCaptureBytes = 8 << 20

// hopHeaders apply to one connection only (RFC 9110 section 7.6.1), so a
// proxy drops them, along with those the Connection header names.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		delete(h, name)
	}
}

var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

var captureBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// overhead is the time a request spends in llmproxy itself: from the
// handler's start until the answer is complete for the client, less the
// waits for the upstream (its answer, each read of its body) and for the
// client (reading its body, each write). It tells the proxy's own cost apart from the
// upstream's and the network's.
type overhead struct {
	waited   time.Duration
	answered time.Time // the last of the answer handed to the client; zero if none was
}

// waitedSince adds the time since t to the waits and returns now.
func (o *overhead) waitedSince(t time.Time) time.Time {
	now := time.Now()
	o.waited += now.Sub(t)
	return now
}

// forward sends the admitted request upstream and copies the answer back,
// filling ev's status and usage: the upstream's status, 499 when the client
// left before it had the whole answer, 502 when the upstream could not be
// reached or broke off. aborted means the upstream broke off after part of
// its answer had gone to the client: the caller must then abort the
// client's connection (panic(http.ErrAbortHandler)), so the client sees an
// incomplete response instead of a short one that looks whole.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, x *exchange, ev *service.UsageEventCreateParams, body []byte, stream bool, apiKey string, own *overhead) (aborted bool) {
	ctx := r.Context()
	out := r.Clone(ctx)
	out.RequestURI, out.Host, out.Close = "", "", false
	out.TransferEncoding, out.Trailer = nil, nil
	h.setTarget(out.URL, r.URL)
	if len(body) == 0 {
		out.Body, out.ContentLength, out.GetBody = http.NoBody, 0, nil
	} else {
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		// Lets the transport resend on a kept-alive connection that the
		// upstream closed before reading anything.
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	removeHopHeaders(out.Header)
	// The body is already read, so the upstream has nothing to wait for.
	out.Header.Del("Expect")
	out.Header.Set("Authorization", "Bearer "+apiKey)
	limitAcceptEncoding(out.Header, stream)

	sent := time.Now()
	resp, err := h.transport.RoundTrip(out)
	headersAt := own.waitedSince(sent)
	if err != nil {
		if ctx.Err() != nil {
			ev.Status = statusClientClosed
			w.WriteHeader(statusClientClosed)
			return false
		}
		h.log.Warn("proxy: upstream request failed", "error", err, "path", r.URL.Path)
		h.observeUpstream(http.StatusBadGateway, time.Since(sent))
		ev.Status = http.StatusBadGateway
		x.requestID = errUpstreamUnavailable.write(w)
		return false
	}
	defer resp.Body.Close()
	h.observeUpstream(resp.StatusCode, headersAt.Sub(sent))
	ev.Status = int64(resp.StatusCode)
	x.upstreamStatus = resp.StatusCode
	x.requestID = resp.Header.Get("X-Request-Id")

	removeHopHeaders(resp.Header)
	dst := w.Header()
	for name, values := range resp.Header {
		dst[name] = values
	}
	if _, ok := resp.Header["Content-Type"]; !ok {
		dst["Content-Type"] = nil // no sniffing: the upstream's headers pass unchanged
	}

	result, end := h.copyResponse(w, resp, usageResult{model: ev.Model}, own)
	ev.Model = result.model
	ev.PromptTokens, ev.CompletionTokens, ev.TotalTokens = result.prompt, result.completion, result.total
	switch {
	case end == answered:
	case end == clientLeft || ctx.Err() != nil:
		ev.Status = statusClientClosed
	case end == brokeOffUnsent:
		h.log.Warn("proxy: upstream response broke off before its body", "path", r.URL.Path, "status", resp.StatusCode)
		ev.Status = http.StatusBadGateway
		clear(w.Header())
		x.requestID = errUpstreamUnavailable.write(w)
	default: // brokeOff
		h.log.Warn("proxy: upstream response broke off", "path", r.URL.Path, "status", resp.StatusCode)
		ev.Status = http.StatusBadGateway
		return true
	}
	return false
}

// copyEnd is how copying an answer to the client ended.
type copyEnd int

const (
	answered       copyEnd = iota // all of it reached the client
	clientLeft                    // a write to the client failed
	brokeOffUnsent                // the upstream broke off before the client was sent anything
	brokeOff                      // the upstream broke off after part of the answer was sent
)

// setTarget points u (a copy of the client's URL) at the upstream: its
// scheme and host, its base path followed by the request path unchanged,
// and the request's query. Credentials go in Authorization, never the URL.
func (h *Handler) setTarget(u, in *url.URL) {
	u.Scheme, u.Host, u.User, u.Opaque, u.Fragment, u.RawFragment = h.scheme, h.host, nil, "", "", ""
	u.Path = h.basePath + in.Path
	u.RawPath = ""
	if h.baseHasRawPath || in.RawPath != "" {
		u.RawPath = h.baseRawPath + in.EscapedPath()
	}
}

// copyResponse streams the body to the client and reads the usage as it
// passes. An event stream, or a body of unknown length, is flushed piece by
// piece so the client sees each as soon as the upstream sends it. The
// status line and headers (already in w.Header()) are sent with the first
// bytes of the body, so that an upstream breaking off before them can
// still be answered with a clean 502.
func (h *Handler) copyResponse(w http.ResponseWriter, resp *http.Response, result usageResult, own *overhead) (_ usageResult, end copyEnd) {
	media := mediaType(resp.Header.Get("Content-Type"))
	encoding := resp.Header.Get("Content-Encoding")
	isStream := media == "text/event-stream"
	flushEach := isStream || resp.ContentLength < 0

	var sse *sseParser
	var capture *bytes.Buffer
	switch {
	case isStream && (encoding == "" || strings.EqualFold(encoding, "identity")):
		sse = &sseParser{result: result}
	case isJSON(media) && resp.ContentLength <= maxCaptureBytes:
		capture = captureBuffers.Get().(*bytes.Buffer)
		defer releaseCapture(capture)
	}
	overflow := false

	rc := http.NewResponseController(w)
	wroteHeader := false
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	for end == answered {
		t := time.Now()
		n, err := resp.Body.Read(buf)
		t = own.waitedSince(t)
		if n > 0 || err == io.EOF {
			if !wroteHeader {
				w.WriteHeader(resp.StatusCode)
				wroteHeader = true
			}
			_, werr := w.Write(buf[:n])
			if werr == nil && flushEach {
				if err := rc.Flush(); !errors.Is(err, http.ErrNotSupported) {
					werr = err
				}
			}
			own.waitedSince(t)
			if werr != nil {
				end = clientLeft // its context cancels the upstream request
				break
			}
			switch {
			case sse != nil:
				sse.Write(buf[:n])
			case capture != nil && !overflow:
				if overflow = capture.Len()+n > maxCaptureBytes; !overflow {
					capture.Write(buf[:n])
				}
			}
		}
		switch {
		case err == io.EOF:
			if !flushEach {
				// The answer is complete: send it now rather than when the
				// handler returns, so reading its usage and recording it
				// are not part of the client's wait.
				t := time.Now()
				rc.Flush()
				own.waitedSince(t)
			}
			own.answered = time.Now()
			if sse != nil {
				return sse.Finish(), answered
			}
			if capture != nil && !overflow {
				if doc := decode(capture.Bytes(), encoding); doc != nil {
					result.add(doc)
				}
			}
			return result, answered
		case err != nil && wroteHeader:
			end = brokeOff
		case err != nil:
			end = brokeOffUnsent
		}
	}
	if sse != nil {
		result = sse.Finish() // the usage may have passed before the end
	}
	return result, end
}

func releaseCapture(b *bytes.Buffer) {
	if b.Cap() <= 1<<20 { // keep the pool from holding on to rare huge bodies
		b.Reset()
		captureBuffers.Put(b)
	}
}

// decode undoes the content encodings the proxy lets through (see
// limitAcceptEncoding); nil means it cannot be read.
func decode(body []byte, encoding string) []byte {
	switch {
	case encoding == "" || strings.EqualFold(encoding, "identity"):
		return body
	case strings.EqualFold(encoding, "gzip"):
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil
		}
		plain, err := io.ReadAll(io.LimitReader(zr, maxCaptureBytes+1))
		if err != nil || len(plain) > maxCaptureBytes {
			return nil
		}
		return plain
	}
	return nil
}

// mediaType is a Content-Type without its parameters, in lower case.
func mediaType(contentType string) string {
	t, _, _ := strings.Cut(contentType, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

func isJSON(mediaType string) bool {
	return mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")
}

// limitAcceptEncoding leaves the upstream only an encoding the proxy can
// read usage from: gzip, if the client accepts it, for JSON answers, and
// none for streams, which are read event by event as they pass.
func limitAcceptEncoding(h http.Header, stream bool) {
	values, ok := h["Accept-Encoding"]
	if !ok {
		return
	}
	if !stream && acceptsGzip(values) {
		h.Set("Accept-Encoding", "gzip")
		return
	}
	delete(h, "Accept-Encoding")
}

// acceptsGzip reads Accept-Encoding values: gzip (or *) listed without q=0.
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(item, ";")
			name = strings.TrimSpace(name)
			if !strings.EqualFold(name, "gzip") && name != "*" {
				continue
			}
			if !refused(params) {
				return true
			}
		}
	}
	return false
}

// refused reports whether an Accept-Encoding item's parameters say q=0.
func refused(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		key, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(key), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			return err == nil && q == 0
		}
	}
	return false
}
