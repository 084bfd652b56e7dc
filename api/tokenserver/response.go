package tokenserver

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Path is the tokenserver route Firefox calls for Sync 1.5.
const Path = "/1.0/sync/1.5"

// DefaultDuration is the default token lifetime in seconds (the
// tokenserver's token_duration).
const DefaultDuration = 3600

// Response is the body of a successful token request.
type Response struct {
	// ID is the Hawk id.
	ID string `json:"id"`
	// Key is the Hawk key (the client MACs with the bytes of this string).
	Key string `json:"key"`
	// UID is the numeric Sync uid.
	UID uint64 `json:"uid"`
	// APIEndpoint is the storage URL, "<node>/1.5/<uid>".
	APIEndpoint string `json:"api_endpoint"`
	// Duration is the credentials' lifetime in seconds.
	Duration int64 `json:"duration"`
	// HashedFxAUID is HashFxAUID of the account, for client telemetry.
	HashedFxAUID string `json:"hashed_fxa_uid"`
	// HashAlg is the Hawk MAC algorithm, always "sha256".
	HashAlg string `json:"hashalg"`
	// NodeType is a coarse label of the storage node for client telemetry.
	NodeType string `json:"node_type"`
}

// WriteResponse writes a 200 answer with resp as JSON. resp.HashAlg is
// set to "sha256" when empty. The X-Timestamp header carries now in Unix
// seconds, as the tokenserver sends it.
func WriteResponse(w http.ResponseWriter, resp Response, now time.Time) {
	if resp.HashAlg == "" {
		resp.HashAlg = "sha256"
	}
	body, _ := json.Marshal(resp)
	writeJSON(w, http.StatusOK, body, now)
}

func writeJSON(w http.ResponseWriter, status int, body []byte, now time.Time) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Timestamp", strconv.FormatInt(now.Unix(), 10))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Error is a tokenserver error answer: an HTTP status and the JSON body
//
//	{"status": "<status>", "errors": [{"location": "..", "name": "..", "description": ".."}]}
//
// Firefox takes the cause of a 401 from "status". Errors compare equal
// under errors.Is when their HTTP status and status string match, so the
// sentinels below match errors with other descriptions.
type Error struct {
	HTTPStatus  int
	Status      string
	Location    string
	Name        string
	Description string
}

// Error describes the error.
func (e *Error) Error() string {
	return "tokenserver: " + strconv.Itoa(e.HTTPStatus) + " " + e.Status + ": " + e.Description
}

// Is matches errors of the same HTTP status and status string.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.HTTPStatus == e.HTTPStatus && t.Status == e.Status
}

// With returns a copy of e with another description.
func (e *Error) With(description string) *Error {
	c := *e
	c.Description = description
	return &c
}

// The tokenserver's errors, with the statuses, locations and names
// Mozilla's servers send.
var (
	ErrUnauthorized         = &Error{http.StatusUnauthorized, "error", "body", "", "Unauthorized"}
	ErrInvalidCredentials   = &Error{http.StatusUnauthorized, "invalid-credentials", "body", "", "Unauthorized"}
	ErrInvalidGeneration    = &Error{http.StatusUnauthorized, "invalid-generation", "body", "", "Unauthorized"}
	ErrInvalidKeysChangedAt = &Error{http.StatusUnauthorized, "invalid-keysChangedAt", "body", "", "Unauthorized"}
	ErrInvalidKeyID         = &Error{http.StatusUnauthorized, "invalid-key-id", "header", "X-KeyID", "Unauthorized"}
	ErrInvalidClientState   = &Error{http.StatusUnauthorized, "invalid-client-state", "header", "X-Client-State", "Unauthorized"}
	ErrMalformedClientState = &Error{http.StatusBadRequest, "error", "header", "X-Client-State", "Invalid client state value"}
	ErrNewUsersDisabled     = &Error{http.StatusForbidden, "new-users-disabled", "body", "", "New users are not allowed"}
	ErrUnsupportedApp       = &Error{http.StatusNotFound, "error", "url", "application", "Unsupported application"}
	ErrUnsupportedVersion   = &Error{http.StatusNotFound, "error", "url", "version", "Unsupported application version"}
	ErrInternal             = &Error{http.StatusInternalServerError, "internal-error", "internal", "", "Server error"}
	ErrUnavailable          = &Error{http.StatusServiceUnavailable, "error", "body", "", "Resource is not available"}
)

// MarshalJSON encodes the error body.
func (e *Error) MarshalJSON() ([]byte, error) {
	type instance struct {
		Location    string `json:"location"`
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	return json.Marshal(struct {
		Status string     `json:"status"`
		Errors []instance `json:"errors"`
	}{e.Status, []instance{{e.Location, e.Name, e.Description}}})
}

// WriteError answers err: an *Error (found with errors.As) as itself,
// anything else as ErrUnavailable (the directory could not serve the
// request: no leader, a timeout), with X-Timestamp set to now.
func WriteError(w http.ResponseWriter, err error, now time.Time) {
	var te *Error
	if !errors.As(err, &te) {
		te = ErrUnavailable
	}
	body, _ := json.Marshal(te)
	writeJSON(w, te.HTTPStatus, body, now)
}
