package sync15

import (
	"context"
	"errors"
	"net/http"

	"github.com/hce-sync/hce/api"
)

// Store is the storage a node serves the Sync 1.5 storage API from. Users
// are HCE account names (the Authenticator maps the numeric uid of the
// path to one). All methods are safe for concurrent use.
//
// Timestamps: every write takes one timestamp T for everything it
// changes, strictly greater than the user's storage last-modified time
// before it (a store either moves T forward or fails with ErrConflict),
// and sets the last-modified time of the collection it touched and of the
// storage to T. Writes are durable when they return without error.
//
// Record writes (PutBSO, PostBSOs, batch records), for each record:
//
//   - absent or expired: it is created with the given fields; payload
//     defaults to "", sortindex to none, and without ttl it never expires;
//     modified = T;
//   - present: the given fields replace the stored ones, the others are
//     kept; modified becomes T when payload or sortindex was given (a
//     ttl-only write keeps it); a given ttl sets the expiry to T + ttl.
//
// A record is live while its expiry is in the future; expired records are
// never returned, counted or used as preconditions' targets.
//
// Collections exist from their first write (even an empty POST) until
// DeleteCollection without ids or DeleteStorage; a collection emptied by
// deleting its records keeps existing (and appears in info/collections).
//
// Errors: api.ErrNotFound (GetBSO, DeleteBSO), *ConditionError from
// Precondition.Check, ErrConflict, ErrBatchNotFound,
// ErrSizeLimitExceeded, api.ErrOverQuota; any other error is a backend
// failure (503).
type Store interface {
	// CollectionTimestamps maps each existing collection to its
	// last-modified time, and returns the storage's last-modified time.
	CollectionTimestamps(ctx context.Context, user string) (map[string]api.Stamp, api.Stamp, error)
	// CollectionCounts maps each collection with live records to their
	// number, and returns the storage's last-modified time.
	CollectionCounts(ctx context.Context, user string) (map[string]int64, api.Stamp, error)
	// CollectionUsage maps each collection with live records to the sum of
	// their payload sizes in bytes, and returns the storage's
	// last-modified time.
	CollectionUsage(ctx context.Context, user string) (map[string]int64, api.Stamp, error)
	// StorageUsage returns the payload bytes of all live records and the
	// storage's last-modified time.
	StorageUsage(ctx context.Context, user string) (int64, api.Stamp, error)

	// GetCollection reads one page of a collection from one consistent
	// view. It first calls start once with the page's description, then
	// emit once per record, in q.Sort's order (see Sort), exactly
	// Page.Count times. The records are the live ones q.Matches selects,
	// at most q.Limit of them. If start or emit returns an error the store
	// stops and returns it.
	//
	// A store must not hold the page in memory: a two-pass scan of one
	// snapshot (keys to count the page and find its last position, then
	// the records) does. With q.Full false only ID (and the sort keys)
	// need to be set. A collection that does not exist is an empty page
	// with LastModified 0.
	GetCollection(ctx context.Context, user, coll string, q *Query, start func(*Page) error, emit func(*BSO) error) error
	// GetBSO returns one live record, or api.ErrNotFound.
	GetBSO(ctx context.Context, user, coll, id string) (BSO, error)

	// PutBSO writes one record (b.ID set, fields as decoded) after
	// checking pre against the record's modified time (0 when absent), and
	// returns T.
	PutBSO(ctx context.Context, user, coll string, b *BSO, pre Precondition) (api.Stamp, error)
	// PostBSOs writes records with distinct ids atomically after checking
	// pre against the collection's last-modified time, and returns T. It
	// creates the collection (and sets its time to T) even when bs is
	// empty.
	PostBSOs(ctx context.Context, user, coll string, bs []BSO, pre Precondition) (api.Stamp, error)
	// WriteBatch creates, extends and commits batches; see BatchWrite.
	WriteBatch(ctx context.Context, user, coll string, w *BatchWrite) (api.Stamp, error)

	// DeleteCollection checks pre against the collection's last-modified
	// time, then deletes the collection (ids nil) or the records with
	// these ids (the collection stays, its time becomes T), and returns T.
	// When the collection does not exist nothing is written and the
	// storage's last-modified time is returned.
	DeleteCollection(ctx context.Context, user, coll string, ids []string, pre Precondition) (api.Stamp, error)
	// DeleteBSO checks pre against the record's modified time and deletes
	// it, returning T; api.ErrNotFound when it is absent or expired.
	DeleteBSO(ctx context.Context, user, coll, id string, pre Precondition) (api.Stamp, error)
	// DeleteStorage checks pre against the storage's last-modified time
	// and deletes every collection and record of the user (and their
	// batches). The storage's last-modified time becomes T, not zero, so
	// that later timestamps stay above every one the user was given.
	DeleteStorage(ctx context.Context, user string, pre Precondition) (api.Stamp, error)
}

// Page describes the page GetCollection is about to emit.
type Page struct {
	// LastModified is the collection's last-modified time (0 when it does
	// not exist): X-Last-Modified, and the target of the request's
	// precondition.
	LastModified api.Stamp
	// Count is the number of records that will be emitted.
	Count int
	// More reports that records beyond the page match the query.
	More bool
	// Last is the position of the last record emitted (when Count > 0).
	Last Position
}

// BatchWrite is one request of a batch upload.
//
//   - Create: make batch ID (it does not exist yet) and add BSOs to it,
//     after checking Pre against the collection's last-modified time. The
//     collection is not touched: the result is its current last-modified
//     time (0 when absent).
//   - neither Create nor Commit: add BSOs to the existing batch ID after
//     checking Pre (ErrBatchNotFound when it does not exist for this user
//     and collection, or expired). Result as for Create.
//   - Commit: add BSOs, then apply every record of the batch atomically
//     with one timestamp T, after checking Pre, and delete the batch.
//     Every record of the batch gets modified = T (whatever fields it
//     has); otherwise records are written as by PostBSOs. Result: T.
//     Create and Commit together are a batch of one request.
//
// Within a batch, a record added again with the same id is merged: the
// fields it gives replace the earlier ones. Adding records that would
// make the batch hold more than Limits.MaxRecords distinct records or
// more than Limits.MaxBytes payload bytes fails with
// ErrSizeLimitExceeded and adds nothing. Batches are durable like writes
// (they survive a restart of the store) and invisible until committed. A
// store may drop batches older than the handler's batch lifetime.
type BatchWrite struct {
	ID     string
	Create bool
	Commit bool
	BSOs   []BSO
	Limits BatchLimits
	Pre    Precondition
}

// BatchLimits bound a batch's contents.
type BatchLimits struct {
	MaxRecords int
	MaxBytes   int64
}

// Store errors besides those shared with api (api.ErrNotFound,
// api.ErrOverQuota, api.ErrUnavailable).
var (
	// ErrConflict: a concurrent write kept this one from getting a
	// timestamp above the user's last-modified time; the client retries.
	// The handler answers 503 with a short Retry-After, as Mozilla's
	// servers do in place of the specified 409.
	ErrConflict = errors.New("sync15: conflicting write")
	// ErrBatchNotFound: the batch does not exist (for this user and
	// collection), was committed, or expired. 400.
	ErrBatchNotFound = errors.New("sync15: no such batch")
	// ErrSizeLimitExceeded: a batch or request exceeds a limit of
	// info/configuration. 400 with code 17.
	ErrSizeLimitExceeded = errors.New("sync15: size limit exceeded")
)

// AuthRequest is what an Authenticator checks.
type AuthRequest struct {
	// HTTP is the request (its Authorization header, method, target and
	// host). Its body must not be read.
	HTTP *http.Request
	// UID is the numeric user id of the path (1 to 10 digits).
	UID string
	// AllowExpired is set for GET info/collections, which Mozilla's
	// servers serve to recently expired credentials so that clients can
	// poll for changes before fetching new ones.
	AllowExpired bool
}

// Identity is an authenticated request's user.
type Identity struct {
	// User is the HCE account name the request acts as.
	User string
	// VerifyBody, when set, is called with the body of a PUT or POST
	// (and its Content-Type) before it is decoded; an error refuses the
	// request with 401 (Hawk payload hashes).
	VerifyBody func(contentType string, body []byte) error
}

// Authenticator checks the credentials of a storage request for the uid
// in its path. It returns the identity when they are valid, an error
// wrapping api.ErrUnauthorized when they are not (401; an error with a
// WWWAuthenticate() string method supplies the WWW-Authenticate header),
// and any other error when the check could not be made (503).
type Authenticator interface {
	Authenticate(ctx context.Context, r AuthRequest) (Identity, error)
}
