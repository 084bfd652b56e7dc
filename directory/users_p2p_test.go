package directory

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
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
			if err := d.write(ctx, state.CreateUser{Name: n, Hash: "placeholder", Created: 1}); err != nil {
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

// expectedUsers computes, from the directory's local state, the users
// whose set names node id (as a member or a leaving node), each with its
// set.
func expectedUsers(t *testing.T, d *Directory, users []string, id string) map[string]Replicas {
	t.Helper()
	out := make(map[string]Replicas)
	for _, u := range users {
		r, err := d.Replicas(u)
		if err != nil {
			continue // deleted
		}
		names := slices.ContainsFunc(r.Members, func(m MemberInfo) bool { return m.ID == id }) ||
			slices.ContainsFunc(r.Leaving, func(n NodeInfo) bool { return n.ID == id })
		if names {
			out[u] = r
		}
	}
	return out
}

// sweep pages through the calling node's users with limit and checks
// order and the version's stability; it returns the users and the
// version of the first page.
func sweep(t *testing.T, ctx context.Context, c *dirCaller, limit int) ([]dirproto.UserReplicas, uint64) {
	t.Helper()
	var all []dirproto.UserReplicas
	after := ""
	var first uint64
	for page := 0; ; page++ {
		users, more, version, err := c.assignedUsers(ctx, after, limit)
		if err != nil {
			t.Fatalf("users page (%q, %d): %v", after, limit, err)
		}
		if len(users) > 0 && users[0].User <= after {
			t.Fatalf("page starts at %q, not after %q", users[0].User, after)
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
		if len(u.Nodes) != len(set.Members) || len(u.Leaving) != len(set.Leaving) {
			t.Fatalf("user %q: %d members, %d leaving, want %d, %d", u.User, len(u.Nodes), len(u.Leaving), len(set.Members), len(set.Leaving))
		}
		check := func(an dirproto.AssignedNode, want MemberInfo) {
			t.Helper()
			m := nodes[want.ID]
			if an.ID != want.ID || an.PeerID != m.host.ID().String() || an.URL != m.url ||
				an.Filling != want.Filling || an.Epoch != want.Epoch || an.Down != want.Down() {
				t.Fatalf("user %q: %+v, want %+v (peer %s url %s)", u.User, an, want, m.host.ID(), m.url)
			}
		}
		for i, an := range u.Nodes {
			check(an, set.Members[i])
		}
		for i, an := range u.Leaving {
			check(an, MemberInfo{NodeInfo: set.Leaving[i]})
		}
	}
}

func (c *dirCaller) assignedUsers(ctx context.Context, after string, limit int) ([]dirproto.UserReplicas, bool, uint64, error) {
	var resp dirproto.UsersResponse
	err := c.call(ctx, dirproto.ProtoUsers, dirproto.UsersRequest{After: after, Limit: limit}, &resp)
	return resp.Users, resp.More, resp.Version, err
}

// usersDirectory opens a directory (auto-approve) serving the libp2p
// protocols on a voter host and registers n storage nodes with it.
func usersDirectory(t *testing.T, ctx context.Context, n int) (*Directory, host.Host, map[string]usersNode, []usersNode) {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.Nodes.AutoApprove = true
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

	clients := make(map[string]*dirCaller)
	total := 0
	versions := make(map[string]uint64)
	for _, n := range order {
		c := newDirCaller(t, n.host, voter)
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
		if got, more, _, err := c.assignedUsers(ctx, "user-999", 5); err != nil || len(got) != 0 || more {
			t.Fatalf("page after the end: %v %v %v", got, more, err)
		}
	}
	if want := len(users) * d.Settings().Replicas; total != want {
		t.Fatalf("%d assignments listed, want %d", total, want)
	}

	// A node goes down: its users get new replicas. The lists of the
	// nodes involved change, and so do their versions.
	down := order[0]
	if err := d.write(ctx, state.SetNodeState{ID: down.id, State: placement.Down}); err != nil {
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
	if err := d.write(ctx, state.SetEmail{Name: users[0], Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range order[1:] {
		if _, v := sweep(t, ctx, clients[n.id], 0); v != versions[n.id] {
			t.Fatalf("node %s: version %d -> %d after an unrelated write", n.url, versions[n.id], v)
		}
	}

	// A peer that is not a registered node is refused.
	stranger := newDirCaller(t, newTestP2PHost(t, nil), voter)
	if _, _, _, err := stranger.assignedUsers(ctx, "", 10); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("stranger: %v", err)
	}
	// So is a retired node.
	if err := d.RetireNode(ctx, order[1].id); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := clients[order[1].id].assignedUsers(ctx, "", 10); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("retired node: %v", err)
	}
	// A request out of bounds is refused.
	if _, _, _, err := clients[order[2].id].assignedUsers(ctx, "", -1); !p2p.IsCode(err, p2p.CodeBadRequest) {
		t.Fatalf("negative limit: %v, want %s", err, p2p.CodeBadRequest)
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
	c := newDirCaller(t, n.host, voter)
	got, more, _, err := c.assignedUsers(ctx, "", 0)
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
	resp, err := (&p2pServer{d: d}).users(ctx, n.host.ID(), dirproto.UsersRequest{Limit: dirproto.MaxUsersPage})
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

// TestAssignmentP2P asks for a user's replica set over
// dirproto.ProtoAssignment(11) from every node: each node the set or its
// leaving list names gets the directory's current set (the node's own
// client caches it; node/dirclient tests that), version 1.1 with the
// user's credential state; every other node, and any node asking about
// an unknown user, is refused (forbidden), as is a peer that is not a
// node.
func TestAssignmentP2P(t *testing.T) {
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
	assignment := func(c *dirCaller, proto protocol.ID, user string) (dirproto.AssignmentResponse, error) {
		var resp dirproto.AssignmentResponse
		err := c.call(ctx, proto, dirproto.AssignmentRequest{User: user}, &resp)
		return resp, err
	}
	ids := func(ns []dirproto.AssignedNode) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.ID)
		}
		return out
	}
	check := func(want []string) {
		t.Helper()
		r, err := d.Replicas("alice")
		if err != nil {
			t.Fatal(err)
		}
		var leaving []string
		for _, n := range r.Leaving {
			leaving = append(leaving, n.ID)
		}
		creds := d.state.Credentials("alice")
		for _, n := range order {
			c := newDirCaller(t, n.host, voter)
			for _, proto := range []protocol.ID{dirproto.ProtoAssignment, dirproto.ProtoAssignment11} {
				got, err := assignment(c, proto, "alice")
				if !slices.Contains(want, n.id) && !slices.Contains(leaving, n.id) {
					if !p2p.IsCode(err, p2p.CodeForbidden) {
						t.Fatalf("%s: set of alice to %s, which does not hold her: %+v %v", proto, n.url, got, err)
					}
					continue
				}
				if err != nil || !got.Exists || !slices.Equal(ids(got.Nodes), want) {
					t.Fatalf("%s: set from %s: %v %v %v, want %v", proto, n.url, got.Exists, ids(got.Nodes), err, want)
				}
				if wantCreds := proto == dirproto.ProtoAssignment11; (got.Creds != nil) != wantCreds ||
					wantCreds && (got.Creds.ChangedAt != creds.ChangedAt || got.Creds.Gen != creds.Gen) {
					t.Fatalf("%s: creds %+v, state %+v", proto, got.Creds, creds)
				}
			}
			if r, err := assignment(c, dirproto.ProtoAssignment11, "nobody"); !p2p.IsCode(err, p2p.CodeForbidden) {
				t.Fatalf("set of an unknown user: %+v %v", r, err)
			}
		}
	}
	before := set()
	check(before)

	// The primary goes down and is replaced; the answers follow at once.
	if err := d.write(ctx, state.SetNodeState{ID: before[0], State: placement.Down}); err != nil {
		t.Fatal(err)
	}
	after := set()
	if slices.Contains(after, before[0]) {
		t.Fatalf("set %v still lists the down node", after)
	}
	check(after)

	stranger := newDirCaller(t, newTestP2PHost(t, nil), voter)
	if _, err := assignment(stranger, dirproto.ProtoAssignment11, "alice"); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("stranger: %v", err)
	}
}
