package service

import (
	"encoding/json"
	"time"
)

// Page limits for every listing.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// PageLimit turns a requested page size into the one to use: 0 or less
// means the default, and no page is larger than MaxPageLimit.
func PageLimit(limit int) int64 {
	switch {
	case limit <= 0:
		return DefaultPageLimit
	case limit > MaxPageLimit:
		return MaxPageLimit
	}
	return int64(limit)
}

type ProjectCreateParams struct {
	Name             string
	APIKeyCiphertext []byte
	APIKeyHint       string
}

// ProjectListParams pages projects in ascending id order.
type ProjectListParams struct {
	AfterID int64 // 0: from the start
	Limit   int
}

// ProjectUpdateParams changes only the fields that are set.
type ProjectUpdateParams struct {
	ID               int64
	Name             *string
	APIKeyCiphertext []byte // nil: unchanged
	APIKeyHint       *string
	IsActive         *bool
}

type TokenCreateParams struct {
	ProjectID   int64
	SecretHash  []byte
	TokenPrefix string
	ExpiresAt   time.Time
	MaxRequests *int64 // nil: unlimited
}

// TokenListParams pages tokens in ascending id order.
type TokenListParams struct {
	ProjectID *int64 // nil: all projects
	AfterID   int64
	Limit     int
}

// TokenUpdateParams changes only the fields that are set.
type TokenUpdateParams struct {
	ID       int64
	IsActive *bool
	// SetMaxRequests says MaxRequests is to be written; MaxRequests nil then means unlimited.
	SetMaxRequests bool
	MaxRequests    *int64
}

type UsageEventCreateParams struct {
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
	// EventID is 16 random bytes naming the event, so a batch written again
	// (a retry after a lost reply) stores it once; nil opts out.
	EventID []byte
}

// UsageFilter selects usage events; zero values select everything.
type UsageFilter struct {
	ProjectID *int64
	TokenID   *int64
	Since     time.Time // inclusive; zero: the beginning
	Until     time.Time // exclusive; zero: no end
}

// UsageListParams pages usage events newest first.
type UsageListParams struct {
	ProjectID *int64
	TokenID   *int64
	BeforeID  int64 // 0: from the newest
	Limit     int
}

type AuditInsertParams struct {
	Actor     string
	Action    string
	ProjectID *int64
	TokenID   *int64
	Result    string
	Details   json.RawMessage // nil: {}
}

// AuditListParams pages audit events newest first.
type AuditListParams struct {
	ProjectID *int64
	BeforeID  int64 // 0: from the newest
	Limit     int
}
