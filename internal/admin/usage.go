package admin

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/service"
)

// Usage ranges, in days ending today (UTC), read in one UsageTotalsByDay.
const (
	defaultUsageDays = 14
	maxUsageDays     = 90
)

var usageRanges = []int{7, 14, 30, 90}

type usageView struct {
	Filters filterForm
	// Filter
	ProjectID, TokenID int64
	Days               int
	Metric             string
	// Figures over the whole range.
	Totals    service.UsageCounts
	ErrorRate string // of the requests; empty when there were none
	ByModel   []service.ModelUsage
	Chart     chart
}

func (h *handler) usagePage(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	v := usageView{Days: defaultUsageDays, Metric: "requests"}
	ranges := usageRanges
	var filter service.UsageFilter
	var err error
	if filter.ProjectID, err = queryID(q, "project_id"); err == nil {
		filter.TokenID, err = queryID(q, "token_id")
	}
	if err != nil {
		h.renderError(w, r, sess, http.StatusBadRequest, err.Error())
		return
	}
	v.ProjectID, v.TokenID = orZero(filter.ProjectID), orZero(filter.TokenID)
	if s := q.Get("days"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxUsageDays {
			h.renderError(w, r, sess, http.StatusBadRequest, fmt.Sprintf("days %q: want a whole number from 1 to %d", s, maxUsageDays))
			return
		}
		v.Days = n
		if !slices.Contains(ranges, n) {
			ranges = append(slices.Clone(ranges), n)
			slices.Sort(ranges)
		}
	}
	if s := q.Get("metric"); s != "" {
		v.Metric = s
	}
	i := slices.IndexFunc(metrics, func(m metric) bool { return m.Key == v.Metric })
	if i < 0 {
		h.renderError(w, r, sess, http.StatusBadRequest, fmt.Sprintf("metric %q is not one the chart can show", v.Metric))
		return
	}
	shown := metrics[i]

	ctx := r.Context()
	projects, err := h.manager.Projects(ctx)
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	var tokens []tokenRow // of the chosen project, for the token filter
	if filter.ProjectID != nil {
		list, err := h.manager.Tokens(ctx, filter.ProjectID)
		if err != nil {
			h.fail(w, r, sess, err)
			return
		}
		tokens = h.tokenRows(list, projectNames(projects))
	}
	v.Filters = usageFilters(v, projects, tokens, ranges)

	days, err := h.dailyUsage(r, filter, v.Days)
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	v.Totals, v.ByModel = sumUsage(days)
	if v.Totals.Requests > 0 {
		v.ErrorRate = strconv.FormatFloat(100*float64(v.Totals.Errors)/float64(v.Totals.Requests), 'f', 1, 64) + "%"
	}
	v.Chart = buildChart(days, shown)
	h.render(w, r, sess, http.StatusOK, "usage", "Usage", v)
}

// usageFilters are the usage page's filters: a project, one of its tokens
// once a project is chosen, the period and the metric charted.
func usageFilters(v usageView, projects []*service.Project, tokens []tokenRow, ranges []int) filterForm {
	f := filterForm{Action: Prefix + "usage", Label: "Filter usage", Submit: "Show",
		Fields: []filterField{projectField("usage-project", projects, v.ProjectID)}}
	switch {
	case v.ProjectID != 0:
		token := filterField{ID: "usage-token", Name: "token_id", Label: "Token", Options: []option{{Value: "", Label: "All tokens"}}}
		for _, t := range tokens {
			token.Options = append(token.Options, option{Value: manage.FormatID(t.ID),
				Label: "#" + manage.FormatID(t.ID) + " " + t.TokenPrefix + "… (" + t.State + ")", Selected: t.ID == v.TokenID})
		}
		f.Fields = append(f.Fields, token)
	case v.TokenID != 0:
		f.Hidden = append(f.Hidden, hiddenField{Name: "token_id", Value: manage.FormatID(v.TokenID)})
	}
	days := filterField{ID: "usage-days", Name: "days", Label: "Period"}
	for _, n := range ranges {
		days.Options = append(days.Options, option{Value: strconv.Itoa(n), Label: "last " + strconv.Itoa(n) + " days", Selected: n == v.Days})
	}
	shown := filterField{ID: "usage-metric", Name: "metric", Label: "Chart"}
	for _, m := range metrics {
		shown.Options = append(shown.Options, option{Value: m.Key, Label: m.Label, Selected: m.Key == v.Metric})
	}
	f.Fields = append(f.Fields, days, shown)
	return f
}

// dailyUsage sums usage per UTC day, for the n days ending today, in one
// read: the days without usage are filled in here.
func (h *handler) dailyUsage(r *http.Request, filter service.UsageFilter, n int) ([]dayUsage, error) {
	today := h.now().UTC().Truncate(24 * time.Hour)
	filter.Since, filter.Until = today.AddDate(0, 0, 1-n), today.AddDate(0, 0, 1)
	used, err := h.manager.UsageByDay(r.Context(), filter)
	if err != nil {
		return nil, err
	}
	days := make([]dayUsage, n)
	for i := range days {
		days[i] = dayUsage{Day: filter.Since.AddDate(0, 0, i), Totals: &service.UsageTotals{}}
	}
	for _, d := range used {
		if i := int(d.Day.Sub(filter.Since) / (24 * time.Hour)); i >= 0 && i < n {
			days[i].Totals = &d.UsageTotals
		}
	}
	return days, nil
}

// sumUsage adds up the days, overall and per model (sorted by model, as the API does).
func sumUsage(days []dayUsage) (service.UsageCounts, []service.ModelUsage) {
	var total service.UsageCounts
	byModel := map[string]*service.ModelUsage{}
	for _, d := range days {
		addCounts(&total, d.Totals.UsageCounts)
		for _, mu := range d.Totals.ByModel {
			sum, ok := byModel[mu.Model]
			if !ok {
				sum = &service.ModelUsage{Model: mu.Model}
				byModel[mu.Model] = sum
			}
			addCounts(&sum.UsageCounts, mu.UsageCounts)
		}
	}
	models := make([]service.ModelUsage, 0, len(byModel))
	for _, mu := range byModel {
		models = append(models, *mu)
	}
	slices.SortFunc(models, func(a, b service.ModelUsage) int { return cmp.Compare(a.Model, b.Model) })
	return total, models
}

func addCounts(dst *service.UsageCounts, c service.UsageCounts) {
	dst.Requests += c.Requests
	dst.Errors += c.Errors
	dst.PromptTokens += c.PromptTokens
	dst.CompletionTokens += c.CompletionTokens
	dst.TotalTokens += c.TotalTokens
}

// queryID reads an optional id from the query string.
func queryID(q url.Values, name string) (*int64, error) {
	s := q.Get(name)
	if s == "" {
		return nil, nil
	}
	id, err := manage.ParseID(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &id, nil
}

func orZero(id *int64) int64 {
	if id == nil {
		return 0
	}
	return *id
}
