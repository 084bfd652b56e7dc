package testnet

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hce-sync/hce/directory/raftls"
)

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

// member is one voter or node and how it runs.
type member struct {
	voter    bool
	name     string // d1.. or n1..
	id       string // voter: name; node: peer ID once known
	p2pID    string // voter: libp2p peer ID once known
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
	https *raftls.CA     // issues the members' HTTPS certificates (Config.TLS)
	roots *x509.CertPool // trusts https
	token string
	owner bool // started here (Close stops members) vs Attach

	mu     sync.Mutex
	voters []*member
	nodes  []*member
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
	t := &Testnet{cfg: cfg, log: cfg.Logger, token: cfg.AdminToken, owner: true}
	if t.ca, err = loadOrCreateCA(filepath.Join(cfg.Dir, "ca"), "HCE testnet CA"); err != nil {
		return nil, fmt.Errorf("testnet: CA: %w", err)
	}
	// Every voter runs the local Sync 1.5 issuer with this one key.
	if _, err := LoadOrCreateIssuerKey(filepath.Join(cfg.Dir, LocalIssuerKeyFile)); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	if err := t.setupTLS(); err != nil {
		return nil, err
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
		m.url = t.scheme() + "://" + m.httpAddr + "/"
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
		m.url = t.scheme() + "://" + m.httpAddr + "/"
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
	cfg := Config{Dir: abs, Mode: ChildProcess, Binary: m.Binary, Replicas: m.Replicas, AdminToken: m.AdminToken,
		ChildLogLevel: m.LogLevel, TLS: m.HTTPSCA != "", Store: m.Store}
	cfg.DownAfter, _ = time.ParseDuration(m.DownAfter)
	cfg.Heartbeat, _ = time.ParseDuration(m.Heartbeat)
	cfg = cfg.withDefaults()
	t := &Testnet{cfg: cfg, log: cfg.Logger, token: m.AdminToken}
	if t.ca, err = raftls.LoadCA(m.CA); err != nil {
		return nil, fmt.Errorf("testnet: CA: %w", err)
	}
	if err := t.setupTLS(); err != nil {
		return nil, err
	}
	for _, v := range m.Directories {
		t.voters = append(t.voters, &member{voter: true, name: v.ID, id: v.ID, p2pID: v.PeerID, url: v.HTTP, httpAddr: hostPort(v.HTTP),
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
	if _, rest, ok := strings.Cut(u, "://"); ok {
		u = rest
	}
	return strings.TrimSuffix(u, "/")
}

// setupTLS loads (or, on a first start, creates) the HTTPS CA when
// Config.TLS is set, and makes the testnet's own HTTP client trust it.
func (t *Testnet) setupTLS() error {
	t.hc = &http.Client{Timeout: 5 * time.Second}
	if !t.cfg.TLS {
		return nil
	}
	var err error
	if t.https, err = loadOrCreateCA(filepath.Join(t.cfg.Dir, HTTPSCADir), "HCE testnet HTTPS CA"); err != nil {
		return fmt.Errorf("testnet: HTTPS CA: %w", err)
	}
	t.roots = x509.NewCertPool()
	t.roots.AddCert(t.https.Certificate())
	t.hc = HTTPConfig{RootCAs: t.roots}.client(5 * time.Second)
	return nil
}

// scheme is the members' URL scheme.
func (t *Testnet) scheme() string {
	if t.cfg.TLS {
		return "https"
	}
	return "http"
}

// RootCAs is the pool that trusts the members' HTTPS certificates (nil
// without Config.TLS): give it to clients.
func (t *Testnet) RootCAs() *x509.CertPool { return t.roots }

// httpConfig is an in-process member's HTTP configuration: its HTTPS
// certificate with Config.TLS, then Config.HTTP's adjustments.
func (t *Testnet) httpConfig(m *member) (HTTPConfig, error) {
	var hc HTTPConfig
	if t.cfg.TLS {
		cert, key, err := memberHTTPS(t.https, m.data, m.name)
		if err != nil {
			return hc, fmt.Errorf("testnet: %s HTTPS certificate: %w", m.name, err)
		}
		hc.Server.TLSCertFile, hc.Server.TLSKeyFile = cert, key
		hc.RootCAs = t.roots
	}
	if t.cfg.HTTP != nil {
		t.cfg.HTTP(m.name, &hc)
	}
	return hc, nil
}

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
		if m.voter {
			m.p2pID = id
		} else {
			m.id = id
		}
		t.mu.Unlock()
		return nil
	}
	hc, err := t.httpConfig(m)
	if err != nil {
		return err
	}
	if m.voter {
		v, err := StartVoter(ctx, VoterConfig{ID: m.id, Dir: m.data, HTTPAddr: m.httpAddr, RaftAddr: m.raftAddr,
			P2PAddr: m.p2pAddr, CA: t.ca, Bootstrap: first && join == "", Join: join, AdminToken: t.token,
			AutoApprove: true, Replicas: t.cfg.Replicas, DownAfter: t.cfg.DownAfter, HTTP: hc,
			Logger: t.log.With("member", m.name), Directory: t.cfg.Directory, Blocklist: filepath.Join(m.data, BlocklistFile),
			FxA: FxAConfig{Local: true, LocalKeyFile: filepath.Join(t.cfg.Dir, LocalIssuerKeyFile)}})
		if err != nil {
			return fmt.Errorf("testnet: voter %s: %w", m.name, err)
		}
		t.mu.Lock()
		m.v, m.started, m.p2pID = v, true, v.PeerID().String()
		t.mu.Unlock()
		return nil
	}
	n, err := StartNode(ctx, NodeConfig{Dir: m.data, HTTPAddr: m.httpAddr, P2PAddr: m.p2pAddr, Directory: dirURL,
		SweepInterval: t.cfg.Sweep, Blocklist: filepath.Join(m.data, BlocklistFile),
		Operator: m.operator, HeartbeatInterval: t.cfg.Heartbeat, MembershipTTL: t.cfg.Heartbeat, HTTP: hc,
		Node: t.cfg.Store.apply, Logger: t.log.With("member", m.name)})
	if err != nil {
		return fmt.Errorf("testnet: node %s: %w", m.name, err)
	}
	t.mu.Lock()
	m.n, m.id, m.started = n, n.ID(), true
	t.mu.Unlock()
	return nil
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
