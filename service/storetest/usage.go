package storetest

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// usageBase is a fixed, millisecond-exact instant all engines store as is.
var usageBase = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

var usageInsertBatchCases = []storeCase{
	{"EmptyBatchWritesNothing", func(t *testing.T, s service.Store) {
		for _, events := range [][]*service.UsageEventCreateParams{nil, {}} {
			n, err := s.UsageInsertBatch(t.Context(), events)
			if err != nil || n != 0 {
				t.Errorf("UsageInsertBatch(%d events) = %d, %v; want 0, nil", len(events), n, err)
			}
		}
		assertUsageRequests(t, s, &service.UsageFilter{}, 0)
	}},
	{"WritesEveryField", func(t *testing.T, s service.Store) {
		want := []*service.UsageEventCreateParams{
			{TokenID: 11, ProjectID: 22, Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o", Status: 200,
				PromptTokens: 100, CompletionTokens: 50, TotalTokens: 150, LatencyMS: 1234, CreatedAt: usageBase,
				EventID: eventID(1)},
			{TokenID: 12, ProjectID: 23, Method: "GET", Path: "/v1/models", Status: 502,
				CreatedAt: usageBase.Add(1500 * time.Microsecond)},
		}
		insertUsage(t, s, want...)
		got, err := s.UsageList(t.Context(), &service.UsageListParams{})
		if err != nil {
			t.Fatalf("UsageList: %v", err)
		}
		if len(got) != len(want) {
			t.Fatalf("UsageList returned %d events, want %d", len(got), len(want))
		}
		byToken := map[int64]*service.UsageEvent{}
		for _, e := range got {
			byToken[e.TokenID] = e
		}
		for _, w := range want {
			if e, ok := byToken[w.TokenID]; ok {
				assertUsageEvent(t, e, w)
			} else {
				t.Errorf("no event for token %d in %+v", w.TokenID, got)
			}
		}
	}},
	{"SameBatchTwiceIsStoredOnce", func(t *testing.T, s service.Store) {
		events := []*service.UsageEventCreateParams{identifiedEvent(1), identifiedEvent(2), identifiedEvent(3)}
		insertUsage(t, s, events...)
		n, err := s.UsageInsertBatch(t.Context(), events)
		if err != nil || n != 0 {
			t.Errorf("UsageInsertBatch(the same batch again) = %d, %v; want 0, nil", n, err)
		}
		assertStoredEventIDs(t, s, 1, 2, 3)
	}},
	{"StoresOnlyEventIDsNotStoredYet", func(t *testing.T, s service.Store) {
		insertUsage(t, s, identifiedEvent(1), identifiedEvent(2))
		n, err := s.UsageInsertBatch(t.Context(), []*service.UsageEventCreateParams{
			identifiedEvent(2), identifiedEvent(3), identifiedEvent(1), identifiedEvent(4),
		})
		if err != nil || n != 2 {
			t.Errorf("UsageInsertBatch(2 stored, 2 new) = %d, %v; want 2, nil", n, err)
		}
		assertStoredEventIDs(t, s, 1, 2, 3, 4)
	}},
	{"EventIDTwiceInOneBatchIsStoredOnce", func(t *testing.T, s service.Store) {
		n, err := s.UsageInsertBatch(t.Context(), []*service.UsageEventCreateParams{
			identifiedEvent(1), identifiedEvent(2), identifiedEvent(1),
		})
		if err != nil || n != 2 {
			t.Errorf("UsageInsertBatch(event 1 twice) = %d, %v; want 2, nil", n, err)
		}
		assertStoredEventIDs(t, s, 1, 2)
	}},
	{"EventsWithoutEventIDAreAlwaysInserted", func(t *testing.T, s service.Store) {
		events := []*service.UsageEventCreateParams{usageEvent(1, 1, usageBase), usageEvent(1, 1, usageBase)}
		insertUsage(t, s, events...)
		insertUsage(t, s, events...)
		assertUsageRequests(t, s, &service.UsageFilter{}, 4)
	}},
	{"KeepsCreatedAtInstantFromAnyZone", func(t *testing.T, s service.Store) {
		at := time.Date(2030, 1, 2, 8, 4, 5, 987_654_321, time.FixedZone("x", 5*3600))
		insertUsage(t, s, usageEvent(1, 1, at))
		got, err := s.UsageList(t.Context(), &service.UsageListParams{})
		if err != nil || len(got) != 1 {
			t.Fatalf("UsageList = %d events, %v; want 1", len(got), err)
		}
		assertSameInstant(t, "CreatedAt", got[0].CreatedAt, at)
	}},
	{"WritesTenThousandRowsInOneCall", func(t *testing.T, s service.Store) {
		const n = 10_000
		events := make([]*service.UsageEventCreateParams, n)
		for i := range events {
			events[i] = usageEvent(int64(1+i%7), int64(1+i%3), usageBase.Add(time.Duration(i)*time.Millisecond))
		}
		insertUsage(t, s, events...)
		assertUsageRequests(t, s, &service.UsageFilter{}, n)
		got, _ := pageThrough(t, func(before int64) ([]*service.UsageEvent, error) {
			return s.UsageList(t.Context(), &service.UsageListParams{BeforeID: before, Limit: service.MaxPageLimit})
		}, usageID)
		if len(got) != n {
			t.Errorf("UsageList pages hold %d events, want %d", len(got), n)
		}
	}},
}

var usageTotalsCases = []storeCase{
	{"EmptyIsZero", func(t *testing.T, s service.Store) {
		got, err := s.UsageTotals(t.Context(), &service.UsageFilter{})
		if err != nil {
			t.Fatalf("UsageTotals: %v", err)
		}
		if got.UsageCounts != (service.UsageCounts{}) || len(got.ByModel) != 0 {
			t.Errorf("UsageTotals on no events = %+v, want zero", got)
		}
	}},
	{"SumsOverallAndByModel", func(t *testing.T, s service.Store) {
		event := func(model string, status, prompt, completion int64) *service.UsageEventCreateParams {
			e := usageEvent(1, 1, usageBase)
			e.Model, e.Status, e.PromptTokens, e.CompletionTokens, e.TotalTokens = model, status, prompt, completion, prompt+completion
			return e
		}
		insertUsage(t, s,
			event("gpt-b", 200, 10, 5),
			event("gpt-a", 400, 1, 0),
			event("gpt-b", 500, 2, 3),
			event("gpt-a", 399, 4, 4),
			event("", 404, 0, 0),
		)
		got, err := s.UsageTotals(t.Context(), &service.UsageFilter{})
		if err != nil {
			t.Fatalf("UsageTotals: %v", err)
		}
		want := &service.UsageTotals{
			UsageCounts: service.UsageCounts{Requests: 5, Errors: 3, PromptTokens: 17, CompletionTokens: 12, TotalTokens: 29},
			ByModel: []service.ModelUsage{
				{Model: "", UsageCounts: service.UsageCounts{Requests: 1, Errors: 1}},
				{Model: "gpt-a", UsageCounts: service.UsageCounts{Requests: 2, Errors: 1, PromptTokens: 5, CompletionTokens: 4, TotalTokens: 9}},
				{Model: "gpt-b", UsageCounts: service.UsageCounts{Requests: 2, Errors: 1, PromptTokens: 12, CompletionTokens: 8, TotalTokens: 20}},
			},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("UsageTotals =\n%+v\nwant\n%+v", got, want)
		}
	}},
	{"FiltersByProjectAndToken", func(t *testing.T, s service.Store) {
		const projectA, projectB, tokenA1, tokenA2, tokenB1 = 1, 2, 10, 11, 20
		var events []*service.UsageEventCreateParams
		add := func(n int, tokenID, projectID int64, model string) {
			for range n {
				e := usageEvent(tokenID, projectID, usageBase)
				e.Model = model
				events = append(events, e)
			}
		}
		add(3, tokenA1, projectA, "gpt-a")
		add(2, tokenA2, projectA, "gpt-a")
		add(4, tokenB1, projectB, "gpt-b")
		insertUsage(t, s, events...)
		for _, c := range []struct {
			projectID, tokenID *int64
			requests           int64
		}{
			{nil, nil, 9},
			{ptr[int64](projectA), nil, 5},
			{ptr[int64](projectB), nil, 4},
			{nil, ptr[int64](tokenA2), 2},
			{ptr[int64](projectA), ptr[int64](tokenA1), 3},
			{ptr[int64](projectB), ptr[int64](tokenA1), 0},
			{ptr[int64](99), nil, 0},
		} {
			filter := &service.UsageFilter{ProjectID: c.projectID, TokenID: c.tokenID}
			got, err := s.UsageTotals(t.Context(), filter)
			if err != nil {
				t.Fatalf("UsageTotals: %v", err)
			}
			what := fmt.Sprintf("project %s, token %s", show(c.projectID), show(c.tokenID))
			if got.Requests != c.requests || got.TotalTokens != 7*c.requests {
				t.Errorf("%s: %+v, want %d requests", what, got.UsageCounts, c.requests)
			}
			var byModel int64
			for _, m := range got.ByModel {
				byModel += m.Requests
			}
			if byModel != c.requests {
				t.Errorf("%s: ByModel %+v sums to %d requests, want %d", what, got.ByModel, byModel, c.requests)
			}
		}
		got, err := s.UsageTotals(t.Context(), &service.UsageFilter{ProjectID: ptr[int64](projectB)})
		if err != nil {
			t.Fatalf("UsageTotals: %v", err)
		}
		if len(got.ByModel) != 1 || got.ByModel[0].Model != "gpt-b" {
			t.Errorf("project B ByModel = %+v, want only gpt-b", got.ByModel)
		}
	}},
	{"SinceIsInclusiveUntilIsExclusive", func(t *testing.T, s service.Store) {
		since, until := usageBase, usageBase.Add(time.Second)
		for _, at := range []time.Time{
			since.Add(-time.Millisecond), since, until.Add(-time.Millisecond), until,
		} {
			insertUsage(t, s, usageEvent(1, 1, at))
		}
		zone := time.FixedZone("x", 5*3600)
		for _, c := range []struct {
			what     string
			filter   service.UsageFilter
			requests int64
		}{
			{"no bounds", service.UsageFilter{}, 4},
			{"since and until", service.UsageFilter{Since: since, Until: until}, 2},
			{"since and until in another zone", service.UsageFilter{Since: since.In(zone), Until: until.In(zone)}, 2},
			{"only since", service.UsageFilter{Since: since}, 3},
			{"only until", service.UsageFilter{Until: until}, 3},
			{"empty range", service.UsageFilter{Since: since, Until: since}, 0},
		} {
			assertUsageRequests(t, s, &c.filter, c.requests)
		}
	}},
	{"ZeroFilterSelectsAllTimes", func(t *testing.T, s service.Store) {
		insertUsage(t, s,
			usageEvent(1, 1, time.Date(1971, 1, 1, 0, 0, 0, 0, time.UTC)),
			usageEvent(1, 1, time.Now()),
			usageEvent(1, 1, time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC)),
		)
		assertUsageRequests(t, s, &service.UsageFilter{}, 3)
	}},
}

var usageListCases = []storeCase{
	{"EmptyStoreListsNothing", func(t *testing.T, s service.Store) {
		got, err := s.UsageList(t.Context(), &service.UsageListParams{})
		if err != nil || len(got) != 0 {
			t.Errorf("UsageList = %d events, %v; want none", len(got), err)
		}
	}},
	{"ListsNewestFirst", func(t *testing.T, s service.Store) {
		for i := range 5 {
			e := usageEvent(1, 1, usageBase.Add(time.Duration(i)*time.Second))
			e.Path = fmt.Sprintf("/v1/e%d", i)
			insertUsage(t, s, e)
		}
		got, err := s.UsageList(t.Context(), &service.UsageListParams{})
		if err != nil {
			t.Fatalf("UsageList: %v", err)
		}
		paths := make([]string, len(got))
		for i, e := range got {
			paths[i] = e.Path
		}
		assertEqualSlices(t, "UsageList paths", paths, []string{"/v1/e4", "/v1/e3", "/v1/e2", "/v1/e1", "/v1/e0"})
	}},
	{"PagesWithBeforeID", func(t *testing.T, s service.Store) {
		events := make([]*service.UsageEventCreateParams, 25)
		for i := range events {
			events[i] = usageEvent(1, 1, usageBase)
		}
		insertUsage(t, s, events...)
		all, err := s.UsageList(t.Context(), &service.UsageListParams{})
		if err != nil {
			t.Fatalf("UsageList: %v", err)
		}
		assertDescendingIDs(t, ids(all, usageID))
		got, sizes := pageThrough(t, func(before int64) ([]*service.UsageEvent, error) {
			return s.UsageList(t.Context(), &service.UsageListParams{BeforeID: before, Limit: 10})
		}, usageID)
		assertEqualSlices(t, "all pages' ids", ids(got, usageID), ids(all, usageID))
		assertEqualSlices(t, "page sizes", sizes, []int{10, 10, 5, 0})
	}},
	{"FiltersByProjectAndToken", func(t *testing.T, s service.Store) {
		insertUsage(t, s,
			usageEvent(10, 1, usageBase), usageEvent(11, 1, usageBase),
			usageEvent(20, 2, usageBase), usageEvent(10, 1, usageBase),
		)
		for _, c := range []struct {
			projectID, tokenID *int64
			want               int
		}{
			{ptr[int64](1), nil, 3},
			{nil, ptr[int64](10), 2},
			{ptr[int64](1), ptr[int64](11), 1},
			{ptr[int64](2), ptr[int64](10), 0},
		} {
			got, err := s.UsageList(t.Context(), &service.UsageListParams{ProjectID: c.projectID, TokenID: c.tokenID})
			if err != nil {
				t.Fatalf("UsageList: %v", err)
			}
			if len(got) != c.want {
				t.Errorf("project %s, token %s: %d events, want %d", show(c.projectID), show(c.tokenID), len(got), c.want)
			}
			for _, e := range got {
				if c.projectID != nil && e.ProjectID != *c.projectID || c.tokenID != nil && e.TokenID != *c.tokenID {
					t.Errorf("project %s, token %s: listed %+v", show(c.projectID), show(c.tokenID), e)
				}
			}
		}
	}},
	{"AppliesPageLimit", func(t *testing.T, s service.Store) {
		events := make([]*service.UsageEventCreateParams, service.MaxPageLimit+1)
		for i := range events {
			events[i] = usageEvent(1, 1, usageBase)
		}
		insertUsage(t, s, events...)
		for _, limit := range []int{0, -1, 7, service.MaxPageLimit + 500} {
			got, err := s.UsageList(t.Context(), &service.UsageListParams{Limit: limit})
			if err != nil {
				t.Fatalf("UsageList(Limit=%d): %v", limit, err)
			}
			if int64(len(got)) != service.PageLimit(limit) {
				t.Errorf("UsageList(Limit=%d) = %d events, want %d", limit, len(got), service.PageLimit(limit))
			}
		}
	}},
}

func assertUsageRequests(t *testing.T, s service.Store, filter *service.UsageFilter, want int64) {
	t.Helper()
	got, err := s.UsageTotals(t.Context(), filter)
	if err != nil {
		t.Fatalf("UsageTotals: %v", err)
	}
	if got.Requests != want {
		t.Errorf("UsageTotals(since %v, until %v, project %s, token %s).Requests = %d, want %d",
			filter.Since, filter.Until, show(filter.ProjectID), show(filter.TokenID), got.Requests, want)
	}
}

func assertDescendingIDs(t *testing.T, ids []int64) {
	t.Helper()
	for i := 1; i < len(ids); i++ {
		if ids[i] >= ids[i-1] {
			t.Errorf("ids not newest first: %v", ids)
			return
		}
	}
}

// eventID is a 16-byte EventID numbered n.
func eventID(n byte) []byte {
	id := make([]byte, 16)
	id[15] = n
	return id
}

// identifiedEvent is a usage event with EventID n, n prompt tokens to tell
// it apart.
func identifiedEvent(n byte) *service.UsageEventCreateParams {
	e := usageEvent(1, 1, usageBase)
	e.PromptTokens, e.EventID = int64(n), eventID(n)
	return e
}

// assertStoredEventIDs checks the stored events are exactly the
// identifiedEvents numbered want, each once.
func assertStoredEventIDs(t *testing.T, s service.Store, want ...byte) {
	t.Helper()
	got, err := s.UsageList(t.Context(), &service.UsageListParams{Limit: service.MaxPageLimit})
	if err != nil {
		t.Fatalf("UsageList: %v", err)
	}
	if len(got) != len(want) {
		t.Errorf("%d events stored, want %d", len(got), len(want))
	}
	stored := map[byte]bool{}
	for _, e := range got {
		n := byte(e.PromptTokens)
		if stored[n] || !bytes.Equal(e.EventID, eventID(n)) {
			t.Errorf("stored event %d again or with EventID %x", n, e.EventID)
		}
		stored[n] = true
	}
	for _, n := range want {
		if !stored[n] {
			t.Errorf("event %d not stored", n)
		}
	}
}
