package directory

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/directory/state"
)

// Bounds of the membership notifications.
const (
	// membershipCallTimeout bounds one ProtoMembership call. A node that
	// reports an unconfirmed write waits for the calls (ReportResponse
	// Notified), so it stays short: well under the nodes' membership
	// cache lifetime, which the node waits instead when a call fails.
	membershipCallTimeout = time.Second
	// membershipQueueLimit bounds the (node, user) pairs waiting to be
	// told; beyond it changes are dropped (the nodes' caches expire on
	// their own) and counted in the log.
	membershipQueueLimit = 1 << 16
	// membershipParallel bounds the nodes told at once.
	membershipParallel = 16
)

// members tells storage nodes that their users' replica sets changed
// (dirproto.ProtoMembership), so they drop their cached view at once
// instead of when it expires. The state machine's SetsChanged hook queues
// the changes on every voter; the leader sends them, followers drop them.
// A voter that commits a node's report of unconfirmed writes also tells
// the members concerned itself, and waits (notifyNow).
type members struct {
	d   *Directory
	log *slog.Logger

	mu      sync.Mutex
	queue   map[string]map[string]struct{} // node -> users
	queued  int
	dropped int
	kick    chan struct{}
}

func newMembers(d *Directory) *members {
	return &members{d: d, log: d.log, queue: make(map[string]map[string]struct{}), kick: make(chan struct{}, 1)}
}

// setsChanged is the state machine's SetsChanged hook: it runs on raft's
// apply goroutine with the state locked, so it only queues and wakes the
// sender and the placement loop.
func (d *Directory) setsChanged(cs []state.SetChange) {
	d.members.add(cs)
	select {
	case d.placed <- struct{}{}:
	default:
	}
}

// add queues changes.
func (m *members) add(cs []state.SetChange) {
	m.mu.Lock()
	for _, c := range cs {
		for _, id := range c.Nodes {
			users := m.queue[id]
			if users == nil {
				users = make(map[string]struct{})
				m.queue[id] = users
			}
			if _, ok := users[c.User]; ok {
				continue
			}
			if m.queued >= membershipQueueLimit {
				m.dropped++
				continue
			}
			users[c.User] = struct{}{}
			m.queued++
		}
	}
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// take empties the queue.
func (m *members) take() (map[string]map[string]struct{}, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	q, dropped := m.queue, m.dropped
	m.queue, m.queued, m.dropped = make(map[string]map[string]struct{}), 0, 0
	return q, dropped
}

// run sends the queued changes while this voter leads, until ctx ends.
func (m *members) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		}
		q, dropped := m.take()
		if !m.d.IsLeader() || m.d.host == nil {
			continue
		}
		if dropped > 0 {
			m.log.Warn("directory: membership notifications dropped (queue full); the nodes' caches expire on their own", "dropped", dropped)
		}
		byNode := make(map[string][]string, len(q))
		for id, users := range q {
			byNode[id] = slices.Sorted(maps.Keys(users))
		}
		m.send(ctx, byNode)
	}
}

// send tells each node its users, in parallel (at most membershipParallel
// at once), and reports whether every node confirmed.
func (m *members) send(ctx context.Context, byNode map[string][]string) bool {
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := true
	sem := make(chan struct{}, membershipParallel)
	for id, users := range byNode {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := m.tell(ctx, id, users); err != nil {
				mu.Lock()
				ok = false
				mu.Unlock()
				m.log.Debug("directory: membership notification failed; the node's cache expires on its own", "node", id, "err", err)
			}
		}()
	}
	wg.Wait()
	return ok
}

// tell sends node id one MembershipEvent per MaxUsersPage users.
func (m *members) tell(ctx context.Context, id string, users []string) error {
	h := m.d.host
	if h == nil {
		return errNoHost
	}
	n, ok := m.d.state.Node(id)
	if !ok {
		return ErrUnknownNode
	}
	pid, err := peer.Decode(nodePeerID(n))
	if err != nil {
		return err
	}
	var addrs []ma.Multiaddr
	for _, s := range n.P2PAddrs {
		if a, err := ma.NewMultiaddr(s); err == nil {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) > 0 {
		h.Peerstore().AddAddrs(pid, addrs, peerstore.TempAddrTTL)
	}
	rpc := p2p.RPCConfig{MaxFrameSize: p2p.MaxMessageSize, Timeout: membershipCallTimeout, Logger: m.log}
	for chunk := range slices.Chunk(users, dirproto.MaxUsersPage) {
		cctx, cancel := context.WithTimeout(ctx, membershipCallTimeout)
		err := p2p.CallJSON(cctx, rpc, h, pid, dirproto.ProtoMembership, dirproto.MembershipEvent{Users: chunk, Index: m.d.state.AppliedIndex()}, nil)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// notifyNow tells each of nodes (except skip) that users' sets changed,
// and reports whether all of them confirmed within membershipCallTimeout.
func (m *members) notifyNow(ctx context.Context, nodes []string, skip string, users []string) bool {
	if m.d.host == nil {
		return len(nodes) == 0
	}
	byNode := make(map[string][]string)
	for _, id := range nodes {
		if id != skip {
			byNode[id] = users
		}
	}
	if len(byNode) == 0 {
		return true
	}
	return m.send(ctx, byNode)
}
