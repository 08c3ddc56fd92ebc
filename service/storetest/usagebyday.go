package storetest

import (
	"reflect"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

var usageTotalsByDayCases = []storeCase{
	{"EmptyIsNoDays", func(t *testing.T, s service.Store) {
		days, err := s.UsageTotalsByDay(t.Context(), &service.UsageFilter{})
		if err != nil {
			t.Fatalf("UsageTotalsByDay: %v", err)
		}
		if len(days) != 0 {
			t.Errorf("UsageTotalsByDay on no events = %d days, want none", len(days))
		}
	}},
	{"EachDayIsUsageTotalsOfItsPiece", func(t *testing.T, s service.Store) {
		// Days 0-2 rolled up into usage_daily, 3-6 raw, 7 empty, 8 raw.
		insertUsage(t, s, eventsOnDays(27, 0, 1, 2, 3, 4, 5, 6, 8)...)
		prune(t, s, day(3), 0)
		assertDaysAddUp(t, s, []time.Time{{}, day(0), day(1).Add(5 * time.Hour), day(2), day(3).Add(time.Millisecond),
			day(4).Add(13 * time.Hour), day(6), day(7), day(9)})
	}},
}

// assertDaysAddUp checks UsageTotalsByDay against UsageTotals, for every
// filter and range between the bounds: each day it returns is UsageTotals
// of that day's piece of the range, in day order, no day with usage is
// missing, and the days add up to UsageTotals of the whole range.
func assertDaysAddUp(t *testing.T, s service.Store, bounds []time.Time) {
	t.Helper()
	forEachUsageFilter(bounds, func(name string, filter *service.UsageFilter) {
		days, err := s.UsageTotalsByDay(t.Context(), filter)
		if err != nil {
			t.Fatalf("UsageTotalsByDay(%s): %v", name, err)
		}
		assertDays(t, s, name, filter, days)
	})
}

func assertDays(t *testing.T, s service.Store, name string, filter *service.UsageFilter, days []*service.DayUsage) {
	t.Helper()
	totals := func(since, until time.Time) *service.UsageTotals {
		f := *filter
		f.Since, f.Until = since, until
		got, err := s.UsageTotals(t.Context(), &f)
		if err != nil {
			t.Fatalf("UsageTotals: %v", err)
		}
		return got
	}
	since, until := service.UsageTimeRange(filter)
	var sum service.UsageCounts
	next := since // no usage before it: every earlier day was returned
	for i, d := range days {
		if d.Day.Location() != time.UTC || !d.Day.Equal(service.UsageDay(d.Day)) || (i > 0 && !d.Day.After(days[i-1].Day)) {
			t.Fatalf("%s: day %d is %v, want UTC midnights in ascending order", name, i, d.Day)
		}
		pieceSince, pieceUntil := service.UsageDayPiece(since, until, d.Day)
		if gap := totals(next, pieceSince); gap.Requests != 0 {
			t.Errorf("%s: %d requests in [%v, %v), a day not returned", name, gap.Requests, next, pieceSince)
		}
		if want := totals(pieceSince, pieceUntil); d.Requests == 0 || !reflect.DeepEqual(&d.UsageTotals, want) {
			t.Errorf("%s: day %v = %+v, want UsageTotals of [%v, %v) = %+v", name, d.Day, d.UsageTotals, pieceSince, pieceUntil, want)
		}
		addCounts(&sum, d.UsageCounts)
		next = pieceUntil
	}
	if gap := totals(next, until); gap.Requests != 0 {
		t.Errorf("%s: %d requests in [%v, %v), a day not returned", name, gap.Requests, next, until)
	}
	if whole := totals(since, until); sum != whole.UsageCounts {
		t.Errorf("%s: the days add up to %+v, UsageTotals is %+v", name, sum, whole.UsageCounts)
	}
}

func addCounts(dst *service.UsageCounts, c service.UsageCounts) {
	dst.Requests += c.Requests
	dst.Errors += c.Errors
	dst.PromptTokens += c.PromptTokens
	dst.CompletionTokens += c.CompletionTokens
	dst.TotalTokens += c.TotalTokens
}
