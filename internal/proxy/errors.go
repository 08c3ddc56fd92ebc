package proxy

import (
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
}

func newAPIError(status int, typ, code, message string) *apiError {
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
	return &apiError{status: status, code: code, body: append(body, '\n')}
}

var (
	errInvalidToken = newAPIError(http.StatusUnauthorized, "authentication_error", "invalid_token",
		"Missing, malformed or unknown API token; send Authorization: Bearer <token>.")
	errTokenExpired = newAPIError(http.StatusUnauthorized, "authentication_error", "token_expired",
		"The API token has expired.")
	errTokenRevoked = newAPIError(http.StatusUnauthorized, "authentication_error", "token_revoked",
		"The API token has been revoked.")
	errProjectInactive = newAPIError(http.StatusForbidden, "permission_error", "project_inactive",
		"The API token's project is inactive.")
	errRequestLimit = newAPIError(http.StatusTooManyRequests, "rate_limit_error", "request_limit_exceeded",
		"The API token has used all the requests it allows.")
	errBodyTooLarge = newAPIError(http.StatusRequestEntityTooLarge, "invalid_request_error", "body_too_large",
		"The request body is too large.")
	errBadBody = newAPIError(http.StatusBadRequest, "invalid_request_error", "invalid_request",
		"The request body could not be read.")
	// Parsers disagree on which of two values wins, so the model recorded
	// could differ from the one the upstream serves.
	errDuplicateModel = newAPIError(http.StatusBadRequest, "invalid_request_error", "invalid_request",
		`The request body has the key "model" more than once; send it once.`)
	errDuplicateStream = newAPIError(http.StatusBadRequest, "invalid_request_error", "invalid_request",
		`The request body has the key "stream" more than once; send it once.`)
	errUpstreamUnavailable = newAPIError(http.StatusBadGateway, "api_error", "upstream_unavailable",
		"The upstream API could not be reached.")
	errDatabaseUnavailable = newAPIError(http.StatusServiceUnavailable, "api_error", "database_unavailable",
		"The proxy's database is unavailable; retry later.")
	errInternal = newAPIError(http.StatusInternalServerError, "api_error", "internal_error",
		"Internal error in the proxy.")
)

func (e *apiError) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(e.body)))
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", "Bearer")
	}
	w.WriteHeader(e.status)
	w.Write(e.body)
}
