package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/p2p/p2ptest"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node"
)

var bg = context.Background()

func openStore(t testing.TB, nodeID string) *node.Store {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.CacheBytes = 16 << 20
	cfg.MemTableBytes = 4 << 20
	cfg.NodeID = nodeID
	s, err := node.Open(cfg)
	if err != nil {
		t.Fatalf("node.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// tnode is one node of a test cluster.
type tnode struct {
	id    peer.ID
	store *node.Store
	mem   *StaticMembership
	tr    Transport
	repl  *Replicator
	host  host.Host
	allow *p2p.StaticAllowlist

	rmu     sync.Mutex
	current *Replicator // repl, for other goroutines (testDir)
}

// replicator returns the node's replicator, safe from any goroutine.
func (tn *tnode) replicator() *Replicator {
	tn.rmu.Lock()
	defer tn.rmu.Unlock()
	return tn.current
}

type clusterOpts struct {
	mem           bool // in-memory transport instead of libp2p
	sweepInterval time.Duration
	noStart       bool
	changesBatch  int
	fetchBatch    int
	// dir gives the nodes a testDir as Reporter; ttl and replicaWait set
	// Config.MembershipTTL and Config.ReplicaWait (defaults 200 ms and
	// 2 s).
	dir              bool
	ttl, replicaWait time.Duration
	// retryMin and retryMax set Config.RetryMin and RetryMax (defaults
	// 20 ms and 200 ms).
	retryMin, retryMax time.Duration
	// fresh makes each node's Membership a FreshMembership whose fresh
	// answer is the testDir's set (dir must be set).
	fresh bool
	// oneRequest lists the nodes whose libp2p transport is the previous
	// builds': ProtocolID only, one request per stream.
	oneRequest []int
}

type cluster struct {
	t     testing.TB
	nodes []*tnode
	net   *MemNetwork
	dir   *testDir
	opts  clusterOpts
}

func newCluster(t testing.TB, n int, o clusterOpts) *cluster {
	t.Helper()
	c := &cluster{t: t, opts: o}
	if o.mem {
		c.net = NewMemNetwork()
	}
	for i := range n {
		key, id, err := p2p.LoadOrCreateIdentity(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		tn := &tnode{id: id, store: openStore(t, fmt.Sprintf("node%d", i)), mem: NewStaticMembership(id)}
		if o.mem {
			tn.tr = c.net.Transport(id)
		} else {
			tn.allow = p2p.NewStaticAllowlist()
			tn.host = p2ptest.NewHost(t, p2p.Config{Key: key, Gater: p2p.NewGater(tn.allow, nil)})
			tn.tr = NewLibp2pTransport(tn.host, 0, nil)
			if slices.Contains(o.oneRequest, i) {
				tn.tr = &oneRequestTransport{h: tn.host}
			}
		}
		c.nodes = append(c.nodes, tn)
	}
	if !o.mem {
		for _, a := range c.nodes {
			for _, b := range c.nodes {
				if a != b {
					p2ptest.Know(a.host, b.host)
					a.allow.Add(b.id)
				}
			}
		}
	}
	if o.dir {
		c.dir = &testDir{c: c, sets: map[string]ReplicaSet{}, notify: true}
	}
	for i := range c.nodes {
		c.startRepl(i, !o.noStart)
	}
	return c
}

// startRepl makes a new Replicator for node i (its store, membership and
// transport kept) and, when start is set, starts it; a restart after
// stopRepl.
func (c *cluster) startRepl(i int, start bool) {
	t, o, tn := c.t, c.opts, c.nodes[i]
	cfg := DefaultConfig()
	if c.dir != nil {
		cfg.Reporter = &dirReporter{d: c.dir, self: tn.id}
	}
	cfg.MembershipTTL = o.ttl
	if cfg.MembershipTTL == 0 {
		cfg.MembershipTTL = 200 * time.Millisecond
	}
	// The test directory answers from its current state: no lag.
	cfg.ViewLag = time.Nanosecond
	cfg.ReplicaWait = o.replicaWait
	cfg.Store = tn.store
	cfg.Membership = tn.mem
	if o.fresh {
		cfg.Membership = &freshMem{StaticMembership: tn.mem, d: c.dir}
	}
	cfg.Transport = tn.tr
	cfg.Logger = testkit.Logger(t, slog.LevelWarn).With("node", i)
	cfg.SweepInterval = o.sweepInterval
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Hour
	}
	cfg.RetryMin, cfg.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	if o.retryMin > 0 {
		cfg.RetryMin, cfg.RetryMax = o.retryMin, o.retryMax
	}
	cfg.ChangesBatch = o.changesBatch
	cfg.FetchBatch = o.fetchBatch
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.repl = r
	tn.rmu.Lock()
	tn.current = r
	tn.rmu.Unlock()
	if !start {
		tn.tr.Listen(r)
		return
	}
	if err := r.Start(bg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
}

// stopRepl stops node i's replicator, as a crash of the node would (its
// store stays).
func (c *cluster) stopRepl(i int) {
	c.nodes[i].repl.Close()
}

// share makes the nodes idx the replica set of user on every node.
func (c *cluster) share(user string, idx ...int) {
	var ps []peer.ID
	for _, i := range idx {
		ps = append(ps, c.nodes[i].id)
	}
	for _, tn := range c.nodes {
		tn.mem.Set(user, ps...)
	}
}

// partition cuts nodes a and b apart (libp2p: gater and closed
// connections; in memory: the network).
func (c *cluster) partition(a, b int) {
	na, nb := c.nodes[a], c.nodes[b]
	if c.net != nil {
		c.net.Partition(na.id, nb.id)
		return
	}
	na.allow.Remove(nb.id)
	nb.allow.Remove(na.id)
	na.host.Network().ClosePeer(nb.id)
	nb.host.Network().ClosePeer(na.id)
}

func (c *cluster) heal(a, b int) {
	na, nb := c.nodes[a], c.nodes[b]
	if c.net != nil {
		c.net.Heal(na.id, nb.id)
		return
	}
	na.allow.Add(nb.id)
	nb.allow.Add(na.id)
}

// docs returns every document of user on s (Changes from 0), by coll/id.
func docs(s *node.Store, user string) (map[string]*node.Doc, error) {
	rows, _, err := s.Changes(bg, user, 0, 0)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*node.Doc, len(rows))
	for _, r := range rows {
		d, err := s.GetDoc(bg, user, r.Coll, r.ID)
		if err != nil {
			return nil, err
		}
		out[r.Coll+"/"+r.ID] = d
	}
	return out, nil
}

// diff returns "" when user's documents are identical on every store of
// ss (same trees, same winners and winner bodies), else a description.
func diff(user string, ss ...*node.Store) string {
	var ref map[string]*node.Doc
	for i, s := range ss {
		m, err := docs(s, user)
		if err != nil {
			return err.Error()
		}
		if i == 0 {
			ref = m
			continue
		}
		if len(m) != len(ref) {
			return fmt.Sprintf("user %s: store %d has %d documents, store 0 has %d", user, i, len(m), len(ref))
		}
		for k, d := range ref {
			o := m[k]
			if o == nil {
				return fmt.Sprintf("user %s: store %d lacks %s", user, i, k)
			}
			if !d.Tree.Equal(o.Tree) {
				return fmt.Sprintf("user %s: %s trees differ between stores 0 and %d", user, k, i)
			}
			w1, b1 := d.Winner()
			w2, b2 := o.Winner()
			if w1 != w2 || b1 != b2 {
				return fmt.Sprintf("user %s: %s winners differ between stores 0 and %d", user, k, i)
			}
		}
	}
	return ""
}

// ackLog records the revisions of acknowledged writes.
type ackLog struct {
	revs []ackRev
}

type ackRev struct {
	user, coll, id string
	doc            *node.Doc // the writer's document right after the write
	payload        string
}

// put writes one record on s and remembers the leaf it made.
func (a *ackLog) put(t testing.TB, s *node.Store, user, coll, id, payload string) {
	t.Helper()
	if _, err := s.PutItem(bg, user, coll, testkit.WBO(id, payload), api.Precondition{}); err != nil {
		t.Fatalf("PutItem: %v", err)
	}
	a.note(t, s, user, coll, id, payload)
}

func (a *ackLog) note(t testing.TB, s *node.Store, user, coll, id, payload string) {
	d, err := s.GetDoc(bg, user, coll, id)
	if err != nil {
		t.Fatalf("GetDoc after write: %v", err)
	}
	a.revs = append(a.revs, ackRev{user: user, coll: coll, id: id, doc: d, payload: payload})
}

// check verifies that every acknowledged write's revision is in the tree
// of user's document on every store.
func (a *ackLog) check(t testing.TB, ss ...*node.Store) {
	t.Helper()
	for _, w := range a.revs {
		found := false
		for r, b := range w.doc.Bodies {
			if b.Payload == w.payload {
				found = true
				for _, s := range ss {
					d, err := s.GetDoc(bg, w.user, w.coll, w.id)
					if err != nil {
						t.Fatalf("write %s/%s %q: %v", w.coll, w.id, w.payload, err)
					}
					if !d.Tree.Contains(r) {
						t.Fatalf("write %s/%s %q (%v) lost", w.coll, w.id, w.payload, r)
					}
				}
			}
		}
		_ = found // false: superseded before it could be read back (rare)
	}
}

// testDir stands in for the directory in unit tests: it keeps every
// user's replica set, applies reports with the rules of the directory's
// state machine (design note of issue #10), and after each change sets the
// new set on every node's StaticMembership (as a MembershipEvent would)
// when notify is set.
type testDir struct {
	c *cluster

	mu     sync.Mutex
	sets   map[string]ReplicaSet
	notify bool
	// viewLagMs is the ReportResponse's ViewLagMs (0: the default).
	viewLagMs int64
	fail      error // Report fails with it
	reports   []string
	// onReport, when set, runs for each report before it is answered
	// (under the directory's lock).
	onReport func(from peer.ID, req dirproto.ReportRequest)
	// before, when set, runs for each report before the directory looks
	// at it (not under its lock: it may block).
	before func(from peer.ID, req dirproto.ReportRequest)
}

// set makes s user's replica set everywhere.
func (d *testDir) set(user string, s ReplicaSet) {
	d.mu.Lock()
	d.sets[user] = s.Clone()
	d.mu.Unlock()
	for _, tn := range d.c.nodes {
		tn.mem.SetReplicaSet(user, s)
		tn.replicator().MembershipChanged([]string{user})
	}
}

func (d *testDir) get(user string) ReplicaSet {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sets[user].Clone()
}

func (d *testDir) setFail(err error) {
	d.mu.Lock()
	d.fail = err
	d.mu.Unlock()
}

func (d *testDir) log() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.reports)
}

// freshMem is a node's cached view (its StaticMembership) with the
// testDir as the fresh answer, which also refreshes the view.
type freshMem struct {
	*StaticMembership
	d     *testDir
	asked atomic.Int32
}

func (m *freshMem) FreshReplicaSet(_ context.Context, user string) (ReplicaSet, error) {
	m.asked.Add(1)
	s := m.d.get(user)
	m.SetReplicaSet(user, s)
	return s, nil
}

// dirReporter is one node's Reporter on a testDir.
type dirReporter struct {
	d    *testDir
	self peer.ID
}

func (r *dirReporter) Report(ctx context.Context, req dirproto.ReportRequest) (dirproto.ReportResponse, error) {
	if err := req.Validate(); err != nil {
		return dirproto.ReportResponse{}, err
	}
	d := r.d
	if d.before != nil {
		d.before(r.self, req)
	}
	d.mu.Lock()
	if d.fail != nil {
		defer d.mu.Unlock()
		return dirproto.ReportResponse{}, d.fail
	}
	changed := map[string]bool{}
	idx := func(s ReplicaSet, id string) int {
		for i, m := range s.Members {
			if m.Peer.String() == id {
				return i
			}
		}
		return -1
	}
	self := r.self.String()
	var refused []string
	for _, u := range req.Unconfirmed {
		d.reports = append(d.reports, fmt.Sprintf("unconfirmed %s by %s confirmed %v", u.User, self, u.Confirmed))
		s := d.sets[u.User]
		if i := idx(s, self); i < 0 || s.Members[i].Filling {
			refused = append(refused, u.User) // the caller is not current
			continue
		}
		for i := range s.Members {
			id := s.Members[i].Peer.String()
			if id != self && !slices.Contains(u.Confirmed, id) {
				s.Members[i].Filling = true
				s.Members[i].Epoch++
				changed[u.User] = true
			}
		}
	}
	for _, f := range req.Filled {
		d.reports = append(d.reports, fmt.Sprintf("filled %s by %s epoch %d from %s", f.User, self, f.Epoch, f.Source))
		s := d.sets[f.User]
		i, j := idx(s, self), idx(s, f.Source)
		if i < 0 || j < 0 || i == j || !s.Members[i].Filling || s.Members[i].Epoch != f.Epoch || s.Members[j].Filling {
			continue
		}
		s.Members[i].Filling = false
		changed[f.User] = true
	}
	for _, h := range req.HandedOff {
		d.reports = append(d.reports, fmt.Sprintf("handed-off %s by %s from %s", h.User, self, h.Source))
		s := d.sets[h.User]
		if i := idx(s, self); i < 0 || s.Members[i].Filling {
			continue
		}
		k := slices.IndexFunc(s.Leaving, func(p peer.ID) bool { return p.String() == h.Source })
		if k < 0 {
			continue
		}
		s.Leaving = slices.Delete(slices.Clone(s.Leaving), k, k+1)
		d.sets[h.User] = s
		changed[h.User] = true
	}
	// The directory client drops its cached sets of the users it
	// reported unconfirmed writes of: the caller sees the directory's.
	for _, u := range req.Unconfirmed {
		for _, tn := range d.c.nodes {
			if tn.id == r.self {
				tn.mem.SetReplicaSet(u.User, d.sets[u.User])
			}
		}
	}
	if d.onReport != nil {
		d.onReport(r.self, req)
	}
	notify := d.notify
	var push []UserReplicas
	for u := range changed {
		push = append(push, UserReplicas{User: u, Set: d.sets[u].Clone()})
	}
	d.mu.Unlock()
	if notify {
		for _, p := range push {
			for _, tn := range d.c.nodes {
				tn.mem.SetReplicaSet(p.User, p.Set)
				tn.replicator().MembershipChanged([]string{p.User})
			}
		}
	}
	if len(refused) > 0 {
		// As the directory does: the other items are applied, the call
		// fails with CodeForbidden.
		return dirproto.ReportResponse{Notified: notify, ViewLagMs: d.viewLagMs}, p2p.Errorf(CodeForbidden, "not a current member: users %v", refused)
	}
	return dirproto.ReportResponse{Notified: notify, ViewLagMs: d.viewLagMs}, nil
}

func isNotShared(err error) bool {
	return errors.Is(err, ErrNotShared) || p2p.IsCode(err, CodeForbidden)
}

// oneRequestTransport is the libp2p transport of the builds before
// SessionProtocolID: it serves and calls ProtocolID, one request per
// stream.
type oneRequestTransport struct{ h host.Host }

func (t *oneRequestTransport) Self() peer.ID { return t.h.ID() }

func (t *oneRequestTransport) Call(ctx context.Context, p peer.ID, req []byte) ([]byte, error) {
	return p2p.CallWith(network.WithForceDirectDial(ctx, "test"), p2p.RPCConfig{MaxFrameSize: MaxFrameSize}, t.h, p, ProtocolID, req)
}

func (t *oneRequestTransport) Listen(h Handler) {
	if h == nil {
		t.h.RemoveStreamHandler(ProtocolID)
		return
	}
	p2p.Serve(t.h, ProtocolID, h.Handle, p2p.RPCConfig{MaxFrameSize: MaxFrameSize})
}
