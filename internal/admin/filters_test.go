package admin

import (
	"bytes"
	"strings"
	"testing"
)

// The pages that filter or page a list share the two partials.
func TestFilterAndPagerPartials(t *testing.T) {
	t.Parallel()
	render := func(name string, data any) string {
		var buf bytes.Buffer
		if err := templates["tokens"].ExecuteTemplate(&buf, name, data); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return buf.String()
	}
	form := filterForm{Action: "/admin/x", Label: "Filter x", Submit: "Go",
		Fields: []filterField{choiceField("x-state", "state", "State", "Any state", []string{"on", "off <b>"}, "off <b>")},
		Hidden: []hiddenField{{Name: "token_id", Value: "7"}},
	}
	got := render("filters", form)
	for _, want := range []string{
		`<form method="get" action="/admin/x" class="filters" aria-label="Filter x">`,
		`<label for="x-state">State</label>`, `<select id="x-state" name="state">`,
		`<option value="">Any state</option>`, `<option value="on">on</option>`,
		`<option value="off &lt;b&gt;" selected>off &lt;b&gt;</option>`,
		`<input type="hidden" name="token_id" value="7">`, `<button type="submit" class="button-quiet">Go</button>`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("filters lack %q:\n%s", want, got)
		}
	}
	if got := choiceField("x", "x", "X", "", []string{"a"}, ""); len(got.Options) != 1 {
		t.Errorf("choiceField without anyLabel = %+v, want only the values", got.Options)
	}

	p := pager{Label: "Pages of x", Links: []pageLink{{Label: "Newer", Rel: "prev"}, {URL: "/admin/x?page=2", Label: "Older", Rel: "next"}, {URL: "/admin/x", Label: "First"}}}
	got = render("pager", p)
	for _, want := range []string{`<nav aria-label="Pages of x" class="pager">`, `<a href="/admin/x?page=2" rel="next">Older</a>`, `<a href="/admin/x">First</a>`} {
		if !strings.Contains(got, want) {
			t.Errorf("pager lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Newer") {
		t.Errorf("pager shows a link without a URL:\n%s", got)
	}
	if got := render("pager", pager{Label: "Pages of x", Links: []pageLink{{Label: "Newer"}}}); strings.TrimSpace(got) != "" {
		t.Errorf("pager without links = %q, want nothing", got)
	}
}
