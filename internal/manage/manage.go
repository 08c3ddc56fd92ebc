// Package manage holds the management operations shared by the HTTP API and
// the CLI: it validates input, encrypts upstream keys, makes token secrets,
// and writes an audit event for every change, successful or not.
package manage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/service"
)

// Limits on input.
const (
	MaxNameLength      = 200  // characters
	MaxAPIKeyLength    = 4096 // bytes
	MaxDurationMinutes = 525600
)

// Audit actions.
const (
	ActionProjectCreate       = "project.create"
	ActionProjectUpdate       = "project.update"
	ActionProjectRevokeTokens = "project.revoke_tokens"
	ActionTokenCreate         = "token.create"
	ActionTokenUpdate         = "token.update"
	ActionTokenRevoke         = "token.revoke"
)

// ResultSuccess is the audit result of a change that was made; a failed one
// records its error code instead.
const ResultSuccess = "success"

// failureAuditTimeout bounds the best-effort audit of a failure, which runs
// even when the request's context is done.
const failureAuditTimeout = 5 * time.Second

// Manager runs management operations against a store.
type Manager struct {
	store service.Store
	keys  *secrets.Keys
	log   *slog.Logger
	now   func() time.Time
}

// New returns a Manager; log receives failures to write an audit event (nil: discarded).
func New(store service.Store, keys *secrets.Keys, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{store: store, keys: keys, log: log, now: time.Now}
}

// ProjectInput creates a project.
type ProjectInput struct {
	Name   string
	APIKey string
}

// ProjectPatch changes the fields that are set.
type ProjectPatch struct {
	Name     *string
	APIKey   *string
	IsActive *bool
	// RevokeTokens revokes every token of the project in the same transaction.
	RevokeTokens bool
}

// TokenInput creates a token.
type TokenInput struct {
	ProjectID       int64
	DurationMinutes int64
	MaxRequests     int64 // 0: unlimited
}

// TokenPatch changes the fields that are set.
type TokenPatch struct {
	IsActive       *bool
	SetMaxRequests bool
	MaxRequests    int64 // with SetMaxRequests; 0: unlimited
}

// CreatedToken is a new token with its secret, which exists nowhere else.
type CreatedToken struct {
	*service.Token
	Secret string
}

// event is the audit event of one change, filled in as the change proceeds.
type event struct {
	actor, action      string
	projectID, tokenID *int64
	details            map[string]any
}

func newEvent(actor, action string) *event {
	return &event{actor: actor, action: action, details: map[string]any{}}
}

func (e *event) params(result string) *service.AuditInsertParams {
	details, _ := json.Marshal(e.details) // plain values (strings, numbers, bools, times) always encode
	return &service.AuditInsertParams{
		Actor: e.actor, Action: e.action, ProjectID: e.projectID, TokenID: e.tokenID,
		Result: result, Details: details,
	}
}

// change runs fn in a transaction that also writes the success audit event,
// so a change and its audit are committed together or not at all. A failure
// is audited after the rollback, best effort: it must not hide the error.
func (m *Manager) change(ctx context.Context, ev *event, fn func(tx service.Store) error) error {
	err := m.store.InTx(ctx, func(tx service.Store) error {
		if err := fn(tx); err != nil {
			return err
		}
		_, err := tx.AuditInsert(ctx, ev.params(ResultSuccess))
		return err
	})
	if err == nil {
		return nil
	}
	err = classify(err, "")
	if e, ok := errors.AsType[*Error](err); ok {
		ev.details["error"] = e.Message
	}
	m.auditFailure(ctx, ev, Code(err))
	return err
}

func (m *Manager) auditFailure(ctx context.Context, ev *event, code string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), failureAuditTimeout)
	defer cancel()
	if _, err := m.store.AuditInsert(ctx, ev.params(code)); err != nil {
		m.log.Error("cannot write audit event", "action", ev.action, "result", code, "err", err)
	}
}

// AuditFailure records a change that failed before it reached the Manager,
// such as a request whose body could not be decoded.
func (m *Manager) AuditFailure(ctx context.Context, actor, action string, projectID, tokenID *int64, err error) {
	ev := newEvent(actor, action)
	ev.projectID, ev.tokenID = projectID, tokenID
	if e, ok := errors.AsType[*Error](err); ok {
		ev.details["error"] = e.Message
	}
	m.auditFailure(ctx, ev, Code(err))
}

// CreateProject stores a project with its upstream key encrypted.
func (m *Manager) CreateProject(ctx context.Context, actor string, in ProjectInput) (*service.Project, error) {
	ev := newEvent(actor, ActionProjectCreate)
	var project *service.Project
	err := m.change(ctx, ev, func(tx service.Store) error {
		if err := validateName(in.Name); err != nil {
			return err
		}
		if err := validateAPIKey(in.APIKey); err != nil {
			return err
		}
		hint := secrets.KeyHint(in.APIKey)
		ev.details["name"], ev.details["api_key_hint"] = in.Name, hint
		var err error
		project, err = tx.ProjectCreate(ctx, &service.ProjectCreateParams{
			Name: in.Name, APIKeyCiphertext: m.keys.Encrypt(in.APIKey), APIKeyHint: hint,
		})
		if err != nil {
			return projectWriteError(err, in.Name)
		}
		ev.projectID = &project.ID
		return nil
	})
	return project, err
}

// UpdateProject changes a project's name, key or state and, if asked,
// revokes all its tokens, in one transaction.
func (m *Manager) UpdateProject(ctx context.Context, actor string, id int64, patch ProjectPatch) (*service.Project, error) {
	ev := newEvent(actor, ActionProjectUpdate)
	ev.projectID = &id
	var project *service.Project
	err := m.change(ctx, ev, func(tx service.Store) error {
		params := &service.ProjectUpdateParams{ID: id, Name: patch.Name, IsActive: patch.IsActive}
		if patch.Name == nil && patch.APIKey == nil && patch.IsActive == nil && !patch.RevokeTokens {
			return invalid("nothing to update: give name, api_key, is_active or revoke_tokens")
		}
		if patch.Name != nil {
			if err := validateName(*patch.Name); err != nil {
				return err
			}
			ev.details["name"] = *patch.Name
		}
		if patch.APIKey != nil {
			if err := validateAPIKey(*patch.APIKey); err != nil {
				return err
			}
			hint := secrets.KeyHint(*patch.APIKey)
			params.APIKeyCiphertext, params.APIKeyHint = m.keys.Encrypt(*patch.APIKey), &hint
			ev.details["api_key_hint"] = hint
		}
		if patch.IsActive != nil {
			ev.details["is_active"] = *patch.IsActive
		}
		var err error
		if patch.Name != nil || patch.APIKey != nil || patch.IsActive != nil {
			if project, err = tx.ProjectUpdate(ctx, params); err != nil {
				name := ""
				if patch.Name != nil {
					name = *patch.Name
				}
				return projectWriteError(classify(err, projectObject(id)), name)
			}
		}
		if patch.RevokeTokens {
			revoked, err := tx.TokenRevokeAllForProject(ctx, id)
			if err != nil {
				return classify(err, projectObject(id))
			}
			ev.details["revoked_count"], ev.details["already_revoked_count"] = revoked.RevokedCount, revoked.AlreadyRevokedCount
			if project == nil {
				project, err = tx.ProjectGetByID(ctx, id)
				return classify(err, projectObject(id))
			}
		}
		return nil
	})
	return project, err
}

// RevokeProjectTokens revokes every token of a project.
func (m *Manager) RevokeProjectTokens(ctx context.Context, actor string, id int64) (*service.RevokeResult, error) {
	ev := newEvent(actor, ActionProjectRevokeTokens)
	ev.projectID = &id
	var result *service.RevokeResult
	err := m.change(ctx, ev, func(tx service.Store) error {
		var err error
		if result, err = tx.TokenRevokeAllForProject(ctx, id); err != nil {
			return classify(err, projectObject(id))
		}
		ev.details["revoked_count"], ev.details["already_revoked_count"] = result.RevokedCount, result.AlreadyRevokedCount
		return nil
	})
	return result, err
}

// CreateToken issues a token for an active project. Only the secret's hash
// is stored; the secret is returned once.
func (m *Manager) CreateToken(ctx context.Context, actor string, in TokenInput) (*CreatedToken, error) {
	ev := newEvent(actor, ActionTokenCreate)
	ev.projectID = &in.ProjectID
	var created *CreatedToken
	err := m.change(ctx, ev, func(tx service.Store) error {
		if in.DurationMinutes < 1 || in.DurationMinutes > MaxDurationMinutes {
			return invalid("duration_minutes must be between 1 and %d", MaxDurationMinutes)
		}
		if in.MaxRequests < 0 {
			return invalid("max_requests must be 0 (unlimited) or more")
		}
		secret, prefix := secrets.NewToken()
		params := &service.TokenCreateParams{
			ProjectID:   in.ProjectID,
			SecretHash:  m.keys.HashToken(secret),
			TokenPrefix: prefix,
			ExpiresAt:   m.now().Add(time.Duration(in.DurationMinutes) * time.Minute).UTC(),
			MaxRequests: limit(in.MaxRequests),
		}
		ev.details["token_prefix"], ev.details["duration_minutes"], ev.details["max_requests"] = prefix, in.DurationMinutes, params.MaxRequests
		token, err := tx.TokenCreate(ctx, params)
		if err != nil {
			return classify(err, projectObject(in.ProjectID))
		}
		ev.tokenID = &token.ID
		ev.details["expires_at"] = token.ExpiresAt
		created = &CreatedToken{Token: token, Secret: secret}
		return nil
	})
	return created, err
}

// UpdateToken (re)activates or deactivates a token or changes its limit.
func (m *Manager) UpdateToken(ctx context.Context, actor string, id int64, patch TokenPatch) (*service.Token, error) {
	ev := newEvent(actor, ActionTokenUpdate)
	ev.tokenID = &id
	var token *service.Token
	err := m.change(ctx, ev, func(tx service.Store) error {
		if patch.IsActive == nil && !patch.SetMaxRequests {
			return invalid("nothing to update: give is_active or max_requests")
		}
		params := &service.TokenUpdateParams{ID: id, IsActive: patch.IsActive, SetMaxRequests: patch.SetMaxRequests}
		if patch.IsActive != nil {
			ev.details["is_active"] = *patch.IsActive
		}
		if patch.SetMaxRequests {
			if patch.MaxRequests < 0 {
				return invalid("max_requests must be 0 or null (unlimited) or more")
			}
			params.MaxRequests = limit(patch.MaxRequests)
			ev.details["max_requests"] = params.MaxRequests
		}
		var err error
		if token, err = tx.TokenUpdate(ctx, params); err != nil {
			return classify(err, tokenObject(id))
		}
		ev.projectID = &token.ProjectID
		return nil
	})
	return token, err
}

// RevokeToken deactivates a token; revoking a revoked token succeeds.
func (m *Manager) RevokeToken(ctx context.Context, actor string, id int64) error {
	ev := newEvent(actor, ActionTokenRevoke)
	ev.tokenID = &id
	return m.change(ctx, ev, func(tx service.Store) error {
		token, err := tx.TokenGetByID(ctx, id)
		if err != nil {
			return classify(err, tokenObject(id))
		}
		ev.projectID = &token.ProjectID
		ev.details["already_revoked"] = !token.IsActive
		if !token.IsActive {
			return nil
		}
		inactive := false
		_, err = tx.TokenUpdate(ctx, &service.TokenUpdateParams{ID: id, IsActive: &inactive})
		return classify(err, tokenObject(id))
	})
}

// Project returns one project.
func (m *Manager) Project(ctx context.Context, id int64) (*service.Project, error) {
	p, err := m.store.ProjectGetByID(ctx, id)
	return p, classify(err, projectObject(id))
}

// Projects returns every project in id order.
func (m *Manager) Projects(ctx context.Context) ([]*service.Project, error) {
	all, err := listAll(func(afterID int64) ([]*service.Project, error) {
		return m.store.ProjectList(ctx, &service.ProjectListParams{AfterID: afterID, Limit: service.MaxPageLimit})
	}, func(p *service.Project) int64 { return p.ID })
	return all, classify(err, "")
}

// Token returns one token.
func (m *Manager) Token(ctx context.Context, id int64) (*service.Token, error) {
	t, err := m.store.TokenGetByID(ctx, id)
	return t, classify(err, tokenObject(id))
}

// Tokens returns every token, or a project's (nil: all), in id order.
func (m *Manager) Tokens(ctx context.Context, projectID *int64) ([]*service.Token, error) {
	all, err := listAll(func(afterID int64) ([]*service.Token, error) {
		return m.store.TokenList(ctx, &service.TokenListParams{ProjectID: projectID, AfterID: afterID, Limit: service.MaxPageLimit})
	}, func(t *service.Token) int64 { return t.ID })
	return all, classify(err, "")
}

// Usage sums the usage events that filter selects.
func (m *Manager) Usage(ctx context.Context, filter service.UsageFilter) (*service.UsageTotals, error) {
	if !filter.Since.IsZero() && !filter.Until.IsZero() && !filter.Since.Before(filter.Until) {
		return nil, invalid("since must be before until")
	}
	totals, err := m.store.UsageTotals(ctx, &filter)
	return totals, classify(err, "")
}

// UsageByDay is Usage for each UTC day of filter's range that has usage, in
// one read.
func (m *Manager) UsageByDay(ctx context.Context, filter service.UsageFilter) ([]*service.DayUsage, error) {
	if !filter.Since.IsZero() && !filter.Until.IsZero() && !filter.Since.Before(filter.Until) {
		return nil, invalid("since must be before until")
	}
	days, err := m.store.UsageTotalsByDay(ctx, &filter)
	return days, classify(err, "")
}

// AuditEvents returns the newest audit events, of one project if projectID is
// set; limit 0 means service.DefaultPageLimit.
func (m *Manager) AuditEvents(ctx context.Context, projectID *int64, limit int) ([]*service.AuditEvent, error) {
	if limit < 0 || limit > service.MaxPageLimit {
		return nil, invalid("limit must be between 1 and %d", service.MaxPageLimit)
	}
	events, err := m.store.AuditList(ctx, &service.AuditListParams{ProjectID: projectID, Limit: limit})
	return events, classify(err, "")
}

// listAll reads every page of a listing ordered by id.
func listAll[T any](page func(afterID int64) ([]T, error), id func(T) int64) ([]T, error) {
	var all []T
	afterID := int64(0)
	for {
		rows, err := page(afterID)
		if err != nil {
			return nil, err
		}
		all = append(all, rows...)
		if len(rows) < service.MaxPageLimit {
			return all, nil
		}
		afterID = id(rows[len(rows)-1])
	}
}

func projectObject(id int64) string { return fmt.Sprintf("project %d", id) }
func tokenObject(id int64) string   { return fmt.Sprintf("token %d", id) }

// projectWriteError explains a taken name; other errors are classified already or unexpected.
func projectWriteError(err error, name string) error {
	if errors.Is(err, service.ErrConflict) {
		return &Error{Code: CodeConflict, Message: fmt.Sprintf("a project named %q already exists", name), Err: err}
	}
	return classify(err, "")
}

// limit turns "0 means unlimited" into the store's nil.
func limit(maxRequests int64) *int64 {
	if maxRequests == 0 {
		return nil
	}
	return &maxRequests
}

func validateName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return invalid("name is required")
	case !utf8.ValidString(name):
		return invalid("name must be UTF-8")
	case utf8.RuneCountInString(name) > MaxNameLength:
		return invalid("name must be at most %d characters", MaxNameLength)
	case strings.ContainsFunc(name, unicode.IsControl):
		return invalid("name must not contain control characters")
	}
	return nil
}

// validateAPIKey accepts what can be sent in an Authorization header:
// visible ASCII, no spaces.
func validateAPIKey(key string) error {
	if key == "" {
		return invalid("api_key is required")
	}
	if len(key) > MaxAPIKeyLength {
		return invalid("api_key must be at most %d bytes", MaxAPIKeyLength)
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return invalid("api_key must be printable ASCII without spaces")
		}
	}
	return nil
}
