package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/node"
)

// Store is what replication needs of a node's store; *node.Store
// implements it. See node.Store for the semantics of each method.
type Store interface {
	UUID() string
	UpdateSeq(ctx context.Context, user string) (uint64, error)
	Changes(ctx context.Context, user string, since uint64, limit int) ([]node.Change, uint64, error)
	GetDocs(ctx context.Context, user string, refs []node.DocRef) ([]*node.Doc, error)
	RevsDiff(ctx context.Context, user string, q []node.DocRevs) ([]node.DocRevs, error)
	ApplyRevisions(ctx context.Context, user string, revs []node.Revision, peer string, cp *node.Checkpoint) ([]error, error)
	GetCheckpoint(ctx context.Context, user, peer string) (node.Checkpoint, error)
	SetCheckpoint(ctx context.Context, user, peer string, cp node.Checkpoint) error
	SetChangeNotifier(n node.ChangeNotifier)
}

var _ Store = (*node.Store)(nil)

// Errors of the Replicator.
var (
	// ErrClosed: the Replicator is closed (or its Start context ended).
	ErrClosed = errors.New("replication: closed")
	// ErrNotStarted: Sync or Sweep was called before Start.
	ErrNotStarted = errors.New("replication: not started")
	// ErrNotShared: this node does not hold the user, or the peer is not
	// in the user's replica set, so nothing is pulled.
	ErrNotShared = errors.New("replication: user not shared with the peer")
	// ErrProtocol: a peer answered with a message that breaks the
	// protocol (wrong type, counts or sequence numbers).
	ErrProtocol = errors.New("replication: protocol violation")
)

// Stats are the Replicator's counters since New.
type Stats struct {
	// Pulls counts completed pulls of one user from one peer.
	Pulls uint64
	// PulledRevisions counts revisions a pull handed to the store and the
	// store accepted (new or already known).
	PulledRevisions uint64
	// RefusedRevisions counts revisions refused, by this replicator's
	// checks or by the store (bad hash, bad body, not asked for).
	RefusedRevisions uint64
	// NoticesSent counts notices (one per user) sent to peers;
	// NoticesReceived those accepted, NoticesRefused those about users
	// not shared with their sender.
	NoticesSent, NoticesReceived, NoticesRefused uint64
	// RequestsServed counts requests answered; RequestsRefused those
	// refused (malformed, or about users not shared with the caller).
	RequestsServed, RequestsRefused uint64
	// Errors counts failed pulls, notices and sweeps of a peer.
	Errors uint64
	// SyncsServed counts SyncRequests answered (a peer waited for this
	// node to hold its write before acknowledging it).
	SyncsServed uint64
}

type counters struct {
	pulls, pulled, refused, sent, received, noticeRefused, served, reqRefused, errors, syncs atomic.Uint64
}

// Replicator pulls the users this node holds from the other nodes of each
// user's replica set, serves the same to them, and sends them push notices
// when this node's store changes. It runs one pull goroutine per peer with
// work (not per user), a notice sender per peer with notices, and a
// sweeper. All methods are safe for concurrent use.
type Replicator struct {
	cfg  Config
	st   Store
	mem  Membership
	tr   Transport
	log  *slog.Logger
	self peer.ID
	c    counters

	mu      sync.Mutex
	started bool
	closed  bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	loops   map[peer.ID]*peerLoop
	outbox  map[peer.ID]map[string]uint64
	sending map[peer.ID]bool

	nmu      sync.Mutex
	notes    map[string]note
	noteWake chan struct{}
	noted    atomic.Bool // closed: drop notes
}

// New returns a Replicator for cfg. It does nothing until Start.
func New(cfg Config) (*Replicator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Replicator{
		cfg:      cfg,
		st:       cfg.Store,
		mem:      cfg.Membership,
		tr:       cfg.Transport,
		log:      cfg.Logger,
		self:     cfg.Transport.Self(),
		loops:    map[peer.ID]*peerLoop{},
		outbox:   map[peer.ID]map[string]uint64{},
		sending:  map[peer.ID]bool{},
		notes:    map[string]note{},
		noteWake: make(chan struct{}, 1),
	}, nil
}

// Start serves the protocol on the transport, installs the replicator as
// the store's change notifier, and starts the notice sender and the
// sweeper (whose first sweep runs at once: the backfill of users this node
// has not replicated yet). The background work lives until Close or until
// ctx ends. Start may be called once.
func (r *Replicator) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.started {
		return errors.New("replication: already started")
	}
	r.started = true
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.tr.Listen(r)
	r.st.SetChangeNotifier(r)
	r.wg.Add(2)
	go r.noticeLoop()
	go r.sweepLoop()
	return nil
}

// Close stops serving, stops every goroutine and waits for them. Pulls in
// flight are cancelled (their batches are either committed with their
// checkpoint or not at all). It is idempotent.
func (r *Replicator) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	started := r.started
	r.mu.Unlock()
	r.noted.Store(true)
	if !started {
		return nil
	}
	r.st.SetChangeNotifier(nil)
	r.tr.Listen(nil)
	r.cancel()
	r.wg.Wait()
	return nil
}

// Stats returns the counters.
func (r *Replicator) Stats() Stats {
	return Stats{
		Pulls:            r.c.pulls.Load(),
		PulledRevisions:  r.c.pulled.Load(),
		RefusedRevisions: r.c.refused.Load(),
		NoticesSent:      r.c.sent.Load(),
		NoticesReceived:  r.c.received.Load(),
		NoticesRefused:   r.c.noticeRefused.Load(),
		RequestsServed:   r.c.served.Load(),
		RequestsRefused:  r.c.reqRefused.Load(),
		Errors:           r.c.errors.Load(),
		SyncsServed:      r.c.syncs.Load(),
	}
}

// shares reports whether this node holds user and p (another node) is in
// the user's replica set.
func (r *Replicator) shares(ctx context.Context, user string, p peer.ID) (bool, error) {
	if p == r.self {
		return false, nil
	}
	ps, err := r.mem.Replicas(ctx, user)
	if err != nil {
		return false, err
	}
	return slices.Contains(ps, r.self) && slices.Contains(ps, p), nil
}

// call sends m to p and decodes the answer into a message of want's type.
func call[T Message](ctx context.Context, r *Replicator, p peer.ID, m Message) (T, error) {
	var zero T
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	b, err := r.tr.Call(ctx, p, Encode(m))
	if err != nil {
		return zero, err
	}
	resp, err := Decode(b)
	if err != nil {
		return zero, fmt.Errorf("%w: from %s: %w", ErrProtocol, p, err)
	}
	t, ok := resp.(T)
	if !ok {
		return zero, fmt.Errorf("%w: %s answered with message type %d", ErrProtocol, p, resp.msgType())
	}
	return t, nil
}
