package manage

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// The JSON shapes of the management API, which the CLI prints too. Ids are
// strings and times RFC 3339 in UTC.

type ProjectView struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	IsActive   bool      `json:"is_active"`
	APIKeyHint string    `json:"api_key_hint"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

func NewProjectView(p *service.Project) ProjectView {
	return ProjectView{
		ID: FormatID(p.ID), Name: p.Name, IsActive: p.IsActive, APIKeyHint: p.APIKeyHint,
		CreatedAt: p.CreatedAt.UTC(), UpdatedAt: p.UpdatedAt.UTC(),
	}
}

// TokenView is a token; Token, the secret, is set only when it was just created.
type TokenView struct {
	ID           string     `json:"id"`
	Token        string     `json:"token,omitempty"`
	ProjectID    string     `json:"project_id"`
	TokenPrefix  string     `json:"token_prefix"`
	ExpiresAt    time.Time  `json:"expires_at"`
	MaxRequests  *int64     `json:"max_requests"` // null: unlimited
	RequestCount int64      `json:"request_count"`
	IsActive     bool       `json:"is_active"`
	CreatedAt    time.Time  `json:"created_at"`
	LastUsedAt   *time.Time `json:"last_used_at"`
}

func NewTokenView(t *service.Token) TokenView {
	v := TokenView{
		ID: FormatID(t.ID), ProjectID: FormatID(t.ProjectID), TokenPrefix: t.TokenPrefix,
		ExpiresAt: t.ExpiresAt.UTC(), MaxRequests: t.MaxRequests, RequestCount: t.RequestCount,
		IsActive: t.IsActive, CreatedAt: t.CreatedAt.UTC(),
	}
	if t.LastUsedAt != nil {
		at := t.LastUsedAt.UTC()
		v.LastUsedAt = &at
	}
	return v
}

// NewCreatedTokenView is the only view that carries the secret.
func NewCreatedTokenView(t *CreatedToken) TokenView {
	v := NewTokenView(t.Token)
	v.Token = t.Secret
	return v
}

type AuditEventView struct {
	ID        string          `json:"id"`
	Actor     string          `json:"actor"`
	Action    string          `json:"action"`
	ProjectID *string         `json:"project_id"`
	TokenID   *string         `json:"token_id"`
	Result    string          `json:"result"`
	Details   json.RawMessage `json:"details"`
	CreatedAt time.Time       `json:"created_at"`
}

func NewAuditEventView(e *service.AuditEvent) AuditEventView {
	details := e.Details
	if len(details) == 0 {
		details = json.RawMessage("{}")
	}
	return AuditEventView{
		ID: FormatID(e.ID), Actor: e.Actor, Action: e.Action,
		ProjectID: optionalID(e.ProjectID), TokenID: optionalID(e.TokenID),
		Result: e.Result, Details: details, CreatedAt: e.CreatedAt.UTC(),
	}
}

type UsageCountsView struct {
	Requests         int64 `json:"requests"`
	Errors           int64 `json:"errors"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

type ModelUsageView struct {
	Model string `json:"model"`
	UsageCountsView
}

type UsageView struct {
	UsageCountsView
	ByModel []ModelUsageView `json:"by_model"`
}

func NewUsageView(u *service.UsageTotals) UsageView {
	v := UsageView{UsageCountsView: UsageCountsView(u.UsageCounts), ByModel: make([]ModelUsageView, 0, len(u.ByModel))}
	for _, m := range u.ByModel {
		v.ByModel = append(v.ByModel, ModelUsageView{Model: m.Model, UsageCountsView: UsageCountsView(m.UsageCounts)})
	}
	return v
}

type RevokeResultView struct {
	RevokedCount        int64 `json:"revoked_count"`
	AlreadyRevokedCount int64 `json:"already_revoked_count"`
}

func NewRevokeResultView(r *service.RevokeResult) RevokeResultView {
	return RevokeResultView(*r)
}

// Map applies a view constructor to a slice, giving [] rather than null for none.
func Map[T, V any](items []T, view func(T) V) []V {
	out := make([]V, 0, len(items))
	for _, item := range items {
		out = append(out, view(item))
	}
	return out
}

// FormatID is how ids appear in the API.
func FormatID(id int64) string { return strconv.FormatInt(id, 10) }

func optionalID(id *int64) *string {
	if id == nil {
		return nil
	}
	s := FormatID(*id)
	return &s
}

// ParseID accepts an id exactly as FormatID writes it: a positive decimal
// without sign, leading zeros or spaces.
func ParseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || FormatID(id) != s {
		return 0, fmt.Errorf("%q is not a valid id (a positive integer)", s)
	}
	return id, nil
}
