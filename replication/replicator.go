package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
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
	Users(ctx context.Context, after string, limit int) ([]string, error)
	WipeUser(ctx context.Context, user string) error
}

var _ Store = (*node.Store)(nil)

// Errors of the Replicator.
var (
	// ErrClosed: the Replicator is closed (or its Start context ended).
	ErrClosed = errors.New("replication: closed")
	// ErrNotStarted: Sync or Sweep was called before Start.
	ErrNotStarted = errors.New("replication: not started")
	// ErrNotShared: this node is not a member of the user's replica set,
	// or the peer is neither a member nor a leaving member, so nothing is
	// pulled.
	ErrNotShared = errors.New("replication: user not shared with the peer")
	// ErrNotCurrent: this node is not a current member of the user's
	// replica set, so it may not acknowledge a client's write.
	// WaitReplicated's errors that wrap it also wrap node.ErrNotServing:
	// the store answers the client 401 (the user lives elsewhere now)
	// rather than 503.
	ErrNotCurrent = errors.New("replication: not a current member")
	// ErrNoReporter: a write some member did not confirm cannot be
	// acknowledged, for there is no Reporter to tell the directory.
	ErrNoReporter = errors.New("replication: no reporter to the directory")
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
	// UnconfirmedReported counts client writes some member did not
	// confirm whose report the directory committed (they were then
	// acknowledged); UnconfirmedFailed those whose report failed (not
	// acknowledged).
	UnconfirmedReported, UnconfirmedFailed uint64
	// Sweeps counts the sweeps the sweep loop ran (at start and every
	// SweepInterval), failed ones included.
	Sweeps uint64
	// LeaverWrites counts client writes that also asked nodes which had
	// just left the user's set (or waited them out) before acknowledging.
	LeaverWrites uint64
	// FilledReported and HandedOffReported count Filled and HandedOff
	// items the directory committed.
	FilledReported, HandedOffReported uint64
	// ReportErrors counts report requests that failed.
	ReportErrors uint64
	// UsersWiped counts users whose data this node deleted because the
	// directory no longer lists it as a member or a leaving member.
	UsersWiped uint64
}

type counters struct {
	pulls, pulled, refused, sent, received, noticeRefused, served, reqRefused, errors, syncs atomic.Uint64
	uncReported, uncFailed, filled, handed, reportErrs, wiped                                atomic.Uint64
	leaverWrites, sweeps                                                                     atomic.Uint64
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

	reports reportQueue

	lmu  sync.Mutex
	left map[string]map[peer.ID]time.Time // user -> nodes seen in its leaving list -> since (leavers.go)

	fmu          sync.Mutex
	fills        map[string]*fillState // users this node is filling
	fillWake     chan struct{}
	changed      map[string]bool            // users named by MembershipChanged, to look at again
	handoffTries map[dirproto.HandedOff]int // early re-pulls of leaving members not final yet

	wmu        sync.Mutex
	wipeCands  map[string]time.Time // users seen unassigned in the last complete sweep, since
	leavingWas map[string]bool      // users this node was leaving at the last sweep
	backlog    atomic.Int64         // users held as a leaving member at the last sweep
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
		reports:  newReportQueue(),
		fills:    map[string]*fillState{},
		left:     map[string]map[peer.ID]time.Time{},
		fillWake: make(chan struct{}, 1),
		changed:  map[string]bool{},
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
	r.wg.Add(4)
	go r.noticeLoop()
	go r.sweepLoop()
	go r.reportLoop()
	go r.fillLoop()
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

		UnconfirmedReported: r.c.uncReported.Load(),
		UnconfirmedFailed:   r.c.uncFailed.Load(),
		LeaverWrites:        r.c.leaverWrites.Load(),
		Sweeps:              r.c.sweeps.Load(),
		FilledReported:      r.c.filled.Load(),
		HandedOffReported:   r.c.handed.Load(),
		ReportErrors:        r.c.reportErrs.Load(),
		UsersWiped:          r.c.wiped.Load(),
	}
}

// HandoffBacklog is the number of users this node held as a leaving
// member at its last complete sweep: data it still owes the users'
// replica sets (sent in heartbeats).
func (r *Replicator) HandoffBacklog() int { return int(r.backlog.Load()) }

// replicaSet returns user's replica set from the Membership and notes
// this node's state in it (observe).
func (r *Replicator) replicaSet(ctx context.Context, user string) (ReplicaSet, error) {
	set, err := r.mem.ReplicaSet(ctx, user)
	if err != nil {
		return ReplicaSet{}, err
	}
	r.observe(user, set)
	return set, nil
}

// allowed returns user's replica set and whether member may pull user
// from source (equivalently: source may serve member): member is a
// member of the set, source a member or a leaving member, and they are
// two nodes. Filling members pull and serve like current ones; a leaving
// member serves the members (its handoff) but pulls from nobody.
func (r *Replicator) allowed(ctx context.Context, user string, member, source peer.ID) (ReplicaSet, bool, error) {
	set, err := r.replicaSet(ctx, user)
	if err != nil {
		return ReplicaSet{}, false, err
	}
	return set, member != source && set.IsMember(member) && set.Holds(source), nil
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
