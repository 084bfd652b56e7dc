package directory

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// leaderCommits remembers the commit index the raft leader last sent this
// voter: every AppendEntries request but a heartbeat carries it (raft's
// leader sends one at least every CommitTimeout), and raft keeps no copy
// of it. A follower's own commit index is capped at the last entry it
// holds, so a follower still catching up (restarted, or back from a
// partition) cannot tell from raft how far behind it is; it can from
// this. fresh uses it: a follower answers who serves a user only once it
// has applied what the leader had committed when it last heard from it.
type leaderCommits struct {
	mu    sync.Mutex
	term  uint64    // the term of the leader that sent index
	index uint64    // the highest commit index that leader sent
	at    time.Time // when it was last sent
}

// observe records the leader's commit index if rpc carries one.
func (c *leaderCommits) observe(rpc raft.RPC, now time.Time) {
	ae, ok := rpc.Command.(*raft.AppendEntriesRequest)
	if !ok || ae.LeaderCommitIndex == 0 {
		return // not an AppendEntries, or a heartbeat (which carries no index)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case ae.Term > c.term:
		c.term, c.index, c.at = ae.Term, ae.LeaderCommitIndex, now
	case ae.Term == c.term:
		// Requests of one leader may arrive out of order (raft pipelines
		// them); its commit index only grows.
		c.index, c.at = max(c.index, ae.LeaderCommitIndex), now
	}
	// An older term's leader (deposed, not yet told) says nothing new.
}

// last returns what observe recorded: the leader's term, its commit index
// and when it was last sent (zero before any).
func (c *leaderCommits) last() (term, index uint64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.term, c.index, c.at
}

// watchedTransport is a raft NetworkTransport whose incoming RPCs pass
// through leaderCommits on their way to raft. Embedding the transport
// keeps the interfaces raft looks for on it (pre-vote, Close, the
// heartbeat fast path, which bypasses the consumer and carries no commit
// index).
type watchedTransport struct {
	*raft.NetworkTransport
	rpcs chan raft.RPC
}

// Consumer implements raft.Transport: the inner transport's RPCs, after
// observe.
func (t *watchedTransport) Consumer() <-chan raft.RPC { return t.rpcs }

// watchCommits returns tr with its RPCs observed by c until done is
// closed (after raft has shut down).
func watchCommits(tr *raft.NetworkTransport, c *leaderCommits, done <-chan struct{}) *watchedTransport {
	w := &watchedTransport{NetworkTransport: tr, rpcs: make(chan raft.RPC)}
	in := tr.Consumer()
	go func() {
		for {
			select {
			case rpc := <-in:
				c.observe(rpc, time.Now())
				select {
				case w.rpcs <- rpc:
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	}()
	return w
}
