package manage

import (
	"context"
	"errors"
	"fmt"

	"github.com/llmproxy/llmproxy/service"
)

// Machine codes of the management API's errors.
const (
	CodeInvalidRequest      = "invalid_request"
	CodeInvalidJSON         = "invalid_json"
	CodeNotFound            = "not_found"
	CodeConflict            = "conflict"
	CodeProjectInactive     = "project_inactive"
	CodeDatabaseUnavailable = "database_unavailable"
	CodeInternal            = "internal_error"
	CodeCanceled            = "canceled"
)

// Error is a failure the caller can act on: Message is safe to show to the
// client, Code is the API's machine code, and Err the cause (for logs).
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Err }

func invalid(format string, args ...any) *Error {
	return &Error{Code: CodeInvalidRequest, Message: fmt.Sprintf(format, args...)}
}

// Code is err's machine code: the one of an *Error, else internal_error.
func Code(err error) string {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return CodeInternal
}

// classify turns a store error into an *Error with a message for the
// object concerned ("project 7"); unexpected errors stay as they are, so the
// caller reports them as internal without showing them.
func classify(err error, object string) error {
	if _, ok := errors.AsType[*Error](err); ok || err == nil {
		return err
	}
	switch {
	case errors.Is(err, service.ErrNotFound):
		return &Error{Code: CodeNotFound, Message: object + " not found", Err: err}
	case errors.Is(err, service.ErrProjectInactive):
		return &Error{Code: CodeProjectInactive, Message: object + " is inactive", Err: err}
	case errors.Is(err, service.ErrUnavailable):
		return &Error{Code: CodeDatabaseUnavailable, Message: "database unavailable, try again", Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: CodeDatabaseUnavailable, Message: "database did not answer in time, try again", Err: err}
	case errors.Is(err, context.Canceled):
		return &Error{Code: CodeCanceled, Message: "request canceled", Err: err}
	}
	return err
}
