// Package authlimit throttles failed authentication per client address, so
// a secret such as the management token cannot be guessed at network
// speed: after MaxFailures failures in a Window, the client is refused
// until that window ends, whatever it presents.
//
// A client's window starts at its first attempt and ends Window later;
// windows end in the order they start, so expired clients are dropped from
// the front of a queue in constant time, and at most MaxClients are
// tracked. Past that, new clients share one overflow window: many
// addresses together still get MaxFailures guesses per window, never
// MaxFailures each.
package authlimit

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultMaxFailures = 10
	DefaultWindow      = time.Minute
	DefaultMaxClients  = 10000
)

// Options configure a Limiter; zero values take the defaults.
type Options struct {
	MaxFailures int
	Window      time.Duration
	MaxClients  int
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	Now            func() time.Time
}

// Limiter counts failures per client. It is safe for concurrent use.
type Limiter struct {
	maxFailures int
	window      time.Duration
	maxClients  int
	trusted     []netip.Prefix
	now         func() time.Time

	mu       sync.Mutex
	clients  map[string]*window
	queue    []*window // by start, oldest first; queue[head:] are live
	head     int
	overflow window
}

// window is one client's failures since start.
type window struct {
	key      string
	start    time.Time
	failures int
}

// New returns a Limiter.
func New(opts Options) *Limiter {
	l := &Limiter{
		maxFailures: opts.MaxFailures, window: opts.Window, maxClients: opts.MaxClients,
		trusted: opts.TrustedProxies, now: opts.Now, clients: map[string]*window{},
	}
	if l.maxFailures <= 0 {
		l.maxFailures = DefaultMaxFailures
	}
	if l.window <= 0 {
		l.window = DefaultWindow
	}
	if l.maxClients <= 0 {
		l.maxClients = DefaultMaxClients
	}
	if l.now == nil {
		l.now = time.Now
	}
	return l
}

// Attempt is one authentication attempt that Begin let through. It counts
// as a failure unless Succeeded is called: counting before the credential
// is checked keeps concurrent guesses within the limit too.
type Attempt struct {
	// Client is the client's address, for the log.
	Client string
	// Failures is the client's failures in its window, this attempt included.
	Failures int
	l        *Limiter
	w        *window
}

// Succeeded gives the attempt back: a success is no failure, but it does
// not forgive the client's earlier ones.
func (a *Attempt) Succeeded() {
	a.l.mu.Lock()
	defer a.l.mu.Unlock()
	if a.w.failures > 0 {
		a.w.failures--
	}
}

// Begin starts an attempt by r's client. When the client has used up its
// failures, it returns nil and how long until its window ends.
func (l *Limiter) Begin(r *http.Request) (*Attempt, time.Duration) {
	client := l.ClientAddr(r)
	key := client
	if addr, err := netip.ParseAddr(client); err == nil {
		key = clientKey(addr)
	}
	now := l.now()

	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropExpired(now)
	w := l.clients[key]
	if w == nil {
		if len(l.clients) < l.maxClients {
			w = &window{key: key, start: now}
			l.clients[key] = w
			l.queue = append(l.queue, w)
		} else {
			w = &l.overflow
			if !now.Before(w.start.Add(l.window)) {
				*w = window{start: now}
			}
		}
	}
	if w.failures >= l.maxFailures {
		return nil, w.start.Add(l.window).Sub(now)
	}
	w.failures++
	return &Attempt{Client: client, Failures: w.failures, l: l, w: w}, 0
}

// dropExpired forgets the clients whose window has ended.
func (l *Limiter) dropExpired(now time.Time) {
	for l.head < len(l.queue) {
		w := l.queue[l.head]
		if now.Before(w.start.Add(l.window)) {
			break
		}
		delete(l.clients, w.key)
		l.queue[l.head] = nil
		l.head++
	}
	// Reuse the queue's space once most of it is dropped.
	if l.head > len(l.queue)/2 {
		l.queue = append(l.queue[:0], l.queue[l.head:]...)
		l.head = 0
	}
}

// clientKey groups an address with those of the same host: IPv6 hosts
// usually hold a whole /64, so it counts as one client.
func clientKey(addr netip.Addr) string {
	if addr.Is4() {
		return addr.String()
	}
	prefix, _ := addr.Prefix(64)
	return prefix.String()
}

// ClientAddr is the address of r's client: the TCP peer or, when the peer
// is a trusted proxy, the right-most address in X-Forwarded-For that is
// not itself a trusted proxy (proxies append the peer they saw, so
// anything left of that could be written by the client).
func (l *Limiter) ClientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	if !l.isTrusted(peer) {
		return peer.String()
	}
	client := peer
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			addr, ok := parseHop(parts[j])
			if !ok {
				// Not written by a proxy we trust: the last trusted hop
				// is the best we know.
				return client.String()
			}
			client = addr
			if !l.isTrusted(addr) {
				return addr.String()
			}
		}
	}
	return client.String()
}

// parseHop reads one X-Forwarded-For entry: an address, perhaps with a port.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if addr, err := netip.ParseAddr(s); err == nil {
		return addr.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

func (l *Limiter) isTrusted(addr netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// RetryAfter is a wait in whole seconds, rounded up, for a Retry-After header.
func RetryAfter(wait time.Duration) int {
	return max(1, int((wait+time.Second-1)/time.Second))
}

// ParseTrustedProxies reads a comma-separated list of IP addresses and
// CIDR prefixes ("10.0.0.0/8, 192.0.2.7, 2001:db8::/32").
func ParseTrustedProxies(v string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if strings.Contains(item, "/") {
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, &BadProxyError{Item: item}
			}
			prefixes = append(prefixes, p.Masked())
			continue
		}
		addr, err := netip.ParseAddr(item)
		if err != nil || addr.Zone() != "" {
			return nil, &BadProxyError{Item: item}
		}
		addr = addr.Unmap()
		prefixes = append(prefixes, netip.PrefixFrom(addr, addr.BitLen()))
	}
	return prefixes, nil
}

// BadProxyError is an entry of a trusted proxy list that is neither an
// address nor a prefix.
type BadProxyError struct{ Item string }

func (e *BadProxyError) Error() string {
	return "\"" + e.Item + "\" is neither an IP address nor a CIDR prefix such as 10.0.0.0/8"
}
