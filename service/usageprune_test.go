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

func TestPruneUsage(t *testing.T) {
	t.Parallel()
	before := time.Date(2030, 5, 6, 13, 14, 15, 0, time.FixedZone("x", 2*3600))
	cutoff := time.Date(2030, 5, 6, 0, 0, 0, 0, time.UTC)
	failed := errors.New("connection lost")
	for _, c := range []struct {
		what      string
		batchSize int
		batches   []int64 // what each DeleteEvents call deletes
		hours     int     // hours FoldHour finds
		err       error   // returned by the DeleteEvents call after the batches
		want      service.UsagePruneResult
	}{
		{"stops at a short batch", 10, []int64{10, 10, 3}, 2, nil, service.UsagePruneResult{Events: 23, Batches: 3, Hours: 2}},
		{"stops at an empty batch", 10, []int64{10, 0}, 0, nil, service.UsagePruneResult{Events: 10, Batches: 1}},
		{"nothing to do", 0, []int64{0}, 0, nil, service.UsagePruneResult{}},
		{"only hours to fold", 0, []int64{0}, 3, nil, service.UsagePruneResult{Hours: 3}},
		{"default size", 0, []int64{service.DefaultUsagePruneBatchSize, 1}, 1, nil, service.UsagePruneResult{Events: service.DefaultUsagePruneBatchSize + 1, Batches: 2, Hours: 1}},
		{"reports the batches before a failure", 5, []int64{5, 5}, 1, failed, service.UsagePruneResult{Events: 10, Batches: 2}},
	} {
		calls, folds := 0, 0
		checkCutoff := func(step string, got time.Time) {
			if !got.Equal(cutoff) || got.Location() != time.UTC {
				t.Errorf("%s: %s cut-off %v, want %v", c.what, step, got, cutoff)
			}
		}
		got, err := service.PruneUsage(t.Context(), &service.UsagePruneParams{Before: before, BatchSize: c.batchSize}, service.UsagePruneSteps{
			DeleteEvents: func(_ context.Context, gotCutoff time.Time, limit int) (int64, error) {
				checkCutoff("DeleteEvents", gotCutoff)
				if want := c.batchSize; want > 0 && limit != want || want <= 0 && limit != service.DefaultUsagePruneBatchSize {
					t.Errorf("%s: DeleteEvents limit %d, batch size %d", c.what, limit, c.batchSize)
				}
				calls++
				if calls > len(c.batches) {
					if c.err == nil {
						t.Fatalf("%s: DeleteEvents called after a short batch", c.what)
					}
					return 0, c.err
				}
				return c.batches[calls-1], nil
			},
			FoldHour: func(_ context.Context, gotCutoff time.Time) (int, error) {
				checkCutoff("FoldHour", gotCutoff)
				if c.err != nil {
					t.Errorf("%s: FoldHour called after DeleteEvents failed", c.what)
				}
				if folds++; folds > c.hours+1 {
					t.Fatalf("%s: FoldHour called after it found no hour", c.what)
				}
				if folds > c.hours {
					return 0, nil
				}
				return 7, nil
			},
		})
		c.want.Cutoff = cutoff
		if !errors.Is(err, c.err) || *got != c.want {
			t.Errorf("%s: PruneUsage = %+v, %v; want %+v, %v", c.what, *got, err, c.want, c.err)
		}
	}
}

func TestRollUpInBatches(t *testing.T) {
	t.Parallel()
	failed := errors.New("connection lost")
	for _, c := range []struct {
		what      string
		batchSize int
		batches   []int64
		err       error // returned with the last batch
		want      int64
	}{
		{"stops at a short batch", 10, []int64{10, 10, 3}, nil, 23},
		{"stops at an empty batch", 10, []int64{10, 0}, nil, 10},
		{"default size", 0, []int64{service.DefaultUsagePruneBatchSize, 0}, nil, service.DefaultUsagePruneBatchSize},
		{"reports the batches before a failure", 5, []int64{5, 0}, failed, 5},
	} {
		calls := 0
		got, err := service.RollUpInBatches(t.Context(), c.batchSize, func(_ context.Context, limit int) (int64, error) {
			if want := c.batchSize; want > 0 && limit != want || want <= 0 && limit != service.DefaultUsagePruneBatchSize {
				t.Errorf("%s: limit %d, batch size %d", c.what, limit, c.batchSize)
			}
			if calls++; calls > len(c.batches) {
				t.Fatalf("%s: called after a short batch", c.what)
			}
			if calls == len(c.batches) {
				return c.batches[calls-1], c.err
			}
			return c.batches[calls-1], nil
		})
		if !errors.Is(err, c.err) || got != c.want {
			t.Errorf("%s: RollUpInBatches = %d, %v; want %d, %v", c.what, got, err, c.want, c.err)
		}
	}
}
