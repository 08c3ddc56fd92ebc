package proxy

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"strconv"
	"strings"
)

// maxFormValueBytes bounds what is read of a model or stream form field:
// one byte more than a model keeps, so that clipping it gives what
// clipping the whole value would.
const maxFormValueBytes = maxModelLen + 1

func isMultipartForm(contentType string) bool {
	t, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(t), "multipart/form-data")
}

// parseForm reads the model and stream fields of a multipart/form-data body
// (audio transcriptions and translations) as parseRequest does a JSON one.
// The reader skips file parts while it looks for the next boundary, so an
// upload is scanned, never copied. A part named model or stream counts
// towards a duplicate even when it is a file, which a form parser lists
// under that name as well.
func parseForm(contentType string, body []byte) (requestFields, *apiError) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil || params["boundary"] == "" {
		return requestFields{}, nil
	}
	var f requestFields
	var models, streams int
	var buf [maxFormValueBytes]byte
	r := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		part, err := r.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return requestFields{}, nil // malformed: the upstream's to judge
		}
		name := part.FormName()
		if name != "model" && name != "stream" {
			continue
		}
		var value string
		if part.FileName() == "" {
			n, ok := readPrefix(part, buf[:])
			if !ok {
				return requestFields{}, nil
			}
			value = string(buf[:n])
		}
		if name == "model" {
			models++
			f.Model = clipModel(strings.ToValidUTF8(value, "\uFFFD"))
		} else {
			streams++
			f.Stream, _ = strconv.ParseBool(value)
		}
	}
	switch {
	case models > 1:
		return requestFields{}, errDuplicateModel
	case streams > 1:
		return requestFields{}, errDuplicateStream
	}
	return f, nil
}

// readPrefix fills buf from r as far as r goes; the rest of a longer part
// is skipped by the next NextPart. ok is false if the body broke off.
func readPrefix(r io.Reader, buf []byte) (n int, ok bool) {
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, true
		}
		if err != nil {
			return n, false
		}
	}
	return n, true
}
