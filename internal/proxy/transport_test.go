package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// An action is what a scriptedUpstream does with one request it has read.
type action int

const (
	answer       action = iota // a complete 200, connection kept
	closeSilent                // close the connection without a byte of answer
	closePartial               // send part of a status line, then close
	stall                      // answer nothing, keep the connection open until the test ends
	hugeHeader                 // answer with a header over upstreamMaxHeaderBytes
)

// scriptedUpstream is an HTTP/1.1 server on loopback whose nth accepted
// connection handles its requests as script[n] says (a connection beyond
// the script answers everything). It counts the requests it read whole.
type scriptedUpstream struct {
	ln       net.Listener
	script   [][]action
	accepted atomic.Int64
	read     atomic.Int64
	hungUp   atomic.Int64 // connections the client closed between requests
	done     chan struct{}
	wg       sync.WaitGroup
}

func newScriptedUpstream(t *testing.T, script ...[]action) *scriptedUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &scriptedUpstream{ln: ln, script: script, done: make(chan struct{})}
	u.wg.Add(1)
	go u.accept()
	t.Cleanup(func() {
		close(u.done)
		ln.Close()
		u.wg.Wait()
	})
	return u
}

func (u *scriptedUpstream) url() string { return "http://" + u.ln.Addr().String() }

func (u *scriptedUpstream) accept() {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		n := int(u.accepted.Add(1)) - 1
		var script []action
		if n < len(u.script) {
			script = u.script[n]
		}
		u.wg.Add(1)
		go u.serve(c, script)
	}
}

func (u *scriptedUpstream) serve(c net.Conn, script []action) {
	defer u.wg.Done()
	defer c.Close()
	go func() { <-u.done; c.Close() }()
	br := bufio.NewReader(c)
	for i := 0; ; i++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				u.hungUp.Add(1)
			}
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		u.read.Add(1)
		act := answer
		if i < len(script) {
			act = script[i]
		}
		switch act {
		case answer:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
		case closeSilent:
			return
		case closePartial:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-")
			return
		case stall:
			<-u.done
			return
		case hugeHeader:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("x", upstreamMaxHeaderBytes)+"\r\nContent-Length: 0\r\n\r\n")
			return
		}
	}
}

func post(t *testing.T, rt http.RoundTripper, ctx context.Context, url string) (*http.Response, error) {
	t.Helper()
	body := []byte(`{"model":"m"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// A request is sent a second time only when it failed on a reused
// connection before any byte of answer, and then only once, on a new
// connection.
func TestTransportResendsOnlyWhatNoConnectionAnswered(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		script   [][]action
		wantOK   []bool // per request, in order
		wantRead int64  // requests the upstream read whole
		wantConn int64
	}{
		{"reused connection closed before answering: sent again on a new one",
			[][]action{{answer, closeSilent}}, []bool{true, true}, 3, 2},
		{"new connection closed before answering: not sent again",
			[][]action{{closeSilent}}, []bool{false}, 1, 1},
		{"reused connection closed after part of the answer: not sent again",
			[][]action{{answer, closePartial}}, []bool{true, false}, 2, 1},
		{"headers over the limit: refused, not sent again",
			[][]action{{answer, hugeHeader}}, []bool{true, false}, 2, 1},
		{"the resend fails too: no third attempt",
			[][]action{{answer, closeSilent}, {closeSilent}}, []bool{true, false}, 3, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newScriptedUpstream(t, tc.script...)
			rt := NewTransport(TransportOptions{})
			for i, wantOK := range tc.wantOK {
				resp, err := post(t, rt, context.Background(), up.url())
				if ok := err == nil && resp.StatusCode == http.StatusOK; ok != wantOK {
					t.Fatalf("request %d: %v, %v; want ok=%v", i+1, resp, err, wantOK)
				}
			}
			if got := up.read.Load(); got != tc.wantRead {
				t.Errorf("upstream read %d requests, want %d", got, tc.wantRead)
			}
			if got := up.accepted.Load(); got != tc.wantConn {
				t.Errorf("upstream accepted %d connections, want %d", got, tc.wantConn)
			}
		})
	}
}

// A timeout says nothing about whether the upstream is working on the
// request, and a request whose client left has no one to answer: neither is
// sent again.
func TestTransportDoesNotResendAfterTimeoutOrCancel(t *testing.T) {
	t.Parallel()
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		up := newScriptedUpstream(t, []action{answer, stall})
		rt := NewTransport(TransportOptions{}).(*resendingTransport)
		rt.pooled.ResponseHeaderTimeout = 50 * time.Millisecond
		if _, err := post(t, rt, context.Background(), up.url()); err != nil {
			t.Fatal(err)
		}
		_, err := post(t, rt, context.Background(), up.url())
		var netErr net.Error
		if !errors.As(err, &netErr) || !netErr.Timeout() {
			t.Fatalf("second request: %v, want a timeout", err)
		}
		if n := up.accepted.Load(); n != 1 {
			t.Errorf("upstream accepted %d connections, want 1 (no resend)", n)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		up := newScriptedUpstream(t, []action{answer, stall})
		rt := NewTransport(TransportOptions{})
		if _, err := post(t, rt, context.Background(), up.url()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := post(t, rt, ctx, up.url()); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("second request: %v, want the context's error", err)
		}
		if n := up.accepted.Load(); n != 1 {
			t.Errorf("upstream accepted %d connections, want 1 (no resend)", n)
		}
	})
}

// Idle connections are closed after IdleTimeout, so the proxy, not the
// upstream, ends them.
func TestTransportIdleTimeout(t *testing.T) {
	t.Parallel()
	up := newScriptedUpstream(t)
	var dialed atomic.Int64
	dialer := &net.Dialer{}
	rt := NewTransport(TransportOptions{
		IdleTimeout: 300 * time.Millisecond,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
	})
	for range 2 {
		if _, err := post(t, rt, context.Background(), up.url()); err != nil {
			t.Fatal(err)
		}
	}
	if n := dialed.Load(); n != 1 {
		t.Fatalf("two requests in a row dialled %d times, want 1 (kept alive)", n)
	}
	for deadline := time.Now().Add(10 * time.Second); up.hungUp.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection was never closed by the proxy")
		}
	}
	if _, err := post(t, rt, context.Background(), up.url()); err != nil {
		t.Fatal(err)
	}
	if n := dialed.Load(); n != 2 {
		t.Fatalf("after the idle timeout: %d dials, want 2", n)
	}
}

// An https upstream is spoken to in HTTP/2 when it offers it, and its
// stream arrives piece by piece, each as the upstream sends it.
func TestTransportHTTP2Stream(t *testing.T) {
	t.Parallel()
	next := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range 2 {
			io.WriteString(w, "data: "+strconv.Itoa(i)+"\n\n")
			rc.Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	rt := NewTransport(TransportOptions{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"stream":true}`))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", resp.Proto)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 2 {
		line, err := br.ReadString('\n')
		if want := "data: " + strconv.Itoa(i) + "\n"; line != want || err != nil {
			t.Fatalf("event %d: %q, %v; want %q (before the upstream sends the next)", i, line, err, want)
		}
		br.ReadString('\n')
		next <- struct{}{}
	}
}
