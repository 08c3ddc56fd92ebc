package proxy_test

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/llmproxy/llmproxy/internal/upstreamtest"
)

// multipartBody is an audio transcription as the SDKs send it: the file
// first, then the other fields, each name once per value given.
func multipartBody(t *testing.T, fields ...string) (contentType string, body []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", "speech.mp3")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(bytes.Repeat([]byte("\xff\xfb\x90\x00"), 4096))
	for i := 0; i < len(fields); i += 2 {
		if err := mw.WriteField(fields[i], fields[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

func TestRequestNamingModelTwiceIsRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		tok, secret, _ := e.newToken(t)
		formType, formBody := multipartBody(t, "model", "whisper-1", "model", "cheap")
		for _, c := range []struct {
			name, path, contentType, body string
		}{
			{"JSON", "/v1/chat/completions", "application/json", `{"model":"gpt-4o","messages":[],"model":"cheap"}`},
			{"JSONEscaped", "/v1/chat/completions", "application/json", `{"model":"gpt-4o","mod\u0065l":"cheap"}`},
			{"JSONOtherCase", "/v1/chat/completions", "application/json", `{"model":"gpt-4o","MODEL":"cheap"}`},
			{"JSONStream", "/v1/chat/completions", "application/json", `{"model":"gpt-4o","stream":false,"stream":true}`},
			{"Multipart", "/v1/audio/transcriptions", formType, string(formBody)},
		} {
			t.Run(c.name, func(t *testing.T) {
				req := e.request(t, http.MethodPost, c.path, secret, strings.NewReader(c.body))
				req.Header.Set("Content-Type", c.contentType)
				resp, body := e.do(t, req)
				assertAPIError(t, resp, body, http.StatusBadRequest, "invalid_request_error", "invalid_request")
			})
		}
		if n := e.upstream.Count(); n != 0 {
			t.Errorf("upstream received %d requests, want none", n)
		}
		if n := e.requestCount(t, tok.ID); n != 0 {
			t.Errorf("request_count = %d after refusals, want 0", n)
		}
		if events := e.usageEvents(t); len(events) != 0 {
			t.Errorf("%d usage events, want none: %+v", len(events), events)
		}
	})
}

func TestRequestModelReadAsTheUpstreamReadsIt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOptions{})
		_, secret, _ := e.newToken(t)
		formType, formBody := multipartBody(t, "model", "whisper-1", "response_format", "json")
		for _, c := range []struct {
			path, contentType, body string
		}{
			// Keys are case-sensitive: the upstream serves gpt-4o, not a stream.
			{"/v1/chat/completions", "application/json", `{"model":"gpt-4o","Stream":true,"messages":[]}`},
			{"/v1/chat/completions", "application/json", `{"mod\u0065l":"gpt-4o-mini"}`},
			// The fake upstream cannot read a form and names its default
			// model: the one recorded comes from the form.
			{"/v1/audio/transcriptions", formType, string(formBody)},
		} {
			req := e.request(t, http.MethodPost, c.path, secret, strings.NewReader(c.body))
			req.Header.Set("Content-Type", c.contentType)
			if resp, body := e.do(t, req); resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: status %d, body %s", c.path, resp.StatusCode, body)
			}
		}
		reqs := e.upstream.Requests()
		if len(reqs) != 3 || !bytes.Equal(reqs[2].Body, formBody) {
			t.Fatalf("upstream received %d requests, want 3 with the form unchanged", len(reqs))
		}
		events := e.usageEvents(t)
		var models []string
		for _, ev := range events {
			models = append(models, ev.Model)
		}
		if want := []string{"gpt-4o", "gpt-4o-mini", "whisper-1"}; strings.Join(models, ",") != strings.Join(want, ",") {
			t.Errorf("recorded models %q, want %q (not %q)", models, want, upstreamtest.DefaultModel)
		}
	})
}
