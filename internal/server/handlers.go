package server

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/service"
)

type createProjectRequest struct {
	Name   string `json:"name"`
	APIKey string `json:"api_key"`
}

func (s *server) createProject(r *http.Request) (int, any, error) {
	var req createProjectRequest
	if err := s.decodeChange(r, &req, manage.ActionProjectCreate, nil, nil); err != nil {
		return 0, nil, err
	}
	p, err := s.Manager.CreateProject(r.Context(), s.actor(r), manage.ProjectInput{Name: req.Name, APIKey: req.APIKey})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, manage.NewProjectView(p), nil
}

func (s *server) listProjects(r *http.Request) (int, any, error) {
	projects, err := s.Manager.Projects(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, manage.Map(projects, manage.NewProjectView), nil
}

func (s *server) getProject(r *http.Request) (int, any, error) {
	id, err := pathID(r, "project")
	if err != nil {
		return 0, nil, err
	}
	p, err := s.Manager.Project(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, manage.NewProjectView(p), nil
}

type updateProjectRequest struct {
	Name         *string `json:"name"`
	APIKey       *string `json:"api_key"`
	IsActive     *bool   `json:"is_active"`
	RevokeTokens *bool   `json:"revoke_tokens"`
}

func (s *server) updateProject(r *http.Request) (int, any, error) {
	id, err := s.changeID(r, "project", manage.ActionProjectUpdate)
	if err != nil {
		return 0, nil, err
	}
	var req updateProjectRequest
	if err := s.decodeChange(r, &req, manage.ActionProjectUpdate, &id, nil); err != nil {
		return 0, nil, err
	}
	p, err := s.Manager.UpdateProject(r.Context(), s.actor(r), id, manage.ProjectPatch{
		Name: req.Name, APIKey: req.APIKey, IsActive: req.IsActive,
		RevokeTokens: req.RevokeTokens != nil && *req.RevokeTokens,
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, manage.NewProjectView(p), nil
}

func (s *server) revokeProjectTokens(r *http.Request) (int, any, error) {
	id, err := s.changeID(r, "project", manage.ActionProjectRevokeTokens)
	if err != nil {
		return 0, nil, err
	}
	result, err := s.Manager.RevokeProjectTokens(r.Context(), s.actor(r), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, manage.NewRevokeResultView(result), nil
}

type createTokenRequest struct {
	ProjectID       jsonID `json:"project_id"`
	DurationMinutes int64  `json:"duration_minutes"`
	MaxRequests     *int64 `json:"max_requests"`
}

func (s *server) createToken(r *http.Request) (int, any, error) {
	var req createTokenRequest
	if err := s.decodeChange(r, &req, manage.ActionTokenCreate, nil, nil); err != nil {
		return 0, nil, err
	}
	if req.ProjectID == 0 {
		err := &manage.Error{Code: manage.CodeInvalidRequest, Message: "project_id is required"}
		s.Manager.AuditFailure(r.Context(), s.actor(r), manage.ActionTokenCreate, nil, nil, err)
		return 0, nil, err
	}
	in := manage.TokenInput{ProjectID: int64(req.ProjectID), DurationMinutes: req.DurationMinutes}
	if req.MaxRequests != nil {
		in.MaxRequests = *req.MaxRequests
	}
	created, err := s.Manager.CreateToken(r.Context(), s.actor(r), in)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, manage.NewCreatedTokenView(created), nil
}

func (s *server) listTokens(r *http.Request) (int, any, error) {
	q, err := parseQuery(r)
	if err != nil {
		return 0, nil, err
	}
	projectID, err := queryID(q, "project_id")
	if err != nil {
		return 0, nil, err
	}
	tokens, err := s.Manager.Tokens(r.Context(), projectID)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, manage.Map(tokens, manage.NewTokenView), nil
}

func (s *server) getToken(r *http.Request) (int, any, error) {
	id, err := pathID(r, "token")
	if err != nil {
		return 0, nil, err
	}
	t, err := s.Manager.Token(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, manage.NewTokenView(t), nil
}

type updateTokenRequest struct {
	IsActive    *bool       `json:"is_active"`
	MaxRequests nullableInt `json:"max_requests"`
}

func (s *server) updateToken(r *http.Request) (int, any, error) {
	id, err := s.changeID(r, "token", manage.ActionTokenUpdate)
	if err != nil {
		return 0, nil, err
	}
	var req updateTokenRequest
	if err := s.decodeChange(r, &req, manage.ActionTokenUpdate, nil, &id); err != nil {
		return 0, nil, err
	}
	t, err := s.Manager.UpdateToken(r.Context(), s.actor(r), id, manage.TokenPatch{
		IsActive: req.IsActive, SetMaxRequests: req.MaxRequests.Set, MaxRequests: req.MaxRequests.Value,
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, manage.NewTokenView(t), nil
}

func (s *server) deleteToken(r *http.Request) (int, any, error) {
	id, err := s.changeID(r, "token", manage.ActionTokenRevoke)
	if err != nil {
		return 0, nil, err
	}
	if err := s.Manager.RevokeToken(r.Context(), s.actor(r), id); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *server) listAudit(r *http.Request) (int, any, error) {
	q, err := parseQuery(r)
	if err != nil {
		return 0, nil, err
	}
	projectID, err := queryID(q, "project_id")
	if err != nil {
		return 0, nil, err
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 {
			return 0, nil, invalidf("limit=%q: want an integer from 1 to %d", v, service.MaxPageLimit)
		}
	}
	events, err := s.Manager.AuditEvents(r.Context(), projectID, limit)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, manage.Map(events, manage.NewAuditEventView), nil
}

func (s *server) usage(r *http.Request) (int, any, error) {
	q, err := parseQuery(r)
	if err != nil {
		return 0, nil, err
	}
	var filter service.UsageFilter
	if filter.ProjectID, err = queryID(q, "project_id"); err != nil {
		return 0, nil, err
	}
	if filter.TokenID, err = queryID(q, "token_id"); err != nil {
		return 0, nil, err
	}
	if filter.Since, err = queryTime(q, "since"); err != nil {
		return 0, nil, err
	}
	if filter.Until, err = queryTime(q, "until"); err != nil {
		return 0, nil, err
	}
	totals, err := s.Manager.Usage(r.Context(), filter)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, manage.NewUsageView(totals), nil
}

// decodeChange decodes a change's body; a body that cannot be decoded is a
// failed change and audited as such.
func (s *server) decodeChange(r *http.Request, v any, action string, projectID, tokenID *int64) error {
	err := decodeJSON(r, v)
	if err != nil {
		s.Manager.AuditFailure(r.Context(), s.actor(r), action, projectID, tokenID, err)
	}
	return err
}

// changeID parses the path id of a change, auditing a bad one.
func (s *server) changeID(r *http.Request, object, action string) (int64, error) {
	id, err := pathID(r, object)
	if err != nil {
		s.Manager.AuditFailure(r.Context(), s.actor(r), action, nil, nil, err)
	}
	return id, err
}

func pathID(r *http.Request, object string) (int64, error) {
	id, err := manage.ParseID(r.PathValue("id"))
	if err != nil {
		return 0, invalidf("%s id: %v", object, err)
	}
	return id, nil
}

func parseQuery(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, invalidf("malformed query string")
	}
	return q, nil
}

// queryID reads an optional id parameter.
func queryID(q url.Values, name string) (*int64, error) {
	v := q.Get(name)
	if v == "" {
		return nil, nil
	}
	id, err := manage.ParseID(v)
	if err != nil {
		return nil, invalidf("%s: %v", name, err)
	}
	return &id, nil
}

// queryTime reads an optional RFC 3339 time parameter.
func queryTime(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, invalidf("%s=%q: want an RFC 3339 time such as 2025-01-31T00:00:00Z", name, v)
	}
	return t.UTC(), nil
}

func invalidf(format string, args ...any) *manage.Error {
	return &manage.Error{Code: manage.CodeInvalidRequest, Message: fmt.Sprintf(format, args...)}
}
