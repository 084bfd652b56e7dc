package directory

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/node/dirclient"
)

// usersNode is a registered storage node with its libp2p host.
type usersNode struct {
	id   string
	url  string
	host host.Host
}

// registerUsersNode registers (and, with AutoApprove, admits) a storage
// node whose identity is a fresh Ed25519 key, and starts its host.
func registerUsersNode(t *testing.T, ctx context.Context, d *Directory, i int) usersNode {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	edKey, err := p2p.Ed25519Key(key)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://node%d.example/", i)
	body, sig, err := SignRegistration(edKey, Registration{BaseURL: url, Operator: fmt.Sprintf("op%d", i), Capacity: 100000}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	info, err := d.RegisterNode(ctx, body, sig)
	if err != nil {
		t.Fatal(err)
	}
	return usersNode{id: info.ID, url: url, host: newTestP2PHost(t, key)}
}

// createUsers creates the users through raft (with a placeholder hash:
// these tests never check passwords), several at a time so that the
// group commit batches them.
func createUsers(t *testing.T, ctx context.Context, d *Directory, names []string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	sem := make(chan struct{}, 32)
	for _, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := d.write(ctx, CreateUser{Name: n, Hash: "placeholder", Created: 1}); err != nil {
				errs <- fmt.Errorf("create %q: %w", n, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// expectedUsers computes, from the directory's local state, the sorted
// users whose set contains node id, each with its set's node IDs.
func expectedUsers(t *testing.T, d *Directory, users []string, id string) map[string][]string {
	t.Helper()
	out := make(map[string][]string)
	for _, u := range users {
		primary, replicas, err := d.Assignment(u)
		if err != nil {
			continue // deleted
		}
		set := []string{primary}
		for _, r := range replicas {
			set = append(set, r.ID)
		}
		if slices.Contains(set, id) {
			out[u] = set
		}
	}
	return out
}

// sweep pages through the calling node's users with limit and checks
// order and the version's stability; it returns the users and the
// version of the first page.
func sweep(t *testing.T, ctx context.Context, c *dirclient.Client, limit int) ([]dirproto.UserReplicas, uint64) {
	t.Helper()
	var all []dirproto.UserReplicas
	after := ""
	var first uint64
	for page := 0; ; page++ {
		users, more, version, err := c.AssignedUsers(ctx, after, limit)
		if err != nil {
			t.Fatalf("AssignedUsers(%q, %d): %v", after, limit, err)
		}
		if page == 0 {
			first = version
		} else if version != first {
			t.Fatalf("version moved from %d to %d within a quiet sweep", first, version)
		}
		if limit > 0 && len(users) > limit {
			t.Fatalf("page of %d users, limit %d", len(users), limit)
		}
		if more && len(users) == 0 {
			t.Fatal("empty page with More set")
		}
		all = append(all, users...)
		if !more {
			break
		}
		after = users[len(users)-1].User
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].User >= all[i].User {
			t.Fatalf("users out of order: %q then %q", all[i-1].User, all[i].User)
		}
	}
	return all, first
}

// checkSweep compares a sweep of n's users with the directory's state.
func checkSweep(t *testing.T, d *Directory, users []string, nodes map[string]usersNode, n usersNode, got []dirproto.UserReplicas) {
	t.Helper()
	want := expectedUsers(t, d, users, n.id)
	if len(got) != len(want) {
		t.Fatalf("node %s: %d users, want %d", n.url, len(got), len(want))
	}
	for _, u := range got {
		set, ok := want[u.User]
		if !ok {
			t.Fatalf("node %s: user %q is not assigned to it", n.url, u.User)
		}
		if len(u.Nodes) != len(set) {
			t.Fatalf("user %q: %d replicas, want %d", u.User, len(u.Nodes), len(set))
		}
		for i, an := range u.Nodes {
			m := nodes[set[i]]
			if an.ID != set[i] || an.PeerID != m.host.ID().String() || an.URL != m.url {
				t.Fatalf("user %q replica %d: %+v, want id %s peer %s url %s", u.User, i, an, set[i], m.host.ID(), m.url)
			}
		}
	}
}

// usersDirectory opens a directory (auto-approve) serving the libp2p
// protocols on a voter host and registers n storage nodes with it.
func usersDirectory(t *testing.T, ctx context.Context, n int) (*Directory, host.Host, map[string]usersNode, []usersNode) {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.AutoApprove = true
	d := openDir(t, cfg)
	voter := newTestP2PHost(t, nil)
	d.ServeP2P(voter)
	nodes := make(map[string]usersNode)
	var order []usersNode
	for i := range n {
		un := registerUsersNode(t, ctx, d, i)
		nodes[un.id] = un
		order = append(order, un)
	}
	return d, voter, nodes, order
}

func TestUsersP2PPaging(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, voter, nodes, order := usersDirectory(t, ctx, 4)
	var users []string
	for i := range 90 {
		users = append(users, fmt.Sprintf("user-%03d", i))
	}
	createUsers(t, ctx, d, users)

	clients := make(map[string]*dirclient.Client)
	total := 0
	versions := make(map[string]uint64)
	for _, n := range order {
		c := newDirClient(t, n.host, voter)
		clients[n.id] = c
		for _, limit := range []int{1, 7, 0, dirproto.MaxUsersPage + 1} {
			got, v := sweep(t, ctx, c, limit)
			checkSweep(t, d, users, nodes, n, got)
			if v == 0 {
				t.Fatalf("node %s: version 0 on a voter that never restored", n.url)
			}
			if limit == 7 {
				total += len(got)
				versions[n.id] = v
			}
		}
		// A page starting after the last user is empty.
		if got, more, _, err := c.AssignedUsers(ctx, "user-999", 5); err != nil || len(got) != 0 || more {
			t.Fatalf("page after the end: %v %v %v", got, more, err)
		}
	}
	if want := len(users) * d.Settings().Replicas; total != want {
		t.Fatalf("%d assignments listed, want %d", total, want)
	}

	// A node goes down: its users get new replicas. The lists of the
	// nodes involved change, and so do their versions.
	down := order[0]
	if err := d.write(ctx, SetNodeState{ID: down.id, State: placement.Down}); err != nil {
		t.Fatal(err)
	}
	for _, n := range order {
		got, v := sweep(t, ctx, clients[n.id], 5)
		checkSweep(t, d, users, nodes, n, got)
		if n.id == down.id {
			continue
		}
		if v < versions[n.id] {
			t.Fatalf("node %s: version went back from %d to %d", n.url, versions[n.id], v)
		}
		if len(expectedUsers(t, d, users, n.id)) != 0 && v == versions[n.id] {
			// Every other node shared users with the failed one (90 users,
			// 4 nodes), so every list changed.
			t.Fatalf("node %s: version %d unchanged after a repair", n.url, v)
		}
		versions[n.id] = v
	}
	// A write that does not touch the lists leaves the versions alone.
	if err := d.write(ctx, SetEmail{Name: users[0], Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range order[1:] {
		if _, v := sweep(t, ctx, clients[n.id], 0); v != versions[n.id] {
			t.Fatalf("node %s: version %d -> %d after an unrelated write", n.url, versions[n.id], v)
		}
	}

	// A peer that is not a registered node is refused.
	stranger := newDirClient(t, newTestP2PHost(t, nil), voter)
	if _, _, _, err := stranger.AssignedUsers(ctx, "", 10); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("stranger: %v", err)
	}
	// So is a retired node.
	if err := d.RetireNode(ctx, order[1].id); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := clients[order[1].id].AssignedUsers(ctx, "", 10); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("retired node: %v", err)
	}
	// A request out of bounds is refused before it leaves the node.
	if _, _, _, err := clients[order[2].id].AssignedUsers(ctx, "", -1); err == nil {
		t.Fatal("negative limit accepted")
	}
}

func TestUsersP2PMessageBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, voter, nodes, order := usersDirectory(t, ctx, 2)
	// 150 users of about 1,000 bytes each: more than 64 KiB of names.
	var users []string
	for i := range 150 {
		users = append(users, fmt.Sprintf("u%04d-%s", i, strings.Repeat("x", dirproto.MaxUserLen-6)))
	}
	createUsers(t, ctx, d, users)

	n := order[0]
	c := newDirClient(t, n.host, voter)
	got, more, _, err := c.AssignedUsers(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !more || len(got) >= len(users) {
		t.Fatalf("first page: %d users, more %v; want a page cut short", len(got), more)
	}
	// The page is as full as the bound allows: one more entry would not fit.
	b, err := p2p.Marshal(dirproto.UsersResponse{Users: got, More: true, Version: ^uint64(0)})
	if err != nil {
		t.Fatalf("page does not fit in a message: %v", err)
	}
	entry, _ := json.Marshal(got[0])
	if len(b)+len(entry)+1 <= p2p.MaxMessageSize {
		t.Fatalf("page of %d bytes stopped although another %d-byte entry fits", len(b), len(entry))
	}
	// The handler itself never builds an oversized answer, whatever the limit.
	resp, err := d.p2pUsers(ctx, n.host.ID(), dirproto.UsersRequest{Limit: dirproto.MaxUsersPage})
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := json.Marshal(resp); err != nil || len(raw) > p2p.MaxMessageSize {
		t.Fatalf("handler answer of %d bytes: %v", len(raw), err)
	}
	all, _ := sweep(t, ctx, c, 0)
	checkSweep(t, d, users, nodes, n, all)
	if len(all) != len(users) { // two nodes, two replicas: each holds everyone
		t.Fatalf("%d users listed, want %d", len(all), len(users))
	}
}

func TestUsersP2PReplicasCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, voter, _, order := usersDirectory(t, ctx, 3)
	createUsers(t, ctx, d, []string{"alice"})
	set := func() []string {
		primary, replicas, err := d.Assignment("alice")
		if err != nil {
			t.Fatal(err)
		}
		ids := []string{primary}
		for _, r := range replicas {
			ids = append(ids, r.ID)
		}
		return ids
	}
	before := set()

	// Clients of every node, with a TTL that outlives the test.
	clients := make(map[string]*dirclient.Client)
	for _, n := range order {
		c, err := dirclient.New(dirclient.Config{
			Host:          n.host,
			Directory:     []peer.AddrInfo{{ID: voter.ID(), Addrs: voter.Addrs()}},
			Logger:        testLogger(t),
			MembershipTTL: time.Hour,
		})
		if err != nil {
			t.Fatal(err)
		}
		clients[n.id] = c
	}
	ids := func(ns []dirproto.AssignedNode) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.ID)
		}
		return out
	}
	for _, n := range order {
		c := clients[n.id]
		got, err := c.Replicas(ctx, "alice")
		if err != nil || !slices.Equal(ids(got), before) {
			t.Fatalf("Replicas from %s: %v %v, want %v", n.url, ids(got), err, before)
		}
		got[0].ID = "scribbled" // the caller owns the slice
		holds, err := c.Holds(ctx, "alice")
		if err != nil || holds != slices.Contains(before, n.id) {
			t.Fatalf("Holds from %s: %v %v", n.url, holds, err)
		}
		if r, err := c.Replicas(ctx, "nobody"); err != nil || len(r) != 0 {
			t.Fatalf("Replicas of an unknown user: %v %v", r, err)
		}
	}

	// The primary goes down and is replaced; the cached sets stay until
	// invalidated.
	if err := d.write(ctx, SetNodeState{ID: before[0], State: placement.Down}); err != nil {
		t.Fatal(err)
	}
	after := set()
	if slices.Contains(after, before[0]) {
		t.Fatalf("set %v still lists the down node", after)
	}
	for _, n := range order {
		c := clients[n.id]
		if got, _ := c.Replicas(ctx, "alice"); !slices.Equal(ids(got), before) {
			t.Fatalf("cached set from %s: %v, want %v", n.url, ids(got), before)
		}
		if holds, _ := c.Holds(ctx, "alice"); holds != slices.Contains(before, n.id) {
			t.Fatalf("cached Holds from %s: %v", n.url, holds)
		}
		c.InvalidateUser("alice")
		// Holds refills the entry Replicas then reuses.
		if holds, err := c.Holds(ctx, "alice"); err != nil || holds != slices.Contains(after, n.id) {
			t.Fatalf("Holds from %s after invalidation: %v %v", n.url, holds, err)
		}
		if got, err := c.Replicas(ctx, "alice"); err != nil || !slices.Equal(ids(got), after) {
			t.Fatalf("Replicas from %s after invalidation: %v %v, want %v", n.url, ids(got), err, after)
		}
	}
}

// checkUserIndex compares the FSM's derived per-node index with Assign.
func checkUserIndex(t *testing.T, f *fsm) {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	want := make(map[string][]string)
	for u, set := range f.cl.Assign {
		for _, id := range set {
			want[id] = append(want[id], u)
		}
	}
	if len(want) != len(f.cl.byNode) {
		t.Fatalf("index has %d nodes, assignments %d", len(f.cl.byNode), len(want))
	}
	for id, users := range want {
		slices.Sort(users)
		s := f.cl.byNode[id]
		if s == nil {
			t.Fatalf("node %s missing from the index", id)
		}
		if got := s.after("", len(users)+1); !slices.Equal(got, users) || s.len() != len(users) {
			t.Fatalf("node %s: index %v (len %d), want %v", id, got, s.len(), users)
		}
	}
}

func TestFSMUserIndex(t *testing.T) {
	f := newFSM(testLogger(t), nil)
	idx := uint64(0)
	apply := func(c Command) {
		t.Helper()
		idx++
		if res := applyCmd(t, f, idx, c); res != nil {
			if err, ok := res.(error); ok && err != nil {
				t.Fatalf("%T: %v", c, err)
			}
		}
	}
	for i := range 5 {
		apply(RegisterNode{ID: fmt.Sprintf("n%d", i), Operator: fmt.Sprintf("op%d", i), BaseURL: "http://n/",
			Capacity: 1000, PublicKey: []byte{byte(i)}, Approve: true})
	}
	for i := range 200 {
		apply(CreateUser{Name: fmt.Sprintf("u%03d", i), Hash: "h"})
	}
	checkUserIndex(t, f)
	steps := []Command{
		SetNodeState{ID: "n0", State: placement.Down},
		SetNodeState{ID: "n0", State: placement.Active},
		SetSettings{Settings: Settings{Replicas: 3}},
		SetNodeState{ID: "n1", State: placement.Draining},
		FinishDrain{ID: "n1"},
		RetireNode{ID: "n2"},
		DeleteUser{Name: "u007"},
	}
	for _, c := range steps {
		apply(c)
		checkUserIndex(t, f)
	}
	_, _, _, v := f.usersPage("n3", "", 1)
	if v == 0 || v > idx {
		t.Fatalf("version %d, last index %d", v, idx)
	}

	// Restore rebuilds the index; versions are unknown until the next
	// cluster change, which then bounds every list.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM(testLogger(t), nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	checkUserIndex(t, g)
	for _, id := range []string{"n0", "n3", "n4"} {
		p1, _, m1, _ := f.usersPage(id, "u050", 40)
		p2, _, m2, v2 := g.usersPage(id, "u050", 40)
		if !slices.EqualFunc(p1, p2, func(a, b userAssignment) bool { return a.User == b.User && slices.Equal(a.Set, b.Set) }) || m1 != m2 {
			t.Fatalf("node %s: restored page differs", id)
		}
		if v2 != 0 {
			t.Fatalf("node %s: version %d right after a restore, want 0 (unknown)", id, v2)
		}
	}
	idx++
	applyCmd(t, g, idx, SetEmail{Name: "u001", Email: "x@y"}) // not a cluster change
	if _, _, _, v := g.usersPage("n3", "", 1); v != 0 {
		t.Fatalf("version %d after an account-only change", v)
	}
	idx++
	applyCmd(t, g, idx, CreateUser{Name: "zz-new", Hash: "h"})
	for _, id := range []string{"n0", "n3", "n4"} {
		if _, _, _, v := g.usersPage(id, "", 1); v != idx {
			t.Fatalf("node %s: version %d after the first change since restore at %d", id, v, idx)
		}
	}
	checkUserIndex(t, g)
}

// TestUserSet checks the ordered set against a sorted slice under random
// inserts and removals, enough to split and merge blocks many times.
func TestUserSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := newUserSet(nil)
	ref := map[string]bool{}
	name := func() string { return fmt.Sprintf("u%05d", rng.IntN(6000)) }
	check := func() {
		t.Helper()
		want := make([]string, 0, len(ref))
		for u := range ref {
			want = append(want, u)
		}
		slices.Sort(want)
		if s.len() != len(want) {
			t.Fatalf("len %d, want %d", s.len(), len(want))
		}
		for _, b := range s.blocks {
			if len(b) == 0 || len(b) > userSetBlock {
				t.Fatalf("block of %d names", len(b))
			}
		}
		if got := s.after("", len(want)+1); !slices.Equal(got, want) {
			t.Fatalf("contents differ (%d vs %d)", len(got), len(want))
		}
		for range 20 {
			k, limit := name(), 1+rng.IntN(700)
			i, found := slices.BinarySearch(want, k)
			if found {
				i++
			}
			w := want[i:min(len(want), i+limit)]
			if got := s.after(k, limit); !slices.Equal(got, w) {
				t.Fatalf("after(%q, %d): %d names, want %d", k, limit, len(got), len(w))
			}
		}
	}
	for round := range 6 {
		// Grow, then shrink, then mix.
		for range 4000 {
			u := name()
			switch {
			case round%3 == 1:
				if s.remove(u) != ref[u] {
					t.Fatalf("remove(%q) disagrees", u)
				}
				delete(ref, u)
			case round%3 == 2 && rng.IntN(2) == 0:
				if s.remove(u) != ref[u] {
					t.Fatalf("remove(%q) disagrees", u)
				}
				delete(ref, u)
			default:
				if s.insert(u) == ref[u] {
					t.Fatalf("insert(%q) disagrees", u)
				}
				ref[u] = true
			}
		}
		check()
	}
	// Built from a sorted list, as a restore does.
	sorted := s.after("", s.len())
	b := newUserSet(slices.Clone(sorted))
	if got := b.after("", len(sorted)+1); !slices.Equal(got, sorted) {
		t.Fatal("newUserSet lost names")
	}
	if !b.insert("zzz") || !b.remove(sorted[0]) || b.remove("nope") {
		t.Fatal("insert/remove on a built set")
	}
}
