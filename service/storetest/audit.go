package storetest

import (
	"encoding/json"
	"testing"

	"github.com/llmproxy/llmproxy/service"
)

func auditParams(projectID *int64) *service.AuditInsertParams {
	return &service.AuditInsertParams{
		Actor:     "management",
		Action:    "token.create",
		ProjectID: projectID,
		Result:    "success",
		Details:   json.RawMessage(`{"max_requests": 10}`),
	}
}

var auditInsertCases = []storeCase{
	{"ReturnsEvent", func(t *testing.T, s service.Store) {
		details := `{"name": "demo", "nested": {"list": [1, 2.5, "x", null, true]}, "empty": {}}`
		params := &service.AuditInsertParams{
			Actor: "admin", Action: "project.update", ProjectID: ptr[int64](3), TokenID: ptr[int64](4),
			Result: "error", Details: json.RawMessage(details),
		}
		got := insertAudit(t, s, params)
		if got.ID <= 0 || got.Actor != params.Actor || got.Action != params.Action || got.Result != params.Result ||
			!equalPtr(got.ProjectID, params.ProjectID) || !equalPtr(got.TokenID, params.TokenID) {
			t.Errorf("AuditInsert = %+v, want a positive id and the params' fields", got)
		}
		assertJSONEqual(t, "Details", got.Details, details)
		assertRecent(t, "CreatedAt", got.CreatedAt)

		listed, err := s.AuditList(t.Context(), &service.AuditListParams{})
		if err != nil || len(listed) != 1 {
			t.Fatalf("AuditList = %d events, %v; want 1", len(listed), err)
		}
		read := listed[0]
		if read.ID != got.ID || read.Actor != got.Actor || read.Action != got.Action || read.Result != got.Result ||
			!equalPtr(read.ProjectID, got.ProjectID) || !equalPtr(read.TokenID, got.TokenID) {
			t.Errorf("AuditList = %+v, want %+v", read, got)
		}
		assertJSONEqual(t, "Details read back", read.Details, details)
		assertSameInstant(t, "CreatedAt read back", read.CreatedAt, got.CreatedAt)
	}},
	{"NilDetailsAreEmptyObject", func(t *testing.T, s service.Store) {
		params := auditParams(nil)
		params.Details = nil
		got := insertAudit(t, s, params)
		assertJSONEqual(t, "Details", got.Details, `{}`)
	}},
	{"NilIDsStayNil", func(t *testing.T, s service.Store) {
		got := insertAudit(t, s, auditParams(nil))
		if got.ProjectID != nil || got.TokenID != nil {
			t.Errorf("ProjectID, TokenID = %s, %s; want nil, nil", show(got.ProjectID), show(got.TokenID))
		}
		listed, err := s.AuditList(t.Context(), &service.AuditListParams{})
		if err != nil || len(listed) != 1 {
			t.Fatalf("AuditList = %d events, %v; want 1", len(listed), err)
		}
		if listed[0].ProjectID != nil || listed[0].TokenID != nil {
			t.Errorf("read back ProjectID, TokenID = %s, %s; want nil, nil", show(listed[0].ProjectID), show(listed[0].TokenID))
		}
	}},
}

var auditListCases = []storeCase{
	{"EmptyStoreListsNothing", func(t *testing.T, s service.Store) {
		got, err := s.AuditList(t.Context(), &service.AuditListParams{})
		if err != nil || len(got) != 0 {
			t.Errorf("AuditList = %d events, %v; want none", len(got), err)
		}
	}},
	{"ListsNewestFirst", func(t *testing.T, s service.Store) {
		var want []int64
		for range 4 {
			want = append([]int64{insertAudit(t, s, auditParams(nil)).ID}, want...)
		}
		got, err := s.AuditList(t.Context(), &service.AuditListParams{})
		if err != nil {
			t.Fatalf("AuditList: %v", err)
		}
		assertEqualSlices(t, "AuditList ids", ids(got, auditID), want)
	}},
	{"FiltersByProject", func(t *testing.T, s service.Store) {
		var inA []int64
		for i := range 6 {
			switch i % 3 {
			case 0:
				inA = append([]int64{insertAudit(t, s, auditParams(ptr[int64](1))).ID}, inA...)
			case 1:
				insertAudit(t, s, auditParams(ptr[int64](2)))
			case 2:
				insertAudit(t, s, auditParams(nil))
			}
		}
		got, err := s.AuditList(t.Context(), &service.AuditListParams{ProjectID: ptr[int64](1)})
		if err != nil {
			t.Fatalf("AuditList: %v", err)
		}
		assertEqualSlices(t, "project 1's audit ids", ids(got, auditID), inA)
		got, err = s.AuditList(t.Context(), &service.AuditListParams{ProjectID: ptr[int64](3)})
		if err != nil || len(got) != 0 {
			t.Errorf("AuditList(project 3) = %d events, %v; want none", len(got), err)
		}
	}},
	{"PagesWithBeforeID", func(t *testing.T, s service.Store) {
		var want, inA []int64
		for i := range 14 {
			id := insertAudit(t, s, auditParams(ptr(int64(i%2+1)))).ID
			want = append([]int64{id}, want...)
			if i%2 == 0 {
				inA = append([]int64{id}, inA...)
			}
		}
		got, sizes := pageThrough(t, func(before int64) ([]*service.AuditEvent, error) {
			return s.AuditList(t.Context(), &service.AuditListParams{BeforeID: before, Limit: 5})
		}, auditID)
		assertEqualSlices(t, "all pages' ids", ids(got, auditID), want)
		assertEqualSlices(t, "page sizes", sizes, []int{5, 5, 4, 0})

		got, sizes = pageThrough(t, func(before int64) ([]*service.AuditEvent, error) {
			return s.AuditList(t.Context(), &service.AuditListParams{ProjectID: ptr[int64](1), BeforeID: before, Limit: 3})
		}, auditID)
		assertEqualSlices(t, "project pages' ids", ids(got, auditID), inA)
		assertEqualSlices(t, "project page sizes", sizes, []int{3, 3, 1, 0})
	}},
	{"AppliesPageLimit", func(t *testing.T, s service.Store) {
		// One transaction keeps a thousand inserts quick on every engine.
		err := s.InTx(t.Context(), func(tx service.Store) error {
			for range service.MaxPageLimit + 1 {
				if _, err := tx.AuditInsert(t.Context(), auditParams(nil)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("inserting audit events: %v", err)
		}
		for _, limit := range []int{0, -1, 7, service.MaxPageLimit + 500} {
			got, err := s.AuditList(t.Context(), &service.AuditListParams{Limit: limit})
			if err != nil {
				t.Fatalf("AuditList(Limit=%d): %v", limit, err)
			}
			if int64(len(got)) != service.PageLimit(limit) {
				t.Errorf("AuditList(Limit=%d) = %d events, want %d", limit, len(got), service.PageLimit(limit))
			}
		}
	}},
}
