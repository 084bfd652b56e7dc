package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Partitions cut links between members the way a network partition would,
// while the test's own clients keep reaching every member over HTTP. Each
// voter and node of a testnet watches the file BlocklistFile in its data
// folder and refuses what it lists, one item per line:
//
//	<libp2p peer ID>      a node or voter: the gater refuses it and open
//	                      connections to it are closed (nodes and voters)
//	raft:<voter ID>       raft traffic with that voter (voters only; see
//	                      directory.Faults and raftls.Config.Refuse)
//	http:<host:port>      voter-to-voter HTTP (join, forwarded writes) to
//	                      that address (voters only)
//
// The file works the same for in-process members and for child processes,
// so `hce testnet partition` acts on a running testnet from another shell.
// A node's HTTP calls to the directory at start (voter list, registration)
// are not cut: a restarted node registers, then finds its libp2p links as
// the partition leaves them.
const BlocklistFile = "blocked-peers"

// blockPoll is how often a member rereads its blocklist file.
const blockPoll = 100 * time.Millisecond

// Prefixes of the non-peer items of a blocklist file.
const (
	blockRaft = "raft:"
	blockHTTP = "http:"
)

// denyList is what a blocklist file refuses; safe for concurrent use. It
// is a directory.Faults for voters.
type denyList struct {
	mu     sync.RWMutex
	last   []byte
	peers  map[peer.ID]struct{}
	voters map[string]struct{}
	addrs  map[string]struct{}
}

func (d *denyList) blocked(id peer.ID) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.peers[id]
	return ok
}

// RefusePeer reports whether the libp2p peer is blocked.
func (d *denyList) RefusePeer(id peer.ID) bool { return d.blocked(id) }

// RefuseVoter reports whether raft traffic with the voter is blocked.
func (d *denyList) RefuseVoter(id string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.voters[id]
	return ok
}

// refusesAddr reports whether HTTP to host:port is blocked.
func (d *denyList) refusesAddr(hostport string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.addrs[hostport]
	return ok
}

// counts returns how many peers and voters are blocked.
func (d *denyList) counts() (peers, voters int) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.peers), len(d.voters)
}

// load rereads path (a missing file blocks nothing). It reports whether
// the content changed and which peers are newly blocked.
func (d *denyList) load(path string) (changed bool, added []peer.ID, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b, err = nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.peers != nil && bytes.Equal(b, d.last) {
		return false, nil, nil
	}
	d.last = b
	peers := map[peer.ID]struct{}{}
	voters := map[string]struct{}{}
	addrs := map[string]struct{}{}
	for _, item := range strings.Fields(string(b)) {
		switch {
		case strings.HasPrefix(item, blockRaft):
			voters[strings.TrimPrefix(item, blockRaft)] = struct{}{}
		case strings.HasPrefix(item, blockHTTP):
			addrs[strings.TrimPrefix(item, blockHTTP)] = struct{}{}
		default:
			if id, err := peer.Decode(item); err == nil {
				peers[id] = struct{}{}
				if _, ok := d.peers[id]; !ok {
					added = append(added, id)
				}
			}
		}
	}
	d.peers, d.voters, d.addrs = peers, voters, addrs
	return true, added, nil
}

// watchBlocklist applies path to deny every blockPoll until ctx ends: it
// closes h's connections to newly blocked peers and calls changed (when
// set) after every change.
func watchBlocklist(ctx context.Context, path string, deny *denyList, h host.Host, changed func(), log *slog.Logger) {
	t := time.NewTicker(blockPoll)
	defer t.Stop()
	for {
		ok, added, err := deny.load(path)
		if err == nil && ok {
			for _, id := range added {
				_ = h.Network().ClosePeer(id)
			}
			if changed != nil {
				changed()
			}
			peers, voters := deny.counts()
			log.Info("testnet: blocklist applied", "peers", peers, "voters", voters)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// writeBlocklist replaces a member's blocklist file atomically.
func writeBlocklist(dir string, items []string) error {
	path := filepath.Join(dir, BlocklistFile)
	if len(items) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(items, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Partition cuts links between the members named in the groups (voter
// ids d1, d2... and node names n1, n2... or node ids):
//
//   - two members named in different groups lose their link, whatever
//     they are: node<->node (libp2p, both gaters), node<->voter (libp2p,
//     both gaters), voter<->voter (raft, libp2p and voter-to-voter HTTP);
//   - when the groups name at least one node, a node named in no group
//     loses its links to every other node (the node-only partitions of
//     earlier testnets);
//   - every other link stays, and clients reach every member over HTTP.
//
// So `Partition([]string{"n1", "n2"}, []string{"n3", "n4"})` splits the
// nodes and leaves the directory whole, and `Partition([]string{"d1"},
// []string{"d2", "d3", "n1", "n2", "n3", "n4"})` cuts voter d1 off from
// everyone. It replaces any earlier partition or Cut and returns once every
// member's blocklist is written (running members apply it within about
// 100 ms; a member started later reads it at start).
func (t *Testnet) Partition(groups ...[]string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	group := map[*member]int{}
	nodesNamed := false
	for gi, g := range groups {
		ms, err := t.members(g)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if _, dup := group[m]; dup {
				return fmt.Errorf("testnet: %s is in two groups", m.name)
			}
			group[m] = gi
			nodesNamed = nodesNamed || !m.voter
		}
	}
	return t.applyCuts(func(a, b *member) bool {
		ga, inA := group[a]
		gb, inB := group[b]
		if inA && inB {
			return ga != gb
		}
		return nodesNamed && !a.voter && !b.voter
	})
}

// Cut cuts every link between a member of a and a member of b (voters or
// nodes, as Partition names them) and no other link: `Cut([]string{"n1"},
// []string{"d1", "d2", "d3"})` cuts n1 off from the directory while it
// keeps replicating with the other nodes; `Cut([]string{"d1"},
// []string{"d2", "d3"})` cuts voter d1 off from the other voters while
// every node reaches it. A member in both lists is an error. Like
// Partition it replaces any earlier partition or cut.
func (t *Testnet) Cut(a, b []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	as, err := t.members(a)
	if err != nil {
		return err
	}
	bs, err := t.members(b)
	if err != nil {
		return err
	}
	side := map[*member]int{}
	for _, m := range as {
		side[m] = 1
	}
	for _, m := range bs {
		if side[m] == 1 {
			return fmt.Errorf("testnet: %s is on both sides of the cut", m.name)
		}
		side[m] = 2
	}
	return t.applyCuts(func(x, y *member) bool { return side[x]+side[y] == 3 })
}

// members resolves names (ids or short names, "" skipped); t.mu held.
func (t *Testnet) members(names []string) ([]*member, error) {
	var out []*member
	for _, name := range names {
		if name == "" {
			continue
		}
		m := t.find(name)
		if m == nil {
			return nil, fmt.Errorf("%w: %q", ErrUnknownMember, name)
		}
		out = append(out, m)
	}
	return out, nil
}

// applyCuts writes every member's blocklist from cut, a symmetric
// predicate over pairs of distinct members; t.mu held.
func (t *Testnet) applyCuts(cut func(a, b *member) bool) error {
	all := append(append([]*member{}, t.voters...), t.nodes...)
	for _, m := range all {
		var items []string
		for _, o := range all {
			if o == m || !cut(m, o) {
				continue
			}
			if pid := o.peerID(); pid != "" {
				items = append(items, pid)
			}
			if m.voter && o.voter {
				items = append(items, blockRaft+o.id, blockHTTP+o.httpAddr)
			}
		}
		slices.Sort(items)
		if err := writeBlocklist(m.data, items); err != nil {
			return fmt.Errorf("testnet: partition %s: %w", m.name, err)
		}
	}
	return nil
}

// peerID is the member's libp2p peer ID ("" until known); t.mu held.
func (m *member) peerID() string {
	if m.voter {
		return m.p2pID
	}
	return m.id
}

// Heal ends any partition: every member's blocklist is emptied.
func (t *Testnet) Heal() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range append(append([]*member{}, t.voters...), t.nodes...) {
		if err := writeBlocklist(m.data, nil); err != nil {
			return fmt.Errorf("testnet: heal %s: %w", m.name, err)
		}
	}
	return nil
}

// ReplicaSet returns the base URLs of user's replica set, primary first,
// as the directory has it now.
func (t *Testnet) ReplicaSet(ctx context.Context, user string) ([]string, error) {
	out, _, err := t.replicaView(ctx, user)
	return out, err
}

// replicaView returns user's replica set as ReplicaSet does, and whether
// a member is still filling (backfilling; it serves nobody yet).
func (t *Testnet) replicaView(ctx context.Context, user string) ([]string, bool, error) {
	type member struct {
		ID, URL string
		Filling bool `json:"filling"`
	}
	var view struct {
		Primary  member   `json:"primary"`
		Replicas []member `json:"replicas"`
	}
	if err := t.admin(ctx, http.MethodGet, t.liveVoterURL(ctx), "/admin/v1/users/"+url.PathEscape(user), &view); err != nil {
		return nil, false, err
	}
	var out []string
	filling := false
	for _, m := range append([]member{view.Primary}, view.Replicas...) {
		if m.ID == "" {
			continue
		}
		out = append(out, m.URL)
		filling = filling || m.Filling
	}
	return out, filling, nil
}

// SettledReplicaSet waits until no member of user's replica set is
// filling (a backfill started by a repair or a rebalance has finished) and
// returns the set; at ctx's end it returns the last set with an error.
func (t *Testnet) SettledReplicaSet(ctx context.Context, user string) ([]string, error) {
	for {
		set, filling, err := t.replicaView(ctx, user)
		if err == nil && !filling {
			return set, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("testnet: a member of %s's set %v is still filling", user, set)
			}
			return set, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// feedState is what WaitConverged compares: every document's open
// revisions and whether its winner is deleted.
type feedState map[string]string

// feed reads user's whole changes feed (style=all_docs) from a node's
// CouchDB endpoint.
func (t *Testnet) feed(ctx context.Context, base, user, password string) (feedState, error) {
	u := strings.TrimSuffix(base, "/") + "/couch/" + url.PathEscape(user) + "/_changes?style=all_docs"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(user, password)
	resp, err := t.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("testnet: %s: %s", u, resp.Status)
	}
	var out struct {
		Results []struct {
			ID      string `json:"id"`
			Deleted bool   `json:"deleted"`
			Changes []struct {
				Rev string `json:"rev"`
			} `json:"changes"`
		} `json:"results"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&out); err != nil {
		return nil, err
	}
	st := feedState{}
	for _, r := range out.Results {
		var revs []string
		for _, c := range r.Changes {
			revs = append(revs, c.Rev)
		}
		slices.Sort(revs)
		st[r.ID] = fmt.Sprint(r.Deleted, revs)
	}
	return st, nil
}

// WaitConverged polls the nodes of user's replica set (the directory's
// view, read again at every round) until each serves the same documents
// with the same open revisions and winners' deleted flags over its CouchDB
// endpoint, or ctx ends. It reads with the user's password (Basic auth).
func (t *Testnet) WaitConverged(ctx context.Context, user, password string) error {
	err, last := pollUntil(ctx, 50*time.Millisecond, func() error { return t.converged(ctx, user, password) })
	if err != nil {
		return fmt.Errorf("testnet: %s not converged: %w (last: %v)", user, err, last)
	}
	return nil
}

func (t *Testnet) converged(ctx context.Context, user, password string) error {
	set, err := t.ReplicaSet(ctx, user)
	if err != nil {
		return err
	}
	if len(set) == 0 {
		return errors.New("no replica set")
	}
	var first feedState
	for i, base := range set {
		st, err := t.feed(ctx, base, user, password)
		if err != nil {
			return err
		}
		if i == 0 {
			first = st
			continue
		}
		if !maps.Equal(first, st) {
			return fmt.Errorf("%s and %s differ (%d vs %d documents)", set[0], base, len(first), len(st))
		}
	}
	return nil
}
