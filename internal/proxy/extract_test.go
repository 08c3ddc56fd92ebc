package proxy

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseRequest(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", maxModelLen) // 2 bytes each
	for _, c := range []struct {
		name, body string
		want       requestFields
		err        *apiError
	}{
		{"Chat", `{"model":"gpt-4o","messages":[]}`, requestFields{Model: "gpt-4o"}, nil},
		{"Stream", ` {"stream":true,"model":"m"}`, requestFields{Model: "m", Stream: true}, nil},
		{"NoModel", `{"input":"x"}`, requestFields{}, nil},
		{"Empty", ``, requestFields{}, nil},
		{"NotJSON", `model=gpt-4o`, requestFields{}, nil},
		{"Array", `[{"model":"m"}]`, requestFields{}, nil},
		{"Truncated", `{"model":"m","messages":[`, requestFields{}, nil},
		{"ModelNotAString", `{"model":42,"stream":true}`, requestFields{Stream: true}, nil},
		{"StreamNotABool", `{"model":"m","stream":"yes"}`, requestFields{Model: "m"}, nil},
		{"LongModelClippedOnACharacter", `{"model":"` + long + `"}`, requestFields{Model: long[:maxModelLen]}, nil},
		// Keys are matched exactly, as the upstream's parser does.
		{"KeyCaseMatters", `{"model":"gpt-4o","Stream":true}`, requestFields{Model: "gpt-4o"}, nil},
		{"OnlyOtherCase", `{"Model":"cheap"}`, requestFields{}, nil},
		{"KelvinSignIsNotK", `{"model":"m","\u212aey":1,"ſtream":true}`, requestFields{Model: "m"}, nil},
		{"EscapedKey", `{"mod\u0065l":"gpt-4o","\u0073tream":true}`, requestFields{Model: "gpt-4o", Stream: true}, nil},
		{"EscapedValue", `{"model":"gpt\u002d4o\/x"}`, requestFields{Model: "gpt-4o/x"}, nil},
		{"NullModel", `{"model":null}`, requestFields{}, nil},
		// Twice at the top level: refused, whatever the spelling or values.
		{"DuplicateModel", `{"model":"gpt-4o","model":"cheap"}`, requestFields{}, errDuplicateModel},
		// A Go upstream folds case: there, these name the model twice.
		{"DuplicateModelInOtherCase", `{"model":"gpt-4o","MODEL":"cheap"}`, requestFields{}, errDuplicateModel},
		{"DuplicateStreamFolded", `{"model":"m","STREAM":true,"ſtream":false}`, requestFields{}, errDuplicateStream},
		{"DuplicateModelEscaped", `{"model":"gpt-4o","messages":[],"mod\u0065l":"cheap"}`, requestFields{}, errDuplicateModel},
		{"DuplicateModelSameValue", `{"model":"m","model":"m"}`, requestFields{}, errDuplicateModel},
		{"DuplicateModelNull", `{"model":"m","model":null}`, requestFields{}, errDuplicateModel},
		{"DuplicateStream", `{"model":"m","stream":false,"stream":true}`, requestFields{}, errDuplicateStream},
		// Nested duplicates and other keys twice are the upstream's to judge.
		{"NestedDuplicates", `{"model":"m","messages":[{"model":"a","model":"b"}],"metadata":{"stream":1,"stream":2}}`, requestFields{Model: "m"}, nil},
		{"OtherKeyTwice", `{"model":"m","messages":[],"messages":[]}`, requestFields{Model: "m"}, nil},
		// Invalid JSON is forwarded with nothing read, duplicate or not.
		{"DuplicateInInvalidJSON", `{"model":"a","model":"b",`, requestFields{}, nil},
		{"DuplicateThenGarbage", `{"model":"a","model":"b"} x`, requestFields{}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseRequest("application/json", []byte(c.body))
			if got != c.want || err != c.err {
				t.Errorf("parseRequest(%s) = %+v, %v; want %+v, %v", c.body, got, err, c.want, c.err)
			}
		})
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"gpt-4o","stream":true}`, `{"model":null}`, ` {"model":"m"} `, `{"model":"m"}{}`, `[]`, ``,
	} {
		f.Add([]byte(seed), "gpt-4o", false)
	}
	f.Add([]byte(`{"model":"a\u00e9\ud800"}`), strings.Repeat("ü", 150), true)
	f.Fuzz(func(t *testing.T, body []byte, model string, stream bool) {
		// Any body: no panic, a bounded model, nothing from invalid JSON.
		got, apiErr := parseRequest("application/json", body)
		if len(got.Model) > maxModelLen {
			t.Fatalf("model of %d bytes, limit %d", len(got.Model), maxModelLen)
		}
		if !json.Valid(body) && (got != (requestFields{}) || apiErr != nil) {
			t.Fatalf("parseRequest(%q) = %+v, %v from invalid JSON", body, got, apiErr)
		}

		// A body an SDK would send: the fields come back, clipped.
		sent, err := json.Marshal(map[string]any{"messages": []any{body}, "model": model, "stream": stream})
		if err != nil {
			t.Fatal(err)
		}
		model = string([]rune(model)) // each invalid byte becomes U+FFFD, as Marshal sends it
		got, apiErr = parseRequest("application/json", sent)
		if want := (requestFields{Model: clipModel(model), Stream: stream}); got != want || apiErr != nil {
			t.Fatalf("parseRequest(%s) = %+v, %v; want %+v", sent, got, apiErr, want)
		}
		if !utf8.ValidString(got.Model) {
			t.Fatalf("clipping split a character: %q", got.Model)
		}
	})
}

// form builds a multipart/form-data body as an SDK sends an audio
// transcription, with parts given as name, value pairs; a name
// "file:<name>" makes a file part.
func form(t testing.TB, pairs ...string) (contentType string, body []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i := 0; i < len(pairs); i += 2 {
		var w io.Writer
		var err error
		if name, ok := strings.CutPrefix(pairs[i], "file:"); ok {
			w, err = mw.CreateFormFile(name, "audio.mp3")
		} else {
			w, err = mw.CreateFormField(pairs[i])
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, pairs[i+1])
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

func TestParseForm(t *testing.T) {
	t.Parallel()
	audio := strings.Repeat("\xff\xfb\x90\x00ID3", 50000) // 350 kB of "audio"
	long := strings.Repeat("é", maxModelLen)
	for _, c := range []struct {
		name  string
		pairs []string
		want  requestFields
		err   *apiError
	}{
		{"Transcription", []string{"file:file", audio, "model", "whisper-1", "response_format", "json"}, requestFields{Model: "whisper-1"}, nil},
		{"ModelBeforeFile", []string{"model", "gpt-4o-transcribe", "stream", "true", "file:file", audio}, requestFields{Model: "gpt-4o-transcribe", Stream: true}, nil},
		{"StreamFalse", []string{"model", "m", "stream", "false"}, requestFields{Model: "m"}, nil},
		{"NoModel", []string{"file:file", audio}, requestFields{}, nil},
		{"NameCaseMatters", []string{"model", "m", "Model", "cheap"}, requestFields{Model: "m"}, nil},
		{"LongModelClipped", []string{"model", long + "tail"}, requestFields{Model: long[:maxModelLen]}, nil},
		{"InvalidUTF8", []string{"model", "gpt\xff"}, requestFields{Model: "gpt\uFFFD"}, nil},
		{"FileNamedModel", []string{"file:model", "gpt-4o"}, requestFields{}, nil},
		{"DuplicateModel", []string{"model", "gpt-4o", "file:file", audio, "model", "cheap"}, requestFields{}, errDuplicateModel},
		{"DuplicateModelOneAFile", []string{"model", "gpt-4o", "file:model", "cheap"}, requestFields{}, errDuplicateModel},
		{"DuplicateStream", []string{"model", "m", "stream", "false", "stream", "true"}, requestFields{}, errDuplicateStream},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			contentType, body := form(t, c.pairs...)
			got, err := parseRequest(contentType, body)
			if got != c.want || err != c.err {
				t.Errorf("parseRequest = %+v, %v; want %+v, %v", got, err, c.want, c.err)
			}
		})
	}
}

func TestParseFormMalformed(t *testing.T) {
	t.Parallel()
	contentType, body := form(t, "model", "whisper-1", "file:file", "audio")
	for _, c := range []struct{ name, contentType, body string }{
		{"NoBoundary", "multipart/form-data", string(body)},
		{"OtherBoundary", "multipart/form-data; boundary=other", string(body)},
		{"BadContentType", "multipart/form-data; boundary", string(body)},
		{"NoClosingBoundary", contentType, strings.TrimSuffix(string(body), "--\r\n")},
		{"CutInAPart", contentType, string(body[:len(body)-20])},
		{"CutInTheModel", contentType, string(body[:bytes.Index(body, []byte("whisper"))+3])},
		{"JSONBody", contentType, `{"model":"gpt-4o"}`},
		{"Empty", contentType, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// Malformed: forwarded with nothing read, for the upstream to judge.
			if got, err := parseRequest(c.contentType, []byte(c.body)); got != (requestFields{}) || err != nil {
				t.Errorf("parseRequest = %+v, %v; want nothing", got, err)
			}
		})
	}
	// The same body, well formed, is read.
	if got, err := parseRequest(contentType, body); got.Model != "whisper-1" || err != nil {
		t.Errorf("parseRequest = %+v, %v; want whisper-1", got, err)
	}
}

// FuzzParseForm compares parseForm with mime/multipart's ReadForm, which
// lists every value of a name.
func FuzzParseForm(f *testing.F) {
	for _, pairs := range [][]string{
		{"model", "whisper-1", "file:file", "abc"},
		{"model", "a", "model", "b"},
		{"stream", "true", "file:model", "x"},
	} {
		contentType, body := form(f, pairs...)
		_, params, _ := mime.ParseMediaType(contentType)
		f.Add(body, params["boundary"])
	}
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		contentType := mime.FormatMediaType("multipart/form-data", map[string]string{"boundary": boundary})
		if contentType == "" {
			return
		}
		got, apiErr := parseRequest(contentType, body)
		if len(got.Model) > maxModelLen || !utf8.ValidString(got.Model) {
			t.Fatalf("model %q: too long or not UTF-8", got.Model)
		}
		mf, err := multipart.NewReader(bytes.NewReader(body), boundary).ReadForm(1 << 20)
		if err != nil {
			if got != (requestFields{}) || apiErr != nil {
				t.Fatalf("ReadForm: %v; parseRequest = %+v, %v", err, got, apiErr)
			}
			return
		}
		defer mf.RemoveAll()
		want := requestFields{}
		var wantErr *apiError
		switch {
		case len(mf.Value["model"])+len(mf.File["model"]) > 1:
			wantErr = errDuplicateModel
		case len(mf.Value["stream"])+len(mf.File["stream"]) > 1:
			wantErr = errDuplicateStream
		default:
			if v := mf.Value["model"]; len(v) == 1 {
				want.Model = clipModel(strings.ToValidUTF8(v[0], "\uFFFD"))
			}
			if v := mf.Value["stream"]; len(v) == 1 {
				want.Stream, _ = strconv.ParseBool(v[0])
			}
		}
		if got != want || apiErr != wantErr {
			t.Fatalf("parseRequest = %+v, %v; ReadForm says %+v, %v", got, apiErr, want, wantErr)
		}
	})
}

// openAIStream is a Chat Completions stream with stream_options.include_usage.
const openAIStream = `data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"the \"usage\": {"}}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}

data: [DONE]

`

func TestSSEParser(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, model, stream string
		want                usageResult
	}{
		{"OpenAI", "", openAIStream, usageResult{model: "gpt-4o-2024-08-06", prompt: 12, completion: 30, total: 42}},
		{"RequestModelWins", "gpt-4o", openAIStream, usageResult{model: "gpt-4o", prompt: 12, completion: 30, total: 42}},
		{"CRLF", "", strings.ReplaceAll(openAIStream, "\n", "\r\n"), usageResult{model: "gpt-4o-2024-08-06", prompt: 12, completion: 30, total: 42}},
		{"NoUsage", "", "data: {\"model\":\"m\",\"usage\":null}\n\ndata: [DONE]\n\n", usageResult{model: "m"}},
		{"DataSplitOverLines", "m", "event: message\nid: 7\n: a comment\ndata: {\"usage\":\ndata: {\"prompt_tokens\":1,\ndata:\"completion_tokens\":2}}\n\n",
			usageResult{model: "m", prompt: 1, completion: 2, total: 3}},
		{"NoFinalBlankLine", "m", `data: {"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`,
			usageResult{model: "m", prompt: 5, completion: 1, total: 6}},
		{"ResponsesAPI", "", "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-5\",\"usage\":null}}\n\n" +
			"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-5\",\"usage\":{\"input_tokens\":8,\"output_tokens\":4,\"total_tokens\":12}}}\n\n",
			usageResult{model: "gpt-5", prompt: 8, completion: 4, total: 12}},
		{"OversizedEventSkipped", "m", "data: {\"usage\":{\"prompt_tokens\":1,\"x\":\"" + strings.Repeat("a", maxEventBytes) + "\"}}\n\n" +
			"data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2}}\n\n", usageResult{model: "m", prompt: 2, completion: 2, total: 4}},
		{"NotJSON", "m", "data: hello\n\ndata: {\"usage\":{\"total_tokens\":\n\n", usageResult{model: "m"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := &sseParser{result: usageResult{model: c.model}}
			p.Write([]byte(c.stream))
			if got := p.Finish(); got != c.want {
				t.Errorf("whole stream: %+v, want %+v", got, c.want)
			}
			// Byte by byte, as a slow network could deliver it.
			p = &sseParser{result: usageResult{model: c.model}}
			for i := range len(c.stream) {
				p.Write([]byte{c.stream[i]})
			}
			if got := p.Finish(); got != c.want {
				t.Errorf("byte by byte: %+v, want %+v", got, c.want)
			}
		})
	}
}

func FuzzSSEParser(f *testing.F) {
	f.Add([]byte(openAIStream), uint16(10), uint16(200))
	f.Add([]byte("data: {\"usage\":\r\ndata: {}}\r\n\r\n"), uint16(3), uint16(9))
	f.Add([]byte("data:{\"model\":\"x\",\"usage\" : {\"input_tokens\":1}}\n\n"), uint16(0), uint16(1))
	f.Fuzz(func(t *testing.T, stream []byte, cut1, cut2 uint16) {
		whole := &sseParser{}
		whole.Write(stream)
		want := whole.Finish()

		// However the stream is split, the result is the same.
		i := min(int(cut1), len(stream))
		j := min(max(int(cut2), i), len(stream))
		split := &sseParser{}
		split.Write(stream[:i])
		split.Write(stream[i:j])
		split.Write(stream[j:])
		if got := split.Finish(); got != want {
			t.Fatalf("split at %d and %d: %+v, whole: %+v", i, j, got, want)
		}
		if len(want.model) > maxModelLen {
			t.Fatalf("model of %d bytes", len(want.model))
		}
	})
}

func TestHasUsageObject(t *testing.T) {
	t.Parallel()
	for data, want := range map[string]bool{
		`{"usage":{"total_tokens":1}}`:                true,
		`{"usage" :  {}}`:                             true,
		`{"usage":null}`:                              false,
		`{"content":"\"usage\":{"}`:                   false,
		`{"role":"usage","x":{}}`:                     false,
		`{"a":"usage","usage":null,"b":{"usage":{}}}`: true, // nested: add decides
		`"usage"`: false,
	} {
		if got := hasUsageObject([]byte(data)); got != want {
			t.Errorf("hasUsageObject(%s) = %v, want %v", data, got, want)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	t.Parallel()
	for header, want := range map[string]bool{
		"gzip":                   true,
		"br, gzip;q=0.8":         true,
		"GZIP":                   true,
		"*":                      true,
		"gzip;q=0, br":           false,
		"gzip; q=0.000":          false,
		"br, deflate":            false,
		"identity":               false,
		"x-gzip-like, gzipfoo":   false,
		"deflate, gzip ; q=0.5 ": true,
	} {
		if got := acceptsGzip([]string{header}); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

func TestRemoveHopHeaders(t *testing.T) {
	t.Parallel()
	h := http.Header{
		"Connection":        {"X-A, x-b", " close"},
		"X-A":               {"1"},
		"X-B":               {"2"},
		"Te":                {"trailers"},
		"Transfer-Encoding": {"chunked"},
		"Content-Type":      {"application/json"},
		"Authorization":     {"Bearer x"},
	}
	removeHopHeaders(h)
	want := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer x"}}
	if len(h) != len(want) || h.Get("Content-Type") != "application/json" || h.Get("Authorization") != "Bearer x" {
		t.Errorf("after removeHopHeaders: %v, want %v", h, want)
	}
}

func TestDecodeGzip(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(`{"usage":{}}`))
	zw.Close()
	if got := decode(buf.Bytes(), "gzip"); string(got) != `{"usage":{}}` {
		t.Errorf("decode(gzip) = %q", got)
	}
	for _, enc := range []string{"br", "deflate"} {
		if got := decode(buf.Bytes(), enc); got != nil {
			t.Errorf("decode(%s) = %q, want nil", enc, got)
		}
	}
	if got := decode([]byte("not gzip"), "gzip"); got != nil {
		t.Errorf("decode of corrupt gzip = %q, want nil", got)
	}
}

// streamOf is an OpenAI stream of n content events and a usage event.
func streamOf(n int) []byte {
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"token %d "},"finish_reason":null}],"usage":null}`+"\n\n", i)
	}
	buf.WriteString(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":100,"total_tokens":112}}` + "\n\ndata: [DONE]\n\n")
	return buf.Bytes()
}

// BenchmarkSSEParser feeds a 100-event stream in 512-byte pieces, about
// what a network read delivers.
func BenchmarkSSEParser(b *testing.B) {
	stream := streamOf(100)
	want := usageResult{model: "gpt-4o", prompt: 12, completion: 100, total: 112}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		p := &sseParser{}
		for rest := stream; len(rest) > 0; {
			n := min(512, len(rest))
			p.Write(rest[:n])
			rest = rest[n:]
		}
		if got := p.Finish(); got != want {
			b.Fatalf("got %+v, want %+v", got, want)
		}
	}
}

func BenchmarkParseRequest(b *testing.B) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi."}],"stream":false}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if f, _ := parseRequest("application/json", body); f.Model != "gpt-4o" {
			b.Fatal("no model")
		}
	}
}
