package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// gatedAdmitter is a service.Store that admits one token, whose statements
// wait for the test to open the gate, so that requests pile up behind one.
type gatedAdmitter struct {
	service.Store               // nil: only admission is used
	gate          chan struct{} // each statement takes one value before it runs
	started       chan int64    // each statement's n, sent as it starts

	mu       sync.Mutex
	count    int64 // requests admitted by statements
	reserved int64 // requests reserved by statements
	settled  int64 // reserved requests settled
	released int64 // of those settled, the unused given back
	reserves []int64
	max      int64 // 0: unlimited
	refusal  error // refuses every statement when set
	ctxErrs  int   // statements that ran with a cancelled context

	opened sync.Once
}

func newGatedAdmitter(max int64) *gatedAdmitter {
	return &gatedAdmitter{gate: make(chan struct{}), started: make(chan int64, 100), max: max}
}

func (a *gatedAdmitter) TokenAdmitByHash(ctx context.Context, p *service.TokenAdmitByHashParams) (*service.Token, *service.Project, error) {
	n, reserve := p.N, p.Reserve
	if p.Lease != service.AdmissionLease {
		return nil, nil, fmt.Errorf("%w: lease %v, want the AdmissionLease the queue admits on", service.ErrInvalid, p.Lease)
	}
	a.started <- n
	<-a.gate
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reserves = append(a.reserves, reserve)
	if ctx.Err() != nil {
		a.ctxErrs++
		return nil, nil, ctx.Err()
	}
	counted := a.count + a.reserved - a.released
	switch {
	case a.refusal != nil:
		return nil, nil, a.refusal
	case a.max > 0 && counted+n+reserve > a.max:
		return nil, nil, &service.LimitError{Left: max(0, a.max-counted), Reserved: a.reserved - a.settled}
	}
	a.count += n
	a.reserved += reserve
	token := &service.Token{ID: 1, RequestCount: counted + n + reserve, RequestsReserved: a.reserved - a.settled, ExpiresAt: time.Now().Add(time.Hour)}
	if a.max > 0 {
		token.MaxRequests = &a.max
	}
	return token, &service.Project{ID: 1}, nil
}

func (a *gatedAdmitter) TokenSettleReserved(ctx context.Context, tokenID, reserved, unused int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if unused < 0 || unused > reserved || a.settled+reserved > a.reserved {
		return service.ErrInvalid
	}
	a.settled += reserved
	a.released += unused
	return nil
}

func (a *gatedAdmitter) counted() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.count + a.reserved - a.released
}

// newTestQueue is a queue on a, closed when the test ends.
func newTestQueue(t *testing.T, a *gatedAdmitter) *admissionQueue {
	q := newAdmissionQueue(a, slog.New(slog.DiscardHandler))
	t.Cleanup(func() {
		openGate(a) // for a renewal a slow test let start
		q.Close(context.Background())
	})
	return q
}

type admitResult struct {
	token *service.Token
	err   error
}

// startAdmissions starts k admissions through q, each after the previous
// one has joined the queue, and returns their results in order.
func startAdmissions(t *testing.T, q *admissionQueue, ctx context.Context, k int) []chan admitResult {
	t.Helper()
	results := make([]chan admitResult, k)
	for i := range results {
		before := queuedRequests(q)
		results[i] = admitInBackground(q, ctx)
		waitFor(t, func() bool { return queuedRequests(q) > before })
	}
	return results
}

// queuedRequests counts the requests gathering for the token's next statement.
func queuedRequests(q *admissionQueue) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if line := q.lines["hash"]; line != nil && line.gathering != nil {
		return line.gathering.n
	}
	return 0
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// runFirstStatement starts one admission and waits until its statement runs,
// so that the admissions started next must queue behind it.
func runFirstStatement(t *testing.T, q *admissionQueue, a *gatedAdmitter) chan admitResult {
	t.Helper()
	first := admitInBackground(q, t.Context())
	if n := <-a.started; n != 1 {
		t.Fatalf("first statement admits %d, want 1", n)
	}
	return first
}

func TestAdmissionQueueCoalescesWaitingRequests(t *testing.T) {
	a := newGatedAdmitter(0)
	q := newTestQueue(t, a)
	first := runFirstStatement(t, q, a)
	waiting := startAdmissions(t, q, t.Context(), 10)

	a.gate <- struct{}{} // the first statement finishes; the ten waiting go in one
	if n := <-a.started; n != 10 {
		t.Fatalf("second statement admits %d, want the 10 waiting", n)
	}
	a.gate <- struct{}{}
	for i, r := range append([]chan admitResult{first}, waiting...) {
		if got := <-r; got.err != nil {
			t.Errorf("request %d: %v", i, got.err)
		}
	}
	if a.count != 11 {
		t.Errorf("count = %d, want 11", a.count)
	}
	if len(q.lines) != 0 {
		t.Errorf("%d lines left after all admissions ended", len(q.lines))
	}
}

func TestAdmissionQueueAdmitsWhatTheLimitLeavesInArrivalOrder(t *testing.T) {
	a := newGatedAdmitter(5)
	q := newTestQueue(t, a)
	first := runFirstStatement(t, q, a)
	waiting := startAdmissions(t, q, t.Context(), 10)

	a.gate <- struct{}{}
	var statements []int64
	for range 2 { // 10 refused with 4 left, then 4
		statements = append(statements, <-a.started)
		a.gate <- struct{}{}
	}
	if !slices.Equal(statements, []int64{10, 4}) {
		t.Errorf("statements after the first admitted %v, want [10 4]", statements)
	}
	if got := <-first; got.err != nil {
		t.Fatal(got.err)
	}
	for i, r := range waiting {
		got := <-r
		switch {
		case i < 4 && got.err != nil:
			t.Errorf("waiting request %d refused: %v", i, got.err)
		case i >= 4 && !errors.Is(got.err, service.ErrLimitReached):
			t.Errorf("waiting request %d: %v, want ErrLimitReached", i, got.err)
		case i >= 4 && got.token != nil:
			t.Errorf("refused request %d got a token", i)
		}
	}
	if a.count != 5 {
		t.Errorf("count = %d, want exactly the limit 5", a.count)
	}
}

func TestAdmissionQueueGivesEveryWaiterTheRefusal(t *testing.T) {
	a := newGatedAdmitter(0)
	q := newTestQueue(t, a)
	first := runFirstStatement(t, q, a)
	waiting := startAdmissions(t, q, t.Context(), 3)
	a.mu.Lock()
	a.refusal = service.ErrTokenRevoked // revoked while the first statement ran
	a.mu.Unlock()
	a.gate <- struct{}{}
	<-a.started
	a.gate <- struct{}{}
	for _, r := range append([]chan admitResult{first}, waiting...) {
		if got := <-r; !errors.Is(got.err, service.ErrTokenRevoked) {
			t.Errorf("admission after revocation: %v, want ErrTokenRevoked", got.err)
		}
	}
}

func TestAdmissionQueueBatchOutlivesItsLeadersClient(t *testing.T) {
	a := newGatedAdmitter(0)
	q := newTestQueue(t, a)
	first := runFirstStatement(t, q, a)
	leaderCtx, leaves := context.WithCancel(t.Context())
	leader := startAdmissions(t, q, leaderCtx, 1)
	others := startAdmissions(t, q, t.Context(), 2)
	leaves()

	a.gate <- struct{}{}
	if n := <-a.started; n != 3 {
		t.Fatalf("batch admits %d, want 3", n)
	}
	a.gate <- struct{}{}
	<-first
	// The leader's request was counted with the others: it gets its token
	// (the proxy then finds its client gone and records a 499).
	for _, r := range append(leader, others...) {
		if got := <-r; got.err != nil {
			t.Errorf("batch member: %v", got.err)
		}
	}
	if a.ctxErrs != 0 {
		t.Errorf("%d statements ran with a cancelled context", a.ctxErrs)
	}
}

func TestAdmissionQueueAloneRequestUsesItsContext(t *testing.T) {
	a := newGatedAdmitter(0)
	q := newTestQueue(t, a)
	ctx, cancel := context.WithCancel(t.Context())
	result := admitInBackground(q, ctx)
	<-a.started
	cancel()
	a.gate <- struct{}{}
	if got := <-result; !errors.Is(got.err, context.Canceled) {
		t.Errorf("admission whose client left: %v, want context.Canceled", got.err)
	}
}

func admitInBackground(q *admissionQueue, ctx context.Context) chan admitResult {
	result := make(chan admitResult, 1)
	go func() {
		token, _, err := q.admit(ctx, []byte("hash"))
		result <- admitResult{token, err}
	}()
	return result
}

// admitNow admits through q, opening the gate for a statement if one starts,
// and reports whether one did.
func admitNow(t *testing.T, q *admissionQueue, a *gatedAdmitter) (statement bool) {
	t.Helper()
	result := admitInBackground(q, t.Context())
	select {
	case got := <-result:
		if got.err != nil {
			t.Fatalf("admission on a lease: %v", got.err)
		}
		return false
	case <-a.started:
		a.gate <- struct{}{}
	}
	if got := <-result; got.err != nil {
		t.Fatalf("admission: %v", got.err)
	}
	return true
}

// leasedQueue is a queue whose token without a limit holds a fresh lease
// with 4 requests reserved, after two requests admitted by statements.
func leasedQueue(t *testing.T) (*gatedAdmitter, *admissionQueue) {
	t.Helper()
	a := newGatedAdmitter(0)
	q := newTestQueue(t, a)
	if !admitNow(t, q, a) || !admitNow(t, q, a) {
		t.Fatal("the first two requests did not each run a statement")
	}
	if !slices.Equal(a.reserves, []int64{0, 4}) {
		t.Fatalf("statements reserved %v, want [0 4]: none for a token's first use, then twice the use", a.reserves)
	}
	return a, q
}

func TestAdmissionQueueLeaseAdmitsReservedRequestsWithoutStatements(t *testing.T) {
	a, q := leasedQueue(t)
	for i := range 4 {
		if admitNow(t, q, a) {
			t.Fatalf("reserved request %d ran a statement", i)
		}
	}
	if !admitNow(t, q, a) {
		t.Fatal("a request beyond the reservation ran no statement")
	}
	admitted := int64(7)
	if err := q.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := a.counted(); got != admitted || a.settled != a.reserved {
		t.Errorf("after Close the token counts %d with %d of %d reservations settled, want the %d admitted and all settled", got, a.settled, a.reserved, admitted)
	}
}

func TestAdmissionQueueLeaseEndsAfterAdmissionLease(t *testing.T) {
	a, q := leasedQueue(t)
	time.Sleep(service.AdmissionLease)
	if !admitNow(t, q, a) {
		t.Fatal("a request after the lease ended was admitted without a statement")
	}
	// The sweeper gives back what the ended lease reserved, or the statement
	// renewed it; either way nothing reserved is lost or double counted.
	if err := q.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := a.counted(); got != 3 {
		t.Errorf("token counts %d after Close, want the 3 admitted", got)
	}
}

func TestAdmissionQueueRenewsABusyLeaseBeforeItEnds(t *testing.T) {
	a, q := leasedQueue(t)
	q.mu.Lock()
	ends := time.Now().Add(renewAhead / 2)
	q.leases["hash"].until = ends
	q.mu.Unlock()
	result := admitInBackground(q, t.Context())
	if got := <-result; got.err != nil {
		t.Fatalf("admission on a lease about to end: %v", got.err)
	}
	if n := <-a.started; n != 0 {
		t.Fatalf("the statement after a request on a lease about to end admits %d, want a renewal admitting none", n)
	}
	a.gate <- struct{}{}
	waitFor(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.lines) == 0
	})
	time.Sleep(time.Until(ends))
	if admitNow(t, q, a) {
		t.Error("a request after the renewed lease's first end ran a statement")
	}
	if err := q.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := a.counted(); got != 4 || a.settled != a.reserved {
		t.Errorf("after Close the token counts %d with %d of %d reservations settled, want the 4 admitted and all settled", got, a.settled, a.reserved)
	}
}

func TestAdmissionQueueSweeperGivesBackAnEndedLeasesReservation(t *testing.T) {
	a, q := leasedQueue(t)
	admitNow(t, q, a) // uses one of the 4
	waitFor(t, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.released == 3
	})
}

func TestAdmissionQueueRefusalEndsLease(t *testing.T) {
	a, q := leasedQueue(t)
	time.Sleep(service.AdmissionLease)
	a.mu.Lock()
	a.refusal = service.ErrTokenRevoked
	a.mu.Unlock()
	result := admitInBackground(q, t.Context())
	<-a.started
	a.gate <- struct{}{}
	if got := <-result; !errors.Is(got.err, service.ErrTokenRevoked) {
		t.Fatalf("admission after revocation: %v, want ErrTokenRevoked", got.err)
	}
	q.mu.Lock()
	leases := len(q.leases)
	q.mu.Unlock()
	if leases != 0 {
		t.Errorf("%d leases after a refusal, want none", leases)
	}
	if err := q.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if a.released != 4 {
		t.Errorf("released %d of the 4 reserved and unused", a.released)
	}
}

func TestAdmissionQueueReservesAShareOfWhatTheLimitLeaves(t *testing.T) {
	for _, c := range []struct {
		limit int64
		want  []int64 // reserves of four statements in a row
	}{
		{1000, []int64{0, 4}},     // twice the use: the limit leaves plenty
		{20, []int64{0, 2, 1, 1}}, // (20-1-1)/8, then (20-4-1)/8 and (20-6-1)/8
		{9, []int64{0, 0, 0, 0}},  // (9-1-1)/8: fewer than 8 left, no reservation
	} {
		a := newGatedAdmitter(c.limit)
		q := newTestQueue(t, a)
		for len(a.reserves) < len(c.want) {
			admitNow(t, q, a)
		}
		if !slices.Equal(a.reserves, c.want) {
			t.Errorf("limit %d: statements reserved %v, want %v", c.limit, a.reserves, c.want)
		}
	}
}

// openGate lets every statement of a run at once.
func openGate(a *gatedAdmitter) {
	a.opened.Do(func() {
		close(a.gate)
		go func() {
			for range a.started {
			}
		}()
	})
}

func TestAdmissionQueueLimitWaitsForOthersReservations(t *testing.T) {
	a := newGatedAdmitter(10)
	a.count, a.reserved = 7, 3 // another instance holds the last 3
	openGate(a)
	q := newTestQueue(t, a)
	go func() {
		time.Sleep(service.AdmissionLease)
		a.TokenSettleReserved(context.Background(), 1, 3, 2) // its lease ended with 2 unused
	}()
	results := make([]chan admitResult, 3)
	for i := range results {
		results[i] = admitInBackground(q, t.Context())
	}
	var admitted int
	for _, r := range results {
		got := <-r
		switch {
		case got.err == nil:
			admitted++
		case !errors.Is(got.err, service.ErrLimitReached):
			t.Errorf("admission: %v, want admitted or ErrLimitReached", got.err)
		}
	}
	if admitted != 2 {
		t.Errorf("%d admitted, want the 2 given back", admitted)
	}
	if got := a.counted(); got != 10 {
		t.Errorf("token counts %d, want its limit 10", got)
	}
}

func TestAdmissionQueueLimitGivesUpOnReservationsNotGivenBack(t *testing.T) {
	a := newGatedAdmitter(10)
	a.count, a.reserved = 7, 3 // lost with an instance killed
	openGate(a)
	q := newTestQueue(t, a)
	start := time.Now()
	if _, _, err := q.admit(t.Context(), []byte("hash")); !errors.Is(err, service.ErrLimitReached) {
		t.Fatalf("admission: %v, want ErrLimitReached", err)
	}
	// One wait shows nothing comes back; more would only delay every refusal.
	if elapsed := time.Since(start); elapsed >= 2*limitWait {
		t.Errorf("refusal took %v, want one wait of %v", elapsed, limitWait)
	}
}

func TestAdmissionQueueLimitRefusesAtOnceWhenItsOwnLeaseHoldsTheReservations(t *testing.T) {
	a := newGatedAdmitter(100)
	q := newTestQueue(t, a)
	admitNow(t, q, a)
	admitNow(t, q, a) // reserves 4
	for range 4 {
		admitNow(t, q, a) // uses them
	}
	a.mu.Lock()
	a.max = a.count + a.reserved // used up, the 4 still reserved until the lease ends
	a.mu.Unlock()
	openGate(a)
	start := time.Now()
	if _, _, err := q.admit(t.Context(), []byte("hash")); !errors.Is(err, service.ErrLimitReached) {
		t.Fatalf("admission: %v, want ErrLimitReached", err)
	}
	// Its own lease will give back nothing: no wait.
	if elapsed := time.Since(start); elapsed >= limitWait {
		t.Errorf("refusal took %v, want no wait", elapsed)
	}
}

func TestAdmissionQueueLimitUsesOwnEndedLeasesReservation(t *testing.T) {
	a := newGatedAdmitter(100)
	q := newTestQueue(t, a)
	admitNow(t, q, a)
	admitNow(t, q, a) // reserves 4
	a.mu.Lock()
	a.max = a.count + a.reserved // nothing left but what the lease holds
	a.mu.Unlock()
	time.Sleep(service.AdmissionLease) // the lease ends, still holding 4
	q.mu.Lock()
	q.lines["hash"] = &admissionLine{} // a statement runs: the sweeper keeps off
	q.mu.Unlock()
	openGate(a)
	result := admitInBackground(q, t.Context())
	waitFor(t, func() bool { return queuedRequests(q) == 1 })
	q.handOver([]byte("hash"), q.lines["hash"])
	if got := <-result; got.err != nil {
		t.Fatalf("admission with 4 reserved by its own ended lease: %v, want admitted", got.err)
	}
	if err := q.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := a.counted(); got != 3 {
		t.Errorf("token counts %d, want the 3 admitted", got)
	}
}

func TestAdmissionQueueReservingStatementOutlivesItsClient(t *testing.T) {
	a := newGatedAdmitter(0)
	q := newTestQueue(t, a)
	admitNow(t, q, a) // the token's first use: no reservation, so the next one reserves
	ctx, cancel := context.WithCancel(t.Context())
	result := admitInBackground(q, ctx)
	<-a.started
	cancel()
	a.gate <- struct{}{}
	if got := <-result; got.err != nil {
		t.Errorf("reserving admission whose client left: %v, want it admitted (its answer must not be lost)", got.err)
	}
	if a.ctxErrs != 0 || a.reserves[1] == 0 {
		t.Errorf("statement reserved %d with %d cancelled contexts, want a reservation made with a live context", a.reserves[1], a.ctxErrs)
	}
}
