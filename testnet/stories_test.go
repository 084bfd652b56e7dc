package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/hce-sync/hce/api/client"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/replication"
)

// The stories below are end-to-end scenarios a user or an operator of the
// federation would recognise. Each starts an in-process testnet (one
// voter, real Pebble stores, real libp2p between the nodes, real HTTP) and
// talks to it the way a Sync client does: api/client through the
// directory, or plain HTTP with Basic credentials straight to a node.

// storyPassword is the password newClient gives every account.
const storyPassword = "client library password"

// storyContext skips a story under -short (it starts a federation) and
// returns its context, bounded by d and ended when the test ends.
func storyContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a federation")
	}
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// storyNet starts an in-process testnet for a story: one voter tuned for
// tests (cheap password hashes, short raft timeouts, 100 ms liveness
// tick), nodes down after 1.5 s of silence, 250 ms heartbeats and the
// testnet's default 2 s replication sweep unless mod changes them. It is
// closed when the test ends.
func storyNet(t *testing.T, ctx context.Context, nodes int, mod func(*Config)) *Testnet {
	t.Helper()
	var tn *Testnet
	var err error
	begin := time.Now()
	// Start picks free ports before it listens on them; another process
	// may take one in between (EADDRINUSE), so a few attempts are allowed.
	for attempt := 1; attempt <= 3; attempt++ {
		cfg := Config{Dir: t.TempDir(), Directories: 1, Nodes: nodes, DownAfter: 1500 * time.Millisecond,
			Heartbeat: 250 * time.Millisecond}
		if mod != nil {
			mod(&cfg)
		}
		extra := cfg.Directory
		cfg.Directory = func(c *directory.Config) {
			tuneDirectory(c)
			c.Nodes.LivenessTick = 100 * time.Millisecond
			if extra != nil {
				extra(c)
			}
		}
		tn, err = Start(ctx, cfg)
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		t.Logf("start attempt %d: %v", attempt, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tn.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	t.Logf("testnet of %d nodes up in %v", nodes, time.Since(begin).Round(time.Millisecond))
	return tn
}

// inProcess returns the running in-process node with the given base URL,
// id or short name.
func (tn *Testnet) inProcess(t *testing.T, which string) (*Node, string) {
	t.Helper()
	tn.mu.Lock()
	defer tn.mu.Unlock()
	for _, m := range tn.nodes {
		if m.url == which || m.id == which || m.name == which {
			if m.n == nil {
				t.Fatalf("node %s is not running", m.name)
			}
			return m.n, m.name
		}
	}
	t.Fatalf("no node %q in the testnet", which)
	return nil, ""
}

// storyResp is a node's answer to a direct request.
type storyResp struct {
	code int
	body []byte
	hdr  http.Header
}

var storyHTTP = &http.Client{Timeout: 20 * time.Second}

// storyCall sends one request with Basic credentials (none when user is
// empty) to url. A nil body sends none; otherwise it is sent as JSON.
func storyCall(ctx context.Context, method, url, user, password string, body []byte) (storyResp, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return storyResp{}, err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := storyHTTP.Do(req)
	if err != nil {
		return storyResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return storyResp{code: resp.StatusCode, body: b, hdr: resp.Header}, err
}

// storyRecord is what a story compares of a record: payload and sortindex
// (modified is each node's own clock, so replicas differ in it by design).
type storyRecord struct {
	Payload   string `json:"payload"`
	SortIndex int64  `json:"sortindex"`
}

// storyListing reads coll of user on the node at base (GET ?full=1,
// newer=<newer> when set) and returns id -> record and the response
// headers.
func storyListing(ctx context.Context, base, user, password, coll, newer string) (map[string]storyRecord, http.Header, error) {
	u := base + "1.1/" + user + "/storage/" + coll + "?full=1"
	if newer != "" {
		u += "&newer=" + newer
	}
	r, err := storyCall(ctx, http.MethodGet, u, user, password, nil)
	if err != nil {
		return nil, nil, err
	}
	if r.code != http.StatusOK {
		return nil, r.hdr, fmt.Errorf("GET %s: %d %s", u, r.code, r.body)
	}
	var ws []struct {
		ID string `json:"id"`
		storyRecord
	}
	if err := json.Unmarshal(r.body, &ws); err != nil {
		return nil, r.hdr, fmt.Errorf("GET %s: %w: %s", u, err, r.body)
	}
	out := make(map[string]storyRecord, len(ws))
	for _, w := range ws {
		out[w.ID] = w.storyRecord
	}
	return out, r.hdr, nil
}

// storyUserOn starts a story testnet of nodes storage nodes, registers a
// user and returns the user's replica set (two nodes, primary first).
func storyUserOn(t *testing.T, ctx context.Context, nodes int) (*Testnet, *client.Client, string, []string) {
	t.Helper()
	tn := storyNet(t, ctx, nodes, nil)
	c := storyUser(t, ctx, tn)
	set, err := tn.ReplicaSet(ctx, c.User())
	if err != nil || len(set) != 2 {
		t.Fatalf("replica set %v %v", set, err)
	}
	return tn, c, c.User(), set
}

// storyUser registers a fresh account through the directory with
// api/client and returns the client.
func storyUser(t *testing.T, ctx context.Context, tn *Testnet) *client.Client {
	t.Helper()
	_, dir := tn.Leader()
	c := newClient(t, dir, func(c *client.Config) { c.FailoverWait = 20 * time.Second })
	if err := c.Register(ctx); err != nil {
		t.Fatalf("register: %v", err)
	}
	return c
}

// storyBatch returns n records id-prefix-0..n-1 with distinct payloads.
func storyBatch(prefix string, n int) []client.Record {
	out := make([]client.Record, n)
	for i := range out {
		id := fmt.Sprintf("%s-%d", prefix, i)
		out[i] = client.Record{ID: id, Payload: strp(fmt.Sprintf(`{"ciphertext":"%s","IV":"%d"}`, strings.Repeat(id, 3), i)),
			SortIndex: i64p(int64(i))}
	}
	return out
}

// expect turns records into the id -> record map a listing returns.
func expect(rs []client.Record) map[string]storyRecord {
	m := make(map[string]storyRecord, len(rs))
	for _, r := range rs {
		var si int64
		if r.SortIndex != nil {
			si = *r.SortIndex
		}
		m[r.ID] = storyRecord{Payload: *r.Payload, SortIndex: si}
	}
	return m
}

// storyPost writes rs to coll with the client and fails on any failure.
func storyPost(t *testing.T, ctx context.Context, c *client.Client, coll string, rs []client.Record) {
	t.Helper()
	res, _, err := c.Post(ctx, coll, rs, 0)
	if err != nil || len(res.Failed) != 0 || len(res.Success) != len(rs) {
		t.Fatalf("POST %s: %+v %v", coll, res, err)
	}
}

// TestStoryReadOnOtherReplica: Alice registers, node/weave sends her to
// her primary, she writes bookmarks and history through the Weave API; the
// other node of her replica set serves them at once (each write was
// acknowledged only after a replica held it), with identical payloads; a
// record delete and a collection delete reach the replica the same way.
func TestStoryReadOnOtherReplica(t *testing.T) {
	ctx := storyContext(t, 60*time.Second)
	tn, c, user, set := storyUserOn(t, ctx, 4)
	node, err := c.NodeWeave(ctx)
	if err != nil || node != set[0] {
		t.Fatalf("node/weave %q %v, want the primary %s", node, err, set[0])
	}
	primary, pname := tn.inProcess(t, set[0])
	_, rname := tn.inProcess(t, set[1])
	t.Logf("user on %s (primary) and %s", pname, rname)

	begin := time.Now()
	one := client.Record{ID: "menu", Payload: strp(`{"ciphertext":"bookmarks menu"}`), SortIndex: i64p(1000)}
	if _, err := c.Put(ctx, "bookmarks", one, 0); err != nil {
		t.Fatal(err)
	}
	bms := storyBatch("bm", 30)
	storyPost(t, ctx, c, "bookmarks", bms)
	hist := storyBatch("h", 10)
	storyPost(t, ctx, c, "history", hist)
	t.Logf("3 acknowledged writes took %v", time.Since(begin).Round(time.Millisecond))

	// Read at once on the other replica: no polling.
	wantBM := expect(append(bms, one))
	got, _, err := storyListing(ctx, set[1], user, storyPassword, "bookmarks", "")
	if err != nil || !maps.Equal(got, wantBM) {
		t.Fatalf("bookmarks on the replica right after the write: %v (%d of %d records)", err, len(got), len(wantBM))
	}
	r, err := storyCall(ctx, http.MethodGet, set[1]+"1.1/"+user+"/storage/bookmarks/menu", user, storyPassword, nil)
	if err != nil || r.code != 200 {
		t.Fatalf("GET menu on the replica: %v %d %s", err, r.code, r.body)
	}
	var rec storyRecord
	if err := json.Unmarshal(r.body, &rec); err != nil || rec != (storyRecord{*one.Payload, 1000}) {
		t.Fatalf("menu on the replica: %s %v", r.body, err)
	}
	if got, _, err := storyListing(ctx, set[1], user, storyPassword, "history", ""); err != nil || !maps.Equal(got, expect(hist)) {
		t.Fatalf("history on the replica: %v (%d records)", err, len(got))
	}
	// The primary reads the same as the replica.
	if got, _, err := storyListing(ctx, set[0], user, storyPassword, "bookmarks", ""); err != nil || !maps.Equal(got, wantBM) {
		t.Fatalf("bookmarks on the primary: %v", err)
	}

	// A record delete and a collection delete are on the replica at once.
	if _, err := c.Delete(ctx, "bookmarks", "bm-3"); err != nil {
		t.Fatal(err)
	}
	if r, err := storyCall(ctx, http.MethodGet, set[1]+"1.1/"+user+"/storage/bookmarks/bm-3", user, storyPassword, nil); err != nil || r.code != 404 {
		t.Fatalf("deleted record on the replica: %v %d %s", err, r.code, r.body)
	}
	if _, err := c.DeleteCollection(ctx, "history", nil); err != nil {
		t.Fatal(err)
	}
	if got, _, err := storyListing(ctx, set[1], user, storyPassword, "history", ""); err != nil || len(got) != 0 {
		t.Fatalf("deleted collection on the replica: %v %v", got, err)
	}
	delete(wantBM, "bm-3")
	if got, _, err := storyListing(ctx, set[1], user, storyPassword, "bookmarks", ""); err != nil || !maps.Equal(got, wantBM) {
		t.Fatalf("bookmarks on the replica after the deletes: %v (%d records)", err, len(got))
	}
	if n := primary.Store().UnconfirmedWrites(); n != 0 {
		t.Fatalf("%d writes acknowledged without a replica's confirmation", n)
	}
	if err := tn.WaitConverged(ctx, user, storyPassword); err != nil {
		t.Fatal(err)
	}
}

// TestStoryPartitionHeal: Bob's two replicas are cut apart while his
// phone writes to one and his laptop to the other, new records and edits
// of one shared record on each side. Only one side can acknowledge: the
// first whose report makes the directory record the other replica as
// filling. The other side's writes are refused (503, or 401 once it knows
// it is filling), so no client is told a write is stored that clients of
// the other replica could not see. After the heal the refused side
// backfills and both replicas end identical: every acknowledged record on
// both, with the records the refused side had committed without
// acknowledging them, and one winner of the conflicting edits. A client
// that polled the acknowledging side with newer=<its last
// X-Weave-Timestamp> before the heal receives, after it, the records that
// arrived by replication.
func TestStoryPartitionHeal(t *testing.T) {
	ctx := storyContext(t, 60*time.Second)
	tn, c, user, set := storyUserOn(t, ctx, 4)
	a, aName := tn.inProcess(t, set[0])
	b, bName := tn.inProcess(t, set[1])
	if _, err := c.Put(ctx, "forms", client.Record{ID: "shared", Payload: strp("base")}, 0); err != nil {
		t.Fatal(err)
	}

	if err := tn.Partition([]string{aName}, []string{bName}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() string {
		if !a.deny.blocked(b.PeerID()) || !b.deny.blocked(a.PeerID()) {
			return "partition not applied yet"
		}
		if n := len(a.Host().Network().ConnsToPeer(b.PeerID())); n != 0 {
			return fmt.Sprintf("%s still has %d connections to %s", aName, n, bName)
		}
		return ""
	})

	// Each side writes its own records and its own edit of "shared",
	// concurrently. A write waits (up to 2 s) for the unreachable replica,
	// then reports it to the directory before it is acknowledged.
	type outcome struct{ post, put int }
	write := func(base, side string) (outcome, error) {
		recs := storyBatch(side, 5)
		body, _ := json.Marshal(recs)
		r, err := storyCall(ctx, http.MethodPost, base+"1.1/"+user+"/storage/forms", user, storyPassword, body)
		if err != nil {
			return outcome{}, err
		}
		o := outcome{post: r.code}
		body = []byte(fmt.Sprintf(`{"payload":"edited on %s"}`, side))
		r, err = storyCall(ctx, http.MethodPut, base+"1.1/"+user+"/storage/forms/shared", user, storyPassword, body)
		if err != nil {
			return o, err
		}
		o.put = r.code
		return o, nil
	}
	begin := time.Now()
	outs := make([]outcome, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, base := range set {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = write(base, []string{"A", "B"}[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("writes on both sides of the partition took %v: A %+v, B %+v", time.Since(begin).Round(time.Millisecond), outs[0], outs[1])
	refused := func(code int) bool { return code == 503 || code == 401 }
	var win, lose int
	switch {
	case outs[0] == outcome{200, 200} && refused(outs[1].post) && refused(outs[1].put):
		win, lose = 0, 1
	case outs[1] == outcome{200, 200} && refused(outs[0].post) && refused(outs[0].put):
		win, lose = 1, 0
	default:
		t.Fatalf("want one side to acknowledge everything and the other to refuse: A %+v, B %+v", outs[0], outs[1])
	}
	winSide, loseSide := []string{"A", "B"}[win], []string{"A", "B"}[lose]
	winName := []string{aName, bName}[win]

	// Still apart: the acknowledging side has only its own records, and
	// the refused side serves nobody (it is filling).
	onW, hdrW, err := storyListing(ctx, set[win], user, storyPassword, "forms", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := onW[loseSide+"-0"]; ok || onW["shared"].Payload != "edited on "+winSide || len(onW) != 6 {
		t.Fatalf("side %s during the partition: %v", winSide, onW)
	}
	testkit.Eventually(t, 5*time.Second, func() string {
		r, err := storyCall(ctx, http.MethodGet, set[lose]+"1.1/"+user+"/storage/forms", user, storyPassword, nil)
		if err != nil {
			return err.Error()
		}
		if r.code != 401 {
			return fmt.Sprintf("the filling side answers %d %s, want 401", r.code, r.body)
		}
		return ""
	})
	lastSeen := hdrW.Get("X-Weave-Timestamp")
	if lastSeen == "" {
		t.Fatal("no X-Weave-Timestamp")
	}

	healed := time.Now()
	if err := tn.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := tn.WaitConverged(ctx, user, storyPassword); err != nil {
		t.Fatal(err)
	}
	t.Logf("replicas converged %v after the heal", time.Since(healed).Round(time.Millisecond))

	onA, _, errA := storyListing(ctx, set[0], user, storyPassword, "forms", "")
	onB, _, errB := storyListing(ctx, set[1], user, storyPassword, "forms", "")
	if err := errors.Join(errA, errB); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(onA, onB) {
		t.Fatalf("after the heal the replicas differ:\n%s: %v\n%s: %v", aName, onA, bName, onB)
	}
	for i := range 5 {
		if _, ok := onA[fmt.Sprintf("%s-%d", winSide, i)]; !ok {
			t.Fatalf("acknowledged record %s-%d lost: %v", winSide, i, onA)
		}
	}
	winner := onA["shared"].Payload
	if winner != "edited on A" && winner != "edited on B" {
		t.Fatalf("conflict winner %q", winner)
	}
	t.Logf("concurrent edits of one record: %q wins on both replicas; %d records", winner, len(onA))

	// The client that saw lastSeen on the acknowledging side before the
	// heal gets, with newer=lastSeen, what arrived by replication (the
	// refused side's records it had committed) and none of its own.
	arrived := map[string]bool{}
	for id := range onA {
		if strings.HasPrefix(id, loseSide+"-") {
			arrived[id] = true
		}
	}
	testkit.Eventually(t, 5*time.Second, func() string {
		got, _, err := storyListing(ctx, set[win], user, storyPassword, "forms", lastSeen)
		if err != nil {
			return err.Error()
		}
		for id := range arrived {
			if _, ok := got[id]; !ok {
				return fmt.Sprintf("newer=%s on %s lacks %s: %v", lastSeen, winName, id, slices.Collect(maps.Keys(got)))
			}
		}
		for i := range 5 {
			if _, ok := got[fmt.Sprintf("%s-%d", winSide, i)]; ok {
				return fmt.Sprintf("newer=%s on %s lists %s-%d written before it", lastSeen, winName, winSide, i)
			}
		}
		if _, ok := got["shared"]; ok != (winner == "edited on "+loseSide) {
			return fmt.Sprintf("newer=%s on %s: shared listed %v, winner %q", lastSeen, winName, ok, winner)
		}
		return ""
	})
}

// TestStoryDrain: an operator drains a node that holds users with data;
// the directory moves them, every record is readable on every node of
// each user's new replica set, and the drained node answers 401 for them.
func TestStoryDrain(t *testing.T) {
	ctx := storyContext(t, 60*time.Second)
	tn := storyNet(t, ctx, 4, nil)
	type acct struct {
		c    *client.Client
		data map[string]storyRecord
	}
	var accts []acct
	holders := map[string][]int{} // node URL -> indexes of accts
	for i := range 4 {
		c := storyUser(t, ctx, tn)
		rs := storyBatch(fmt.Sprintf("u%d", i), 20)
		storyPost(t, ctx, c, "tabs", rs)
		accts = append(accts, acct{c, expect(rs)})
		set, err := tn.ReplicaSet(ctx, c.User())
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range set {
			holders[u] = append(holders[u], i)
		}
	}
	var drained string
	for u, is := range holders {
		if drained == "" || len(is) > len(holders[drained]) || (len(is) == len(holders[drained]) && u < drained) {
			drained = u
		}
	}
	_, dname := tn.inProcess(t, drained)
	t.Logf("draining %s, which holds %d of 4 users", dname, len(holders[drained]))
	begin := time.Now()
	if err := tn.Drain(ctx, dname); err != nil {
		t.Fatal(err)
	}
	for _, i := range holders[drained] {
		a := accts[i]
		user := a.c.User()
		var set []string
		testkit.Eventually(t, 10*time.Second, func() string {
			var err error
			if set, err = tn.ReplicaSet(ctx, user); err != nil {
				return err.Error()
			}
			if slices.Contains(set, drained) || len(set) != 2 {
				return fmt.Sprintf("user %d still on %v", i, set)
			}
			return ""
		})
		if err := tn.WaitConverged(ctx, user, storyPassword); err != nil {
			t.Fatal(err)
		}
		for _, base := range set {
			got, _, err := storyListing(ctx, base, user, storyPassword, "tabs", "")
			if err != nil || !maps.Equal(got, a.data) {
				t.Fatalf("user %d on %s after the drain: %v (%d of %d records)", i, base, err, len(got), len(a.data))
			}
		}
		testkit.Eventually(t, 5*time.Second, func() string {
			r, err := storyCall(ctx, http.MethodGet, drained+"1.1/"+user+"/storage/tabs", user, storyPassword, nil)
			if err != nil || r.code != 401 {
				return fmt.Sprintf("drained node answers %d %v for user %d", r.code, err, i)
			}
			return ""
		})
		// The user's client follows node/weave to the new primary.
		if _, _, err := a.c.Get(ctx, "tabs", fmt.Sprintf("u%d-0", i)); err != nil || a.c.Node() != set[0] {
			t.Fatalf("client of user %d after the drain: on %s, %v", i, a.c.Node(), err)
		}
	}
	t.Logf("drain of %s: all its users readable on their new sets %v after the drain call",
		dname, time.Since(begin).Round(time.Millisecond))
}

// TestStoryCommunityNodeJoins: a community operator starts a node against
// a running federation whose directory wants admission by an admin; it
// registers as pending, the admin approves it, the other nodes admit it,
// and when the federation's only op2 node is drained every user moves a
// replica onto the community node, which backfills their data (the
// replicator's sweep) and serves it.
func TestStoryCommunityNodeJoins(t *testing.T) {
	ctx := storyContext(t, 60*time.Second)
	// n1 op1, n2 op2, n3 op1: every user has n2 (distinct operators).
	// The voter's configuration does not auto-approve; the settings
	// (written by the testnet) do until the test turns them off.
	tn := storyNet(t, ctx, 3, func(c *Config) {
		c.Directory = func(d *directory.Config) { d.Nodes.AutoApprove = false }
	})
	leader := tn.voters[0].v
	s := leader.Directory().Settings()
	s.AutoApprove = false
	if err := leader.Directory().SetSettings(ctx, s); err != nil {
		t.Fatal(err)
	}
	type acct struct {
		c    *client.Client
		data map[string]storyRecord
	}
	var accts []acct
	for i := range 3 {
		c := storyUser(t, ctx, tn)
		rs := storyBatch(fmt.Sprintf("c%d", i), 25)
		storyPost(t, ctx, c, "passwords", rs)
		accts = append(accts, acct{c, expect(rs)})
	}

	joined := time.Now()
	cn, err := StartNode(ctx, NodeConfig{Dir: filepath.Join(t.TempDir(), "community"), Directory: leader.URL(),
		Operator: "community", HeartbeatInterval: 250 * time.Millisecond, MembershipTTL: 250 * time.Millisecond,
		SweepInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cn.Close(); err != nil {
			t.Errorf("community node: %v", err)
		}
	}()
	state := func() string {
		for _, n := range leader.Directory().Nodes() {
			if n.ID == cn.ID() {
				return n.State
			}
		}
		return "unknown"
	}
	if st := state(); st != "pending" {
		t.Fatalf("community node is %q after registering, want pending", st)
	}
	n1, _ := tn.inProcess(t, "n1")
	if n1.Allowlist().Allowed(cn.PeerID()) {
		t.Fatal("a pending node is admitted by n1's gater")
	}

	// The admin approves it over the admin API.
	code, body := fedCall(t, "POST", leader.URL()+"admin/v1/nodes/"+cn.ID()+"/approve", "Bearer "+tn.AdminToken(), nil)
	if code != 200 {
		t.Fatalf("approve: %d %s", code, body)
	}
	if st := state(); st != "active" {
		t.Fatalf("community node is %q after approval", st)
	}
	testkit.Eventually(t, 5*time.Second, func() string {
		for _, name := range []string{"n1", "n2", "n3"} {
			n, _ := tn.inProcess(t, name)
			if !n.Allowlist().Allowed(cn.PeerID()) {
				return name + " does not admit the community node yet"
			}
		}
		return ""
	})
	t.Logf("community node admitted by every node %v after it started", time.Since(joined).Round(time.Millisecond))

	// Drain n2, the only op2 node: each user's replacement replica is
	// the node of an operator not yet in its set, the community node.
	drainedAt := time.Now()
	if err := tn.Drain(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	for i, a := range accts {
		user := a.c.User()
		testkit.Eventually(t, 10*time.Second, func() string {
			set, err := tn.ReplicaSet(ctx, user)
			if err != nil {
				return err.Error()
			}
			if !slices.Contains(set, cn.URL()) {
				return fmt.Sprintf("user %d on %v, not on the community node", i, set)
			}
			return ""
		})
		testkit.Eventually(t, 15*time.Second, func() string {
			got, _, err := storyListing(ctx, cn.URL(), user, storyPassword, "passwords", "")
			if err != nil {
				return err.Error()
			}
			if !maps.Equal(got, a.data) {
				return fmt.Sprintf("community node holds %d of %d records of user %d", len(got), len(a.data), i)
			}
			return ""
		})
		if err := tn.WaitConverged(ctx, user, storyPassword); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("community node backfilled 3 users %v after the drain (sweep every 2 s); replicator: %+v",
		time.Since(drainedAt).Round(time.Millisecond), cn.Replicator().Stats())
	if s := cn.Replicator().Stats(); s.PulledRevisions < 75 {
		t.Fatalf("community node pulled %d revisions, want >= 75", s.PulledRevisions)
	}
}

// TestStoryUnlistedPeerRefused: a libp2p host with a fresh identity that
// the directory does not list opens /hce/repl/2.0.0 to a node and asks for
// a user's changes: its connection is refused and nothing is served. A
// listed node outside the user's replica set asking the same is refused
// by the replicator (forbidden). Meanwhile the node keeps replicating the
// user's writes to its real replica.
func TestStoryUnlistedPeerRefused(t *testing.T) {
	ctx := storyContext(t, 60*time.Second)
	tn, c, user, set := storyUserOn(t, ctx, 3)
	storyPost(t, ctx, c, "prefs", storyBatch("p", 5))
	primary, pname := tn.inProcess(t, set[0])
	var outsider *Node
	for _, n := range tn.Nodes() {
		if !slices.Contains(set, n.HTTP) {
			outsider, _ = tn.inProcess(t, n.Name)
		}
	}

	stranger := strangerHost(t, ctx, t.TempDir())
	stranger.Peerstore().AddAddrs(primary.PeerID(), primary.Host().Addrs(), peerstore.PermanentAddrTTL)
	for _, m := range []replication.Message{
		&replication.ChangesRequest{User: user},
		&replication.SeqsRequest{Users: []string{user}},
	} {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := p2p.CallWith(cctx, p2p.RPCConfig{MaxFrameSize: replication.MaxFrameSize}, stranger, primary.PeerID(),
			replication.ProtocolID, replication.Encode(m))
		ccancel()
		if err == nil {
			t.Fatalf("an unlisted peer was served %T: %d bytes", m, len(resp))
		}
		var re *p2p.RemoteError
		if errors.As(err, &re) {
			t.Fatalf("an unlisted peer reached the replicator (%v); the gater should refuse the connection", err)
		}
		t.Logf("unlisted peer asking %s for %T: %v", pname, m, err)
	}
	if n := len(primary.Host().Network().ConnsToPeer(stranger.ID())); n != 0 {
		t.Fatalf("%s holds %d connections to the unlisted peer", pname, n)
	}

	// A listed node outside the user's set is refused by the replicator.
	refused := primary.Replicator().Stats().RequestsRefused
	// Until both nodes have their peer lists from the directory (refreshed
	// every heartbeat), the gaters may still refuse the connection itself:
	// ask again until the replicator answers.
	tr := replication.NewLibp2pTransport(outsider.Host(), 5*time.Second, nil)
	var err error
	testkit.Eventually(t, 10*time.Second, func() string {
		_, err = tr.Call(ctx, primary.PeerID(), replication.Encode(&replication.ChangesRequest{User: user}))
		var re *p2p.RemoteError
		if !errors.As(err, &re) {
			return fmt.Sprintf("the outsider cannot reach %s yet: %v", pname, err)
		}
		return ""
	})
	if !p2p.IsCode(err, replication.CodeForbidden) {
		t.Fatalf("a node outside the user's set asked for its changes: %v, want forbidden", err)
	}
	if got := primary.Replicator().Stats().RequestsRefused; got != refused+1 {
		t.Fatalf("requests refused %d -> %d", refused, got)
	}

	// The node still replicates for the user's real replica.
	before := primary.Store().UnconfirmedWrites()
	more := storyBatch("q", 5)
	storyPost(t, ctx, c, "prefs", more)
	got, _, err := storyListing(ctx, set[1], user, storyPassword, "prefs", "")
	if err != nil || len(got) != 10 || got["q-4"] != expect(more)["q-4"] {
		t.Fatalf("replica after the refusals: %v %v", got, err)
	}
	if after := primary.Store().UnconfirmedWrites(); after != before {
		t.Fatalf("%d writes acknowledged without a replica", after-before)
	}
}
