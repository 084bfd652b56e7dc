package directory

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/testkit"
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

// dirCaller makes raw calls of the directory protocols (api/dirproto)
// from a peer's host to one voter, as a storage node's client would.
type dirCaller struct {
	h, voter host.Host
	rpc      p2p.RPCConfig
}

func newDirCaller(t *testing.T, h, voter host.Host) *dirCaller {
	h.Peerstore().AddAddrs(voter.ID(), voter.Addrs(), peerstore.PermanentAddrTTL)
	return &dirCaller{h: h, voter: voter,
		rpc: p2p.RPCConfig{MaxFrameSize: p2p.MaxMessageSize, Logger: testkit.Logger(t, slog.LevelWarn)}}
}

// call sends req over proto and decodes the answer into resp (strictly,
// validated: see p2p.Unmarshal).
func (c *dirCaller) call(ctx context.Context, proto protocol.ID, req, resp any) error {
	return p2p.CallJSON(ctx, c.rpc, c.h, c.voter.ID(), proto, req, resp)
}

func (c *dirCaller) checkPassword(ctx context.Context, user, password string) (bool, error) {
	var resp dirproto.CheckPasswordResponse
	err := c.call(ctx, dirproto.ProtoCheckPassword, dirproto.CheckPasswordRequest{User: user, Password: password}, &resp)
	return resp.OK, err
}

func (c *dirCaller) heartbeat(ctx context.Context, load int) error {
	return c.call(ctx, dirproto.ProtoHeartbeat, dirproto.HeartbeatRequest{Load: load, Time: time.Now().UnixMilli()}, nil)
}

func (c *dirCaller) keys(ctx context.Context) (map[string][]byte, error) {
	var resp dirproto.KeysResponse
	err := c.call(ctx, dirproto.ProtoKeys, nil, &resp)
	return resp.Keys, err
}

func TestServeP2P(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig(t, t.TempDir())
	cfg.Nodes.AutoApprove = true
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

	c := newDirCaller(t, newTestP2PHost(t, nodeKey), voter)

	// Basic credentials, checked by the directory over libp2p.
	if ok, err := c.checkPassword(ctx, "alice", "correct horse"); err != nil || !ok {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, err := c.checkPassword(ctx, "alice", "wrong"); err != nil || ok {
		t.Fatalf("wrong password: %v %v, want refused", ok, err)
	}
	// A user the node does not hold (here: an unknown one) is not its
	// business.
	if _, err := c.checkPassword(ctx, "bob", "correct horse"); !p2p.IsCode(err, p2p.CodeForbidden) {
		t.Fatalf("unknown user: %v, want forbidden", err)
	}

	// Keys: the node's copy matches the directory's published keys, and a
	// token the directory issues for this node verifies offline with it.
	testkit.WaitFor(t, 10*time.Second, "a published key", func() bool { return len(d.PublicKeys()) > 0 })
	got, err := c.keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := d.PublicKeys()
	if len(got) != len(want) {
		t.Fatalf("%d keys over libp2p, %d published", len(got), len(want))
	}
	for kid, k := range want {
		if !k.Equal(ed25519.PublicKey(got[kid])) {
			t.Fatalf("key %s: got %x, want %x", kid, got[kid], k)
		}
	}
	tok, _, _, err := d.IssueToken(ctx, "alice", "correct horse", nodeID.String())
	if err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	fetched := func(kid string) (ed25519.PublicKey, bool) { k, ok := got[kid]; return k, ok }
	if cl, err := api.VerifyToken(tok, fetched, nodeID.String(), time.Now()); err != nil || cl.Sub != "alice" {
		t.Fatalf("VerifyToken with fetched keys: %+v %v", cl, err)
	}

	// Heartbeats reach the leader under the node's id.
	if err := c.heartbeat(ctx, 3); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if hb := d.beats.lastBeat(nodeID.String()); hb.at.IsZero() || hb.req.Load != 3 {
		t.Fatalf("heartbeat recorded: %+v", hb)
	}

	// A peer that is not a registered node may fetch the public keys but
	// neither check passwords nor send heartbeats.
	stranger := newDirCaller(t, newTestP2PHost(t, nil), voter)
	if _, err := stranger.keys(ctx); err != nil {
		t.Fatalf("stranger keys: %v", err)
	}
	if _, err := stranger.checkPassword(ctx, "alice", "correct horse"); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("stranger password check: %v", err)
	}
	if err := stranger.heartbeat(ctx, 0); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("stranger heartbeat: %v", err)
	}

	// A retired node is refused too.
	if err := d.RetireNode(ctx, nodeID.String()); err != nil {
		t.Fatalf("RetireNode: %v", err)
	}
	if _, err := c.checkPassword(ctx, "alice", "correct horse"); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("retired node password check: %v", err)
	}
	if err := c.heartbeat(ctx, 3); !p2p.IsCode(err, dirproto.CodeRetired) {
		t.Fatalf("retired node heartbeat: %v", err)
	}
}
