package sync15

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/hce-sync/hce/api"
)

// codeUnknown is the Weave code of errors without a more specific one
// (the body Mozilla's servers send with 401, 404 and the like).
const codeUnknown api.Code = 0

// httpError is an answer with a fixed status and Weave code.
type httpError struct {
	status int
	code   api.Code
	msg    string
}

func (e *httpError) Error() string { return "sync15: " + e.msg }

// Errors only the handler produces.
var (
	errRouteNotFound    = &httpError{http.StatusNotFound, codeUnknown, "no such route"}
	errMethodNotAllowed = &httpError{http.StatusMethodNotAllowed, codeUnknown, "method not allowed"}
	errBodyTooLarge     = &httpError{http.StatusRequestEntityTooLarge, api.CodeSizeLimitExceeded, "request body too large"}
	errMediaType        = &httpError{http.StatusUnsupportedMediaType, codeUnknown, "unsupported Content-Type"}
	errNotAcceptable    = &httpError{http.StatusNotAcceptable, codeUnknown, "no acceptable output format"}
	errBadRequest       = &httpError{http.StatusBadRequest, api.CodeIllegalMethod, "bad request"}
	errKnownBadPayload  = &httpError{http.StatusBadRequest, api.CodeInvalidWBO, "known-bad crypto payload"}
)

// codeBodies holds the bodies of the codes in use.
var codeBodies = map[api.Code][]byte{}

func init() {
	for _, c := range []api.Code{codeUnknown, api.CodeIllegalMethod, api.CodeBadJSON, api.CodeInvalidWBO,
		api.CodeOverQuota, api.CodeSizeLimitExceeded} {
		codeBodies[c] = []byte(strconv.Itoa(int(c)))
	}
}

// errorWriter turns errors into HTTP answers; writeError is the single
// place where that happens.
type errorWriter struct {
	log           *slog.Logger
	retryAfter    string
	conflictRetry string
}

// writeError answers err. Mozilla's servers send every error body as a
// bare JSON number, a Weave code; this handler does the same:
//
//   - *ConditionError: 304 without body, or 412 (code 0), with
//     X-Last-Modified;
//   - ErrMalformedJSON: 400, code 6; ErrInvalidBSOs, an InvalidBSO or a
//     known-bad crypto payload: 400, code 8; ErrSizeLimitExceeded: 400,
//     code 17; api.ErrOverQuota: 400, code 14;
//   - ErrBadQuery (bad parameters, headers or batch id) and
//     ErrBatchNotFound: 400, code 1;
//   - api.ErrNotFound and unknown routes: 404; a known route with
//     another method: 405; a body over max_request_bytes: 413, code 17;
//     an unsupported Content-Type: 415; no acceptable output: 406 (code 0);
//   - api.ErrUnauthorized: 401 (code 0), with the error's
//     WWWAuthenticate() value, or "Hawk", as WWW-Authenticate;
//   - ErrConflict: 503 with Retry-After of the conflict delay (code 0);
//   - anything else (api.ErrUnavailable, backend failures): 503 with
//     Retry-After and a JSON string body naming a crash id that is logged.
func (ew *errorWriter) writeError(w http.ResponseWriter, r *http.Request, err error) {
	h := w.Header()
	var ce *ConditionError
	var he *httpError
	var ib InvalidBSO
	switch {
	case errors.As(err, &ce):
		h.Set("X-Last-Modified", ce.LastModified.String())
		if ce.NotModified {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		ew.send(w, http.StatusPreconditionFailed, codeUnknown)
	case errors.As(err, &he):
		ew.send(w, he.status, he.code)
	case errors.Is(err, ErrMalformedJSON):
		ew.send(w, http.StatusBadRequest, api.CodeBadJSON)
	case errors.Is(err, ErrInvalidBSOs), errors.As(err, &ib):
		ew.send(w, http.StatusBadRequest, api.CodeInvalidWBO)
	case errors.Is(err, ErrSizeLimitExceeded):
		ew.send(w, http.StatusBadRequest, api.CodeSizeLimitExceeded)
	case errors.Is(err, api.ErrOverQuota):
		ew.send(w, http.StatusBadRequest, api.CodeOverQuota)
	case errors.Is(err, ErrBadQuery), errors.Is(err, ErrBatchNotFound):
		ew.send(w, http.StatusBadRequest, api.CodeIllegalMethod)
	case errors.Is(err, api.ErrNotFound):
		ew.send(w, http.StatusNotFound, codeUnknown)
	case errors.Is(err, api.ErrUnauthorized):
		challenge := "Hawk"
		var wa interface{ WWWAuthenticate() string }
		if errors.As(err, &wa) {
			challenge = wa.WWWAuthenticate()
		}
		h.Set("WWW-Authenticate", challenge)
		ew.send(w, http.StatusUnauthorized, codeUnknown)
	case errors.Is(err, ErrConflict):
		h.Set("Retry-After", ew.conflictRetry)
		ew.send(w, http.StatusServiceUnavailable, codeUnknown)
	default:
		var id [8]byte
		_, _ = rand.Read(id[:])
		crash := hex.EncodeToString(id[:])
		ew.log.Error("sync15 request failed", "method", r.Method, "path", r.URL.Path, "crash_id", crash, "err", err)
		h.Set("Retry-After", ew.retryAfter)
		body := api.AppendJSONString(nil, "application error: crash id "+crash)
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(body)
	}
}

// send writes status with a Weave code body.
func (ew *errorWriter) send(w http.ResponseWriter, status int, c api.Code) {
	body, ok := codeBodies[c]
	if !ok {
		body = []byte(strconv.Itoa(int(c)))
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
