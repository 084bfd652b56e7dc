package testnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/directory/raftls"
)

// Mode says how a Testnet runs its voters and storage nodes.
type Mode int

const (
	// InProcess runs every voter and node inside the calling process
	// (StartVoter, StartNode); Kill is an abrupt Close.
	InProcess Mode = iota
	// ChildProcess runs each voter and node as a child `hce directory` or
	// `hce node` process of Config.Binary; Kill is SIGKILL.
	ChildProcess
)

// String names the mode as testnet.json records it.
func (m Mode) String() string {
	if m == ChildProcess {
		return "child-process"
	}
	return "in-process"
}

// ManifestFile is the name of the manifest a Testnet keeps in its folder.
const ManifestFile = "testnet.json"

// Sentinel errors of the Testnet.
var (
	// ErrUnknownMember means no voter or node has the given id or name.
	ErrUnknownMember = errors.New("testnet: no voter or node with that id")
	// ErrRunning means Restart was asked for a member that still runs.
	ErrRunning = errors.New("testnet: member is running")
	// ErrNotRunning means Kill was asked for a member that is not running.
	ErrNotRunning = errors.New("testnet: member is not running")
	// ErrNotReady means the testnet did not become healthy in time.
	ErrNotReady = errors.New("testnet: not ready")
)

// Config configures a Testnet. A zero field takes its default.
type Config struct {
	// Dir holds the CA (DIR/ca), every member's data folder (DIR/d1,
	// DIR/n1, ...), child logs (DIR/logs) and DIR/testnet.json. Required.
	Dir string
	// Directories is the number of directory voters D. Default 3.
	Directories int
	// Nodes is the number of storage nodes N. Default 4.
	Nodes int
	// Operators is the number of operators (op1..opK) the nodes are
	// spread over round-robin. Default 2.
	Operators int
	// Replicas is the replica set size R. Default 2.
	Replicas int
	// Mode is InProcess (default) or ChildProcess.
	Mode Mode
	// Binary is the path of the hce binary; required with ChildProcess.
	Binary string
	// DownAfter is the heartbeat silence after which a node is marked
	// down. Default 5 s.
	DownAfter time.Duration
	// Heartbeat is the nodes' heartbeat interval. Default 1 s.
	Heartbeat time.Duration
	// Sweep is the nodes' replication sweep interval (see
	// NodeConfig.SweepInterval). Default 2 s: testnets are small, and a
	// short sweep catches up quickly after a partition heals.
	Sweep time.Duration
	// AdminToken protects the admin API. Default: 32 random bytes, hex.
	AdminToken string
	// ChildLogLevel is the --log-level of child processes. Default "warn".
	ChildLogLevel string
	// Logger receives the testnet's logs (and, in process, the members').
	// Default: discard.
	Logger *slog.Logger
	// Directory, when set, adjusts each in-process voter's directory
	// configuration last (ignored with ChildProcess).
	Directory func(*directory.Config)
}

// DefaultConfig returns the defaults (Dir still needs to be set).
func DefaultConfig() Config {
	return Config{Directories: 3, Nodes: 4, Operators: 2, Replicas: 2, DownAfter: 5 * time.Second,
		Heartbeat: time.Second, Sweep: 2 * time.Second, ChildLogLevel: "warn"}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Directories <= 0 {
		c.Directories = d.Directories
	}
	if c.Nodes <= 0 {
		c.Nodes = d.Nodes
	}
	if c.Operators <= 0 {
		c.Operators = d.Operators
	}
	if c.Replicas <= 0 {
		c.Replicas = d.Replicas
	}
	if c.DownAfter <= 0 {
		c.DownAfter = d.DownAfter
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = d.Heartbeat
	}
	if c.Sweep <= 0 {
		c.Sweep = d.Sweep
	}
	if c.ChildLogLevel == "" {
		c.ChildLogLevel = d.ChildLogLevel
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports a configuration Start cannot run.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("testnet: Config.Dir is required")
	case c.Mode != InProcess && c.Mode != ChildProcess:
		return fmt.Errorf("testnet: unknown mode %d", c.Mode)
	case c.Mode == ChildProcess && c.Binary == "":
		return errors.New("testnet: ChildProcess mode needs Config.Binary")
	case c.Directories < 0 || c.Nodes < 0 || c.Operators < 0 || c.Replicas < 0:
		return errors.New("testnet: negative count")
	}
	return nil
}

// VoterEntry describes a directory voter in testnet.json.
type VoterEntry struct {
	// ID is the voter's raft server ID (d1, d2, ...).
	ID string `json:"id"`
	// HTTP is the voter's base URL; Raft and P2P its raft and libp2p
	// listen addresses (host:port).
	HTTP string `json:"http"`
	Raft string `json:"raft"`
	P2P  string `json:"p2p"`
	// PID is the child process ID (0 when not running, or in process).
	PID int `json:"pid"`
	// Data is the voter's data folder.
	Data string `json:"data"`
}

// NodeEntry describes a storage node in testnet.json.
type NodeEntry struct {
	// Name is the testnet's short name (n1, n2, ...); ID is the node's
	// directory ID (its libp2p peer ID). Either names the node.
	Name string `json:"name"`
	ID   string `json:"id"`
	// Operator is who runs the node (op1..opK).
	Operator string `json:"operator"`
	// HTTP is the node's base URL; P2P its libp2p listen address.
	HTTP string `json:"http"`
	P2P  string `json:"p2p"`
	// PID is the child process ID (0 when not running, or in process).
	PID int `json:"pid"`
	// Data is the node's data folder.
	Data string `json:"data"`
}

// Manifest is the content of DIR/testnet.json.
type Manifest struct {
	Directories []VoterEntry `json:"directories"`
	Nodes       []NodeEntry  `json:"nodes"`
	AdminToken  string       `json:"admin_token"`
	// Mode, Binary, CA, Replicas, DownAfter, Heartbeat and LogLevel are
	// what Restart needs to start a member again from another process.
	Mode      string `json:"mode"`
	Binary    string `json:"binary,omitempty"`
	CA        string `json:"ca"`
	Replicas  int    `json:"replicas"`
	DownAfter string `json:"down_after"`
	Heartbeat string `json:"heartbeat"`
	LogLevel  string `json:"log_level,omitempty"`
}

// member is one voter or node and how it runs.
type member struct {
	voter    bool
	name     string // d1.. or n1..
	id       string // voter: name; node: peer ID once known
	operator string
	httpAddr string
	raftAddr string
	p2pAddr  string
	url      string
	data     string
	started  bool // started once: restarts neither bootstrap nor join

	// Running state.
	pid   int
	child *child
	v     *Voter
	n     *Node
}

// Testnet is a federation on one machine: D directory voters (raft over
// mutual TLS, libp2p) and N storage nodes on 127.0.0.1, auto-approve on.
// Its methods are safe for concurrent use.
type Testnet struct {
	cfg   Config
	log   *slog.Logger
	hc    *http.Client
	ca    *raftls.CA
	token string
	owner bool // started here (Close stops members) vs Attach

	mu     sync.Mutex
	voters []*member
	nodes  []*member
}

// Ports of members are chosen before their servers listen (they must stay
// the same across Restart), so another process could take one in between.
// Ports handed out by the kernel for 127.0.0.1:0 come from the ephemeral
// range (32768-60999 on Linux by default), where every other test's
// listeners land; testnet ports are drawn below it instead, each checked
// free and never handed out twice by this process.
const (
	portLow, portHigh = 20000, 32000
)

var (
	portMu   sync.Mutex
	portUsed = map[int]bool{}
)

// FreeAddr returns a loopback host:port that was free a moment ago, drawn
// below the kernel's ephemeral port range (see freePort). Tests that start
// child processes on fixed ports use it.
func FreeAddr() (string, error) { return freePort() }

// freePort returns a loopback host:port that was free a moment ago.
func freePort() (string, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for range 200 {
		p := portLow + mrand.IntN(portHigh-portLow)
		if portUsed[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		portUsed[p] = true
		return ln.Addr().String(), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// loadOrCreateCA loads DIR from an earlier run or creates a new CA there.
func loadOrCreateCA(dir string) (*raftls.CA, error) {
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err == nil {
		return raftls.LoadCA(dir)
	}
	ca, err := raftls.NewCA("HCE testnet CA", 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return ca, ca.Save(dir)
}

// Start starts a testnet in cfg.Dir and returns once the directory has a
// leader with every voter and every node is active, or ctx ends (then
// everything started is stopped). The first voter bootstraps the cluster;
// the others join it while the nodes register.
func Start(ctx context.Context, cfg Config) (_ *Testnet, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.AdminToken == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		cfg.AdminToken = hex.EncodeToString(b)
	}
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	t := &Testnet{cfg: cfg, log: cfg.Logger, hc: &http.Client{Timeout: 5 * time.Second}, token: cfg.AdminToken, owner: true}
	if t.ca, err = loadOrCreateCA(filepath.Join(cfg.Dir, "ca")); err != nil {
		return nil, fmt.Errorf("testnet: CA: %w", err)
	}
	for i := 1; i <= cfg.Directories; i++ {
		m := &member{voter: true, name: fmt.Sprintf("d%d", i), data: filepath.Join(cfg.Dir, fmt.Sprintf("d%d", i))}
		m.id = m.name
		if m.httpAddr, err = freePort(); err == nil {
			if m.raftAddr, err = freePort(); err == nil {
				m.p2pAddr, err = freePort()
			}
		}
		if err != nil {
			return nil, err
		}
		m.url = "http://" + m.httpAddr + "/"
		t.voters = append(t.voters, m)
	}
	for i := 1; i <= cfg.Nodes; i++ {
		m := &member{name: fmt.Sprintf("n%d", i), operator: fmt.Sprintf("op%d", (i-1)%cfg.Operators+1),
			data: filepath.Join(cfg.Dir, fmt.Sprintf("n%d", i))}
		if m.httpAddr, err = freePort(); err == nil {
			m.p2pAddr, err = freePort()
		}
		if err != nil {
			return nil, err
		}
		m.url = "http://" + m.httpAddr + "/"
		t.nodes = append(t.nodes, m)
	}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	begin := time.Now()
	if err := t.start(ctx, t.voters[0], true); err != nil {
		return nil, err
	}
	rest := append(append([]*member{}, t.voters[1:]...), t.nodes...)
	errs := make([]error, len(rest))
	var wg sync.WaitGroup
	for i, m := range rest {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = t.start(ctx, m, true)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := t.WaitHealthy(ctx); err != nil {
		return nil, err
	}
	t.log.Info("testnet ready", "voters", len(t.voters), "nodes", len(t.nodes), "took", time.Since(begin))
	if err := t.updateManifest(nil); err != nil {
		return nil, err
	}
	return t, nil
}

// Attach opens the testnet whose manifest is in dir, started by another
// process in ChildProcess mode: Kill, Restart, Drain and Status act on
// it (Restart spawns a detached child). Close releases the handle and
// leaves the members running.
func Attach(dir string) (*Testnet, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if m.Mode != ChildProcess.String() {
		return nil, fmt.Errorf("testnet: %s runs %s, not as child processes", dir, m.Mode)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	cfg := Config{Dir: abs, Mode: ChildProcess, Binary: m.Binary, Replicas: m.Replicas, AdminToken: m.AdminToken, ChildLogLevel: m.LogLevel}
	cfg.DownAfter, _ = time.ParseDuration(m.DownAfter)
	cfg.Heartbeat, _ = time.ParseDuration(m.Heartbeat)
	cfg = cfg.withDefaults()
	t := &Testnet{cfg: cfg, log: cfg.Logger, hc: &http.Client{Timeout: 5 * time.Second}, token: m.AdminToken}
	if t.ca, err = raftls.LoadCA(m.CA); err != nil {
		return nil, fmt.Errorf("testnet: CA: %w", err)
	}
	for _, v := range m.Directories {
		t.voters = append(t.voters, &member{voter: true, name: v.ID, id: v.ID, url: v.HTTP, httpAddr: hostPort(v.HTTP),
			raftAddr: v.Raft, p2pAddr: v.P2P, pid: v.PID, data: v.Data, started: true})
	}
	for _, n := range m.Nodes {
		t.nodes = append(t.nodes, &member{name: n.Name, id: n.ID, operator: n.Operator, url: n.HTTP, httpAddr: hostPort(n.HTTP),
			p2pAddr: n.P2P, pid: n.PID, data: n.Data, started: true})
	}
	return t, nil
}

// hostPort returns the host:port of a base URL.
func hostPort(u string) string {
	return strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/")
}

// ReadManifest reads DIR/testnet.json.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return m, fmt.Errorf("testnet: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("testnet: %s: %w", ManifestFile, err)
	}
	return m, nil
}

// manifestLocked builds the manifest from the members; t.mu held.
func (t *Testnet) manifestLocked() Manifest {
	m := Manifest{Directories: []VoterEntry{}, Nodes: []NodeEntry{}, AdminToken: t.token, Mode: t.cfg.Mode.String(),
		Binary: t.cfg.Binary, CA: filepath.Join(t.cfg.Dir, "ca"), Replicas: t.cfg.Replicas,
		DownAfter: t.cfg.DownAfter.String(), Heartbeat: t.cfg.Heartbeat.String(), LogLevel: t.cfg.ChildLogLevel}
	for _, v := range t.voters {
		m.Directories = append(m.Directories, VoterEntry{ID: v.id, HTTP: v.url, Raft: v.raftAddr, P2P: v.p2pAddr, PID: v.pid, Data: v.data})
	}
	for _, n := range t.nodes {
		m.Nodes = append(m.Nodes, NodeEntry{Name: n.name, ID: n.id, Operator: n.operator, HTTP: n.url, P2P: n.p2pAddr, PID: n.pid, Data: n.data})
	}
	return m
}

// Manifest returns the testnet's current description (what
// DIR/testnet.json holds).
func (t *Testnet) Manifest() Manifest {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.manifestLocked()
}

// Voters returns the directory voters.
func (t *Testnet) Voters() []VoterEntry { return t.Manifest().Directories }

// Nodes returns the storage nodes.
func (t *Testnet) Nodes() []NodeEntry { return t.Manifest().Nodes }

// AdminToken is the admin API token of every voter.
func (t *Testnet) AdminToken() string { return t.token }

// Dir is the testnet's folder.
func (t *Testnet) Dir() string { return t.cfg.Dir }

// find returns the member with the id or name; t.mu held.
func (t *Testnet) find(id string) *member {
	for _, m := range append(append([]*member{}, t.voters...), t.nodes...) {
		if m.id == id || m.name == id {
			return m
		}
	}
	return nil
}

// running says whether m runs; t.mu held.
func (m *member) running() bool {
	switch {
	case m.v != nil || m.n != nil:
		return true
	case m.child != nil:
		return !m.child.exited()
	case m.pid > 0:
		return pidAlive(m.pid, m.data)
	}
	return false
}

// start starts m; first is its first start in this testnet (a first
// voter bootstraps, later ones join the first; restarts do neither).
func (t *Testnet) start(ctx context.Context, m *member, first bool) error {
	join := ""
	if m.voter && first && m != t.voters[0] {
		join = t.voters[0].url
	}
	dirURL := ""
	if !m.voter {
		dirURL = t.liveVoterURL(ctx)
	}
	if t.cfg.Mode == ChildProcess {
		c, id, err := t.spawn(ctx, m, join, first, dirURL)
		if err != nil {
			return err
		}
		t.mu.Lock()
		m.child, m.pid, m.started = c, c.pid(), true
		if !m.voter {
			m.id = id
		}
		t.mu.Unlock()
		return nil
	}
	if m.voter {
		v, err := StartVoter(ctx, VoterConfig{ID: m.id, Dir: m.data, HTTPAddr: m.httpAddr, RaftAddr: m.raftAddr,
			P2PAddr: m.p2pAddr, CA: t.ca, Bootstrap: first && join == "", Join: join, AdminToken: t.token,
			AutoApprove: true, Replicas: t.cfg.Replicas, DownAfter: t.cfg.DownAfter,
			Logger: t.log.With("member", m.name), Directory: t.cfg.Directory})
		if err != nil {
			return fmt.Errorf("testnet: voter %s: %w", m.name, err)
		}
		t.mu.Lock()
		m.v, m.started = v, true
		t.mu.Unlock()
		return nil
	}
	n, err := StartNode(ctx, NodeConfig{Dir: m.data, HTTPAddr: m.httpAddr, P2PAddr: m.p2pAddr, Directory: dirURL,
		SweepInterval: t.cfg.Sweep, Blocklist: filepath.Join(m.data, BlocklistFile),
		Operator: m.operator, HeartbeatInterval: t.cfg.Heartbeat, MembershipTTL: t.cfg.Heartbeat,
		Logger: t.log.With("member", m.name)})
	if err != nil {
		return fmt.Errorf("testnet: node %s: %w", m.name, err)
	}
	t.mu.Lock()
	m.n, m.id, m.started = n, n.ID(), true
	t.mu.Unlock()
	return nil
}

// liveVoterURL returns the leader's URL, else the first running voter's.
func (t *Testnet) liveVoterURL(ctx context.Context) string {
	if _, u := t.Leader(); u != "" {
		return u
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, v := range t.voters {
		if v.running() {
			return v.url
		}
	}
	return t.voters[0].url
}

// adminGet decodes GET base+path (admin token) into out.
func (t *Testnet) admin(ctx context.Context, method, base, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	resp, err := t.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("testnet: %s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(body))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// voterURLs lists the voters' URLs, running ones first.
func (t *Testnet) voterURLs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var up, down []string
	for _, v := range t.voters {
		if v.running() {
			up = append(up, v.url)
		} else {
			down = append(down, v.url)
		}
	}
	return append(up, down...)
}

// status asks the voters, in turn, for the cluster status.
func (t *Testnet) status(ctx context.Context) (directory.Status, error) {
	var errs []error
	for _, u := range t.voterURLs() {
		var s directory.Status
		err := t.admin(ctx, http.MethodGet, u, "/admin/v1/status", &s)
		if err == nil && s.Leader.ID != "" {
			return s, nil
		}
		if err == nil {
			err = fmt.Errorf("testnet: %s knows no leader", u)
		}
		errs = append(errs, err)
	}
	return directory.Status{}, errors.Join(errs...)
}

// Leader returns the current raft leader's ID and HTTP URL as the voters
// report it, or empty strings when none is known.
func (t *Testnet) Leader() (id, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := t.status(ctx)
	if err != nil {
		return "", ""
	}
	if s.Leader.URL != "" && !strings.HasSuffix(s.Leader.URL, "/") {
		s.Leader.URL += "/"
	}
	return s.Leader.ID, s.Leader.URL
}

// nodeStates returns the directory's nodes by ID, asked of the leader.
func (t *Testnet) nodeStates(ctx context.Context, leaderURL string) (map[string]directory.NodeInfo, error) {
	var out struct {
		Nodes []directory.NodeInfo `json:"nodes"`
	}
	if err := t.admin(ctx, http.MethodGet, leaderURL, "/admin/v1/nodes", &out); err != nil {
		return nil, err
	}
	m := make(map[string]directory.NodeInfo, len(out.Nodes))
	for _, n := range out.Nodes {
		m[n.ID] = n
	}
	return m, nil
}

// WaitHealthy polls the admin API until the directory has a leader and
// every voter as a member, and every node is active, or ctx ends.
func (t *Testnet) WaitHealthy(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		why := t.unhealthy(ctx)
		if why == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s (%w)", ErrNotReady, why, ctx.Err())
		case <-tick.C:
		}
	}
}

// unhealthy says why the testnet is not healthy yet, or "".
func (t *Testnet) unhealthy(ctx context.Context) string {
	s, err := t.status(ctx)
	if err != nil {
		return err.Error()
	}
	if len(s.Voters) != len(t.voters) {
		return fmt.Sprintf("%d of %d voters in the cluster", len(s.Voters), len(t.voters))
	}
	states, err := t.nodeStates(ctx, s.Leader.URL)
	if err != nil {
		return err.Error()
	}
	for _, n := range t.Nodes() {
		if st := states[n.ID].State; st != "active" {
			return fmt.Sprintf("node %s (%s) is %q", n.Name, n.ID, st)
		}
	}
	return ""
}

// Status is a snapshot of the testnet: which members run, who leads and
// what the directory says about each node.
type Status struct {
	// Leader is the raft leader's ID ("" when none is known).
	Leader string
	// Voters and Nodes list every member with Running (its process or
	// in-process instance is alive).
	Voters []VoterStatus
	Nodes  []NodeStatus
}

// VoterStatus is a voter in a Status.
type VoterStatus struct {
	VoterEntry
	Running bool
	// Suffrage is "Voter" while the cluster lists the voter.
	Suffrage string
}

// NodeStatus is a node in a Status.
type NodeStatus struct {
	NodeEntry
	Running bool
	// State is the directory's state for the node ("active", "down",
	// "draining", ...); Load the number of users it holds.
	State string
	Load  int
}

// Status asks the directory about the cluster and nodes. With no voter
// answering it still lists the members, with an error.
func (t *Testnet) Status(ctx context.Context) (Status, error) {
	t.mu.Lock()
	var st Status
	for _, v := range t.voters {
		st.Voters = append(st.Voters, VoterStatus{VoterEntry: VoterEntry{ID: v.id, HTTP: v.url, Raft: v.raftAddr, P2P: v.p2pAddr, PID: v.pid, Data: v.data}, Running: v.running()})
	}
	for _, n := range t.nodes {
		st.Nodes = append(st.Nodes, NodeStatus{NodeEntry: NodeEntry{Name: n.name, ID: n.id, Operator: n.operator, HTTP: n.url, P2P: n.p2pAddr, PID: n.pid, Data: n.data}, Running: n.running()})
	}
	t.mu.Unlock()
	s, err := t.status(ctx)
	if err != nil {
		return st, err
	}
	st.Leader = s.Leader.ID
	for i := range st.Voters {
		for _, v := range s.Voters {
			if v.ID == st.Voters[i].ID {
				st.Voters[i].Suffrage = v.Suffrage
			}
		}
	}
	states, err := t.nodeStates(ctx, s.Leader.URL)
	if err != nil {
		return st, err
	}
	for i := range st.Nodes {
		info := states[st.Nodes[i].ID]
		st.Nodes[i].State, st.Nodes[i].Load = info.State, info.Load
	}
	return st, nil
}

// Kill stops the voter or node with the given id (or short name) the
// way a crash would: SIGKILL for a child process, an abrupt Close in
// process. Its data folder stays for Restart.
func (t *Testnet) Kill(id string) error {
	t.mu.Lock()
	m := t.find(id)
	if m == nil {
		t.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownMember, id)
	}
	if !m.running() {
		t.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotRunning, m.name)
	}
	v, n, c, pid := m.v, m.n, m.child, m.pid
	m.v, m.n, m.child, m.pid = nil, nil, nil, 0
	t.mu.Unlock()
	var err error
	switch {
	case v != nil:
		err = v.Close()
	case n != nil:
		err = n.Close()
	case c != nil:
		err = c.kill()
	default:
		err = killPID(pid, m.data)
	}
	if err != nil {
		return err
	}
	return t.updateManifest(m)
}

// Restart starts a killed voter or node again with the same data folder
// and ports, and waits until it serves (a node: until it is registered
// again). Attached testnets spawn the child detached, so it outlives the
// calling process.
func (t *Testnet) Restart(ctx context.Context, id string) error {
	t.mu.Lock()
	m := t.find(id)
	if m == nil {
		t.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownMember, id)
	}
	if m.running() {
		t.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrRunning, m.name)
	}
	m.child, m.pid = nil, 0
	t.mu.Unlock()
	if err := t.start(ctx, m, false); err != nil {
		return err
	}
	if !t.owner {
		t.mu.Lock()
		m.child = nil // keep only the PID: the child outlives this process
		t.mu.Unlock()
	}
	return t.updateManifest(m)
}

// Drain asks the directory to drain a node (by ID or short name): its
// users move to other nodes and it takes no new ones.
func (t *Testnet) Drain(ctx context.Context, nodeID string) error {
	t.mu.Lock()
	m := t.find(nodeID)
	t.mu.Unlock()
	if m == nil || m.voter {
		return fmt.Errorf("%w: node %q", ErrUnknownMember, nodeID)
	}
	_, leader := t.Leader()
	if leader == "" {
		return errors.New("testnet: drain: no leader")
	}
	return t.admin(ctx, http.MethodPost, leader, "/admin/v1/nodes/"+m.id+"/drain", nil)
}

// Close stops every running member gracefully (nodes first, then
// voters; a child gets SIGINT and, after 20 s, SIGKILL), including
// children another process restarted into the manifest. An attached
// testnet leaves the members running.
func (t *Testnet) Close() error {
	if !t.owner {
		return nil
	}
	if t.cfg.Mode == ChildProcess {
		t.adopt()
	}
	t.mu.Lock()
	groups := [][]*member{append([]*member{}, t.nodes...), append([]*member{}, t.voters...)}
	t.mu.Unlock()
	var errs []error
	var emu sync.Mutex
	for _, g := range groups {
		var wg sync.WaitGroup
		for _, m := range g {
			t.mu.Lock()
			v, n, c, pid, data := m.v, m.n, m.child, m.pid, m.data
			m.v, m.n, m.child, m.pid = nil, nil, nil, 0
			t.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				var err error
				switch {
				case v != nil:
					err = v.Shutdown(ctx)
				case n != nil:
					err = n.Shutdown(ctx)
				case c != nil:
					err = c.stop(ctx)
				case pid > 0:
					err = stopPID(ctx, pid, data)
				}
				if err != nil {
					emu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
					emu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	if _, err := os.Stat(filepath.Join(t.cfg.Dir, ManifestFile)); err == nil {
		errs = append(errs, t.updateManifest(nil))
	}
	return errors.Join(errs...)
}

// adopt takes the PIDs other processes (hce testnet kill/restart) wrote
// into the manifest: a member whose recorded PID differs from its own
// child is run by that PID now.
func (t *Testnet) adopt() {
	m, err := ReadManifest(t.cfg.Dir)
	if err != nil {
		return
	}
	pids := map[string]int{}
	for _, v := range m.Directories {
		pids[v.ID] = v.PID
	}
	for _, n := range m.Nodes {
		pids[n.Name] = n.PID
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, mem := range append(append([]*member{}, t.voters...), t.nodes...) {
		pid, ok := pids[mem.name]
		if !ok || pid == mem.pid {
			continue
		}
		if mem.child != nil && mem.child.exited() {
			mem.child = nil
		}
		if mem.child == nil {
			mem.pid = pid
		}
	}
}
