package admin_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/service"
)

// insertAudit writes n events, oldest first; event(i) describes the i-th (from 1).
func (d *dashboard) insertAudit(n int, event func(i int) *service.AuditInsertParams) {
	d.t.Helper()
	err := d.store.InTx(d.t.Context(), func(tx service.Store) error {
		for i := 1; i <= n; i++ {
			if _, err := tx.AuditInsert(d.t.Context(), event(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		d.t.Fatal(err)
	}
}

var auditRowID = regexp.MustCompile(`<tr>\s*<td class="num">(\d+)</td>`)

// auditIDs lists the event ids on a page, in order.
func auditIDs(body string) string {
	var ids []string
	for _, m := range auditRowID.FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	if len(ids) == 0 {
		return "none"
	}
	if len(ids) > 2 {
		return fmt.Sprintf("%s..%s (%d)", ids[0], ids[len(ids)-1], len(ids))
	}
	return strings.Join(ids, ",")
}

func olderLink(t *testing.T, body string) string {
	t.Helper()
	m := regexp.MustCompile(`<a href="([^"]+)" rel="next">Older events</a>`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return strings.ReplaceAll(m[1], "&amp;", "&")
}

func TestAuditPages(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	d.insertAudit(120, func(i int) *service.AuditInsertParams {
		return &service.AuditInsertParams{Actor: "cli", Action: manage.ActionTokenCreate, Result: manage.ResultSuccess}
	})
	p := d.get("/admin/audit")
	wantPage(t, "page 1", p, http.StatusOK, `<th scope="col">Actor</th>`, `<th scope="row">token.create</th>`)
	wantNot(t, "page 1", p, "Newest events")
	for i, want := range []string{"120..71 (50)", "70..21 (50)", "20..1 (20)"} {
		if got := auditIDs(p.body); got != want {
			t.Fatalf("page %d shows events %s, want %s", i+1, got, want)
		}
		next := olderLink(t, p.body)
		if i == 2 {
			if next != "" {
				t.Errorf("last page links to %q", next)
			}
			break
		}
		if i > 0 && !strings.Contains(p.body, `<a href="/admin/audit">Newest events</a>`) {
			t.Errorf("page %d has no link to the newest events", i+1)
		}
		p = d.get(next)
	}
	wantPage(t, "bad cursor", d.get("/admin/audit?before=x"), http.StatusBadRequest, "before: ")
}

func TestAuditFilters(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	d.createProject("team-a") // audit event 1
	d.createProject("team-b") // audit event 2
	d.insertAudit(60, func(i int) *service.AuditInsertParams {
		e := &service.AuditInsertParams{Actor: "api@127.0.0.1", Action: manage.ActionTokenCreate, Result: manage.ResultSuccess,
			ProjectID: new(int64(1 + i%2)), Details: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		if i%3 == 0 {
			e.Action, e.Result = manage.ActionTokenRevoke, manage.CodeNotFound
		}
		return e
	})
	// Events 3..62; event 2+i is the i-th inserted.
	p := d.get("/admin/audit?project_id=2")
	wantPage(t, "project 2", p, http.StatusOK, `<option value="2" selected>team-b</option>`, `<a href="/admin/projects/2">team-b</a>`, `{&#34;n&#34;:59}`)
	if got := auditIDs(p.body); got != "61..2 (31)" {
		t.Errorf("project 2 shows %s, want its creation and the 30 events of odd i", got)
	}
	p = d.get("/admin/audit?result=failure")
	wantPage(t, "failures", p, http.StatusOK, `badge-off">not_found`, `<option value="failure" selected>`)
	if got := auditIDs(p.body); got != "62..5 (20)" {
		t.Errorf("failures: %s, want the 20 events of i divisible by 3", got)
	}
	p = d.get("/admin/audit?action=project.create&result=success")
	if got := auditIDs(p.body); got != "2,1" {
		t.Errorf("project.create successes: %s, want 2,1", got)
	}
	wantPage(t, "project.create", p, http.StatusOK, `<td class="nowrap">test</td>`)
	p = d.get("/admin/audit?action=token.update")
	wantPage(t, "no match", p, http.StatusOK, "No matching events.")

	for _, query := range []string{"action=drop", "result=maybe", "project_id=0"} {
		wantPage(t, query, d.get("/admin/audit?"+query), http.StatusBadRequest)
	}
}

func TestAuditFilterScanIsBounded(t *testing.T) {
	t.Parallel()
	d := newDashboard(t).login()
	const others = 5200
	d.insertAudit(others+1, func(i int) *service.AuditInsertParams {
		if i == 1 {
			return &service.AuditInsertParams{Actor: "cli", Action: manage.ActionProjectCreate, Result: manage.CodeConflict}
		}
		return &service.AuditInsertParams{Actor: "cli", Action: manage.ActionTokenCreate, Result: manage.ResultSuccess}
	})
	p := d.get("/admin/audit?result=failure")
	wantPage(t, "first page", p, http.StatusOK, "No matching events among the 5000 searched. Older events may still match.")
	next := olderLink(t, p.body)
	if next != "/admin/audit?before=202&result=failure" {
		t.Fatalf("older link = %q, want before=202", next)
	}
	p = d.get(next)
	if got := auditIDs(p.body); got != "1" {
		t.Errorf("second page shows %s, want event 1", got)
	}
	if olderLink(t, p.body) != "" {
		t.Error("second page links further")
	}
}
