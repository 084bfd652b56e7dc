package state

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/hce-sync/hce/directory/placement"
)

func sampleCommands() []Command {
	return []Command{
		CreateUser{Name: "alice", Hash: "$argon2id$x", Email: "a@example.org", Created: 1700000000, Node: "http://n1/"},
		CreateUser{Name: "bob", Hash: "h", Created: 1},
		DeleteUser{Name: "alice"},
		SetPassword{Name: "alice", Hash: "h2"},
		SetEmail{Name: "alice", Email: "é@example.org"},
		SetEmail{Name: "alice", Email: ""},
		SetResetCode{Name: "alice", CodeHash: "abc", Expires: 42},
		ClearResetCode{Name: "alice"},
		ResetPassword{Name: "alice", CodeHash: "abc", Hash: "h3", Now: 41},
		NodeReport{Node: "n1", Unconfirmed: []ReportUnconfirmed{{User: "alice", Confirmed: []string{"n2"}}},
			Filled: []ReportFilled{{User: "bob", Epoch: 3, Source: "n2"}}, HandedOff: []ReportHandedOff{{User: "bob", Source: "n3"}}},
		StartTransfer{User: "alice", From: "n1", To: "n4"},
		FinishLeave{Items: []LeaveItem{{User: "alice", Node: "n1"}}},
		Batch{Commands: []Command{
			CreateUser{Name: "c1", Hash: "h", Created: 5},
			CreateUser{Name: "c2", Hash: "h", Created: 5},
			DeleteUser{Name: "c1"},
		}},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range sampleCommands() {
		t.Run(c.Type().String(), func(t *testing.T) {
			enc, err := EncodeCommand(c)
			if err != nil {
				t.Fatal(err)
			}
			if CommandType(enc[0]) != c.Type() || enc[1] != commandV1 {
				t.Fatalf("envelope = %x %x, want type %d version %d", enc[0], enc[1], c.Type(), commandV1)
			}
			got, err := DecodeCommand(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("round trip: got %#v, want %#v", got, c)
			}
		})
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	create := func() []byte {
		b, _ := EncodeCommand(CreateUser{Name: "a", Hash: "h"})
		return b
	}
	batchOf := func(encs ...[]byte) []byte { return EncodeBatch(encs) }
	tests := []struct {
		name    string
		data    []byte
		unknown bool // else malformed
	}{
		{"empty", nil, false},
		{"one byte", []byte{1}, false},
		{"unknown type", []byte{200, 1, '{', '}'}, true},
		{"type zero", []byte{0, 1}, true},
		{"unknown version", append([]byte{byte(CmdCreateUser), 9}, create()[2:]...), true},
		{"v2 field in v1", []byte(string([]byte{byte(CmdCreateUser), 1}) + `{"n":"a","h":"h","c":1,"inv":"x"}`), false},
		{"v2 field in v1 settings", []byte(string([]byte{byte(CmdSetSettings), 1}) + `{"s":{"replicas":2,"auto_approve":false,"max_node_capacity":5}}`), false},
		{"version zero", []byte{byte(CmdDeleteUser), 0, '{', '}'}, true},
		{"bad json", []byte{byte(CmdDeleteUser), 1, '{'}, false},
		{"unknown field", []byte(string([]byte{byte(CmdDeleteUser), 1}) + `{"n":"a","zz":1}`), false},
		{"trailing data", []byte(string([]byte{byte(CmdDeleteUser), 1}) + `{"n":"a"}{}`), false},
		{"wrong field type", []byte(string([]byte{byte(CmdCreateUser), 1}) + `{"n":"a","c":"x"}`), false},
		{"empty batch", []byte{byte(CmdBatch), 1, 0}, false},
		{"batch count too big", []byte{byte(CmdBatch), 1, 0xff, 0xff, 0x03}, false},
		{"batch truncated", batchOf(create(), create())[:10], false},
		{"batch trailing", append(batchOf(create()), 0), false},
		{"nested batch", batchOf(batchOf(create())), false},
		{"batch with unknown", batchOf(create(), []byte{99, 1}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := DecodeCommand(tt.data)
			if err == nil {
				t.Fatalf("decoded %#v, want error", c)
			}
			if tt.unknown {
				var ue *UnknownCommandError
				if !errors.As(err, &ue) || !errors.Is(err, ErrUnknownCommand) {
					t.Fatalf("err = %v, want UnknownCommandError", err)
				}
			} else if !errors.Is(err, ErrMalformedCommand) {
				t.Fatalf("err = %v, want ErrMalformedCommand", err)
			}
		})
	}
}

func TestEncodeCommandRejects(t *testing.T) {
	for _, c := range []Command{
		nil,
		Batch{},
		Batch{Commands: []Command{Batch{Commands: []Command{DeleteUser{Name: "a"}}}}},
		Batch{Commands: []Command{nil}},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrMalformedCommand) {
			t.Errorf("EncodeCommand(%#v) err = %v, want ErrMalformedCommand", c, err)
		}
	}
}

func TestClusterCommandsRoundTrip(t *testing.T) {
	cmds := []Command{
		RegisterNode{ID: "n", Operator: "op", BaseURL: "http://n/", P2PAddrs: []string{"/ip4/1.2.3.4/tcp/1"}, Capacity: 3, PublicKey: []byte{1, 2}, Approve: true},
		ApproveNode{ID: "n"},
		SetNodeState{ID: "n", State: placement.Down},
		RetireNode{ID: "n"},
		FinishDrain{ID: "n"},
		SetSettings{Settings: Settings{Replicas: 3, AutoApprove: true, DownAfterMS: 100}},
		SetVoter{ID: "v1", HTTPURL: "http://v1", RaftAddr: "127.0.0.1:1"},
		NodeReport{Node: "n", Unconfirmed: []ReportUnconfirmed{{User: "u", Confirmed: []string{"m"}}},
			Filled: []ReportFilled{{User: "u", Epoch: 7, Source: "m"}}, HandedOff: []ReportHandedOff{{User: "u", Source: "x"}}},
		StartTransfer{User: "u", From: "a", To: "b"},
		FinishLeave{Items: []LeaveItem{{User: "u", Node: "a"}, {User: "v", Node: "b"}}},
	}
	for _, c := range cmds {
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("%v: %v", c.Type(), err)
		}
		if fmt.Sprint(got) != fmt.Sprint(c) {
			t.Fatalf("%v: got %+v, want %+v", c.Type(), got, c)
		}
		if c.Type().String() == fmt.Sprintf("CommandType(%d)", uint8(c.Type())) {
			t.Fatalf("%d has no name", c.Type())
		}
		if _, err := DecodeCommand(append(enc[:len(enc)-1:len(enc)-1], []byte(`,"zz":1}`)...)); err == nil {
			t.Fatalf("%v: unknown field accepted", c.Type())
		}
	}
}

// TestSetVoterVersions checks that SetVoter without libp2p fields stays a
// version 1 entry (readable by older voters), that one with them is
// version 2, and that both decode back.
func TestSetVoterVersions(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    SetVoter
		ver  byte
	}{
		{"v1", SetVoter{ID: "d1", HTTPURL: "http://a", RaftAddr: "127.0.0.1:1"}, 1},
		{"v2", SetVoter{ID: "d1", HTTPURL: "http://a", RaftAddr: "127.0.0.1:1", PeerID: "12D3KooWx", P2PAddrs: []string{"/ip4/127.0.0.1/tcp/9"}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := EncodeCommand(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			if enc[1] != tc.ver {
				t.Fatalf("version %d, want %d", enc[1], tc.ver)
			}
			got, err := DecodeCommand(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.c) {
				t.Fatalf("decoded %+v, want %+v", got, tc.c)
			}
		})
	}
	// A v1 body carrying v2 fields is malformed (strict decoding).
	bad := append([]byte{byte(CmdSetVoter), 1}, []byte(`{"id":"d1","url":"","raft":"","peer":"x"}`)...)
	if _, err := DecodeCommand(bad); err == nil {
		t.Fatal("v1 body with a peer field decoded")
	}
}

func seedKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

func publishOf(priv ed25519.PrivateKey, owner string) PublishKey {
	pub := priv.Public().(ed25519.PublicKey)
	return PublishKey{Kid: KeyID(pub), PublicKey: pub, Owner: owner, Created: 100}
}

func TestKeyCommandCodec(t *testing.T) {
	for _, c := range []Command{publishOf(seedKey(1), "dir1"), RetireKey{Kid: "abc"}} {
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("decode %v: %v", c.Type(), err)
		}
		ge, _ := EncodeCommand(got)
		if !bytes.Equal(ge, enc) {
			t.Fatalf("round trip of %v changed it", c.Type())
		}
	}
	if CmdPublishKey.String() != "PublishKey" || CmdRetireKey.String() != "RetireKey" {
		t.Fatal("command names")
	}
	if _, err := DecodeCommand(append([]byte{byte(CmdRetireKey), commandV1}, `{"kid":"a","x":1}`...)); !errors.Is(err, ErrMalformedCommand) {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := DecodeCommand([]byte{byte(CmdPublishKey), 2, '{', '}'}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("unknown version: %v", err)
	}
	if KeyID(seedKey(1).Public().(ed25519.PublicKey)) == KeyID(seedKey(2).Public().(ed25519.PublicKey)) ||
		len(KeyID(seedKey(1).Public().(ed25519.PublicKey))) != 16 {
		t.Fatal("KeyID")
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		enc, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	for _, c := range []Command{
		CreateUser{Name: "a", Hash: "h", Created: 1, Invite: InviteHash("x")},
		SetPassword{Name: "a", Hash: "h", At: 5},
		SetResetCode{Name: "a", CodeHash: "c", Expires: 9, Now: 1, Max: 3, Window: 3600},
		SetSettings{Settings: Settings{Replicas: 3, MaxNodeCapacity: 10}},
		CreateInvite{Hash: InviteHash("x"), Expires: 9, Now: 1},
		DeleteUser{Name: "a", At: 7},
		SetNodeHawkKey{ID: "n1", Key: bytes.Repeat([]byte{1}, HawkKeySize)},
		SyncLogin{FxA: "f", Generation: 2, KeysChangedAt: 1, ClientState: "ab", At: 3, Node: "http://n/"},
	} {
		enc, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add([]byte{})
	f.Add([]byte{byte(CmdBatch), 1, 1, 2, 2, 1})
	f.Add([]byte{byte(CmdResetPassword), 1, 'n', 'u', 'l', 'l'})
	f.Add(append([]byte{byte(CmdRegisterNode), 1}, `{"id":"a","op":"","url":"x","p2p":[],"cap":0,"pk":""}`...))
	f.Add(append([]byte{byte(CmdNodeReport), 1}, `{"n":"a","u":[],"f":[{"u":"x","e":1,"s":"b"}]}`...))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			if c != nil {
				t.Fatalf("command %#v with error %v", c, err)
			}
			if !errors.Is(err, ErrMalformedCommand) && !errors.Is(err, ErrUnknownCommand) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// One round trip makes an entry canonical (an empty list and an
		// omitted one decode differently but encode alike): from then on
		// encoding is stable.
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", c, err)
		}
		c2, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %x: %v", enc, err)
		}
		enc2, err := EncodeCommand(c2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("unstable: %x != %x (%v)", enc, enc2, err)
		}
	})
}
