package directory

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
)

// Bounds of the account notifications (Config.NotifyNodes).
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

// notifier tracks the notifications in flight, so Close can stop them.
type notifier struct {
	mu     sync.Mutex
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newNotifier() *notifier {
	ctx, cancel := context.WithCancel(context.Background())
	return &notifier{ctx: ctx, cancel: cancel}
}

// start runs fn in the background unless the notifier is closed; it
// reports whether fn runs.
func (n *notifier) start(fn func(ctx context.Context)) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn(n.ctx)
	}()
	return true
}

// close stops the notifications in flight and waits for them.
func (n *notifier) close() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait()
}

// notifying reports whether this voter tells nodes about account events.
func (d *Directory) notifying() bool { return d.cfg.NotifyNodes && d.host != nil }

// notifyNodes tells each node of set (a user's replica set) about a
// committed account event over dirproto.ProtoAccount, in the background: each
// node gets up to notifyTries calls within notifyWindow. It runs on the
// voter that handled the API call, after the write committed; a follower
// forwards the write to the leader and notifies once it is committed. The
// returned channel is closed when every node has answered or been given
// up on (at once when there is nothing to do). A node that cannot be
// reached is logged: it drops the user's cached Basic-auth answers only
// when they expire (node.DefaultCacheTTL), and a deleted user's records
// stay on it.
func (d *Directory) notifyNodes(user string, set []NodeInfo, deleted bool) <-chan struct{} {
	done := make(chan struct{})
	if !d.notifying() || len(set) == 0 {
		close(done)
		return done
	}
	var wg sync.WaitGroup
	for _, n := range set {
		wg.Add(1)
		if !d.notes.start(func(ctx context.Context) {
			defer wg.Done()
			d.notifyNode(ctx, n, dirproto.AccountEvent{User: user, Deleted: deleted})
		}) {
			wg.Done()
		}
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// notifyNode sends ev to node n, retrying transport failures and
// "unavailable"-like answers.
func (d *Directory) notifyNode(ctx context.Context, n NodeInfo, ev dirproto.AccountEvent) {
	ctx, cancel := context.WithTimeout(ctx, notifyWindow)
	defer cancel()
	log := d.log.With("user", ev.User, "deleted", ev.Deleted, "node", n.ID)
	id, err := peer.Decode(nodePeerID(n))
	if err != nil {
		log.Warn("directory: cannot notify a node without a peer id; its cached credentials expire on their own", "err", err)
		return
	}
	var addrs []ma.Multiaddr
	for _, s := range n.P2PAddrs {
		if a, err := ma.NewMultiaddr(s); err == nil {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) > 0 {
		d.host.Peerstore().AddAddrs(id, addrs, peerstore.TempAddrTTL)
	}
	rpc := p2p.RPCConfig{MaxFrameSize: p2p.MaxMessageSize, Timeout: notifyCallTimeout, Logger: d.log}
	pause := notifyBackoff
	for try := 1; ; try++ {
		err = p2p.CallJSON(ctx, rpc, d.host, id, dirproto.ProtoAccount, ev, nil)
		if err == nil {
			log.Debug("directory: node notified of an account event")
			return
		}
		if try == notifyTries || ctx.Err() != nil ||
			p2p.IsCode(err, p2p.CodeForbidden) || p2p.IsCode(err, p2p.CodeBadRequest) {
			break
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		pause *= 2
	}
	if ev.Deleted {
		log.Warn("directory: could not tell a node of an account deletion; the user's records stay on it and its cached credentials expire on their own", "err", err)
	} else {
		log.Warn("directory: could not tell a node of a credential change; its cached credentials expire on their own", "err", err)
	}
}
