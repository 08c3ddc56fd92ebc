package admin

import (
	"cmp"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/service"
)

const (
	auditPerPage = 50
	// auditMaxScan bounds the events one page reads while filtering by
	// action or result, which the store cannot; the next page goes on from
	// where this one stopped.
	auditMaxScan = 5 * service.MaxPageLimit
)

var auditActions = []string{
	manage.ActionProjectCreate, manage.ActionProjectUpdate, manage.ActionProjectRevokeTokens,
	manage.ActionTokenCreate, manage.ActionTokenUpdate, manage.ActionTokenRevoke,
}

// Result filters: success, or any error code.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

// auditRow is an event with the name of its project ("#7" if unknown).
type auditRow struct {
	*service.AuditEvent
	ProjectName string
}

type auditView struct {
	Filters filterForm
	Events  []auditRow
	// Filter
	ProjectID int64
	Action    string
	Result    string
	// Pagination: Before is this page's cursor (0: newest); OlderURL is
	// empty when nothing older is left.
	Before   int64
	OlderURL string
	Scanned  int
	Pager    pager
}

func (h *handler) auditPage(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	v := auditView{Action: q.Get("action"), Result: q.Get("result")}
	projectID, err := queryID(q, "project_id")
	if err != nil {
		h.renderError(w, r, sess, http.StatusBadRequest, err.Error())
		return
	}
	v.ProjectID = orZero(projectID)
	if v.Action != "" && !slices.Contains(auditActions, v.Action) {
		h.renderError(w, r, sess, http.StatusBadRequest, fmt.Sprintf("action %q: want one of %s", v.Action, strings.Join(auditActions, ", ")))
		return
	}
	if v.Result != "" && v.Result != resultSuccess && v.Result != resultFailure {
		h.renderError(w, r, sess, http.StatusBadRequest, fmt.Sprintf("result %q: want %s or %s", v.Result, resultSuccess, resultFailure))
		return
	}
	if s := q.Get("before"); s != "" {
		if v.Before, err = manage.ParseID(s); err != nil {
			h.renderError(w, r, sess, http.StatusBadRequest, "before: "+err.Error())
			return
		}
	}

	projects, err := h.manager.Projects(r.Context())
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	v.Filters = filterForm{Action: Prefix + "audit", Label: "Filter the audit log", Submit: "Filter", Fields: []filterField{
		projectField("audit-project", projects, v.ProjectID),
		choiceField("audit-action", "action", "Action", "Any action", auditActions, v.Action),
		choiceField("audit-result", "result", "Result", "Any result", []string{resultSuccess, resultFailure}, v.Result),
	}}
	names := projectNames(projects)
	match := func(e *service.AuditEvent) bool {
		return (v.Action == "" || e.Action == v.Action) &&
			(v.Result == "" || (e.Result == manage.ResultSuccess) == (v.Result == resultSuccess))
	}
	filtered := v.Action != "" || v.Result != ""
	batch := auditPerPage
	if filtered {
		batch = service.MaxPageLimit
	}
	cursor, more := v.Before, true
	for more && len(v.Events) < auditPerPage && v.Scanned < auditMaxScan {
		events, err := h.store.AuditList(r.Context(), &service.AuditListParams{ProjectID: projectID, BeforeID: cursor, Limit: batch})
		if err != nil {
			h.fail(w, r, sess, err)
			return
		}
		more = len(events) == batch
		for i, e := range events {
			cursor = e.ID
			v.Scanned++
			if match(e) {
				row := auditRow{AuditEvent: e}
				if e.ProjectID != nil {
					row.ProjectName = cmp.Or(names[*e.ProjectID], "#"+manage.FormatID(*e.ProjectID))
				}
				v.Events = append(v.Events, row)
				if len(v.Events) == auditPerPage {
					more = more || i < len(events)-1
					break
				}
			}
		}
	}
	newest := pageLink{Label: "Newest events"}
	if v.Before != 0 {
		newest.URL = auditURL(q, 0)
	}
	if more {
		v.OlderURL = auditURL(q, cursor)
	}
	v.Pager = pager{Label: "Pages of the audit log", Links: []pageLink{newest, {URL: v.OlderURL, Label: "Older events", Rel: "next"}}}
	h.render(w, r, sess, http.StatusOK, "audit", "Audit log", v)
}

func auditURL(q url.Values, before int64) string {
	q = maps.Clone(q)
	q.Del("before")
	if before != 0 {
		q.Set("before", strconv.FormatInt(before, 10))
	}
	if len(q) == 0 {
		return Prefix + "audit"
	}
	return Prefix + "audit?" + q.Encode()
}
