package usage_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/usage"
	"github.com/llmproxy/llmproxy/service"
)

// fakePruner hands each UsagePrune call to the test and answers with what
// the test sends back; UsageRollUp answers from rollUps, one per run.
type fakePruner struct {
	service.Store
	calls   chan *service.UsagePruneParams
	answers chan error
	rollUps chan error
	runs    int
}

func (p *fakePruner) UsageRollUp(ctx context.Context, _ int) (int64, error) {
	p.runs++
	if err := <-p.rollUps; err != nil {
		return 0, err
	}
	return 7, ctx.Err()
}

func (p *fakePruner) UsagePrune(ctx context.Context, params *service.UsagePruneParams) (*service.UsagePruneResult, error) {
	p.calls <- params
	err := <-p.answers
	result := &service.UsagePruneResult{Cutoff: service.UsageDay(params.Before)}
	if err == nil {
		result.Events, result.Batches, result.Hours = 42, 1, 24
	}
	return result, err
}

func TestRunRetention(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 6, 1, 10, 0, 0, 0, time.UTC)
	p := &fakePruner{calls: make(chan *service.UsagePruneParams), answers: make(chan error), rollUps: make(chan error, 10)}
	// Run 1 rolls up, run 2 fails to (and so does not prune), run 3 rolls up.
	p.rollUps <- nil
	p.rollUps <- fmt.Errorf("%w: connection refused", service.ErrUnavailable)
	p.rollUps <- nil
	p.rollUps <- nil
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		usage.RunRetention(ctx, p, usage.RetentionOptions{
			Days:     30,
			Interval: time.Millisecond,
			Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
			Now:      func() time.Time { return now },
		})
	}()

	// The first run is at once; a failed one is retried at the next tick.
	for i, answer := range []error{fmt.Errorf("%w: connection refused", service.ErrUnavailable), nil} {
		params := <-p.calls
		if want := now.AddDate(0, 0, -30); !params.Before.Equal(want) {
			t.Errorf("run %d: Before = %v, want %v", i+1, params.Before, want)
		}
		p.answers <- answer
	}
	<-p.calls
	cancel()
	p.answers <- context.Canceled
	<-done

	out := logs.String()
	for _, want := range []string{
		`"level":"WARN","msg":"usage retention failed; retrying later"`,
		`"level":"WARN","msg":"usage rollup failed; retrying later"`,
		`"level":"INFO","msg":"usage rollup: added usage events to the hourly rollup","rolled_up":7`,
		`"level":"INFO","msg":"usage retention: deleted raw usage events and folded their hours into daily totals","deleted":42,"batches":1,"hours":24,"before":"2030-05-02T00:00:00Z"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
	if p.runs != 4 {
		t.Errorf("UsageRollUp ran %d times, want once per run (4)", p.runs)
	}
	if strings.Count(out, "\n") != 6 {
		t.Errorf("want six log lines (a run cut short by shutdown is not an error):\n%s", out)
	}
}
