package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// precision is the coarsest time resolution of any backend: SQLite stores
// unix milliseconds (Postgres microseconds).
const precision = time.Millisecond

func requireErrorIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want %v", what, err, target)
	}
}

// assertSameInstant checks that got is want within the engine's precision
// and is expressed in UTC.
func assertSameInstant(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if got.Location() != time.UTC {
		t.Errorf("%s = %v, want it in UTC", what, got)
	}
	if got.Sub(want).Abs() >= precision {
		t.Errorf("%s = %v, want %v (within %v)", what, got, want.UTC(), precision)
	}
}

// assertRecent is a sanity check that a database-set time is about now and in UTC.
func assertRecent(t *testing.T, what string, got time.Time) {
	t.Helper()
	if got.Location() != time.UTC {
		t.Errorf("%s = %v, want it in UTC", what, got)
	}
	if time.Since(got).Abs() > time.Minute {
		t.Errorf("%s = %v, want about now (%v)", what, got, time.Now().UTC())
	}
}

func assertProjectEqual(t *testing.T, got, want *service.Project) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || !bytes.Equal(got.APIKeyCiphertext, want.APIKeyCiphertext) ||
		got.APIKeyHint != want.APIKeyHint || got.IsActive != want.IsActive {
		t.Errorf("project = %+v, want %+v", got, want)
	}
	assertSameInstant(t, "project CreatedAt", got.CreatedAt, want.CreatedAt)
	assertSameInstant(t, "project UpdatedAt", got.UpdatedAt, want.UpdatedAt)
}

// assertProjectUpdated checks that got is before with change applied and an
// UpdatedAt that did not move back.
func assertProjectUpdated(t *testing.T, got, before *service.Project, change func(*service.Project)) {
	t.Helper()
	if got.UpdatedAt.Before(before.UpdatedAt) {
		t.Errorf("UpdatedAt moved back from %v to %v", before.UpdatedAt, got.UpdatedAt)
	}
	want := *before
	change(&want)
	want.UpdatedAt = got.UpdatedAt
	assertProjectEqual(t, got, &want)
}

func assertTokenEqual(t *testing.T, got, want *service.Token) {
	t.Helper()
	if got.ID != want.ID || got.ProjectID != want.ProjectID || !bytes.Equal(got.SecretHash, want.SecretHash) ||
		got.TokenPrefix != want.TokenPrefix || got.RequestCount != want.RequestCount || got.IsActive != want.IsActive ||
		got.RequestsReserved != want.RequestsReserved {
		t.Errorf("token = %+v, want %+v", got, want)
	}
	if !equalPtr(got.MaxRequests, want.MaxRequests) {
		t.Errorf("token MaxRequests = %s, want %s", show(got.MaxRequests), show(want.MaxRequests))
	}
	assertSameInstant(t, "token ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	assertSameInstant(t, "token CreatedAt", got.CreatedAt, want.CreatedAt)
	assertSameInstant(t, "token UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	assertSameInstantPtr(t, "token LastUsedAt", got.LastUsedAt, want.LastUsedAt)
	assertSameInstantPtr(t, "token LeaseUntil", got.LeaseUntil, want.LeaseUntil)
}

func assertSameInstantPtr(t *testing.T, what string, got, want *time.Time) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s = %s, want %s", what, show(got), show(want))
	default:
		assertSameInstant(t, what, *got, *want)
	}
}

// assertTokenUpdated is assertProjectUpdated for tokens.
func assertTokenUpdated(t *testing.T, got, before *service.Token, change func(*service.Token)) {
	t.Helper()
	if got.UpdatedAt.Before(before.UpdatedAt) {
		t.Errorf("UpdatedAt moved back from %v to %v", before.UpdatedAt, got.UpdatedAt)
	}
	want := *before
	change(&want)
	want.UpdatedAt = got.UpdatedAt
	assertTokenEqual(t, got, &want)
}

// assertRequestCount reads the token back, so it also shows a refused
// admission counted nothing.
func assertRequestCount(t *testing.T, s service.Store, id, want int64) {
	t.Helper()
	if got := getToken(t, s, id).RequestCount; got != want {
		t.Errorf("RequestCount = %d, want %d", got, want)
	}
}

func assertUsageEvent(t *testing.T, got *service.UsageEvent, want *service.UsageEventCreateParams) {
	t.Helper()
	if got.TokenID != want.TokenID || got.ProjectID != want.ProjectID || got.Method != want.Method ||
		got.Path != want.Path || got.Model != want.Model || got.Status != want.Status ||
		got.PromptTokens != want.PromptTokens || got.CompletionTokens != want.CompletionTokens ||
		got.TotalTokens != want.TotalTokens || got.LatencyMS != want.LatencyMS ||
		!bytes.Equal(got.EventID, want.EventID) || (got.EventID == nil) != (want.EventID == nil) {
		t.Errorf("usage event = %+v, want %+v", got, want)
	}
	assertSameInstant(t, "usage CreatedAt", got.CreatedAt, want.CreatedAt)
}

// assertJSONEqual compares JSON by value: jsonb reorders keys and respaces.
func assertJSONEqual(t *testing.T, what string, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("%s = %q, not JSON: %v", what, got, err)
		return
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expectation %q: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s = %s, want %s", what, got, want)
	}
}

func assertEqualSlices[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// pageThrough reads pages until an empty one, passing the last id of each
// page as the next cursor; it returns the rows and every page's size.
func pageThrough[T any](t *testing.T, list func(cursor int64) ([]*T, error), id func(*T) int64) (rows []*T, sizes []int) {
	t.Helper()
	var cursor int64
	for range 1000 {
		page, err := list(cursor)
		if err != nil {
			t.Fatalf("listing after cursor %d: %v", cursor, err)
		}
		sizes = append(sizes, len(page))
		if len(page) == 0 {
			return rows, sizes
		}
		rows = append(rows, page...)
		cursor = id(page[len(page)-1])
	}
	t.Fatalf("paging did not end after 1000 pages (sizes %v)", sizes[:10])
	return nil, nil
}

func ids[T any](rows []*T, id func(*T) int64) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		out[i] = id(r)
	}
	return out
}

func projectID(p *service.Project) int64  { return p.ID }
func tokenID(tok *service.Token) int64    { return tok.ID }
func usageID(e *service.UsageEvent) int64 { return e.ID }
func auditID(e *service.AuditEvent) int64 { return e.ID }

func equalPtr[T comparable](a, b *T) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

func show[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}
