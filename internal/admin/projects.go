package admin

import (
	"fmt"
	"net/http"

	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/service"
)

// formState is a submitted form's values and error, for showing it again.
type formState struct {
	Values map[string]string
	Error  string
}

func (f formState) Get(name string) string { return f.Values[name] }

type projectsView struct {
	Projects []*service.Project
	Create   formState
}

func (h *handler) projectsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	h.showProjects(w, r, sess, http.StatusOK, formState{})
}

func (h *handler) showProjects(w http.ResponseWriter, r *http.Request, sess *session, status int, create formState) {
	projects, err := h.manager.Projects(r.Context())
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	h.render(w, r, sess, status, "projects", "Projects", projectsView{Projects: projects, Create: create})
}

func (h *handler) createProject(w http.ResponseWriter, r *http.Request, sess *session) {
	name, key := r.PostForm.Get("name"), r.PostForm.Get("api_key")
	p, err := h.manager.CreateProject(r.Context(), Actor, manage.ProjectInput{Name: name, APIKey: key})
	if err != nil {
		status, message, ok := userError(err)
		if !ok {
			h.fail(w, r, sess, err)
			return
		}
		// The key is not echoed back: the page would hold it in its source.
		h.showProjects(w, r, sess, status, formState{Values: map[string]string{"name": name}, Error: message})
		return
	}
	h.redirectWith(w, r, projectPath(p.ID), flash{"success", fmt.Sprintf("Project %q created.", p.Name)})
}

// projectView is one project's page; the forms that failed carry their error.
type projectView struct {
	Project  *service.Project
	Rows     []tokenRow
	Edit     formState
	Revoke   formState
	ReturnTo string
}

func (h *handler) projectPage(w http.ResponseWriter, r *http.Request, sess *session) {
	id, ok := h.pathID(w, r, sess)
	if !ok {
		return
	}
	h.showProject(w, r, sess, http.StatusOK, id, projectView{})
}

func (h *handler) showProject(w http.ResponseWriter, r *http.Request, sess *session, status int, id int64, v projectView) {
	p, err := h.manager.Project(r.Context(), id)
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	tokens, err := h.manager.Tokens(r.Context(), &id)
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	v.Project = p
	v.Rows = h.tokenRows(tokens, map[int64]string{p.ID: p.Name})
	v.ReturnTo = projectPath(id)
	if v.Edit.Values == nil {
		v.Edit.Values = map[string]string{"name": p.Name}
	}
	h.render(w, r, sess, status, "project", p.Name, v)
}

func (h *handler) updateProject(w http.ResponseWriter, r *http.Request, sess *session) {
	id, ok := h.pathID(w, r, sess)
	if !ok {
		return
	}
	current, err := h.manager.Project(r.Context(), id)
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	name, key := r.PostForm.Get("name"), r.PostForm.Get("api_key")
	var patch manage.ProjectPatch
	if name != current.Name {
		patch.Name = &name
	}
	if key != "" {
		patch.APIKey = &key
	}
	edit := formState{Values: map[string]string{"name": name}}
	if patch.Name == nil && patch.APIKey == nil {
		edit.Error = "Nothing changed: edit the name or enter a new API key."
		h.auditInvalid(r, manage.ActionProjectUpdate, &id, edit.Error)
		h.showProject(w, r, sess, http.StatusBadRequest, id, projectView{Edit: edit})
		return
	}
	p, err := h.manager.UpdateProject(r.Context(), Actor, id, patch)
	if err != nil {
		status, message, ok := userError(err)
		if !ok {
			h.fail(w, r, sess, err)
			return
		}
		edit.Error = message
		h.showProject(w, r, sess, status, id, projectView{Edit: edit})
		return
	}
	h.redirectWith(w, r, projectPath(id), flash{"success", fmt.Sprintf("Project %q saved.", p.Name)})
}

func (h *handler) setProjectActive(w http.ResponseWriter, r *http.Request, sess *session) {
	id, ok := h.pathID(w, r, sess)
	if !ok {
		return
	}
	var active bool
	switch r.PostForm.Get("active") {
	case "true":
		active = true
	case "false":
	default:
		message := `The form must set "active" to true or false.`
		h.auditInvalid(r, manage.ActionProjectUpdate, &id, message)
		h.renderError(w, r, sess, http.StatusBadRequest, message)
		return
	}
	p, err := h.manager.UpdateProject(r.Context(), Actor, id, manage.ProjectPatch{IsActive: &active})
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	message := fmt.Sprintf("Project %q deactivated: its tokens are refused until it is activated again.", p.Name)
	if active {
		message = fmt.Sprintf("Project %q activated.", p.Name)
	}
	h.redirectWith(w, r, projectPath(id), flash{"success", message})
}

func (h *handler) revokeProjectTokens(w http.ResponseWriter, r *http.Request, sess *session) {
	id, ok := h.pathID(w, r, sess)
	if !ok {
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		revoke := formState{Error: "Tick the box to confirm that every token of this project is to be revoked."}
		h.showProject(w, r, sess, http.StatusBadRequest, id, projectView{Revoke: revoke})
		return
	}
	result, err := h.manager.RevokeProjectTokens(r.Context(), Actor, id)
	if err != nil {
		h.fail(w, r, sess, err)
		return
	}
	h.redirectWith(w, r, projectPath(id), flash{"success", fmt.Sprintf(
		"Revoked %d tokens (%d were revoked already).", result.RevokedCount, result.AlreadyRevokedCount)})
}

// pathID parses the {id} of the path; a malformed one is a page that does not exist.
func (h *handler) pathID(w http.ResponseWriter, r *http.Request, sess *session) (int64, bool) {
	id, err := manage.ParseID(r.PathValue("id"))
	if err != nil {
		h.notFound(w, r, sess)
		return 0, false
	}
	return id, true
}

func projectPath(id int64) string { return Prefix + "projects/" + manage.FormatID(id) }

// auditInvalid records a change refused for bad form input before it
// reached the Manager, as the API records a body it could not decode.
func (h *handler) auditInvalid(r *http.Request, action string, projectID *int64, message string) {
	h.manager.AuditFailure(r.Context(), Actor, action, projectID, nil, &manage.Error{Code: manage.CodeInvalidRequest, Message: message})
}
