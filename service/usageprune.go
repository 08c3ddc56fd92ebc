package service

import (
	"cmp"
	"context"
	"strings"
	"time"
)

// Store.UsagePrune keeps usage_events and usage_hourly bounded: raw events
// past the retention are deleted, and the hours past it are folded into
// usage_daily (UsageDaily, one row per UTC day, project, token and model).
// The rules:
//
//   - Whole UTC days only. The cut-off, params.Before, is rounded down to
//     UTC midnight: events created before that midnight are deleted and
//     the hours before it folded, and the current day is never touched.
//   - Exactly once. Deleting an event changes no total: it was counted in
//     usage_hourly when it was written (only rolled-up events are deleted;
//     the others wait for Store.UsageRollUp). Each hour moves from
//     usage_hourly to usage_daily in one transaction, so a crash or a
//     cancellation between transactions leaves every hour in exactly one of
//     the two tables, and the next run continues where it stopped.
//     Concurrent pruners (several instances on one Postgres database) take
//     disjoint batches of events, and the second pruner of an hour finds it
//     folded.
//   - Idempotent. A second run with the same cut-off finds nothing to do.
//     An event inserted later with an older time (a clock-skewed instance)
//     adds a new row for its hour, which the next run folds into its day.
//   - Short locks. Each batch of params.BatchSize events, and each hour, is
//     a transaction of its own, so other writers (on SQLite, the one writer
//     connection) wait at most one batch.
//
// UsageTotals counts whole hours from usage_hourly, partial hours from raw
// events, and the folded days whose midnight is in [Since, Until)
// (UsageDayRange). So totals over ranges bounded by UTC midnights, or
// unbounded, are the same before and after pruning; a bound inside a
// folded day counts that day wholly or not at all, by its midnight: folded
// usage has a precision of one day. UsageList lists raw events only.

// DefaultUsagePruneBatchSize is the number of raw events UsagePrune deletes,
// and UsageRollUp rolls up, per transaction: about 15 ms of work on SQLite
// and 20 ms on Postgres on a 2-core machine, so writers waiting for the
// lock are not held up for long.
const DefaultUsagePruneBatchSize = 1000

// UsagePruneParams tell UsagePrune what to prune.
type UsagePruneParams struct {
	// Before is the retention cut-off, rounded down to UTC midnight: the
	// events and hours of every UTC day that ended by then are pruned.
	Before time.Time
	// BatchSize is the number of events per transaction; 0 or less:
	// DefaultUsagePruneBatchSize.
	BatchSize int
}

// UsagePruneResult reports what UsagePrune did, also when it fails part-way
// (what it reports was committed).
type UsagePruneResult struct {
	Cutoff  time.Time // the UTC midnight events were pruned before
	Events  int64     // raw events deleted
	Batches int64     // transactions that deleted events
	Hours   int64     // hours folded into usage_daily, one transaction each
}

// UsagePruneSteps are the transactions of UsagePrune, for PruneUsage.
type UsagePruneSteps struct {
	// DeleteEvents deletes at most limit rolled-up events created before
	// cutoff and returns how many.
	DeleteEvents func(ctx context.Context, cutoff time.Time, limit int) (int64, error)
	// FoldHour moves the oldest hour before cutoff from usage_hourly to
	// usage_daily and returns its rows, none when every hour before cutoff
	// is folded.
	FoldHour func(ctx context.Context, cutoff time.Time) (int, error)
}

// PruneUsage is UsagePrune for the adapters: it deletes events in batches
// until a batch comes back short, then folds hours until none is left.
func PruneUsage(ctx context.Context, params *UsagePruneParams, steps UsagePruneSteps) (*UsagePruneResult, error) {
	result := &UsagePruneResult{Cutoff: UsageDay(params.Before)}
	limit := batchSize(params.BatchSize)
	for {
		n, err := steps.DeleteEvents(ctx, result.Cutoff, limit)
		if err != nil {
			return result, err
		}
		if n > 0 {
			result.Events += n
			result.Batches++
		}
		if n < int64(limit) {
			break
		}
	}
	for {
		rows, err := steps.FoldHour(ctx, result.Cutoff)
		if err != nil || rows == 0 {
			return result, err
		}
		result.Hours++
	}
}

// RollUpInBatches is UsageRollUp for the adapters: it calls rollUp, which
// adds at most limit events not yet in usage_hourly to it in one
// transaction and returns how many, until a batch comes back short.
func RollUpInBatches(ctx context.Context, size int, rollUp func(ctx context.Context, limit int) (int64, error)) (int64, error) {
	limit := batchSize(size)
	var total int64
	for {
		n, err := rollUp(ctx, limit)
		total += n
		if err != nil || n < int64(limit) {
			return total, err
		}
	}
}

func batchSize(n int) int {
	if n <= 0 {
		return DefaultUsagePruneBatchSize
	}
	return n
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
