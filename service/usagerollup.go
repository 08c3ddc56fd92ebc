package service

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"time"
)

// usage_hourly holds the usage of each UTC hour at three levels, so that a
// usage read sums at most one row per hour and model whatever its filter:
//
//   - a token's row (TokenID > 0): that token's usage of one model;
//   - a project's row (TokenID 0, ProjectID > 0): all its tokens';
//   - the total row (TokenID 0, ProjectID 0): every project's.
//
// Events are added in the transaction (on Postgres, the statement) that
// writes them, and marked rolled up (usage_events.rolled_up), so the rollup
// is exactly the sum of the rolled-up events, and a retried batch, whose
// events are skipped by their event ID, is not added twice. Events written
// otherwise (before the rollup existed, or by an older llmproxy during a
// rolling upgrade) are counted raw by the reads until Store.UsageRollUp
// adds them. UsagePrune folds the token rows of the hours that pass the
// retention into usage_daily and deletes the hours' rows, in one
// transaction per hour.

// UsageHourly is one row of usage_hourly.
type UsageHourly struct {
	TokenID          int64 // 0: all tokens of ProjectID
	ProjectID        int64 // 0 with TokenID 0: all projects
	Hour             time.Time
	Model            string
	Requests         int64
	Errors           int64 // upstream status >= 400
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
}

// UsageHourlyKey is the primary key of usage_hourly.
type UsageHourlyKey struct {
	TokenID   int64
	ProjectID int64
	Hour      time.Time // the UTC start of the hour
	Model     string
}

// Key returns the row's primary key.
func (h *UsageHourly) Key() UsageHourlyKey {
	return UsageHourlyKey{TokenID: h.TokenID, ProjectID: h.ProjectID, Hour: h.Hour, Model: h.Model}
}

// Compare orders keys as both backends' primary keys do: by token, project,
// hour, then model bytewise. Writers upsert rows in this order, so
// concurrent writers lock shared rows in the same order.
func (k UsageHourlyKey) Compare(o UsageHourlyKey) int {
	if c := cmp.Compare(k.TokenID, o.TokenID); c != 0 {
		return c
	}
	if c := cmp.Compare(k.ProjectID, o.ProjectID); c != 0 {
		return c
	}
	if c := k.Hour.Compare(o.Hour); c != 0 {
		return c
	}
	return strings.Compare(k.Model, o.Model)
}

// UsageRollup sums events into usage_hourly rows at the three levels.
type UsageRollup struct {
	rows map[UsageHourlyKey]*UsageHourly
}

// Add counts one event.
func (r *UsageRollup) Add(tokenID, projectID int64, model string, createdAt time.Time, status, promptTokens, completionTokens, totalTokens int64) {
	if r.rows == nil {
		r.rows = make(map[UsageHourlyKey]*UsageHourly)
	}
	hour := createdAt.UTC().Truncate(time.Hour)
	for _, key := range [...]UsageHourlyKey{
		{TokenID: tokenID, ProjectID: projectID, Hour: hour, Model: model},
		{ProjectID: projectID, Hour: hour, Model: model},
		{Hour: hour, Model: model},
	} {
		row := r.rows[key]
		if row == nil {
			row = &UsageHourly{TokenID: key.TokenID, ProjectID: key.ProjectID, Hour: hour, Model: model}
			r.rows[key] = row
		}
		row.Requests++
		if status >= 400 {
			row.Errors++
		}
		row.PromptTokens += promptTokens
		row.CompletionTokens += completionTokens
		row.TotalTokens += totalTokens
	}
}

// Rows returns the sums in key order.
func (r *UsageRollup) Rows() []*UsageHourly {
	rows := make([]*UsageHourly, 0, len(r.rows))
	for _, row := range r.rows {
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b *UsageHourly) int { return a.Key().Compare(b.Key()) })
	return rows
}

// FoldHourly sums the token rows of rows into usage_daily rows, in key
// order; the project and total rows count the same usage again and are
// dropped.
func FoldHourly(rows []*UsageHourly) []*UsageDaily {
	byKey := make(map[UsageDailyKey]*UsageDaily)
	for _, h := range rows {
		if h.TokenID == 0 {
			continue
		}
		key := UsageDailyKey{Day: UsageDay(h.Hour), ProjectID: h.ProjectID, TokenID: h.TokenID, Model: h.Model}
		d := byKey[key]
		if d == nil {
			d = &UsageDaily{Day: key.Day, ProjectID: key.ProjectID, TokenID: key.TokenID, Model: key.Model}
			byKey[key] = d
		}
		d.Requests += h.Requests
		d.Errors += h.Errors
		d.PromptTokens += h.PromptTokens
		d.CompletionTokens += h.CompletionTokens
		d.TotalTokens += h.TotalTokens
	}
	daily := make([]*UsageDaily, 0, len(byKey))
	for _, d := range byKey {
		daily = append(daily, d)
	}
	slices.SortFunc(daily, func(a, b *UsageDaily) int { return a.Key().Compare(b.Key()) })
	return daily
}

// UsageReadRange is what the usage reads need to count [Since, Until) once
// (see the queries' comment in queries/<dialect>/usage_events.sql).
type UsageReadRange struct {
	Since, Until         time.Time
	HourSince, HourUntil time.Time // the whole hours, read from usage_hourly
	SinceDay, UntilDay   time.Time // the folded days, read from usage_daily
	// The usage_hourly rows of the filter's level: token RollupToken, and
	// project in [RollupProjectMin, RollupProjectMax].
	RollupToken                        int64
	RollupProjectMin, RollupProjectMax int64
}

// NewUsageReadRange returns the bounds of the filter's range and the level
// of usage_hourly that sums its events.
func NewUsageReadRange(f *UsageFilter) UsageReadRange {
	r := UsageReadRange{}
	r.Since, r.Until = UsageTimeRange(f)
	r.SinceDay, r.UntilDay = UsageDayRange(r.Since, r.Until)
	r.HourSince, r.HourUntil = r.Since.Truncate(time.Hour), r.Until.Truncate(time.Hour)
	if r.HourSince.Before(r.Since) {
		r.HourSince = r.HourSince.Add(time.Hour)
	}
	if !r.HourSince.Before(r.HourUntil) {
		// No whole hour: all of [Since, Until) is read raw, as the first edge.
		r.HourSince, r.HourUntil = r.Until, r.Until
	}
	switch {
	case f.TokenID != nil:
		r.RollupToken = *f.TokenID
		r.RollupProjectMin, r.RollupProjectMax = 1, math.MaxInt64
		if f.ProjectID != nil {
			r.RollupProjectMin, r.RollupProjectMax = *f.ProjectID, *f.ProjectID
		}
		if r.RollupToken <= 0 {
			r.RollupToken = -1 // no token has this id; 0 would read the projects' rows
		}
	case f.ProjectID != nil:
		r.RollupProjectMin, r.RollupProjectMax = *f.ProjectID, *f.ProjectID
		if *f.ProjectID <= 0 {
			r.RollupProjectMin, r.RollupProjectMax = -1, -1 // no project has this id
		}
	}
	return r
}
