package proxy

import (
	"encoding/json"
	"strings"
	"testing"
)

// The scanner must give what encoding/json gives; these are the struct
// shapes it replaced, decoded by encoding/json, to compare with.
type (
	requestFieldsJSON struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	tokenCountsJSON struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
		InputTokens      int64 `json:"input_tokens"`
		OutputTokens     int64 `json:"output_tokens"`
		TotalTokens      int64 `json:"total_tokens"`
	}
	responseUsageJSON struct {
		Model    string           `json:"model"`
		Usage    *tokenCountsJSON `json:"usage"`
		Response *struct {
			Model string           `json:"model"`
			Usage *tokenCountsJSON `json:"usage"`
		} `json:"response"`
	}
)

func (c *tokenCountsJSON) scanned() *tokenCounts {
	if c == nil {
		return nil
	}
	return &tokenCounts{c.PromptTokens, c.CompletionTokens, c.InputTokens, c.OutputTokens, c.TotalTokens}
}

// checkLikeUnmarshal fails t unless the scanner reads doc as json.Unmarshal does.
func checkLikeUnmarshal(t *testing.T, doc []byte) {
	t.Helper()
	s := jsonScan{data: doc}
	object := s.document(func([]byte) { s.skipValue() })
	if valid := json.Valid(doc); s.bad == valid {
		t.Fatalf("%q: scanner says valid %v, encoding/json %v", doc, !s.bad, valid)
	}
	var v any
	if json.Unmarshal(doc, &v) == nil {
		if _, isObject := v.(map[string]any); object != (isObject || v == nil) {
			t.Fatalf("%q: scanner says object %v, encoding/json %T", doc, object, v)
		}
	}

	var want responseUsageJSON
	wantOK := json.Unmarshal(doc, &want) == nil
	got, gotOK := scanResponseUsage(doc)
	if gotOK != wantOK {
		t.Fatalf("%q: scanResponseUsage ok %v, Unmarshal ok %v", doc, gotOK, wantOK)
	}
	if gotOK {
		if got.Model != want.Model || !equalCounts(got.Usage, want.Usage.scanned()) {
			t.Fatalf("%q: scanned %+v %+v, Unmarshal %+v %+v", doc, got.Model, got.Usage, want.Model, want.Usage)
		}
		if (got.Response == nil) != (want.Response == nil) {
			t.Fatalf("%q: scanned response %+v, Unmarshal %+v", doc, got.Response, want.Response)
		}
		if got.Response != nil && (got.Response.Model != want.Response.Model || !equalCounts(got.Response.Usage, want.Response.Usage.scanned())) {
			t.Fatalf("%q: scanned response %+v, Unmarshal %+v", doc, got.Response, want.Response)
		}
	}

	if trimmed := strings.TrimLeft(string(doc), " \t\r\n"); strings.HasPrefix(trimmed, "{") {
		var wantReq requestFieldsJSON
		json.Unmarshal(doc, &wantReq)
		wantReq.Model = clipModel(wantReq.Model)
		if got := parseRequest(doc); got != requestFields(wantReq) {
			t.Fatalf("%q: parseRequest %+v, Unmarshal %+v", doc, got, wantReq)
		}
	}
}

func equalCounts(a, b *tokenCounts) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

var jsonScanSeeds = []string{
	`{"model":"gpt-4o","usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}`,
	`{"type":"response.completed","response":{"model":"gpt-4.1","usage":{"input_tokens":5,"output_tokens":7}}}`,
	`{"Model":"m","USAGE":{"Prompt_Tokens":1}}`,
	`{"mod\u0065l":"a\u00e9\ud800","usage":null}`,
	`{"model":"\xff\xfe","usage":{"total_tokens":-0}}`,
	`{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}`,
	`{"usage":{"prompt_tokens":1},"usage":null}`,
	`{"usage":{"prompt_tokens":1.5}}`,
	`{"usage":{"prompt_tokens":1e3}}`,
	`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":-9223372036854775808}}`,
	`{"usage":{"prompt_tokens":9223372036854775808}}`,
	`{"usage":{"prompt_tokens":"12"}}`,
	`{"usage":[1,2]}`,
	`{"model":42,"stream":true}`,
	`{"model":"m","stream":"yes"}`,
	`{"stream":null,"model":null}`,
	`{"a":[{"b":[]},{},"x",-0.5e+7,true,false,null]}`,
	`{"a":1,}`, `{"a"}`, `{"a":01}`, `[1,]`, `{"a":"\u12g4"}`, `{"a":"` + "\x01" + `"}`, `{"a":tru}`, `{"a":-}`,
	`{} {}`, `{}` + "\x00", `1E1000`, ` {"k\u212a":1} `, `null`, `[]`, `"s"`, `12`, `true`, ``, ` `,
	`{"model":"m"`, `{"usage":{"total_tokens":1}`, `{"x":"\"usage\": {"}`,
}

func TestScannerLikeUnmarshal(t *testing.T) {
	t.Parallel()
	for _, doc := range jsonScanSeeds {
		checkLikeUnmarshal(t, []byte(doc))
	}
}

func TestScannerDepthLimit(t *testing.T) {
	t.Parallel()
	for _, depth := range []int{maxJSONDepth, maxJSONDepth + 1} {
		for _, open := range []string{"[", `{"a":`} {
			closing := map[string]string{"[": "]", `{"a":`: "}"}[open]
			doc := `{"x":` + strings.Repeat(open, depth-1) + "1" + strings.Repeat(closing, depth-1) + "}"
			checkLikeUnmarshal(t, []byte(doc))
		}
	}
}

func FuzzScannerLikeUnmarshal(f *testing.F) {
	for _, doc := range jsonScanSeeds {
		f.Add([]byte(doc))
	}
	f.Fuzz(checkLikeUnmarshal)
}

func TestParseInt64(t *testing.T) {
	t.Parallel()
	for lit, want := range map[string]int64{
		"0": 0, "-0": 0, "7": 7, "-12": -12,
		"9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63,
	} {
		if got, ok := parseInt64([]byte(lit)); !ok || got != want {
			t.Errorf("parseInt64(%s) = %d, %v; want %d", lit, got, ok, want)
		}
	}
	for _, lit := range []string{"", "-", "1.0", "1e2", "9223372036854775808", "-9223372036854775809", "99999999999999999999"} {
		if got, ok := parseInt64([]byte(lit)); ok {
			t.Errorf("parseInt64(%s) = %d, want a failure", lit, got)
		}
	}
}

// BenchmarkResponseUsage decodes a Chat Completions answer as the proxy
// does for each JSON response.
func BenchmarkResponseUsage(b *testing.B) {
	doc := []byte(`{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today? If you have a question about the weather, code, or anything else, just ask.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_6ec83003ad"}`)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		var u usageResult
		u.add(doc)
		if u.total != 29 {
			b.Fatalf("got %+v", u)
		}
	}
}
