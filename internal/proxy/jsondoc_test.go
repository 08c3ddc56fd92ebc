package proxy

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// The rules for reading a JSON document, restated on encoding/json to
// compare jsondoc.go (on jsontext) with: a member's name is its key with
// escapes undone, matched exactly; of a name given twice the last value
// wins; a value of another type than the one wanted counts as absent. A
// request naming model or stream twice at its top level is refused, where
// names that differ only in case (under Unicode folding, as encoding/json
// and so an upstream written in Go matches them) count as the same.
// Invalid UTF-8 reads as U+FFFD, as encoding/json and Python read it, so
// such a body still names its model.

// refObject is an object's members, the last of each name, and how often
// each name appears.
type refObject struct {
	members map[string]json.RawMessage
	count   map[string]int
}

// refRead reads doc: valid reports whether it is JSON, and obj is nil
// unless it is an object.
func refRead(doc []byte) (valid bool, obj *refObject) {
	if !json.Valid(doc) {
		return false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return true, nil
	}
	o := &refObject{members: map[string]json.RawMessage{}, count: map[string]int{}}
	for dec.More() {
		name, err := dec.Token()
		if err != nil {
			panic(err) // doc is valid
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			panic(err)
		}
		o.members[name.(string)] = value
		o.count[name.(string)]++
	}
	return true, o
}

// countFolded is how many members have a name equal to name under Unicode
// case folding, as encoding/json (and so a Go upstream) matches names.
func (o *refObject) countFolded(name string) (n int) {
	for member, count := range o.count {
		if strings.EqualFold(member, name) {
			n += count
		}
	}
	return n
}

func (o *refObject) str(name string) (s string) {
	if v := o.members[name]; len(v) > 0 && v[0] == '"' {
		json.Unmarshal(v, &s)
	}
	return s
}

func (o *refObject) object(name string) *refObject {
	_, obj := refRead(o.members[name])
	return obj
}

func (o *refObject) int64(name string) int64 {
	n, err := strconv.ParseInt(string(o.members[name]), 10, 64)
	if err != nil {
		return 0 // not an integer literal that fits
	}
	return n
}

func refRequest(body []byte) (requestFields, *apiError) {
	valid, o := refRead(body)
	switch {
	case !valid || o == nil:
		return requestFields{}, nil
	case o.countFolded("model") > 1:
		return requestFields{}, errDuplicateModel
	case o.countFolded("stream") > 1:
		return requestFields{}, errDuplicateStream
	}
	return requestFields{Model: clipModel(o.str("model")), Stream: string(o.members["stream"]) == "true"}, nil
}

func refResponseUsage(doc []byte) (r responseUsage, ok bool) {
	valid, o := refRead(doc)
	if !valid || o == nil {
		return r, false
	}
	r.modelUsage = refModelUsage(o)
	if response := o.object("response"); response != nil {
		m := refModelUsage(response)
		r.Response = &m
	}
	return r, true
}

func refModelUsage(o *refObject) modelUsage {
	m := modelUsage{Model: o.str("model")}
	if u := o.object("usage"); u != nil {
		m.Usage = &tokenCounts{
			PromptTokens: u.int64("prompt_tokens"), CompletionTokens: u.int64("completion_tokens"),
			InputTokens: u.int64("input_tokens"), OutputTokens: u.int64("output_tokens"),
			TotalTokens: u.int64("total_tokens"),
		}
	}
	return m
}

// checkRules fails t unless the proxy reads doc as the rules say.
func checkRules(t *testing.T, doc []byte) {
	t.Helper()
	gotFields, gotErr := parseJSONRequest(doc)
	wantFields, wantErr := refRequest(doc)
	if gotFields != wantFields || gotErr != wantErr {
		t.Fatalf("%q: parseJSONRequest %+v, %v; rules %+v, %v", doc, gotFields, gotErr, wantFields, wantErr)
	}

	got, gotOK := readResponseUsage(doc)
	want, wantOK := refResponseUsage(doc)
	if gotOK != wantOK || gotOK && (got.Model != want.Model || !equalCounts(got.Usage, want.Usage) ||
		(got.Response == nil) != (want.Response == nil) ||
		got.Response != nil && (got.Response.Model != want.Response.Model || !equalCounts(got.Response.Usage, want.Response.Usage))) {
		t.Fatalf("%q: readResponseUsage %v %+v %+v %+v; rules %v %+v %+v %+v",
			doc, gotOK, got.Model, got.Usage, got.Response, wantOK, want.Model, want.Usage, want.Response)
	}
}

func equalCounts(a, b *tokenCounts) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

var jsonRuleSeeds = []string{
	`{"model":"gpt-4o","usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}`,
	`{"type":"response.completed","response":{"model":"gpt-4.1","usage":{"input_tokens":5,"output_tokens":7}}}`,
	`{"Model":"m","USAGE":{"Prompt_Tokens":1}}`,
	`{"model":"gpt-4o","MODEL":"cheap"}`,
	`{"MODEL":"cheap"}`, `{"Model":"a","mODEL":"b"}`, `{"stream":true,"\u017ftream":false}`, `{"model":"m","stReam":1}`,
	`{"model":"gpt-4o","model":"cheap"}`,
	`{"model":"gpt-4o","mod\u0065l":"cheap"}`,
	`{"stream":false,"\u0073tream":true,"model":"m"}`,
	`{"model":"m","messages":[{"model":"x","model":"y"}],"metadata":{"stream":1,"stream":2}}`,
	`{"model":"m","messages":[],"messages":[]}`,
	`{"mod\u0065l":"a\u00e9\ud800","usage":null}`,
	`{"mod\ud800el":"x","model\u0000":"y"}`,
	`{"model":"\xff\xfe","usage":{"total_tokens":-0}}`,
	`{"model` + "\xff" + `":"x"}`,
	`{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}`,
	`{"usage":{"prompt_tokens":1},"usage":null}`,
	`{"usage":{"prompt_tokens":"x"},"usage":{"prompt_tokens":5}}`,
	`{"usage":{"prompt_tokens":5,"prompt_tokens":null}}`,
	`{"model":"a","model":null}`,
	`{"response":{"model":"a"},"response":{"usage":{"input_tokens":3}}}`,
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
	`{"model":"a","model":"b",`, `{"model":"a","model":"b"} x`,
}

func TestJSONRules(t *testing.T) {
	t.Parallel()
	for _, doc := range jsonRuleSeeds {
		checkRules(t, []byte(doc))
	}
}

func TestJSONDepthLimit(t *testing.T) {
	t.Parallel()
	const maxJSONDepth = 10000 // encoding/json's and jsontext's nesting limit
	for _, depth := range []int{maxJSONDepth, maxJSONDepth + 1} {
		for _, open := range []string{"[", `{"a":`} {
			closing := map[string]string{"[": "]", `{"a":`: "}"}[open]
			doc := `{"x":` + strings.Repeat(open, depth-1) + "1" + strings.Repeat(closing, depth-1) + "}"
			checkRules(t, []byte(doc))
		}
	}
}

// TestJSONEscapedKeys reads a document of many escaped keys, each undone
// once however many fields it is compared with (no set of names is kept:
// duplicates are allowed), and the wanted keys among them.
func TestJSONEscapedKeys(t *testing.T) {
	t.Parallel()
	var doc strings.Builder
	doc.WriteString(`{`)
	for i := range 20000 {
		doc.WriteString(`"\u006d\u006f\u0064\u0065\u006c` + strconv.Itoa(i) + `":{"\u0075sage":1},`)
	}
	doc.WriteString(`"mod\u0065l":"m","\u0075sage":{"total_\u0074okens":3}}`)
	checkRules(t, []byte(doc.String()))
	if r, ok := readResponseUsage([]byte(doc.String())); !ok || r.Model != "m" || r.Usage == nil || r.Usage.TotalTokens != 3 {
		t.Errorf("readResponseUsage = %+v %+v, %v", r.Model, r.Usage, ok)
	}
}

func FuzzJSONRules(f *testing.F) {
	for _, doc := range jsonRuleSeeds {
		f.Add([]byte(doc))
	}
	f.Fuzz(checkRules)
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
