package couch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
)

// Store is the part of the node store the CouchDB endpoint uses; *node.Store
// implements it. The methods must be safe for concurrent use.
type Store interface {
	// UUID is the store's persistent identity (the server uuid).
	UUID() string
	// UpdateSeq returns the user's last changes-feed number.
	UpdateSeq(ctx context.Context, user string) (uint64, error)
	// WaitChanges returns nil once the user's feed passes since, or ctx's
	// error.
	WaitChanges(ctx context.Context, user string, since uint64) error
	// Changes returns the user's feed after since (see node.Store.Changes).
	Changes(ctx context.Context, user string, since uint64, limit int) ([]node.Change, uint64, error)
	// GetDoc returns a document or node.ErrDocNotFound.
	GetDoc(ctx context.Context, user, coll, id string) (*node.Doc, error)
	// RevsDiff returns the revisions the store lacks.
	RevsDiff(ctx context.Context, user string, q []node.DocRevs) ([]node.DocRevs, error)
	// ApplyRevisions stores revisions with new_edits=false semantics.
	ApplyRevisions(ctx context.Context, user string, revs []node.Revision, peer string, cp *node.Checkpoint) ([]error, error)
	// GetLocal returns a _local document or node.ErrDocNotFound.
	GetLocal(ctx context.Context, user, id string) (node.LocalDoc, error)
	// PutLocal stores a _local document (node.ErrLocalConflict on a stale
	// rev, node.ErrTooManyLocal, api.ErrOverQuota).
	PutLocal(ctx context.Context, user, id string, body json.RawMessage, rev string) (string, error)
	// DeleteLocal deletes a _local document (node.ErrDocNotFound,
	// node.ErrLocalConflict).
	DeleteLocal(ctx context.Context, user, id, rev string) error
}

// Defaults of Config.
const (
	DefaultPrefix            = "/couch"
	DefaultMaxBodyBytes      = 64 << 20
	DefaultChangesTimeout    = 60 * time.Second
	DefaultMaxChangesTimeout = 5 * time.Minute
	DefaultMinHeartbeat      = 100 * time.Millisecond
	DefaultRealm             = "hce"
	// DefaultRetryAfter is the Retry-After of 503 answers: they are
	// transient (the directory unreachable for a moment, a write not
	// acknowledged yet), so clients retry soon.
	DefaultRetryAfter = 2 * time.Second
	// DefaultRecheck is how often a waiting feed checks its credentials
	// again.
	DefaultRecheck = 5 * time.Second
)

// ErrBadConfig is wrapped by Config.Validate.
var ErrBadConfig = errors.New("couch: invalid configuration")

// Config configures the CouchDB endpoint. A zero field takes its default.
type Config struct {
	// Store holds the revisions. Required.
	Store Store
	// Auth checks the credentials of every database request, as for the
	// Weave storage API. Required.
	Auth api.Authenticator
	// Logger receives failures of the store and the authenticator; nil
	// discards.
	Logger *slog.Logger
	// Prefix is the URL path of the server root, starting with "/" and
	// without a trailing "/" (default /couch). The handler expects the
	// full request path (mount it without stripping the prefix).
	Prefix string
	// MaxBodyBytes caps a request body; larger bodies get 413. Default 64
	// MiB: PouchDB sends 100 documents of up to the Weave payload limit per
	// _bulk_docs request and does not split batches on 413.
	MaxBodyBytes int64
	// ChangesTimeout is how long a longpoll or continuous _changes request
	// without a timeout parameter waits for changes (default 60 s).
	ChangesTimeout time.Duration
	// MaxChangesTimeout caps the timeout parameter of _changes; it is also
	// the wait of a request that asks for heartbeats without a timeout
	// (CouchDB's "forever"). Default 5 min.
	MaxChangesTimeout time.Duration
	// MinHeartbeat is the shortest heartbeat interval honoured; shorter
	// ones are raised to it (default 100 ms).
	MinHeartbeat time.Duration
	// Realm is the realm of the WWW-Authenticate header of 401 answers
	// (default "hce").
	Realm string
	// Stop, when closed, ends every waiting _changes feed at once, as if
	// its timeout had passed (a complete answer), so that a graceful
	// http.Server.Shutdown need not wait for them. Close it when the
	// server starts shutting down (http.Server.RegisterOnShutdown). Nil:
	// feeds end only by timeout, client or store.
	Stop <-chan struct{}
	// RetryAfter is the Retry-After of 503 answers, rounded up to whole
	// seconds (default DefaultRetryAfter, 2 s).
	RetryAfter time.Duration
	// Recheck is how often a longpoll or continuous _changes feed checks
	// its credentials again; a feed whose credentials are no longer good
	// ends at once (default DefaultRecheck, 5 s). An authenticator with
	// a Watch method (node.Authenticator) ends it at once on a
	// revocation too.
	Recheck time.Duration
}

// DefaultConfig returns a Config with the defaults filled in (Store and
// Auth still to be set).
func DefaultConfig() Config {
	return Config{
		Prefix:            DefaultPrefix,
		MaxBodyBytes:      DefaultMaxBodyBytes,
		ChangesTimeout:    DefaultChangesTimeout,
		MaxChangesTimeout: DefaultMaxChangesTimeout,
		MinHeartbeat:      DefaultMinHeartbeat,
		Realm:             DefaultRealm,
		RetryAfter:        DefaultRetryAfter,
		Recheck:           DefaultRecheck,
	}
}

// Validate reports a missing Store or Auth, a malformed Prefix or a
// negative limit.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return fmt.Errorf("%w: Store is nil", ErrBadConfig)
	case c.Auth == nil:
		return fmt.Errorf("%w: Auth is nil", ErrBadConfig)
	case c.Prefix != "" && (!strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/")):
		return fmt.Errorf("%w: Prefix %q must start with '/' and not end with one", ErrBadConfig, c.Prefix)
	case c.MaxBodyBytes < 0:
		return fmt.Errorf("%w: MaxBodyBytes %d < 0", ErrBadConfig, c.MaxBodyBytes)
	case c.ChangesTimeout < 0 || c.MaxChangesTimeout < 0 || c.MinHeartbeat < 0 || c.RetryAfter < 0 || c.Recheck < 0:
		return fmt.Errorf("%w: negative duration", ErrBadConfig)
	case strings.ContainsAny(c.Realm, "\"\\\r\n"):
		return fmt.Errorf("%w: Realm %q", ErrBadConfig, c.Realm)
	}
	return nil
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Prefix == "" {
		c.Prefix = d.Prefix
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.ChangesTimeout == 0 {
		c.ChangesTimeout = d.ChangesTimeout
	}
	if c.MaxChangesTimeout == 0 {
		c.MaxChangesTimeout = d.MaxChangesTimeout
	}
	if c.MinHeartbeat == 0 {
		c.MinHeartbeat = d.MinHeartbeat
	}
	if c.Realm == "" {
		c.Realm = d.Realm
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = d.RetryAfter
	}
	if c.Recheck == 0 {
		c.Recheck = d.Recheck
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
