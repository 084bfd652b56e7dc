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

// Partitions cut the libp2p links between storage nodes (replication and
// its push notices); every node keeps reaching the directory, so nothing
// is failed over because of a partition. Each node of a testnet watches
// the file BlocklistFile in its data folder: one libp2p peer ID per line,
// peers its gater refuses and whose connections it closes. The file works
// the same for in-process nodes and for child processes, so `hce testnet
// partition` acts on a running testnet from another shell.
const BlocklistFile = "blocked-peers"

// blockPoll is how often a node rereads its blocklist file.
const blockPoll = 100 * time.Millisecond

// denyList is the set of peers a partition blocks; safe for concurrent use.
type denyList struct {
	mu sync.RWMutex
	m  map[peer.ID]struct{}
}

func (d *denyList) blocked(id peer.ID) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.m[id]
	return ok
}

// set replaces the list and returns the newly blocked peers.
func (d *denyList) set(ids []peer.ID) []peer.ID {
	d.mu.Lock()
	defer d.mu.Unlock()
	var added []peer.ID
	m := make(map[peer.ID]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
		if _, ok := d.m[id]; !ok {
			added = append(added, id)
		}
	}
	d.m = m
	return added
}

// watchBlocklist applies path to deny and h until ctx ends.
func watchBlocklist(ctx context.Context, path string, deny *denyList, h host.Host, log *slog.Logger) {
	var last []byte
	t := time.NewTicker(blockPoll)
	defer t.Stop()
	for {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			b, err = nil, nil
		}
		if err == nil && !bytes.Equal(b, last) {
			last = b
			var ids []peer.ID
			for _, line := range strings.Fields(string(b)) {
				if id, err := peer.Decode(line); err == nil {
					ids = append(ids, id)
				}
			}
			for _, id := range deny.set(ids) {
				_ = h.Network().ClosePeer(id)
			}
			log.Info("testnet: blocklist applied", "blocked", len(ids))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// writeBlocklist replaces a node's blocklist file atomically.
func writeBlocklist(dir string, ids []string) error {
	path := filepath.Join(dir, BlocklistFile)
	if len(ids) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(ids, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Partition splits the storage nodes into the given groups (node ids or
// short names n1, n2...): nodes in different groups stop reaching each
// other over libp2p, nodes in no group are cut off from every other node.
// It replaces any earlier partition and returns once every node's
// blocklist is written (running nodes apply it within ~100 ms).
func (t *Testnet) Partition(groups ...[]string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	group := map[*member]int{}
	for gi, g := range groups {
		for _, name := range g {
			m := t.find(name)
			if m == nil || m.voter {
				return fmt.Errorf("%w: %q is not a storage node", ErrUnknownMember, name)
			}
			if _, dup := group[m]; dup {
				return fmt.Errorf("testnet: node %s is in two groups", m.name)
			}
			group[m] = gi
		}
	}
	for _, m := range t.nodes {
		gm, inM := group[m]
		var block []string
		for _, o := range t.nodes {
			if o == m || o.id == "" {
				continue
			}
			if go_, inO := group[o]; !inM || !inO || go_ != gm {
				block = append(block, o.id)
			}
		}
		slices.Sort(block)
		if err := writeBlocklist(m.data, block); err != nil {
			return fmt.Errorf("testnet: partition %s: %w", m.name, err)
		}
	}
	return nil
}

// Heal ends any partition.
func (t *Testnet) Heal() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.nodes {
		if err := writeBlocklist(m.data, nil); err != nil {
			return fmt.Errorf("testnet: heal %s: %w", m.name, err)
		}
	}
	return nil
}

// ReplicaSet returns the base URLs of user's replica set, primary first,
// as the directory has it now.
func (t *Testnet) ReplicaSet(ctx context.Context, user string) ([]string, error) {
	var view struct {
		Primary  struct{ ID, URL string }   `json:"primary"`
		Replicas []struct{ ID, URL string } `json:"replicas"`
	}
	if err := t.admin(ctx, http.MethodGet, t.liveVoterURL(ctx), "/admin/v1/users/"+url.PathEscape(user), &view); err != nil {
		return nil, err
	}
	var out []string
	if view.Primary.ID != "" {
		out = append(out, view.Primary.URL)
	}
	for _, r := range view.Replicas {
		out = append(out, r.URL)
	}
	return out, nil
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
