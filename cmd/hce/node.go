package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/hce-sync/hce/node/dirclient"
	"github.com/hce-sync/hce/replication"
	"github.com/hce-sync/hce/testnet"
)

// runNode runs `hce node`: a storage node that registers with the
// directory and serves the users it assigns.
func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./hce-node", "data folder (node key, Pebble store)")
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP listen address of the Weave storage API")
	publicURL := fs.String("public-url", "", "base URL clients reach this node at, registered with the directory (default http://<http address>/, https with --tls-cert)")
	p2pAddr := fs.String("p2p", testnet.DefaultListenAddr, "libp2p listen address (host:port or multiaddress)")
	dirURL := fs.String("directory", "", "HTTP URL of any directory voter (required)")
	operator := fs.String("operator", "", "who runs this node (replicas go to distinct operators)")
	capacity := fs.Int("capacity", testnet.DefaultCapacity, "most users this node accepts")
	heartbeat := fs.Duration("heartbeat", dirclient.DefaultHeartbeatInterval, "heartbeat interval")
	quota := fs.Int64("quota", 0, "per-user storage quota in bytes (0: none)")
	noBasic := fs.Bool("no-basic", false, "refuse HTTP Basic credentials; clients must use a directory-signed token")
	sweep := fs.Duration("sweep", replication.DefaultSweepInterval, "how often replication compares every user with the other replicas")
	blocklist := fs.String("blocklist", "", "file of libp2p peer IDs to refuse, reread every 100 ms (testnet partitions)")
	replicaWait := fs.Duration("replica-wait", testnet.DefaultReplicaWait, "how long a write waits for the other replicas to confirm it; those that did not are reported to the directory before it is acknowledged (negative: do not wait)")
	hf := addHTTPFlags(fs, true)
	logs, err := parseWithLogger(fs, args, stderr)
	if err != nil {
		return err
	}
	logger := logs.app
	if *dirURL == "" {
		return errors.New("--directory is required")
	}
	hcfg, err := hf.config(logs.access)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	n, err := testnet.StartNode(sctx, testnet.NodeConfig{
		Dir: *data, HTTPAddr: *httpAddr, PublicURL: *publicURL, P2PAddr: *p2pAddr, Directory: *dirURL,
		Operator: *operator, Capacity: *capacity, HeartbeatInterval: *heartbeat, QuotaBytes: *quota, DisableBasic: *noBasic, Logger: logger,
		SweepInterval: *sweep, Blocklist: *blocklist, ReplicaWait: *replicaWait, HTTP: hcfg,
	})
	cancel()
	if err != nil {
		return err
	}
	reloadOnHUP(ctx, n.HTTP(), logger)
	fmt.Fprintf(stdout, "HCE storage node %s ready at %s (data %s)\n", n.ID(), n.URL(), *data)
	<-ctx.Done()
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer dcancel()
	return n.Shutdown(dctx)
}
