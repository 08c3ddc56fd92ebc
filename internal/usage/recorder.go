// Package usage writes usage events to the store in batches, off the
// request path, without ever dropping one: the queue is bounded and a full
// queue makes Record wait (back-pressure), and a batch that fails to write
// is retried until Close's deadline.
package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/llmproxy/llmproxy/service"
)

// ErrClosed is returned by Record once Close has begun, and by a Record
// still waiting for queue space when Close gives up at its deadline.
var ErrClosed = errors.New("usage recorder closed")

// Options tune a Recorder; zero values take the defaults.
type Options struct {
	QueueSize     int           // events accepted but not yet written; default 10000
	BatchSize     int           // most events per write; default 500
	FlushInterval time.Duration // longest an event waits for its batch to fill; default 100ms
	// RetryMin and RetryMax bound the pause between attempts to write a batch
	// that failed; the pause doubles from RetryMin up to RetryMax. Defaults 50ms and 5s.
	RetryMin, RetryMax time.Duration
	Logger             *slog.Logger // default: discard
}

func (o *Options) setDefaults() {
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 100 * time.Millisecond
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 50 * time.Millisecond
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(5*time.Second, o.RetryMin)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Recorder queues usage events and writes them with store.UsageInsertBatch
// from a single goroutine.
type Recorder struct {
	store service.Store
	opts  Options
	queue chan *service.UsageEventCreateParams
	// full tells the writer, waiting out a batch's flush interval, that a
	// whole batch is queued; it does not wait on the queue itself, so that
	// each event does not wake it.
	full chan struct{}
	// queueClosed is closed with the queue, for the same writer.
	queueClosed chan struct{}

	// closed refuses new Records; senders counts Records in progress, so
	// the queue is closed only after the last one has enqueued or given up.
	mu      sync.RWMutex
	closed  bool
	senders sync.WaitGroup

	pending atomic.Int64 // accepted (or waiting for queue space) and not yet written

	// abort is closed when Close's deadline passes: the writer stops
	// retrying and waiting Records give up. writeCtx ends with it, so a
	// store call in progress is cut short too.
	abort       chan struct{}
	abortOnce   sync.Once
	writeCtx    context.Context
	cancelWrite context.CancelFunc

	done chan struct{} // closed when the writer has flushed everything and exited
}

// NewRecorder starts the writer goroutine; Close stops it.
func NewRecorder(store service.Store, opts Options) *Recorder {
	opts.setDefaults()
	writeCtx, cancel := context.WithCancel(context.Background())
	r := &Recorder{
		store:       store,
		opts:        opts,
		queue:       make(chan *service.UsageEventCreateParams, opts.QueueSize),
		full:        make(chan struct{}, 1),
		queueClosed: make(chan struct{}),
		abort:       make(chan struct{}),
		writeCtx:    writeCtx,
		cancelWrite: cancel,
		done:        make(chan struct{}),
	}
	go r.run()
	return r
}

// Record enqueues ev. When the queue is full it waits for space until ctx
// ends (returning ctx's error) rather than dropping the event. After Close
// has begun it returns ErrClosed. A nil error means ev will be written
// unless Close reports otherwise. Record may rewrite ev's text fields (see
// makeStorable), and gives ev an EventID when it has none, so a batch
// retried after its reply was lost is not stored twice.
func (r *Recorder) Record(ctx context.Context, ev *service.UsageEventCreateParams) error {
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return ErrClosed
	}
	r.senders.Add(1)
	r.mu.RUnlock()
	defer r.senders.Done()

	makeStorable(ev)
	if ev.EventID == nil {
		ev.EventID = service.NewEventID(time.Now())
	}
	// Counted before the send so the writer never sees pending below zero.
	r.pending.Add(1)
	// Try without waiting first: a select with a ready queue and a done ctx
	// picks at random, and an event that fits must not be refused.
	select {
	case r.queue <- ev:
		r.signalFull()
		return nil
	default:
	}
	select {
	case r.queue <- ev:
		r.signalFull()
		return nil
	case <-ctx.Done():
		r.pending.Add(-1)
		return ctx.Err()
	case <-r.abort:
		r.pending.Add(-1)
		return ErrClosed
	}
}

func (r *Recorder) signalFull() {
	if len(r.queue) >= r.opts.BatchSize {
		select {
		case r.full <- struct{}{}:
		default: // already signalled
		}
	}
}

// Depth is how many events are not yet written, counting those waiting for
// queue space (for a gauge).
func (r *Recorder) Depth() int { return int(r.pending.Load()) }

// Close stops accepting events and waits until every accepted one is
// written. If ctx ends first it stops retrying, logs how many events were
// not written and returns an error saying so. Close may be called again.
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	first := !r.closed
	r.closed = true
	r.mu.Unlock()
	if first {
		go func() {
			r.senders.Wait()
			close(r.queue)
			close(r.queueClosed)
		}()
	}
	select {
	case <-r.done:
		r.cancelWrite()
		return nil
	case <-ctx.Done():
		r.abortOnce.Do(func() {
			close(r.abort)
			r.cancelWrite()
		})
		lost := r.pending.Load()
		if lost == 0 {
			return nil
		}
		r.opts.Logger.Error("usage: events not written before the shutdown deadline", "events", lost)
		return fmt.Errorf("usage: %d events not written: %w", lost, ctx.Err())
	}
}

// run writes batches until the queue is closed and empty or Close gives
// up. It waits on the queue only while it has nothing to write; once a
// batch has begun it sleeps until the batch is due or full, then takes
// what has queued meanwhile, so a steady stream of events costs a wake-up
// per batch, not per event.
func (r *Recorder) run() {
	defer close(r.done)
	batch := make([]*service.UsageEventCreateParams, 0, r.opts.BatchSize)
	timer := time.NewTimer(r.opts.FlushInterval)
	timer.Stop()
	for {
		select {
		case ev, ok := <-r.queue:
			if !ok {
				return
			}
			batch = append(batch, ev)
		case <-r.abort:
			return
		}
		timer.Reset(r.opts.FlushInterval)
		open := r.fill(&batch, timer.C)
		timer.Stop()
		select {
		case <-r.abort:
			return
		default:
		}
		if !r.write(batch) {
			return
		}
		clear(batch)
		batch = batch[:0]
		if !open {
			return
		}
	}
}

// fill adds queued events to batch until it is full or due. open is false
// once the queue is closed and empty, or Close gave up.
func (r *Recorder) fill(batch *[]*service.UsageEventCreateParams, due <-chan time.Time) (open bool) {
	for {
		for len(*batch) < r.opts.BatchSize {
			select {
			case ev, ok := <-r.queue:
				if !ok {
					return false
				}
				*batch = append(*batch, ev)
				continue
			default:
			}
			break // nothing more queued
		}
		if len(*batch) >= r.opts.BatchSize || due == nil {
			return true
		}
		select {
		case <-due:
			due = nil // one last take of what queued meanwhile
		case <-r.full:
		case <-r.queueClosed:
		case <-r.abort:
			return false
		}
	}
}

// write stores batch, retrying with a growing pause until it succeeds
// (true) or Close gives up (false). UsageInsertBatch writes all or nothing,
// so a failed attempt leaves no rows behind, and skips stored EventIDs, so a
// retry after a commit whose reply was lost does not write the batch twice.
func (r *Recorder) write(batch []*service.UsageEventCreateParams) bool {
	if len(batch) == 0 {
		return true
	}
	pause := r.opts.RetryMin
	for attempt := 1; ; attempt++ {
		_, err := r.store.UsageInsertBatch(r.writeCtx, batch)
		if err == nil {
			r.pending.Add(-int64(len(batch)))
			return true
		}
		if errors.Is(err, service.ErrInvalid) {
			return r.writeEach(batch, err)
		}
		r.opts.Logger.Warn("usage: writing a batch failed, will retry",
			"events", len(batch), "attempt", attempt, "retry_in", pause, "error", err)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-r.abort:
			t.Stop()
			return false
		}
		pause = min(2*pause, r.opts.RetryMax)
	}
}

// writeEach handles a batch the database refused as invalid, which no retry
// can change: it writes the events one by one, and an event refused on its
// own is logged and dropped, since keeping it would stop every later event
// behind it. makeStorable prevents the refusals known to happen.
func (r *Recorder) writeEach(batch []*service.UsageEventCreateParams, cause error) bool {
	if len(batch) == 1 {
		ev := batch[0]
		r.opts.Logger.Error("usage: the database refuses this event; it is dropped", "error", cause,
			"token_id", ev.TokenID, "project_id", ev.ProjectID, "method", ev.Method, "path", ev.Path,
			"model", ev.Model, "status", ev.Status, "created_at", ev.CreatedAt)
		r.pending.Add(-1)
		return true
	}
	for _, ev := range batch {
		if !r.write([]*service.UsageEventCreateParams{ev}) {
			return false
		}
	}
	return true
}

// makeStorable rewrites the client-supplied text of ev (method, path, model)
// as valid UTF-8 without NUL bytes: PostgreSQL's text type refuses both, and
// one such event would otherwise fail its whole batch. Invalid bytes become
// U+FFFD.
func makeStorable(ev *service.UsageEventCreateParams) {
	for _, field := range []*string{&ev.Method, &ev.Path, &ev.Model} {
		if !utf8.ValidString(*field) || strings.IndexByte(*field, 0) >= 0 {
			*field = strings.ReplaceAll(strings.ToValidUTF8(*field, "\uFFFD"), "\x00", "\uFFFD")
		}
	}
}
