package api

import (
	"context"
	"errors"
	"fmt"
	"unsafe"
)

// Limits of the protocol (weave-api.md 1.1, 2.5).
const (
	MaxIDBytes        = 64
	MaxPayloadBytes   = 256 * 1024
	MinSortIndex      = -999999999
	MaxSortIndex      = 999999999
	MaxTTLSeconds     = 31536000
	BatchMaxCount     = 100
	BatchMaxBytes     = 1024 * 1024
	MaxCollectionName = 32
)

// Field is a bit set of the WBO fields present in a request body or stored
// in a record.
type Field uint8

// The WBO fields a client can set.
const (
	FieldPayload Field = 1 << iota
	FieldSortIndex
	FieldParentID
	FieldPredecessorID
	FieldTTL
)

// WBO is one Weave Basic Object, as decoded from a client (Has says which
// fields the body carried) or as read from a store (Has says which fields
// the record holds).
type WBO struct {
	ID string
	// Modified is the server time of the last payload write; zero means
	// null (a record created by a payload-less PUT).
	Modified      Stamp
	Has           Field
	SortIndex     int64
	Payload       string
	ParentID      string
	PredecessorID string
	// TTL is the requested lifetime in seconds (input only); zero with
	// FieldTTL set means "expires at once".
	TTL int64
	// Plain is a hint a store may set on the records it reads: the strings
	// it marks are known to be printable ASCII without '"' and '\\', so
	// AppendWBOJSON copies them between quotes without scanning them. Zero
	// (no hint) is always correct; decoders never set it.
	Plain Plain
}

// Plain marks the strings of a WBO that need no escaping in JSON (see
// WBO.Plain).
type Plain uint8

// The strings a Plain hint can mark.
const (
	PlainID Plain = 1 << iota
	PlainPayload
	PlainParentID
	PlainPredecessorID
)

// Sort is the sort= query parameter.
type Sort uint8

// The sort orders of GET/DELETE storage/{coll}.
const (
	SortNone   Sort = iota // insertion order
	SortOldest             // modified ascending
	SortNewest             // modified descending
	SortIndex              // sortindex descending
)

// Query holds the parsed filters of GET and DELETE storage/{coll}. A Has*
// flag false means the filter is absent. Limit and Offset are already
// normalised: Limit <= 0 means no limit; Offset is zero unless Limit > 0.
type Query struct {
	IDs              []string
	HasIDs           bool
	ParentID         string
	HasParentID      bool
	PredecessorID    string
	HasPredecessorID bool
	Older, Newer     Stamp
	HasOlder         bool
	HasNewer         bool
	IndexAbove       float64
	IndexBelow       float64
	HasIndexAbove    bool
	HasIndexBelow    bool
	Limit, Offset    int
	Sort             Sort
	Full             bool
}

// Precondition is the X-If-Unmodified-Since header of a write: when Set, the
// write fails with ErrPreconditionFailed if the collection's last modified
// time is greater than Since.
type Precondition struct {
	Set   bool
	Since Stamp
}

// WriteResult is the outcome of a single-record write or a delete.
type WriteResult struct {
	// Timestamp is the request's server time, sent as X-Weave-Timestamp.
	Timestamp Stamp
	// Modified is the body of a PUT response: the record's modified time
	// after the write (zero = null for a new payload-less record).
	Modified Stamp
	// QuotaRemaining is the quota left in bytes, or -1 when quotas are off.
	QuotaRemaining int64
}

// BatchResult is the store's outcome of a POST of valid WBOs.
type BatchResult struct {
	Timestamp      Stamp
	Success        []string
	Failed         map[string][]string
	QuotaRemaining int64
}

// Store is the storage a node serves the Weave storage API from. All
// methods are safe for concurrent use. Reads return the node's current time
// (Now) for X-Weave-Timestamp, taken so that no record that becomes visible
// later can carry a modified time at or below it. Writes are durable (synced
// to disk) when they return without error, and every write's timestamp is
// strictly greater than any timestamp the user has been given before.
//
// Errors: ErrNotFound (GetItem), ErrPreconditionFailed, ErrOverQuota; any
// other error is a backend failure (503).
type Store interface {
	// Healthy reports whether the store can serve requests.
	Healthy(ctx context.Context) error
	// CollectionTimestamps maps each non-empty collection to its last
	// modified time.
	CollectionTimestamps(ctx context.Context, user string) (map[string]Stamp, Stamp, error)
	// CollectionCounts maps each collection with live records to their count.
	CollectionCounts(ctx context.Context, user string) (map[string]int64, Stamp, error)
	// CollectionUsage maps each collection with live records to the sum of
	// the UTF-8 byte lengths of their payloads.
	CollectionUsage(ctx context.Context, user string) (map[string]int64, Stamp, error)
	// Quota returns the bytes counted against the user's quota (the live
	// payload bytes, plus whatever else the store counts: the node counts
	// conflicting revisions and replicators' _local documents) and the
	// quota in bytes (0 when quotas are off).
	Quota(ctx context.Context, user string) (used, limit int64, now Stamp, err error)
	// GetCollection streams the live records matching q, in q's order,
	// after offset and limit, from one consistent view of the collection:
	// it calls start once with their number and the request's time, then
	// emit once per record, exactly that many times (with q.Full false
	// only ID needs to be set). The WBO given to emit, strings included,
	// is valid only during the call. When start or emit returns an error
	// the store stops and returns it. The store must not hold the answer
	// in memory (its memory per call is bounded whatever the collection's
	// size) nor hold a lock that blocks the user's writers while emit
	// runs: emit writes to the network. A collection that does not exist
	// has no records.
	GetCollection(ctx context.Context, user, coll string, q *Query, start func(n int, now Stamp) error, emit func(w *WBO) error) error
	// GetItem returns one live record or ErrNotFound.
	GetItem(ctx context.Context, user, coll, id string) (WBO, Stamp, error)
	// CheckWrite reports the error a write to coll would fail with before
	// its body is looked at (ErrOverQuota, then ErrPreconditionFailed), or
	// nil. The handlers use it to answer in the protocol's order of checks.
	CheckWrite(ctx context.Context, user, coll string, pre Precondition) error
	// PutItem writes one validated record (w.ID set). With FieldPayload the
	// record is created or replaced in the given fields and stamped; without
	// it only the given metadata fields change and modified is kept.
	PutItem(ctx context.Context, user, coll string, w WBO, pre Precondition) (WriteResult, error)
	// PostItems writes validated records atomically with one timestamp.
	// Later records with the same id win. Each record follows PutItem's
	// rules.
	PostItems(ctx context.Context, user, coll string, ws []WBO, pre Precondition) (BatchResult, error)
	// DeleteCollection deletes the records matching q (all when q has no
	// filter) and returns the request timestamp.
	DeleteCollection(ctx context.Context, user, coll string, q *Query, pre Precondition) (WriteResult, error)
	// DeleteItem deletes one record; deleting a missing record succeeds.
	DeleteItem(ctx context.Context, user, coll, id string, pre Precondition) (WriteResult, error)
	// DeleteStorage deletes every record of the user.
	DeleteStorage(ctx context.Context, user string) (WriteResult, error)
}

// EmitRecords answers a GetCollection call from records held in memory:
// start(len(ws), now), then emit for each record in order. It returns the
// first error of start or emit.
func EmitRecords(ws []WBO, now Stamp, start func(n int, now Stamp) error, emit func(w *WBO) error) error {
	if err := start(len(ws), now); err != nil {
		return err
	}
	for i := range ws {
		w := ws[i]
		if err := emit(&w); err != nil {
			return err
		}
	}
	return nil
}

// ReadCollection runs s.GetCollection and returns the records as a slice,
// with copies of their strings and without Plain hints, and the request's
// time; a store that
// emits another number of records than it counted is an error. It is for callers
// that want the whole answer in memory (tests, small collections); the
// storage handler streams.
func ReadCollection(ctx context.Context, s Store, user, coll string, q *Query) ([]WBO, Stamp, error) {
	var out []WBO
	var now Stamp
	var buf []byte
	str := func(v string) string {
		if v == "" {
			return ""
		}
		if cap(buf)-len(buf) < len(v) {
			buf = make([]byte, 0, max(32<<10, len(v)))
		}
		at := len(buf)
		buf = append(buf, v...)
		return unsafe.String(&buf[at], len(v))
	}
	want := 0
	err := s.GetCollection(ctx, user, coll, q, func(n int, t Stamp) error {
		now, want = t, n
		out = make([]WBO, 0, min(n, 1<<16))
		return nil
	}, func(w *WBO) error {
		c := *w
		c.Plain = 0
		c.ID, c.Payload, c.ParentID, c.PredecessorID = str(w.ID), str(w.Payload), str(w.ParentID), str(w.PredecessorID)
		out = append(out, c)
		return nil
	})
	if err == nil && len(out) != want {
		err = fmt.Errorf("api: store counted %d records and emitted %d", want, len(out))
	}
	if err != nil {
		return nil, 0, err
	}
	if out == nil {
		out = []WBO{}
	}
	return out, now, nil
}

// Credentials are what a request's Authorization header carried.
type Credentials struct {
	// Scheme is "basic" or "bearer".
	Scheme string
	// User and Password are set for Basic (User already turned into the
	// account name when it was an e-mail address).
	User, Password string
	// Token is set for Bearer.
	Token string
}

// Authenticator checks the credentials of a storage request for the user
// named in its path. It returns nil when they are valid for that user, and
// ErrUnauthorized (or a wrapped form) otherwise; other errors mean the
// check could not be made (503).
type Authenticator interface {
	Authenticate(ctx context.Context, pathUser string, c Credentials) error
}

// Accounts is the user API's view of the account database (the
// directory). Methods are safe for concurrent use; writes are durable when
// they return.
type Accounts interface {
	// UserExists reports whether the account name is taken.
	UserExists(ctx context.Context, user string) (bool, error)
	// CreateUser creates an account with an already validated name,
	// password and (possibly empty) e-mail. ErrUserExists if taken.
	CreateUser(ctx context.Context, user, password, email string) error
	// DeleteUser removes an account.
	DeleteUser(ctx context.Context, user string) error
	// CheckPassword returns nil when password is the user's, else
	// ErrUnauthorized.
	CheckPassword(ctx context.Context, user, password string) error
	// StorageNode returns the base URL (ending in "/") of the storage node
	// that serves the user first, "" when none can be assigned, or
	// ErrUserNotFound.
	StorageNode(ctx context.Context, user string) (string, error)
	// SetEmail changes the user's e-mail address.
	SetEmail(ctx context.Context, user, email string) error
	// SetPassword changes the user's password (already checked for strength).
	SetPassword(ctx context.Context, user, password string) error
	// RequestPasswordReset creates a reset code and mails it to the user.
	// ErrUserNotFound, ErrNoEmail, or a backend/mail error (503).
	RequestPasswordReset(ctx context.Context, user string) error
	// ClearPasswordReset drops a pending reset code.
	ClearPasswordReset(ctx context.Context, user string) error
	// ResetPassword sets a new password if code is the user's pending reset
	// code. ErrUserNotFound, ErrBadResetCode.
	ResetPassword(ctx context.Context, user, code, password string) error
}

// Sentinel errors shared by the handlers and the implementations of the
// interfaces above. writeError maps them to HTTP answers.
var (
	ErrNotFound           = errors.New("api: not found")
	ErrPreconditionFailed = errors.New("api: collection modified since")
	ErrOverQuota          = errors.New("api: over quota")
	ErrUnauthorized       = errors.New("api: unauthorized")
	ErrUserExists         = errors.New("api: user exists")
	ErrUserNotFound       = errors.New("api: no such user")
	ErrNoEmail            = errors.New("api: no e-mail address on file")
	ErrBadResetCode       = errors.New("api: invalid password reset code")
	ErrUnavailable        = errors.New("api: service unavailable")
)
