package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/testnet"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", testnet.DefaultStandaloneAddr, "HTTP listen address (user API and storage API)")
	data := fs.String("data", testnet.DefaultDataDir, "data folder (directory raft state and node store)")
	public := fs.String("public-url", "", "base URL clients reach this server at (default http://<addr>/, https with --tls-cert)")
	secret := fs.String("admin-secret", "", "X-Weave-Secret value that bypasses the captcha and the registration policy")
	hf := addHTTPFlags(fs, false)
	lf := addLimitFlags(fs, false, stderr)
	sf := addStoreFlags(fs)
	// Account policy: registration, captcha, reset mail (accountflags.go).
	af := addAccountFlags(fs, false, false)
	// Sync 1.5 tokenserver, the local issuer on (fxaflags.go).
	ff := addFxAFlags(fs, true)
	replay := addReplayFlag(fs)
	logs, err := parseWithLogger(fs, args, stdout, stderr)
	if err != nil {
		return err
	}
	logger := logs.app
	hcfg, err := hf.config(logs.access)
	if err != nil {
		return err
	}
	if err := lf.validate(); err != nil {
		return err
	}
	if err := sf.validate(); err != nil {
		return err
	}
	release, err := lockDataDir(*data)
	if err != nil {
		return err
	}
	defer release()
	accounts, err := af.directory()
	if err != nil {
		return err
	}
	cfg := testnet.StandaloneConfig{
		Directory:  accounts,
		HTTP:       hcfg,
		Addr:       *addr,
		DataDir:    *data,
		PublicURL:  *public,
		QuotaBytes: lf.quotaBytes(),
		FxA:        ff.config(),
		Sync15:     sync15Config(*replay),
		Logger:     logger,
		Node:       func(c *node.Config) { lf.node(c); sf.node(c) },
		Storage:    lf.storage,
		User: func(c *api.UserConfig) {
			c.AdminSecret = *secret
		},
	}
	srv, err := testnet.StartStandalone(ctx, cfg)
	if err != nil {
		return err
	}
	reloadOnHUP(ctx, srv.HTTP(), logger)
	u := srv.URL()
	fmt.Fprintf(stdout, `HCE Weave server ready at %s (data in %s)

Register a user and write a record:
  curl -X PUT -d '{"password":"correct horse battery","email":"me@example.com"}' %suser/1.0/%s
  curl -u %s:'correct horse battery' -X PUT -d '{"payload":"hello"}' %s1.1/%s/storage/bookmarks/rec1
  curl -u %s:'correct horse battery' %s1.1/%s/storage/bookmarks?full=1

Ctrl-C stops the server; a restart finds everything.
`, u, *data, u, exampleUser, exampleUser, u, exampleUser, exampleUser, u, exampleUser)
	<-ctx.Done()
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// exampleUser is the account name of me@example.com (see api.AccountName).
var exampleUser = api.AccountName("me@example.com")
