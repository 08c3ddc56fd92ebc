// Package convert is what both adapters do alike to their generated rows.
// It imports no generated package: a function takes any row type with the
// shape both dialects' sqlc output has, converting it to that shape, so a
// row that drifts in either dialect fails to compile.
package convert

import (
	"math"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// Map converts every element; the result is never nil, so an empty listing
// stays an empty list.
func Map[R, T any](rows []R, convert func(R) T) []T {
	out := make([]T, len(rows))
	for i, r := range rows {
		out[i] = convert(r)
	}
	return out
}

// BeforeID turns "from the newest" (0) into a bound every id is below.
func BeforeID(id int64) int64 {
	if id == 0 {
		return math.MaxInt64
	}
	return id
}

// modelTotals is the shape of UsageTotalsByModelRow.
type modelTotals = struct {
	Model            string
	Requests         int64
	Errors           int64
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
}

// ModelUsage converts a UsageTotalsByModel row.
func ModelUsage[R ~modelTotals](r *R) service.ModelUsage {
	m := modelTotals(*r)
	return service.ModelUsage{
		Model: m.Model,
		UsageCounts: service.UsageCounts{
			Requests:         m.Requests,
			Errors:           m.Errors,
			PromptTokens:     m.PromptTokens,
			CompletionTokens: m.CompletionTokens,
			TotalTokens:      m.TotalTokens,
		},
	}
}

// DayModel is a UsageTotalsByDayModel row with its day as a time.
type DayModel struct {
	Day time.Time
	service.ModelUsage
}

// dayModelTotals is the shape of UsageTotalsByDayModelRow, its day of
// the type the dialect reads it as (D).
type dayModelTotals[D any] = struct {
	Day              D
	Model            string
	Requests         int64
	Errors           int64
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
}

// DayModelUsage converts a UsageTotalsByDayModel row; day converts its day.
func DayModelUsage[D any, R ~dayModelTotals[D]](r *R, day func(D) time.Time) DayModel {
	m := dayModelTotals[D](*r)
	return DayModel{Day: day(m.Day), ModelUsage: ModelUsage(&modelTotals{
		Model: m.Model, Requests: m.Requests, Errors: m.Errors,
		PromptTokens: m.PromptTokens, CompletionTokens: m.CompletionTokens, TotalTokens: m.TotalTokens,
	})}
}

// Days groups UsageTotalsByDayModel rows, sorted by day and then model,
// into one DayUsage per day, its totals the sum of its models.
func Days(rows []DayModel) []*service.DayUsage {
	days := []*service.DayUsage{}
	for _, r := range rows {
		if len(days) == 0 || !days[len(days)-1].Day.Equal(r.Day) {
			days = append(days, &service.DayUsage{Day: r.Day.UTC()})
		}
		addModel(&days[len(days)-1].UsageTotals, r.ModelUsage)
	}
	return days
}

// Totals converts UsageTotalsByModel rows into UsageTotals, the totals the
// sum of the models.
func Totals[R ~modelTotals](rows []*R) *service.UsageTotals {
	totals := &service.UsageTotals{ByModel: make([]service.ModelUsage, 0, len(rows))}
	for _, r := range rows {
		addModel(totals, ModelUsage(r))
	}
	return totals
}

func addModel(t *service.UsageTotals, m service.ModelUsage) {
	t.ByModel = append(t.ByModel, m)
	t.Requests += m.Requests
	t.Errors += m.Errors
	t.PromptTokens += m.PromptTokens
	t.CompletionTokens += m.CompletionTokens
	t.TotalTokens += m.TotalTokens
}

// tableCounts is the shape of TableCountsRow.
type tableCounts = struct {
	Projects    int64
	Tokens      int64
	UsageEvents int64
	UsageDaily  int64
	AuditEvents int64
}

// TableCounts keys a TableCounts row by table name.
func TableCounts[R ~tableCounts](r *R) map[string]int64 {
	c := tableCounts(*r)
	return map[string]int64{
		service.TableProjects:    c.Projects,
		service.TableTokens:      c.Tokens,
		service.TableUsageEvents: c.UsageEvents,
		service.TableUsageDaily:  c.UsageDaily,
		service.TableAuditEvents: c.AuditEvents,
	}
}

// tableIDs is the shape of TableSequencesResetRow: one id per table that has ids.
type tableIDs = struct {
	Projects    int64
	Tokens      int64
	UsageEvents int64
	AuditEvents int64
}

// NextIDs keys a TableSequencesReset row by table name.
func NextIDs[R ~tableIDs](r *R) map[string]int64 {
	ids := tableIDs(*r)
	return map[string]int64{
		service.TableProjects:    ids.Projects,
		service.TableTokens:      ids.Tokens,
		service.TableUsageEvents: ids.UsageEvents,
		service.TableAuditEvents: ids.AuditEvents,
	}
}
