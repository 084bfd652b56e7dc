package testnet

import (
	"context"
	"crypto/ecdh"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/httpserve"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/dirclient"
	"github.com/hce-sync/hce/replication"
)

// Defaults of NodeConfig (see also DefaultListenAddr).
const (
	// DefaultCapacity is NodeConfig.Capacity's default: the most users a
	// node takes.
	DefaultCapacity = 1000
	// DefaultReplicaWait is NodeConfig.ReplicaWait's default.
	DefaultReplicaWait = 2 * time.Second
)

// NodeConfig configures a storage node started by StartNode. A zero field
// takes its default (DefaultNodeConfig).
type NodeConfig struct {
	// Dir is the data folder: libp2p identity (node.key) and the Pebble
	// store (DIR/store). Required.
	Dir string
	// HTTPAddr is the Weave storage API listen address. Default
	// DefaultListenAddr (127.0.0.1:0).
	HTTPAddr string
	// PublicURL is the base URL registered with the directory (what
	// node/weave hands out). Default http://<HTTP listen address>/.
	PublicURL string
	// P2PAddr is the libp2p listen address, host:port or a multiaddress.
	// Default DefaultListenAddr (127.0.0.1:0).
	P2PAddr string
	// Directory is the HTTP URL of any directory voter. Required.
	Directory string
	// Operator names who runs the node; Capacity is the most users it
	// takes. Capacity default DefaultCapacity (1000).
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
	// Storage, when set, adjusts the Weave storage API's configuration
	// last (its limits: payload, POST records and bytes, request body).
	Storage func(*api.StorageConfig)
	// SweepInterval is how often the replicator compares every user it
	// holds with the other replicas (catching up after lost notices and
	// partitions, and backfilling new replicas). Default
	// replication.DefaultSweepInterval.
	SweepInterval time.Duration
	// ReplicaWait is how long a client write waits, after its commit, for
	// the other members of the user's replica set to confirm they hold
	// it; members that did not are reported to the directory before the
	// write is acknowledged (replication.Config.ReplicaWait). Default
	// DefaultReplicaWait (2 s); negative turns the wait off (acknowledge
	// at once, replicate after).
	ReplicaWait time.Duration
	// HTTP is the HTTP platform of the node's listener (TLS, limits,
	// timeouts, access log, metrics) and the roots it trusts when it
	// reads the directory and registers over HTTPS.
	HTTP HTTPConfig
	// Blocklist, when set, is a file of libp2p peer IDs (one per line)
	// the node refuses and disconnects, reread every 100 ms: testnet
	// partitions (see BlocklistFile).
	Blocklist string
	// Sync15 configures the Sync 1.5 storage API (/1.5/{uid}/), served
	// with Hawk credentials from the directory's tokenserver, sealed to
	// the node's X25519 key (DIR/hawk.key, published in its
	// registration).
	Sync15 Sync15Config
}

// DefaultNodeConfig returns the defaults; Dir and Directory still need
// to be set.
func DefaultNodeConfig() NodeConfig {
	return NodeConfig{
		HTTPAddr:          DefaultListenAddr,
		P2PAddr:           DefaultListenAddr,
		Capacity:          DefaultCapacity,
		HeartbeatInterval: dirclient.DefaultHeartbeatInterval,
		MembershipTTL:     dirclient.DefaultMembershipTTL,
		SweepInterval:     replication.DefaultSweepInterval,
		ReplicaWait:       DefaultReplicaWait,
	}
}

// Validate reports a configuration StartNode cannot run.
func (c NodeConfig) Validate() error {
	if c.Dir == "" || c.Directory == "" {
		return errors.New("testnet: NodeConfig needs Dir and Directory")
	}
	if c.QuotaBytes < 0 {
		return fmt.Errorf("testnet: NodeConfig.QuotaBytes %d is negative", c.QuotaBytes)
	}
	if c.P2PAddr != "" {
		if _, err := toMultiaddr(c.P2PAddr); err != nil {
			return err
		}
	}
	return nil
}

// withDefaults fills zero (and negative, where only positive values make
// sense) fields.
func (c NodeConfig) withDefaults() NodeConfig {
	d := DefaultNodeConfig()
	if c.HTTPAddr == "" {
		c.HTTPAddr = d.HTTPAddr
	}
	if c.P2PAddr == "" {
		c.P2PAddr = d.P2PAddr
	}
	if c.Capacity <= 0 {
		c.Capacity = d.Capacity
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.MembershipTTL <= 0 {
		c.MembershipTTL = d.MembershipTTL
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = d.SweepInterval
	}
	if c.ReplicaWait == 0 {
		c.ReplicaWait = d.ReplicaWait
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
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
	srv    *httpServer
	obs    *authObserver // counts refused credentials and active users
	hawk   *ecdh.PrivateKey
	url    string
	id     peer.ID
	dir    string // data folder
	cancel context.CancelFunc
	runs   sync.WaitGroup
	once   sync.Once
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
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	key, id, err := p2p.LoadOrCreateIdentity(cfg.Dir)
	if err != nil {
		return nil, err
	}
	hk, err := node.LoadOrCreateHawkKey(cfg.Dir)
	if err != nil {
		return nil, err
	}
	n := &Node{id: id, hawk: hk, dir: cfg.Dir}
	var ln net.Listener
	defer func() {
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			n.closeAll()
		}
	}()
	if err = n.openStore(cfg); err != nil {
		return nil, err
	}
	if ln, n.url, err = listenHTTP(cfg.HTTPAddr, cfg.PublicURL, cfg.HTTP.scheme()); err != nil {
		return nil, err
	}
	hc := cfg.HTTP.client(10 * time.Second)
	var voters []peer.AddrInfo
	if err = waitDirectory(ctx, log, "reading the voters' addresses", cfg.Directory, func() (e error) {
		voters, e = FetchVoters(ctx, hc, cfg.Directory)
		return e
	}); err != nil {
		return nil, err
	}
	if cfg.Blocklist != "" {
		// A partitioned node that restarts is partitioned from the start.
		if _, _, err := n.deny.load(cfg.Blocklist); err != nil {
			log.Warn("testnet: reading the blocklist", "err", err)
		}
	}
	if err = n.startHost(ctx, cfg, key, voters); err != nil {
		return nil, err
	}
	if err = n.register(ctx, cfg, hc, key); err != nil {
		return nil, err
	}
	if err = n.startDirClient(cfg, voters); err != nil {
		return nil, err
	}
	// A store restored from a backup is marked filling by the directory
	// before it serves or replicates anything.
	if err = n.tellRestored(ctx, cfg.Dir, log); err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	handler, err := n.handler(cfg, stop)
	if err != nil {
		return nil, err
	}
	// The replicator, the directory client and the blocklist watcher run
	// until Close cancels runCtx.
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	if err = n.startReplication(runCtx, cfg); err != nil {
		return nil, err
	}
	n.runBackground(runCtx, cfg)
	if err = n.serveAdminSocket(runCtx, cfg.Dir, log.With("component", "admin-socket")); err != nil {
		return nil, err
	}
	if n.srv, err = n.httpServer(cfg, ln, handler, stop); err != nil {
		return nil, err
	}
	n.srv.start()
	log.Info("storage node serving", "url", n.url, "peer", id, "p2p", n.p2pAddrs())
	return n, nil
}

// openStore opens the node's Pebble store in DIR/store.
func (n *Node) openStore(cfg NodeConfig) error {
	ncfg := node.DefaultConfig()
	ncfg.Dir = filepath.Join(cfg.Dir, "store")
	ncfg.Logger = cfg.Logger.With("component", "node")
	ncfg.QuotaBytes = cfg.QuotaBytes
	ncfg.NodeID = n.id.String()
	if cfg.Node != nil {
		cfg.Node(&ncfg)
	}
	var err error
	n.store, err = node.Open(ncfg)
	return err
}

// startHost starts the node's libp2p host. Its gater admits the voters
// (the allowlist the directory client later extends with the directory's
// active peers) minus the peers a partition blocks.
func (n *Node) startHost(ctx context.Context, cfg NodeConfig, key crypto.PrivKey, voters []peer.AddrInfo) error {
	listen, err := toMultiaddr(cfg.P2PAddr)
	if err != nil {
		return err
	}
	var vids []peer.ID
	for _, v := range voters {
		vids = append(vids, v.ID)
	}
	n.allow = p2p.NewStaticAllowlist(vids...)
	pcfg := p2p.DefaultConfig()
	pcfg.Key = key
	pcfg.ListenAddrs = []string{listen}
	pcfg.Logger = cfg.Logger.With("component", "p2p")
	pcfg.Gater = p2p.NewGater(p2p.AllowFunc(func(p peer.ID) bool {
		return n.allow.Allowed(p) && !n.deny.blocked(p)
	}), pcfg.Logger)
	n.host, err = p2p.NewHost(ctx, pcfg)
	return err
}

// p2pAddrs lists the host's listen addresses.
func (n *Node) p2pAddrs() []string {
	var addrs []string
	for _, a := range n.host.Addrs() {
		addrs = append(addrs, a.String())
	}
	return addrs
}

// register registers the node with the directory (a request signed with
// the node's key), retrying every 100 ms until accepted or ctx ends
// (ErrDirectoryUnreachable).
func (n *Node) register(ctx context.Context, cfg NodeConfig, hc *http.Client, key crypto.PrivKey) error {
	edKey, err := p2p.Ed25519Key(key)
	if err != nil {
		return err
	}
	reg := directory.Registration{BaseURL: n.url, P2PAddrs: n.p2pAddrs(), Operator: cfg.Operator, Capacity: cfg.Capacity,
		HawkKey: base64.StdEncoding.EncodeToString(n.hawk.PublicKey().Bytes())}
	return waitDirectory(ctx, cfg.Logger, "registering", cfg.Directory, func() error {
		err := register(ctx, hc, cfg.Directory, edKey, reg)
		// The error text may come through a forwarding voter, its quotes
		// escaped.
		if err != nil && reg.HawkKey != "" && strings.Contains(err.Error(), "unknown field") && strings.Contains(err.Error(), "hawk_key") {
			// A directory that predates Sync 1.5: register without it.
			cfg.Logger.Warn("testnet: the directory does not know Sync 1.5 keys; this node serves no Sync 1.5 until it does")
			reg.HawkKey = ""
			err = register(ctx, hc, cfg.Directory, edKey, reg)
		}
		return err
	})
}

// startDirClient creates the directory client (heartbeats, keys, peers,
// replica sets); runBackground runs it.
func (n *Node) startDirClient(cfg NodeConfig, voters []peer.AddrInfo) error {
	dcc := dirclient.DefaultConfig()
	dcc.Host = n.host
	dcc.Directory = voters
	dcc.Logger = cfg.Logger.With("component", "dirclient")
	dcc.Allowlist = n.allow
	dcc.HeartbeatInterval = cfg.HeartbeatInterval
	dcc.MembershipTTL = cfg.MembershipTTL
	dcc.Unconfirmed = n.store.UnconfirmedWrites
	dcc.HandoffBacklog = func() int { return n.repl.HandoffBacklog() } // Run starts after startReplication
	var err error
	n.dc, err = dirclient.New(dcc)
	return err
}

// handler builds the node's HTTP handler: the Weave storage API and the
// CouchDB endpoint behind an authenticator over the directory client, and
// serves the voters' account events on the host. Closing stop ends the
// CouchDB endpoint's waiting feeds.
func (n *Node) handler(cfg NodeConfig, stop <-chan struct{}) (http.Handler, error) {
	acfg := node.DefaultAuthConfig()
	acfg.Checker = n.dc
	acfg.Keys = n.dc.Keys()
	acfg.NodeID = n.id.String()
	acfg.Membership = n.dc
	// Revocation holds within the membership cache lifetime even when an
	// account event is lost.
	acfg.Credentials = n.dc
	acfg.DisableBasic = cfg.DisableBasic
	auth, err := node.NewAuthenticator(acfg)
	if err != nil {
		return nil, err
	}
	ecfg := dirclient.DefaultAccountEventsConfig()
	ecfg.Store = n.store
	ecfg.Auth = auth
	ecfg.IsVoter = n.dc.IsVoter
	ecfg.Noted = n.dc.NoteAccountEvent
	ecfg.Logger = cfg.Logger.With("component", "account-events")
	if err := dirclient.ServeAccountEvents(n.host, ecfg); err != nil {
		return nil, err
	}
	n.obs = newAuthObserver(auth)
	scfg := api.DefaultStorageConfig()
	scfg.Store = n.store
	scfg.Auth = n.obs
	scfg.Logger = cfg.Logger.With("component", "storage-api")
	// A node's 503s are transient (directory unreachable for a moment, a
	// write not acknowledged yet): clients retry soon.
	scfg.RetryAfter = 2
	if cfg.Storage != nil {
		cfg.Storage(&scfg)
	}
	storage, err := api.NewStorageHandler(scfg)
	if err != nil {
		return nil, err
	}
	hcfg := node.HawkConfig{Keys: n.dc.Keys(), NodeID: n.id.String(), NodeKey: n.hawk,
		Membership: n.dc, Credentials: n.dc, Hawk: cfg.Sync15.hawkConfig()}
	hawkAuth, err := node.NewHawkAuthenticator(hcfg)
	if err != nil {
		return nil, err
	}
	s15, err := sync15Handler(n.store, hawkObserver{n.obs, hawkAuth}, cfg.Sync15, cfg.QuotaBytes, 2, cfg.Logger)
	if err != nil {
		return nil, err
	}
	return withCouch(n.store, n.obs, cfg.Logger, stop, withSync15(s15, storage))
}

// httpServer is the node's HTTP server on ln: handler on the platform,
// its heartbeat checking the store and the directory, its metrics showing
// the store, replication and authentication.
func (n *Node) httpServer(cfg NodeConfig, ln net.Listener, handler http.Handler, stop chan struct{}) (*httpServer, error) {
	storeDir := filepath.Join(cfg.Dir, "store")
	reg := cfg.HTTP.registry()
	if err := registerStoreMetrics(reg, n.store, storeDir); err != nil {
		return nil, err
	}
	if err := registerAll(reg, n.repl.Collector(), n.obs); err != nil {
		return nil, err
	}
	checks := map[string]httpserve.Checker{"store": storeWritable(n.store, cfg.Dir), "directory": directoryReachable(n.dc)}
	return newHTTPServer(cfg.HTTP, ln, handler, checks, cfg.Logger, stop)
}

// startReplication starts the replicator (reporting to the directory
// through the directory client), makes client writes wait for the other
// members (cfg.ReplicaWait) and serves the voters' membership events.
func (n *Node) startReplication(ctx context.Context, cfg NodeConfig) error {
	rlog := cfg.Logger.With("component", "replication")
	rcfg := replication.DefaultConfig()
	rcfg.Store = n.store
	rcfg.Membership = dirMembership{n.dc}
	rcfg.Transport = replication.NewLibp2pTransport(n.host, rcfg.CallTimeout, rlog)
	rcfg.Logger = rlog
	rcfg.SweepInterval = cfg.SweepInterval
	rcfg.Reporter = n.dc
	rcfg.MembershipTTL = cfg.MembershipTTL
	if cfg.ReplicaWait > 0 {
		rcfg.ReplicaWait = cfg.ReplicaWait
	}
	var err error
	if n.repl, err = replication.New(rcfg); err != nil {
		return err
	}
	if err := n.repl.Start(ctx); err != nil {
		return err
	}
	if cfg.ReplicaWait > 0 {
		n.store.SetReplicaWaiter(n.repl)
	}
	n.dc.ServeMembershipEvents(n.repl.MembershipChanged)
	return nil
}

// runBackground runs the directory client and, with cfg.Blocklist, the
// blocklist watcher until ctx ends; closeAll waits for them.
func (n *Node) runBackground(ctx context.Context, cfg NodeConfig) {
	n.runs.Add(1)
	go func() {
		defer n.runs.Done()
		_ = n.dc.Run(ctx)
	}()
	if cfg.Blocklist != "" {
		n.runs.Add(1)
		go func() {
			defer n.runs.Done()
			watchBlocklist(ctx, cfg.Blocklist, &n.deny, n.host, nil, cfg.Logger.With("component", "blocklist"))
		}()
	}
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

// HTTP is the node's HTTP platform server (ReloadTLS, Registry).
func (n *Node) HTTP() *httpserve.Server { return n.srv.srv }

// Shutdown stops serving HTTP, waiting for requests in flight until ctx
// ends, stops the directory client and closes the host and the store.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.once.Do(func() {
		if n.srv != nil {
			err = errors.Join(n.srv.srv.Shutdown(ctx), n.srv.wait())
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
			err = errors.Join(n.srv.srv.Close(), n.srv.wait())
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
