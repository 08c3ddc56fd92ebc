package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingDialer counts the connections a Transport opens and can wrap them.
type countingDialer struct {
	dials atomic.Int64
	wrap  func(net.Conn) net.Conn
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.dials.Add(1)
	nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil && d.wrap != nil {
		nc = d.wrap(nc)
	}
	return nc, err
}

func newTransport(t *testing.T) (*Transport, *countingDialer) {
	d := &countingDialer{}
	tr := &Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, d
}

func post(t *testing.T, tr http.RoundTripper, ctx context.Context, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return tr.RoundTrip(req)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	resp.Body.Close()
	return string(b)
}

func echoServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Path", r.URL.RequestURI())
		if r.URL.Query().Get("chunked") != "" {
			w.(http.Flusher).Flush() // no Content-Length: a chunked body
		}
		fmt.Fprintf(w, "%s %s", r.Method, b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestReusesConnectionForSequentialRequests(t *testing.T) {
	t.Parallel()
	srv := echoServer(t)
	tr, d := newTransport(t)
	for i := range 20 {
		q := ""
		if i%2 == 1 {
			q = "&chunked=1"
		}
		resp, err := post(t, tr, context.Background(), srv.URL+"/v1/x?i=1"+q, fmt.Sprint(i))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got, want := readAll(t, resp), fmt.Sprintf("POST %d", i); got != want {
			t.Fatalf("request %d: body %q, want %q", i, got, want)
		}
		if got := resp.Header.Get("X-Path"); got != "/v1/x?i=1"+q {
			t.Fatalf("request %d: upstream saw %q", i, got)
		}
	}
	if n := d.dials.Load(); n != 1 {
		t.Fatalf("%d connections opened for sequential requests, want 1", n)
	}
}

func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	srv := echoServer(t)
	tr, d := newTransport(t)
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				body := fmt.Sprintf("%d-%d", w, i)
				resp, err := post(t, tr, context.Background(), srv.URL, body)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(b) != "POST "+body {
					errs <- fmt.Errorf("body %q (%v), want %q", b, err, "POST "+body)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := d.dials.Load(); n > 8 {
		t.Fatalf("%d connections for 8 concurrent clients", n)
	}
}

// rawServer answers each accepted connection with handle.
func rawServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// readRequest reads one request, body included.
func readRequest(br *bufio.Reader) (*http.Request, string, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(req.Body)
	return req, string(b), err
}

func TestReplacesConnectionTheUpstreamClosedWhileIdle(t *testing.T) {
	t.Parallel()
	closed := make(chan struct{}, 10)
	var requests atomic.Int64
	url := rawServer(t, func(c net.Conn) {
		if _, _, err := readRequest(bufio.NewReader(c)); err != nil {
			return
		}
		requests.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.Close() // without saying Connection: close, like an idle timeout
		closed <- struct{}{}
	})
	tr, d := newTransport(t)
	for i := range 3 {
		resp, err := post(t, tr, context.Background(), url, "x")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := readAll(t, resp); got != "ok" {
			t.Fatalf("request %d: body %q", i, got)
		}
		<-closed
	}
	if d.dials.Load() != 3 || requests.Load() != 3 {
		t.Fatalf("dials %d, requests %d; want 3 and 3", d.dials.Load(), requests.Load())
	}
}

// failingConn fails every write after the first request.
type failingConn struct {
	net.Conn
	fail bool
}

func (c *failingConn) Write(p []byte) (int, error) {
	if c.fail {
		return 0, errors.New("broken pipe (test)")
	}
	return c.Conn.Write(p)
}

func TestRewritesRequestWhenAReusedConnectionFailsToWrite(t *testing.T) {
	t.Parallel()
	srv := echoServer(t)
	tr, d := newTransport(t)
	var conns []*failingConn
	d.wrap = func(nc net.Conn) net.Conn {
		fc := &failingConn{Conn: nc}
		conns = append(conns, fc)
		return fc
	}
	resp, err := post(t, tr, context.Background(), srv.URL, "first")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	conns[0].fail = true // the kept-alive connection is now broken

	resp, err = post(t, tr, context.Background(), srv.URL, "second")
	if err != nil {
		t.Fatalf("request on a broken kept-alive connection: %v", err)
	}
	if got := readAll(t, resp); got != "POST second" {
		t.Fatalf("upstream saw %q, want the whole body again", got)
	}
	if n := d.dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2", n)
	}

	// Without GetBody the request cannot be written again: an error.
	conns[1].fail = true
	req, _ := http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(strings.NewReader("third")))
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("request without GetBody on a broken connection succeeded")
	}
}

func TestDoesNotRetryAfterTheRequestWasWritten(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	url := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, _, err := readRequest(br); err != nil {
			return
		}
		requests.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if _, _, err := readRequest(br); err != nil {
			return
		}
		requests.Add(1) // read, then dropped without an answer
	})
	tr, _ := newTransport(t)
	resp, err := post(t, tr, context.Background(), url, "a")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if _, err := post(t, tr, context.Background(), url, "b"); err == nil {
		t.Fatal("no error for a request the upstream dropped")
	}
	time.Sleep(50 * time.Millisecond) // a retry would have arrived by now
	if n := requests.Load(); n != 2 {
		t.Fatalf("upstream saw %d requests, want 2 (no retry of a written POST)", n)
	}
}

func TestCancelBeforeHeadersClosesTheConnection(t *testing.T) {
	t.Parallel()
	upstreamSawClose := make(chan struct{})
	started := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // net/http watches for the client leaving once the body is read
		close(started)
		<-r.Context().Done()
		close(upstreamSawClose)
	}))
	t.Cleanup(srv.Close)
	tr, _ := newTransport(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := post(t, tr, ctx, srv.URL, "x")
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	select {
	case <-upstreamSawClose:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream's request was not cancelled")
	}
}

func TestCancelDuringBodyClosesTheConnection(t *testing.T) {
	t.Parallel()
	upstreamSawClose := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(upstreamSawClose)
	}))
	t.Cleanup(srv.Close)
	tr, d := newTransport(t)
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := post(t, tr, ctx, srv.URL, "x")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := resp.Body.Read(buf); err != nil || string(buf[:n]) != "data: 1\n\n" {
		t.Fatalf("first chunk %q, %v", buf[:n], err)
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("reading on after cancel ended without an error")
	}
	resp.Body.Close()
	select {
	case <-upstreamSawClose:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream's request was not cancelled")
	}
	// The cancelled connection is not reused.
	resp, err = post(t, tr, context.Background(), srv.URL+"/again", "y")
	if err == nil {
		resp.Body.Close()
	}
	if n := d.dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2", n)
	}
}

func TestStopsWaitingForHeadersAfterTimeout(t *testing.T) {
	t.Parallel()
	url := rawServer(t, func(c net.Conn) {
		readRequest(bufio.NewReader(c))
		time.Sleep(5 * time.Second) // never answers in time
	})
	tr, _ := newTransport(t)
	tr.ResponseHeaderTimeout = 50 * time.Millisecond
	_, err := post(t, tr, context.Background(), url, "x")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("error %v, want a timeout", err)
	}
}

func TestRefusesOversizedResponseHeaders(t *testing.T) {
	t.Parallel()
	url := rawServer(t, func(c net.Conn) {
		readRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 64<<10)+"\r\nContent-Length: 0\r\n\r\n")
	})
	tr, _ := newTransport(t)
	tr.MaxResponseHeaderBytes = 4 << 10
	if _, err := post(t, tr, context.Background(), url, "x"); !errors.Is(err, ErrResponseHeaderTooLarge) {
		t.Fatalf("error %v, want ErrResponseHeaderTooLarge", err)
	}
}

func TestSkipsInformationalAnswers(t *testing.T) {
	t.Parallel()
	url := rawServer(t, func(c net.Conn) {
		readRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"+
			"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
	})
	tr, _ := newTransport(t)
	resp, err := post(t, tr, context.Background(), url, "x")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); resp.StatusCode != 201 || got != "done" {
		t.Fatalf("got %d %q, want 201 \"done\"", resp.StatusCode, got)
	}
}

func TestConnectionNotReusedWhenNotReadToTheEndOrToldToClose(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, strings.Repeat("z", 100<<10))
	}))
	t.Cleanup(srv.Close)
	tr, d := newTransport(t)

	resp, err := post(t, tr, context.Background(), srv.URL+"/partial", "")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close() // rest unread: the connection is mid-answer
	resp, err = post(t, tr, context.Background(), srv.URL+"/close", "")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	resp, err = post(t, tr, context.Background(), srv.URL+"/whole", "")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if n := d.dials.Load(); n != 3 {
		t.Fatalf("%d dials, want 3 (no reuse after a partial read or Connection: close)", n)
	}
}

func TestIdleLimits(t *testing.T) {
	t.Parallel()
	srv := echoServer(t)
	tr, d := newTransport(t)
	tr.MaxIdleConns = 1
	var resps []*http.Response
	for range 3 { // three connections open at once
		resp, err := post(t, tr, context.Background(), srv.URL, "x")
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	for _, resp := range resps {
		readAll(t, resp)
	}
	tr.mu.Lock()
	idle := tr.idleCount
	tr.mu.Unlock()
	if idle != 1 {
		t.Fatalf("%d idle connections kept, want MaxIdleConns = 1", idle)
	}

	tr.IdleConnTimeout = time.Millisecond
	time.Sleep(10 * time.Millisecond)
	before := d.dials.Load()
	resp, err := post(t, tr, context.Background(), srv.URL, "x")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if d.dials.Load() != before+1 {
		t.Fatal("a connection idle past IdleConnTimeout was reused")
	}
}

func TestRefusesWhatItDoesNotSpeak(t *testing.T) {
	t.Parallel()
	tr, _ := newTransport(t)
	req, _ := http.NewRequest(http.MethodGet, "https://example.com/", nil)
	if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "unsupported URL") {
		t.Fatalf("https request: error %v", err)
	}
}

// The request on the wire is the one net/http's Transport writes.
func TestWritesTheRequestNetHTTPWrites(t *testing.T) {
	t.Parallel()
	captured := make(chan []byte, 2)
	url := rawServer(t, func(c net.Conn) {
		var raw bytes.Buffer
		br := bufio.NewReader(io.TeeReader(c, &raw))
		if _, _, err := readRequest(br); err != nil {
			return
		}
		captured <- raw.Bytes()
		io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
	})
	send := func(tr http.RoundTripper) []byte {
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions?a=b", strings.NewReader(`{"model":"m"}`))
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		return <-captured
	}
	ours, _ := newTransport(t)
	std := &http.Transport{DisableCompression: true}
	t.Cleanup(std.CloseIdleConnections)
	if got, want := send(ours), send(std); !bytes.Equal(got, want) {
		t.Fatalf("request on the wire:\n%q\nnet/http writes:\n%q", got, want)
	}
}

func TestAnswerWithoutBodyFreesTheConnection(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	tr, d := newTransport(t)
	for range 3 {
		resp, err := post(t, tr, context.Background(), srv.URL, "x")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("status %d", resp.StatusCode)
		}
		resp.Body.Close() // not read: there is nothing to read
	}
	if n := d.dials.Load(); n != 1 {
		t.Fatalf("%d dials for three 204s, want 1", n)
	}
}

func TestLargeBodiesAreWrittenWholeOnAReusedConnection(t *testing.T) {
	t.Parallel()
	srv := echoServer(t)
	tr, d := newTransport(t)
	body := strings.Repeat("b", 1<<20) // written beside the reader
	for i := range 5 {
		resp, err := post(t, tr, context.Background(), srv.URL, body)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := readAll(t, resp); got != "POST "+body {
			t.Fatalf("request %d: upstream echoed %d bytes, want %d", i, len(got), len("POST "+body))
		}
	}
	if n := d.dials.Load(); n != 1 {
		t.Fatalf("%d dials for five large requests, want 1", n)
	}
}

// earlyAnswer is an upstream that refuses a request on its headers alone,
// without reading the body, then closes the connection or keeps it open.
func earlyAnswer(t *testing.T, closeAfter bool) string {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	return rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil { // headers only
				return
			}
			io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 7\r\n\r\ntoo big")
			if closeAfter {
				return
			}
			<-done // neither reads on nor closes
		}
	})
}

func TestAnswerBeforeTheBodyIsReadReachesTheCaller(t *testing.T) {
	t.Parallel()
	for _, closeAfter := range []bool{true, false} {
		t.Run(fmt.Sprintf("close=%v", closeAfter), func(t *testing.T) {
			t.Parallel()
			url := earlyAnswer(t, closeAfter)
			tr, d := newTransport(t)
			// Larger than any socket buffers, so the upstream must read it
			// for the write to finish; it never does.
			resp, err := post(t, tr, context.Background(), url, strings.Repeat("b", 32<<20))
			if err != nil {
				t.Fatalf("the upstream's early answer was lost: %v", err)
			}
			if got := readAll(t, resp); resp.StatusCode != http.StatusRequestEntityTooLarge || got != "too big" {
				t.Fatalf("got %d %q, want 413 \"too big\"", resp.StatusCode, got)
			}
			// The half-written connection is not reused.
			resp, err = post(t, tr, context.Background(), url, "small")
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			if n := d.dials.Load(); n != 2 {
				t.Fatalf("%d dials, want 2", n)
			}
		})
	}
}
