package testnet

import (
	"fmt"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/client"
	"github.com/hce-sync/hce/api/testkit"
)

// TestClientFailover runs api/client against an in-process federation
// (one voter, four nodes of two operators) through the reassignment flow:
// the user's primary is killed (connection refused, not 401) and the next
// writes of a Basic client and of a token client land on the new primary;
// then that node is drained (alive, answering 401) and the client follows
// node/weave again. Records written before a failover are not expected on
// the new node: replication is not part of this test.
func TestClientFailover(t *testing.T) {
	ctx := storyContext(t, 90*time.Second)
	tn := storyNet(t, ctx, 4, nil)
	_, dir := tn.Leader()
	basicC := storyUser(t, ctx, tn)
	tokenC := newClient(t, dir, func(c *client.Config) {
		c.Email, c.User, c.UseTokens, c.FailoverWait = "", basicC.User(), true, 20*time.Second
	})
	nodeName := func(url string) string {
		for _, n := range tn.Nodes() {
			if n.HTTP == url {
				return n.Name
			}
		}
		t.Fatalf("no node serves %s", url)
		return ""
	}
	// onNode reads coll/id directly from the node at url.
	onNode := func(url, coll, id string) int {
		code, _ := fedCall(t, "GET", url+"1.1/"+basicC.User()+"/storage/"+coll+"/"+id, testkit.BasicAuth(basicC.User(), storyPassword), nil)
		return code
	}
	put := func(c *client.Client, id string) {
		t.Helper()
		if _, err := c.Put(ctx, "forms", client.Record{ID: id, Payload: strp("p-" + id)}, 0); err != nil {
			t.Fatalf("Put %s: %v", id, err)
		}
	}

	put(basicC, "before-kill")
	put(tokenC, "before-kill-token")
	first := basicC.Node()
	if first == "" || tokenC.Node() != first || onNode(first, "forms", "before-kill-token") != 200 {
		t.Fatalf("clients on %q and %q", first, tokenC.Node())
	}

	// Kill the primary: the next write meets a refused connection, asks
	// node/weave (with backoff) until the directory moves the user, and
	// lands on the new primary.
	if err := tn.Kill(nodeName(first)); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	put(basicC, "after-kill")
	second := basicC.Node()
	t.Logf("basic client moved %s -> %s in %v", nodeName(first), nodeName(second), time.Since(killed))
	if second == first || onNode(second, "forms", "after-kill") != 200 {
		t.Fatalf("after the kill the client is on %q", second)
	}
	put(tokenC, "after-kill-token")
	if tokenC.Node() != second || onNode(second, "forms", "after-kill-token") != 200 {
		t.Fatalf("token client on %q, want %q", tokenC.Node(), second)
	}
	if r, _, err := basicC.Get(ctx, "forms", "after-kill-token"); err != nil || *r.Payload != "p-after-kill-token" {
		t.Fatalf("Get after failover: %+v %v", r, err)
	}

	// Drain the new primary: it stays up and, once it knows, answers 401
	// for the user; the client follows node/weave to the next node.
	if err := tn.Drain(ctx, nodeName(second)); err != nil {
		t.Fatal(err)
	}
	n := 0
	testkit.Eventually(t, 15*time.Second, func() string {
		n++
		put(basicC, fmt.Sprintf("after-drain-%d", n))
		if basicC.Node() == second {
			return "client still on the drained node"
		}
		return ""
	})
	third := basicC.Node()
	if third == first || onNode(third, "forms", fmt.Sprintf("after-drain-%d", n)) != 200 {
		t.Fatalf("after the drain the client is on %q", third)
	}
	if code := onNode(second, "forms", "after-kill"); code != 401 {
		t.Fatalf("drained node answers %d for the user, want 401", code)
	}
	put(tokenC, "after-drain-token")
	if tokenC.Node() != third || onNode(third, "forms", "after-drain-token") != 200 {
		t.Fatalf("token client on %q, want %q", tokenC.Node(), third)
	}
}
