package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hce-sync/hce/directory/raftls"
	"github.com/hce-sync/hce/testnet"
)

const directoryUsage = `Usage:
  hce directory init-ca --ca DIR            create the directory CA (ca.pem, ca-key.pem)
  hce directory [flags]                     run a directory voter

Run "hce directory -h" for the voter's flags.
`

func runDirectory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "init-ca" {
		return runInitCA(args[1:], stdout, stderr)
	}
	if len(args) > 0 && (args[0] == "help" || args[0] == "--help") {
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
	caDir := fs.String("ca", "", "directory CA folder (from `hce directory init-ca`); this voter's certificate is issued from it into DATA/tls on first start")
	bootstrap := fs.Bool("bootstrap", false, "bootstrap a new cluster with this voter as its first member (once)")
	join := fs.String("join", "", "HTTP URL of any voter of the cluster to join")
	token := fs.String("admin-token", os.Getenv("HCE_ADMIN_TOKEN"), "admin token (admin API, join, forwarding); the same on every voter (env HCE_ADMIN_TOKEN)")
	replicas := fs.Int("replicas", testnet.DefaultReplicas, "replica set size R for new users")
	autoApprove := fs.Bool("auto-approve", false, "admit registering storage nodes without an admin's approval: for testnets only, where every node is your own (anyone can register a node)")
	downAfter := fs.Duration("down-after", testnet.DefaultVoterDownAfter, "mark a storage node down after this much heartbeat silence")
	hf := addHTTPFlags(fs, true)
	// Account policy and node admission limits (accountflags.go).
	af := addAccountFlags(fs, true, true)
	logs, err := parseWithLogger(fs, args, stderr)
	if err != nil {
		return err
	}
	logger := logs.app
	hcfg, err := hf.config(logs.access)
	if err != nil {
		return err
	}
	if *caDir == "" {
		return errors.New("--ca is required (create one with `hce directory init-ca --ca DIR`)")
	}
	if *token == "" {
		return errors.New("--admin-token (or HCE_ADMIN_TOKEN) is required")
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
	v, err := testnet.StartVoter(ctx, testnet.VoterConfig{
		ID: *id, Dir: *data, HTTPAddr: *httpAddr, PublicURL: *publicURL, RaftAddr: *raftAddr,
		P2PAddr: *p2pAddr, CA: ca, Bootstrap: *bootstrap, Join: *join, AdminToken: *token,
		AutoApprove: *autoApprove, Replicas: *replicas, DownAfter: *downAfter, Logger: logger, HTTP: hcfg,
		MaxNodeCapacity: maxNode, MaxOperatorCapacity: maxOp, Directory: accounts,
	})
	if err != nil {
		return err
	}
	reloadOnHUP(ctx, v.HTTP(), logger)
	fmt.Fprintf(stdout, "HCE directory voter %s ready at %s (raft %s, p2p %s, data %s)\n", *id, v.URL(), *raftAddr, v.PeerID(), *data)
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	return v.Shutdown(sctx)
}

func runInitCA(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("directory init-ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("ca", "./hce-ca", "folder to write ca.pem and ca-key.pem (0600) into")
	name := fs.String("name", "HCE directory CA", "CA common name")
	validity := fs.Duration("validity", testnet.DefaultCAValidity, "CA validity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ca, err := raftls.NewCA(*name, *validity)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	if err := ca.Save(*dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "directory CA written to %s\n", *dir)
	return nil
}
