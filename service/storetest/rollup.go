package storetest

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// The usage reads count whole hours from usage_hourly and the rest from raw
// events (service/usagerollup.go). These cases hold them to a full scan of
// the events, computed here, whatever the range, filter and history.
var usageRollUpCases = []storeCase{
	{"TotalsEqualAFullScan", func(t *testing.T, s service.Store) {
		rng := rand.New(rand.NewPCG(1, 2))
		events := randomEvents(rng, 600, day(0), 3*24*time.Hour)
		for batch := range slices.Chunk(events, 70) {
			insertUsage(t, s, batch...)
		}
		assertTotalsAreAFullScan(t, s, events, randomBounds(rng, day(0), 3*24*time.Hour, 12))
	}},
	{"RetriedBatchIsRolledUpOnce", func(t *testing.T, s service.Store) {
		rng := rand.New(rand.NewPCG(3, 4))
		events := randomEvents(rng, 200, day(0), 6*time.Hour)
		for i, e := range events {
			e.EventID = eventIDFor(i)
		}
		insertUsage(t, s, events[:120]...)
		// The reply to the second batch was lost: it is sent again, with
		// events of the first among it.
		for range 2 {
			if _, err := s.UsageInsertBatch(t.Context(), events[100:]); err != nil {
				t.Fatalf("UsageInsertBatch: %v", err)
			}
		}
		assertTotalsAreAFullScan(t, s, events, randomBounds(rng, day(0), 6*time.Hour, 8))
	}},
	{"ConcurrentBatchesForTheSameHours", func(t *testing.T, s service.Store) {
		// Every writer adds to the same rows of the same hours, at all three
		// levels, at once.
		rng := rand.New(rand.NewPCG(5, 6))
		events := randomEvents(rng, 800, day(0).Add(10*time.Hour), 2*time.Hour)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for part := range slices.Chunk(events, 50) {
			wg.Go(func() {
				if _, err := s.UsageInsertBatch(t.Context(), part); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent UsageInsertBatch: %v", err)
		}
		assertTotalsAreAFullScan(t, s, events, randomBounds(rng, day(0), 24*time.Hour, 8))
	}},
	{"CountsEventsNotRolledUpUntilItAddsThem", func(t *testing.T, s service.Store) {
		// Events loaded as rows (db copy and import, or written before
		// usage_hourly existed) are not in the rollup: the reads count them
		// raw, and UsageRollUp adds each once.
		rng := rand.New(rand.NewPCG(7, 8))
		written := randomEvents(rng, 150, day(0), 30*time.Hour)
		loaded := randomEvents(rng, 250, day(0), 30*time.Hour)
		insertUsage(t, s, written...)
		rows := make([]*service.UsageEvent, len(loaded))
		for i, e := range loaded {
			rows[i] = &service.UsageEvent{
				ID: int64(100000 + i), TokenID: e.TokenID, ProjectID: e.ProjectID, Method: e.Method, Path: e.Path,
				Model: e.Model, Status: e.Status, PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens,
				TotalTokens: e.TotalTokens, CreatedAt: e.CreatedAt,
			}
		}
		if err := s.UsageInsertFullMany(t.Context(), rows); err != nil {
			t.Fatalf("UsageInsertFullMany: %v", err)
		}
		all := append(slices.Clone(written), loaded...)
		bounds := randomBounds(rng, day(0), 30*time.Hour, 8)
		assertTotalsAreAFullScan(t, s, all, bounds)

		n, err := s.UsageRollUp(t.Context(), 64)
		if err != nil {
			t.Fatalf("UsageRollUp: %v", err)
		}
		if n != 0 && n != int64(len(loaded)) { // memStore keeps no rollup: 0
			t.Errorf("UsageRollUp = %d, want the %d loaded events", n, len(loaded))
		}
		assertTotalsAreAFullScan(t, s, all, bounds)
		if again, err := s.UsageRollUp(t.Context(), 0); err != nil || again != 0 {
			t.Errorf("UsageRollUp again = %d, %v; want nothing to do", again, err)
		}
		assertTotalsAreAFullScan(t, s, all, bounds)
	}},
	{"PruningKeepsTotalsExactAfterTheCutOff", func(t *testing.T, s service.Store) {
		// After pruning, ranges that start at or after the cut-off, or that
		// start at a midnight before it, still count exactly the events in
		// them: raw events are deleted, their hours folded into days.
		rng := rand.New(rand.NewPCG(9, 10))
		events := randomEvents(rng, 700, day(0), 4*24*time.Hour)
		for batch := range slices.Chunk(events, 100) {
			insertUsage(t, s, batch...)
		}
		result := prune(t, s, day(2).Add(7*time.Hour), 50)
		var before int64
		for _, e := range events {
			if e.CreatedAt.Before(day(2)) {
				before++
			}
		}
		if result.Events != before {
			t.Errorf("UsagePrune deleted %d events, want the %d before %v", result.Events, before, day(2))
		}
		bounds := append(randomBounds(rng, day(2), 2*24*time.Hour, 8), time.Time{}, day(0), day(1), day(2))
		assertTotalsAreAFullScan(t, s, events, bounds)
		// Events arriving late for a pruned day are counted, and the next
		// prune folds them.
		late := randomEvents(rng, 30, day(1), 24*time.Hour)
		insertUsage(t, s, late...)
		all := append(slices.Clone(events), late...)
		assertTotalsAreAFullScan(t, s, all, bounds)
		if again := prune(t, s, day(2), 0); again.Events != int64(len(late)) {
			t.Errorf("second UsagePrune deleted %d events, want the %d late ones", again.Events, len(late))
		}
		assertTotalsAreAFullScan(t, s, all, bounds)
	}},
}

// randomEvents returns n events at random times in [from, from+span), at
// millisecond precision, of 3 projects, 6 tokens and 4 models.
func randomEvents(rng *rand.Rand, n int, from time.Time, span time.Duration) []*service.UsageEventCreateParams {
	tokens := []struct{ token, project int64 }{{10, 1}, {11, 1}, {12, 1}, {20, 2}, {21, 2}, {30, 3}}
	models := []string{"gpt-a", "gpt-b", "claude", ""}
	statuses := []int64{200, 200, 201, 399, 400, 429, 503}
	events := make([]*service.UsageEventCreateParams, n)
	for i := range events {
		tok := tokens[rng.IntN(len(tokens))]
		at := from.Add(time.Duration(rng.Int64N(int64(span))).Truncate(time.Millisecond))
		e := usageEvent(tok.token, tok.project, at)
		e.Model = models[rng.IntN(len(models))]
		e.Status = statuses[rng.IntN(len(statuses))]
		e.PromptTokens, e.CompletionTokens = rng.Int64N(5000), rng.Int64N(900)
		e.TotalTokens = e.PromptTokens + e.CompletionTokens
		events[i] = e
	}
	return events
}

// randomBounds returns n random instants in [from, from+span), some on whole
// hours, plus the zero time (unbounded).
func randomBounds(rng *rand.Rand, from time.Time, span time.Duration, n int) []time.Time {
	bounds := []time.Time{{}}
	for i := range n {
		at := from.Add(time.Duration(rng.Int64N(int64(span))).Truncate(time.Millisecond))
		if i%3 == 0 {
			at = at.Truncate(time.Hour)
		}
		bounds = append(bounds, at)
	}
	// A range inside one hour, and one of exactly one hour.
	h := from.Add(span / 2).Truncate(time.Hour)
	return append(bounds, h.Add(10*time.Minute), h.Add(50*time.Minute), h, h.Add(time.Hour))
}

// assertTotalsAreAFullScan checks UsageTotals and UsageTotalsByDay, for
// every filter (and a token with another project's filter, and unknown
// ids) and every range between the bounds, against sums of the events.
func assertTotalsAreAFullScan(t *testing.T, s service.Store, events []*service.UsageEventCreateParams, bounds []time.Time) {
	t.Helper()
	check := func(name string, filter *service.UsageFilter) {
		want := scanTotals(events, filter)
		got, err := s.UsageTotals(t.Context(), filter)
		if err != nil {
			t.Fatalf("UsageTotals(%s): %v", name, err)
		}
		if !sameTotals(got, want) {
			t.Errorf("UsageTotals(%s) =\n%+v, want a full scan's\n%+v", name, got, want)
		}
		days, err := s.UsageTotalsByDay(t.Context(), filter)
		if err != nil {
			t.Fatalf("UsageTotalsByDay(%s): %v", name, err)
		}
		var sum service.UsageCounts
		for _, d := range days {
			since, until := service.UsageTimeRange(filter)
			from, to := service.UsageDayPiece(since, until, d.Day)
			piece := *filter
			piece.Since, piece.Until = from, to
			if w := scanTotals(events, &piece); !sameTotals(&d.UsageTotals, w) {
				t.Errorf("UsageTotalsByDay(%s) day %v = %+v, want a full scan's %+v", name, d.Day, d.UsageTotals, *w)
			}
			addCounts(&sum, d.UsageCounts)
		}
		if sum != want.UsageCounts {
			t.Errorf("UsageTotalsByDay(%s) adds up to %+v, want %+v", name, sum, want.UsageCounts)
		}
	}
	forEachUsageFilter(bounds, check)
	for _, f := range []struct{ project, token *int64 }{
		{ptr[int64](2), ptr[int64](10)}, {ptr[int64](99), nil}, {nil, ptr[int64](99)}, {ptr[int64](0), nil}, {nil, ptr[int64](0)},
	} {
		check(fmt.Sprintf("project %s, token %s, all time", show(f.project), show(f.token)),
			&service.UsageFilter{ProjectID: f.project, TokenID: f.token})
	}
}

// sameTotals compares totals, an empty ByModel equal to none.
func sameTotals(a, b *service.UsageTotals) bool {
	return a.UsageCounts == b.UsageCounts && (len(a.ByModel) == 0 && len(b.ByModel) == 0 || reflect.DeepEqual(a.ByModel, b.ByModel))
}

// scanTotals sums the events that filter selects, as a full scan would,
// but counting events created before the midnight of a day that pruning
// folded only when the range holds that midnight: the precision of pruned
// usage (service/usageprune.go). Tests that prune pass bounds for which
// the two agree.
func scanTotals(events []*service.UsageEventCreateParams, filter *service.UsageFilter) *service.UsageTotals {
	since, until := service.UsageTimeRange(filter)
	byModel := map[string]*service.ModelUsage{}
	totals := &service.UsageTotals{ByModel: []service.ModelUsage{}}
	for _, e := range events {
		switch {
		case filter.ProjectID != nil && e.ProjectID != *filter.ProjectID,
			filter.TokenID != nil && e.TokenID != *filter.TokenID,
			e.CreatedAt.Before(since), !e.CreatedAt.Before(until):
			continue
		}
		m := byModel[e.Model]
		if m == nil {
			m = &service.ModelUsage{Model: e.Model}
			byModel[e.Model] = m
		}
		for _, c := range []*service.UsageCounts{&totals.UsageCounts, &m.UsageCounts} {
			c.Requests++
			if e.Status >= 400 {
				c.Errors++
			}
			c.PromptTokens += e.PromptTokens
			c.CompletionTokens += e.CompletionTokens
			c.TotalTokens += e.TotalTokens
		}
	}
	for _, m := range byModel {
		totals.ByModel = append(totals.ByModel, *m)
	}
	slices.SortFunc(totals.ByModel, func(a, b service.ModelUsage) int { return cmp.Compare(a.Model, b.Model) })
	return totals
}

// eventIDFor is a 16-byte event ID numbered i.
func eventIDFor(i int) []byte {
	return fmt.Appendf(nil, "rollup-ev-%06d", i)
}
