package storetest

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// pruneDay0 is the first day of the events; day(n) is the midnight n days later.
var pruneDay0 = time.Date(2030, 3, 1, 0, 0, 0, 0, time.UTC)

func day(n int) time.Time { return pruneDay0.AddDate(0, 0, n) }

var usagePruneCases = []storeCase{
	{"RollsUpWholeDaysExactly", func(t *testing.T, s service.Store) {
		events := eventsOnDays(27, 0, 1, 2, 3, 4, 5, 6)
		insertUsage(t, s, events...)
		before := totalsOverDays(t, s, 7)

		// Days 0-4 have ended by the cut-off; day 5 is under way.
		result := prune(t, s, day(5).Add(13*time.Hour), 0)
		if !result.Cutoff.Equal(day(5)) || result.Cutoff.Location() != time.UTC {
			t.Errorf("Cutoff = %v, want %v", result.Cutoff, day(5))
		}
		if want := int64(5 * 27); result.Events != want || result.Batches != 1 {
			t.Errorf("UsagePrune = %+v, want %d events in 1 batch", result, want)
		}
		assertDailyRows(t, s, events, day(5))
		assertRawEvents(t, s, 2*27, day(5))
		assertSameTotals(t, before, totalsOverDays(t, s, 7))
	}},
	{"IsIdempotent", func(t *testing.T, s service.Store) {
		events := eventsOnDays(27, 0, 1, 2, 3)
		insertUsage(t, s, events...)
		before := totalsOverDays(t, s, 4)
		prune(t, s, day(3), 0)
		after := totalsOverDays(t, s, 4)
		rows := dailyRows(t, s)
		for _, at := range []time.Time{day(3), day(3).Add(time.Hour), day(1)} {
			if result := prune(t, s, at, 0); result.Events != 0 || result.Batches != 0 {
				t.Errorf("UsagePrune(Before %v) again = %+v, want nothing rolled up", at, result)
			}
		}
		assertSameTotals(t, before, after)
		assertSameTotals(t, after, totalsOverDays(t, s, 4))
		if again := dailyRows(t, s); !reflect.DeepEqual(again, rows) {
			t.Errorf("usage_daily changed by pruning again:\n%s\nwas\n%s", showDaily(again), showDaily(rows))
		}
	}},
	{"LeavesTheCutOffDayRaw", func(t *testing.T, s service.Store) {
		events := []*service.UsageEventCreateParams{
			usageEvent(1, 1, day(2).Add(-time.Millisecond)),
			usageEvent(1, 1, day(2)),
			usageEvent(1, 1, day(2).Add(12*time.Hour)),
		}
		insertUsage(t, s, events...)
		// A cut-off one millisecond before the end of day 2 rolls up day 1 only.
		if result := prune(t, s, day(3).Add(-time.Millisecond), 0); result.Events != 1 || !result.Cutoff.Equal(day(2)) {
			t.Errorf("UsagePrune(Before the end of day 2) = %+v, want day 1's event rolled up before %v", result, day(2))
		}
		assertDailyRows(t, s, events, day(2))
		assertRawEvents(t, s, 2, day(2))
		// At midnight day 2 has ended.
		if result := prune(t, s, day(3), 0); result.Events != 2 {
			t.Errorf("UsagePrune(Before day 3) = %+v, want day 2's 2 events", result)
		}
		assertDailyRows(t, s, events, day(3))
		assertRawEvents(t, s, 0, day(3))
	}},
	{"TotalsCountARolledUpDayByItsMidnight", func(t *testing.T, s service.Store) {
		insertUsage(t, s,
			usageEvent(1, 1, day(0).Add(time.Hour)), usageEvent(1, 1, day(0).Add(20*time.Hour)),
			usageEvent(1, 1, day(1).Add(6*time.Hour)), usageEvent(1, 1, day(1).Add(7*time.Hour)), usageEvent(1, 1, day(1).Add(8*time.Hour)),
			usageEvent(1, 1, day(2).Add(6*time.Hour)),
		)
		prune(t, s, day(2), 0)
		for _, c := range []struct {
			what         string
			since, until time.Time
			requests     int64
		}{
			{"midnight to midnight", day(0), day(1), 2},
			{"a rolled-up day counts wholly", day(0), day(0).Add(12 * time.Hour), 2},
			{"or not at all", day(0).Add(time.Millisecond), day(1), 0},
			{"by the midnight in range", day(0).Add(12 * time.Hour), day(1).Add(12 * time.Hour), 3},
			{"raw events count by their time", day(1).Add(12 * time.Hour), day(2).Add(7 * time.Hour), 1},
			{"both tables", day(0), day(3), 6},
			{"empty range", day(1), day(1), 0},
		} {
			t.Run(c.what, func(t *testing.T) {
				assertUsageRequests(t, s, &service.UsageFilter{Since: c.since, Until: c.until}, c.requests)
			})
		}
	}},
	{"RunsInBatches", func(t *testing.T, s service.Store) {
		events := eventsOnDays(500, 0, 1, 2, 3, 4)
		insertUsage(t, s, events...)
		before := totalsOverDays(t, s, 5)
		// 2500 events: 39 batches of 64 and one of 4.
		if result := prune(t, s, day(5), 64); result.Events != 2500 || result.Batches != 40 {
			t.Errorf("UsagePrune(BatchSize 64) = %+v, want 2500 events in 40 batches", result)
		}
		assertDailyRows(t, s, events, day(5))
		assertRawEvents(t, s, 0, day(5))
		assertSameTotals(t, before, totalsOverDays(t, s, 5))

		more := eventsOnDays(500, 5, 6, 7, 8, 9)
		insertUsage(t, s, more...)
		want := (2500 + service.DefaultUsagePruneBatchSize - 1) / service.DefaultUsagePruneBatchSize
		if result := prune(t, s, day(10), 0); result.Events != 2500 || result.Batches != int64(want) {
			t.Errorf("UsagePrune(BatchSize 0) = %+v, want 2500 events in %d batches of the default size", result, want)
		}
		assertDailyRows(t, s, append(events, more...), day(10))
	}},
	{"LosesNothingToConcurrentInsertsAndPruners", func(t *testing.T, s service.Store) {
		events := eventsOnDays(400, 0, 1, 2)
		insertUsage(t, s, events...)
		// Late events of an ended day (a slow or clock-skewed instance) and
		// events of today, inserted while two pruners run.
		late, today := eventsOnDays(200, 1), eventsOnDays(200, 3)
		var inserted atomic.Bool
		var wg sync.WaitGroup
		wg.Go(func() {
			defer inserted.Store(true)
			for i := 0; i < len(late); i += 10 {
				if _, err := s.UsageInsertBatch(t.Context(), append(late[i:i+10:i+10], today[i:i+10]...)); err != nil {
					t.Errorf("UsageInsertBatch: %v", err)
					return
				}
			}
		})
		for range 2 {
			wg.Go(func() {
				for !inserted.Load() {
					if _, err := s.UsagePrune(t.Context(), &service.UsagePruneParams{Before: day(3), BatchSize: 25}); err != nil {
						t.Errorf("UsagePrune: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		prune(t, s, day(3), 0) // the late events inserted after the pruners' last batch

		all := append(append(events, late...), today...)
		assertDailyRows(t, s, all, day(3))
		assertRawEvents(t, s, int64(len(today)), day(3))
		assertUsageRequests(t, s, &service.UsageFilter{}, int64(len(all)))
		if result := prune(t, s, day(3), 0); result.Events != 0 {
			t.Errorf("UsagePrune after everything was rolled up = %+v, want nothing", result)
		}
	}},
	{"CancelledChangesNothing", func(t *testing.T, s service.Store) {
		insertUsage(t, s, eventsOnDays(27, 0, 1)...)
		before := totalsOverDays(t, s, 2)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		result, err := s.UsagePrune(ctx, &service.UsagePruneParams{Before: day(2)})
		if err == nil || result.Events != 0 {
			t.Fatalf("UsagePrune with a cancelled context = %+v, %v; want an error and nothing done", result, err)
		}
		assertRawEvents(t, s, 2*27, day(0))
		assertSameTotals(t, before, totalsOverDays(t, s, 2))
	}},
}

// eventsOnDays makes perDay events on each of the given days, spread from
// midnight on, over three tokens of two projects, three models and
// statuses on both sides of 400.
func eventsOnDays(perDay int, days ...int) []*service.UsageEventCreateParams {
	tokens := []struct{ token, project int64 }{{10, 1}, {11, 1}, {20, 2}}
	models := []string{"gpt-a", "gpt-b", ""}
	statuses := []int64{200, 399, 400, 503}
	var events []*service.UsageEventCreateParams
	for _, d := range days {
		for i := range perDay {
			at := day(d).Add((24 * time.Hour * time.Duration(i) / time.Duration(perDay)).Truncate(time.Millisecond))
			tok := tokens[i%len(tokens)]
			e := usageEvent(tok.token, tok.project, at)
			e.Model = models[i/len(tokens)%len(models)]
			e.Status = statuses[i%len(statuses)]
			e.PromptTokens, e.CompletionTokens = int64(d+i%7), int64(i%5)
			e.TotalTokens = e.PromptTokens + e.CompletionTokens
			events = append(events, e)
		}
	}
	return events
}

func prune(t *testing.T, s service.Store, before time.Time, batchSize int) *service.UsagePruneResult {
	t.Helper()
	result, err := s.UsagePrune(t.Context(), &service.UsagePruneParams{Before: before, BatchSize: batchSize})
	if err != nil {
		t.Fatalf("UsagePrune(Before %v, BatchSize %d): %v", before, batchSize, err)
	}
	return result
}

// totalsOverDays returns UsageTotals for every filter and every range of
// whole days within the first n days, and unbounded ones.
func totalsOverDays(t *testing.T, s service.Store, n int) map[string]*service.UsageTotals {
	t.Helper()
	bounds := []time.Time{{}}
	for d := range n + 1 {
		bounds = append(bounds, day(d))
	}
	totals := map[string]*service.UsageTotals{}
	forEachUsageFilter(bounds, func(name string, filter *service.UsageFilter) {
		got, err := s.UsageTotals(t.Context(), filter)
		if err != nil {
			t.Fatalf("UsageTotals: %v", err)
		}
		totals[name] = got
	})
	return totals
}

// forEachUsageFilter calls fn, with a name for messages, for each project
// and token filter of the usage cases' events and each range between two
// of bounds (a zero bound leaves that end open).
func forEachUsageFilter(bounds []time.Time, fn func(name string, filter *service.UsageFilter)) {
	filters := []struct{ projectID, tokenID *int64 }{
		{nil, nil}, {ptr[int64](1), nil}, {ptr[int64](2), nil}, {nil, ptr[int64](11)}, {ptr[int64](1), ptr[int64](10)},
	}
	for _, f := range filters {
		for _, since := range bounds {
			for _, until := range bounds {
				if !until.IsZero() && !until.After(since) {
					continue
				}
				fn(fmt.Sprintf("project %s, token %s, [%v, %v)", show(f.projectID), show(f.tokenID), since, until),
					&service.UsageFilter{ProjectID: f.projectID, TokenID: f.tokenID, Since: since, Until: until})
			}
		}
	}
}

func assertSameTotals(t *testing.T, want, got map[string]*service.UsageTotals) {
	t.Helper()
	for key, w := range want {
		if g := got[key]; !reflect.DeepEqual(g, w) {
			t.Errorf("UsageTotals(%s) = %+v, want %+v as before pruning", key, g, w)
		}
	}
}

// assertDailyRows checks that usage_daily holds exactly the sums of the
// events created before cutoff, computed here independently.
func assertDailyRows(t *testing.T, s service.Store, events []*service.UsageEventCreateParams, cutoff time.Time) {
	t.Helper()
	type key struct {
		day            time.Time
		project, token int64
		model          string
	}
	sums := map[key]*service.UsageDaily{}
	for _, e := range events {
		if !e.CreatedAt.Before(cutoff) {
			continue
		}
		k := key{e.CreatedAt.UTC().Truncate(24 * time.Hour), e.ProjectID, e.TokenID, e.Model}
		d := sums[k]
		if d == nil {
			d = &service.UsageDaily{Day: k.day, ProjectID: k.project, TokenID: k.token, Model: k.model}
			sums[k] = d
		}
		d.Requests++
		if e.Status >= 400 {
			d.Errors++
		}
		d.PromptTokens += e.PromptTokens
		d.CompletionTokens += e.CompletionTokens
		d.TotalTokens += e.TotalTokens
	}
	var want []*service.UsageDaily
	for _, d := range sums {
		want = append(want, d)
	}
	slices.SortFunc(want, func(a, b *service.UsageDaily) int {
		return cmp.Or(a.Day.Compare(b.Day), cmp.Compare(a.ProjectID, b.ProjectID), cmp.Compare(a.TokenID, b.TokenID), strings.Compare(a.Model, b.Model))
	})
	if got := dailyRows(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("usage_daily =\n%s\nwant\n%s", showDaily(got), showDaily(want))
	}
}

// dailyRows reads usage_daily in pages of 50, in key order.
func dailyRows(t *testing.T, s service.Dumper) []*service.UsageDaily {
	t.Helper()
	var rows []*service.UsageDaily
	params := &service.UsageDailyDumpParams{Limit: 50}
	for {
		page, err := s.UsageDailyDump(t.Context(), params)
		if err != nil {
			t.Fatalf("UsageDailyDump: %v", err)
		}
		for _, r := range page {
			if r.Day.Location() != time.UTC {
				t.Fatalf("usage_daily day %v, want it in UTC", r.Day)
			}
		}
		rows = append(rows, page...)
		if len(page) < 50 {
			return rows
		}
		params.After = page[len(page)-1].Key()
	}
}

// assertRawEvents checks that usage_events holds n events, none created
// before cutoff.
func assertRawEvents(t *testing.T, s service.Store, n int64, cutoff time.Time) {
	t.Helper()
	events, _ := pageThrough(t, func(before int64) ([]*service.UsageEvent, error) {
		return s.UsageList(t.Context(), &service.UsageListParams{BeforeID: before, Limit: service.MaxPageLimit})
	}, usageID)
	if int64(len(events)) != n {
		t.Errorf("usage_events holds %d events, want %d", len(events), n)
	}
	for _, e := range events {
		if e.CreatedAt.Before(cutoff) {
			t.Errorf("usage_events still holds an event of %v, before the cut-off %v", e.CreatedAt, cutoff)
			return
		}
	}
}

func showDaily(rows []*service.UsageDaily) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %+v\n", *r)
	}
	return b.String()
}
