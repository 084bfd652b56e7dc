package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/directory/raftls"
	"github.com/hce-sync/hce/testnet"
)

const directoryUsage = `Usage:
  hce directory [flags]                     run a directory voter: on its first start with
                                            --bootstrap (a new cluster) or --join URL (an existing one)
  hce directory init-ca --ca DIR            create the directory CA (ca.pem, ca-key.pem)
  hce directory issue-cert --ca DIR --name N --hosts H1,H2 [--out DIR]
                                            an HTTPS certificate from that CA (private deployments)
  hce directory backup --to FILE --directory URL
                                            copy a running voter's state into FILE (online)
  hce directory restore --from FILE --directory URL --yes
                                            replace the cluster's state with a backup (through the leader)
  hce directory recover --data DIR --id ID --voters ID=HOST:PORT[,...] [--dry-run]
                                            offline: rewrite a stopped voter's raft configuration after
                                            its cluster lost its quorum for good
`

func runDirectory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "init-ca" {
		return runInitCA(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "issue-cert" {
		return runIssueCert(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "backup" {
		return runDirectoryBackup(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "restore" {
		return runDirectoryRestore(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "recover" {
		return runDirectoryRecover(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "help" {
		fmt.Fprint(stdout, directoryUsage)
		return nil
	}
	fs := flag.NewFlagSet("directory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", testnet.DefaultVoterID, "voter id (raft server id; also the certificate's identity)")
	data := fs.String("data", "./hce-directory", "data folder (raft log, snapshots, signing key, TLS certificate)")
	httpAddr := fs.String("http", "127.0.0.1:8090", "HTTP listen address: user API, token endpoint, admin API, voter-to-voter endpoints")
	publicURL := fs.String("public-url", "", "base URL other voters and clients reach this voter at (default http://<http address>/, https with --tls-cert)")
	raftAddr := fs.String("raft", "127.0.0.1:8091", "raft listen address (mutual TLS)")
	p2pAddr := fs.String("p2p", testnet.DefaultListenAddr, "libp2p listen address (host:port or multiaddress); nodes learn it from GET /internal/v1/p2p")
	caDir := fs.String("ca", "", "directory CA folder (made by 'hce directory init-ca'); this voter's certificate is issued from it into DATA/tls on first start")
	bootstrap := fs.Bool("bootstrap", false, "bootstrap a new cluster with this voter as its first member (once)")
	join := fs.String("join", "", "HTTP URL of any voter of the cluster to join")
	awaitAdd := fs.Bool("await-add", false, "on a first start without --bootstrap or --join, wait until an admin adds this voter (hce admin voter add)")
	token := fs.String("admin-token", "", "admin token (admin API, join, forwarding): at least 32 characters, the same on every voter; better from the environment (HCE_ADMIN_TOKEN) than on the command line")
	replicas := fs.Int("replicas", testnet.DefaultReplicas, "replica set size R for new users")
	autoApprove := fs.Bool("auto-approve", false, "admit registering storage nodes without an admin's approval: for testnets only, where every node is your own (anyone can register a node)")
	downAfter := fs.Duration("down-after", testnet.DefaultVoterDownAfter, "mark a storage node down after this much heartbeat silence")
	blocklist := fs.String("blocklist", "", "file of peers to refuse, reread every 100 ms (testnet partitions: libp2p peer IDs, raft:<voter id>, http:<host:port>)")
	hf := addHTTPFlags(fs, true)
	// Account policy and node admission limits (accountflags.go).
	af := addAccountFlags(fs, true, true)
	// Sync 1.5 tokenserver (fxaflags.go).
	ff := addFxAFlags(fs, false)
	logs, err := parseWithLogger(fs, args, stdout, stderr)
	if err != nil {
		return err
	}
	logger := logs.app
	hcfg, err := hf.config(logs.access)
	if err != nil {
		return err
	}
	if *caDir == "" {
		return errors.New("--ca is required (create one with 'hce directory init-ca --ca DIR')")
	}
	if err := checkAdminToken(*token); err != nil {
		return err
	}
	ca, err := raftls.LoadCA(*caDir)
	if err != nil {
		return fmt.Errorf("loading CA from %s: %w", *caDir, err)
	}
	accounts, err := af.directory()
	if err != nil {
		return err
	}
	maxNode, maxOp := af.capacities()
	release, err := lockDataDir(*data)
	if err != nil {
		return err
	}
	defer release()
	v, err := testnet.StartVoter(ctx, testnet.VoterConfig{
		ID: *id, Dir: *data, HTTPAddr: *httpAddr, PublicURL: *publicURL, RaftAddr: *raftAddr,
		P2PAddr: *p2pAddr, CA: ca, Bootstrap: *bootstrap, Join: *join, AwaitAdd: *awaitAdd, AdminToken: *token,
		AutoApprove: *autoApprove, Replicas: *replicas, DownAfter: *downAfter, Logger: logger, HTTP: hcfg, Blocklist: *blocklist,
		MaxNodeCapacity: maxNode, MaxOperatorCapacity: maxOp, Directory: accounts, FxA: ff.config(),
	})
	if err != nil {
		return voterStartError(err, *data)
	}
	reloadOnHUP(ctx, v.HTTP(), logger)
	fmt.Fprintf(stdout, "HCE directory voter %s ready at %s (raft %s, p2p %s, data %s)\n", *id, v.URL(), *raftAddr, v.PeerID(), *data)
	var fatal error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case fatal = <-v.Directory().Fatal():
		logger.Error("stopping: this voter cannot go on", "err", fatal)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	return errors.Join(fatal, v.Shutdown(sctx))
}

func runInitCA(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("directory init-ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("ca", "./hce-ca", "folder to write ca.pem and ca-key.pem (0600) into")
	name := fs.String("name", "HCE directory CA", "CA common name")
	validity := fs.Duration("validity", testnet.DefaultCAValidity, "CA validity")
	ifMissing := fs.Bool("if-missing", false, "keep an existing CA in the folder and succeed (scripts, container init); without it an existing CA is an error")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	if _, err := raftls.LoadCA(*dir); err == nil && *ifMissing {
		fmt.Fprintf(stdout, "directory CA kept in %s\n", *dir)
		return nil
	}
	ca, err := raftls.NewCA(*name, *validity)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	if err := ca.Save(*dir); errors.Is(err, raftls.ErrCAExists) {
		return fmt.Errorf("%s already holds a CA; voters' certificates come from it, so it is kept (--if-missing accepts that)", *dir)
	} else if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "directory CA written to %s\n", *dir)
	return nil
}

// minAdminToken is the shortest admin token a voter accepts.
const minAdminToken = 32

// checkAdminToken refuses a missing or weak admin token.
func checkAdminToken(token string) error {
	switch {
	case token == "":
		return errors.New("--admin-token (or HCE_ADMIN_TOKEN) is required: the same secret of at least 32 characters on every voter (e.g. openssl rand -hex 32)")
	case len(token) < minAdminToken:
		return fmt.Errorf("the admin token has %d characters, fewer than %d: it guards the admin API and the voters' own calls; make a strong one (e.g. openssl rand -hex 32)", len(token), minAdminToken)
	}
	return nil
}

// voterStartError turns the directory's first-start errors into the
// operator's fix.
func voterStartError(err error, data string) error {
	switch {
	case errors.Is(err, directory.ErrNoCluster):
		return fmt.Errorf("%s holds no cluster state yet: give --bootstrap to found a new cluster with this voter, --join URL of a voter of an existing one, or --await-add to wait for hce admin voter add", data)
	case errors.Is(err, directory.ErrJoinRefused):
		return fmt.Errorf("%w: give this voter the cluster's admin token (--admin-token or HCE_ADMIN_TOKEN, the same on every voter)", err)
	}
	return err
}
