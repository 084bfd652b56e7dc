package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/directory/state"
)

// Bounds of the account notifications (Nodes.NotifyNodes).
const (
	// notifyTries is how many times a node is called about one event.
	notifyTries = 3
	// notifyWindow bounds all the tries for one node.
	notifyWindow = 10 * time.Second
	// notifyCallTimeout bounds one try.
	notifyCallTimeout = 3 * time.Second
	// notifyBackoff is the pause after the first failed try; it doubles.
	notifyBackoff = 500 * time.Millisecond
	// deleteWait is how long DeleteUser waits for the nodes to confirm
	// the wipe before it answers anyway.
	deleteWait = 3 * time.Second
)

// notifier tells storage nodes about committed account events over
// libp2p (Nodes.NotifyNodes). A nil host means notifications are off.
type notifier struct {
	host host.Host
	// spawn runs a notification in the background under the Directory's
	// root context (Directory.spawn), so Close stops it.
	spawn func(fn func(ctx context.Context)) bool
	log   *slog.Logger
}

// dirEvent is the account event for user: its credentials changed to
// creds, or it was deleted (creds.ChangedAt: the floor every token of it
// is at or before).
func dirEvent(user string, deleted bool, creds api.CredentialState) dirproto.AccountEvent {
	return dirproto.AccountEvent{User: user, Deleted: deleted, ChangedAt: creds.ChangedAt, Gen: creds.Gen}
}

// notify tells each node of set (a user's replica set) about a
// committed account event over dirproto.ProtoAccount11 (ProtoAccount,
// without the credential state, to nodes that do not speak it), in the
// background:
// each node gets up to notifyTries calls within notifyWindow, and Close
// stops them. It runs on the voter that handled the API call, after the
// write committed; a follower forwards the write to the leader and
// notifies once it is committed. The returned channel is closed when
// every node has answered or been given up on (at once when there is
// nothing to do). A node that cannot be reached is logged: it drops the
// user's cached Basic-auth answers only when they expire
// (node.DefaultCacheTTL), and a deleted user's records stay on it.
func (n *notifier) notify(user string, set []NodeInfo, ev dirproto.AccountEvent) <-chan struct{} {
	done := make(chan struct{})
	if n.host == nil || len(set) == 0 {
		close(done)
		return done
	}
	var wg sync.WaitGroup
	for _, node := range set {
		wg.Add(1)
		if !n.spawn(func(ctx context.Context) {
			defer wg.Done()
			n.notifyNode(ctx, node, ev)
		}) {
			wg.Done()
		}
	}
	if !n.spawn(func(context.Context) {
		wg.Wait()
		close(done)
	}) {
		wg.Wait() // Close has begun: the notifications end at once
		close(done)
	}
	return done
}

// notifyNode sends ev to node, retrying transport failures and
// "unavailable"-like answers, and logs a failure.
func (n *notifier) notifyNode(ctx context.Context, node NodeInfo, ev dirproto.AccountEvent) {
	if err := n.deliver(ctx, node, ev); err != nil {
		log := n.log.With("user", ev.User, "deleted", ev.Deleted, "node", node.ID)
		if ev.Deleted {
			log.Warn("directory: could not tell a node of an account deletion; the user's records stay on it and its cached credentials expire on their own", "err", err)
		} else {
			log.Warn("directory: could not tell a node of a credential change; its cached credentials expire on their own", "err", err)
		}
	}
}

// deliver sends ev to node over dirproto.ProtoAccount11 (ProtoAccount to
// older nodes): up to notifyTries calls within notifyWindow, retrying
// transport failures and "unavailable"-like answers. It returns nil once
// the node confirmed (for a deletion: the records are durably gone).
func (n *notifier) deliver(ctx context.Context, node NodeInfo, ev dirproto.AccountEvent) error {
	ctx, cancel := context.WithTimeout(ctx, notifyWindow)
	defer cancel()
	id, err := peer.Decode(nodePeerID(node))
	if err != nil {
		return fmt.Errorf("directory: node %s has no peer id: %w", node.ID, err)
	}
	var addrs []ma.Multiaddr
	for _, s := range node.P2PAddrs {
		if a, err := ma.NewMultiaddr(s); err == nil {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) > 0 {
		n.host.Peerstore().AddAddrs(id, addrs, peerstore.TempAddrTTL)
	}
	rpc := p2p.RPCConfig{MaxFrameSize: p2p.MaxMessageSize, Timeout: notifyCallTimeout, Logger: n.log}
	old := dirproto.AccountEvent{User: ev.User, Deleted: ev.Deleted}
	pause := notifyBackoff
	for try := 1; ; try++ {
		_, err = dirproto.CallVersioned(ctx, rpc, n.host, id, dirproto.ProtoAccount11, dirproto.ProtoAccount, ev, old, nil)
		if err == nil {
			n.log.Debug("directory: node notified of an account event", "user", ev.User, "deleted", ev.Deleted, "node", node.ID)
			return nil
		}
		if try == notifyTries || ctx.Err() != nil ||
			p2p.IsCode(err, p2p.CodeForbidden) || p2p.IsCode(err, p2p.CodeBadRequest) {
			return err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		pause *= 2
	}
}

// wipeBefore has every alive node that held a deleted account of name
// (its tombstone's nodes) wipe the name before an account is created
// under it again, and fails, wrapping api.ErrUnavailable (503, retry in
// a few seconds), when one of them does not confirm: records written by
// requests of the deleted account after its deletion, or left on a node
// that missed the deletion, must not appear in the new account. Nodes
// that are down or retired are skipped (a node coming back sweeps the
// users it no longer holds). Without notifications (serve) it does
// nothing: the caller wipes its own store.
func (n *notifier) wipeBefore(ctx context.Context, st *state.FSM, name string) error {
	ts, ok := st.Tombstone(name)
	if n.host == nil || !ok || len(ts.Nodes) == 0 {
		return nil
	}
	ev := dirproto.AccountEvent{User: name, Deleted: true, ChangedAt: ts.Floor}
	var wg sync.WaitGroup
	errs := make([]error, len(ts.Nodes))
	for i, id := range ts.Nodes {
		node, ok := st.Node(id)
		if !ok || !node.Alive() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.deliver(ctx, node, ev); err != nil {
				errs[i] = fmt.Errorf("node %s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return api.Unavailable(fmt.Errorf("directory: nodes that held a deleted account named %q did not confirm wiping it: %w", name, err), api.RetryElection)
	}
	return nil
}
