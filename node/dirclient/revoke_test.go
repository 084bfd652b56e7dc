package dirclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/p2p/p2ptest"
	"github.com/hce-sync/hce/node"
)

// v11Voter is a fake voter speaking the 1.1 protocols: checkpw records
// the client address and throttles user "slow"; assignment answers the
// users in creds (forbidden for the others) with their credential state.
type v11Voter struct {
	*fakeVoter
	mu    sync.Mutex
	addr  string
	creds map[string]dirproto.Credentials
}

func newV11Voter(t *testing.T) *v11Voter {
	v := &v11Voter{fakeVoter: newFakeVoter(t, true), creds: map[string]dirproto.Credentials{}}
	p2p.Serve(v.h, dirproto.ProtoCheckPassword11, p2p.HandleJSON(func(_ context.Context, _ peer.ID, r dirproto.CheckPasswordRequest) (dirproto.CheckPasswordResponse, error) {
		v.count(dirproto.ProtoCheckPassword11)
		v.mu.Lock()
		v.addr = r.Addr
		v.mu.Unlock()
		switch r.User {
		case "slow":
			return dirproto.CheckPasswordResponse{RetryAfterMS: 2500}, nil
		case "stranger":
			return dirproto.CheckPasswordResponse{}, p2p.Errorf(p2p.CodeForbidden, "not yours")
		}
		return dirproto.CheckPasswordResponse{OK: r.User == "alice" && r.Password == "s3cret"}, nil
	}), p2p.RPCConfig{})
	p2p.Serve(v.h, dirproto.ProtoAssignment11, p2p.HandleJSON(func(_ context.Context, from peer.ID, r dirproto.AssignmentRequest) (dirproto.AssignmentResponse, error) {
		v.count(dirproto.ProtoAssignment11)
		v.mu.Lock()
		defer v.mu.Unlock()
		c, ok := v.creds[r.User]
		if !ok {
			return dirproto.AssignmentResponse{}, p2p.Errorf(p2p.CodeForbidden, "not yours")
		}
		return dirproto.AssignmentResponse{Exists: true, Creds: &c,
			Nodes: []dirproto.AssignedNode{{ID: from.String(), PeerID: from.String(), URL: "http://n/"}}}, nil
	}), p2p.RPCConfig{})
	return v
}

func (v *v11Voter) setCreds(user string, c dirproto.Credentials) {
	v.mu.Lock()
	v.creds[user] = c
	v.mu.Unlock()
}

// TestCheckPasswordV11: the client address goes to the directory, a
// back-off comes back as a 429 with its wait, and a user the directory
// does not let this node check is a 401 (the reassignment flow), not a
// 503.
func TestCheckPasswordV11(t *testing.T) {
	v := newV11Voter(t)
	c, err := New(Config{Host: p2ptest.NewHost(t, p2p.Config{}), Directory: []peer.AddrInfo{v.info()}, CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := api.WithClientAddr(context.Background(), "192.0.2.44")
	if err := c.CheckPassword(ctx, "alice", "s3cret"); err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	addr := v.addr
	v.mu.Unlock()
	if addr != "192.0.2.44" || v.calls(dirproto.ProtoCheckPassword) != 0 {
		t.Fatalf("address %q sent, %d version 1.0 calls", addr, v.calls(dirproto.ProtoCheckPassword))
	}
	err = c.CheckPassword(ctx, "slow", "x")
	if te, ok := api.ThrottleHint(err); !ok || te.After != 2500*time.Millisecond || errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("throttled: %v", err)
	}
	if err := c.CheckPassword(ctx, "stranger", "x"); !errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("forbidden: %v", err)
	}
}

// TestCredentials: the credential state comes with the cached replica
// set (so a change is seen within MembershipTTL without any event), an
// account event makes it effective at once even while the cached set is
// stale, and a user the directory refuses to describe does not exist
// for this node (Serves false, no error).
func TestCredentials(t *testing.T) {
	v := newV11Voter(t)
	c, err := New(Config{Host: p2ptest.NewHost(t, p2p.Config{}), Directory: []peer.AddrInfo{v.info()},
		CallTimeout: 2 * time.Second, MembershipTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v.setCreds("alice", dirproto.Credentials{ChangedAt: 100, Gen: 7})
	st, err := c.Credentials(ctx, "alice")
	if err != nil || st != (api.CredentialState{Exists: true, ChangedAt: 100, Gen: 7}) {
		t.Fatalf("Credentials = %+v, %v", st, err)
	}
	// The directory changes; the cached set is an hour old at most here.
	v.setCreds("alice", dirproto.Credentials{ChangedAt: 200, Gen: 9})
	if st, _ := c.Credentials(ctx, "alice"); st.ChangedAt != 100 {
		t.Fatalf("cache not used: %+v", st)
	}
	// An event: effective at once, and the cached set is dropped.
	c.NoteAccountEvent(dirproto.AccountEvent{User: "alice", ChangedAt: 200, Gen: 9})
	if st, _ := c.Credentials(ctx, "alice"); st != (api.CredentialState{Exists: true, ChangedAt: 200, Gen: 9}) {
		t.Fatalf("after the event: %+v", st)
	}
	// An event older than the directory's answer does not undo it.
	c.NoteAccountEvent(dirproto.AccountEvent{User: "alice", ChangedAt: 150, Gen: 8})
	if st, _ := c.Credentials(ctx, "alice"); st.ChangedAt != 200 || st.Gen != 9 {
		t.Fatalf("older event won: %+v", st)
	}
	// A deletion's floor holds tokens of the old account back.
	c.NoteAccountEvent(dirproto.AccountEvent{User: "alice", Deleted: true, ChangedAt: 300})
	if st, _ := c.Credentials(ctx, "alice"); st.ChangedAt != 300 {
		t.Fatalf("after a deletion event: %+v", st)
	}
	// Not this node's user.
	if st, err := c.Credentials(ctx, "bob"); err != nil || st.Exists {
		t.Fatalf("bob: %+v %v", st, err)
	}
	if ok, err := c.Serves(ctx, "bob"); ok || err != nil {
		t.Fatalf("Serves(bob) = %v %v", ok, err)
	}
}

// TestKeyMissRefresh: a token naming a key published since the last
// fetch makes the client fetch the keys at once; another unknown key id
// within KeyMissRefresh costs no call.
func TestKeyMissRefresh(t *testing.T) {
	v := newFakeVoter(t, true)
	k1, k2 := make([]byte, ed25519.PublicKeySize), make([]byte, ed25519.PublicKeySize)
	k1[0], k2[0] = 1, 2
	v.setKeys(map[string][]byte{"k1": k1})
	c, err := New(Config{Host: p2ptest.NewHost(t, p2p.Config{}), Directory: []peer.AddrInfo{v.info()},
		CallTimeout: 2 * time.Second, KeyMissRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.RefreshKeys(ctx); err != nil {
		t.Fatal(err)
	}
	v.setKeys(map[string][]byte{"k1": k1, "k2": k2})
	r, ok := c.Keys().(node.KeyRefresher)
	if !ok {
		t.Fatal("Keys is not a KeyRefresher")
	}
	before := v.calls(dirproto.ProtoKeys)
	if !r.RefreshKey(ctx, "k2") {
		t.Fatal("k2 not learnt")
	}
	if r.RefreshKey(ctx, "k3") || !r.RefreshKey(ctx, "k1") {
		t.Fatal("unknown kid known, or known kid unknown")
	}
	if n := v.calls(dirproto.ProtoKeys) - before; n != 1 {
		t.Fatalf("%d key fetches, want 1 (rate-limited)", n)
	}
}
