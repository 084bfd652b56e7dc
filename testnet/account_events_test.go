package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/testkit"
)

// TestAccountEvents checks the directory's account notifications to
// storage nodes (dirproto.ProtoAccount): a password change makes the old
// password fail on the user's nodes at once, well within the nodes'
// 60 s Basic-auth cache; a deletion removes the user's records from every
// node that held them; and a peer that is not a voter cannot send events.
func TestAccountEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fed := startFederation(t, ctx, []string{"alpha", "beta"}, nil, func(c *NodeConfig) {
		c.HeartbeatInterval = 250 * time.Millisecond
	})
	v, nodes, byID := fed.v, fed.nodes, fed.byID

	// newUser registers an account and returns its name, password and
	// the nodes holding it (primary first).
	newUser := func() (string, string, []*Node) {
		email := uniqueEmail(t)
		user, pw := accountName(email), "account-events-password"
		code, body := fedCall(t, "PUT", v.URL()+"user/1.0/"+user, "", []byte(fmt.Sprintf(`{"password":%q,"email":%q}`, pw, email)))
		if code != 200 {
			t.Fatalf("register user: %d %s", code, body)
		}
		var s userSet
		code, body = fedCall(t, "GET", v.URL()+"admin/v1/users/"+user, "Bearer "+fedToken, nil)
		if code != 200 || json.Unmarshal(body, &s) != nil || len(s.Replicas) != 1 {
			t.Fatalf("admin user: %d %s", code, body)
		}
		return user, pw, []*Node{byID[s.Primary.ID], byID[s.Replicas[0].ID]}
	}
	put := func(n *Node, user, id, authz string) int {
		code, _ := fedCall(t, "PUT", n.URL()+"1.1/"+user+"/storage/bookmarks/"+id, authz, []byte(`{"payload":"x"}`))
		return code
	}
	hasRecords := func(n *Node, user string) bool {
		ts, _, err := n.store.CollectionTimestamps(ctx, user)
		if err != nil {
			t.Fatalf("read store of %s: %v", n.ID(), err)
		}
		return len(ts) > 0
	}

	user, pw, held := newUser()
	for _, n := range held {
		if code := put(n, user, "a", testkit.BasicAuth(user, pw)); code != 200 {
			t.Fatalf("basic write on %s: %d", n.ID(), code)
		}
	}
	primary := held[0]

	// Password change: the primary has the old password cached (60 s),
	// yet refuses it at once.
	newPw := "account-events-password-2"
	if code, body := fedCall(t, "POST", v.URL()+"user/1.0/"+user+"/password", testkit.BasicAuth(user, pw), []byte(newPw)); code != 200 {
		t.Fatalf("change password: %d %s", code, body)
	}
	changed := time.Now()
	testkit.Eventually(t, 3*time.Second, func() string {
		if code := put(primary, user, "b", testkit.BasicAuth(user, pw)); code != 401 {
			return fmt.Sprintf("old password on the primary: %d, want 401", code)
		}
		return ""
	})
	t.Logf("old password refused %v after the change", time.Since(changed))
	if code := put(primary, user, "b", testkit.BasicAuth(user, newPw)); code != 200 {
		t.Fatalf("new password on the primary: %d", code)
	}

	// A peer that is not a voter (another storage node, which the gater
	// admits) may not send account events.
	victim, vpw, vheld := newUser()
	if code := put(vheld[0], victim, "v", testkit.BasicAuth(victim, vpw)); code != 200 {
		t.Fatalf("victim write: %d", code)
	}
	other := nodes[0]
	if other == vheld[0] {
		other = nodes[1]
	}
	testkit.Eventually(t, 5*time.Second, func() string {
		if !other.Allowlist().Allowed(vheld[0].PeerID()) || !vheld[0].Allowlist().Allowed(other.PeerID()) {
			return "nodes do not admit each other yet"
		}
		return ""
	})
	other.Host().Peerstore().AddAddrs(vheld[0].PeerID(), vheld[0].Host().Addrs(), time.Minute)
	err := p2p.CallJSON(ctx, p2p.RPCConfig{}, other.Host(), vheld[0].PeerID(), dirproto.ProtoAccount,
		dirproto.AccountEvent{User: victim, Deleted: true}, nil)
	if !p2p.IsCode(err, p2p.CodeForbidden) {
		t.Fatalf("account event from a storage node: err = %v, want %s", err, p2p.CodeForbidden)
	}
	if !hasRecords(vheld[0], victim) {
		t.Fatal("a refused account event deleted records")
	}

	// Deletion: the records go from every node that held the user.
	if code, body := fedCall(t, "DELETE", v.URL()+"user/1.0/"+user, testkit.BasicAuth(user, newPw), nil); code != 200 {
		t.Fatalf("delete user: %d %s", code, body)
	}
	testkit.Eventually(t, 3*time.Second, func() string {
		for _, n := range held {
			if hasRecords(n, user) {
				return fmt.Sprintf("node %s still holds records of the deleted user", n.ID())
			}
		}
		return ""
	})
	if code := put(primary, user, "c", testkit.BasicAuth(user, newPw)); code != 401 {
		t.Fatalf("deleted user's password on the primary: %d, want 401", code)
	}
	if !hasRecords(vheld[0], victim) {
		t.Fatal("another user's records went with the deletion")
	}
}
