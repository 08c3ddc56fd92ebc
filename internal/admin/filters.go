package admin

import (
	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/service"
)

// filterForm is a list page's GET form of selects, rendered by the
// "filters" partial.
type filterForm struct {
	Action string // the page's path
	Label  string // the form's accessible name
	Submit string // the button's text
	Fields []filterField
	Hidden []hiddenField // kept from the query without a select of their own
}

type filterField struct {
	ID, Name, Label string
	Options         []option
}

type option struct {
	Value, Label string
	Selected     bool
}

type hiddenField struct{ Name, Value string }

// choiceField offers values, preceded by anyLabel (value "") unless it is empty.
func choiceField(id, name, label, anyLabel string, values []string, selected string) filterField {
	f := filterField{ID: id, Name: name, Label: label}
	if anyLabel != "" {
		f.Options = append(f.Options, option{Value: "", Label: anyLabel})
	}
	for _, v := range values {
		f.Options = append(f.Options, option{Value: v, Label: v, Selected: v == selected})
	}
	return f
}

// projectField offers every project, and "All projects".
func projectField(id string, projects []*service.Project, selected int64) filterField {
	f := filterField{ID: id, Name: "project_id", Label: "Project", Options: []option{{Value: "", Label: "All projects"}}}
	for _, p := range projects {
		f.Options = append(f.Options, option{Value: manage.FormatID(p.ID), Label: p.Name, Selected: p.ID == selected})
	}
	return f
}

// pager is the links between a list's pages, rendered by the "pager"
// partial; links without a URL are left out, and so is the pager when
// none has one.
type pager struct {
	Label string // the navigation's accessible name
	Links []pageLink
}

type pageLink struct {
	URL, Label string
	Rel        string // prev, next or empty
}

// Shown reports whether the pager has a link to show.
func (p pager) Shown() bool {
	for _, l := range p.Links {
		if l.URL != "" {
			return true
		}
	}
	return false
}
