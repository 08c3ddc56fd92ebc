package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/llmproxy/llmproxy/internal/manage"
)

// maxBodyBytes is the largest management request body.
const maxBodyBytes = 1 << 20

// decodeJSON reads the body into v strictly: one JSON object, no unknown
// fields, the right types. The api wrapper has limited the body to maxBodyBytes.
func decodeJSON(r *http.Request, v any) error {
	if r.ContentLength > maxBodyBytes {
		return errBodyTooLarge
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return errBodyTooLarge
		}
		return &manage.Error{Code: manage.CodeInvalidJSON, Message: "request body must be a single JSON object"}
	}
	return nil
}

var errBodyTooLarge = &manage.Error{Code: codeBodyTooLarge, Message: fmt.Sprintf("request body larger than %d bytes", maxBodyBytes)}

// decodeError explains a decoding failure; encoding/json's messages name
// the problem without revealing anything of the server.
func decodeError(err error) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return errBodyTooLarge
	}
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if e.Field == "" {
			return &manage.Error{Code: manage.CodeInvalidRequest, Message: "request body must be a JSON object", Err: err}
		}
		return &manage.Error{Code: manage.CodeInvalidRequest, Message: fmt.Sprintf("%s: want %s", e.Field, jsonTypeName(e.Type)), Err: err}
	}
	if _, ok := errors.AsType[*json.SyntaxError](err); ok || errors.Is(err, io.ErrUnexpectedEOF) {
		return &manage.Error{Code: manage.CodeInvalidJSON, Message: "malformed JSON: " + strings.TrimPrefix(err.Error(), "json: "), Err: err}
	}
	if errors.Is(err, io.EOF) {
		return &manage.Error{Code: manage.CodeInvalidJSON, Message: "request body is empty; want a JSON object", Err: err}
	}
	// Unknown fields and the like.
	return &manage.Error{Code: manage.CodeInvalidRequest, Message: strings.TrimPrefix(err.Error(), "json: "), Err: err}
}

// jsonTypeName says in JSON terms what a field's Go type accepts.
func jsonTypeName(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[jsonID]():
		return "an id (a positive integer, as a string or a number)"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	}
	return "a value of type " + t.String()
}

// jsonID is an id in a request body: "12" as the API writes ids, or 12.
// Absent or null leaves it 0.
type jsonID int64

func (id *jsonID) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	badID := &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[jsonID]()}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		n, err := manage.ParseID(s)
		if err != nil {
			return badID
		}
		*id = jsonID(n)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil || n <= 0 {
		return badID
	}
	*id = jsonID(n)
	return nil
}

// nullableInt tells an absent field (Set false) from null or a number.
type nullableInt struct {
	Set   bool
	Value int64 // null: 0
}

func (n *nullableInt) UnmarshalJSON(b []byte) error {
	n.Set = true
	if string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, &n.Value)
}
