package directory

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory/raftls"
)

const testAdminToken = "test-admin-token"

// lazyHandler serves the voter's handler once set. Before, it answers
// 503 with the not_leader code a voter gives for a write it cannot take
// (as a voter whose HTTP server is not up yet would be refused).
type lazyHandler struct{ h atomic.Pointer[http.Handler] }

func (l *lazyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, wireResult{Error: "not_leader", Message: "starting"})
}

// voter is one directory voter of a test cluster, with its HTTP server.
type voter struct {
	id, dir, httpAddr, raftAddr string
	cert, key                   []byte
	d                           *Directory
	srv                         *http.Server
	lazy                        *lazyHandler
}

func (v *voter) url() string { return "http://" + v.httpAddr }

type testCluster struct {
	t      testing.TB
	ca     *raftls.CA
	voters []*voter
	tune   func(*Config)
}

func (c *testCluster) config(v *voter, bootstrap bool, join string) Config {
	cfg := testConfig(c.t, v.dir)
	cfg.ID = v.id
	cfg.Accounts.NodeURL = ""
	cfg.Cluster.Bootstrap = bootstrap
	cfg.Cluster.Join = join
	cfg.Cluster.RaftAddr = v.raftAddr
	cfg.Cluster.HTTPURL = v.url()
	cfg.Cluster.TLSCA, cfg.Cluster.TLSCert, cfg.Cluster.TLSKey = c.ca.CertPEM(), v.cert, v.key
	cfg.AdminToken = testAdminToken
	cfg.Raft.HeartbeatTimeout = 400 * time.Millisecond
	cfg.Raft.ElectionTimeout = 400 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 200 * time.Millisecond
	cfg.Raft.CommitTimeout = 10 * time.Millisecond
	if c.tune != nil {
		c.tune(&cfg)
	}
	return cfg
}

// start opens v (serving HTTP first, so joiners can reach it).
func (c *testCluster) start(v *voter, bootstrap bool, join string) {
	c.t.Helper()
	c.startCfg(v, c.config(v, bootstrap, join))
}

// startCfg opens v with cfg (serving HTTP first).
func (c *testCluster) startCfg(v *voter, cfg Config) {
	c.t.Helper()
	if err := c.startErr(v, cfg); err != nil {
		c.t.Fatal(err)
	}
}

// startErr is startCfg returning its error (for other goroutines).
func (c *testCluster) startErr(v *voter, cfg Config) error {
	ln, err := net.Listen("tcp", v.httpAddr)
	if err != nil {
		return err
	}
	v.lazy = &lazyHandler{}
	v.srv = &http.Server{Handler: v.lazy}
	go v.srv.Serve(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := Open(ctx, cfg)
	if err != nil {
		v.srv.Close()
		return fmt.Errorf("Open %s: %w", v.id, err)
	}
	v.d = d
	users, err := api.NewUserHandler(d.UserAPIConfig())
	if err != nil {
		return err
	}
	h := api.NewHandler(d.HTTPHandler(), users)
	v.lazy.h.Store(&h)
	return nil
}

func (c *testCluster) stop(v *voter) {
	if v.d == nil {
		return
	}
	if err := v.d.Close(); err != nil {
		c.t.Errorf("Close %s: %v", v.id, err)
	}
	v.srv.Close()
	v.d = nil
}

func newTestCluster(t testing.TB, n int, tune func(*Config)) *testCluster {
	ca, err := raftls.NewCA("test directory CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, ca: ca, tune: tune}
	for i := range n {
		v := &voter{id: fmt.Sprintf("v%d", i+1), dir: filepath.Join(t.TempDir(), "v"),
			httpAddr: testkit.FreeAddr(t), raftAddr: testkit.FreeAddr(t)}
		if v.cert, v.key, err = ca.Issue(v.id, []string{"127.0.0.1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		c.voters = append(c.voters, v)
	}
	t.Cleanup(func() {
		for _, v := range c.voters {
			c.stop(v)
		}
	})
	// Each voter joins through the previous one, so from the third on the
	// join request reaches a follower, which proxies it to the leader.
	c.start(c.voters[0], true, "")
	for i, v := range c.voters[1:] {
		c.start(v, false, c.voters[i].url())
	}
	return c
}

// leader waits for a live voter that leads.
func (c *testCluster) leader() *voter {
	c.t.Helper()
	var l *voter
	testkit.WaitFor(c.t, 10*time.Second, "a leader", func() bool {
		for _, v := range c.voters {
			if v.d != nil && v.d.IsLeader() {
				l = v
				return true
			}
		}
		return false
	})
	return l
}

func (c *testCluster) live() []*voter {
	var out []*voter
	for _, v := range c.voters {
		if v.d != nil {
			out = append(out, v)
		}
	}
	return out
}

// adminDo sends an admin request and decodes the JSON answer into out.
func adminDo(t testing.TB, method, url, token string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, url, err)
		}
	}
	return resp.StatusCode
}

// testNode is a storage node identity for registration tests.
type testNode struct {
	key ed25519.PrivateKey
	reg Registration
}

func newTestNode(t testing.TB, operator string, capacity int) *testNode {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	id := PeerID(key.Public().(ed25519.PublicKey))
	return &testNode{key: key, reg: Registration{
		ID: id, BaseURL: "http://" + id[len(id)-8:] + ".nodes.example/", Operator: operator,
		Capacity: capacity, P2PAddrs: []string{"/ip4/127.0.0.1/tcp/4001"},
	}}
}

// register posts a signed registration to baseURL; returns the status.
func (n *testNode) register(t testing.TB, baseURL string) int {
	t.Helper()
	body, sig, err := SignRegistration(n.key, n.reg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return postRegistration(t, baseURL, body, sig)
}

func postRegistration(t testing.TB, baseURL string, body []byte, sig string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, baseURL+pathRegister, bytes.NewReader(body))
	if sig != "" {
		req.Header.Set(SignatureHeader, sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestClusterElectionForwardingAdmin(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.Nodes.AutoApprove = true })
	l := c.leader()
	var followers []*voter
	for _, v := range c.voters {
		if v != l {
			followers = append(followers, v)
		}
	}
	// Status from a follower names the leader and all three voters.
	var st Status
	if code := adminDo(t, "GET", followers[0].url()+"/admin/v1/status", testAdminToken, &st); code != 200 {
		t.Fatalf("status: %d", code)
	}
	if st.Leader.ID != l.id || st.Leader.URL != l.url() || len(st.Voters) != 3 {
		t.Fatalf("status = %+v, want leader %s and 3 voters", st, l.id)
	}
	// Linearizable status: the leader answers, a follower refuses.
	if code := adminDo(t, "GET", l.url()+"/admin/v1/status?linearizable=1", testAdminToken, &st); code != 200 {
		t.Fatalf("linearizable status on leader: %d", code)
	}
	if code := adminDo(t, "GET", followers[0].url()+"/admin/v1/status?linearizable=1", testAdminToken, nil); code != 503 {
		t.Fatalf("linearizable status on follower: %d, want 503", code)
	}
	// Admin auth.
	for _, tok := range []string{"", "wrong", testAdminToken + "x"} {
		if code := adminDo(t, "GET", l.url()+"/admin/v1/nodes", tok, nil); code != 401 {
			t.Fatalf("nodes with token %q: %d, want 401", tok, code)
		}
		if code := adminDo(t, "POST", followers[1].url()+pathForward, tok, nil); code != 401 {
			t.Fatalf("forward with token %q: %d, want 401", tok, code)
		}
	}
	// Node registrations through every voter (two forwarded).
	var nodes []*testNode
	for i, v := range c.voters {
		n := newTestNode(t, fmt.Sprintf("op%d", i), 100)
		if code := n.register(t, v.url()); code != 200 {
			t.Fatalf("register via %s: %d", v.id, code)
		}
		nodes = append(nodes, n)
	}
	// A user created on a follower is forwarded; every voter sees its set.
	ctx := context.Background()
	if err := followers[1].d.CreateUser(ctx, "alice", "password", ""); err != nil {
		t.Fatal(err)
	}
	if err := followers[0].d.CreateUser(ctx, "alice", "password", ""); !errors.Is(err, api.ErrUserExists) {
		t.Fatalf("second create via follower: %v, want ErrUserExists", err)
	}
	for _, v := range c.voters {
		testkit.WaitFor(t, 5*time.Second, v.id+" sees nodes and alice", func() bool {
			p, reps, err := v.d.Assignment("alice")
			return len(v.d.Nodes()) == 3 && err == nil && p != "" && len(reps) == 1
		})
	}
	var view struct {
		User     string       `json:"user"`
		Primary  MemberView   `json:"primary"`
		Replicas []MemberView `json:"replicas"`
	}
	if code := adminDo(t, "GET", followers[0].url()+"/admin/v1/users/alice", testAdminToken, &view); code != 200 {
		t.Fatalf("user view: %d", code)
	}
	url, _ := followers[0].d.StorageNode(ctx, "alice")
	if view.User != "alice" || view.Primary.URL != url || len(view.Replicas) != 1 || view.Replicas[0].ID == view.Primary.ID {
		t.Fatalf("user view = %+v (StorageNode %s)", view, url)
	}
}

func TestClusterLeaderKillAndCatchUp(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.Raft.SnapshotThreshold = 64
		cfg.Raft.TrailingLogs = 16
		cfg.Raft.SnapshotInterval = 100 * time.Millisecond
		cfg.Raft.MaxBatch = 8
	})
	var (
		mu     sync.Mutex
		acked  []string
		seq    atomic.Int64
		killed atomic.Pointer[voter]
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	// The writers use these handles (c.stop clears voter.d); a closed
	// Directory just answers ErrClosed.
	var dirs []*Directory
	for _, v := range c.voters {
		dirs = append(dirs, v.d)
	}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				k := (w + i) % len(dirs)
				if c.voters[k] == killed.Load() {
					continue
				}
				d := dirs[k]
				name := fmt.Sprintf("u%05d", seq.Add(1))
				wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
				err := d.CreateUser(wctx, name, "password", "")
				wcancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, name)
					mu.Unlock()
				}
			}
		}()
	}
	testkit.WaitFor(t, 10*time.Second, "first registrations", func() bool { return ackedCount() >= 40 })
	old := c.leader()
	killed.Store(old)
	// Writers skip the killed voter from now on; give in-flight calls on it
	// a moment to end before closing it under them is still fine: Close
	// answers them with errors, which are simply not acknowledged.
	c.stop(old)
	before := ackedCount()
	start := time.Now()
	// Election timeout is 400 ms: allow a few elections plus -race slowness.
	testkit.WaitFor(t, 6*time.Second, "writes on a new leader", func() bool { return ackedCount() >= before+40 })
	t.Logf("writes resumed %v after the leader was closed", time.Since(start))
	cancel()
	wg.Wait()

	mu.Lock()
	all := slices.Clone(acked)
	mu.Unlock()
	for _, v := range c.live() {
		testkit.WaitFor(t, 5*time.Second, v.id+" has every acknowledged user", func() bool {
			for _, u := range all {
				if ok, _ := v.d.UserExists(context.Background(), u); !ok {
					return false
				}
			}
			return true
		})
	}
	// Push the log past the old leader's position and compact it, so the
	// restarted voter must install a snapshot.
	l := c.leader()
	for i := range 100 {
		if err := l.d.CreateUser(context.Background(), fmt.Sprintf("late%03d", i), "password", ""); err != nil {
			t.Fatal(err)
		}
		all = append(all, fmt.Sprintf("late%03d", i))
	}
	if err := l.d.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	leaderSnap, _ := strconv.ParseUint(l.d.raft.Stats()["last_snapshot_index"], 10, 64)
	if leaderSnap == 0 {
		t.Fatal("leader took no snapshot")
	}
	c.start(old, false, "")
	testkit.WaitFor(t, 10*time.Second, "restarted voter catches up", func() bool {
		for _, u := range all {
			if ok, _ := old.d.UserExists(context.Background(), u); !ok {
				return false
			}
		}
		return true
	})
	// It was down when the leader's snapshot was taken, so holding a
	// snapshot at or past that index means it installed the leader's.
	// (raft records the index just after the FSM restore, so poll.)
	testkit.WaitFor(t, 5*time.Second, "restarted voter installed the leader's snapshot", func() bool {
		got, _ := strconv.ParseUint(old.d.raft.Stats()["last_snapshot_index"], 10, 64)
		return got >= leaderSnap
	})
}
