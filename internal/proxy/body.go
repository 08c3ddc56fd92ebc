package proxy

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// initialBodyBuffer is the most the proxy sets aside for a body before its
// bytes arrive: a Content-Length alone is a claim, not memory to commit.
const initialBodyBuffer = 16 << 10

// hasBody reports whether the request comes with a body to read.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// readBody reads the whole request body, up to maxBody, within bodyWait:
// the buffer grows with the bytes that arrive.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	if r.ContentLength > h.maxBody {
		return nil, errBodyTooLarge
	}
	// Not every ResponseWriter has deadlines (a test's recorder has none);
	// without one the read is bounded by the client alone. Once the body
	// has been read, net/http clears the deadline itself as it starts
	// watching for the client leaving, so it cannot end a long answer.
	if !hasBody(r) {
		return nil, nil
	}
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.bodyWait))
	size := int64(initialBodyBuffer)
	if r.ContentLength > 0 {
		size = min(r.ContentLength, size)
	}
	body := make([]byte, 0, size)
	for {
		if len(body) == cap(body) {
			body = append(body, 0)[:len(body)] // doubles the capacity
		}
		n, err := r.Body.Read(body[len(body):min(int64(cap(body)), h.maxBody+1)])
		body = body[:len(body)+n]
		switch {
		case int64(len(body)) > h.maxBody:
			return nil, errBodyTooLarge
		case err == io.EOF:
			// net/http returns the last bytes of a body of known length
			// with io.EOF, so a buffer of that length is never grown.
			return body, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, errBodyTimeout
		case err != nil:
			return nil, errBadBody
		}
	}
}
