package proxy

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// jsonScan reads the few members the proxy wants from a JSON document in
// one pass that also checks the whole document's syntax. It reads them as
// a JSON parser does that the upstream and the SDKs use (Python's json,
// JSON.parse): keys match exactly once their escapes are undone, and of
// a key given twice the last wins. Decoding whole documents instead cost
// four to five times as much on every request and answer
// (docs/performance.md).
type jsonScan struct {
	data  []byte
	pos   int
	depth int
	bad   bool // the document is not JSON

	escapedRaw, escapedKey []byte // the last key with escapes, and undone
}

// maxJSONDepth is the nesting limit of encoding/json and jsontext; a
// deeper document is invalid.
const maxJSONDepth = 10000

// document reads s.data and hands each member of its top-level object to
// visit, which must read the member's value. It reports whether the
// document is an object; s.bad tells whether it is JSON at all.
func (s *jsonScan) document(visit func(key []byte)) (object bool) {
	first := s.peek()
	if first == '{' {
		s.object(visit)
	} else {
		s.skipValue()
	}
	if s.peek() != 0 || s.pos < len(s.data) {
		s.fail() // something after the value
	}
	return first == '{'
}

func (s *jsonScan) fail() {
	s.bad = true
	s.pos = len(s.data)
}

// peek skips whitespace and returns the next byte, or 0 at the end.
func (s *jsonScan) peek() byte {
	for s.pos < len(s.data) {
		switch c := s.data[s.pos]; c {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return c
		}
	}
	return 0
}

func (s *jsonScan) skipValue() {
	switch s.peek() {
	case '{':
		s.object(nil)
	case '[':
		s.array()
	case '"':
		s.str()
	case 't':
		s.literal("true")
	case 'f':
		s.literal("false")
	case 'n':
		s.literal("null")
	default:
		s.number()
	}
}

// object reads the object that starts at s.pos. visit, if set, is given
// each key as it is between the quotes and must read the member's value.
func (s *jsonScan) object(visit func(key []byte)) {
	s.container('}', func() {
		if s.peek() != '"' {
			s.fail()
			return
		}
		key := s.str()
		if s.peek() != ':' {
			s.fail()
			return
		}
		s.pos++
		if visit != nil {
			visit(key)
		} else {
			s.skipValue()
		}
	})
}

func (s *jsonScan) array() { s.container(']', s.skipValue) }

// container reads the object or array that starts at s.pos and ends with
// end, calling item to read each member or element.
func (s *jsonScan) container(end byte, item func()) {
	if s.depth++; s.depth > maxJSONDepth {
		s.fail()
		return
	}
	s.pos++ // '{' or '['
	if s.peek() == end {
		s.pos++
		s.depth--
		return
	}
	for {
		item()
		switch s.peek() {
		case ',':
			s.pos++
		case end:
			s.pos++
			s.depth--
			return
		default:
			s.fail()
			return
		}
	}
}

// str reads the string that starts at s.pos and returns what is between
// its quotes, escapes not undone.
func (s *jsonScan) str() []byte {
	d := s.data
	start := s.pos + 1
	for i := start; i < len(d); i++ {
		for i < len(d) && !stringSpecial[d[i]] {
			i++ // most of a document is in its strings
		}
		if i == len(d) {
			break
		}
		switch c := d[i]; {
		case c == '"':
			s.pos = i + 1
			return d[start:i]
		case c == '\\':
			i++
			if i >= len(d) {
				s.fail()
				return nil
			}
			switch d[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(d) || !isHex(d[i+1]) || !isHex(d[i+2]) || !isHex(d[i+3]) || !isHex(d[i+4]) {
					s.fail()
					return nil
				}
				i += 4
			default:
				s.fail()
				return nil
			}
		case c < 0x20:
			s.fail()
			return nil
		}
	}
	s.fail()
	return nil
}

// stringSpecial marks the bytes that end a string's plain run: its closing
// quote, an escape, and the control characters JSON forbids in strings.
var stringSpecial = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (s *jsonScan) literal(word string) {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(word)) {
		s.fail()
		return
	}
	s.pos += len(word)
}

// number reads the number that starts at s.pos and returns its text.
func (s *jsonScan) number() []byte {
	d, i := s.data, s.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	default:
		s.fail()
		return nil
	}
	if i < len(d) && d[i] == '.' {
		if i++; i >= len(d) || !isDigit(d[i]) {
			s.fail()
			return nil
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		if i++; i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || !isDigit(d[i]) {
			s.fail()
			return nil
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	lit := d[s.pos:i]
	s.pos = i
	return lit
}

// keyIs reports whether a raw key is field once its escapes are undone.
func (s *jsonScan) keyIs(raw []byte, field string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == field
	}
	// A key is compared with several fields: undo its escapes once.
	if len(s.escapedRaw) != len(raw) || &s.escapedRaw[0] != &raw[0] {
		var key string
		json.Unmarshal(s.quoted(raw), &key) // valid: str checked it
		s.escapedRaw, s.escapedKey = raw, []byte(key)
	}
	return string(s.escapedKey) == field
}

// quoted returns raw, the contents of a string s just read, with its quotes.
func (s *jsonScan) quoted(raw []byte) []byte {
	start := cap(s.data) - cap(raw) - 1
	return s.data[start : start+len(raw)+2]
}

// readString reads a member into dst: a string sets it, any other value
// (null included) leaves it empty, as a later duplicate replaces an
// earlier one.
func (s *jsonScan) readString(dst *string) {
	if s.peek() != '"' {
		*dst = ""
		s.skipValue()
		return
	}
	raw := s.str()
	if s.bad {
		return
	}
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		*dst = string(raw)
		return
	}
	// Escapes, or bytes that become U+FFFD: rare enough for Unmarshal.
	json.Unmarshal(s.quoted(raw), dst)
}

// readBool reads a member into dst as readString does a string.
func (s *jsonScan) readBool(dst *bool) {
	*dst = s.peek() == 't'
	s.skipValue()
}

// readInt64 reads a member into dst as readString does a string; a number
// that is not an int64 (a fraction, an exponent, too large) leaves it 0.
func (s *jsonScan) readInt64(dst *int64) {
	*dst = 0
	if c := s.peek(); c != '-' && !isDigit(c) {
		s.skipValue()
		return
	}
	if n, ok := parseInt64(s.number()); ok && !s.bad {
		*dst = n
	}
}

// parseInt64 parses a JSON number's text as strconv.ParseInt(lit, 10, 64)
// would, without a string.
func parseInt64(lit []byte) (int64, bool) {
	neg := len(lit) > 0 && lit[0] == '-'
	if neg {
		lit = lit[1:]
	}
	if len(lit) == 0 {
		return 0, false
	}
	const limit = 1 << 63 // the magnitude of the smallest int64
	var n uint64
	for _, c := range lit {
		if !isDigit(c) || n > limit/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > limit {
			return 0, false
		}
	}
	if neg {
		return -int64(n), true // -(1<<63) wraps to itself, the smallest int64
	}
	if n == limit {
		return 0, false
	}
	return int64(n), true
}

// readObject reads a member into *dst, a pointer to a struct: an object
// fills it afresh through visit, any other value sets it nil.
func readObject[T any](s *jsonScan, dst **T, visit func(v *T, key []byte)) {
	if s.peek() != '{' {
		*dst = nil
		s.skipValue()
		return
	}
	if *dst == nil {
		*dst = new(T)
	} else {
		var zero T
		**dst = zero
	}
	v := *dst
	s.object(func(key []byte) { visit(v, key) })
}

// parseJSONRequest is parseRequest for a JSON body.
func parseJSONRequest(body []byte) (requestFields, *apiError) {
	var f requestFields
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return f, nil
	}
	var models, streams int
	s := jsonScan{data: trimmed}
	s.document(func(key []byte) {
		switch {
		case s.keyIs(key, "model"):
			models++
			s.readString(&f.Model)
		case s.keyIs(key, "stream"):
			streams++
			s.readBool(&f.Stream)
		default:
			s.skipValue()
		}
	})
	switch {
	case s.bad:
		return requestFields{}, nil
	case models > 1:
		return requestFields{}, errDuplicateModel
	case streams > 1:
		return requestFields{}, errDuplicateStream
	}
	f.Model = clipModel(f.Model)
	return f, nil
}

// scanResponseUsage reads doc's model and usage; ok is false unless doc
// is a JSON object.
func scanResponseUsage(doc []byte) (r responseUsage, ok bool) {
	s := jsonScan{data: doc}
	object := s.document(func(key []byte) {
		if s.keyIs(key, "response") {
			readObject(&s, &r.Response, s.readModelUsage)
		} else {
			s.readModelUsage(&r.modelUsage, key)
		}
	})
	return r, object && !s.bad
}

func (s *jsonScan) readModelUsage(m *modelUsage, key []byte) {
	switch {
	case s.keyIs(key, "model"):
		s.readString(&m.Model)
	case s.keyIs(key, "usage"):
		readObject(s, &m.Usage, s.readTokenCounts)
	default:
		s.skipValue()
	}
}

func (s *jsonScan) readTokenCounts(c *tokenCounts, key []byte) {
	switch {
	case s.keyIs(key, "prompt_tokens"):
		s.readInt64(&c.PromptTokens)
	case s.keyIs(key, "completion_tokens"):
		s.readInt64(&c.CompletionTokens)
	case s.keyIs(key, "input_tokens"):
		s.readInt64(&c.InputTokens)
	case s.keyIs(key, "output_tokens"):
		s.readInt64(&c.OutputTokens)
	case s.keyIs(key, "total_tokens"):
		s.readInt64(&c.TotalTokens)
	default:
		s.skipValue()
	}
}
