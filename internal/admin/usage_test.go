package admin_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// seedUsage gives project 1 (token 1) and project 2 (token 2) usage on
// several days before the dashboard's today (UTC), and returns today.
func (d *dashboard) seedUsage() time.Time {
	d.t.Helper()
	d.createProject("team-a")
	d.createProject("team-b")
	d.createToken(1, 0)
	d.createToken(2, 0)
	today := d.clock.Now().UTC().Truncate(24 * time.Hour)
	event := func(daysAgo int, token, project int64, model string, status, prompt, completion int64) *service.UsageEventCreateParams {
		return &service.UsageEventCreateParams{
			TokenID: token, ProjectID: project, Method: "POST", Path: "/v1/chat/completions", Model: model, Status: status,
			PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion, LatencyMS: 20,
			CreatedAt: today.AddDate(0, 0, -daysAgo).Add(time.Minute),
		}
	}
	events := []*service.UsageEventCreateParams{
		event(0, 1, 1, "gpt-4o", 200, 10, 5),
		event(0, 1, 1, "gpt-4o", 200, 10, 5),
		event(1, 1, 1, "gpt-4o-mini", 200, 3, 2),
		event(3, 2, 2, "claude-<3>", 500, 0, 0),
		event(20, 1, 1, "gpt-4o", 200, 100, 100),
	}
	if _, err := d.store.UsageInsertBatch(d.t.Context(), events); err != nil {
		d.t.Fatal(err)
	}
	return today
}

// totals is the markup of the usage totals.
func totals(requests, errors, prompt, completion, total string) []string {
	return []string{
		"<dt>Requests</dt><dd>" + requests + "</dd>",
		"<dt>Errors</dt><dd>" + errors,
		"<dt>Prompt tokens</dt><dd>" + prompt + "</dd>",
		"<dt>Completion tokens</dt><dd>" + completion + "</dd>",
		"<dt>Total tokens</dt><dd>" + total + "</dd>",
	}
}

func TestUsagePage(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	today := d.seedUsage()
	day := func(daysAgo int) string { return today.AddDate(0, 0, -daysAgo).Format(time.DateOnly) }

	p := d.get("/admin/usage?days=7")
	wantPage(t, "all projects, 7 days", p, http.StatusOK, totals("4", "1", "23", "12", "35")...)
	wantPage(t, "chart", p, http.StatusOK,
		`<svg id="usage-chart" viewBox="0 0 760 280" role="img" aria-labelledby="chart-title chart-desc"`,
		"Requests per day, "+day(6)+" to "+day(0)+" (UTC)", "Total 4; highest day 2.",
		"<title>"+day(0)+", gpt-4o: 2 Requests</title>",
		"<title>"+day(1)+", gpt-4o-mini: 1 Requests</title>",
		"<title>"+day(3)+", claude-&lt;3&gt;: 1 Requests</title>",
		today.Format("Jan 2")+"</text>",
		`<th scope="row">`+day(5)+`</th>`, "(25.0%)")
	wantNot(t, "chart", p, "No usage in this period", "claude-<3>")
	if n := strings.Count(p.body, "<rect "); n != 3 {
		t.Errorf("chart has %d bars, want 3 (one per model and day with usage)", n)
	}
	if n := strings.Count(p.body, `<tr><th scope="row">20`); n != 7 {
		t.Errorf("daily table has %d rows, want 7", n)
	}

	wantPage(t, "30 days", d.get("/admin/usage?days=30"), http.StatusOK, totals("5", "1", "123", "112", "235")...)
	p = d.get("/admin/usage?days=7&project_id=1")
	wantPage(t, "project 1", p, http.StatusOK, append(totals("3", "0", "23", "12", "35"),
		`<option value="1" selected>team-a</option>`, `<select id="usage-token" name="token_id">`)...)
	wantPage(t, "token 2", d.get("/admin/usage?days=7&project_id=2&token_id=2"), http.StatusOK,
		append(totals("1", "1", "0", "0", "0"), `<option value="2" selected>#2`)...)
	wantPage(t, "token without project", d.get("/admin/usage?days=7&token_id=2"), http.StatusOK,
		append(totals("1", "1", "0", "0", "0"), `<input type="hidden" name="token_id" value="2">`)...)

	p = d.get("/admin/usage?days=7&metric=total_tokens")
	wantPage(t, "tokens chart", p, http.StatusOK, "Total tokens per day", "gpt-4o: 30 Total tokens", `<option value="total_tokens" selected>`)
	if n := strings.Count(p.body, "<rect "); n != 2 {
		t.Errorf("tokens chart has %d bars, want 2 (the error used no tokens)", n)
	}
	// A period outside the menu is added to it.
	wantPage(t, "3 days", d.get("/admin/usage?days=3"), http.StatusOK, `<option value="3" selected>last 3 days</option>`)
}

func TestUsagePageEmpty(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	p := d.get("/admin/usage")
	wantPage(t, "no usage", p, http.StatusOK, append(totals("0", "0", "0", "0", "0"),
		"No usage in this period", "No requests in this period.", `<option value="14" selected>last 14 days</option>`)...)
	wantNot(t, "no usage", p, "<rect ", `class="legend"`)
}

func TestUsagePageBadQuery(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	for query, message := range map[string]string{
		"days=0":        "days &#34;0&#34;: want a whole number from 1 to 90",
		"days=91":       "from 1 to 90",
		"days=x":        "from 1 to 90",
		"metric=bogus":  "metric &#34;bogus&#34; is not one the chart can show",
		"project_id=-1": "project_id: ",
		"token_id=0":    "token_id: ",
	} {
		wantPage(t, query, d.get("/admin/usage?"+query), http.StatusBadRequest, message)
	}
}
