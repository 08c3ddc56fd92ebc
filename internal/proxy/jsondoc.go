package proxy

import (
	"bytes"
	"io"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// JSON documents (request bodies, responses, SSE events) are read with
// jsontext, the decoder of go-json-experiment (encoding/json/v2's
// prototype), as the upstream's parser and the SDKs read them (Python's
// json, JSON.parse): a name matches only exactly, once its escapes are
// undone, and of a name given twice the last wins. The few members wanted
// are read as they pass and the rest is skipped, checked but not decoded.
// Invalid UTF-8 reads as U+FFFD, as encoding/json and Python read it.
var decodeOptions = []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}

// docReader reads one document. It is pooled, so a request reuses a
// decoder and its state instead of allocating them.
type docReader struct {
	buf  bytes.Buffer // wraps the document, which the decoder then reads in place
	dec  jsontext.Decoder
	name []byte // the current name, its escapes undone, if it had any
}

var docReaders = sync.Pool{New: func() any { return new(docReader) }}

func newDocReader(doc []byte) *docReader {
	d := docReaders.Get().(*docReader)
	d.buf = *bytes.NewBuffer(doc)
	d.dec.Reset(&d.buf, decodeOptions...)
	return d
}

func (d *docReader) release() {
	d.buf = bytes.Buffer{}
	d.dec.Reset(&d.buf) // lets go of the document
	if cap(d.name) > 4<<10 {
		d.name = nil // a rare long escaped name is not kept in the pool
	}
	docReaders.Put(d)
}

// document reads the top-level object, handing each member's name to
// visit, which must read its value. ok is false unless doc is an object
// and valid JSON.
func (d *docReader) document(visit func(name []byte) error) (ok bool) {
	if d.dec.PeekKind() != '{' {
		return false
	}
	if d.object(visit) != nil {
		return false
	}
	_, err := d.dec.ReadToken()
	return err == io.EOF // nothing after the object
}

func (d *docReader) object(visit func(name []byte) error) error {
	if _, err := d.dec.ReadToken(); err != nil { // '{'
		return err
	}
	for d.dec.PeekKind() == '"' {
		quoted, err := d.dec.ReadValue()
		if err != nil {
			return err
		}
		if err := visit(d.unquoteName(quoted)); err != nil {
			return err
		}
	}
	_, err := d.dec.ReadToken() // '}', or what is wrong
	return err
}

func (d *docReader) unquoteName(quoted jsontext.Value) []byte {
	raw := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	d.name, _ = jsontext.AppendUnquote(d.name[:0], quoted) // invalid UTF-8 becomes U+FFFD
	return d.name
}

func (d *docReader) skip() error {
	_, err := d.dec.ReadValue()
	return err
}

// readString reads a value into dst: a string sets it, any other value
// leaves it empty.
func (d *docReader) readString(dst *string) error {
	v, err := d.dec.ReadValue()
	if err != nil {
		return err
	}
	*dst = ""
	if v.Kind() == '"' {
		raw := v[1 : len(v)-1]
		if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
			*dst = string(raw)
		} else {
			s, _ := jsontext.AppendUnquote(nil, v)
			*dst = string(s)
		}
	}
	return nil
}

func (d *docReader) readBool(dst *bool) error {
	v, err := d.dec.ReadValue()
	*dst = err == nil && v.Kind() == 't'
	return err
}

// readInt64 reads a value into dst; anything but an integer that fits
// leaves it 0.
func (d *docReader) readInt64(dst *int64) error {
	v, err := d.dec.ReadValue()
	if err != nil {
		return err
	}
	*dst = 0
	if v.Kind() == '0' {
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			*dst = n
		}
	}
	return nil
}

// readObject reads a value into *dst: an object fills it afresh through
// visit, any other value sets it nil.
func readObject[T any](d *docReader, dst **T, visit func(v *T, name []byte) error) error {
	if d.dec.PeekKind() != '{' {
		*dst = nil
		return d.skip()
	}
	if *dst == nil {
		*dst = new(T)
	} else {
		var zero T
		**dst = zero
	}
	v := *dst
	return d.object(func(name []byte) error { return visit(v, name) })
}

// parseJSONRequest is parseRequest for a JSON body.
var nameModel, nameStream = []byte("model"), []byte("stream")

func parseJSONRequest(body []byte) (requestFields, *apiError) {
	var f requestFields
	var models, streams int
	d := newDocReader(body)
	defer d.release()
	ok := d.document(func(name []byte) error {
		switch {
		case string(name) == "model":
			models++
			return d.readString(&f.Model)
		case string(name) == "stream":
			streams++
			return d.readBool(&f.Stream)
		// Upstreams written in Go (Ollama, many gateways) read JSON as
		// encoding/json does, folding case, so for them "MODEL" is a
		// second model: counted, never read.
		case bytes.EqualFold(name, nameModel):
			models++
		case bytes.EqualFold(name, nameStream):
			streams++
		}
		return d.skip()
	})
	switch {
	case !ok:
		return requestFields{}, nil
	case models > 1:
		return requestFields{}, errDuplicateModel
	case streams > 1:
		return requestFields{}, errDuplicateStream
	}
	f.Model = clipModel(f.Model)
	return f, nil
}

// readResponseUsage reads doc's model and usage; ok is false unless doc
// is a JSON object.
func readResponseUsage(doc []byte) (r responseUsage, ok bool) {
	d := newDocReader(doc)
	defer d.release()
	ok = d.document(func(name []byte) error {
		if string(name) == "response" {
			return readObject(d, &r.Response, d.readModelUsage)
		}
		return d.readModelUsage(&r.modelUsage, name)
	})
	return r, ok
}

func (d *docReader) readModelUsage(m *modelUsage, name []byte) error {
	switch string(name) {
	case "model":
		return d.readString(&m.Model)
	case "usage":
		return readObject(d, &m.Usage, d.readTokenCounts)
	}
	return d.skip()
}

func (d *docReader) readTokenCounts(c *tokenCounts, name []byte) error {
	switch string(name) {
	case "prompt_tokens":
		return d.readInt64(&c.PromptTokens)
	case "completion_tokens":
		return d.readInt64(&c.CompletionTokens)
	case "input_tokens":
		return d.readInt64(&c.InputTokens)
	case "output_tokens":
		return d.readInt64(&c.OutputTokens)
	case "total_tokens":
		return d.readInt64(&c.TotalTokens)
	}
	return d.skip()
}
