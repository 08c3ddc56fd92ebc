package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/llmproxy/llmproxy/internal/manage"
)

// decode runs body through decodeJSON as the api wrapper would.
func decode(body []byte, v any) error {
	r := httptest.NewRequest("POST", "/manage/x", bytes.NewReader(body))
	r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, maxBodyBytes)
	return decodeJSON(r, v)
}

func TestDecodeErrorMessages(t *testing.T) {
	t.Parallel()
	cases := []struct {
		body string
		into any
		code string
		msg  string
	}{
		{`{"name":5}`, &createProjectRequest{}, manage.CodeInvalidRequest, "name: want a string"},
		{`{"is_active":"yes"}`, &updateProjectRequest{}, manage.CodeInvalidRequest, "is_active: want true or false"},
		{`{"project_id":true}`, &createTokenRequest{}, manage.CodeInvalidRequest, "project_id: want an id"},
		{`{"project_id":"0"}`, &createTokenRequest{}, manage.CodeInvalidRequest, "project_id: want an id"},
		{`{"duration_minutes":"60"}`, &createTokenRequest{}, manage.CodeInvalidRequest, "duration_minutes: want an integer"},
		{`{"max_requests":1.5}`, &updateTokenRequest{}, manage.CodeInvalidRequest, "max_requests: want an integer"},
		{`{"max_requests":"5"}`, &updateTokenRequest{}, manage.CodeInvalidRequest, "max_requests: want an integer"},
		{`{"nope":1}`, &updateTokenRequest{}, manage.CodeInvalidRequest, `unknown field "nope"`},
		{`[]`, &updateTokenRequest{}, manage.CodeInvalidRequest, "must be a JSON object"},
		{``, &updateTokenRequest{}, manage.CodeInvalidJSON, "empty"},
		{`{"is_active":tru`, &updateTokenRequest{}, manage.CodeInvalidJSON, "malformed JSON"},
		{`{} {}`, &updateTokenRequest{}, manage.CodeInvalidJSON, "single JSON object"},
	}
	for _, tc := range cases {
		err := decode([]byte(tc.body), tc.into)
		e, ok := errors.AsType[*manage.Error](err)
		if !ok || e.Code != tc.code || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("decode(%s) = %v, want %s containing %q", tc.body, err, tc.code, tc.msg)
		}
	}
}

func TestDecodeIDsAndNullable(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]jsonID{`{}`: 0, `{"project_id":null}`: 0, `{"project_id":"12"}`: 12, `{"project_id":12}`: 12} {
		var req createTokenRequest
		if err := decode([]byte(body), &req); err != nil || req.ProjectID != want {
			t.Errorf("decode(%s) = %d, %v; want %d", body, req.ProjectID, err, want)
		}
	}
	for body, want := range map[string]nullableInt{`{}`: {}, `{"max_requests":null}`: {Set: true}, `{"max_requests":0}`: {Set: true}, `{"max_requests":9}`: {Set: true, Value: 9}} {
		var req updateTokenRequest
		if err := decode([]byte(body), &req); err != nil || req.MaxRequests != want {
			t.Errorf("decode(%s) = %+v, %v; want %+v", body, req.MaxRequests, err, want)
		}
	}
}

// FuzzDecodeManagementRequests feeds arbitrary bodies to every management
// request type: decoding either succeeds on valid JSON or fails with a
// client error, and never panics.
func FuzzDecodeManagementRequests(f *testing.F) {
	for _, seed := range []string{
		`{"name":"p","api_key":"sk-x"}`, `{"name":null}`, `{"is_active":false,"revoke_tokens":true}`,
		`{"project_id":"1","duration_minutes":60,"max_requests":5}`, `{"project_id":1e400}`, `{"project_id":"-0"}`,
		`{"max_requests":null,"is_active":true}`, `{"max_requests":9223372036854775808}`, `{"a":1}`, `[1,2]`,
		`{"name":"\ud800"}`, `{"name":"x"}{}`, ` `, `{"name":"x",}`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	clientCodes := map[string]bool{manage.CodeInvalidJSON: true, manage.CodeInvalidRequest: true, codeBodyTooLarge: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, into := range []func() any{
			func() any { return &createProjectRequest{} },
			func() any { return &updateProjectRequest{} },
			func() any { return &createTokenRequest{} },
			func() any { return &updateTokenRequest{} },
		} {
			v := into()
			err := decode(body, v)
			if err == nil {
				if !json.Valid(body) {
					t.Fatalf("decode(%q) into %T accepted invalid JSON", body, v)
				}
				if req, ok := v.(*createTokenRequest); ok && req.ProjectID < 0 {
					t.Fatalf("decode(%q): project_id %d", body, req.ProjectID)
				}
				continue
			}
			e, ok := errors.AsType[*manage.Error](err)
			if !ok || !clientCodes[e.Code] || e.Message == "" || statuses[e.Code] >= 500 {
				t.Fatalf("decode(%q) into %T = %#v, want a client error", body, v, err)
			}
		}
	})
}
