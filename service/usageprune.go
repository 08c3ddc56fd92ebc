package service

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"
)

// Store.UsagePrune keeps usage_events bounded: raw events past the retention are rolled up into usage_daily (UsageDaily,
// one row per UTC day, project, token and model) and deleted. The rules:
//
//   - Whole UTC days only. The cut-off, params.Before, is rounded down to
//     UTC midnight, and only events created before that midnight are
//     rolled up: a day is rolled up once it has ended before the cut-off,
//     and events of the current day are never touched.
//   - Exactly once. Each batch deletes its events and adds their counts to
//     usage_daily in one transaction, so a crash or a cancellation between
//     batches leaves every event either raw or rolled up, never both or
//     neither, and the next run continues where it stopped. Concurrent
//     pruners (several instances on one Postgres database) take disjoint
//     batches.
//   - Idempotent. A second run with the same cut-off finds nothing to roll
//     up. An event inserted later with an older time (a clock-skewed
//     instance) stays raw until the next run adds it to its day's row.
//   - Short locks. Each batch of params.BatchSize events is a transaction
//     of its own, so other writers (on SQLite, the one writer connection)
//     wait at most one batch.
//
// UsageTotals counts both tables: the raw events created in [Since, Until)
// and the rolled-up days whose midnight is in [Since, Until) (UsageDayRange).
// So totals over ranges bounded by UTC midnights, or unbounded, are the same
// before and after pruning; a bound inside a rolled-up day counts that day
// wholly or not at all, by its midnight: rolled-up usage has a precision of
// one day. UsageList lists raw events only.

// DefaultUsagePruneBatchSize is the number of raw events UsagePrune rolls up
// per transaction: about 15 ms of work on SQLite and 20 ms on Postgres on a
// 2-core machine, so writers waiting for the lock are not held up for long.
const DefaultUsagePruneBatchSize = 1000

// UsagePruneParams tell UsagePrune what to roll up.
type UsagePruneParams struct {
	// Before is the retention cut-off, rounded down to UTC midnight: the
	// events of every UTC day that ended by then are rolled up.
	Before time.Time
	// BatchSize is the number of events per transaction; 0 or less:
	// DefaultUsagePruneBatchSize.
	BatchSize int
}

// UsagePruneResult reports what UsagePrune did, also when it fails part-way
// (the batches it reports were committed).
type UsagePruneResult struct {
	Cutoff  time.Time // the UTC midnight events were rolled up before
	Events  int64     // raw events rolled up and deleted
	Batches int64     // transactions that rolled up events
}

// PruneUsageInBatches is UsagePrune for the adapters: it calls rollUp, which
// rolls up and deletes at most limit events created before cutoff in one
// transaction and returns how many, until a batch comes back short.
func PruneUsageInBatches(ctx context.Context, params *UsagePruneParams, rollUp func(ctx context.Context, cutoff time.Time, limit int) (int64, error)) (*UsagePruneResult, error) {
	result := &UsagePruneResult{Cutoff: UsageDay(params.Before)}
	limit := params.BatchSize
	if limit <= 0 {
		limit = DefaultUsagePruneBatchSize
	}
	for {
		n, err := rollUp(ctx, result.Cutoff, limit)
		if err != nil {
			return result, err
		}
		if n > 0 {
			result.Events += n
			result.Batches++
		}
		if n < int64(limit) {
			return result, nil
		}
	}
}

// RollUpUsage sums events per UTC day, project, token and model, in key
// order, which is also the order in which pruners lock usage_daily rows.
func RollUpUsage(events []*UsageEvent) []*UsageDaily {
	byKey := make(map[UsageDailyKey]*UsageDaily)
	for _, e := range events {
		key := UsageDailyKey{Day: UsageDay(e.CreatedAt), ProjectID: e.ProjectID, TokenID: e.TokenID, Model: e.Model}
		d := byKey[key]
		if d == nil {
			d = &UsageDaily{Day: key.Day, ProjectID: e.ProjectID, TokenID: e.TokenID, Model: e.Model}
			byKey[key] = d
		}
		d.Requests++
		if e.Status >= 400 {
			d.Errors++
		}
		d.PromptTokens += e.PromptTokens
		d.CompletionTokens += e.CompletionTokens
		d.TotalTokens += e.TotalTokens
	}
	rows := make([]*UsageDaily, 0, len(byKey))
	for _, d := range byKey {
		rows = append(rows, d)
	}
	slices.SortFunc(rows, func(a, b *UsageDaily) int { return a.Key().Compare(b.Key()) })
	return rows
}

// UsageDay returns the UTC midnight that starts t's UTC day.
func UsageDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// UsageDayRange returns the rolled-up days UsageTotals counts for the time
// range [since, until): those in [sinceDay, untilDay), which are the days
// whose midnight lies in the range.
func UsageDayRange(since, until time.Time) (sinceDay, untilDay time.Time) {
	return nextMidnight(since), nextMidnight(until)
}

// UsageDayPiece is the part of [since, until) on the UTC day that starts
// at day: what UsageTotalsByDay counts for that day.
func UsageDayPiece(since, until, day time.Time) (from, to time.Time) {
	from, to = day, day.AddDate(0, 0, 1)
	if since.After(from) {
		from = since
	}
	if until.Before(to) {
		to = until
	}
	return from, to
}

// nextMidnight returns the first UTC midnight at or after t.
func nextMidnight(t time.Time) time.Time {
	day := UsageDay(t)
	if day.Before(t) {
		return day.AddDate(0, 0, 1)
	}
	return day
}

// UsageDailyKey is the primary key of usage_daily. Keys sort by day, then
// project, token and model, the model bytewise, as both backends store them.
type UsageDailyKey struct {
	Day       time.Time // a UTC midnight, as UsageDay returns it
	ProjectID int64
	TokenID   int64
	Model     string
}

// Compare returns -1 when k sorts before o, 1 when after and 0 when equal.
func (k UsageDailyKey) Compare(o UsageDailyKey) int {
	if c := k.Day.Compare(o.Day); c != 0 {
		return c
	}
	if c := cmp.Compare(k.ProjectID, o.ProjectID); c != 0 {
		return c
	}
	if c := cmp.Compare(k.TokenID, o.TokenID); c != 0 {
		return c
	}
	return strings.Compare(k.Model, o.Model)
}
