package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/dirclient"
	"github.com/hce-sync/hce/replication"
	"github.com/hce-sync/hce/testnet"
)

// defaultDirectoryWait is --directory-wait's default.
const defaultDirectoryWait = time.Minute

// runNode runs `hce node`: a storage node that registers with the
// directory and serves the users it assigns.
func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "backup":
			return runNodeBackup(ctx, args[1:], stdout, stderr)
		case "restore":
			return runNodeRestore(ctx, args[1:], stdout, stderr)
		case "help":
			fmt.Fprint(stdout, nodeUsage)
			return nil
		}
	}
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./hce-node", "data folder (node key, Pebble store)")
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP listen address of the Weave storage API")
	publicURL := fs.String("public-url", "", "base URL clients reach this node at, registered with the directory (default http://<http address>/, https with --tls-cert)")
	p2pAddr := fs.String("p2p", testnet.DefaultListenAddr, "libp2p listen address (host:port or multiaddress)")
	dirURL := fs.String("directory", "", "HTTP URL of any directory voter (required)")
	dirWait := fs.Duration("directory-wait", defaultDirectoryWait, "how long to wait at start for the directory to answer (voters' addresses, registration) before giving up")
	operator := fs.String("operator", "", "who runs this node, e.g. an organisation or a contact address (required; replicas go to distinct operators)")
	capacity := fs.Int("capacity", testnet.DefaultCapacity, "most users this node accepts")
	heartbeat := fs.Duration("heartbeat", dirclient.DefaultHeartbeatInterval, "heartbeat interval")
	noBasic := fs.Bool("no-basic", false, "refuse HTTP Basic credentials; clients must use a directory-signed token")
	sweep := fs.Duration("sweep", replication.DefaultSweepInterval, "how often replication compares every user with the other replicas")
	blocklist := fs.String("blocklist", "", "file of libp2p peer IDs to refuse, reread every 100 ms (testnet partitions)")
	replicaWait := fs.Duration("replica-wait", testnet.DefaultReplicaWait, "how long a write waits for the other replicas to confirm it; those that did not are reported to the directory before it is acknowledged (negative: do not wait)")
	hf := addHTTPFlags(fs, true)
	lf := addLimitFlags(fs, true, stderr)
	sf := addStoreFlags(fs)
	replay := addReplayFlag(fs)
	logs, err := parseWithLogger(fs, args, stdout, stderr)
	if err != nil {
		return err
	}
	logger := logs.app
	switch {
	case *dirURL == "":
		return errors.New("--directory is required: the URL of any directory voter (e.g. --directory https://dir.example.org/)")
	case *operator == "":
		return errors.New("--operator is required: name who runs this node (replicas of a user go to distinct operators)")
	case *dirWait <= 0:
		return fmt.Errorf("--directory-wait %v: want a positive duration", *dirWait)
	}
	if err := lf.validate(); err != nil {
		return err
	}
	if err := sf.validate(); err != nil {
		return err
	}
	hcfg, err := hf.config(logs.access)
	if err != nil {
		return err
	}
	release, err := lockDataDir(*data)
	if err != nil {
		return err
	}
	defer release()
	sctx, cancel := context.WithTimeout(ctx, *dirWait)
	n, err := testnet.StartNode(sctx, testnet.NodeConfig{
		Dir: *data, HTTPAddr: *httpAddr, PublicURL: *publicURL, P2PAddr: *p2pAddr, Directory: *dirURL,
		Operator: *operator, Capacity: *capacity, HeartbeatInterval: *heartbeat, QuotaBytes: lf.quotaBytes(), DisableBasic: *noBasic, Logger: logger,
		SweepInterval: *sweep, Blocklist: *blocklist, ReplicaWait: *replicaWait, HTTP: hcfg,
		Node: func(c *node.Config) { lf.node(c); sf.node(c) }, Storage: lf.storage, Sync15: sync15Config(*replay),
	})
	cancel()
	if errors.Is(err, testnet.ErrDirectoryUnreachable) && ctx.Err() == nil {
		return fmt.Errorf("%w; check --directory (is a voter running there, is the URL right, does the firewall let this host in?) or raise --directory-wait", err)
	}
	if err != nil {
		return err
	}
	reloadOnHUP(ctx, n.HTTP(), logger)
	fmt.Fprintf(stdout, "HCE storage node %s ready at %s (data %s)\n", n.ID(), n.URL(), *data)
	<-ctx.Done()
	logger.Info("shutting down")
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer dcancel()
	return n.Shutdown(dctx)
}
