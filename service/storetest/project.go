package storetest

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/llmproxy/llmproxy/service"
)

var projectCreateCases = []storeCase{
	{"ReturnsActiveProject", func(t *testing.T, s service.Store) {
		params := projectParams()
		p, err := s.ProjectCreate(t.Context(), params)
		if err != nil {
			t.Fatalf("ProjectCreate: %v", err)
		}
		if p.ID <= 0 || p.Name != params.Name || !bytes.Equal(p.APIKeyCiphertext, params.APIKeyCiphertext) ||
			p.APIKeyHint != params.APIKeyHint || !p.IsActive {
			t.Errorf("ProjectCreate = %+v, want a positive id, the params' fields and IsActive", p)
		}
		assertRecent(t, "CreatedAt", p.CreatedAt)
		assertRecent(t, "UpdatedAt", p.UpdatedAt)
	}},
	{"RefusesTakenName", func(t *testing.T, s service.Store) {
		first := newProject(t, s)
		params := projectParams()
		params.Name = first.Name
		_, err := s.ProjectCreate(t.Context(), params)
		requireErrorIs(t, "ProjectCreate with a taken name", err, service.ErrConflict)
	}},
	{"RefusesEmptyName", func(t *testing.T, s service.Store) {
		params := projectParams()
		params.Name = ""
		_, err := s.ProjectCreate(t.Context(), params)
		requireErrorIs(t, "ProjectCreate with an empty name", err, service.ErrInvalid)
	}},
	{"SucceedsConcurrently", func(t *testing.T, s service.Store) {
		const n = 32
		created := make([]*service.Project, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { created[i], errs[i] = s.ProjectCreate(t.Context(), projectParams()) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent ProjectCreate: %v", err)
		}
		seen := map[int64]bool{}
		for _, p := range created {
			if seen[p.ID] {
				t.Errorf("id %d assigned twice", p.ID)
			}
			seen[p.ID] = true
		}
		listed, err := s.ProjectList(t.Context(), &service.ProjectListParams{})
		if err != nil {
			t.Fatalf("ProjectList: %v", err)
		}
		if len(listed) != n {
			t.Errorf("ProjectList returned %d projects, want %d", len(listed), n)
		}
	}},
}

var projectGetByIDCases = []storeCase{
	{"ReturnsCreatedProject", func(t *testing.T, s service.Store) {
		want := newProject(t, s)
		assertProjectEqual(t, getProject(t, s, want.ID), want)
	}},
	{"UnknownIDIsNotFound", func(t *testing.T, s service.Store) {
		p := newProject(t, s)
		_, err := s.ProjectGetByID(t.Context(), p.ID+1000)
		requireErrorIs(t, "ProjectGetByID(unknown)", err, service.ErrNotFound)
	}},
}

var projectListCases = []storeCase{
	{"EmptyStoreListsNothing", func(t *testing.T, s service.Store) {
		got, err := s.ProjectList(t.Context(), &service.ProjectListParams{})
		if err != nil {
			t.Fatalf("ProjectList: %v", err)
		}
		if len(got) != 0 {
			t.Errorf("ProjectList = %d projects, want none", len(got))
		}
	}},
	{"ListsInAscendingIDOrder", func(t *testing.T, s service.Store) {
		var want []*service.Project
		for range 5 {
			want = append(want, newProject(t, s))
		}
		got, err := s.ProjectList(t.Context(), &service.ProjectListParams{})
		if err != nil {
			t.Fatalf("ProjectList: %v", err)
		}
		assertEqualSlices(t, "ProjectList ids", ids(got, projectID), ids(want, projectID))
		if len(got) == len(want) {
			for i := range got {
				assertProjectEqual(t, got[i], want[i])
			}
		}
	}},
	{"PagesWithAfterID", func(t *testing.T, s service.Store) {
		var want []*service.Project
		for range 7 {
			want = append(want, newProject(t, s))
		}
		got, sizes := pageThrough(t, func(after int64) ([]*service.Project, error) {
			return s.ProjectList(t.Context(), &service.ProjectListParams{AfterID: after, Limit: 3})
		}, projectID)
		assertEqualSlices(t, "all pages' ids", ids(got, projectID), ids(want, projectID))
		assertEqualSlices(t, "page sizes", sizes, []int{3, 3, 1, 0})
	}},
}

var projectUpdateCases = []storeCase{
	{"ChangesOnlyTheName", func(t *testing.T, s service.Store) {
		before := newProject(t, s)
		name := uniqueName("renamed")
		got, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: before.ID, Name: &name})
		if err != nil {
			t.Fatalf("ProjectUpdate: %v", err)
		}
		assertProjectUpdated(t, got, before, func(p *service.Project) { p.Name = name })
		assertProjectEqual(t, getProject(t, s, before.ID), got)
	}},
	{"ReplacesAPIKeyAndHint", func(t *testing.T, s service.Store) {
		before := newProject(t, s)
		key, hint := randomBytes(40), "sk-...wxyz"
		got, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: before.ID, APIKeyCiphertext: key, APIKeyHint: &hint})
		if err != nil {
			t.Fatalf("ProjectUpdate: %v", err)
		}
		assertProjectUpdated(t, got, before, func(p *service.Project) { p.APIKeyCiphertext, p.APIKeyHint = key, hint })
		assertProjectEqual(t, getProject(t, s, before.ID), got)
	}},
	{"NilAPIKeyKeepsKey", func(t *testing.T, s service.Store) {
		before := newProject(t, s)
		hint := "sk-...1234"
		got, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: before.ID, APIKeyHint: &hint})
		if err != nil {
			t.Fatalf("ProjectUpdate: %v", err)
		}
		assertProjectUpdated(t, got, before, func(p *service.Project) { p.APIKeyHint = hint })
	}},
	{"DeactivatesAndActivates", func(t *testing.T, s service.Store) {
		before := newProject(t, s)
		for _, active := range []bool{false, true} {
			got, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: before.ID, IsActive: &active})
			if err != nil {
				t.Fatalf("ProjectUpdate(IsActive=%t): %v", active, err)
			}
			assertProjectUpdated(t, got, before, func(p *service.Project) { p.IsActive = active })
			assertProjectEqual(t, getProject(t, s, before.ID), got)
			before = got
		}
	}},
	{"ChangesSeveralFieldsAtOnce", func(t *testing.T, s service.Store) {
		before := newProject(t, s)
		name, key, active := uniqueName("renamed"), randomBytes(40), false
		got, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{
			ID: before.ID, Name: &name, APIKeyCiphertext: key, IsActive: &active,
		})
		if err != nil {
			t.Fatalf("ProjectUpdate: %v", err)
		}
		assertProjectUpdated(t, got, before, func(p *service.Project) {
			p.Name, p.APIKeyCiphertext, p.IsActive = name, key, active
		})
		assertProjectEqual(t, getProject(t, s, before.ID), got)
	}},
	{"NothingSetKeepsRow", func(t *testing.T, s service.Store) {
		before := newProject(t, s)
		got, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: before.ID})
		if err != nil {
			t.Fatalf("ProjectUpdate: %v", err)
		}
		assertProjectUpdated(t, got, before, func(*service.Project) {})
	}},
	{"KeepsOwnName", func(t *testing.T, s service.Store) {
		before := newProject(t, s)
		got, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: before.ID, Name: &before.Name})
		if err != nil {
			t.Fatalf("ProjectUpdate to its own name: %v", err)
		}
		assertProjectUpdated(t, got, before, func(*service.Project) {})
	}},
	{"RefusesTakenName", func(t *testing.T, s service.Store) {
		taken := newProject(t, s)
		before := newProject(t, s)
		_, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: before.ID, Name: &taken.Name})
		requireErrorIs(t, "ProjectUpdate to a taken name", err, service.ErrConflict)
		assertProjectEqual(t, getProject(t, s, before.ID), before)
	}},
	{"FailedUpdateChangesNothing", func(t *testing.T, s service.Store) {
		taken := newProject(t, s)
		before := newProject(t, s)
		inactive := false
		_, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{
			ID: before.ID, Name: &taken.Name, APIKeyCiphertext: randomBytes(40), IsActive: &inactive,
		})
		requireErrorIs(t, "ProjectUpdate to a taken name", err, service.ErrConflict)
		assertProjectEqual(t, getProject(t, s, before.ID), before)
	}},
	{"RefusesEmptyName", func(t *testing.T, s service.Store) {
		before := newProject(t, s)
		empty := ""
		_, err := s.ProjectUpdate(t.Context(), &service.ProjectUpdateParams{ID: before.ID, Name: &empty})
		requireErrorIs(t, "ProjectUpdate to an empty name", err, service.ErrInvalid)
		assertProjectEqual(t, getProject(t, s, before.ID), before)
	}},
	{"UnknownIDIsNotFound", func(t *testing.T, s service.Store) {
		unknown := newProject(t, s).ID + 1000
		name, inactive := uniqueName("renamed"), false
		for _, params := range []*service.ProjectUpdateParams{
			{ID: unknown, Name: &name},
			{ID: unknown, IsActive: &inactive},
			{ID: unknown},
		} {
			_, err := s.ProjectUpdate(t.Context(), params)
			requireErrorIs(t, "ProjectUpdate(unknown)", err, service.ErrNotFound)
		}
	}},
}
