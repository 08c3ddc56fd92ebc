package proxy

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// batchAdmitTimeout bounds a statement that admits several clients'
// requests, which no single client's departure may cancel.
const batchAdmitTimeout = 30 * time.Second

// maxReserve bounds the requests one statement reserves for a token: at
// most that many are counted ahead of use.
const maxReserve = 4096

// limitShare is the most of what a token's limit leaves that one statement
// reserves (1/limitShare): requests reserved by one instance are refused to
// the others until they are used or given back, so a token close to its
// limit reserves little, and nothing once fewer than limitShare are left.
const limitShare = 8

// limitWaits bounds how often a request refused for the limit while
// others' reservations are counted waits for them to be given back.
const limitWaits = 3

// limitWait is how long a reservation may be counted after a refusal saw
// it: until its lease ends, the holder's next sweep and its statement.
const limitWait = service.AdmissionLease + service.AdmissionLease/2 + 25*time.Millisecond

// leaseForgetAfter is how long an ended lease is kept to size the next
// reservation; a token idle for longer starts again without one.
const leaseForgetAfter = time.Second

// renewAhead is how long before a busy token's lease ends a statement
// renews it in the background, so that its requests need not wait for one.
const renewAhead = service.AdmissionLease / 4

// settleTimeout bounds settling a token's reservations.
const settleTimeout = 10 * time.Second

// admissionQueue admits requests through service.Store.TokenAdmitByHash and
// coalesces the requests of one token that arrive while a statement for it
// is running into the next statement, which admits them all at once
// (request_count + n). A busy token so costs one database statement per
// batch instead of one per request: on PostgreSQL each admission is a
// commit of the token's row, and the next one waits for its row lock and
// WAL flush. Every statement still applies every rule as the database sees
// it then, so limits stay exact across instances, request_count always
// equals the requests admitted, and a revocation refuses the next
// statement. A request that finds no statement running goes at once.
//
// A token used again while its last statement's answer is fresh gets an
// admission lease: the statement also reserves (counts) requests, sized by
// the token's recent traffic and what its limit leaves, which the queue
// admits without a statement for service.AdmissionLease from before that
// statement. Changes that would refuse them return only after that
// (service.AwaitLeases), so they still take effect on every
// instance before they are reported done. Reserved requests not used when
// the lease ends are given back, so request_count settles on the requests
// admitted; until then it includes them. A limit counts reservations as
// used, so it is never exceeded; a request it refuses while reservations
// are counted waits for them to be given back and tries again, so that the
// limit also admits every request it has room for.
type admissionQueue struct {
	admitter service.Store
	log      *slog.Logger

	mu       sync.Mutex
	lines    map[string]*admissionLine  // by secret hash, while a statement for it runs
	leases   map[string]*admissionLease // by secret hash: tokens in use
	settle   map[int64]settlement       // reservations of ended leases, by token ID
	closed   bool
	renewals sync.WaitGroup // statements renewing leases in the background
	stop     chan struct{}
	stopped  chan struct{}
}

// admissionLease is what a token's last statement said, and the requests it
// reserved that are not yet admitted.
type admissionLease struct {
	token   *service.Token
	project *service.Project
	until   time.Time // service.AdmissionLease after the statement began
	held    int64     // reserved by its statements, not yet settled
	left    int64     // of those held, not yet admitted
	used    int64     // admitted since the statement (sizes the next reservation)
}

// settlement is what service.TokenSettleReserved is to take off a token.
type settlement struct{ reserved, unused int64 }

type admissionLine struct {
	gathering *admissionBatch // requests waiting for the running statement, or nil
}

// admissionBatch is the requests one statement admits. Its result fields
// are written before done is closed.
type admissionBatch struct {
	n     int64
	ready chan struct{} // closed when the statement before this one has finished
	done  chan struct{}

	admitted int64 // the first admitted requests of the batch were admitted
	token    *service.Token
	project  *service.Project
	err      error // the refusal of the others
}

// newAdmissionQueue starts the queue's sweeper, which gives back the
// reservations of ended leases; Close stops it.
func newAdmissionQueue(admitter service.Store, log *slog.Logger) *admissionQueue {
	q := &admissionQueue{
		admitter: admitter,
		log:      log,
		lines:    make(map[string]*admissionLine),
		leases:   make(map[string]*admissionLease),
		settle:   make(map[int64]settlement),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	go q.sweep()
	return q
}

func (q *admissionQueue) admit(ctx context.Context, secretHash []byte) (*service.Token, *service.Project, error) {
	q.mu.Lock()
	if taken, token, project := q.takeLocked(secretHash, 1); taken == 1 {
		q.renewSoonLocked(secretHash)
		q.mu.Unlock()
		return token, project, nil
	}
	line, busy := q.lines[string(secretHash)]
	if !busy {
		line = &admissionLine{}
		q.lines[string(secretHash)] = line
		reserve := q.reserveLocked(secretHash, 1)
		q.mu.Unlock()
		defer q.handOver(secretHash, line)
		// Alone in its statement, so the request's own context may cancel it,
		// unless the statement reserves: a reservation committed while its
		// answer was lost would stay counted.
		if reserve > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), batchAdmitTimeout)
			defer cancel()
		}
		admitted, token, project, err := q.admitMany(ctx, secretHash, 1, reserve)
		if admitted == 1 {
			return token, project, nil
		}
		return nil, nil, err
	}
	batch := line.gathering
	leads := batch == nil
	if leads {
		batch = &admissionBatch{ready: make(chan struct{}), done: make(chan struct{})}
		line.gathering = batch
	}
	place := batch.n
	batch.n++
	q.mu.Unlock()

	if leads {
		<-batch.ready
		q.mu.Lock()
		line.gathering = nil // later arrivals gather for the statement after this one
		n := batch.n
		q.mu.Unlock()
		func() {
			defer q.handOver(secretHash, line)
			defer close(batch.done)
			batch.run(ctx, q, secretHash, n)
		}()
	} else {
		<-batch.done
	}
	if place < batch.admitted {
		return batch.token, batch.project, nil
	}
	return nil, nil, batch.err
}

// leased reports whether the token holds a lease that has not ended: its
// last statement admitted it, and nothing that refuses it can have taken
// effect since (such changes wait for the leases to end).
func (q *admissionQueue) leased(secretHash []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	lease := q.leases[string(secretHash)]
	if lease == nil {
		return false
	}
	now := time.Now()
	return now.Before(lease.until) && now.Before(lease.token.ExpiresAt)
}

// handOver lets the batch gathered during the statement that just finished
// run its own, or retires the token's line when nobody is waiting.
func (q *admissionQueue) handOver(secretHash []byte, line *admissionLine) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if line.gathering != nil {
		close(line.gathering.ready)
		return
	}
	delete(q.lines, string(secretHash))
}

// run admits as many of the batch's n requests as the token's limit leaves,
// in the order they arrived, from the token's lease first. Its statements
// are detached from the leading request's context: the others depend on them.
func (b *admissionBatch) run(ctx context.Context, q *admissionQueue, secretHash []byte, n int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchAdmitTimeout)
	defer cancel()
	q.mu.Lock()
	taken, token, project := q.takeLocked(secretHash, n)
	reserve := q.reserveLocked(secretHash, n-taken)
	q.mu.Unlock()
	b.admitted, b.token, b.project = taken, token, project
	if taken == n {
		return
	}
	admitted, token, project, err := q.admitMany(ctx, secretHash, n-taken, reserve)
	b.admitted += admitted
	if admitted > 0 {
		b.token, b.project = token, project
	}
	b.err = err
}

// admitMany admits as many of n requests as the token's limit leaves, with
// as few statements as it can, the first reserving reserve more. It returns
// how many it admitted, the token and project as last seen, and the refusal
// of the others.
func (q *admissionQueue) admitMany(ctx context.Context, secretHash []byte, n, reserve int64) (admitted int64, token *service.Token, project *service.Project, err error) {
	ask := n
	waits, reservedBefore := 0, int64(-1)
	var short *service.LimitError // the refusal that made ask fewer than the rest
	for admitted < n {
		start := time.Now()
		t, p, err := q.admitter.TokenAdmitByHash(ctx, &service.TokenAdmitByHashParams{
			SecretHash: secretHash, N: ask, Reserve: reserve, Lease: service.AdmissionLease,
		})
		q.granted(secretHash, start, ask, reserve, t, p, err)
		if err == nil {
			admitted, token, project = admitted+ask, t, p
			ask, reserve = n-admitted, 0
			if short != nil && short.Reserved == 0 {
				break // the rest had no room, nor any coming back
			}
			continue
		}
		limit, ok := errors.AsType[*service.LimitError](err)
		if !ok {
			return admitted, token, project, err
		}
		if reserve > 0 {
			reserve = 0 // perhaps the limit leaves room for the requests alone
			continue
		}
		// The token's lease may have requests to spare, or have ended with
		// requests reserved, which the sweeper settles only once no statement
		// for the token runs.
		q.mu.Lock()
		taken, t, p := q.takeLocked(secretHash, n-admitted)
		unsettled, held := q.endLeaseLocked(secretHash)
		q.mu.Unlock()
		if taken > 0 {
			admitted, token, project = admitted+taken, t, p
		}
		ask = n - admitted
		othersReserved := limit.Reserved - held
		switch {
		case taken > 0:
		case unsettled:
			if err := q.settleReserved(ctx); err != nil {
				return admitted, token, project, err
			}
		case limit.Left > 0:
			ask, short = min(limit.Left, ask), limit
		case othersReserved > 0 && waits < limitWaits && (reservedBefore < 0 || othersReserved < reservedBefore):
			// Reserved by other instances: wait for what they do not use.
			// Reservations that do not come back between two waits are
			// being used, or were lost with an instance that stopped dead.
			waits, reservedBefore = waits+1, othersReserved
			select {
			case <-ctx.Done():
				return admitted, token, project, ctx.Err()
			case <-time.After(limitWait):
			}
		default:
			return admitted, token, project, err
		}
	}
	if admitted < n {
		return admitted, token, project, service.ErrLimitReached
	}
	return admitted, token, project, nil
}

// renewSoonLocked starts a statement that renews the token's lease, and
// reserves for the next, when the lease is about to end and no statement
// for the token runs. A token too close to its limit to reserve is left to
// its requests' statements.
func (q *admissionQueue) renewSoonLocked(secretHash []byte) {
	lease := q.leases[string(secretHash)]
	if q.closed || time.Until(lease.until) > renewAhead {
		return
	}
	if _, busy := q.lines[string(secretHash)]; busy {
		return
	}
	reserve := q.reserveLocked(secretHash, 0)
	if reserve < 1 && lease.token.MaxRequests != nil {
		return
	}
	reserve = max(1, reserve) // renews what the lease has left, at least
	lease.used = 0            // sizes the reservation after this one
	line := &admissionLine{}
	q.lines[string(secretHash)] = line
	q.renewals.Add(1)
	go func() {
		defer q.renewals.Done()
		defer q.handOver(secretHash, line)
		ctx, cancel := context.WithTimeout(context.Background(), batchAdmitTimeout)
		defer cancel()
		start := time.Now()
		token, project, err := q.admitter.TokenAdmitByHash(ctx, &service.TokenAdmitByHashParams{
			SecretHash: secretHash, Reserve: reserve, Lease: service.AdmissionLease,
		})
		q.granted(secretHash, start, 0, reserve, token, project, err)
	}()
}

// takeLocked admits up to n requests on the token's lease, if it holds one
// that has not ended, and returns how many with what the lease was told.
func (q *admissionQueue) takeLocked(secretHash []byte, n int64) (int64, *service.Token, *service.Project) {
	lease := q.leases[string(secretHash)]
	if lease == nil || lease.left == 0 {
		return 0, nil, nil
	}
	if now := time.Now(); !now.Before(lease.until) || !now.Before(lease.token.ExpiresAt) {
		return 0, nil, nil
	}
	taken := min(n, lease.left)
	lease.left -= taken
	lease.used += taken
	return taken, lease.token, lease.project
}

// endLeaseLocked ends the token's lease if its time is up, and reports
// whether any of the token's reservations wait to be settled, and how many
// its lease holds.
func (q *admissionQueue) endLeaseLocked(secretHash []byte) (unsettled bool, held int64) {
	lease := q.leases[string(secretHash)]
	if lease == nil {
		return false, 0
	}
	if !time.Now().Before(lease.until) {
		q.endLocked(lease)
	}
	return q.settle[lease.token.ID].reserved > 0, lease.held
}

// endLocked moves what the lease holds to the reservations to settle.
func (q *admissionQueue) endLocked(lease *admissionLease) {
	q.addSettlementLocked(lease.token.ID, settlement{lease.held, lease.left})
	lease.held, lease.left = 0, 0
}

func (q *admissionQueue) addSettlementLocked(tokenID int64, s settlement) {
	if s.reserved == 0 {
		return
	}
	pending := q.settle[tokenID]
	q.settle[tokenID] = settlement{pending.reserved + s.reserved, pending.unused + s.unused}
}

// reserveLocked is how many requests the token's next statement, admitting
// n, should reserve: none for a token not used lately (so a token used now
// and then is counted request by request), else about twice what it used
// under its last lease, less what it still holds, and at most 1/limitShare
// of what its limit left then.
func (q *admissionQueue) reserveLocked(secretHash []byte, n int64) int64 {
	lease := q.leases[string(secretHash)]
	if lease == nil || q.closed {
		return 0
	}
	reserve := min(2*(lease.used+n), maxReserve) - lease.left
	if limit := lease.token.MaxRequests; limit != nil {
		reserve = min(reserve, (*limit-lease.token.RequestCount-n)/limitShare)
	}
	return max(0, reserve)
}

// granted takes in a statement's answer: the token gets (or keeps) its
// lease, with the reserved requests added. A refusal by the limit leaves
// the lease as it is; any other refusal or error ends it.
func (q *admissionQueue) granted(secretHash []byte, start time.Time, n, reserve int64, token *service.Token, project *service.Project, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	lease := q.leases[string(secretHash)]
	if errors.Is(err, service.ErrLimitReached) {
		return
	}
	if err != nil || q.closed {
		if err == nil {
			q.addSettlementLocked(token.ID, settlement{reserve, reserve}) // closed meanwhile: give it back
		}
		if lease != nil {
			q.endLocked(lease)
			delete(q.leases, string(secretHash))
		}
		return
	}
	if lease == nil {
		lease = &admissionLease{}
		q.leases[string(secretHash)] = lease
	}
	lease.token, lease.project = token, project
	lease.until = start.Add(service.AdmissionLease)
	lease.held += reserve
	lease.left += reserve
	if n > 0 { // else a renewal, which reset used as it began
		lease.used = n
	}
}

// sweep settles, every half lease, the reservations of ended leases.
func (q *admissionQueue) sweep() {
	defer close(q.stopped)
	ticker := time.NewTicker(service.AdmissionLease / 2)
	defer ticker.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-ticker.C:
			q.endLeases(false)
			ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
			if err := q.settleReserved(ctx); err != nil {
				q.log.Warn("proxy: reserved requests not settled yet; retrying", "error", err)
			}
			cancel()
		}
	}
}

// endLeases ends the leases whose time is up (all, when all), and forgets
// leases idle for a while.
func (q *admissionQueue) endLeases(all bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	for hash, lease := range q.leases {
		if _, running := q.lines[hash]; running && !all {
			continue // its statement's answer will renew or end it
		}
		if all || !now.Before(lease.until) {
			q.endLocked(lease)
		}
		if all || now.Sub(lease.until) > leaseForgetAfter {
			delete(q.leases, hash)
		}
	}
}

// settleReserved settles the reservations of ended leases, giving back the
// unused requests; those it cannot settle are kept for the next try (until
// then the token counts them as used, and reserved).
func (q *admissionQueue) settleReserved(ctx context.Context) error {
	q.mu.Lock()
	pending := q.settle
	q.settle = make(map[int64]settlement)
	q.mu.Unlock()
	var errs []error
	for tokenID, s := range pending {
		err := q.admitter.TokenSettleReserved(ctx, tokenID, s.reserved, s.unused)
		if err == nil {
			continue
		}
		if errors.Is(err, service.ErrInvalid) || errors.Is(err, service.ErrNotFound) {
			q.log.Error("proxy: cannot settle reserved requests", "error", err, "token_id", tokenID, "reserved", s.reserved, "unused", s.unused)
			continue // would fail again
		}
		errs = append(errs, err)
		q.mu.Lock()
		q.addSettlementLocked(tokenID, s)
		q.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Close ends every lease and settles what they reserved, giving back what
// they did not use. The queue admits no more requests on a lease
// afterwards; call it once the requests in flight have finished.
func (q *admissionQueue) Close(ctx context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	close(q.stop)
	<-q.stopped
	q.renewals.Wait()
	q.endLeases(true)
	return q.settleReserved(ctx)
}
