package admin

import (
	"fmt"
	"html/template"
	"strconv"
	"time"

	"github.com/llmproxy/llmproxy/internal/manage"
)

// templates holds one template set per page, each with the shared layout.
var templates = parseTemplates("login", "error", "projects", "project", "tokens", "token_created", "usage", "audit")

var funcs = template.FuncMap{
	"id":     manage.FormatID,
	"num":    formatCount,
	"time":   formatTime,
	"second": func(t time.Time) string { return t.UTC().Format(time.DateTime + " UTC") },
	"limit":  formatLimit,
}

func parseTemplates(names ...string) map[string]*template.Template {
	set := map[string]*template.Template{}
	for _, name := range names {
		set[name] = template.Must(template.New(name).Funcs(funcs).
			ParseFS(assets, "templates/layout.html", "templates/partials.html", "templates/"+name+".html"))
	}
	return set
}

// formatCount writes a count with thousands separators: 1,234,567.
func formatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

func formatLimit(max *int64) string {
	if max == nil {
		return "unlimited"
	}
	return formatCount(*max)
}

// relative says how far t is from now, rounded to the largest sensible
// unit: "in 2 h", "3 d ago".
func relative(now, t time.Time) string {
	d := t.Sub(now)
	future := d >= 0
	if !future {
		d = -d
	}
	var amount string
	switch {
	case d < 30*time.Second:
		return "now"
	case d.Round(time.Minute) < time.Hour:
		amount = fmt.Sprintf("%d min", d.Round(time.Minute)/time.Minute)
	case d.Round(time.Hour) < 48*time.Hour:
		amount = fmt.Sprintf("%d h", d.Round(time.Hour)/time.Hour)
	default:
		amount = fmt.Sprintf("%d d", d.Round(24*time.Hour)/(24*time.Hour))
	}
	if future {
		return "in " + amount
	}
	return amount + " ago"
}
