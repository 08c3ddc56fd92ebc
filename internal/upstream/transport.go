// Package upstream is the proxy's client for a plain-HTTP upstream: an
// HTTP/1.1 keep-alive pool in which the calling goroutine writes the
// request and reads the answer itself. net/http's Transport hands every
// request to a writer and a reader goroutine per connection; on a loaded
// two-core machine those hand-offs cost more than the proxy's own work.
// Only a body over 64 KiB gets a writer goroutine, so that an answer the
// upstream sends before reading all of it still arrives.
//
// Cancellation closes the connection (a cancelled request's connection
// cannot be reused anyway). Requests and responses are written and parsed
// by net/http (Request.Write, ReadResponse), so the wire format is the
// Transport's. It does not do TLS, HTTP/2, proxies or Expect: 100-continue;
// the proxy uses net/http's Transport for those.
package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Defaults for the zero values of Transport's fields.
const (
	DefaultMaxIdleConns          = 1024
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultResponseHeaderTimeout = 10 * time.Minute
	DefaultMaxResponseHeaderSize = 1 << 20
	DefaultDialTimeout           = 10 * time.Second
	DefaultTCPKeepAlive          = 30 * time.Second
)

// ErrResponseHeaderTooLarge is returned for an answer whose status line and
// headers exceed MaxResponseHeaderBytes.
var ErrResponseHeaderTooLarge = errors.New("upstream: response headers too large")

// Transport is an http.RoundTripper for http:// URLs. Its zero value is
// ready to use; it must not be copied after first use.
type Transport struct {
	// DialContext opens connections; nil means a net.Dialer with
	// DefaultDialTimeout and DefaultTCPKeepAlive.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxIdleConns bounds the connections kept for reuse, over all hosts.
	MaxIdleConns int
	// IdleConnTimeout closes a connection left idle this long.
	IdleConnTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the answer's headers once
	// the request is written.
	ResponseHeaderTimeout time.Duration
	// MaxResponseHeaderBytes bounds the status line and headers.
	MaxResponseHeaderBytes int64

	mu        sync.Mutex
	idle      map[string][]*conn // by host:port, most recently used last
	idleCount int
}

var defaultDialer = &net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: DefaultTCPKeepAlive}

// conn is one keep-alive connection. Only the goroutine whose request it
// carries touches it, until the request's body is done.
type conn struct {
	nc        net.Conn
	r         limitedReader
	br        *bufio.Reader
	bw        *bufio.Writer
	addr      string
	idleSince time.Time
	reused    bool
}

// RoundTrip sends req and returns the answer's headers; the caller must
// read the body to the end or close it. A connection taken from the pool
// that turns out to be broken before the request is fully written is
// replaced and the request written again (it cannot have reached the
// upstream whole); after that, nothing is retried.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || req.URL.Scheme != "http" || req.URL.Host == "" {
		closeBody(req)
		return nil, fmt.Errorf("upstream: unsupported URL %q (only http://host)", req.URL)
	}
	ctx := req.Context()
	addr := hostPort(req.URL)
	for {
		c, err := t.getConn(ctx, addr)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := t.send(ctx, c, req)
		if err == nil {
			return resp, nil
		}
		var we *writeError
		if errors.As(err, &we) && c.reused && ctx.Err() == nil && req.GetBody != nil {
			if req, err = rewind(req); err == nil {
				continue
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("upstream: %w (%w)", ctx.Err(), err)
		}
		return nil, err
	}
}

// writeError means the request was not fully written.
type writeError struct{ err error }

func (e *writeError) Error() string { return "upstream: writing request: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// largeBody is the request size above which the request is written by a
// second goroutine while the answer is awaited, as net/http does for every
// request: an upstream may answer (a 413, say) and close before reading a
// large body, and that answer must reach the client.
const largeBody = 64 << 10

func (t *Transport) send(ctx context.Context, c *conn, req *http.Request) (*http.Response, error) {
	// Cancelling closes the connection, which ends any read or write on it.
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.nc.Close()
		return nil, err
	}
	headerTimeout := orDefault(t.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	var written chan error // nil: the request is written already
	var late *lateWriter   // with written: keeps the writer from arming the timeout after the headers
	if req.ContentLength >= 0 && req.ContentLength <= largeBody {
		if err := c.write(req); err != nil {
			return fail(&writeError{err})
		}
		c.nc.SetReadDeadline(time.Now().Add(headerTimeout))
	} else {
		written, late = make(chan error, 1), &lateWriter{}
		go func() {
			err := c.write(req)
			if err == nil {
				late.armTimeout(c.nc, headerTimeout)
			}
			written <- err
		}()
	}

	c.r.remaining = orDefault(t.MaxResponseHeaderBytes, DefaultMaxResponseHeaderSize)
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			if c.r.remaining == 0 {
				err = ErrResponseHeaderTooLarge
			}
			if written != nil {
				c.nc.Close() // stops the writer
				if werr := <-written; werr != nil {
					// Not written whole, so the upstream cannot have taken it.
					return fail(&writeError{werr})
				}
			}
			return fail(fmt.Errorf("upstream: reading response: %w", err))
		}
		// 1xx answers (103 Early Hints, say) precede the real one; 101
		// would switch protocols, which a proxied API call never asks for.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		resp.Body.Close()
	}
	c.r.remaining = -1
	if late != nil {
		late.headersRead(c.nc)
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body.Close()
		return fail(errors.New("upstream: unexpected 101 Switching Protocols"))
	}
	b := &body{rc: resp.Body, t: t, c: c, stop: stop, written: written, keepAlive: !resp.Close && !req.Close}
	if resp.Body == http.NoBody { // HEAD, 204, 304: the connection is free now
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// lateWriter orders a writer that runs beside the reader with it: the wait
// for the headers starts once the request is written, unless they came
// first.
type lateWriter struct {
	mu   sync.Mutex
	read bool
}

func (l *lateWriter) armTimeout(nc net.Conn, timeout time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.read {
		nc.SetReadDeadline(time.Now().Add(timeout))
	}
}

func (l *lateWriter) headersRead(nc net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.read = true
	nc.SetReadDeadline(time.Time{})
}

// write sends the whole request.
func (c *conn) write(req *http.Request) error {
	if err := req.Write(c.bw); err != nil {
		return err
	}
	return c.bw.Flush()
}

// body hands the connection back to the pool once the answer is read to
// its end, and closes it if the reader stops early or anything failed.
type body struct {
	rc        io.ReadCloser
	t         *Transport
	c         *conn
	stop      func() bool
	written   chan error // the writer's outcome, when it runs beside the reader
	keepAlive bool
	done      bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

func (b *body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *body) finish(complete bool) {
	b.done = true
	reusable := complete && b.keepAlive && b.c.br.Buffered() == 0
	if b.written != nil {
		// A writer that has sent everything reports at once; one still
		// blocked (the upstream answered without reading all) is stopped.
		if reusable {
			b.c.nc.SetWriteDeadline(time.Now())
		} else {
			b.c.nc.Close()
		}
		reusable = <-b.written == nil && reusable
		b.c.nc.SetWriteDeadline(time.Time{})
	}
	// stop fails once cancellation has closed, or is closing, the connection.
	if b.stop() && reusable {
		b.t.putIdle(b.c)
		return
	}
	// Not b.rc.Close: before the end it would read the rest of the answer.
	b.c.nc.Close()
}

func (t *Transport) getConn(ctx context.Context, addr string) (*conn, error) {
	for {
		c := t.popIdle(addr)
		if c == nil {
			break
		}
		if alive(c.nc) {
			c.reused = true
			return c, nil
		}
		c.nc.Close()
	}
	dial := t.DialContext
	if dial == nil {
		dial = defaultDialer.DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("upstream: %w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("upstream: %w", err)
	}
	c := &conn{nc: nc, addr: addr, bw: bufio.NewWriterSize(nc, 4<<10)}
	c.r = limitedReader{nc: nc, remaining: -1}
	c.br = bufio.NewReaderSize(&c.r, 4<<10)
	return c, nil
}

func (t *Transport) popIdle(addr string) *conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closeExpiredLocked(time.Now())
	conns := t.idle[addr]
	if len(conns) == 0 {
		return nil
	}
	c := conns[len(conns)-1]
	conns[len(conns)-1] = nil
	t.idle[addr] = conns[:len(conns)-1]
	t.idleCount--
	return c
}

func (t *Transport) putIdle(c *conn) {
	now := time.Now()
	c.idleSince = now
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closeExpiredLocked(now)
	if t.idleCount >= orDefault(t.MaxIdleConns, DefaultMaxIdleConns) {
		c.nc.Close()
		return
	}
	if t.idle == nil {
		t.idle = make(map[string][]*conn)
	}
	t.idle[c.addr] = append(t.idle[c.addr], c)
	t.idleCount++
}

// closeExpiredLocked closes the connections idle longer than the timeout.
// They are the oldest, so at the front of each list; lists are short-lived
// enough under load that scanning their fronts is cheap.
func (t *Transport) closeExpiredLocked(now time.Time) {
	cutoff := now.Add(-orDefault(t.IdleConnTimeout, DefaultIdleConnTimeout))
	for addr, conns := range t.idle {
		n := 0
		for n < len(conns) && conns[n].idleSince.Before(cutoff) {
			conns[n].nc.Close()
			conns[n] = nil
			n++
		}
		if n > 0 {
			t.idle[addr] = conns[n:]
			t.idleCount -= n
		}
	}
}

// CloseIdleConnections closes the connections kept for reuse; those in use
// are closed when their requests end.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr, conns := range t.idle {
		for _, c := range conns {
			c.nc.Close()
		}
		delete(t.idle, addr)
	}
	t.idleCount = 0
}

// limitedReader caps what the header parser may read; remaining < 0 means
// no cap (the body has its own framing).
type limitedReader struct {
	nc        net.Conn
	remaining int64
}

func (r *limitedReader) Read(p []byte) (int, error) {
	if r.remaining == 0 {
		return 0, ErrResponseHeaderTooLarge
	}
	if r.remaining > 0 && int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	n, err := r.nc.Read(p)
	if r.remaining > 0 {
		r.remaining -= int64(n)
	}
	return n, err
}

// hostPort is the dial address: the URL's host with port 80 if it names none.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

func rewind(req *http.Request) (*http.Request, error) {
	b, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	out := *req
	out.Body = b
	return &out, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
