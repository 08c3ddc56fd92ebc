package service

import (
	"crypto/rand"
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

// RestrictsAdmission reports whether the change may refuse requests a
// proxy admits on an admission lease: deactivation, or another upstream key.
func (p *ProjectUpdateParams) RestrictsAdmission() bool {
	return p.IsActive != nil && !*p.IsActive || p.APIKeyCiphertext != nil
}

type TokenCreateParams struct {
	ProjectID   int64
	SecretHash  []byte
	TokenPrefix string
	ExpiresAt   time.Time
	MaxRequests *int64 // nil: unlimited
}

// TokenAdmitByHashParams admit N ≥ 0 requests on the token with this
// secret hash and reserve Reserve ≥ 0 more (N + Reserve ≥ 1), which the
// caller may admit without asking again for Lease (0 ≤ Lease ≤
// MaxAdmissionLease; 0: none) from before the call.
type TokenAdmitByHashParams struct {
	SecretHash []byte
	N          int64
	Reserve    int64
	Lease      time.Duration
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

// RestrictsAdmission reports whether the change may refuse requests a
// proxy admits on an admission lease: deactivation, or a limit.
func (p *TokenUpdateParams) RestrictsAdmission() bool {
	return p.IsActive != nil && !*p.IsActive || p.SetMaxRequests && p.MaxRequests != nil
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
	// EventID names the event (NewEventID), so a batch written again (a
	// retry after a lost reply) stores it once; nil opts out.
	EventID []byte
}

// NewEventID returns a UUIDv7 (RFC 9562) for an event created at t: 48 bits
// of Unix milliseconds, then 74 random bits. Being ordered by time, new IDs
// land at the end of the unique index on event_id, so a batch of inserts
// touches a few index pages instead of one per row.
func NewEventID(t time.Time) []byte {
	id := make([]byte, 16)
	rand.Read(id[6:]) // never fails: it crashes the program instead
	ms := uint64(t.UnixMilli())
	id[0], id[1], id[2] = byte(ms>>40), byte(ms>>32), byte(ms>>24)
	id[3], id[4], id[5] = byte(ms>>16), byte(ms>>8), byte(ms)
	id[6] = 0x70 | id[6]&0x0f // version 7
	id[8] = 0x80 | id[8]&0x3f // RFC 9562 variant
	return id
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

type SessionCreateParams struct {
	SecretHash []byte
	CSRFToken  string
	ExpiresAt  time.Time
}
