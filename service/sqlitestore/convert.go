package sqlitestore

import (
	"encoding/json"
	"time"

	"github.com/llmproxy/llmproxy/gen/sqlitedb"
	"github.com/llmproxy/llmproxy/service"
)

// SQLite stores times as UTC unix milliseconds.
func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func fromMillisPtr(ms *int64) *time.Time {
	if ms == nil {
		return nil
	}
	t := fromMillis(*ms)
	return &t
}

func projectFromRow(r *sqlitedb.Project) *service.Project {
	return &service.Project{
		ID:               r.ID,
		Name:             r.Name,
		APIKeyCiphertext: r.ApiKeyCiphertext,
		APIKeyHint:       r.ApiKeyHint,
		IsActive:         r.IsActive,
		CreatedAt:        fromMillis(r.CreatedAt),
		UpdatedAt:        fromMillis(r.UpdatedAt),
	}
}

func tokenFromRow(r *sqlitedb.Token) *service.Token {
	return &service.Token{
		ID:               r.ID,
		ProjectID:        r.ProjectID,
		SecretHash:       r.SecretHash,
		TokenPrefix:      r.TokenPrefix,
		ExpiresAt:        fromMillis(r.ExpiresAt),
		MaxRequests:      r.MaxRequests,
		RequestCount:     r.RequestCount,
		IsActive:         r.IsActive,
		CreatedAt:        fromMillis(r.CreatedAt),
		UpdatedAt:        fromMillis(r.UpdatedAt),
		LastUsedAt:       fromMillisPtr(r.LastUsedAt),
		RequestsReserved: r.RequestsReserved,
		LeaseUntil:       fromMillisPtr(r.LeaseUntil),
	}
}

// tokenAdmitByHashFromRow splits the row into the token and its project,
// which the admission found active.
func tokenAdmitByHashFromRow(r *sqlitedb.TokenAdmitByHashRow) (*service.Token, *service.Project) {
	token := tokenFromRow(&sqlitedb.Token{
		ID:               r.ID,
		ProjectID:        r.ProjectID,
		SecretHash:       r.SecretHash,
		TokenPrefix:      r.TokenPrefix,
		ExpiresAt:        r.ExpiresAt,
		MaxRequests:      r.MaxRequests,
		RequestCount:     r.RequestCount,
		IsActive:         r.IsActive,
		CreatedAt:        r.CreatedAt,
		UpdatedAt:        r.UpdatedAt,
		LastUsedAt:       r.LastUsedAt,
		RequestsReserved: r.RequestsReserved,
		LeaseUntil:       r.LeaseUntil,
	})
	project := projectFromRow(&sqlitedb.Project{
		ID:               r.ProjectID,
		Name:             r.Name,
		ApiKeyCiphertext: r.ApiKeyCiphertext,
		ApiKeyHint:       r.ApiKeyHint,
		IsActive:         true,
		CreatedAt:        r.CreatedAt_2,
		UpdatedAt:        r.UpdatedAt_2,
	})
	return token, project
}

func usageEventFromRow(r *sqlitedb.UsageEvent) *service.UsageEvent {
	return &service.UsageEvent{
		ID:               r.ID,
		TokenID:          r.TokenID,
		ProjectID:        r.ProjectID,
		Method:           r.Method,
		Path:             r.Path,
		Model:            r.Model,
		Status:           r.Status,
		PromptTokens:     r.PromptTokens,
		CompletionTokens: r.CompletionTokens,
		TotalTokens:      r.TotalTokens,
		LatencyMS:        r.LatencyMs,
		CreatedAt:        fromMillis(r.CreatedAt),
		EventID:          r.EventID,
	}
}

func usageDailyFromRow(r *sqlitedb.UsageDaily) *service.UsageDaily {
	return &service.UsageDaily{
		Day:              fromMillis(r.Day),
		ProjectID:        r.ProjectID,
		TokenID:          r.TokenID,
		Model:            r.Model,
		Requests:         r.Requests,
		Errors:           r.Errors,
		PromptTokens:     r.PromptTokens,
		CompletionTokens: r.CompletionTokens,
		TotalTokens:      r.TotalTokens,
	}
}

func auditEventFromRow(r *sqlitedb.AuditEvent) *service.AuditEvent {
	return &service.AuditEvent{
		ID:        r.ID,
		Actor:     r.Actor,
		Action:    r.Action,
		ProjectID: r.ProjectID,
		TokenID:   r.TokenID,
		Result:    r.Result,
		Details:   json.RawMessage(r.Details),
		CreatedAt: fromMillis(r.CreatedAt),
	}
}
