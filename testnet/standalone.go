package testnet

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/httpserve"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/node"
)

// Defaults of StandaloneConfig: what `hce serve` runs with.
const (
	// DefaultStandaloneAddr is StandaloneConfig.Addr's default.
	DefaultStandaloneAddr = "127.0.0.1:8080"
	// DefaultDataDir is StandaloneConfig.DataDir's default.
	DefaultDataDir = "./hce-data"
)

// StandaloneConfig configures a Standalone server. A zero field takes its
// default (DefaultStandaloneConfig).
type StandaloneConfig struct {
	// Addr is the HTTP listen address (default DefaultStandaloneAddr,
	// 127.0.0.1:8080; use 127.0.0.1:0 for a free port).
	Addr string
	// PublicURL is the base URL node/weave hands to clients (default
	// http://<listen address>/).
	PublicURL string
	// DataDir holds the directory's raft state (DataDir/directory) and the
	// node's store (DataDir/node). Default DefaultDataDir (./hce-data).
	DataDir string
	// QuotaBytes is the per-user storage quota in bytes; 0 turns quotas off.
	QuotaBytes int64
	// HTTP is the HTTP platform of the listener (TLS, limits, timeouts,
	// access log, metrics). RootCAs is not used.
	HTTP HTTPConfig
	// Logger receives all logs (default: discard).
	Logger *slog.Logger
	// FxA configures the Sync 1.5 tokenserver (GET /1.0/sync/1.5): off
	// unless a way to verify access tokens (or the local issuer) is
	// given; the local issuer's key defaults to DataDir/directory/
	// fxa-local.key.
	FxA FxAConfig
	// Sync15 configures the Sync 1.5 storage API (/1.5/{uid}/), whose
	// Hawk keys are sealed to the X25519 key in DataDir/node/hawk.key.
	Sync15 Sync15Config
	// Directory, Node, Storage and User, when non-nil, adjust the
	// component configurations after the defaults are filled in (tests
	// lower the password hashing cost this way; hce serve sets limits).
	Directory func(*directory.Config)
	Node      func(*node.Config)
	Storage   func(*api.StorageConfig)
	User      func(*api.UserConfig)
}

// DefaultStandaloneConfig returns the defaults.
func DefaultStandaloneConfig() StandaloneConfig {
	return StandaloneConfig{Addr: DefaultStandaloneAddr, DataDir: DefaultDataDir}
}

// Validate reports a configuration StartStandalone cannot run.
func (c StandaloneConfig) Validate() error {
	if c.QuotaBytes < 0 {
		return fmt.Errorf("testnet: StandaloneConfig.QuotaBytes %d is negative", c.QuotaBytes)
	}
	return nil
}

// withDefaults fills zero fields.
func (c StandaloneConfig) withDefaults() StandaloneConfig {
	d := DefaultStandaloneConfig()
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.DataDir == "" {
		c.DataDir = d.DataDir
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Standalone is one directory voter and one storage node serving the Weave
// user API and storage API on one HTTP port, as `hce serve` runs them.
type Standalone struct {
	dir    *directory.Directory
	store  *node.Store
	srv    *httpServer
	obs    *authObserver // counts refused credentials and active users
	hawk   *ecdh.PrivateKey
	url    string
	logger *slog.Logger
}

// StartStandalone opens (or creates) the data folder, starts the directory
// voter and the node and begins serving HTTP. It returns once the server
// accepts requests.
func StartStandalone(ctx context.Context, cfg StandaloneConfig) (*Standalone, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	logger := cfg.Logger
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	ln, url, err := listenHTTP(cfg.Addr, cfg.PublicURL, cfg.HTTP.scheme())
	if err != nil {
		return nil, err
	}
	s := &Standalone{url: url, logger: logger}
	ok := false
	defer func() {
		if !ok {
			s.closeComponents()
			ln.Close()
		}
	}()

	if err := s.openStore(cfg); err != nil {
		return nil, err
	}
	// The node's Basic-auth cache must forget a user's answers as soon as
	// the directory commits a password change or an account deletion; the
	// authenticator is built after the directory it checks against.
	var authRef atomic.Pointer[node.Authenticator]
	dcfg, err := s.openDirectory(ctx, cfg, &authRef)
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	handler, err := s.handler(cfg, dcfg, &authRef, stop)
	if err != nil {
		return nil, err
	}
	if s.srv, err = s.httpServer(cfg, ln, handler, stop); err != nil {
		return nil, err
	}
	s.srv.start()
	ok = true
	logger.Info("serving", "url", url, "data", cfg.DataDir)
	return s, nil
}

// openStore opens the node's store in DataDir/node.
func (s *Standalone) openStore(cfg StandaloneConfig) error {
	ncfg := node.DefaultConfig()
	ncfg.Dir = filepath.Join(cfg.DataDir, "node")
	ncfg.Logger = cfg.Logger.With("component", "node")
	ncfg.QuotaBytes = cfg.QuotaBytes
	if cfg.Node != nil {
		cfg.Node(&ncfg)
	}
	var err error
	if s.hawk, err = node.LoadOrCreateHawkKey(ncfg.Dir); err != nil {
		return err
	}
	s.store, err = node.Open(ncfg)
	return err
}

// openDirectory opens the single-voter directory in DataDir/directory,
// naming s.url as every user's node; its credential changes reach the
// authenticator authRef holds by then. It returns the configuration used.
func (s *Standalone) openDirectory(ctx context.Context, cfg StandaloneConfig, authRef *atomic.Pointer[node.Authenticator]) (directory.Config, error) {
	dcfg := directory.DefaultConfig()
	dcfg.Dir = filepath.Join(cfg.DataDir, "directory")
	dcfg.Logger = cfg.Logger.With("component", "directory")
	dcfg.Accounts.NodeURL = s.url
	dcfg.Accounts.CredentialsChanged = func(user string) {
		if a := authRef.Load(); a != nil {
			a.Forget(user)
		}
	}
	if err := cfg.FxA.apply(&dcfg, dcfg.Dir); err != nil {
		return dcfg, err
	}
	dcfg.Sync.ServeNodeKey = s.hawk.PublicKey().Bytes()
	if cfg.Directory != nil {
		cfg.Directory(&dcfg)
	}
	var err error
	s.dir, err = directory.Open(ctx, dcfg)
	return dcfg, err
}

// handler builds the HTTP handler: the Weave storage API and the CouchDB
// endpoint behind an authenticator over the directory (stored in
// authRef), and the Weave user API. Closing stop ends the CouchDB
// endpoint's waiting feeds.
func (s *Standalone) handler(cfg StandaloneConfig, dcfg directory.Config, authRef *atomic.Pointer[node.Authenticator], stop <-chan struct{}) (http.Handler, error) {
	acfg := node.DefaultAuthConfig()
	acfg.Checker = s.dir
	// Bearer tokens from GET /user/1.0/{user}/token name this node by the
	// directory's serve audience and are checked against its keys.
	acfg.Keys = s.dir
	// Tokens issued before a password change or a deletion are refused.
	acfg.Credentials = s.dir
	acfg.NodeID = dcfg.Tokens.ServeNodeID
	if acfg.NodeID == "" {
		acfg.NodeID = directory.DefaultServeNodeID
	}
	auth, err := node.NewAuthenticator(acfg)
	if err != nil {
		return nil, err
	}
	authRef.Store(auth)
	s.obs = newAuthObserver(auth)
	scfg := api.DefaultStorageConfig()
	scfg.Store = s.store
	scfg.Auth = s.obs
	scfg.Logger = cfg.Logger.With("component", "storage-api")
	if cfg.Storage != nil {
		cfg.Storage(&scfg)
	}
	storage, err := api.NewStorageHandler(scfg)
	if err != nil {
		return nil, err
	}
	ucfg := api.DefaultUserConfig()
	ucfg.Accounts = accountsWithStorage{s.dir, s.store}
	ucfg.Tokens = s.dir
	ucfg.ResetCodeTTL = dcfg.Accounts.ResetCodeTTL
	// The registration policy, captcha and admin secret, as a voter's.
	dui := s.dir.UserAPIConfig()
	ucfg.Registration, ucfg.AdminSecret = dui.Registration, dui.AdminSecret
	ucfg.Captcha, ucfg.CaptchaPublicKey, ucfg.CaptchaHTML = dui.Captcha, dui.CaptchaPublicKey, dui.CaptchaHTML
	ucfg.Logger = cfg.Logger.With("component", "user-api")
	if cfg.User != nil {
		cfg.User(&ucfg)
	}
	users, err := api.NewUserHandler(ucfg)
	if err != nil {
		return nil, err
	}
	hawkAuth, err := node.NewHawkAuthenticator(node.HawkConfig{Keys: s.dir, NodeID: acfg.NodeID, NodeKey: s.hawk,
		Credentials: s.dir, Hawk: cfg.Sync15.hawkConfig()})
	if err != nil {
		return nil, err
	}
	s15, err := sync15Handler(s.store, hawkObserver{s.obs, hawkAuth}, cfg.Sync15, cfg.QuotaBytes, 0, cfg.Logger)
	if err != nil {
		return nil, err
	}
	weave := withTokenServer(s.dir.HTTPHandler(), withSync15(s15, api.NewHandler(storage, users)))
	return withCouch(s.store, s.obs, cfg.Logger, stop, weave)
}

// httpServer is the server on ln: handler on the platform, its heartbeat
// checking the store and the directory's raft leader, its metrics showing
// the store, raft, the directory and authentication.
func (s *Standalone) httpServer(cfg StandaloneConfig, ln net.Listener, handler http.Handler, stop chan struct{}) (*httpServer, error) {
	reg := cfg.HTTP.registry()
	if err := registerStoreMetrics(reg, s.store, filepath.Join(cfg.DataDir, "node")); err != nil {
		return nil, err
	}
	if err := registerAll(reg, newDirectoryCollector(s.dir), s.dir.Collector(), s.obs); err != nil {
		return nil, err
	}
	checks := map[string]httpserve.Checker{"store": storeWritable(s.store, cfg.DataDir), "raft_leader": raftLeaderKnown(s.dir)}
	return newHTTPServer(cfg.HTTP, ln, handler, checks, cfg.Logger, stop)
}

// URL is the server's base URL, ending in "/".
func (s *Standalone) URL() string { return s.url }

// HTTP is the server's HTTP platform server (ReloadTLS, Registry).
func (s *Standalone) HTTP() *httpserve.Server { return s.srv.srv }

// Directory is the embedded directory voter.
func (s *Standalone) Directory() *directory.Directory { return s.dir }

// Shutdown stops accepting requests, waits for in-flight ones until ctx
// ends, then closes the node store and the directory.
func (s *Standalone) Shutdown(ctx context.Context) error {
	err := errors.Join(s.srv.srv.Shutdown(ctx), s.srv.wait())
	if cerr := s.closeComponents(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (s *Standalone) closeComponents() error {
	var errs []error
	if s.dir != nil {
		errs = append(errs, s.dir.Close())
		s.dir = nil
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
		s.store = nil
	}
	return errors.Join(errs...)
}

// accountsWithStorage deletes a user's records with the account, so that a
// later account of the same name (the same e-mail) starts empty.
type accountsWithStorage struct {
	*directory.Directory
	store *node.Store
}

// DeleteUser wipes the user's records, deletes the account (which
// revokes every credential of it: tokens, cached passwords, open feeds)
// and wipes again what requests authenticated before the deletion wrote
// meanwhile. A failed first wipe leaves the account in place, so the
// client can retry.
func (a accountsWithStorage) DeleteUser(ctx context.Context, user string) error {
	if err := a.store.WipeUser(ctx, user); err != nil {
		return fmt.Errorf("testnet: deleting %s's records: %w", user, err)
	}
	if err := a.Directory.DeleteUser(ctx, user); err != nil {
		return err
	}
	if err := a.store.WipeUser(ctx, user); err != nil {
		return fmt.Errorf("testnet: deleting %s's records after the account: %w", user, err)
	}
	return nil
}

// CreateUser wipes whatever is stored under the name before the account
// is created, so a new account never sees records of an earlier one.
func (a accountsWithStorage) CreateUser(ctx context.Context, user, password, email string) error {
	return a.CreateUserWithInvite(ctx, user, password, email, "")
}

// CreateUserWithInvite is CreateUser with an invite code
// (api.InviteAccounts).
func (a accountsWithStorage) CreateUserWithInvite(ctx context.Context, user, password, email, invite string) error {
	if ok, _ := a.UserExists(ctx, user); ok {
		return api.ErrUserExists
	}
	// A name that never held anything has an empty feed: nothing to
	// clear (and its clock stays untouched).
	if seq, err := a.store.UpdateSeq(ctx, user); err != nil || seq > 0 {
		if err := a.store.WipeUser(ctx, user); err != nil {
			return fmt.Errorf("testnet: clearing %s's records: %w", user, err)
		}
	}
	return a.Directory.CreateUserWithInvite(ctx, user, password, email, invite)
}
