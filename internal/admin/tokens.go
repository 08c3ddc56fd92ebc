package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/service"
)

// tokensPerPage is the length of one page of the token list.
const tokensPerPage = 100

// Token states, as shown and filtered on.
const (
	stateActive  = "active"
	stateRevoked = "revoked"
	stateExpired = "expired"
	stateUsedUp  = "used up" // max_requests reached
)

var tokenStates = []string{stateActive, stateRevoked, stateExpired, stateUsedUp}

// tokenRow is a token as the lists show it.
type tokenRow struct {
	*service.Token
	ProjectName string
	State       string
	ExpiresIn   string // relative to now: "in 3 h", "2 d ago"
	LastUsed    string
}

// tokenState is why a token would or would not be admitted now, in the
// order the proxy checks (the project's own state is shown separately).
func tokenState(t *service.Token, now time.Time) string {
	switch {
	case !t.IsActive:
		return stateRevoked
	case !now.Before(t.ExpiresAt):
		return stateExpired
	case t.MaxRequests != nil && t.RequestCount >= *t.MaxRequests:
		return stateUsedUp
	}
	return stateActive
}

// tokenRows lists tokens newest first.
func (h *handler) tokenRows(tokens []*service.Token, projectNames map[int64]string) []tokenRow {
	now := h.now()
	rows := make([]tokenRow, 0, len(tokens))
	for _, t := range slices.Backward(tokens) {
		row := tokenRow{Token: t, ProjectName: projectNames[t.ProjectID], State: tokenState(t, now),
			ExpiresIn: relative(now, t.ExpiresAt), LastUsed: "never"}
		if t.LastUsedAt != nil {
			row.LastUsed = relative(now, *t.LastUsedAt)
		}
		rows = append(rows, row)
	}
	return rows
}

type tokensView struct {
	Projects []*service.Project // for the create form
	Filters  filterForm
	Rows     []tokenRow
	Total    int // matching tokens, all pages
	// Filter
	ProjectID int64
	State     string
	// Pagination
	Page, Pages int
	Pager       pager
	Create      formState
	Units       []string
	ReturnTo    string
}

func (h *handler) tokensPage(w http.ResponseWriter, r *http.Request, sess *session) {
	h.showTokens(w, r, sess, http.StatusOK, formState{})
}

func (h *handler) showTokens(w http.ResponseWriter, r *http.Request, sess *session, status int, create formState) {
	q := r.URL.Query()
	v := tokensView{State: q.Get("state"), Create: create, Units: durationUnits, ReturnTo: r.URL.RequestURI()}
	projectFilter, err := queryID(q, "project_id")
	if err != nil {
		h.renderError(w, r, sess, http.StatusBadRequest, err.Error())
		return
	}
	v.ProjectID = orZero(projectFilter)
	if v.State != "" && !slices.Contains(tokenStates, v.State) {
		h.renderError(w, r, sess, http.StatusBadRequest, fmt.Sprintf("state %q: want one of %s", v.State, strings.Join(tokenStates, ", ")))
		return
	}
	v.Page = 1
	if s := q.Get("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			h.renderError(w, r, sess, http.StatusBadRequest, fmt.Sprintf("page %q: want a positive integer", s))
			return
		}
		v.Page = n
	}

	projects, err := h.manager.Projects(r.Context())
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	tokens, err := h.manager.Tokens(r.Context(), projectFilter)
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	rows := h.tokenRows(tokens, projectNames(projects))
	if v.State != "" {
		rows = slices.DeleteFunc(rows, func(row tokenRow) bool { return row.State != v.State })
	}
	v.Projects, v.Total = projects, len(rows)
	v.Pages = max(1, (len(rows)+tokensPerPage-1)/tokensPerPage)
	start := min((v.Page-1)*tokensPerPage, len(rows))
	v.Rows = rows[start:min(start+tokensPerPage, len(rows))]
	v.Filters = filterForm{Action: Prefix + "tokens", Label: "Filter tokens", Submit: "Filter", Fields: []filterField{
		projectField("filter-project", projects, v.ProjectID),
		choiceField("filter-state", "state", "State", "Any state", tokenStates, v.State),
	}}
	newer, older := pageLink{Label: "Newer tokens", Rel: "prev"}, pageLink{Label: "Older tokens", Rel: "next"}
	if v.Page > 1 {
		newer.URL = pageURL(r.URL, v.Page-1)
	}
	if v.Page < v.Pages {
		older.URL = pageURL(r.URL, v.Page+1)
	}
	v.Pager = pager{Label: "Pages of tokens", Links: []pageLink{newer, older}}
	if v.Create.Values == nil {
		v.Create.Values = map[string]string{"project_id": q.Get("project_id"), "duration": "1", "unit": "days"}
	}
	h.render(w, r, sess, status, "tokens", "Tokens", v)
}

func pageURL(u *url.URL, page int) string {
	q := u.Query()
	q.Set("page", strconv.Itoa(page))
	return u.Path + "?" + q.Encode()
}

func projectNames(projects []*service.Project) map[int64]string {
	names := make(map[int64]string, len(projects))
	for _, p := range projects {
		names[p.ID] = p.Name
	}
	return names
}

// The create form's duration units, and their length in minutes.
var (
	durationUnits = []string{"minutes", "hours", "days"}
	minutesPer    = map[string]int64{"minutes": 1, "hours": 60, "days": 24 * 60}
)

type tokenCreatedView struct {
	Token       tokenRow
	Secret      string
	ProjectName string
}

func (h *handler) createToken(w http.ResponseWriter, r *http.Request, sess *session) {
	f := r.PostForm
	create := formState{Values: map[string]string{
		"project_id": f.Get("project_id"), "duration": f.Get("duration"), "unit": f.Get("unit"), "max_requests": f.Get("max_requests"),
	}}
	in, projectID, problem := parseTokenForm(f)
	if problem != "" {
		h.auditInvalid(r, manage.ActionTokenCreate, projectID, problem)
		create.Error = problem
		h.showTokens(w, r, sess, http.StatusBadRequest, create)
		return
	}
	created, err := h.manager.CreateToken(r.Context(), Actor, in)
	if err != nil {
		status, message, ok := userError(err)
		if !ok {
			h.fail(w, r, sess, err)
			return
		}
		create.Error = message
		h.showTokens(w, r, sess, status, create)
		return
	}
	projectName := ""
	if p, err := h.manager.Project(r.Context(), created.ProjectID); err == nil {
		projectName = p.Name
	}
	rows := h.tokenRows([]*service.Token{created.Token}, map[int64]string{created.ProjectID: projectName})
	// Shown here, in the answer to the post, and nowhere else: a redirect
	// would have to keep the secret somewhere.
	h.render(w, r, sess, http.StatusCreated, "token_created", "Token created",
		tokenCreatedView{Token: rows[0], Secret: created.Secret, ProjectName: projectName})
}

// parseTokenForm reads the create-token form; problem says what is wrong
// with it in the form's own terms.
func parseTokenForm(f url.Values) (in manage.TokenInput, projectID *int64, problem string) {
	id, err := manage.ParseID(f.Get("project_id"))
	if err != nil {
		return in, nil, "Choose a project."
	}
	in.ProjectID, projectID = id, &id
	perUnit, ok := minutesPer[f.Get("unit")]
	if !ok {
		return in, projectID, "Choose minutes, hours or days."
	}
	amount, err := strconv.ParseInt(strings.TrimSpace(f.Get("duration")), 10, 64)
	if err != nil || amount < 1 || amount > manage.MaxDurationMinutes/perUnit {
		return in, projectID, fmt.Sprintf("Valid for: enter a whole number of %s, from 1 up to one year (%d).",
			f.Get("unit"), manage.MaxDurationMinutes/perUnit)
	}
	in.DurationMinutes = amount * perUnit
	if s := strings.TrimSpace(f.Get("max_requests")); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return in, projectID, "Request limit: enter a whole number, or leave it empty for no limit."
		}
		in.MaxRequests = n
	}
	return in, projectID, ""
}

func (h *handler) revokeToken(w http.ResponseWriter, r *http.Request, sess *session) {
	id, ok := h.pathID(w, r, sess)
	if !ok {
		return
	}
	if err := h.manager.RevokeToken(r.Context(), Actor, id); err != nil {
		h.fail(w, r, sess, err)
		return
	}
	back := r.PostForm.Get("return")
	if back == "" {
		back = Prefix + "tokens"
	}
	h.redirectWith(w, r, back, flash{"success", fmt.Sprintf("Token #%d revoked.", id)})
}
