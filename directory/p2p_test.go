package directory

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/node/dirclient"
)

func newTestP2PHost(t *testing.T, key crypto.PrivKey) host.Host {
	t.Helper()
	if key == nil {
		var err error
		if key, _, err = crypto.GenerateEd25519Key(nil); err != nil {
			t.Fatal(err)
		}
	}
	h, err := p2p.NewHost(context.Background(), p2p.Config{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newDirClient(t *testing.T, h, voter host.Host) *dirclient.Client {
	t.Helper()
	c, err := dirclient.New(dirclient.Config{
		Host:      h,
		Directory: []peer.AddrInfo{{ID: voter.ID(), Addrs: voter.Addrs()}},
		Logger:    testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestServeP2P(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig(t, t.TempDir())
	cfg.AutoApprove = true
	d := openDir(t, cfg)
	voter := newTestP2PHost(t, nil)
	d.ServeP2P(voter)

	// A storage node with its persistent identity registers (signed with
	// the same key) and is approved automatically.
	nodeKey, nodeID, err := p2p.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	edKey, err := p2p.Ed25519Key(nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	body, sig, err := SignRegistration(edKey, Registration{
		BaseURL: "http://node1.example/", Operator: "op1", Capacity: 10,
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	info, err := d.RegisterNode(ctx, body, sig)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != nodeID.String() {
		t.Fatalf("registered id %s, libp2p peer id %s", info.ID, nodeID)
	}
	if err := d.CreateUser(ctx, "alice", "correct horse", ""); err != nil {
		t.Fatal(err)
	}

	nh := newTestP2PHost(t, nodeKey)
	c := newDirClient(t, nh, voter)

	// Basic credentials, checked by the directory over libp2p.
	if err := c.CheckPassword(ctx, "alice", "correct horse"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	for _, tc := range []struct{ user, pw string }{{"alice", "wrong"}, {"bob", "correct horse"}} {
		if err := c.CheckPassword(ctx, tc.user, tc.pw); !errors.Is(err, api.ErrUnauthorized) {
			t.Fatalf("%s/%s: %v, want unauthorized", tc.user, tc.pw, err)
		}
	}

	// Keys: the node's copy matches the directory's published keys, and a
	// token the directory issues for this node verifies offline.
	waitCond(t, "a published key", func() bool { return len(d.PublicKeys()) > 0 })
	if err := c.RefreshKeys(ctx); err != nil {
		t.Fatal(err)
	}
	want := d.PublicKeys()
	for kid, k := range want {
		got, ok := c.Keys().PublicKey(kid)
		if !ok || !got.Equal(k) {
			t.Fatalf("key %s: got %x, want %x", kid, got, k)
		}
	}
	tok, _, _, err := d.IssueToken(ctx, "alice", "correct horse", nodeID.String())
	if err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	if cl, err := api.VerifyToken(tok, c.Keys().PublicKey, nodeID.String(), time.Now()); err != nil || cl.Sub != "alice" {
		t.Fatalf("VerifyToken with fetched keys: %+v %v", cl, err)
	}

	// Heartbeats reach the leader under the node's id.
	c2, err := dirclient.New(dirclient.Config{
		Host: nh, Directory: []peer.AddrInfo{{ID: voter.ID()}}, Load: func() int { return 3 },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Heartbeat(ctx); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	d.hbMu.Lock()
	hb, ok := d.hb[nodeID.String()]
	d.hbMu.Unlock()
	if !ok || hb.load != 3 {
		t.Fatalf("heartbeat recorded: %v %+v", ok, hb)
	}

	// A peer that is not a registered node may fetch the public keys but
	// neither check passwords nor send heartbeats.
	stranger := newDirClient(t, newTestP2PHost(t, nil), voter)
	if err := stranger.RefreshKeys(ctx); err != nil {
		t.Fatalf("stranger keys: %v", err)
	}
	err = stranger.CheckPassword(ctx, "alice", "correct horse")
	if !errors.Is(err, api.ErrUnavailable) || !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("stranger password check: %v", err)
	}
	if err := stranger.Heartbeat(ctx); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("stranger heartbeat: %v", err)
	}

	// A retired node is refused too.
	if err := d.RetireNode(ctx, nodeID.String()); err != nil {
		t.Fatalf("RetireNode: %v", err)
	}
	if err := c.CheckPassword(ctx, "alice", "correct horse"); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("retired node password check: %v", err)
	}
	if err := c2.Heartbeat(ctx); !p2p.IsCode(err, dirproto.CodeRetired) {
		t.Fatalf("retired node heartbeat: %v", err)
	}
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
