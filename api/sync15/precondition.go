package sync15

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/hce-sync/hce/api"
)

// Condition is the kind of a request's precondition header.
type Condition uint8

// The conditions.
const (
	// CondNone: the request has no precondition.
	CondNone Condition = iota
	// CondIfModifiedSince: X-If-Modified-Since; the request is answered
	// 304 (and a write not made) when the target's last-modified time is
	// at or before Since.
	CondIfModifiedSince
	// CondIfUnmodifiedSince: X-If-Unmodified-Since; the request fails with
	// 412 (and a write is not made) when the target's last-modified time
	// is after Since. Since 0 means "only if the target does not exist".
	CondIfUnmodifiedSince
)

// Precondition is a request's X-If-Modified-Since or X-If-Unmodified-Since
// header. The target whose last-modified time it is checked against is
// the request's resource: the record for storage/{coll}/{id}, the
// collection for storage/{coll} (0 when it does not exist), the user's
// whole storage otherwise.
type Precondition struct {
	Cond  Condition
	Since api.Stamp
}

// Sentinels matched by the errors Precondition.Check returns.
var (
	ErrNotModified        = errors.New("sync15: not modified")
	ErrPreconditionFailed = api.ErrPreconditionFailed
)

// ConditionError is a failed precondition: the answer is 304 (NotModified)
// or 412, with X-Last-Modified set to LastModified. It matches
// ErrNotModified or ErrPreconditionFailed.
type ConditionError struct {
	NotModified  bool
	LastModified api.Stamp
}

// Error describes the failure.
func (e *ConditionError) Error() string {
	if e.NotModified {
		return "sync15: not modified since " + e.LastModified.String()
	}
	return "sync15: modified at " + e.LastModified.String()
}

// Unwrap returns the matching sentinel.
func (e *ConditionError) Unwrap() error {
	if e.NotModified {
		return ErrNotModified
	}
	return ErrPreconditionFailed
}

// Check returns nil when a target last modified at lastModified passes the
// precondition, and a *ConditionError otherwise. Stores call it with the
// target's time inside the same atomic step as the write.
func (p Precondition) Check(lastModified api.Stamp) error {
	switch p.Cond {
	case CondIfModifiedSince:
		if lastModified <= p.Since {
			return &ConditionError{NotModified: true, LastModified: lastModified}
		}
	case CondIfUnmodifiedSince:
		if lastModified > p.Since {
			return &ConditionError{LastModified: lastModified}
		}
	}
	return nil
}

// ParsePrecondition reads the precondition headers of a request. Either
// header, once, with a non-negative decimal timestamp, is accepted; both
// at once, a repeated header or a bad value give an error wrapping
// ErrBadQuery (400).
func ParsePrecondition(h http.Header) (Precondition, error) {
	ims := h.Values("X-If-Modified-Since")
	ius := h.Values("X-If-Unmodified-Since")
	switch {
	case len(ims) > 0 && len(ius) > 0:
		return Precondition{}, fmt.Errorf("%w: both X-If-Modified-Since and X-If-Unmodified-Since", ErrBadQuery)
	case len(ims) > 1 || len(ius) > 1:
		return Precondition{}, fmt.Errorf("%w: repeated precondition header", ErrBadQuery)
	case len(ims) == 1:
		ts, err := ParseTimestamp(ims[0])
		if err != nil {
			return Precondition{}, err
		}
		return Precondition{Cond: CondIfModifiedSince, Since: ts}, nil
	case len(ius) == 1:
		ts, err := ParseTimestamp(ius[0])
		if err != nil {
			return Precondition{}, err
		}
		return Precondition{Cond: CondIfUnmodifiedSince, Since: ts}, nil
	}
	return Precondition{}, nil
}
