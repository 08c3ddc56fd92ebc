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
// the test sends back.
type fakePruner struct {
	service.Store
	calls   chan *service.UsagePruneParams
	answers chan error
}

func (p *fakePruner) UsagePrune(ctx context.Context, params *service.UsagePruneParams) (*service.UsagePruneResult, error) {
	p.calls <- params
	err := <-p.answers
	result := &service.UsagePruneResult{Cutoff: service.UsageDay(params.Before)}
	if err == nil {
		result.Events, result.Batches = 42, 1
	}
	return result, err
}

func TestRunRetention(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 6, 1, 10, 0, 0, 0, time.UTC)
	p := &fakePruner{calls: make(chan *service.UsagePruneParams), answers: make(chan error)}
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
		`"level":"INFO","msg":"usage retention: rolled up raw usage events into daily totals","rolled_up":42,"batches":1,"before":"2030-05-02T00:00:00Z"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
	if strings.Count(out, "\n") != 2 {
		t.Errorf("want two log lines (a run cut short by shutdown is not an error):\n%s", out)
	}
}
