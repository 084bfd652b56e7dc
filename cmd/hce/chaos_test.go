package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hce-sync/hce/testnet"
)

// chaosNet starts a child-process testnet for the chaos tests: 3 voters,
// 4 nodes, R = 2, nodes down after 2 s of silence, 250 ms heartbeats
// (childNet: closed when the test ends, log tails on failure).
func chaosNet(t *testing.T, ctx context.Context) *testnet.Testnet {
	t.Helper()
	return childNet(t, ctx, testnet.Config{Binary: hceBinary(t), DownAfter: 2 * time.Second, Heartbeat: 250 * time.Millisecond})
}

// childNet starts a child-process testnet with cfg (Mode and, when empty,
// Dir filled in), trying again when a start lost a race for a port. It is
// closed when the test ends; on failure the tail of each member's log is
// logged.
func childNet(t *testing.T, ctx context.Context, cfg testnet.Config) *testnet.Testnet {
	t.Helper()
	cfg.Mode = testnet.ChildProcess
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	var tn *testnet.Testnet
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		tn, err = testnet.Start(ctx, cfg)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) && !strings.Contains(err.Error(), "address already in use") {
			break
		}
		t.Logf("start attempt %d: %v", attempt, err)
		cfg.Dir = t.TempDir()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tn.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(tn.Dir(), "logs", "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("%s:\n%s", filepath.Base(l), b)
			}
		}
	})
	return tn
}

// TestChaosQuiet runs `hce testnet chaos --quiet` against a running
// testnet: the clients write, read and register with no fault injected,
// and every check must pass. It validates the checker (a checker that
// reports a failure here reports false positives) and the command.
func TestChaosQuiet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := chaosNet(t, ctx)
	var out bytes.Buffer
	err := run(ctx, []string{"testnet", "chaos", "--dir", tn.Dir(), "--quiet", "--duration", "8s", "--seed", "3",
		"--settle", "4s", "--recover", "30s"}, &out, &out)
	t.Logf("hce testnet chaos --quiet:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"seed 3", "no faults", "[PASS] acknowledged records", "[PASS] reads through node/weave",
		"[PASS] registrations", "[PASS] convergence", "[PASS] recovery", "result: PASS"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), " 0 acknowledged for") || strings.Contains(out.String(), "registrations: 0 ") {
		t.Fatal("the clients got nothing acknowledged")
	}
}

// TestNemesis is the randomized fault test in CI: a child-process
// testnet, four Sync-like writers and readers and a registration prober,
// and 35 s of faults from seed 1 (leader and voter kills, node kills,
// partitions of nodes from nodes, nodes from voters and voters from
// voters), then heal, restart, converge and check. The schedule, the
// checks and the seed are in the test log.
func TestNemesis(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tn := chaosNet(t, ctx)
	res, err := testnet.RunNemesis(ctx, tn, testnet.NemesisConfig{Seed: 1, Duration: 35 * time.Second,
		MinGap: time.Second, MaxGap: 4 * time.Second, Settle: 3 * time.Second, Recover: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res.Print(&out)
	t.Logf("nemesis:\n%s", out.String())
	if res.Acked == 0 || res.Registered == 0 || res.Reads == 0 {
		t.Fatalf("the clients did nothing: %d records acknowledged, %d registrations, %d reads", res.Acked, res.Registered, res.Reads)
	}
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
}
