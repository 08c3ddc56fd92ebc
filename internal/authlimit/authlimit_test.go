package authlimit

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newLimiter(opts Options) (*Limiter, *clock) {
	c := &clock{now: time.Date(2026, 11, 23, 17, 0, 30, 0, time.UTC)}
	opts.Now = c.Now
	return New(opts), c
}

func attempt(l *Limiter, remote string) (*Attempt, time.Duration) {
	r := httptest.NewRequest("GET", "/manage/projects", nil)
	r.RemoteAddr = remote
	return l.Begin(r)
}

// fail makes n failed attempts and checks each was let through.
func fail(t *testing.T, l *Limiter, remote string, n int) {
	t.Helper()
	for i := range n {
		if a, wait := attempt(l, remote); a == nil {
			t.Fatalf("failure %d from %s refused (wait %v), want it let through", i+1, remote, wait)
		}
	}
}

func TestTenFailuresThenRefusedForTheRestOfTheWindow(t *testing.T) {
	t.Parallel()
	l, c := newLimiter(Options{})
	fail(t, l, "192.0.2.1:1000", 10)
	c.Advance(20 * time.Second)
	a, wait := attempt(l, "192.0.2.1:2000") // another port, same client
	if a != nil || wait != 40*time.Second {
		t.Fatalf("11th attempt = %v, wait %v; want refused for the 40 s left", a, wait)
	}
	if got := RetryAfter(wait); got != 40 {
		t.Errorf("RetryAfter(%v) = %d", wait, got)
	}
	// Another address is unaffected.
	if a, _ := attempt(l, "192.0.2.2:1000"); a == nil {
		t.Error("another address refused")
	}
	c.Advance(40*time.Second - time.Nanosecond)
	if a, _ := attempt(l, "192.0.2.1:1000"); a != nil {
		t.Error("let through before the window ended")
	}
	c.Advance(time.Nanosecond)
	a, _ = attempt(l, "192.0.2.1:1000")
	if a == nil || a.Failures != 1 {
		t.Fatalf("after the window = %+v, want a fresh window", a)
	}
}

func TestSuccessesDoNotReset(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(Options{})
	fail(t, l, "192.0.2.1:1", 9)
	for range 5 {
		a, _ := attempt(l, "192.0.2.1:1")
		if a == nil {
			t.Fatal("success refused before the limit")
		}
		a.Succeeded()
	}
	fail(t, l, "192.0.2.1:1", 1) // the 10th failure
	a, _ := attempt(l, "192.0.2.1:1")
	if a != nil {
		t.Fatalf("after 10 failures and 5 successes: let through (%d failures), want refused", a.Failures)
	}
}

// Attempts count before the credential is checked, so concurrent guesses
// cannot pass the limit.
func TestConcurrentAttemptsStayWithinTheLimit(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	through := 0
	for range 200 {
		wg.Go(func() {
			if a, _ := attempt(l, "192.0.2.9:1"); a != nil {
				mu.Lock()
				through++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if through != DefaultMaxFailures {
		t.Errorf("%d of 200 concurrent attempts let through, want %d", through, DefaultMaxFailures)
	}
}

func TestIPv6GroupedBy64(t *testing.T) {
	t.Parallel()
	l, _ := newLimiter(Options{})
	for i := range 10 {
		fail(t, l, fmt.Sprintf("[2001:db8:1:2::%x]:443", i+1), 1)
	}
	if a, _ := attempt(l, "[2001:db8:1:2:ffff:ffff:ffff:ffff]:443"); a != nil {
		t.Error("an address of the same /64 let through after 10 failures in it")
	}
	if a, _ := attempt(l, "[2001:db8:1:3::1]:443"); a == nil {
		t.Error("the next /64 refused")
	}
	// An IPv4 address written as IPv6 is the IPv4 client.
	fail(t, l, "198.51.100.1:1", 10)
	if a, _ := attempt(l, "[::ffff:198.51.100.1]:1"); a != nil {
		t.Error("an IPv4-mapped address escapes its IPv4 client's limit")
	}
}

// Many addresses cannot grow the map past MaxClients, nor the queue; past
// the cap they share one window, so they still get MaxFailures guesses in
// all, and expired clients are dropped.
func TestMemoryIsBounded(t *testing.T) {
	t.Parallel()
	const maxClients = 100
	l, c := newLimiter(Options{MaxClients: maxClients})
	addr := func(i int) string {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String() + ":1"
	}
	through := 0
	for i := range 1000 {
		if a, _ := attempt(l, addr(i)); a != nil {
			through++
		}
	}
	if through != maxClients+DefaultMaxFailures {
		t.Errorf("%d of 1000 addresses let through, want %d tracked + %d in the shared window", through, maxClients, DefaultMaxFailures)
	}
	if len(l.clients) != maxClients || len(l.queue)-l.head != maxClients {
		t.Errorf("tracking %d clients, queue %d; want %d", len(l.clients), len(l.queue)-l.head, maxClients)
	}
	// The next window: the shared one has ended as well, so past the cap
	// new addresses get their guesses again.
	c.Advance(DefaultWindow)
	for i := range maxClients {
		fail(t, l, addr(2000+i), 1)
	}
	if a, _ := attempt(l, addr(5000)); a == nil || a.w != &l.overflow {
		t.Errorf("past the cap in a new window: %+v, want let through in the shared window", a)
	}
	// Window after window of new addresses: what is kept stays bounded.
	for round := range 50 {
		c.Advance(DefaultWindow)
		for i := range 300 {
			attempt(l, addr(10000+round*300+i))
		}
		if len(l.clients) > maxClients || len(l.queue) > 2*maxClients+1 {
			t.Fatalf("round %d: %d clients, queue of %d (cap %d)", round, len(l.clients), len(l.queue), cap(l.queue))
		}
	}
	c.Advance(DefaultWindow)
	attempt(l, "192.0.2.1:1")
	if len(l.clients) != 1 || len(l.queue)-l.head != 1 {
		t.Errorf("after every window ended: %d clients kept (queue %d), want 1", len(l.clients), len(l.queue)-l.head)
	}
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 192.0.2.7, 2001:db8::/32")
	if err != nil {
		t.Fatal(err)
	}
	l := New(Options{TrustedProxies: trusted})
	none := New(Options{})
	cases := []struct {
		remote string
		xff    []string
		want   string
		// wantUntrusted is the answer with no trusted proxies: the peer.
		wantUntrusted string
	}{
		{"198.51.100.1:5", nil, "198.51.100.1", "198.51.100.1"},
		{"198.51.100.1:5", []string{"203.0.113.9"}, "198.51.100.1", "198.51.100.1"}, // an untrusted peer's header is ignored
		{"10.1.2.3:5", []string{"203.0.113.9"}, "203.0.113.9", "10.1.2.3"},
		{"10.1.2.3:5", nil, "10.1.2.3", "10.1.2.3"},
		{"10.1.2.3:5", []string{"1.1.1.1, 203.0.113.9, 10.9.9.9"}, "203.0.113.9", "10.1.2.3"},    // client-written 1.1.1.1 is not believed
		{"10.1.2.3:5", []string{"1.1.1.1", "203.0.113.9, 192.0.2.7"}, "203.0.113.9", "10.1.2.3"}, // several header lines
		{"10.1.2.3:5", []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.1", "10.1.2.3"},                   // all trusted: the left-most
		{"10.1.2.3:5", []string{"garbage, 10.0.0.2"}, "10.0.0.2", "10.1.2.3"},                    // unreadable: the last trusted hop
		{"10.1.2.3:5", []string{"203.0.113.9:4711"}, "203.0.113.9", "10.1.2.3"},                  // with a port
		{"[2001:db8::1]:5", []string{"2001:db9::5"}, "2001:db9::5", "2001:db8::1"},               // IPv6
		{"[::ffff:10.1.2.3]:5", []string{"[::ffff:203.0.113.9]:1"}, "203.0.113.9", "10.1.2.3"},   // mapped IPv4
		{"192.0.2.8:5", []string{"203.0.113.9"}, "192.0.2.8", "192.0.2.8"},                       // a single address, not its neighbour
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := l.ClientAddr(r); got != tc.want {
			t.Errorf("ClientAddr(%s, XFF %q) = %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
		if got := none.ClientAddr(r); got != tc.wantUntrusted {
			t.Errorf("without trusted proxies: ClientAddr(%s, XFF %q) = %s, want %s", tc.remote, tc.xff, got, tc.wantUntrusted)
		}
	}
}

// Behind a trusted proxy, clients are told apart by X-Forwarded-For.
func TestBehindTrustedProxy(t *testing.T) {
	t.Parallel()
	trusted, _ := ParseTrustedProxies("127.0.0.1")
	l, _ := newLimiter(Options{TrustedProxies: trusted})
	begin := func(xff string) *Attempt {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("X-Forwarded-For", xff)
		a, _ := l.Begin(r)
		return a
	}
	for range 10 {
		begin("203.0.113.1")
	}
	if begin("203.0.113.1") != nil {
		t.Error("client behind the proxy let through after 10 failures")
	}
	if begin("203.0.113.2") == nil {
		t.Error("another client behind the same proxy refused")
	}
	// A forged left-most entry does not give the client a new identity.
	if begin("198.51.100.77, 203.0.113.1") != nil {
		t.Error("a forged X-Forwarded-For entry escaped the limit")
	}
}

func TestParseTrustedProxies(t *testing.T) {
	t.Parallel()
	got, err := ParseTrustedProxies(" 10.0.0.1/8 ,, 192.0.2.7,2001:db8::/32, ::1")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("::1/128"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("ParseTrustedProxies = %v, want %v", got, want)
	}
	if got, err := ParseTrustedProxies(""); err != nil || len(got) != 0 {
		t.Errorf("ParseTrustedProxies(\"\") = %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1:80", "10.0.0", "fe80::1%eth0", "1.2.3.4/x"} {
		if _, err := ParseTrustedProxies("10.0.0.1," + bad); err == nil {
			t.Errorf("ParseTrustedProxies(%q) accepted it", bad)
		}
	}
}

func TestRetryAfterRoundsUp(t *testing.T) {
	t.Parallel()
	for wait, want := range map[time.Duration]int{time.Nanosecond: 1, time.Second: 1, 1500 * time.Millisecond: 2, time.Minute: 60} {
		if got := RetryAfter(wait); got != want {
			t.Errorf("RetryAfter(%v) = %d, want %d", wait, got, want)
		}
	}
}
