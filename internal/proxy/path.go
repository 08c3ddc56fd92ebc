package proxy

import (
	"net/http"
	"net/url"
	"strings"
)

// safePath reports whether a request path may be forwarded: none of its
// segments, once percent-decoded, is "." or "..", nor holds a '/' or '\'
// of its own (%2f, %5c). An upstream, or an nginx in front of one,
// normalises such paths, so /v1/%2e%2e/manage would reach something other
// than the /v1 API the client was let into, with the project's real key.
func safePath(escaped string) bool {
	for segment := range strings.SplitSeq(escaped, "/") {
		if !strings.ContainsAny(segment, `%.\`) {
			continue // the common case: nothing to decode or look at
		}
		decoded, err := url.PathUnescape(segment)
		if err != nil || decoded == "." || decoded == ".." || strings.ContainsFunc(decoded, isPathSeparator) {
			return false // a malformed escape is nothing a client needs either
		}
	}
	return true
}

func isPathSeparator(r rune) bool { return r == '/' || r == '\\' }

// RefuseUnsafePaths answers 400 invalid_request, in OpenAI's shape, for a
// request under one of prefixes whose path safePath refuses, before
// http.ServeMux could clean it (it redirects plain dot segments) or next
// could forward it.
func RefuseUnsafePaths(next http.Handler, prefixes ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, prefix := range prefixes {
			if strings.HasPrefix(r.URL.Path, prefix) && !safePath(r.URL.EscapedPath()) {
				errBadPath.write(w)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
