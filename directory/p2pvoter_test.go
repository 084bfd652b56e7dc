package directory

import (
	"reflect"
	"testing"
)

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
