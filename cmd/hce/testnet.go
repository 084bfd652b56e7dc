package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hce-sync/hce/testnet"
)

const testnetUsage = `Usage:
  hce testnet up --dir DIR [--directories 3] [--nodes 4] [--operators 2] [--replicas 2] [--tls]
                                         run a local federation in the foreground (Ctrl-C stops it);
                                         on a stopped testnet's DIR, start it again as it was
  hce testnet status --dir DIR           voters, leader, nodes and their states
  hce testnet kill --dir DIR <id>        SIGKILL a voter (d1..) or node (n1.. or its peer ID)
  hce testnet restart --dir DIR <id>     start a killed voter or node again (same data and ports)
  hce testnet drain --dir DIR <node-id>  drain a node
  hce testnet partition --dir DIR n1,n2 n3,n4
                                         cut every link between members of different groups:
                                         node-node and node-voter (libp2p), voter-voter (raft,
                                         libp2p, HTTP); when a group names a node, a node in no
                                         group is cut off from all other nodes. Examples:
                                           partition n1,n2 n3,n4           split the nodes
                                           partition d1 d2,d3,n1,n2,n3,n4  isolate voter d1
                                           partition n1 d1,d2,d3,n2,n3,n4  cut n1 from the directory
  hce testnet cut --dir DIR n1 d1,d2,d3  cut every link between the two lists and no other
                                         (here: n1 loses the directory, keeps the other nodes)
  hce testnet heal --dir DIR             end the partition or cut
  hce testnet chaos --dir DIR [--duration 10m] [--seed N] [--quiet]
                                         randomized fault test: Sync-like clients write, read and
                                         register while voters (the leader too) and nodes are killed,
                                         restarted and partitioned from a seed; then everything is
                                         healed and the checks print (lost acknowledged records,
                                         reads missing acknowledged writes, registrations, convergence)
                                         with the schedule and the seed to replay

DIR/testnet.json describes the running testnet (URLs, PIDs, data folders, admin token).
`

func runTestnet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, testnetUsage)
		return errors.New("no testnet command given")
	}
	switch args[0] {
	case "up":
		return runTestnetUp(ctx, args[1:], stdout, stderr)
	case "status", "kill", "restart", "drain":
		return runTestnetAct(ctx, args[0], args[1:], stdout, stderr)
	case "partition", "cut", "heal":
		return runTestnetPartition(args[0], args[1:], stdout, stderr)
	case "chaos":
		return runTestnetChaos(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, testnetUsage)
		return nil
	}
	fmt.Fprint(stderr, testnetUsage)
	return fmt.Errorf("unknown testnet command %q", args[0])
}

func runTestnetUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("testnet up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "./hce-testnet", "folder for the CA, data folders, logs (DIR/logs) and testnet.json; a stopped testnet's folder resumes that testnet")
	dirs := fs.Int("directories", testnet.DefaultDirectories, "directory voters")
	nodes := fs.Int("nodes", testnet.DefaultNodes, "storage nodes")
	ops := fs.Int("operators", testnet.DefaultOperators, "operators the nodes are spread over (op1..opK)")
	replicas := fs.Int("replicas", testnet.DefaultReplicas, "replica set size R")
	downAfter := fs.Duration("down-after", testnet.DefaultDownAfter, "mark a node down after this much heartbeat silence")
	heartbeat := fs.Duration("heartbeat", testnet.DefaultHeartbeat, "nodes' heartbeat interval")
	level := fs.String("log-level", testnet.DefaultChildLogLevel, "log level of the voters and nodes (their logs go to DIR/logs)")
	cacheMiB := fs.Int64("block-cache-mib", 0, "each node's Pebble block cache, MiB (0: hce node's default)")
	memtableMiB := fs.Int64("memtable-mib", 0, "each node's Pebble memtable, MiB (0: hce node's default)")
	maxComp := fs.Int("max-compactions", 0, "each node's most Pebble compactions at once (0: hce node's default)")
	useTLS := fs.Bool("tls", false, "serve every voter and node over HTTPS, certificates from DIR/"+testnet.HTTPSCADir+" (trust DIR/"+testnet.HTTPSCADir+"/ca.pem)")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	begin := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	var tn *testnet.Testnet
	resumed := false
	if _, serr := os.Stat(filepath.Join(*dir, testnet.ManifestFile)); serr == nil {
		// A stopped testnet's folder: start its members again as they
		// were (the size and timing flags were fixed when it was made).
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "dir" && f.Name != "config" {
				fmt.Fprintf(stderr, "hce testnet up: --%s ignored: resuming the testnet in %s as it was made\n", f.Name, *dir)
			}
		})
		tn, err = testnet.Resume(sctx, *dir, bin)
		resumed = true
	} else {
		tn, err = testnet.Start(sctx, testnet.Config{Dir: *dir, Directories: *dirs, Nodes: *nodes, Operators: *ops,
			Replicas: *replicas, Mode: testnet.ChildProcess, Binary: bin, DownAfter: *downAfter, Heartbeat: *heartbeat,
			ChildLogLevel: *level, TLS: *useTLS,
			Store: testnet.StoreSizing{BlockCacheMiB: *cacheMiB, MemTableMiB: *memtableMiB, MaxCompactions: *maxComp}})
	}
	cancel()
	if err != nil {
		return err
	}
	took := time.Since(begin)
	leaderID, leaderURL := tn.Leader()
	what := "ready"
	if resumed {
		what = "resumed"
	}
	fmt.Fprintf(stdout, "HCE testnet %s in %v: %s\n\n", what, took.Round(time.Millisecond), filepath.Join(tn.Dir(), testnet.ManifestFile))
	st, _ := tn.Status(ctx)
	printStatus(stdout, st)
	if leaderURL == "" {
		leaderURL = tn.Voters()[0].HTTP
	}
	d := tn.Dir()
	if *useTLS {
		fmt.Fprintf(stdout, "\nHTTPS: trust %s (curl --cacert, or SSL_CERT_FILE for hce client and hce admin)\n",
			filepath.Join(d, testnet.HTTPSCADir, "ca.pem"))
	}
	fmt.Fprintf(stdout, `
Try (leader %s; any voter takes users):
  curl -X PUT -d '{"password":"correct horse battery","email":"me@example.com"}' %suser/1.0/%s
  curl %suser/1.0/%s/node/weave
  curl -u %s:'correct horse battery' -X PUT -d '{"payload":"hello"}' <node/weave URL>1.1/%s/storage/bookmarks/rec1
  hce admin --directory %s --token %s user %s
  hce testnet status --dir %s
  hce testnet kill --dir %s <id from node/weave or n1..>
  hce testnet restart --dir %s <id>
  hce testnet partition --dir %s %s     (then: hce testnet heal --dir %s)
  hce testnet chaos --dir %s --duration 5m               (randomized fault test; prints the seed)

Ctrl-C stops every voter and node.
`, leaderID, leaderURL, exampleUser, leaderURL, exampleUser, exampleUser, exampleUser,
		leaderURL, tn.AdminToken(), exampleUser, d, d, d, d, isolateFirst(tn), d, d)
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping the testnet")
	if err := tn.Close(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "testnet stopped")
	return nil
}

// isolateFirst is the partition argument that cuts the first voter off
// from every other member ("d1 d2,d3,n1,n2,n3,n4").
func isolateFirst(tn *testnet.Testnet) string {
	var rest []string
	vs := tn.Voters()
	for _, v := range vs[1:] {
		rest = append(rest, v.ID)
	}
	for _, n := range tn.Nodes() {
		rest = append(rest, n.Name)
	}
	return vs[0].ID + " " + strings.Join(rest, ",")
}

func runTestnetAct(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("testnet "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "./hce-testnet", "folder of the running testnet (holds testnet.json)")
	// The id may come before or after the flags: kill n1 --dir DIR.
	rest, err := parseFlags(fs, args, parseOpts{mode: interspersed, stdout: stdout, usage: testnetUsage})
	if err != nil {
		return err
	}
	if (cmd == "status") != (len(rest) == 0) || len(rest) > 1 {
		fmt.Fprint(stderr, testnetUsage)
		return fmt.Errorf("testnet %s: wrong arguments", cmd)
	}
	tn, err := testnet.Attach(*dir)
	if err != nil {
		return err
	}
	defer tn.Close()
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	switch cmd {
	case "status":
		st, err := tn.Status(actx)
		printStatus(stdout, st)
		return err
	case "kill":
		if err := tn.Kill(rest[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "killed %s\n", rest[0])
	case "restart":
		if err := tn.Restart(actx, rest[0]); err != nil {
			return err
		}
		for _, v := range tn.Voters() {
			if v.ID == rest[0] {
				fmt.Fprintf(stdout, "restarted %s (pid %d) at %s\n", v.ID, v.PID, v.HTTP)
			}
		}
		for _, n := range tn.Nodes() {
			if n.ID == rest[0] || n.Name == rest[0] {
				fmt.Fprintf(stdout, "restarted %s (pid %d) at %s\n", n.Name, n.PID, n.HTTP)
			}
		}
	case "drain":
		if err := tn.Drain(actx, rest[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "draining %s\n", rest[0])
	}
	return nil
}

// runTestnetPartition runs `hce testnet partition|cut|heal`.
func runTestnetPartition(cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("testnet "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "./hce-testnet", "folder of the running testnet (holds testnet.json)")
	groups, err := parseFlags(fs, args, parseOpts{mode: interspersed, stdout: stdout, usage: testnetUsage})
	if err != nil {
		return err
	}
	if (cmd == "heal") != (len(groups) == 0) || (cmd == "cut" && len(groups) != 2) {
		fmt.Fprint(stderr, testnetUsage)
		return fmt.Errorf("testnet %s: wrong arguments", cmd)
	}
	tn, err := testnet.Attach(*dir)
	if err != nil {
		return err
	}
	defer tn.Close()
	if cmd == "heal" {
		if err := tn.Heal(); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "healed: every voter and node reaches every other again")
		return nil
	}
	var gs [][]string
	for _, g := range groups {
		gs = append(gs, strings.Split(g, ","))
	}
	if cmd == "cut" {
		if err := tn.Cut(gs[0], gs[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "cut: %s -/- %s\n", groups[0], groups[1])
		return nil
	}
	if err := tn.Partition(gs...); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "partitioned: %s\n", strings.Join(groups, " | "))
	return nil
}

// printStatus writes the voters and nodes as two tables.
func printStatus(w io.Writer, st testnet.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	run := func(b bool, pid int) string {
		if b {
			return fmt.Sprint(pid)
		}
		return "dead"
	}
	fmt.Fprintln(tw, "VOTER\tHTTP\tRAFT\tPID\tROLE")
	for _, v := range st.Voters {
		role := strings.ToLower(v.Suffrage)
		if v.ID == st.Leader {
			role = "leader"
		}
		if role == "" {
			role = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.ID, v.HTTP, v.Raft, run(v.Running, v.PID), role)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "NODE\tOPERATOR\tHTTP\tPID\tSTATE\tUSERS\tID")
	for _, n := range st.Nodes {
		state := n.State
		if state == "" {
			state = "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", n.Name, n.Operator, n.HTTP, run(n.Running, n.PID), state, n.Load, n.ID)
	}
	tw.Flush()
}
