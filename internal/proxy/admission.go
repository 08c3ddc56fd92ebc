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

// maxReserve bounds the requests one statement reserves for a token
// without a limit: at most that many are counted ahead of use.
const maxReserve = 4096

// leaseForgetAfter is how long an ended lease is kept to size the next
// reservation; a token idle for longer starts again without one.
const leaseForgetAfter = time.Second

// releaseTimeout bounds giving back a token's unused reservation.
const releaseTimeout = 10 * time.Second

// admissionQueue admits requests through a service.TokenAdmitter and
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
// A token without a limit that is used again while its last statement's
// answer is fresh gets an admission lease: the statement also reserves
// (counts) requests, sized by the token's recent traffic, which the queue
// admits without a statement for service.AdmissionLease from before that
// statement. Changes that would refuse them return only after that
// (service.AwaitAdmissionLeases), so they still take effect on every
// instance before they are reported done. Reserved requests not used when
// the lease ends are given back, so request_count settles on the requests
// admitted; until then it includes them.
type admissionQueue struct {
	admitter service.TokenAdmitter
	log      *slog.Logger

	mu      sync.Mutex
	lines   map[string]*admissionLine  // by secret hash, while a statement for it runs
	leases  map[string]*admissionLease // by secret hash: tokens without a limit in use
	unused  map[int64]int64            // reserved requests to give back, by token ID
	closed  bool
	stop    chan struct{}
	stopped chan struct{}
}

// admissionLease is what a token's last statement said, and the requests it
// reserved that are not yet admitted.
type admissionLease struct {
	token   *service.Token
	project *service.Project
	until   time.Time // service.AdmissionLease after the statement began
	left    int64     // reserved and not yet admitted
	used    int64     // admitted since the statement (sizes the next reservation)
}

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
func newAdmissionQueue(admitter service.TokenAdmitter, log *slog.Logger) *admissionQueue {
	q := &admissionQueue{
		admitter: admitter,
		log:      log,
		lines:    make(map[string]*admissionLine),
		leases:   make(map[string]*admissionLease),
		unused:   make(map[int64]int64),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	go q.sweep()
	return q
}

func (q *admissionQueue) admit(ctx context.Context, secretHash []byte) (*service.Token, *service.Project, error) {
	q.mu.Lock()
	if lease := q.leases[string(secretHash)]; lease != nil && lease.left > 0 {
		if now := time.Now(); now.Before(lease.until) && now.Before(lease.token.ExpiresAt) {
			lease.left--
			lease.used++
			q.mu.Unlock()
			return lease.token, lease.project, nil
		}
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
		start := time.Now()
		token, project, err := q.admitter.TokenAdmitByHash(ctx, secretHash, 1, reserve)
		q.granted(secretHash, start, 1, reserve, token, project, err)
		return token, project, err
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
// in the order they arrived. The statement is detached from the leading
// request's context: the others depend on it.
func (b *admissionBatch) run(ctx context.Context, q *admissionQueue, secretHash []byte, n int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchAdmitTimeout)
	defer cancel()
	q.mu.Lock()
	reserve := q.reserveLocked(secretHash, n)
	q.mu.Unlock()
	var beyondLimit error // the refusal of those a partial admission leaves out
	for {
		start := time.Now()
		token, project, err := q.admitter.TokenAdmitByHash(ctx, secretHash, n, reserve)
		q.granted(secretHash, start, n, reserve, token, project, err)
		if err == nil {
			b.admitted, b.token, b.project, b.err = n, token, project, beyondLimit
			return
		}
		left, ok := errors.AsType[*service.RequestsLeftError](err)
		if !ok || left.Left >= n {
			b.err = err
			return
		}
		// Only a token with a limit is short of requests, and it reserves none.
		n, reserve, beyondLimit = left.Left, 0, service.ErrLimitReached
	}
}

// reserveLocked is how many requests the token's next statement, admitting
// n, should reserve: none for a token not used lately (so a token used now
// and then is counted request by request), else about twice what it used
// under its last lease, less what it still holds.
func (q *admissionQueue) reserveLocked(secretHash []byte, n int64) int64 {
	lease := q.leases[string(secretHash)]
	if lease == nil || q.closed {
		return 0
	}
	return max(0, min(2*(lease.used+n), maxReserve)-lease.left)
}

// granted takes in a statement's answer: a token without a limit gets (or
// keeps) its lease, with the reserved requests added; a refusal or error
// ends the lease, and a limit means nothing was reserved.
func (q *admissionQueue) granted(secretHash []byte, start time.Time, n, reserve int64, token *service.Token, project *service.Project, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	lease := q.leases[string(secretHash)]
	if err != nil || token.MaxRequests != nil || q.closed {
		if err == nil && token.MaxRequests == nil && reserve > 0 {
			q.unused[token.ID] += reserve // closed meanwhile: give it back
		}
		if lease != nil {
			q.unused[lease.token.ID] += lease.left
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
	lease.left += reserve
	lease.used = n
}

// sweep gives back, every half lease, the reservations of ended leases.
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
			ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
			if err := q.releaseUnused(ctx); err != nil {
				q.log.Warn("proxy: unused reserved requests not given back yet; retrying", "error", err)
			}
			cancel()
		}
	}
}

// endLeases moves the reservations of ended leases (of all, when all) to
// the requests to give back, and forgets leases idle for a while.
func (q *admissionQueue) endLeases(all bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	for hash, lease := range q.leases {
		if _, running := q.lines[hash]; running && !all {
			continue // its statement's answer will renew or end it
		}
		if all || !now.Before(lease.until) {
			q.unused[lease.token.ID] += lease.left
			lease.left = 0
		}
		if all || now.Sub(lease.until) > leaseForgetAfter {
			delete(q.leases, hash)
		}
	}
}

// releaseUnused gives back the unused reservations; those it cannot are
// kept for the next try (until then the token counts them as used).
func (q *admissionQueue) releaseUnused(ctx context.Context) error {
	q.mu.Lock()
	unused := q.unused
	q.unused = make(map[int64]int64)
	q.mu.Unlock()
	var errs []error
	for tokenID, n := range unused {
		if n == 0 {
			continue
		}
		err := q.admitter.TokenReleaseReserved(ctx, tokenID, n)
		if err == nil {
			continue
		}
		if errors.Is(err, service.ErrInvalid) || errors.Is(err, service.ErrNotFound) {
			q.log.Error("proxy: cannot give back reserved requests", "error", err, "token_id", tokenID, "requests", n)
			continue // would fail again
		}
		errs = append(errs, err)
		q.mu.Lock()
		q.unused[tokenID] += n
		q.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Close ends every lease and gives back what they reserved and did not
// use. The queue admits no more requests on a lease afterwards; call it
// once the requests in flight have finished.
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
	q.endLeases(true)
	return q.releaseUnused(ctx)
}
