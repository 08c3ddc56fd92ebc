package usage_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/internal/usage"
	"github.com/llmproxy/llmproxy/service"
	_ "github.com/llmproxy/llmproxy/service/pgstore"
	_ "github.com/llmproxy/llmproxy/service/sqlitestore"
)

// fakeStore implements only UsageInsertBatch; before, when set, runs first
// on every call and may block or fail it.
type fakeStore struct {
	service.Store
	before func(ctx context.Context, call int) error

	mu    sync.Mutex
	calls int
	rows  []*service.UsageEventCreateParams
}

func (s *fakeStore) UsageInsertBatch(ctx context.Context, events []*service.UsageEventCreateParams) (int64, error) {
	s.mu.Lock()
	s.calls++
	call := s.calls
	s.mu.Unlock()
	if s.before != nil {
		if err := s.before(ctx, call); err != nil {
			return 0, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = append(s.rows, events...)
	return int64(len(events)), nil
}

func (s *fakeStore) written() []*service.UsageEventCreateParams {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*service.UsageEventCreateParams(nil), s.rows...)
}

// event makes a distinguishable event: n is its prompt token count.
func event(n int) *service.UsageEventCreateParams {
	return &service.UsageEventCreateParams{
		TokenID: 1, ProjectID: 1, Method: "POST", Path: "/v1/chat/completions",
		Model: "m", Status: 200, PromptTokens: int64(n), TotalTokens: int64(n),
		CreatedAt: time.Now().UTC(),
	}
}

// closeCtx bounds a Close that should succeed, so a bug fails the test
// instead of hanging it.
func closeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// assertEachOnce checks that got holds exactly the events numbered in want.
func assertEachOnce(t *testing.T, got []*service.UsageEventCreateParams, want map[int64]bool) {
	t.Helper()
	seen := make(map[int64]int, len(got))
	for _, ev := range got {
		seen[ev.PromptTokens]++
	}
	for n, count := range seen {
		if count != 1 || !want[n] {
			t.Errorf("event %d written %d times (accepted: %v)", n, count, want[n])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("%d distinct events written, want %d", len(seen), len(want))
	}
}

// recordConcurrently records events from several goroutines while Close
// runs, and returns the numbers of the events Record accepted.
func recordConcurrently(t *testing.T, rec *usage.Recorder) map[int64]bool {
	t.Helper()
	const writers, perWriter = 8, 300
	var (
		mu       sync.Mutex
		accepted = map[int64]bool{}
		wg       sync.WaitGroup
		halfway  = make(chan struct{})
		once     sync.Once
	)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if w == 0 && i == perWriter/2 {
					once.Do(func() { close(halfway) })
				}
				n := w*perWriter + i + 1
				switch err := rec.Record(t.Context(), event(n)); {
				case err == nil:
					mu.Lock()
					accepted[int64(n)] = true
					mu.Unlock()
				case errors.Is(err, usage.ErrClosed):
				default:
					t.Errorf("Record: %v", err)
				}
			}
		})
	}
	<-halfway
	if err := rec.Close(closeCtx(t)); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	if len(accepted) == 0 {
		t.Fatal("no event accepted before Close")
	}
	return accepted
}

func TestRecordAndCloseConcurrentlyLosesNothing(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	rec := usage.NewRecorder(store, usage.Options{QueueSize: 64, BatchSize: 37, FlushInterval: time.Millisecond})
	accepted := recordConcurrently(t, rec)
	assertEachOnce(t, store.written(), accepted)
	if d := rec.Depth(); d != 0 {
		t.Errorf("Depth after Close = %d, want 0", d)
	}
}

func TestRecordAndCloseConcurrentlyLosesNothingInDatabase(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store := b.open(t)
			rec := usage.NewRecorder(store, usage.Options{QueueSize: 64, BatchSize: 37, FlushInterval: time.Millisecond})
			accepted := recordConcurrently(t, rec)
			var wantSum int64
			for n := range accepted {
				wantSum += n
			}
			totals, err := store.UsageTotals(t.Context(), &service.UsageFilter{})
			if err != nil {
				t.Fatalf("UsageTotals: %v", err)
			}
			if totals.Requests != int64(len(accepted)) || totals.PromptTokens != wantSum {
				t.Errorf("stored %d events with prompt tokens summing to %d, want %d and %d",
					totals.Requests, totals.PromptTokens, len(accepted), wantSum)
			}
		})
	}
}

func TestRecordWaitsForSpaceInsteadOfDropping(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	store := &fakeStore{before: func(ctx context.Context, call int) error {
		if call == 1 {
			close(entered)
			<-release
		}
		return nil
	}}
	rec := usage.NewRecorder(store, usage.Options{QueueSize: 1, BatchSize: 1})

	if err := rec.Record(t.Context(), event(1)); err != nil {
		t.Fatalf("Record 1: %v", err)
	}
	<-entered // the writer holds event 1 in a store call that cannot finish
	if err := rec.Record(t.Context(), event(2)); err != nil {
		t.Fatalf("Record 2: %v", err)
	}
	// The queue (size 1) is full: Record must wait, so with a cancelled
	// context it returns the context's error rather than dropping or accepting.
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := rec.Record(cancelled, event(3)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Record on a full queue with a cancelled context = %v, want context.Canceled", err)
	}
	if d := rec.Depth(); d != 2 {
		t.Errorf("Depth = %d, want 2", d)
	}

	recorded := make(chan error)
	go func() { recorded <- rec.Record(t.Context(), event(4)) }()
	close(release)
	if err := <-recorded; err != nil {
		t.Fatalf("Record 4 after space freed: %v", err)
	}
	if err := rec.Close(closeCtx(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertEachOnce(t, store.written(), map[int64]bool{1: true, 2: true, 4: true})
}

func TestFailedBatchIsRetriedUntilWritten(t *testing.T) {
	t.Parallel()
	const failures = 3
	store := &fakeStore{before: func(ctx context.Context, call int) error {
		if call <= failures {
			return fmt.Errorf("%w: injected failure %d", service.ErrUnavailable, call)
		}
		return nil
	}}
	rec := usage.NewRecorder(store, usage.Options{BatchSize: 4, RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond})
	want := map[int64]bool{}
	for n := 1; n <= 10; n++ {
		if err := rec.Record(t.Context(), event(n)); err != nil {
			t.Fatalf("Record %d: %v", n, err)
		}
		want[int64(n)] = true
	}
	if err := rec.Close(closeCtx(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertEachOnce(t, store.written(), want)
	store.mu.Lock()
	calls := store.calls
	store.mu.Unlock()
	if calls <= failures {
		t.Errorf("store called %d times, want more than the %d failures", calls, failures)
	}
}

func TestPartialBatchIsWrittenWithoutClose(t *testing.T) {
	t.Parallel()
	wrote := make(chan struct{})
	store := &fakeStore{before: func(ctx context.Context, call int) error {
		if call == 1 {
			close(wrote)
		}
		return nil
	}}
	rec := usage.NewRecorder(store, usage.Options{BatchSize: 100, FlushInterval: time.Millisecond})
	t.Cleanup(func() { rec.Close(context.Background()) })
	if err := rec.Record(t.Context(), event(1)); err != nil {
		t.Fatalf("Record: %v", err)
	}
	select {
	case <-wrote:
	case <-t.Context().Done():
		t.Fatal("a lone event was never flushed")
	}
}

func TestFullBatchIsWrittenBeforeItIsDue(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	rec := usage.NewRecorder(store, usage.Options{BatchSize: 10, FlushInterval: time.Hour})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rec.Close(ctx)
	})
	for n := range 25 {
		if err := rec.Record(t.Context(), event(n+1)); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	// Two full batches go at once; the five left wait for the hour.
	deadline := time.Now().Add(time.Minute)
	for len(store.written()) < 20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := len(store.written()); n != 20 {
		t.Fatalf("%d events written, want the 20 of two full batches", n)
	}
}

func TestCloseDoesNotWaitForABatchToBeDue(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	rec := usage.NewRecorder(store, usage.Options{BatchSize: 100, FlushInterval: time.Hour})
	want := map[int64]bool{}
	for n := range 3 {
		want[int64(n+1)] = true
		if err := rec.Record(t.Context(), event(n+1)); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	if err := rec.Close(closeCtx(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertEachOnce(t, store.written(), want)
}

func TestCloseReportsEventsItCouldNotWrite(t *testing.T) {
	t.Parallel()
	failed := make(chan struct{})
	var once sync.Once
	store := &fakeStore{before: func(ctx context.Context, call int) error {
		once.Do(func() { close(failed) })
		return fmt.Errorf("%w: database down", service.ErrUnavailable)
	}}
	rec := usage.NewRecorder(store, usage.Options{QueueSize: 1, BatchSize: 1, RetryMin: time.Millisecond})
	for n := 1; n <= 2; n++ {
		if err := rec.Record(t.Context(), event(n)); err != nil {
			t.Fatalf("Record %d: %v", n, err)
		}
	}
	// A third Record waits for space that never comes until Close gives up.
	waiting := make(chan error)
	go func() { waiting <- rec.Record(context.WithoutCancel(t.Context()), event(3)) }()
	<-failed

	deadline, cancel := context.WithCancel(t.Context())
	cancel() // the shutdown deadline has already passed
	err := rec.Close(deadline)
	if err == nil {
		t.Fatal("Close with unwritten events returned nil")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Close error = %v, want it to wrap context.Canceled", err)
	}
	if err := <-waiting; !errors.Is(err, usage.ErrClosed) {
		t.Errorf("waiting Record = %v, want ErrClosed", err)
	}
	if err := rec.Record(t.Context(), event(4)); !errors.Is(err, usage.ErrClosed) {
		t.Errorf("Record after Close = %v, want ErrClosed", err)
	}
	if got := store.written(); len(got) != 0 {
		t.Errorf("%d events written by a store that always fails", len(got))
	}
}

type backend struct {
	name string
	open func(t *testing.T) service.Store
}

var backends = []backend{
	{service.DriverSQLite, func(t *testing.T) service.Store {
		cfg := service.DefaultConfig()
		cfg.SQLitePath = t.TempDir() + "/usage.db"
		return openStore(t, cfg)
	}},
	{service.DriverPostgres, func(t *testing.T) service.Store {
		cfg := service.DefaultConfig()
		cfg.Driver, cfg.DatabaseURL = service.DriverPostgres, pgtest.NewDatabase(t)
		return openStore(t, cfg)
	}},
}

func openStore(t *testing.T, cfg service.Config) service.Store {
	t.Helper()
	store, err := service.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("service.Open(%s): %v", cfg.Driver, err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// An event the database can never accept must not block the ones after it:
// the batch is split, the others are written and that one alone is dropped.
func TestInvalidEventIsIsolated(t *testing.T) {
	t.Parallel()
	const poison = 13
	store := &fakeStore{}
	refusing := &refusingStore{fakeStore: store, poison: poison}
	rec := usage.NewRecorder(refusing, usage.Options{BatchSize: 10, FlushInterval: time.Millisecond})
	want := map[int64]bool{}
	for n := 1; n <= 30; n++ {
		if err := rec.Record(t.Context(), event(n)); err != nil {
			t.Fatal(err)
		}
		if n != poison {
			want[int64(n)] = true
		}
	}
	if err := rec.Close(closeCtx(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertEachOnce(t, store.written(), want)
	if rec.Depth() != 0 {
		t.Errorf("Depth = %d after Close, want 0", rec.Depth())
	}
}

// refusingStore refuses, as invalid, any batch holding the poison event.
type refusingStore struct {
	*fakeStore
	poison int64
}

func (s *refusingStore) UsageInsertBatch(ctx context.Context, events []*service.UsageEventCreateParams) (int64, error) {
	for _, ev := range events {
		if ev.PromptTokens == s.poison {
			return 0, fmt.Errorf("%w: bad row", service.ErrInvalid)
		}
	}
	return s.fakeStore.UsageInsertBatch(ctx, events)
}

// Client-supplied text that PostgreSQL's text type refuses (NUL, invalid
// UTF-8) is made storable instead of failing its batch, on both backends.
func TestUnstorableTextIsWritten(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store := b.open(t)
			rec := usage.NewRecorder(store, usage.Options{FlushInterval: time.Millisecond})
			ev := event(1)
			ev.Model, ev.Path = "gpt\x00-4\xff", "/v1/\x00chat"
			if err := rec.Record(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			if err := rec.Close(closeCtx(t)); err != nil {
				t.Fatalf("Close: %v", err)
			}
			rows, err := store.UsageList(t.Context(), &service.UsageListParams{})
			if err != nil || len(rows) != 1 {
				t.Fatalf("UsageList = %d rows, %v; want 1", len(rows), err)
			}
			if got, want := rows[0].Model, "gpt\uFFFD-4\uFFFD"; got != want {
				t.Errorf("model = %q, want %q", got, want)
			}
			if got, want := rows[0].Path, "/v1/\uFFFDchat"; got != want {
				t.Errorf("path = %q, want %q", got, want)
			}
		})
	}
}

// lostReplyStore commits its first batch and then reports the connection
// lost, as when the database restarts before its reply arrives.
type lostReplyStore struct {
	service.Store
	calls atomic.Int64
}

func (s *lostReplyStore) UsageInsertBatch(ctx context.Context, events []*service.UsageEventCreateParams) (int64, error) {
	n, err := s.Store.UsageInsertBatch(ctx, events)
	if err == nil && s.calls.Add(1) == 1 {
		return 0, fmt.Errorf("%w: connection lost after commit", service.ErrUnavailable)
	}
	return n, err
}

// A batch retried after its committed reply was lost is stored once: the
// EventIDs Record assigns make the retry skip the rows already written.
func TestRetryAfterLostReplyStoresEachEventOnce(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store := &lostReplyStore{Store: b.open(t)}
			rec := usage.NewRecorder(store, usage.Options{BatchSize: 10, FlushInterval: time.Millisecond, RetryMin: time.Millisecond})
			want := map[int64]bool{}
			for n := 1; n <= 25; n++ {
				if err := rec.Record(t.Context(), event(n)); err != nil {
					t.Fatal(err)
				}
				want[int64(n)] = true
			}
			if err := rec.Close(closeCtx(t)); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if calls := store.calls.Load(); calls < 2 {
				t.Fatalf("%d successful writes, want the lost one and a retry", calls)
			}
			rows, err := store.UsageList(t.Context(), &service.UsageListParams{Limit: 100})
			if err != nil {
				t.Fatalf("UsageList: %v", err)
			}
			got := make([]*service.UsageEventCreateParams, len(rows))
			for i, r := range rows {
				if len(r.EventID) != 16 {
					t.Errorf("event %d has EventID %x, want 16 bytes", r.PromptTokens, r.EventID)
				}
				got[i] = &service.UsageEventCreateParams{PromptTokens: r.PromptTokens}
			}
			assertEachOnce(t, got, want)
		})
	}
}
