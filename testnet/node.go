package testnet

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/dirclient"
	"github.com/hce-sync/hce/replication"
)

// DefaultReplicaWait is NodeConfig.ReplicaWait's default.
const DefaultReplicaWait = 2 * time.Second

// NodeConfig configures a storage node started by StartNode. A zero field
// takes its default.
type NodeConfig struct {
	// Dir is the data folder: libp2p identity (node.key) and the Pebble
	// store (DIR/store). Required.
	Dir string
	// HTTPAddr is the Weave storage API listen address. Default
	// 127.0.0.1:0.
	HTTPAddr string
	// PublicURL is the base URL registered with the directory (what
	// node/weave hands out). Default http://<HTTP listen address>/.
	PublicURL string
	// P2PAddr is the libp2p listen address, host:port or a multiaddress.
	// Default 127.0.0.1:0.
	P2PAddr string
	// Directory is the HTTP URL of any directory voter. Required.
	Directory string
	// Operator names who runs the node; Capacity is the most users it
	// takes. Capacity default 1000.
	Operator string
	Capacity int
	// HeartbeatInterval is the period of heartbeats and peer-list
	// refreshes. Default dirclient.DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// MembershipTTL is how long "do I hold this user" answers are reused.
	// Default dirclient.DefaultMembershipTTL.
	MembershipTTL time.Duration
	// QuotaBytes is the per-user quota; 0 turns quotas off.
	QuotaBytes int64
	// DisableBasic refuses HTTP Basic credentials: clients must bring a
	// directory-signed token (operator policy).
	DisableBasic bool
	// Logger receives all logs. Default: discard.
	Logger *slog.Logger
	// Node, when set, adjusts the store configuration last.
	Node func(*node.Config)
	// SweepInterval is how often the replicator compares every user it
	// holds with the other replicas (catching up after lost notices and
	// partitions, and backfilling new replicas). Default
	// replication.DefaultSweepInterval.
	SweepInterval time.Duration
	// ReplicaWait is how long a client write waits, after its commit, for
	// another replica of the user to confirm it holds it before the write
	// is acknowledged anyway (node.Store.SetReplicaWaiter). Default 2 s;
	// negative turns the wait off (acknowledge at once, replicate after).
	ReplicaWait time.Duration
	// Blocklist, when set, is a file of libp2p peer IDs (one per line)
	// the node refuses and disconnects, reread every 100 ms: testnet
	// partitions (see BlocklistFile).
	Blocklist string
}

// Node is a running storage node: Pebble store, libp2p host with a gater
// over the directory's active peers, directory client and the Weave
// storage API over HTTP.
type Node struct {
	store  *node.Store
	repl   *replication.Replicator
	deny   denyList
	host   host.Host
	dc     *dirclient.Client
	allow  *p2p.StaticAllowlist
	srv    *http.Server
	url    string
	id     peer.ID
	cancel context.CancelFunc
	runs   sync.WaitGroup
	done   chan error
	once   sync.Once
}

// FetchVoters reads the directory voters' libp2p identities from
// GET <dirURL>/internal/v1/p2p.
func FetchVoters(ctx context.Context, c *http.Client, dirURL string) ([]peer.AddrInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(dirURL, "/")+directory.PathP2P, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("testnet: %s answered %s", directory.PathP2P, resp.Status)
	}
	var info directory.P2PInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&info); err != nil {
		return nil, fmt.Errorf("testnet: %s: %w", directory.PathP2P, err)
	}
	var out []peer.AddrInfo
	for _, v := range info.Voters {
		id, err := peer.Decode(v.PeerID)
		if err != nil {
			continue
		}
		ai := peer.AddrInfo{ID: id}
		for _, a := range v.Addrs {
			if m, err := ma.NewMultiaddr(a); err == nil {
				ai.Addrs = append(ai.Addrs, m)
			}
		}
		out = append(out, ai)
	}
	if len(out) == 0 {
		return nil, errors.New("testnet: the directory lists no voter with a libp2p identity yet")
	}
	return out, nil
}

// register posts a signed registration; it returns nil once accepted.
func register(ctx context.Context, c *http.Client, dirURL string, key ed25519.PrivateKey, r directory.Registration) error {
	body, sig, err := directory.SignRegistration(key, r, time.Now())
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(dirURL, "/")+"/internal/v1/nodes/register", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(directory.SignatureHeader, sig)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("testnet: registration answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// retry calls fn every 100 ms until it succeeds or ctx ends.
func retry(ctx context.Context, what string, fn func() error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testnet: %s: %w (last error: %v)", what, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// StartNode starts a storage node as `hce node` runs it: it opens the
// store and identity, learns the voters' libp2p addresses from the
// directory's HTTP URL, starts its libp2p host (gater: voters, then the
// directory's active peers), registers with a signed request (retrying
// until accepted), starts the directory client (heartbeats, keys, peers)
// and serves the Weave storage API and, to the voters, the account events
// (dirclient.ServeAccountEvents: credential changes and deletions). ctx bounds
// the start.
func StartNode(ctx context.Context, cfg NodeConfig) (_ *Node, err error) {
	if cfg.Dir == "" || cfg.Directory == "" {
		return nil, errors.New("testnet: NodeConfig needs Dir and Directory")
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.P2PAddr == "" {
		cfg.P2PAddr = "127.0.0.1:0"
	}
	if cfg.Capacity <= 0 {
		cfg.Capacity = 1000
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p2pAddr, err := toMultiaddr(cfg.P2PAddr)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("testnet: data folder: %w", err)
	}
	key, id, err := p2p.LoadOrCreateIdentity(cfg.Dir)
	if err != nil {
		return nil, err
	}
	edKey, err := p2p.Ed25519Key(key)
	if err != nil {
		return nil, err
	}
	n := &Node{id: id, done: make(chan error, 1)}
	defer func() {
		if err != nil {
			n.closeAll()
		}
	}()
	ncfg := node.DefaultConfig()
	ncfg.Dir = filepath.Join(cfg.Dir, "store")
	ncfg.Logger = logger.With("component", "node")
	ncfg.QuotaBytes = cfg.QuotaBytes
	ncfg.NodeID = id.String()
	if cfg.Node != nil {
		cfg.Node(&ncfg)
	}
	if n.store, err = node.Open(ncfg); err != nil {
		return nil, err
	}
	ln, url, err := listenHTTP(cfg.HTTPAddr, cfg.PublicURL)
	if err != nil {
		return nil, err
	}
	n.url = url
	hc := &http.Client{Timeout: 10 * time.Second}
	var voters []peer.AddrInfo
	if err = retry(ctx, "reading the directory's voters", func() (e error) {
		voters, e = FetchVoters(ctx, hc, cfg.Directory)
		return e
	}); err != nil {
		ln.Close()
		return nil, err
	}
	var vids []peer.ID
	for _, v := range voters {
		vids = append(vids, v.ID)
	}
	n.allow = p2p.NewStaticAllowlist(vids...)
	pcfg := p2p.DefaultConfig()
	pcfg.Key = key
	pcfg.ListenAddrs = []string{p2pAddr}
	pcfg.Logger = logger.With("component", "p2p")
	pcfg.Gater = p2p.NewGater(p2p.AllowFunc(func(p peer.ID) bool {
		return n.allow.Allowed(p) && !n.deny.blocked(p)
	}), pcfg.Logger)
	if n.host, err = p2p.NewHost(ctx, pcfg); err != nil {
		ln.Close()
		return nil, err
	}
	var addrs []string
	for _, a := range n.host.Addrs() {
		addrs = append(addrs, a.String())
	}
	reg := directory.Registration{BaseURL: n.url, P2PAddrs: addrs, Operator: cfg.Operator, Capacity: cfg.Capacity}
	if err = retry(ctx, "registering with the directory", func() error {
		return register(ctx, hc, cfg.Directory, edKey, reg)
	}); err != nil {
		ln.Close()
		return nil, err
	}
	dcc := dirclient.DefaultConfig()
	dcc.Host = n.host
	dcc.Directory = voters
	dcc.Logger = logger.With("component", "dirclient")
	dcc.Allowlist = n.allow
	if cfg.HeartbeatInterval > 0 {
		dcc.HeartbeatInterval = cfg.HeartbeatInterval
	}
	if cfg.MembershipTTL > 0 {
		dcc.MembershipTTL = cfg.MembershipTTL
	}
	if n.dc, err = dirclient.New(dcc); err != nil {
		ln.Close()
		return nil, err
	}
	acfg := node.DefaultAuthConfig()
	acfg.Checker = n.dc
	acfg.Keys = n.dc.Keys()
	acfg.NodeID = id.String()
	acfg.Membership = n.dc
	acfg.DisableBasic = cfg.DisableBasic
	auth, err := node.NewAuthenticator(acfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	ecfg := dirclient.DefaultAccountEventsConfig()
	ecfg.Store = n.store
	ecfg.Auth = auth
	ecfg.IsVoter = n.dc.IsVoter
	ecfg.Logger = logger.With("component", "account-events")
	if err = dirclient.ServeAccountEvents(n.host, ecfg); err != nil {
		ln.Close()
		return nil, err
	}
	scfg := api.DefaultStorageConfig()
	scfg.Store = n.store
	scfg.Auth = auth
	scfg.Logger = logger.With("component", "storage-api")
	storage, err := api.NewStorageHandler(scfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	stop := make(chan struct{})
	handler, err := withCouch(n.store, auth, logger, stop, storage)
	if err != nil {
		ln.Close()
		return nil, err
	}
	rcfg := replication.DefaultConfig()
	rcfg.Store = n.store
	rcfg.Membership = dirMembership{n.dc}
	rcfg.Transport = replication.NewLibp2pTransport(n.host, rcfg.CallTimeout, logger.With("component", "replication"))
	rcfg.Logger = logger.With("component", "replication")
	if cfg.SweepInterval > 0 {
		rcfg.SweepInterval = cfg.SweepInterval
	}
	if n.repl, err = replication.New(rcfg); err != nil {
		ln.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	if err = n.repl.Start(runCtx); err != nil {
		ln.Close()
		return nil, err
	}
	switch {
	case cfg.ReplicaWait == 0:
		n.store.SetReplicaWaiter(n.repl, DefaultReplicaWait)
	case cfg.ReplicaWait > 0:
		n.store.SetReplicaWaiter(n.repl, cfg.ReplicaWait)
	}
	n.runs.Add(1)
	go func() {
		defer n.runs.Done()
		_ = n.dc.Run(runCtx)
	}()
	if cfg.Blocklist != "" {
		n.runs.Add(1)
		go func() {
			defer n.runs.Done()
			watchBlocklist(runCtx, cfg.Blocklist, &n.deny, n.host, logger.With("component", "blocklist"))
		}()
	}
	n.srv = newHTTPServer(handler, stop)
	go func() { n.done <- n.srv.Serve(ln) }()
	logger.Info("storage node serving", "url", n.url, "peer", id, "p2p", addrs)
	return n, nil
}

// URL is the node's Weave base URL, ending in "/".
func (n *Node) URL() string { return n.url }

// PeerID is the node's libp2p peer ID.
func (n *Node) PeerID() peer.ID { return n.id }

// ID is the node's directory ID (its peer ID as a string).
func (n *Node) ID() string { return n.id.String() }

// Host is the node's libp2p host.
func (n *Node) Host() host.Host { return n.host }

// Store is the node's store.
func (n *Node) Store() *node.Store { return n.store }

// Replicator is the node's replicator.
func (n *Node) Replicator() *replication.Replicator { return n.repl }

// Allowlist is the set of peers the node's gater admits.
func (n *Node) Allowlist() *p2p.StaticAllowlist { return n.allow }

// Shutdown stops serving HTTP, waiting for requests in flight until ctx
// ends, stops the directory client and closes the host and the store.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.once.Do(func() {
		if n.srv != nil {
			err = n.srv.Shutdown(ctx)
			<-n.done
		}
		err = errors.Join(err, n.closeAll())
	})
	return err
}

// Close stops the node abruptly, as a crash would look from outside:
// connections are dropped without draining, heartbeats stop, the host
// and the store are closed.
func (n *Node) Close() error {
	var err error
	n.once.Do(func() {
		if n.srv != nil {
			err = n.srv.Close()
			<-n.done
		}
		err = errors.Join(err, n.closeAll())
	})
	return err
}

func (n *Node) closeAll() error {
	var errs []error
	if n.repl != nil {
		errs = append(errs, n.repl.Close())
	}
	if n.cancel != nil {
		n.cancel()
		n.runs.Wait()
	}
	if n.host != nil {
		errs = append(errs, n.host.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}
