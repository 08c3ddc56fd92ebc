package proxy

import (
	"bytes"
	"unicode/utf8"
)

// maxModelLen bounds the model name kept in a usage record: it comes from
// the client and must not bloat the usage table.
const maxModelLen = 200

// requestFields are the parts of an OpenAI request body the proxy reads.
type requestFields struct {
	Model  string
	Stream bool
}

// parseRequest reads "model" and "stream" from a request body as the
// upstream reads them: from a JSON object, keys matched exactly once their
// escapes are undone, or from a multipart/form-data body's form fields. A
// field of the wrong type is left zero, and a body that is neither (not
// JSON, a malformed form) gives zero values: the upstream, not the proxy,
// judges requests. The one refusal is a body that names model or stream
// twice, which parsers resolve differently (first or last wins), so the
// model recorded could differ from the one served.
func parseRequest(contentType string, body []byte) (requestFields, *apiError) {
	if isMultipartForm(contentType) {
		return parseForm(contentType, body)
	}
	return parseJSONRequest(body)
}

// clipModel shortens s to maxModelLen bytes without splitting a character.
func clipModel(s string) string {
	if len(s) <= maxModelLen {
		return s
	}
	s = s[:maxModelLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// tokenCounts is a usage object: Chat Completions and embeddings name the
// counts prompt/completion, the Responses API input/output.
type tokenCounts struct {
	PromptTokens, CompletionTokens int64
	InputTokens, OutputTokens      int64
	TotalTokens                    int64
}

// modelUsage is what a response object says about usage.
type modelUsage struct {
	Model string
	Usage *tokenCounts
}

// responseUsage is what a response body (or one SSE event) says about usage.
type responseUsage struct {
	modelUsage
	// Responses API: the final stream event nests the response object.
	Response *modelUsage
}

// usageResult is the model to record and the token counts a response reported.
type usageResult struct {
	model                     string
	prompt, completion, total int64
}

// add takes what one JSON document says: its model if none is known yet
// (the request's comes first), and its usage, the last one seen winning
// (streams report it at the end).
func (u *usageResult) add(doc []byte) {
	r, ok := readResponseUsage(doc)
	if !ok {
		return
	}
	model, counts := r.Model, r.Usage
	if r.Response != nil {
		if model == "" {
			model = r.Response.Model
		}
		if counts == nil {
			counts = r.Response.Usage
		}
	}
	if u.model == "" {
		u.model = clipModel(model)
	}
	if counts == nil {
		return
	}
	u.prompt = max(counts.PromptTokens, counts.InputTokens)
	u.completion = max(counts.CompletionTokens, counts.OutputTokens)
	u.total = counts.TotalTokens
	if u.total == 0 {
		u.total = u.prompt + u.completion
	}
}

// maxEventBytes bounds the data of one SSE event the parser keeps; a larger
// event is skipped (usage events are small).
const maxEventBytes = 1 << 20

// sseParser finds the model and the usage in a text/event-stream as it
// passes, fed chunk by chunk however the stream happens to be split.
type sseParser struct {
	result   usageResult
	line     []byte // the current line when it spans chunks
	data     []byte // the data lines of the current event, joined by \n
	hasData  bool
	tooLarge bool // the current event outgrew maxEventBytes
}

// Write consumes the next piece of the stream.
func (p *sseParser) Write(chunk []byte) {
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			p.appendPartial(chunk)
			return
		}
		if len(p.line) == 0 {
			p.endLine(chunk[:i])
		} else {
			p.appendPartial(chunk[:i])
			p.endLine(p.line)
			p.line = p.line[:0]
		}
		chunk = chunk[i+1:]
	}
}

func (p *sseParser) appendPartial(b []byte) {
	if len(p.line)+len(b) > maxEventBytes {
		p.tooLarge = true
		p.line = p.line[:0]
		return
	}
	p.line = append(p.line, b...)
}

// Finish handles an event the stream did not terminate with a blank line.
func (p *sseParser) Finish() usageResult {
	if len(p.line) > 0 {
		p.endLine(p.line)
		p.line = p.line[:0]
	}
	p.dispatch()
	return p.result
}

func (p *sseParser) endLine(line []byte) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if len(line) == 0 {
		p.dispatch()
		return
	}
	value, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok || p.tooLarge {
		return // event:, id:, retry: and comments say nothing about usage
	}
	value = bytes.TrimPrefix(value, []byte{' '})
	if p.hasData {
		p.data = append(p.data, '\n')
	}
	p.hasData = true
	if len(p.data)+len(value) > maxEventBytes {
		p.tooLarge = true
		return
	}
	p.data = append(p.data, value...)
}

func (p *sseParser) dispatch() {
	data := p.data
	skip := p.tooLarge || !p.hasData
	p.data, p.hasData, p.tooLarge = p.data[:0], false, false
	if skip || bytes.Equal(data, []byte("[DONE]")) {
		return
	}
	// Decoding every chunk would cost more than the proxying; only the
	// events that can change the result are decoded.
	if p.result.model != "" && !hasUsageObject(data) {
		return
	}
	p.result.add(data)
}

// hasUsageObject reports whether data has a "usage" key whose value is an
// object. A quote inside a JSON string is escaped, so an unescaped
// `"usage"` followed by a colon can only be a key.
func hasUsageObject(data []byte) bool {
	key := []byte(`"usage"`)
	for {
		i := bytes.Index(data, key)
		if i < 0 {
			return false
		}
		data = data[i+len(key):]
		rest := bytes.TrimLeft(data, " \t\r\n")
		if len(rest) > 0 && rest[0] == ':' {
			rest = bytes.TrimLeft(rest[1:], " \t\r\n")
			if len(rest) > 0 && rest[0] == '{' {
				return true
			}
		}
	}
}
