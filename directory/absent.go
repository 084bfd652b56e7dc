package directory

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/api"
)

// Negative answers ("no such user", "this node holds no copy of that
// user") are given only after the leader's up-to-date state agrees.
//
// Reads answer from the voter's local state, which may be behind the
// cluster: a voter that restarted and has not caught up, one cut off from
// the leader by a partition, or a new leader that has not applied every
// committed entry yet. A positive answer from such a state is at worst a
// little old (the guarantees that need more, such as the replica-set
// epochs, are checked again where they matter). A negative one is worse:
// a client that registered through another voter would be told its
// account does not exist, its password would be refused, and a storage
// node asking whether it still holds a user would wipe a copy that the
// cluster counts on. So before a negative answer the voter confirms it:
// the leader runs a raft barrier (every entry committed before it is
// applied to the leader's state machine; a deposed leader fails it) and
// looks the user up; a follower asks the leader to do so
// (GET /internal/v1/lookup). When the leader's state has what the local
// one lacks, the voter waits briefly to catch up and reads again; when
// no leader confirms, the caller gets a 503 with Retry-After
// (api.RetryElection) instead of a guess. Concurrent confirmations share
// one barrier that started after each of them arrived.

// pathLookup is the leader's confirmation of negative answers.
const pathLookup = "/internal/v1/lookup"

// Bounds of a confirmation.
const (
	// lookupTimeout bounds a confirmation (waiting for a leader, its
	// barrier or the call to it), as leaderWait bounds a write's wait.
	lookupTimeout = leaderWait
	// catchUpWait bounds how long a voter the leader showed to be behind
	// waits for its state to catch up before it answers 503.
	catchUpWait = time.Second
	// catchUpPoll is how often it looks again.
	catchUpPoll = 5 * time.Millisecond
)

// lookupAnswer is the leader's answer of GET /internal/v1/lookup.
type lookupAnswer struct {
	// Exists says the account exists.
	Exists bool `json:"exists"`
	// Nodes are the IDs of the nodes the user's replica set names, as
	// members or leaving nodes.
	Nodes []string `json:"nodes,omitempty"`
}

// localLookup reads user from this voter's state.
func (d *Directory) localLookup(user string) lookupAnswer {
	var a lookupAnswer
	if _, ok := d.state.Account(user); ok {
		a.Exists = true
	}
	if reps, _, ok := d.state.Replicas(user); ok {
		for _, m := range reps.Members {
			a.Nodes = append(a.Nodes, m.ID)
		}
		for _, n := range reps.Leaving {
			a.Nodes = append(a.Nodes, n.ID)
		}
	}
	return a
}

// holdsAnswer reports whether a names what the caller looked for: the
// account (node "") or node in its set.
func (a lookupAnswer) holds(node string) bool {
	return a.Exists && (node == "" || slices.Contains(a.Nodes, node))
}

// confirmAbsent is called when this voter's state lacks user (node "")
// or lacks node in user's set. It returns nil when the leader's
// up-to-date state lacks it too (the negative answer may be given),
// errRecheck when this voter's state caught up and has it now (the caller
// reads again), and an error wrapping api.ErrUnavailable when no leader
// could confirm or this voter did not catch up in time.
func (d *Directory) confirmAbsent(ctx context.Context, user, node string) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if !d.cfg.clustered() {
		return nil // a single voter's state is the whole directory's
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	var (
		ans lookupAnswer
		err error
	)
	// Like a write, wait for a leader through an election (leaderPoll
	// steps, up to lookupTimeout) before answering 503.
	for {
		if d.IsLeader() {
			if err = d.barrier(ctx); err == nil {
				ans = d.localLookup(user)
			}
		} else if t, ok := d.leaderTarget(); ok {
			ans, err = d.askLookup(ctx, t, user)
			if errors.Is(err, errLookupUnknown) {
				// A leader of an earlier build (a rolling upgrade): the
				// local answer, as that build gives.
				return nil
			}
		} else {
			err = errors.New("no leader known")
		}
		if err == nil || ctx.Err() != nil || d.closed.Load() {
			break
		}
		select {
		case <-ctx.Done():
		case <-d.ctx.Done():
		case <-time.After(leaderPoll):
		}
	}
	if err != nil {
		d.absentUnconfirmed.Add(1)
		return api.Unavailable(fmt.Errorf("directory: could not confirm with the leader that %q is not here: %w", user, err), api.RetryElection)
	}
	if !ans.holds(node) {
		return nil
	}
	// The leader's state has it: this voter is behind.
	d.absentBehind.Add(1)
	deadline := time.Now().Add(catchUpWait)
	for time.Now().Before(deadline) {
		if d.localLookup(user).holds(node) {
			return errRecheck
		}
		select {
		case <-ctx.Done():
			deadline = time.Time{}
		case <-time.After(catchUpPoll):
		}
	}
	return api.Unavailable(fmt.Errorf("directory: this voter is behind the leader about %q", user), api.RetryElection)
}

// errLookupUnknown: the leader does not serve pathLookup (an earlier
// build).
var errLookupUnknown = errors.New("directory: the leader predates " + pathLookup)

// readConfirmed returns read's answer from the local state; when it is
// negative, only once the leader's state agrees (confirmAbsent), reading
// again when this voter's state caught up. user and node are as for
// confirmAbsent.
func (d *Directory) readConfirmed(ctx context.Context, user, node string, read func() bool) (bool, error) {
	if read() {
		return true, nil
	}
	switch err := d.confirmAbsent(ctx, user, node); {
	case errors.Is(err, errRecheck):
		return read(), nil
	case err != nil:
		return false, err
	}
	return false, nil
}

// errRecheck tells a caller of confirmAbsent to read its state again.
var errRecheck = errors.New("directory: state caught up; read again")

// askLookup asks the leader t to confirm a lookup of user.
func (d *Directory) askLookup(ctx context.Context, t leaderTarget, user string) (lookupAnswer, error) {
	var a lookupAnswer
	err := d.getJSON(ctx, t.url+pathLookup+"?user="+url.QueryEscape(user), lookupTimeout, &a)
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusNotFound {
		return lookupAnswer{}, errLookupUnknown
	}
	if err != nil {
		return lookupAnswer{}, fmt.Errorf("leader %s: %w", t.id, err)
	}
	return a, nil
}

// lookup answers GET /internal/v1/lookup?user= on the leader: after a
// barrier, what its state holds about the user.
func (a *httpAPI) lookup(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if user == "" || len(user) > 1024 {
		a.writeResult(w, r, fmt.Errorf("%w: lookup needs a user", ErrMalformedCommand))
		return
	}
	if !a.d.IsLeader() {
		a.writeResult(w, r, ErrNotLeader)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), lookupTimeout)
	defer cancel()
	if err := a.d.barrier(ctx); err != nil {
		a.writeResult(w, r, api.Unavailable(err, api.RetryElection))
		return
	}
	writeJSON(w, http.StatusOK, a.d.localLookup(user))
}

// barrierGroup shares raft barriers between concurrent confirmations.
type barrierGroup struct {
	mu  sync.Mutex
	cur *barrierCall
}

// barrierCall is one raft barrier in flight.
type barrierCall struct {
	done    chan struct{}
	started time.Time
	err     error
}

// barrier returns once the leader's state machine has applied every
// entry committed before the call: a raft barrier, shared with
// concurrent callers when it started after this one arrived (an earlier
// one might not cover a write acknowledged just before this call).
// Leader only; fails when leadership is lost.
func (d *Directory) barrier(ctx context.Context) error {
	arrived := time.Now()
	g := &d.barriers
	for {
		g.mu.Lock()
		c := g.cur
		if c == nil {
			c = &barrierCall{done: make(chan struct{}), started: time.Now()}
			g.cur = c
			g.mu.Unlock()
			go func() {
				c.err = d.awaitFuture(context.Background(), d.raft.Barrier(lookupTimeout))
				if errors.Is(c.err, raft.ErrNotLeader) || errors.Is(c.err, raft.ErrLeadershipLost) {
					c.err = fmt.Errorf("%w: %w", ErrNotLeader, c.err)
				}
				g.mu.Lock()
				g.cur = nil
				g.mu.Unlock()
				close(c.done)
			}()
		} else {
			g.mu.Unlock()
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !c.started.Before(arrived) {
			return c.err
		}
	}
}

// Freshness of positive answers that decide who serves a user.
//
// The answers that decide where a user's data is served — node/weave and
// the token endpoint's node (StorageNode), and the replica sets nodes
// read for their membership view (ProtoAssignment, ProtoUsers) — must
// not come from a voter whose state is behind the cluster's: a voter cut
// off in a minority still lists a member the majority has since marked
// filling, and a node that can reach only that voter would go on serving
// the user's stale copy (chaos seed 33: 17 reads of a user on a node
// partitioned with the minority voter lacked writes acknowledged on the
// majority side). The acknowledgement rule bounds how long a member may
// act on a view (the membership cache lifetime) only if views are read
// from a state at most a known moment old (the view lag, d.viewLag). So these answers
// come only from a fresh voter; others answer 503 (nodes: try another
// voter).
//
//   - The leader is fresh once it has committed an entry of its own term
//     (below) and applied everything it committed. raft makes it step
//     down when it loses a quorum for LeaderLeaseTimeout.
//   - A follower is fresh when the leader of its current term sent it a
//     commit index within its HeartbeatTimeout and it has applied every
//     entry through that index. Its own commit index is not enough: raft
//     caps it at the last entry the follower holds, so a follower that is
//     catching up (restarted, or back from a partition) would look
//     current while its state lacks seconds of changes (chaos seed 71:
//     a voter back from an 8 s partition told a node it was still a
//     member of a set it had left 1 s before, and the node served reads
//     that lacked writes acknowledged since).
//
// So a fresh answer reflects every entry committed more than the view lag
// before it (the HeartbeatTimeout; the leader's lease is shorter).

// applyWait bounds how long fresh waits for this voter's state machine to
// apply what it must have applied, before refusing.
const applyWait = 50 * time.Millisecond

// errNotFresh is the error of an answer a voter out of touch refuses.
var errNotFresh = errors.New("directory: this voter is out of touch with the raft leader")

// fresh reports whether this voter's state may answer who serves a user.
//
// Besides the rules above, the voter must know that everything committed
// before the current term is committed: its commit index must have
// reached the first entry of the current term (the no-op raft's leader
// appends when elected). A leader just elected does not know which of the
// previous term's entries were committed until it commits an entry of its
// own, and its state — and its followers' — can lack the last ones the
// previous leader committed: it could tell a node that it is still a
// current member of a set that has made it filling, and the node would
// serve reads that lack writes acknowledged since.
func (d *Directory) fresh() error {
	if !d.cfg.clustered() {
		return nil
	}
	refuse := func(format string, args ...any) error {
		d.staleAnswers.Add(1)
		return api.Unavailable(fmt.Errorf("%w: "+format, append([]any{errNotFresh}, args...)...), api.RetryElection)
	}
	term := d.raft.CurrentTerm()
	target := d.raft.CommitIndex() // what this voter must have applied: the leader's
	if !d.IsLeader() {
		t, idx, at := d.leaderSent.last() // cluster mode always watches its transport
		if at.IsZero() || t != term {
			return refuse("no commit index from the leader of term %d yet", term)
		}
		if age := time.Since(at); age > d.viewLag {
			return refuse("the leader last sent its commit index %v ago", age.Round(time.Millisecond))
		}
		target = idx
	}
	if start, ok := d.termStart(term); !ok || target < start || d.raft.CommitIndex() < start {
		return refuse("nothing of term %d committed yet", term)
	}
	if !d.appliedThrough(target, applyWait) {
		return refuse("entries through %d committed, applied through %d", target, d.raft.AppliedIndex())
	}
	return nil
}

// appliedThrough waits up to wait until this voter's state machine has
// applied every entry through index i, and reports whether it has. raft's
// AppliedIndex advances before the state machine runs an entry, and the
// state machine's own index counts only commands (not raft's no-ops and
// configuration entries), so the entries between the two are looked up:
// the state machine is through i once raft applied through i and no
// command lies after the state machine's index.
func (d *Directory) appliedThrough(i uint64, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		if d.appliedNow(i) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// appliedNow is appliedThrough without the wait.
func (d *Directory) appliedNow(i uint64) bool {
	s := d.state.AppliedIndex()
	if s >= i {
		return true
	}
	if d.raft.AppliedIndex() < i {
		return false
	}
	for j := i; j > s; j-- {
		var l raft.Log
		if err := d.stores.logs.GetLog(j, &l); err != nil {
			// Compacted into a snapshot: the state machine took it, or
			// restored it; entries through j are in its state.
			return true
		}
		if l.Type == raft.LogCommand {
			return false
		}
	}
	return true
}

// termStart returns the index of the first entry of term in this voter's
// log (a term's entries are contiguous and terms grow along the log, so
// it is a binary search), remembered per term; false when the log holds
// no entry of term yet. When the term began before the log's first entry
// (compacted into a snapshot, so committed), it returns that first index.
func (d *Directory) termStart(term uint64) (uint64, bool) {
	if ts := d.termStartCache.Load(); ts != nil && ts.term == term {
		return ts.index, true
	}
	logs := d.stores.logs
	if logs == nil {
		return 0, false
	}
	idx, ok := firstOfTerm(logs, term)
	if ok {
		d.termStartCache.Store(&termIndex{term: term, index: idx})
	}
	return idx, ok
}

// termIndex is a term and the index of its first entry.
type termIndex struct{ term, index uint64 }

// firstOfTerm finds the first entry of term in logs (see termStart).
func firstOfTerm(logs raft.LogStore, term uint64) (uint64, bool) {
	first, err1 := logs.FirstIndex()
	last, err2 := logs.LastIndex()
	if err1 != nil || err2 != nil || last == 0 || first > last {
		return 0, false
	}
	termAt := func(i uint64) (uint64, bool) {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return 0, false
		}
		return l.Term, true
	}
	if t, ok := termAt(last); !ok || t < term {
		return 0, false
	}
	// The first index in [first, last] whose term is >= term.
	lo, hi := first, last
	for lo < hi {
		mid := lo + (hi-lo)/2
		t, ok := termAt(mid)
		if !ok {
			return 0, false
		}
		if t >= term {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if t, ok := termAt(lo); !ok || t != term {
		return 0, false
	}
	return lo, true
}
