package load_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/testnet"
	"github.com/hce-sync/hce/testnet/load"
	"github.com/hce-sync/hce/testnet/load/mix"
)

// TestFederation runs weave-mix-v1 against an in-process testnet (one
// voter, two nodes, two replicas per user): users register at the
// directory and follow node/weave to their node, the directory gets its
// background requests (node/weave, tokens, registrations), and
// replication lag probes write on each user's primary and see the record
// on the other replica.
func TestFederation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tn, err := testnet.Start(ctx, testnet.Config{Dir: t.TempDir(), Directories: 1, Nodes: 2, Replicas: 2,
		Directory: func(c *directory.Config) { cheapHash(c) }})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	man := tn.Manifest()
	var voters, nodes []string
	for _, v := range man.Directories {
		voters = append(voters, v.HTTP)
	}
	for _, n := range man.Nodes {
		nodes = append(nodes, n.HTTP)
	}
	m, err := mix.Builtin("weave-mix-v1")
	if err != nil {
		t.Fatal(err)
	}
	// Ten times the model's directory traffic, so a short run sees it.
	for i := range m.Background {
		m.Background[i].Weight *= 10
	}
	e, err := load.New(load.EngineConfig{
		Target: load.Target{Kind: "testnet", UserURLs: voters, AdminURL: voters[0], AdminToken: man.AdminToken, Nodes: nodes},
		Mix:    m, Profiles: 4, PrefillScale: 0.01, LagEvery: 100 * time.Millisecond, Logger: testkit.Logger(t, slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := e.Run(ctx, load.Phase{Label: "fed", Rate: 150, Arrival: load.ArrivalPoisson, Duration: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests, p50 %.1f ms p99 %.1f ms, errors %v", st.Requests, st.Latency.P50, st.Latency.P99, st.ErrorKinds)
	if st.Errors > 0 {
		t.Fatalf("errors: %v", st.ErrorKinds)
	}
	dirOps := 0
	for _, o := range st.Ops {
		if o.Name == "node-weave" || o.Name == "token" || o.Name == "register" {
			dirOps += int(o.Requests)
		}
	}
	if dirOps == 0 {
		t.Errorf("no directory requests in %+v", st.Ops)
	}
	lag := e.Result().Replication
	if lag == nil || lag.Seen == 0 || lag.Lost > 0 || lag.Failed > 0 {
		t.Fatalf("replication probes: %+v", lag)
	}
	t.Logf("replication: %d probes seen, lag p50 %.1f ms max %.1f ms, write p50 %.1f ms", lag.Seen, lag.Lag.P50, lag.Lag.Max, lag.Write.P50)
	if n, err := e.Cleanup(ctx); err != nil || n < 4 {
		t.Fatalf("cleanup: %d, %v", n, err)
	}
}
