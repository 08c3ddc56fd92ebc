package proxy

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// batchAdmitTimeout bounds a statement that admits several clients'
// requests, which no single client's departure may cancel.
const batchAdmitTimeout = 30 * time.Second

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
type admissionQueue struct {
	admitter service.TokenAdmitter

	mu    sync.Mutex
	lines map[string]*admissionLine // by secret hash, while a statement for it runs
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

func newAdmissionQueue(admitter service.TokenAdmitter) *admissionQueue {
	return &admissionQueue{admitter: admitter, lines: make(map[string]*admissionLine)}
}

func (q *admissionQueue) admit(ctx context.Context, secretHash []byte) (*service.Token, *service.Project, error) {
	q.mu.Lock()
	line, busy := q.lines[string(secretHash)]
	if !busy {
		line = &admissionLine{}
		q.lines[string(secretHash)] = line
		q.mu.Unlock()
		defer q.handOver(secretHash, line)
		// Alone in its statement, so the request's own context may cancel it.
		return q.admitter.TokenAdmitByHash(ctx, secretHash, 1)
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
			batch.run(ctx, q.admitter, secretHash, n)
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
func (b *admissionBatch) run(ctx context.Context, admitter service.TokenAdmitter, secretHash []byte, n int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchAdmitTimeout)
	defer cancel()
	var beyondLimit error // the refusal of those a partial admission leaves out
	for {
		token, project, err := admitter.TokenAdmitByHash(ctx, secretHash, n)
		if err == nil {
			b.admitted, b.token, b.project, b.err = n, token, project, beyondLimit
			return
		}
		left, ok := errors.AsType[*service.RequestsLeftError](err)
		if !ok || left.Left >= n {
			b.err = err
			return
		}
		n, beyondLimit = left.Left, service.ErrLimitReached
	}
}
