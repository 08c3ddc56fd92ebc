package admin

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// metric is one figure of usage the chart can show.
type metric struct {
	Key, Label string
	value      func(service.UsageCounts) int64
}

var metrics = []metric{
	{"requests", "Requests", func(c service.UsageCounts) int64 { return c.Requests }},
	{"errors", "Errors", func(c service.UsageCounts) int64 { return c.Errors }},
	{"total_tokens", "Total tokens", func(c service.UsageCounts) int64 { return c.TotalTokens }},
	{"prompt_tokens", "Prompt tokens", func(c service.UsageCounts) int64 { return c.PromptTokens }},
	{"completion_tokens", "Completion tokens", func(c service.UsageCounts) int64 { return c.CompletionTokens }},
}

// dayUsage is the usage of one UTC day.
type dayUsage struct {
	Day    time.Time
	Totals *service.UsageTotals
}

// Chart geometry, in SVG user units; the SVG scales to its container.
const (
	chartWidth   = 760
	chartHeight  = 280
	marginLeft   = 64
	marginRight  = 16
	marginTop    = 16
	marginBottom = 40
	maxSeries    = 8 // colours in the style sheet; more models share the last
	maxXLabels   = 10
	yIntervals   = 4
)

// chart is a stacked bar chart, one bar per day and one colour per model,
// drawn as SVG on the server so it needs no script.
type chart struct {
	Width, Height int
	Title, Desc   string
	// Plot area edges and centre.
	Left, Right, Top, Bottom string
	MidX, MidY               string
	YTicks                   []chartTick
	XLabels                  []chartTick
	Bars                     []chartBar
	Legend                   []legendEntry
	// The same figures as a table, for screen readers and exact values.
	Rows  []chartRow
	Empty bool
}

type chartTick struct {
	Pos   string // y of a horizontal grid line, or x of a day's label
	Label string
}

type chartBar struct {
	X, Y, W, H string
	Series     int
	Title      string
}

type legendEntry struct {
	Series int
	Name   string
	Total  int64
}

type chartRow struct {
	Day    string
	Values []int64 // per legend entry
	Total  int64
}

// buildChart stacks m's daily values by model. Models are ranked by their
// total; beyond maxSeries-1 of them, the rest are drawn together as "other models".
func buildChart(days []dayUsage, m metric) chart {
	totals := map[string]int64{}
	for _, d := range days {
		for _, mu := range d.Totals.ByModel {
			totals[mu.Model] += m.value(mu.UsageCounts)
		}
	}
	models := make([]string, 0, len(totals))
	for model := range totals {
		models = append(models, model)
	}
	slices.SortFunc(models, func(a, b string) int {
		return cmp.Or(cmp.Compare(totals[b], totals[a]), cmp.Compare(a, b))
	})
	seriesOf := map[string]int{}
	var legend []legendEntry
	for i, model := range models {
		if i >= maxSeries-1 && len(models) > maxSeries {
			seriesOf[model] = maxSeries - 1
			continue
		}
		name := model
		if name == "" {
			name = "(no model)"
		}
		seriesOf[model] = len(legend)
		legend = append(legend, legendEntry{Series: len(legend), Name: name})
	}
	if len(models) > maxSeries {
		legend = append(legend, legendEntry{Series: maxSeries - 1, Name: fmt.Sprintf("%d other models", len(models)-(maxSeries-1))})
	}

	rows := make([]chartRow, len(days))
	var highest, sum int64
	for i, d := range days {
		row := chartRow{Day: d.Day.Format(time.DateOnly), Values: make([]int64, len(legend))}
		for _, mu := range d.Totals.ByModel {
			v := m.value(mu.UsageCounts)
			row.Values[seriesOf[mu.Model]] += v
			row.Total += v
		}
		for s, v := range row.Values {
			legend[s].Total += v
		}
		highest, sum = max(highest, row.Total), sum+row.Total
		rows[i] = row
	}

	c := chart{
		Width: chartWidth, Height: chartHeight,
		Left: coord(marginLeft), Right: coord(chartWidth - marginRight),
		Top: coord(marginTop), Bottom: coord(chartHeight - marginBottom),
		MidX: coord((marginLeft + chartWidth - marginRight) / 2.0), MidY: coord((marginTop + chartHeight - marginBottom) / 2.0),
		Legend: legend, Rows: rows, Empty: sum == 0,
	}
	if len(days) > 0 {
		first, last := rows[0].Day, rows[len(rows)-1].Day
		c.Title = fmt.Sprintf("%s per day, %s to %s (UTC)", m.Label, first, last)
		c.Desc = fmt.Sprintf("Stacked bars by model. Total %s; highest day %s.", formatCount(sum), formatCount(highest))
	}

	step := niceStep(highest)
	top := step * yIntervals
	plotHeight := float64(chartHeight - marginTop - marginBottom)
	y := func(v int64) float64 { return float64(chartHeight-marginBottom) - float64(v)/float64(top)*plotHeight }
	for i := int64(0); i <= yIntervals; i++ {
		c.YTicks = append(c.YTicks, chartTick{Pos: coord(y(i * step)), Label: shortCount(i * step)})
	}

	slot := float64(chartWidth-marginLeft-marginRight) / float64(max(len(days), 1))
	barWidth := slot * 0.7
	every := (len(days) + maxXLabels - 1) / maxXLabels
	for i, d := range days {
		x := marginLeft + float64(i)*slot
		if i%every == 0 {
			c.XLabels = append(c.XLabels, chartTick{Pos: coord(x + slot/2), Label: d.Day.Format("Jan 2")})
		}
		var base int64
		for s, v := range rows[i].Values {
			if v == 0 {
				continue
			}
			c.Bars = append(c.Bars, chartBar{
				X: coord(x + (slot-barWidth)/2), Y: coord(y(base + v)), W: coord(barWidth), H: coord(y(base) - y(base+v)),
				Series: legend[s].Series,
				Title:  fmt.Sprintf("%s, %s: %s %s", rows[i].Day, legend[s].Name, formatCount(v), m.Label),
			})
			base += v
		}
	}
	return c
}

// niceStep is the y-axis interval: 1, 2 or 5 times a power of ten, so that
// yIntervals of them reach highest.
func niceStep(highest int64) int64 {
	raw := max((highest+yIntervals-1)/yIntervals, 1)
	magnitude := int64(1)
	for magnitude*10 <= raw {
		magnitude *= 10
	}
	for _, m := range []int64{1, 2, 5} {
		if m*magnitude >= raw {
			return m * magnitude
		}
	}
	return 10 * magnitude
}

// shortCount abbreviates axis labels: 1500 → 1.5k, 2000000 → 2M.
func shortCount(n int64) string {
	switch {
	case n >= 1_000_000_000:
		return trimFloat(float64(n)/1e9) + "G"
	case n >= 1_000_000:
		return trimFloat(float64(n)/1e6) + "M"
	case n >= 1_000:
		return trimFloat(float64(n)/1e3) + "k"
	}
	return strconv.FormatInt(n, 10)
}

func trimFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func coord(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }
