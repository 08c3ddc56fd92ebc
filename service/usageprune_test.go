package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

func TestUsageDayRange(t *testing.T) {
	t.Parallel()
	midnight := time.Date(2030, 5, 6, 0, 0, 0, 0, time.UTC)
	next := midnight.AddDate(0, 0, 1)
	zone := time.FixedZone("x", -3*3600) // midnight in UTC is 21:00 the day before here
	for _, c := range []struct {
		what               string
		since, until       time.Time
		sinceDay, untilDay time.Time
	}{
		{"midnights", midnight, next, midnight, next},
		{"inside one day", midnight.Add(time.Millisecond), next.Add(-time.Millisecond), next, next},
		{"a day and a bit", midnight, next.Add(time.Hour), midnight, next.AddDate(0, 0, 1)},
		{"another zone", midnight.In(zone), next.Add(time.Nanosecond).In(zone), midnight, next.AddDate(0, 0, 1)},
	} {
		sinceDay, untilDay := service.UsageDayRange(c.since, c.until)
		if !sinceDay.Equal(c.sinceDay) || !untilDay.Equal(c.untilDay) || sinceDay.Location() != time.UTC || untilDay.Location() != time.UTC {
			t.Errorf("%s: UsageDayRange(%v, %v) = %v, %v; want %v, %v in UTC", c.what, c.since, c.until, sinceDay, untilDay, c.sinceDay, c.untilDay)
		}
	}
}

func TestPruneUsageInBatches(t *testing.T) {
	t.Parallel()
	before := time.Date(2030, 5, 6, 13, 14, 15, 0, time.FixedZone("x", 2*3600))
	cutoff := time.Date(2030, 5, 6, 0, 0, 0, 0, time.UTC)
	failed := errors.New("connection lost")
	for _, c := range []struct {
		what      string
		batchSize int
		batches   []int64 // what each call rolls up
		err       error   // returned by the call after the batches
		want      service.UsagePruneResult
	}{
		{"stops at a short batch", 10, []int64{10, 10, 3}, nil, service.UsagePruneResult{Events: 23, Batches: 3}},
		{"stops at an empty batch", 10, []int64{10, 0}, nil, service.UsagePruneResult{Events: 10, Batches: 1}},
		{"nothing to do", 0, []int64{0}, nil, service.UsagePruneResult{}},
		{"default size", 0, []int64{service.DefaultUsagePruneBatchSize, 1}, nil, service.UsagePruneResult{Events: service.DefaultUsagePruneBatchSize + 1, Batches: 2}},
		{"reports the batches before a failure", 5, []int64{5, 5}, failed, service.UsagePruneResult{Events: 10, Batches: 2}},
	} {
		calls := 0
		got, err := service.PruneUsageInBatches(t.Context(), &service.UsagePruneParams{Before: before, BatchSize: c.batchSize},
			func(_ context.Context, gotCutoff time.Time, limit int) (int64, error) {
				if !gotCutoff.Equal(cutoff) || gotCutoff.Location() != time.UTC {
					t.Errorf("%s: rollUp cut-off %v, want %v", c.what, gotCutoff, cutoff)
				}
				if want := c.batchSize; want > 0 && limit != want || want <= 0 && limit != service.DefaultUsagePruneBatchSize {
					t.Errorf("%s: rollUp limit %d, batch size %d", c.what, limit, c.batchSize)
				}
				calls++
				if calls > len(c.batches) {
					if c.err == nil {
						t.Fatalf("%s: rollUp called after a short batch", c.what)
					}
					return 0, c.err
				}
				return c.batches[calls-1], nil
			})
		c.want.Cutoff = cutoff
		if !errors.Is(err, c.err) || *got != c.want {
			t.Errorf("%s: PruneUsageInBatches = %+v, %v; want %+v, %v", c.what, *got, err, c.want, c.err)
		}
	}
}
