package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
)

// apiError is an error the proxy itself answers, in OpenAI's shape so the
// official SDKs surface it as an API error.
type apiError struct {
	status int
	code   string
	body   []byte // {"error":{"message","type","code"}}, encoded once
	// final says that asking again will not help (a bad token, a used-up
	// limit, a bad body): the answer carries x-should-retry: false, which
	// stops the OpenAI SDKs' automatic retries. Errors that may clear by
	// themselves (the upstream or the database unavailable) leave the
	// SDKs to retry.
	final bool
}

func newAPIError(status int, typ, code, message string, final bool) *apiError {
	type inner struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	}
	body, err := json.Marshal(struct {
		Error inner `json:"error"`
	}{inner{message, typ, code}})
	if err != nil {
		panic(err) // strings always encode
	}
	return &apiError{status: status, code: code, body: append(body, '\n'), final: final}
}

const (
	final     = true
	transient = false
)

var (
	errInvalidToken = newAPIError(http.StatusUnauthorized, "authentication_error", "invalid_token",
		"Missing, malformed or unknown API token; send Authorization: Bearer <token>.", final)
	errTokenExpired = newAPIError(http.StatusUnauthorized, "authentication_error", "token_expired",
		"The API token has expired.", final)
	errTokenRevoked = newAPIError(http.StatusUnauthorized, "authentication_error", "token_revoked",
		"The API token has been revoked.", final)
	errProjectInactive = newAPIError(http.StatusForbidden, "permission_error", "project_inactive",
		"The API token's project is inactive.", final)
	errRequestLimit = newAPIError(http.StatusTooManyRequests, "rate_limit_error", "request_limit_exceeded",
		"The API token has used all the requests it allows.", final)
	errBodyTooLarge = newAPIError(http.StatusRequestEntityTooLarge, "invalid_request_error", "body_too_large",
		"The request body is too large.", final)
	errBadBody = newAPIError(http.StatusBadRequest, "invalid_request_error", "invalid_request",
		"The request body could not be read.", final)
	errBadPath = newAPIError(http.StatusBadRequest, "invalid_request_error", "invalid_request",
		"The request path has a '.' or '..' segment (plain or percent-encoded) or an encoded '/' or '\\'.", final)
	// Parsers disagree on which of two values wins, so the model recorded
	// could differ from the one the upstream serves.
	errDuplicateModel = newAPIError(http.StatusBadRequest, "invalid_request_error", "invalid_request",
		`The request body has the key "model" more than once; send it once.`, final)
	errDuplicateStream = newAPIError(http.StatusBadRequest, "invalid_request_error", "invalid_request",
		`The request body has the key "stream" more than once; send it once.`, final)
	// A stalled body may be the network's fault: the SDKs may retry it.
	errBodyTimeout = newAPIError(http.StatusRequestTimeout, "invalid_request_error", "request_timeout",
		"The request body did not arrive in time.", transient)
	errUpstreamUnavailable = newAPIError(http.StatusBadGateway, "api_error", "upstream_unavailable",
		"The upstream API could not be reached, or broke off its answer.", transient)
	errDatabaseUnavailable = newAPIError(http.StatusServiceUnavailable, "api_error", "database_unavailable",
		"The proxy's database is unavailable; retry later.", transient)
	errInternal = newAPIError(http.StatusInternalServerError, "api_error", "internal_error",
		"Internal error in the proxy.", transient)
)

// write sends the error with a request ID of its own (the upstream's
// answers carry the upstream's), which the access log line repeats.
func (e *apiError) write(w http.ResponseWriter) (requestID string) {
	requestID = newRequestID()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(e.body)))
	h.Set("X-Request-Id", requestID)
	if e.final {
		h.Set("X-Should-Retry", "false")
	}
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", "Bearer")
	}
	w.WriteHeader(e.status)
	w.Write(e.body)
	return requestID
}

// newRequestID is "req_" and 32 random hex digits, like OpenAI's IDs.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}
