package admin

import (
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

func TestNiceStep(t *testing.T) {
	t.Parallel()
	for highest, want := range map[int64]int64{
		0: 1, 1: 1, 4: 1, 5: 2, 8: 2, 9: 5, 20: 5, 21: 10, 40: 10, 41: 20, 399: 100, 401: 200, 2001: 1000, 1_000_001: 500_000,
	} {
		if got := niceStep(highest); got != want || got*yIntervals < highest {
			t.Errorf("niceStep(%d) = %d, want %d", highest, got, want)
		}
	}
}

func TestShortCount(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1k", 1500: "1.5k", 2_500_000: "2.5M", 3_000_000_000: "3G"} {
		if got := shortCount(n); got != want {
			t.Errorf("shortCount(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestRelative(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		10 * time.Second: "now", -10 * time.Second: "now", 5 * time.Minute: "in 5 min", -59 * time.Minute: "59 min ago",
		119*time.Minute + 59*time.Second: "in 2 h", -47 * time.Hour: "47 h ago", 48 * time.Hour: "in 2 d", -400 * 24 * time.Hour: "400 d ago",
	} {
		if got := relative(now, now.Add(d)); got != want {
			t.Errorf("relative(%v) = %q, want %q", d, got, want)
		}
	}
}

func day(i int, byModel ...service.ModelUsage) dayUsage {
	var sum service.UsageCounts
	for _, m := range byModel {
		sum.Requests += m.Requests
	}
	return dayUsage{Day: time.Date(2026, 5, 1+i, 0, 0, 0, 0, time.UTC), Totals: &service.UsageTotals{UsageCounts: sum, ByModel: byModel}}
}

func requests(model string, n int64) service.ModelUsage {
	return service.ModelUsage{Model: model, UsageCounts: service.UsageCounts{Requests: n}}
}

func TestBuildChartStacksByModel(t *testing.T) {
	t.Parallel()
	c := buildChart([]dayUsage{
		day(0, requests("a", 3), requests("b", 5)),
		day(1),
		day(2, requests("", 2), requests("b", 1)),
	}, metrics[0])
	if c.Empty || c.Title != "Requests per day, 2026-05-01 to 2026-05-03 (UTC)" || c.Desc != "Stacked bars by model. Total 11; highest day 8." {
		t.Errorf("chart = empty %v, title %q, desc %q", c.Empty, c.Title, c.Desc)
	}
	// Ranked by total: b (6), a (3), no model (2).
	wantLegend := []legendEntry{{0, "b", 6}, {1, "a", 3}, {2, "(no model)", 2}}
	if fmt.Sprint(c.Legend) != fmt.Sprint(wantLegend) {
		t.Errorf("legend = %v, want %v", c.Legend, wantLegend)
	}
	if len(c.Bars) != 4 {
		t.Fatalf("%d bars, want 4", len(c.Bars))
	}
	// Axis 0..8 in steps of 2; day 0's bars stack up to the top of the plot.
	if c.YTicks[4].Label != "8" || c.YTicks[4].Pos != c.Top || c.YTicks[0].Pos != c.Bottom {
		t.Errorf("y ticks = %v, want 0 at the bottom and 8 at the top", c.YTicks)
	}
	b, a := c.Bars[0], c.Bars[1]
	near := func(x, y float64) bool { return math.Abs(x-y) < 0.15 } // coordinates have one decimal
	if b.Series != 0 || a.Series != 1 || !near(num(t, b.Y), num(t, a.Y)+num(t, a.H)) {
		t.Errorf("day 0 bars = %+v %+v, want a stacked on b", b, a)
	}
	if !near(num(t, a.Y), num(t, c.Top)) || !near(num(t, b.Y)+num(t, b.H), num(t, c.Bottom)) {
		t.Errorf("day 0 stack spans %s..%s, want %s..%s", a.Y, b.Y, c.Top, c.Bottom)
	}
	if a.Title != "2026-05-01, a: 3 Requests" {
		t.Errorf("bar title %q", a.Title)
	}
	if len(c.Rows) != 3 || fmt.Sprint(c.Rows[2].Values) != "[1 0 2]" || c.Rows[2].Total != 3 || c.Rows[1].Total != 0 {
		t.Errorf("rows = %+v", c.Rows)
	}
}

func num(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestBuildChartGroupsManyModels(t *testing.T) {
	t.Parallel()
	var models []service.ModelUsage
	for i := range maxSeries + 2 {
		models = append(models, requests(fmt.Sprintf("m%02d", i), int64(100-i)))
	}
	c := buildChart([]dayUsage{day(0, models...)}, metrics[0])
	if len(c.Legend) != maxSeries {
		t.Fatalf("legend has %d entries, want %d", len(c.Legend), maxSeries)
	}
	last := c.Legend[maxSeries-1]
	if last.Name != "3 other models" || last.Series != maxSeries-1 || last.Total != 93+92+91 {
		t.Errorf("last legend entry = %+v, want the 3 smallest models together", last)
	}
	if len(c.Bars) != maxSeries {
		t.Errorf("%d bars, want one per legend entry", len(c.Bars))
	}
}

func TestBuildChartEmpty(t *testing.T) {
	t.Parallel()
	c := buildChart([]dayUsage{day(0), day(1)}, metrics[2])
	if !c.Empty || len(c.Bars) != 0 || len(c.Legend) != 0 || len(c.YTicks) != yIntervals+1 || len(c.XLabels) != 2 {
		t.Errorf("empty chart = %+v", c)
	}
}

func TestBuildChartLabelsFewDays(t *testing.T) {
	t.Parallel()
	days := make([]dayUsage, 90)
	for i := range days {
		days[i] = day(i)
	}
	c := buildChart(days, metrics[0])
	if len(c.XLabels) != 10 || c.XLabels[0].Label != "May 1" || c.XLabels[1].Label != "May 10" {
		t.Errorf("x labels of 90 days = %v, want every 9th day", c.XLabels)
	}
}
