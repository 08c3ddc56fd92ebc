// Package service holds llmproxy's domain types, the Store interface every
// storage backend implements, the sentinel errors they return, and the rules
// shared by all backends. It imports no database driver.
package service

import (
	"encoding/json"
	"time"
)

// Project is an upstream account: its API key is stored encrypted.
type Project struct {
	ID               int64
	Name             string
	APIKeyCiphertext []byte
	APIKeyHint       string
	IsActive         bool
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// Token is a client credential for one project. Only a hash of the secret is stored.
type Token struct {
	ID           int64
	ProjectID    int64
	SecretHash   []byte
	TokenPrefix  string
	ExpiresAt    time.Time
	MaxRequests  *int64 // nil: unlimited
	RequestCount int64
	IsActive     bool
	CreatedAt    time.Time
	UpdatedAt    time.Time
	LastUsedAt   *time.Time
	// RequestsReserved is the part of RequestCount that proxies reserved
	// for admission leases and have not yet used or given back.
	RequestsReserved int64
	// LeaseUntil is the latest end of an admission lease granted for the
	// token, by the database's clock; nil: none yet.
	LeaseUntil *time.Time
}

// UsageEvent is one forwarded request.
type UsageEvent struct {
	ID               int64
	TokenID          int64
	ProjectID        int64
	Method           string
	Path             string
	Model            string
	Status           int64
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
	LatencyMS        int64
	CreatedAt        time.Time
	EventID          []byte // the UsageEventCreateParams.EventID it was written with; nil for older rows
}

// AuditEvent records one management action and its result.
type AuditEvent struct {
	ID        int64
	Actor     string
	Action    string
	ProjectID *int64
	TokenID   *int64
	Result    string
	Details   json.RawMessage
	CreatedAt time.Time
}

// UsageCounts are the sums over a set of usage events.
type UsageCounts struct {
	Requests         int64
	Errors           int64 // upstream status >= 400
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
}

// ModelUsage is UsageCounts for one model.
type ModelUsage struct {
	Model string
	UsageCounts
}

// UsageTotals are usage sums over a filter, overall and per model (sorted by model).
type UsageTotals struct {
	UsageCounts
	ByModel []ModelUsage
}

// DayUsage is UsageTotals over one UTC day.
type DayUsage struct {
	Day time.Time // the UTC midnight starting the day
	UsageTotals
}

// RevokeResult reports a bulk revocation.
type RevokeResult struct {
	RevokedCount        int64
	AlreadyRevokedCount int64
}

// UsageDaily is the usage of one token with one model on one UTC day, summed
// from the raw usage events that pruning rolled up (see Store.UsagePrune).
type UsageDaily struct {
	Day              time.Time // the UTC midnight starting the day
	ProjectID        int64
	TokenID          int64
	Model            string
	Requests         int64
	Errors           int64 // upstream status >= 400
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
}

// Key returns the row's primary key.
func (d *UsageDaily) Key() UsageDailyKey {
	return UsageDailyKey{Day: d.Day, ProjectID: d.ProjectID, TokenID: d.TokenID, Model: d.Model}
}

// Session is a browser signed in to the dashboard. Only a keyed hash of
// the secret in its cookie is stored.
type Session struct {
	SecretHash []byte
	CSRFToken  string // the form token bound to the session
	ExpiresAt  time.Time
	CreatedAt  time.Time
}
