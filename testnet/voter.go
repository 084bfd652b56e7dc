package testnet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/httpserve"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/directory/raftls"
)

// Defaults of VoterConfig (see also DefaultListenAddr). The directory
// keeps its own defaults as literals in directory.Config today; these
// repeat them so that `hce directory`'s flags can show them.
const (
	// DefaultVoterID is VoterConfig.ID's default (directory.Config.ID's).
	DefaultVoterID = directory.DefaultID
	// DefaultReplicas is the replica set size R of a new cluster (the
	// directory's initial setting) and of a testnet.
	DefaultReplicas = directory.DefaultReplicas
	// DefaultVoterDownAfter is VoterConfig.DownAfter's default
	// (directory.Config.DownAfter's).
	DefaultVoterDownAfter = directory.DefaultDownAfter
	// DefaultMaxNodeCapacity and DefaultMaxOperatorCapacity are the
	// defaults of VoterConfig's capacity limits: the most users placement
	// counts for one node, and for all the nodes of one operator,
	// whatever they declare.
	DefaultMaxNodeCapacity     = 10000
	DefaultMaxOperatorCapacity = 50000
)

// VoterConfig configures a directory voter started by StartVoter. A zero
// field takes its default (DefaultVoterConfig).
type VoterConfig struct {
	// ID is the raft server ID and certificate identity. Default
	// DefaultVoterID ("dir1").
	ID string
	// Dir is the data folder (raft log, snapshots, signing key, libp2p
	// identity, DIR/tls certificate). Required.
	Dir string
	// HTTPAddr is the HTTP listen address (user API, token endpoint, admin
	// and voter-to-voter routes). Default DefaultListenAddr (127.0.0.1:0).
	HTTPAddr string
	// PublicURL is the base URL other voters, nodes and clients reach the
	// voter at. Default http://<HTTP listen address>/.
	PublicURL string
	// RaftAddr is the raft listen address (mutual TLS). Default
	// DefaultListenAddr (127.0.0.1:0).
	RaftAddr string
	// P2PAddr is the libp2p listen address, host:port or a multiaddress.
	// Default DefaultListenAddr (127.0.0.1:0).
	P2PAddr string
	// CA issues this voter's raft certificate into DIR/tls on first
	// start. Required.
	CA *raftls.CA
	// Bootstrap makes this voter found a new cluster (first start only);
	// Join is the HTTP URL of a voter of an existing cluster. Exclusive;
	// exactly one is needed on first start.
	Bootstrap bool
	Join      string
	// AwaitAdd lets a first start without Bootstrap or Join wait until
	// an admin adds the voter (directory.ClusterConfig.AwaitAdd).
	AwaitAdd bool
	// AdminToken protects the admin API and voter-to-voter routes; the
	// same on every voter. Required.
	AdminToken string
	// AutoApprove admits registering nodes without an admin: for
	// testnets, where every node is the operator's own. Replicas is R;
	// zero keeps the cluster's setting (DefaultReplicas on a new
	// cluster). MaxNodeCapacity and MaxOperatorCapacity cap the capacity
	// a node declares (directory.Settings); zero means the defaults
	// (DefaultMaxNodeCapacity, DefaultMaxOperatorCapacity), negative no
	// cap. All are written to the cluster settings when this voter leads
	// after start.
	AutoApprove         bool
	Replicas            int
	MaxNodeCapacity     int
	MaxOperatorCapacity int
	// DownAfter is the heartbeat silence after which the leader marks a
	// node down. Default DefaultVoterDownAfter (15 s).
	DownAfter time.Duration
	// HTTP is the HTTP platform of the voter's listener (TLS, limits,
	// timeouts, access log, metrics) and the roots it trusts when it
	// joins and forwards to other voters over HTTPS.
	HTTP HTTPConfig
	// Logger receives all logs. Default: discard.
	Logger *slog.Logger
	// FxA configures the Sync 1.5 tokenserver (GET /1.0/sync/1.5): off
	// unless a way to verify access tokens (or the local issuer) is
	// given.
	FxA FxAConfig
	// Directory, when set, adjusts the directory configuration last.
	Directory func(*directory.Config)
	// Blocklist, when set, is a file the voter rereads every 100 ms and
	// whose items it refuses: libp2p peers, raft voters and voter HTTP
	// addresses (testnet partitions, see BlocklistFile).
	Blocklist string
}

// DefaultVoterConfig returns the defaults; Dir, CA and AdminToken still
// need to be set, and Bootstrap or Join on a voter's first start.
func DefaultVoterConfig() VoterConfig {
	return VoterConfig{
		ID:                  DefaultVoterID,
		HTTPAddr:            DefaultListenAddr,
		RaftAddr:            DefaultListenAddr,
		P2PAddr:             DefaultListenAddr,
		Replicas:            DefaultReplicas,
		DownAfter:           DefaultVoterDownAfter,
		MaxNodeCapacity:     DefaultMaxNodeCapacity,
		MaxOperatorCapacity: DefaultMaxOperatorCapacity,
	}
}

// Validate reports a configuration StartVoter cannot run.
func (c VoterConfig) Validate() error {
	if c.Dir == "" || c.CA == nil || c.AdminToken == "" {
		return errors.New("testnet: VoterConfig needs Dir, CA and AdminToken")
	}
	if c.P2PAddr != "" {
		if _, err := toMultiaddr(c.P2PAddr); err != nil {
			return err
		}
	}
	return nil
}

// withDefaults fills zero fields (Replicas stays zero: keep the cluster's
// setting).
func (c VoterConfig) withDefaults() VoterConfig {
	d := DefaultVoterConfig()
	if c.ID == "" {
		c.ID = d.ID
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = d.HTTPAddr
	}
	if c.RaftAddr == "" {
		c.RaftAddr = d.RaftAddr
	}
	if c.P2PAddr == "" {
		c.P2PAddr = d.P2PAddr
	}
	if c.DownAfter <= 0 {
		c.DownAfter = d.DownAfter
	}
	if c.MaxNodeCapacity == 0 {
		c.MaxNodeCapacity = d.MaxNodeCapacity
	}
	if c.MaxOperatorCapacity == 0 {
		c.MaxOperatorCapacity = d.MaxOperatorCapacity
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Voter is a running directory voter: raft over mutual TLS, libp2p host
// and HTTP server.
type Voter struct {
	dir    *directory.Directory
	srv    *httpServer
	id     string
	url    string
	once   sync.Once
	cancel context.CancelFunc // stops the blocklist watcher
	runs   sync.WaitGroup
	// internal carries voter-to-voter HTTP with a blocklist (else nil).
	internal *http.Transport
}

// StartVoter starts a directory voter as `hce directory` runs it and
// returns once it has joined (or founded) the cluster and serves HTTP. It
// tells the storage nodes of the password changes and account deletions
// it handles (directory.Config.NotifyNodes).
func StartVoter(ctx context.Context, cfg VoterConfig) (*Voter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	ln, url, err := listenHTTP(cfg.HTTPAddr, cfg.PublicURL, cfg.HTTP.scheme())
	if err != nil {
		return nil, err
	}
	var deny *denyList
	var internal *http.Transport
	if cfg.Blocklist != "" {
		// A partitioned voter that restarts is partitioned from the start.
		deny = &denyList{}
		if _, _, err := deny.load(cfg.Blocklist); err != nil {
			cfg.Logger.Warn("testnet: reading the blocklist", "err", err)
		}
		internal = blockingTransport(deny, cfg.HTTP.RootCAs)
	}
	dcfg, err := directoryConfig(cfg, url, deny, internal)
	if err != nil {
		ln.Close()
		return nil, err
	}
	d, err := directory.Open(ctx, dcfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	applySettings(ctx, d, cfg)
	srv, err := voterServer(d, cfg, ln)
	if err != nil {
		d.Close()
		ln.Close()
		return nil, err
	}
	v := &Voter{dir: d, srv: srv, id: cfg.ID, url: url, internal: internal}
	if deny != nil && d.P2PHost() != nil {
		wctx, cancel := context.WithCancel(context.Background())
		v.cancel = cancel
		v.runs.Add(1)
		go func() {
			defer v.runs.Done()
			watchBlocklist(wctx, cfg.Blocklist, deny, d.P2PHost(), internal.CloseIdleConnections,
				cfg.Logger.With("component", "blocklist"))
		}()
	}
	srv.start()
	return v, nil
}

// voterServer is the voter's HTTP server on ln: VoterHandler on the
// platform, its heartbeat checking that a raft leader is known, its
// metrics showing the raft state.
func voterServer(d *directory.Directory, cfg VoterConfig, ln net.Listener) (*httpServer, error) {
	h, err := VoterHandler(d, cfg.Logger)
	if err != nil {
		return nil, err
	}
	reg := cfg.HTTP.registry()
	if err := registerAll(reg, newDirectoryCollector(d), d.Collector()); err != nil {
		return nil, err
	}
	return newHTTPServer(cfg.HTTP, ln, h, map[string]httpserve.Checker{"raft_leader": raftLeaderKnown(d)}, cfg.Logger, nil)
}

// blockingTransport is the HTTP transport of a voter's voter-to-voter
// requests (join, forwarded writes), trusting roots for HTTPS: dials to
// the addresses deny lists fail as a refused connection would.
func blockingTransport(deny *denyList, roots *x509.CertPool) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if roots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if deny != nil && deny.refusesAddr(addr) {
			return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("%w (testnet partition)", syscall.ECONNREFUSED)}
		}
		return d.DialContext(ctx, network, addr)
	}
	return tr
}

// directoryConfig is the directory configuration of the voter cfg
// describes, serving HTTP at url: raft over mutual TLS with the
// certificate from DIR/tls (issued from cfg.CA on first start), libp2p on
// cfg.P2PAddr, account events to the nodes, and with a blocklist (deny not
// nil) its faults and voter-to-voter HTTP over internal; cfg.Directory
// adjusts it last.
func directoryConfig(cfg VoterConfig, url string, deny *denyList, internal *http.Transport) (directory.Config, error) {
	caPEM, certPEM, keyPEM, err := VoterTLS(cfg.CA, filepath.Join(cfg.Dir, "tls"), cfg.ID, cfg.RaftAddr)
	if err != nil {
		return directory.Config{}, err
	}
	p2pAddr, err := toMultiaddr(cfg.P2PAddr)
	if err != nil {
		return directory.Config{}, err
	}
	dcfg := directory.DefaultConfig()
	dcfg.ID = cfg.ID
	dcfg.Dir = cfg.Dir
	dcfg.Logger = cfg.Logger.With("component", "directory", "voter", cfg.ID)
	dcfg.Cluster.Bootstrap = cfg.Bootstrap
	dcfg.Cluster.Join = cfg.Join
	dcfg.Cluster.AwaitAdd = cfg.AwaitAdd
	dcfg.Cluster.RaftAddr = cfg.RaftAddr
	dcfg.Cluster.HTTPURL = url
	dcfg.Cluster.HTTPClient = cfg.HTTP.client(10 * time.Second)
	dcfg.Cluster.TLSCA, dcfg.Cluster.TLSCert, dcfg.Cluster.TLSKey = caPEM, certPEM, keyPEM
	dcfg.AdminToken = cfg.AdminToken
	dcfg.Nodes.AutoApprove = cfg.AutoApprove
	dcfg.Nodes.DownAfter = cfg.DownAfter
	dcfg.Nodes.P2PListen = []string{p2pAddr}
	dcfg.Nodes.NotifyNodes = true
	if deny != nil {
		dcfg.Faults = deny
		dcfg.Cluster.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: internal}
	}
	if err := cfg.FxA.apply(&dcfg, cfg.Dir); err != nil {
		return directory.Config{}, err
	}
	dcfg.Sync.HTTPClient = cfg.HTTP.client(10 * time.Second)
	if cfg.Directory != nil {
		cfg.Directory(&dcfg)
	}
	return dcfg, nil
}

// applySettings writes cfg's replica set size, auto-approval and
// capacity limits into the cluster settings when this voter leads; a
// failure is logged (another voter's start, or an admin, may set them
// later).
func applySettings(ctx context.Context, d *directory.Directory, cfg VoterConfig) {
	if !d.IsLeader() {
		return
	}
	s := d.Settings()
	want := cfg.Replicas
	if want <= 0 {
		want = s.Replicas
	}
	node, op := max(cfg.MaxNodeCapacity, 0), max(cfg.MaxOperatorCapacity, 0)
	if s.Replicas == want && s.AutoApprove == cfg.AutoApprove && s.MaxNodeCapacity == node && s.MaxOperatorCapacity == op {
		return
	}
	s.Replicas, s.AutoApprove = want, cfg.AutoApprove
	s.MaxNodeCapacity, s.MaxOperatorCapacity = node, op
	if err := d.SetSettings(ctx, s); err != nil {
		cfg.Logger.Warn("testnet: could not apply settings", "err", err)
	}
}

// VoterHandler returns the HTTP handler of a voter: the Weave user API
// with the token endpoint, and the directory's admin, internal and p2p
// routes.
func VoterHandler(d *directory.Directory, logger *slog.Logger) (http.Handler, error) {
	ucfg := d.UserAPIConfig()
	ucfg.Logger = logger.With("component", "user-api")
	users, err := api.NewUserHandler(ucfg)
	if err != nil {
		return nil, err
	}
	return api.NewHandler(d.HTTPHandler(), users), nil
}

// URL is the voter's HTTP base URL, ending in "/".
func (v *Voter) URL() string { return v.url }

// ID is the voter's raft server ID.
func (v *Voter) ID() string { return v.id }

// Directory is the voter's directory.
func (v *Voter) Directory() *directory.Directory { return v.dir }

// PeerID is the voter's libp2p peer ID.
func (v *Voter) PeerID() peer.ID { return v.dir.P2PHost().ID() }

// HTTP is the voter's HTTP platform server (ReloadTLS, Registry).
func (v *Voter) HTTP() *httpserve.Server { return v.srv.srv }

// Shutdown stops serving HTTP (waiting for requests in flight until ctx
// ends) and closes the directory.
func (v *Voter) Shutdown(ctx context.Context) error {
	var err error
	v.once.Do(func() {
		err = errors.Join(v.srv.srv.Shutdown(ctx), v.srv.wait())
		v.stopWatcher()
		err = errors.Join(err, v.dir.Close())
		v.closeInternal()
	})
	return err
}

// Close stops the voter abruptly: connections are dropped, the directory
// closed.
func (v *Voter) Close() error {
	var err error
	v.once.Do(func() {
		err = errors.Join(v.srv.srv.Close(), v.srv.wait())
		v.stopWatcher()
		err = errors.Join(err, v.dir.Close())
		v.closeInternal()
	})
	return err
}

// closeInternal closes the idle voter-to-voter connections of a voter
// with a blocklist (its own transport's).
func (v *Voter) closeInternal() {
	if v.internal != nil {
		v.internal.CloseIdleConnections()
	}
}

// stopWatcher stops the blocklist watcher, if any, and waits for it.
func (v *Voter) stopWatcher() {
	if v.cancel != nil {
		v.cancel()
		v.runs.Wait()
	}
}
