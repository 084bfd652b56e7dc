package testnet

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory"
)

// TestDenyListFile: a blocklist file's items land in the right sets;
// unknown items are ignored; an unchanged file is no change; a missing
// file blocks nothing.
func TestDenyListFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, BlocklistFile)
	var d denyList
	if changed, added, err := d.load(path); err != nil || !changed || len(added) != 0 {
		t.Fatalf("missing file: %v %v %v", changed, added, err)
	}
	const pid = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
	if err := writeBlocklist(dir, []string{pid, "raft:d2", "http:127.0.0.1:8090", "garbage"}); err != nil {
		t.Fatal(err)
	}
	changed, added, err := d.load(path)
	if err != nil || !changed || len(added) != 1 || added[0].String() != pid {
		t.Fatalf("first load: %v %v %v", changed, added, err)
	}
	if !d.RefusePeer(added[0]) || !d.RefuseVoter("d2") || d.RefuseVoter("d3") ||
		!d.refusesAddr("127.0.0.1:8090") || d.refusesAddr("127.0.0.1:8091") {
		t.Fatalf("sets: %+v", d.peers)
	}
	if changed, _, _ := d.load(path); changed {
		t.Fatal("an unchanged file counted as a change")
	}
	if err := writeBlocklist(dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("heal left the file: %v", err)
	}
	if changed, _, _ := d.load(path); !changed || d.RefusePeer(added[0]) || d.RefuseVoter("d2") {
		t.Fatal("emptied list still refuses")
	}
}

// TestPartitionReachesVoters: Partition cuts voters too. An isolated
// follower loses raft (it learns of no leader and of no new user) and its
// voter-to-voter HTTP (a registration through it fails) while the others
// go on; a node cut from every voter is marked down while the rest stay
// active; a leader cut from the other voters is replaced by an election
// among them. Heal restores everything: one leader known to all, the
// isolated voter catches up, the node is active again.
func TestPartitionReachesVoters(t *testing.T) {
	ctx := storyContext(t, 90*time.Second)
	const downAfter = 1500 * time.Millisecond
	tn := storyNet(t, ctx, 3, func(c *Config) {
		c.Directories = 3
		c.DownAfter = downAfter
		// Raft's default timeouts (1 s): a loaded test machine must not
		// see spurious elections, which would blur what the partition did.
		c.Directory = func(d *directory.Config) {
			d.Raft.HeartbeatTimeout, d.Raft.ElectionTimeout, d.Raft.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
		}
	})
	leader, _ := tn.Leader()
	if leader == "" {
		t.Fatal("no leader")
	}
	voter := func(id string) *Voter {
		tn.mu.Lock()
		defer tn.mu.Unlock()
		return tn.find(id).v
	}
	var rest []string // the followers
	for _, v := range tn.Voters() {
		if v.ID != leader {
			rest = append(rest, v.ID)
		}
	}
	follower := rest[0]
	others := []string{leader, rest[1]}
	nodes := []string{"n1", "n2", "n3"}
	register := func(via string) (int, string) {
		email := uniqueEmail(t)
		user := accountName(email)
		code, _ := fedCall(t, "PUT", voter(via).URL()+"user/1.0/"+user, "",
			[]byte(fmt.Sprintf(`{"password":"partition password","email":%q}`, email)))
		return code, user
	}
	exists := func(via, user string) bool {
		_, body := fedCall(t, "GET", voter(via).URL()+"user/1.0/"+user, "", nil)
		return string(body) == "1"
	}

	// 1. A follower cut off from everyone.
	if err := tn.Partition([]string{follower}, append(others, nodes...)); err != nil {
		t.Fatal(err)
	}
	f := voter(follower)
	testkit.Eventually(t, 10*time.Second, func() string {
		if id, _ := f.Directory().Leader(); id != "" {
			return fmt.Sprintf("isolated %s still follows %s", follower, id)
		}
		for _, name := range nodes {
			n, _ := tn.inProcess(t, name)
			if !n.deny.blocked(f.PeerID()) {
				return name + " does not refuse the isolated voter yet"
			}
			if c := len(n.Host().Network().ConnsToPeer(f.PeerID())); c != 0 {
				return fmt.Sprintf("%s keeps %d connections to the isolated voter", name, c)
			}
		}
		return ""
	})
	code, user := register(leader)
	if code != 200 {
		t.Fatalf("registration through the leader during the partition: %d", code)
	}
	if code, _ := register(follower); code == 200 {
		t.Fatal("a registration through the isolated voter succeeded")
	}
	if exists(follower, user) {
		t.Fatal("the isolated voter learnt of a user registered during the partition")
	}
	if err := tn.Heal(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, func() string {
		if id, _ := f.Directory().Leader(); id == "" {
			return follower + " knows no leader after the heal"
		}
		if !exists(follower, user) {
			return follower + " lacks the user registered during the partition"
		}
		return ""
	})

	// 2. A node cut off from every voter is marked down; the others stay.
	if err := tn.Partition([]string{"n1"}, []string{"d1", "d2", "d3", "n2", "n3"}); err != nil {
		t.Fatal(err)
	}
	state := func(name string) string {
		st, err := tn.Status(ctx)
		if err != nil {
			return err.Error()
		}
		for _, n := range st.Nodes {
			if n.Name == name {
				return n.State
			}
		}
		return "missing"
	}
	cut := time.Now()
	testkit.Eventually(t, 10*downAfter, func() string {
		if s := state("n1"); s != "down" {
			return "n1 cut from the voters is " + s
		}
		return ""
	})
	t.Logf("n1 cut from every voter was marked down %v after the partition", time.Since(cut).Round(time.Millisecond))
	for _, name := range []string{"n2", "n3"} {
		if s := state(name); s != "active" {
			t.Fatalf("%s, which reaches the voters, is %s", name, s)
		}
	}
	if err := tn.Heal(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*downAfter, func() string {
		if s := state("n1"); s != "active" {
			return "n1 after the heal is " + s
		}
		return ""
	})

	// 3. The leader cut off from the other voters: they elect one of
	// themselves; the old leader steps down.
	if err := tn.Partition([]string{leader}, rest); err != nil {
		t.Fatal(err)
	}
	cut = time.Now()
	var next string
	testkit.Eventually(t, 15*time.Second, func() string {
		if voter(leader).Directory().IsLeader() {
			return leader + " still leads while cut from a quorum"
		}
		for _, id := range rest {
			if voter(id).Directory().IsLeader() {
				next = id
				return ""
			}
		}
		return "no new leader among " + strings.Join(rest, ", ")
	})
	t.Logf("leader %s cut from %v: %s leads %v later", leader, rest, next, time.Since(cut).Round(time.Millisecond))
	if err := tn.Heal(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, func() string {
		var seen []string
		for _, v := range tn.Voters() {
			id, _ := voter(v.ID).Directory().Leader()
			seen = append(seen, id)
		}
		if seen[0] == "" || slices.Compact(slices.Clone(seen))[0] != seen[0] || len(slices.Compact(slices.Clone(seen))) != 1 {
			return fmt.Sprintf("voters see leaders %v after the heal", seen)
		}
		return ""
	})
	// Voter-to-voter HTTP works again: a registration through any voter.
	for _, v := range tn.Voters() {
		if code, _ := register(v.ID); code != 200 {
			t.Fatalf("registration through %s after the heal: %d", v.ID, code)
		}
	}
}

// TestPartitionCutFiles: what Partition and Cut write into each member's
// blocklist, for voters d1..d3 and nodes n1..n3 (peer IDs P-<name>).
func TestPartitionCutFiles(t *testing.T) {
	tn := &Testnet{}
	tmp := t.TempDir()
	for i := 1; i <= 3; i++ {
		d := fmt.Sprintf("d%d", i)
		tn.voters = append(tn.voters, &member{voter: true, name: d, id: d, p2pID: "P-" + d,
			httpAddr: fmt.Sprintf("127.0.0.1:%d", 8000+i), data: filepath.Join(tmp, d)})
		n := fmt.Sprintf("n%d", i)
		tn.nodes = append(tn.nodes, &member{name: n, id: "P-" + n, data: filepath.Join(tmp, n)})
	}
	for _, m := range append(append([]*member{}, tn.voters...), tn.nodes...) {
		if err := os.MkdirAll(m.data, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	read := func() map[string]string {
		out := map[string]string{}
		for _, m := range append(append([]*member{}, tn.voters...), tn.nodes...) {
			b, _ := os.ReadFile(filepath.Join(m.data, BlocklistFile))
			if s := strings.Join(strings.Fields(string(b)), " "); s != "" {
				out[m.name] = s
			}
		}
		return out
	}
	d1 := "P-d1 http:127.0.0.1:8001 raft:d1"
	d2 := "P-d2 http:127.0.0.1:8002 raft:d2"
	tests := []struct {
		name  string
		apply func() error
		want  map[string]string
	}{
		{"nodes split", func() error { return tn.Partition([]string{"n1", "n2"}, []string{"n3"}) },
			map[string]string{"n1": "P-n3", "n2": "P-n3", "n3": "P-n1 P-n2"}},
		{"a node in no group loses the other nodes", func() error { return tn.Partition([]string{"n1", "n2"}) },
			map[string]string{"n1": "P-n3", "n2": "P-n3", "n3": "P-n1 P-n2"}},
		{"voters only", func() error { return tn.Partition([]string{"d1"}, []string{"d2", "d3"}) },
			map[string]string{"d1": "P-d2 P-d3 http:127.0.0.1:8002 http:127.0.0.1:8003 raft:d2 raft:d3", "d2": d1, "d3": d1}},
		{"a voter isolated", func() error { return tn.Partition([]string{"d1"}, []string{"d2", "d3", "n1", "n2", "n3"}) },
			map[string]string{"d1": "P-d2 P-d3 P-n1 P-n2 P-n3 http:127.0.0.1:8002 http:127.0.0.1:8003 raft:d2 raft:d3",
				"d2": d1, "d3": d1, "n1": "P-d1", "n2": "P-d1", "n3": "P-d1"}},
		{"cut a node from the directory", func() error { return tn.Cut([]string{"n1"}, []string{"d1", "d2", "d3"}) },
			map[string]string{"n1": "P-d1 P-d2 P-d3", "d1": "P-n1", "d2": "P-n1", "d3": "P-n1"}},
		{"cut a voter from the voters", func() error { return tn.Cut([]string{"d2"}, []string{"d1", "d3"}) },
			map[string]string{"d2": "P-d1 P-d3 http:127.0.0.1:8001 http:127.0.0.1:8003 raft:d1 raft:d3", "d1": d2, "d3": d2}},
		{"heal", tn.Heal, map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.apply(); err != nil {
				t.Fatal(err)
			}
			if got := read(); !maps.Equal(got, tc.want) {
				t.Fatalf("blocklists\n got %v\nwant %v", got, tc.want)
			}
		})
	}
	if err := tn.Partition([]string{"n1"}, []string{"n1"}); err == nil {
		t.Fatal("a member in two groups was accepted")
	}
	if err := tn.Cut([]string{"d1"}, []string{"d1"}); err == nil {
		t.Fatal("a member on both sides was accepted")
	}
	if err := tn.Partition([]string{"x9"}); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("unknown member: %v", err)
	}
}
