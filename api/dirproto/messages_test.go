package dirproto

import (
	"bytes"
	"context"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api/p2p"
)

func TestAccountEventDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want AccountEvent
		ok   bool
	}{
		{"password change", `{"user":"alice","deleted":false}`, AccountEvent{User: "alice"}, true},
		{"deletion", `{"user":"alice","deleted":true}`, AccountEvent{User: "alice", Deleted: true}, true},
		{"deleted omitted", `{"user":"bob"}`, AccountEvent{User: "bob"}, true},
		{"longest user", `{"user":"` + strings.Repeat("u", MaxUserLen) + `"}`, AccountEvent{User: strings.Repeat("u", MaxUserLen)}, true},
		{"empty user", `{"user":"","deleted":true}`, AccountEvent{}, false},
		{"no user", `{"deleted":true}`, AccountEvent{}, false},
		{"user too long", `{"user":"` + strings.Repeat("u", MaxUserLen+1) + `"}`, AccountEvent{}, false},
		{"unknown field", `{"user":"alice","wipe":true}`, AccountEvent{}, false},
		{"deleted as string", `{"user":"alice","deleted":"yes"}`, AccountEvent{}, false},
		{"trailing", `{"user":"alice"} {}`, AccountEvent{}, false},
		{"not an object", `["alice"]`, AccountEvent{}, false},
		{"truncated", `{"user":"alice"`, AccountEvent{}, false},
		{"too big", `{"user":"` + strings.Repeat("a", p2p.MaxMessageSize) + `"}`, AccountEvent{}, false},
	} {
		var got AccountEvent
		err := p2p.Unmarshal([]byte(tc.in), &got)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.ok && got != tc.want:
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		case !tc.ok && !errors.Is(err, p2p.ErrBadMessage):
			t.Errorf("%s: err = %v, want p2p.ErrBadMessage", tc.name, err)
		}
	}
	if _, err := p2p.Marshal(AccountEvent{User: "alice", Deleted: true}); err != nil {
		t.Fatal(err)
	}
}

// FuzzAccountEvent checks that whatever AccountEvent decodes is valid and
// survives a round trip.
func FuzzAccountEvent(f *testing.F) {
	f.Add([]byte(`{"user":"alice","deleted":true}`))
	f.Add([]byte(`{"user":""}`))
	f.Add([]byte(`{"user":"a","deleted":false,"x":1}`))
	f.Add([]byte(`{"user":"\u0000"} `))
	f.Add([]byte(`{"user":"alice","deleted":false,"changed_at":1800000000,"gen":42}`))
	f.Add([]byte(`{"user":"alice","deleted":true,"changed_at":-1}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var ev AccountEvent
		if err := p2p.Unmarshal(in, &ev); err != nil {
			if !errors.Is(err, p2p.ErrBadMessage) {
				t.Fatalf("error not wrapping p2p.ErrBadMessage: %v", err)
			}
			return
		}
		if ev.User == "" || len(ev.User) > MaxUserLen {
			t.Fatalf("accepted user of %d bytes", len(ev.User))
		}
		b, err := p2p.Marshal(ev)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again AccountEvent
		if err := p2p.Unmarshal(b, &again); err != nil || again != ev {
			t.Fatalf("round trip: %+v -> %+v, %v", ev, again, err)
		}
	})
}

func TestUsersMessagesDecode(t *testing.T) {
	long := strings.Repeat("u", MaxUserLen)
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"first page", `{"after":"","limit":0}`, true},
		{"after", `{"after":"alice","limit":10}`, true},
		{"empty", `{}`, true},
		{"limit above the page", `{"limit":100000}`, true},
		{"longest after", `{"after":"` + long + `"}`, true},
		{"after too long", `{"after":"` + long + `u"}`, false},
		{"negative limit", `{"limit":-1}`, false},
		{"unknown field", `{"after":"","from":"x"}`, false},
		{"limit as string", `{"limit":"5"}`, false},
	} {
		var r UsersRequest
		if err := p2p.Unmarshal([]byte(tc.in), &r); (err == nil) != tc.ok || (err != nil && !errors.Is(err, p2p.ErrBadMessage)) {
			t.Errorf("request %s: err = %v", tc.name, err)
		}
	}
	node := `{"id":"n1","peer_id":"12D3KooW","url":"http://n1/"}`
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"empty", `{"users":[],"more":false,"version":0}`, true},
		{"two", `{"users":[{"user":"a","nodes":[` + node + `]},{"user":"b","nodes":[]}],"more":true,"version":7}`, true},
		{"out of order", `{"users":[{"user":"b","nodes":[]},{"user":"a","nodes":[]}],"more":false,"version":1}`, false},
		{"duplicate", `{"users":[{"user":"a","nodes":[]},{"user":"a","nodes":[]}],"more":false,"version":1}`, false},
		{"empty user", `{"users":[{"user":"","nodes":[]}],"more":false,"version":1}`, false},
		{"user too long", `{"users":[{"user":"` + long + `u","nodes":[]}],"more":false,"version":1}`, false},
		{"too many replicas", `{"users":[{"user":"a","nodes":[` + strings.Repeat(node+",", MaxReplicas) + node + `]}]}`, false},
		{"oversized url", `{"users":[{"user":"a","nodes":[{"id":"n","peer_id":"p","url":"` + strings.Repeat("h", MaxURLLen+1) + `"}]}]}`, false},
		{"negative version", `{"users":[],"version":-1}`, false},
	} {
		var r UsersResponse
		if err := p2p.Unmarshal([]byte(tc.in), &r); (err == nil) != tc.ok || (err != nil && !errors.Is(err, p2p.ErrBadMessage)) {
			t.Errorf("response %s: err = %v", tc.name, err)
		}
	}
	// A page of MaxUsersPage users is valid; one more is not.
	var r UsersResponse
	for i := range MaxUsersPage + 1 {
		r.Users = append(r.Users, UserReplicas{User: fmt.Sprintf("u%04d", i)})
	}
	if err := r.Validate(); !errors.Is(err, p2p.ErrBadMessage) {
		t.Fatalf("%d users: %v", len(r.Users), err)
	}
	r.Users = r.Users[:MaxUsersPage]
	if err := r.Validate(); err != nil {
		t.Fatalf("%d users: %v", len(r.Users), err)
	}
}

// FuzzUsersResponse checks that whatever UsersResponse decodes is within
// bounds, in order, and survives a round trip.
func FuzzUsersResponse(f *testing.F) {
	f.Add([]byte(`{"users":[{"user":"a","nodes":[{"id":"n","peer_id":"p","url":"u"}]}],"more":true,"version":3}`))
	f.Add([]byte(`{"users":[{"user":"b"},{"user":"a"}]}`))
	f.Add([]byte(`{"users":null,"more":false}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var r UsersResponse
		if err := p2p.Unmarshal(in, &r); err != nil {
			if !errors.Is(err, p2p.ErrBadMessage) {
				t.Fatalf("error not wrapping p2p.ErrBadMessage: %v", err)
			}
			return
		}
		for i, u := range r.Users {
			if u.User == "" || len(u.User) > MaxUserLen || (i > 0 && r.Users[i-1].User >= u.User) || len(u.Nodes) > MaxReplicas {
				t.Fatalf("accepted entry %d: %+v", i, u)
			}
		}
		b, err := p2p.Marshal(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again UsersResponse
		if err := p2p.Unmarshal(b, &again); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func TestJSONMessages(t *testing.T) {
	srv, cli := newTestHost(t), newTestHost(t)
	know(cli, srv)
	p2p.Serve(srv, ProtoCheckPassword, p2p.HandleJSON(func(_ context.Context, from peer.ID, r CheckPasswordRequest) (CheckPasswordResponse, error) {
		return CheckPasswordResponse{OK: r.User == "alice" && r.Password == "pw" && from == cli.ID()}, nil
	}), p2p.RPCConfig{})
	ctx := context.Background()
	var resp CheckPasswordResponse
	if err := p2p.CallJSON(ctx, p2p.RPCConfig{}, cli, srv.ID(), ProtoCheckPassword, CheckPasswordRequest{User: "alice", Password: "pw"}, &resp); err != nil || !resp.OK {
		t.Fatalf("right password: %v %v", resp, err)
	}
	if err := p2p.CallJSON(ctx, p2p.RPCConfig{}, cli, srv.ID(), ProtoCheckPassword, CheckPasswordRequest{User: "alice", Password: "no"}, &resp); err != nil || resp.OK {
		t.Fatalf("wrong password: %v %v", resp, err)
	}
	for _, raw := range []string{`{"user":"alice","password":"pw","x":1}`, `{"user":""}`, `{"user":"a"} {}`, `[`} {
		if _, err := p2p.Call(ctx, cli, srv.ID(), ProtoCheckPassword, []byte(raw)); !p2p.IsCode(err, p2p.CodeBadRequest) {
			t.Errorf("%s: err = %v, want bad_request", raw, err)
		}
	}
	// An empty request decodes as the zero value, which is invalid here.
	if _, err := p2p.Call(ctx, cli, srv.ID(), ProtoCheckPassword, nil); !p2p.IsCode(err, p2p.CodeBadRequest) {
		t.Errorf("empty request: %v", err)
	}
}

func TestUnmarshalStrict(t *testing.T) {
	key := make([]byte, 32)
	good, _ := p2p.Marshal(KeysResponse{Keys: map[string][]byte{"k1": key}})
	for _, tc := range []struct {
		name string
		in   string
		v    any
		ok   bool
	}{
		{"keys", string(good), &KeysResponse{}, true},
		{"short key", `{"keys":{"k1":"AAAA"}}`, &KeysResponse{}, false},
		{"empty kid", `{"keys":{"":"` + string(good[13:57]) + `"}}`, &KeysResponse{}, false},
		{"heartbeat", `{"load":3,"time":5}`, &HeartbeatRequest{}, true},
		{"negative load", `{"load":-1,"time":5}`, &HeartbeatRequest{}, false},
		{"unknown field", `{"load":1,"extra":true}`, &HeartbeatRequest{}, false},
		{"trailing", `{"load":1} 1`, &HeartbeatRequest{}, false},
		{"too big", `{"user":"` + string(bytes.Repeat([]byte{'a'}, p2p.MaxMessageSize)) + `"}`, &CheckPasswordRequest{}, false},
		{"long password", `{"user":"u","password":"` + string(bytes.Repeat([]byte{'a'}, MaxPasswordLen+1)) + `"}`, &CheckPasswordRequest{}, false},
	} {
		err := p2p.Unmarshal([]byte(tc.in), tc.v)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, p2p.ErrBadMessage)) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}

// newTestHost starts a loopback libp2p host without a gater.
func newTestHost(t *testing.T) host.Host {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := p2p.NewHost(context.Background(), p2p.Config{Key: k})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// know makes a's peerstore hold b's addresses.
func know(a, b host.Host) {
	a.Peerstore().AddAddrs(b.ID(), b.Addrs(), peerstore.PermanentAddrTTL)
}
