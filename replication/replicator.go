package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/node/revtree"
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

// Defaults of Config.
const (
	DefaultSweepInterval = time.Minute
	DefaultChangesBatch  = 1000
	DefaultFetchBatch    = 1000
	DefaultSeqsBatch     = 500
	DefaultIdleTimeout   = time.Minute
	DefaultRetryMin      = 100 * time.Millisecond
	DefaultRetryMax      = 30 * time.Second
	DefaultCallTimeout   = 30 * time.Second
)

// Config configures a Replicator. A zero field means "use the default".
type Config struct {
	// Store is this node's store. Required.
	Store Store
	// Membership gives the users' replica sets. Required.
	Membership Membership
	// Transport reaches the other nodes. Required.
	Transport Transport
	// Logger receives pulls (debug), refused revisions and requests
	// (warn) and failures (warn). Default: discard.
	Logger *slog.Logger
	// SweepInterval is how often every assigned user is compared with its
	// peers' sequence numbers (the catch-up after lost notices, and the
	// backfill of a new replica). Default 1 minute.
	SweepInterval time.Duration
	// ChangesBatch is the rows asked per changes request. Default 1000, at
	// most MaxRows.
	ChangesBatch int
	// FetchBatch is the documents asked per fetch request. Default 1000, at
	// most MaxFetchDocs.
	FetchBatch int
	// SeqsBatch is the users asked per sequence-number request of a sweep.
	// Default 500, at most MaxUsers.
	SeqsBatch int
	// IdleTimeout is how long a peer's pull goroutine waits for work
	// before it exits. Default 1 minute.
	IdleTimeout time.Duration
	// RetryMin and RetryMax bound the backoff before a failed pull is
	// retried. Defaults 100 ms and 30 s.
	RetryMin, RetryMax time.Duration
	// CallTimeout bounds one request to a peer. Default 30 s.
	CallTimeout time.Duration
}

// DefaultConfig returns a Config with the defaults filled in; Store,
// Membership and Transport must still be set.
func DefaultConfig() Config {
	return Config{
		Logger:        slog.New(slog.DiscardHandler),
		SweepInterval: DefaultSweepInterval,
		ChangesBatch:  DefaultChangesBatch,
		FetchBatch:    DefaultFetchBatch,
		SeqsBatch:     DefaultSeqsBatch,
		IdleTimeout:   DefaultIdleTimeout,
		RetryMin:      DefaultRetryMin,
		RetryMax:      DefaultRetryMax,
		CallTimeout:   DefaultCallTimeout,
	}
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("replication: Config.Store is required")
	case c.Membership == nil:
		return errors.New("replication: Config.Membership is required")
	case c.Transport == nil:
		return errors.New("replication: Config.Transport is required")
	case c.SweepInterval < 0 || c.IdleTimeout < 0 || c.RetryMin < 0 || c.RetryMax < 0 || c.CallTimeout < 0:
		return errors.New("replication: Config durations must not be negative")
	case c.ChangesBatch < 0 || c.ChangesBatch > MaxRows:
		return fmt.Errorf("replication: Config.ChangesBatch %d not in [0, %d]", c.ChangesBatch, MaxRows)
	case c.FetchBatch < 0 || c.FetchBatch > MaxFetchDocs:
		return fmt.Errorf("replication: Config.FetchBatch %d not in [0, %d]", c.FetchBatch, MaxFetchDocs)
	case c.SeqsBatch < 0 || c.SeqsBatch > MaxUsers:
		return fmt.Errorf("replication: Config.SeqsBatch %d not in [0, %d]", c.SeqsBatch, MaxUsers)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	def := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	def(&c.SweepInterval, d.SweepInterval)
	def(&c.IdleTimeout, d.IdleTimeout)
	def(&c.RetryMin, d.RetryMin)
	def(&c.RetryMax, d.RetryMax)
	def(&c.CallTimeout, d.CallTimeout)
	if c.ChangesBatch == 0 {
		c.ChangesBatch = d.ChangesBatch
	}
	if c.FetchBatch == 0 {
		c.FetchBatch = d.FetchBatch
	}
	if c.SeqsBatch == 0 {
		c.SeqsBatch = d.SeqsBatch
	}
	c.RetryMax = max(c.RetryMax, c.RetryMin)
	return c
}

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

// peerLoop is the pull work queued for one peer. Its fields are guarded
// by Replicator.mu.
type peerLoop struct {
	id    peer.ID
	dirty map[string][]chan error
	wake  chan struct{}
	// refusals counts, per user, the peer's consecutive "not shared"
	// answers (owned by the loop's goroutine).
	refusals map[string]int
}

// maxRefusals is how many times a pull the peer refused as not shared is
// retried (with the loop's backoff: about 3 s in all at the defaults). The
// two nodes' views of a replica set converge within the membership cache's
// TTL (2 s by default) after the directory moves a user, so a new replica
// refused by a peer with a stale view gets its backfill now, not at the
// next sweep.
const maxRefusals = 5

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

// Sync pulls user from every other node of its replica set now and waits
// for those pulls; it returns their errors joined. It fails with
// ErrNotShared when this node does not hold the user.
func (r *Replicator) Sync(ctx context.Context, user string) error {
	ps, err := r.mem.Replicas(ctx, user)
	if err != nil {
		return err
	}
	if !slices.Contains(ps, r.self) {
		return fmt.Errorf("%w: %s is not a replica of %q", ErrNotShared, r.self, user)
	}
	var chans []chan error
	for _, p := range ps {
		if p == r.self {
			continue
		}
		ch := make(chan error, 1)
		if err := r.mark(p, user, ch); err != nil {
			return err
		}
		chans = append(chans, ch)
	}
	var errs []error
	for _, ch := range chans {
		select {
		case err := <-ch:
			errs = append(errs, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// mark queues a pull of user from p (waking or starting p's goroutine);
// waiter, when not nil, receives the pull's outcome.
func (r *Replicator) mark(p peer.ID, user string, waiter chan error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return ErrClosed
	case !r.started:
		return ErrNotStarted
	}
	l := r.loops[p]
	if l == nil {
		l = &peerLoop{id: p, dirty: map[string][]chan error{}, wake: make(chan struct{}, 1)}
		r.loops[p] = l
		r.wg.Add(1)
		go r.run(l)
	}
	ws := l.dirty[user]
	if waiter != nil {
		ws = append(ws, waiter)
	}
	l.dirty[user] = ws
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// run is the pull goroutine of one peer.
func (r *Replicator) run(l *peerLoop) {
	defer r.wg.Done()
	ctx := r.ctx
	var backoff time.Duration
	for {
		r.mu.Lock()
		batch := l.dirty
		if len(batch) > 0 {
			l.dirty = map[string][]chan error{}
		} else {
			batch = nil // l.dirty stays shared with mark
		}
		r.mu.Unlock()
		if batch == nil {
			idle := time.NewTimer(r.cfg.IdleTimeout)
			select {
			case <-l.wake:
				idle.Stop()
				continue
			case <-ctx.Done():
				idle.Stop()
				r.endLoop(l)
				return
			case <-idle.C:
				r.mu.Lock()
				if len(l.dirty) == 0 {
					delete(r.loops, l.id)
					r.mu.Unlock()
					return
				}
				r.mu.Unlock()
				continue
			}
		}
		var failed []string
		for user, ws := range batch {
			var err error
			if err = ctx.Err(); err == nil {
				err = r.pull(ctx, l.id, user)
			}
			for _, w := range ws {
				w <- err
			}
			if err == nil || ctx.Err() != nil {
				delete(l.refusals, user)
				continue
			}
			r.c.errors.Add(1)
			r.log.Warn("replication: pull failed", "peer", l.id, "user", user, "err", err)
			switch {
			case errors.Is(err, ErrNotShared):
				// This node's own view: the user is not (or no longer)
				// shared with the peer; the next sweep looks again.
			case p2p.IsCode(err, CodeForbidden):
				if l.refusals == nil {
					l.refusals = map[string]int{}
				}
				if l.refusals[user]++; l.refusals[user] <= maxRefusals {
					failed = append(failed, user)
				} else {
					delete(l.refusals, user)
				}
			default:
				failed = append(failed, user)
			}
		}
		if len(failed) == 0 {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, r.cfg.RetryMin), r.cfg.RetryMax)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			r.endLoop(l)
			return
		case <-t.C:
		}
		r.mu.Lock()
		for _, u := range failed {
			if _, ok := l.dirty[u]; !ok {
				l.dirty[u] = nil
			}
		}
		r.mu.Unlock()
	}
}

// endLoop fails the waiters still queued on l when the replicator stops.
func (r *Replicator) endLoop(l *peerLoop) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ws := range l.dirty {
		for _, w := range ws {
			w <- ErrClosed
		}
	}
	l.dirty = nil
	delete(r.loops, l.id)
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

// pull replicates user from p: changes since the checkpoint, revs_diff,
// fetch of what is missing, apply with the checkpoint in the same batch,
// until the feed is exhausted.
func (r *Replicator) pull(ctx context.Context, p peer.ID, user string) error {
	ok, err := r.shares(ctx, user, p)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %q with %s", ErrNotShared, user, p)
	}
	ps := p.String()
	cp, err := r.st.GetCheckpoint(ctx, user, ps)
	if err != nil {
		return err
	}
	since := cp.Seq
	for {
		resp, err := call[*ChangesResponse](ctx, r, p, &ChangesRequest{User: user, Since: since, Limit: uint32(r.cfg.ChangesBatch), InlineBytes: inlineBytes})
		if err != nil {
			return err
		}
		switch {
		case resp.Source == "":
			return fmt.Errorf("%w: %s sent no store uuid", ErrProtocol, p)
		case resp.Source != cp.Source && since != 0:
			// Another store than the checkpoint's: start over.
			r.log.Info("replication: peer store changed, replicating from scratch", "peer", p, "user", user, "source", resp.Source)
			cp, since = node.Checkpoint{}, 0
			continue
		case len(resp.Rows) > r.cfg.ChangesBatch:
			return fmt.Errorf("%w: %s sent %d rows for a limit of %d", ErrProtocol, p, len(resp.Rows), r.cfg.ChangesBatch)
		case resp.Last < since || (resp.More && resp.Last == since):
			return fmt.Errorf("%w: %s answered last %d (more %v) after %d", ErrProtocol, p, resp.Last, resp.More, since)
		}
		next := node.Checkpoint{Source: resp.Source, Seq: resp.Last}
		q := make([]node.DocRevs, len(resp.Rows))
		for i, row := range resp.Rows {
			q[i] = node.DocRevs{Coll: row.Coll, ID: row.ID, Revs: row.Leaves}
		}
		missing, err := r.st.RevsDiff(ctx, user, q)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			if next != cp {
				if err := r.st.SetCheckpoint(ctx, user, ps, next); err != nil {
					return err
				}
			}
		} else if revs, ok := r.inlined(p, user, missing, resp.Revisions); ok {
			if err := r.applyBatch(ctx, p, user, revs, &next); err != nil {
				return err
			}
		} else if err := r.fetchApply(ctx, p, user, missing, next); err != nil {
			return err
		}
		cp, since = next, resp.Last
		if !resp.More {
			r.c.pulls.Add(1)
			return nil
		}
	}
}

// fetchApply fetches the missing revisions from p in batches and applies
// them; the last batch carries the checkpoint next.
func (r *Replicator) fetchApply(ctx context.Context, p peer.ID, user string, missing []node.DocRevs, next node.Checkpoint) error {
	for start := 0; start < len(missing); {
		end := min(start+r.cfg.FetchBatch, len(missing))
		req := &FetchRequest{User: user, Docs: make([]FetchDoc, 0, end-start)}
		for _, m := range missing[start:end] {
			revs := m.Revs
			if len(revs) > MaxLeaves {
				revs = revs[:MaxLeaves]
			}
			req.Docs = append(req.Docs, FetchDoc{Coll: m.Coll, ID: m.ID, Revs: revs})
		}
		resp, err := call[*FetchResponse](ctx, r, p, req)
		if err != nil {
			return err
		}
		if resp.Done == 0 || int(resp.Done) > len(req.Docs) {
			return fmt.Errorf("%w: %s answered %d of %d documents", ErrProtocol, p, resp.Done, len(req.Docs))
		}
		revs := r.vet(p, user, req.Docs[:resp.Done], resp.Revisions)
		start += int(resp.Done)
		var cp *node.Checkpoint
		if start == len(missing) {
			cp = &next
		}
		if len(revs) == 0 && cp == nil {
			continue
		}
		if err := r.applyBatch(ctx, p, user, revs, cp); err != nil {
			return err
		}
	}
	return nil
}

// applyBatch applies revisions pulled from p, with the checkpoint cp when
// it is not nil, and counts the refused ones.
func (r *Replicator) applyBatch(ctx context.Context, p peer.ID, user string, revs []node.Revision, cp *node.Checkpoint) error {
	errs, err := r.st.ApplyRevisions(ctx, user, revs, p.String(), cp)
	if err != nil {
		return err
	}
	var refused int
	for i, e := range errs {
		if e == nil {
			continue
		}
		refused++
		if refused <= 3 {
			r.log.Warn("replication: revision refused", "peer", p, "user", user, "collection", revs[i].Coll, "id", revs[i].ID, "rev", revs[i].Rev().String(), "err", e)
		}
	}
	r.c.pulled.Add(uint64(len(revs) - refused))
	r.c.refused.Add(uint64(refused))
	return nil
}

// inlineBytes is how much of a changes answer may be inlined revisions.
const inlineBytes = 1 << 20

// inlined returns the revisions of a changes answer that cover every
// missing revision (each missing one is the leaf of, or on the path of, an
// inlined revision of its document), vetted like a fetch answer; ok is
// false when something is not covered (then the puller fetches).
func (r *Replicator) inlined(p peer.ID, user string, missing []node.DocRevs, got []node.Revision) ([]node.Revision, bool) {
	if len(got) == 0 {
		return nil, false
	}
	// The answer carries every row's leaves; keep those of the missing
	// revisions (the others are known here already, not an offence).
	want := make(map[[2]string][]revtree.Rev, len(missing))
	for _, m := range missing {
		want[[2]string{m.Coll, m.ID}] = m.Revs
	}
	var revs []node.Revision
	for _, x := range got {
		if ws, ok := want[[2]string{x.Coll, x.ID}]; ok && pathHasAny(x.Path, ws) {
			revs = append(revs, x)
		}
	}
	byDoc := make(map[[2]string][]revtree.Path, len(revs))
	for _, x := range revs {
		k := [2]string{x.Coll, x.ID}
		byDoc[k] = append(byDoc[k], x.Path)
	}
	for _, m := range missing {
		for _, want := range m.Revs {
			covered := false
			for _, pth := range byDoc[[2]string{m.Coll, m.ID}] {
				if pathHasAny(pth, []revtree.Rev{want}) {
					covered = true
					break
				}
			}
			if !covered {
				return nil, false
			}
		}
	}
	return revs, true
}

// vet keeps the revisions of a fetch answer that were asked for: each
// must belong to a document of docs and carry one of the revisions asked
// for that document in its path (the revision itself, or an ancestor of
// a newer leaf). The others are counted as refused.
func (r *Replicator) vet(p peer.ID, user string, docs []FetchDoc, got []node.Revision) []node.Revision {
	asked := make(map[[2]string][]revtree.Rev, len(docs))
	for _, d := range docs {
		asked[[2]string{d.Coll, d.ID}] = d.Revs
	}
	out := got[:0:0]
	refused := 0
	for _, rev := range got {
		want, ok := asked[[2]string{rev.Coll, rev.ID}]
		if ok && pathHasAny(rev.Path, want) {
			out = append(out, rev)
			continue
		}
		refused++
		if refused <= 3 {
			r.log.Warn("replication: peer sent a revision not asked for", "peer", p, "user", user, "collection", rev.Coll, "id", rev.ID, "rev", rev.Rev().String())
		}
	}
	r.c.refused.Add(uint64(refused))
	return out
}

func pathHasAny(pth revtree.Path, revs []revtree.Rev) bool {
	for _, w := range revs {
		if w.Pos > pth.Start || pth.Start-w.Pos >= uint64(len(pth.IDs)) {
			continue
		}
		if pth.IDs[pth.Start-w.Pos] == w.Hash {
			return true
		}
	}
	return false
}

// Handle implements Handler: it answers the requests of other nodes.
// Requests about users this node does not hold, or whose replica set does
// not contain the caller, are refused with CodeForbidden; malformed ones
// with CodeBadRequest.
func (r *Replicator) Handle(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
	m, err := Decode(req)
	if err != nil {
		r.c.reqRefused.Add(1)
		r.log.Warn("replication: malformed request", "peer", from, "err", err)
		return nil, p2p.Errorf(CodeBadRequest, "%v", err)
	}
	var resp Message
	switch m := m.(type) {
	case *ChangesRequest:
		resp, err = r.serveChanges(ctx, from, m)
	case *FetchRequest:
		resp, err = r.serveFetch(ctx, from, m)
	case *SeqsRequest:
		resp, err = r.serveSeqs(ctx, from, m)
	case *Notice:
		resp, err = r.serveNotice(ctx, from, m)
	case *SyncRequest:
		resp, err = r.serveSync(ctx, from, m)
	default:
		err = p2p.Errorf(CodeBadRequest, "message type %d is not a request", m.msgType())
	}
	if err != nil {
		if p2p.IsCode(err, CodeForbidden) || p2p.IsCode(err, CodeBadRequest) {
			r.c.reqRefused.Add(1)
			r.log.Warn("replication: request refused", "peer", from, "err", err)
		}
		return nil, err
	}
	r.c.served.Add(1)
	return Encode(resp), nil
}

func (r *Replicator) checkShared(ctx context.Context, user string, from peer.ID) error {
	ok, err := r.shares(ctx, user, from)
	if err != nil {
		return err
	}
	if !ok {
		return p2p.Errorf(CodeForbidden, "user %q is not shared with %s", user, from)
	}
	return nil
}

func (r *Replicator) serveChanges(ctx context.Context, from peer.ID, m *ChangesRequest) (*ChangesResponse, error) {
	if err := r.checkShared(ctx, m.User, from); err != nil {
		return nil, err
	}
	limit := int(m.Limit)
	if limit <= 0 || limit > MaxRows {
		limit = MaxRows
	}
	rows, last, err := r.st.Changes(ctx, m.User, m.Since, limit)
	if err != nil {
		return nil, err
	}
	resp := &ChangesResponse{Source: r.st.UUID(), Last: last, More: len(rows) >= limit}
	resp.Rows = make([]ChangeRow, 0, len(rows))
	size := 0
	for i, c := range rows {
		leaves := c.Leaves
		if len(leaves) > MaxLeaves {
			leaves = leaves[:MaxLeaves] // winner first: the rest are old conflicts
		}
		size += 8 + len(c.Coll) + len(c.ID) + len(leaves)*(revtree.HashLen+3)
		if i > 0 && size > MaxResponseBytes {
			resp.Last, resp.More = rows[i-1].Seq, true
			break
		}
		resp.Rows = append(resp.Rows, ChangeRow{Coll: c.Coll, ID: c.ID, Leaves: leaves, Deleted: c.Deleted})
	}
	if m.InlineBytes > 0 && len(resp.Rows) > 0 && len(resp.Rows) <= maxInlineRows {
		if err := r.inline(ctx, m.User, resp, int(m.InlineBytes)); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// maxInlineRows bounds the rows whose revisions a changes answer carries:
// inlining is for live replication (a few rows); backfills fetch.
const maxInlineRows = 64

// inline adds the rows' open revisions with their paths to resp when they
// all fit in max bytes (else none: the puller fetches).
func (r *Replicator) inline(ctx context.Context, user string, resp *ChangesResponse, max int) error {
	refs := make([]node.DocRef, len(resp.Rows))
	for i, row := range resp.Rows {
		refs[i] = node.DocRef{Coll: row.Coll, ID: row.ID}
	}
	docs, err := r.st.GetDocs(ctx, user, refs)
	if err != nil {
		return err
	}
	size := 0
	var revs []node.Revision
	for i, d := range docs {
		if d == nil {
			continue
		}
		for _, l := range resp.Rows[i].Leaves {
			x, ok := d.Revision(l, 0)
			if !ok {
				continue // changed since the feed was read: the puller fetches
			}
			size += revisionSize(&x)
			if size > max || len(revs) >= MaxFetchRevs {
				return nil
			}
			revs = append(revs, x)
		}
	}
	resp.Revisions = revs
	return nil
}

func revisionSize(x *node.Revision) int {
	return 64 + len(x.Coll) + len(x.ID) + len(x.Path.IDs)*revtree.HashLen + len(x.Body.Payload) +
		len(x.Body.ParentID) + len(x.Body.PredecessorID) + len(x.Body.Origin)
}

func (r *Replicator) serveFetch(ctx context.Context, from peer.ID, m *FetchRequest) (*FetchResponse, error) {
	if err := r.checkShared(ctx, m.User, from); err != nil {
		return nil, err
	}
	resp := &FetchResponse{}
	size := 0
	refs := make([]node.DocRef, len(m.Docs))
	for i, fd := range m.Docs {
		refs[i] = node.DocRef{Coll: fd.Coll, ID: fd.ID}
	}
	docs, err := r.st.GetDocs(ctx, m.User, refs)
	if err != nil {
		return nil, err
	}
	for i, fd := range m.Docs {
		doc := docs[i]
		if doc == nil {
			resp.Done++
			continue
		}
		var revs []node.Revision
		docSize := 0
		seen := map[revtree.Rev]bool{}
		for _, want := range fd.Revs {
			for _, l := range doc.LeavesFrom(want) {
				if seen[l] {
					continue
				}
				seen[l] = true
				if x, ok := doc.Revision(l, 0); ok {
					revs = append(revs, x)
					docSize += revisionSize(&x)
				}
			}
		}
		if i > 0 && (size+docSize > MaxResponseBytes || len(resp.Revisions)+len(revs) > MaxFetchRevs) {
			break
		}
		if len(revs) > MaxFetchRevs {
			revs = revs[:MaxFetchRevs]
		}
		size += docSize
		resp.Revisions = append(resp.Revisions, revs...)
		resp.Done++
	}
	return resp, nil
}

func (r *Replicator) serveSeqs(ctx context.Context, from peer.ID, m *SeqsRequest) (*SeqsResponse, error) {
	resp := &SeqsResponse{Source: r.st.UUID(), Seqs: make([]uint64, len(m.Users))}
	for i, u := range m.Users {
		ok, err := r.shares(ctx, u, from)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if resp.Seqs[i], err = r.st.UpdateSeq(ctx, u); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func (r *Replicator) serveNotice(ctx context.Context, from peer.ID, m *Notice) (*NoticeAck, error) {
	for _, u := range m.Users {
		ok, err := r.shares(ctx, u.User, from)
		if err != nil {
			return nil, err
		}
		if !ok {
			r.c.noticeRefused.Add(1)
			r.log.Warn("replication: notice about a user not shared", "peer", from, "user", u.User)
			continue
		}
		r.c.received.Add(1)
		if err := r.mark(from, u.User, nil); err != nil {
			return nil, p2p.Errorf(p2p.CodeUnavailable, "%v", err)
		}
	}
	return &NoticeAck{}, nil
}

// serveSync pulls the user from the caller through the caller's pull loop
// and answers when that pull is done.
func (r *Replicator) serveSync(ctx context.Context, from peer.ID, m *SyncRequest) (*SyncResponse, error) {
	if err := r.checkShared(ctx, m.User, from); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	if err := r.mark(from, m.User, done); err != nil {
		return nil, p2p.Errorf(p2p.CodeUnavailable, "%v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			return nil, p2p.Errorf(p2p.CodeUnavailable, "pull: %v", err)
		}
		r.c.syncs.Add(1)
		return &SyncResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// WaitReplicated implements node.ReplicaWaiter: it asks every other node of
// user's replica set to pull user now (SyncRequest) and returns nil as soon
// as one of them holds everything up to seq. While every one fails it
// retries (backoff RetryMin..RetryMax) until ctx ends, then returns an
// error. A user without other replicas returns nil at once.
func (r *Replicator) WaitReplicated(ctx context.Context, user string, seq uint64) error {
	ps, err := r.mem.Replicas(ctx, user)
	if err != nil {
		return err
	}
	others := make([]peer.ID, 0, len(ps))
	for _, p := range ps {
		if p != r.self {
			others = append(others, p)
		}
	}
	if len(others) == 0 {
		return nil
	}
	var last error
	for wait := r.cfg.RetryMin; ; wait = min(2*wait, r.cfg.RetryMax) {
		if last = r.syncOnce(ctx, others, user, seq); last == nil {
			return nil
		}
		// Every replica failed (unreachable, or its pull failed): try
		// again until ctx ends, a connection may come back.
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("replication: no replica of %q confirmed seq %d: %w (last: %v)", user, seq, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// syncOnce sends a SyncRequest to every peer in parallel and returns nil
// at the first success, else the last error. The other requests go on
// (bounded by CallTimeout): every replica should pull the write, and the
// store sends no separate notice for it.
func (r *Replicator) syncOnce(ctx context.Context, peers []peer.ID, user string, seq uint64) error {
	if len(peers) > 1 {
		ctx = context.WithoutCancel(ctx)
	}
	res := make(chan error, len(peers))
	for _, p := range peers {
		go func() {
			_, err := call[*SyncResponse](ctx, r, p, &SyncRequest{User: user, Seq: seq})
			res <- err
		}()
	}
	var last error
	for range peers {
		if last = <-res; last == nil {
			return nil
		}
	}
	return last
}

// Changed implements node.ChangeNotifier: it queues a push notice of
// user's change to the other nodes of its replica set and returns at once
// (it runs under the store's user lock).
//
// A change made by revisions pulled from peer from is not announced back
// to that peer (it has them); the other replicas still hear of it.
func (r *Replicator) Changed(user string, seq uint64, from string) {
	if r.noted.Load() {
		return
	}
	r.nmu.Lock()
	n, queued := r.notes[user]
	if !queued {
		n.skip = from
	} else if n.skip != from {
		n.skip = ""
	}
	n.seq = max(n.seq, seq)
	r.notes[user] = n
	r.nmu.Unlock()
	select {
	case r.noteWake <- struct{}{}:
	default:
	}
}

// note is a queued change notice: the user's newest seq and the peer the
// change came from, when all queued changes came from that one peer.
type note struct {
	seq  uint64
	skip string
}

// noticeLoop hands queued notices to the per-peer senders.
func (r *Replicator) noticeLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.noteWake:
		}
		r.nmu.Lock()
		notes := r.notes
		r.notes = map[string]note{}
		r.nmu.Unlock()
		for user, nt := range notes {
			seq := nt.seq
			ps, err := r.mem.Replicas(r.ctx, user)
			if err != nil {
				r.c.errors.Add(1)
				r.log.Warn("replication: replica set for a notice", "user", user, "err", err)
				continue
			}
			if !slices.Contains(ps, r.self) {
				continue
			}
			r.mu.Lock()
			for _, p := range ps {
				if p == r.self || r.closed || (nt.skip != "" && p.String() == nt.skip) {
					continue
				}
				ob := r.outbox[p]
				if ob == nil {
					ob = map[string]uint64{}
					r.outbox[p] = ob
				}
				ob[user] = max(ob[user], seq)
				if !r.sending[p] {
					r.sending[p] = true
					r.wg.Add(1)
					go r.sendNotices(p)
				}
			}
			r.mu.Unlock()
		}
	}
}

// sendNotices sends p's queued notices until none is left; notices queued
// while a send is in flight are coalesced into the next one.
func (r *Replicator) sendNotices(p peer.ID) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		ob := r.outbox[p]
		delete(r.outbox, p)
		if len(ob) == 0 || r.closed {
			delete(r.sending, p)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		n := &Notice{Users: make([]UserSeq, 0, min(len(ob), MaxUsers))}
		flush := func() {
			if _, err := call[*NoticeAck](r.ctx, r, p, n); err != nil {
				if r.ctx.Err() == nil {
					r.c.errors.Add(1)
					r.log.Debug("replication: notice not delivered", "peer", p, "err", err)
				}
			} else {
				r.c.sent.Add(uint64(len(n.Users)))
			}
			n.Users = n.Users[:0]
		}
		for u, seq := range ob {
			n.Users = append(n.Users, UserSeq{User: u, Seq: seq})
			if len(n.Users) == MaxUsers {
				flush()
			}
		}
		if len(n.Users) > 0 {
			flush()
		}
	}
}

// sweepLoop runs Sweep at start and every SweepInterval.
func (r *Replicator) sweepLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.SweepInterval)
	defer t.Stop()
	for {
		if err := r.Sweep(r.ctx); err != nil && r.ctx.Err() == nil {
			r.c.errors.Add(1)
			r.log.Warn("replication: sweep failed", "err", err)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep compares every user assigned to this node with each peer of its
// replica set, a page of users per request, and queues a pull of the users
// whose sequence number on the peer is past this node's checkpoint (or
// whose peer store changed). It is how a new replica is backfilled and how
// changes whose notice was lost are caught up. A peer that fails is
// skipped for the rest of the sweep; Sweep returns the membership's
// errors only.
func (r *Replicator) Sweep(ctx context.Context) error {
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	down := map[peer.ID]bool{}
	after := ""
	for {
		page, more, err := r.mem.AssignedUsers(ctx, after, r.cfg.SeqsBatch)
		if err != nil {
			return err
		}
		byPeer := map[peer.ID][]string{}
		for _, u := range page {
			if !slices.Contains(u.Peers, r.self) {
				continue
			}
			for _, p := range u.Peers {
				if p != r.self && !down[p] {
					byPeer[p] = append(byPeer[p], u.User)
				}
			}
		}
		for p, users := range byPeer {
			if err := r.sweepPeer(ctx, p, users); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				down[p] = true
				r.c.errors.Add(1)
				r.log.Warn("replication: sweep of a peer failed", "peer", p, "err", err)
			}
		}
		if !more || len(page) == 0 {
			return nil
		}
		after = page[len(page)-1].User
	}
}

func (r *Replicator) sweepPeer(ctx context.Context, p peer.ID, users []string) error {
	for len(users) > 0 {
		n := min(len(users), r.cfg.SeqsBatch)
		chunk := users[:n]
		users = users[n:]
		resp, err := call[*SeqsResponse](ctx, r, p, &SeqsRequest{Users: chunk})
		if err != nil {
			return err
		}
		if len(resp.Seqs) != len(chunk) || resp.Source == "" {
			return fmt.Errorf("%w: %s answered %d sequence numbers for %d users", ErrProtocol, p, len(resp.Seqs), len(chunk))
		}
		for i, u := range chunk {
			seq := resp.Seqs[i]
			if seq == 0 {
				continue
			}
			cp, err := r.st.GetCheckpoint(ctx, u, p.String())
			if err != nil {
				return err
			}
			if cp.Source != resp.Source || seq > cp.Seq {
				if err := r.mark(p, u, nil); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
