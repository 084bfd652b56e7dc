package testnet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node/dirclient"
)

// openFeed opens a continuous _changes feed at url with authz, waits for
// its first heartbeat and returns a channel closed when the feed ends.
func openFeed(t *testing.T, ctx context.Context, url, authz string) <-chan struct{} {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", url+"?feed=continuous&heartbeat=50&timeout=120000&since=now", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", authz)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		res.Body.Close()
		t.Fatalf("feed %s: %d", url, res.StatusCode)
	}
	rd := bufio.NewReader(res.Body)
	if _, err := rd.ReadByte(); err != nil {
		t.Fatalf("feed %s: %v", url, err)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, rd)
	}()
	return ended
}

// waitEnded waits up to d for a feed to end and returns how long it took.
func waitEnded(t *testing.T, ended <-chan struct{}, since time.Time, d time.Duration, what string) time.Duration {
	t.Helper()
	select {
	case <-ended:
		return time.Since(since)
	case <-time.After(d):
		t.Fatalf("%s: feed still open after %v", what, d)
		return 0
	}
}

// TestRevocationFederation is issue #11's revocation in a federation: a
// password change revokes the tokens issued before it and ends the feeds
// opened with the old password on the user's nodes, at once when the
// account event arrives and within the membership cache lifetime plus
// the feeds' recheck when it is lost; a token signed by a voter's
// rotated-in key is accepted at once, not after the nodes' next periodic
// key refresh.
func TestRevocationFederation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	fed := startFederation(t, ctx, []string{"alpha", "beta"}, nil, func(c *NodeConfig) {
		c.HeartbeatInterval = 250 * time.Millisecond
	})
	v := fed.v
	email := uniqueEmail(t)
	user, pw := accountName(email), "revocation password 1"
	if code, body := fedCall(t, "PUT", v.URL()+"user/1.0/"+user, "", []byte(fmt.Sprintf(`{"password":%q,"email":%q}`, pw, email))); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	token := func(pw string) (string, string) {
		t.Helper()
		code, body := fedCall(t, "GET", v.URL()+"user/1.0/"+user+"/token", testkit.BasicAuth(user, pw), nil)
		var tr struct{ Token, Node string }
		if code != 200 || json.Unmarshal(body, &tr) != nil {
			t.Fatalf("token: %d %s", code, body)
		}
		return "Bearer " + tr.Token, tr.Node
	}
	put := func(node, authz, id string) int {
		code, _ := fedCall(t, "PUT", node+"1.1/"+user+"/storage/bookmarks/"+id, authz, []byte(`{"payload":"x"}`))
		return code
	}
	changePassword := func(old, new string) time.Time {
		t.Helper()
		if code, body := fedCall(t, "POST", v.URL()+"user/1.0/"+user+"/password", testkit.BasicAuth(user, old), []byte(new)); code != 200 {
			t.Fatalf("change password: %d %s", code, body)
		}
		return time.Now()
	}

	// Event delivered.
	tok1, node := token(pw)
	if code := put(node, tok1, "a"); code != 200 {
		t.Fatalf("write with a fresh token: %d", code)
	}
	feed := openFeed(t, ctx, node+"couch/"+user+"/_changes", testkit.BasicAuth(user, pw))
	pw2 := "revocation password 2"
	at := changePassword(pw, pw2)
	t.Logf("event delivered: feed ended %v after the change", waitEnded(t, feed, at, 5*time.Second, "event delivered").Round(time.Millisecond))
	testkit.Eventually(t, time.Second, func() string {
		if code := put(node, tok1, "b"); code != 401 {
			return fmt.Sprintf("token issued before the change: %d", code)
		}
		return ""
	})
	t.Logf("event delivered: old token refused %v after the change", time.Since(at).Round(time.Millisecond))

	// Event lost: the nodes stop serving account events.
	for _, n := range fed.nodes {
		n.Host().RemoveStreamHandler(dirproto.ProtoAccount)
		n.Host().RemoveStreamHandler(dirproto.ProtoAccount11)
	}
	tok2, node := token(pw2)
	if code := put(node, tok2, "c"); code != 200 {
		t.Fatalf("write with the new token: %d", code)
	}
	if code := put(node, testkit.BasicAuth(user, pw2), "d"); code != 200 { // cached on the node
		t.Fatalf("write with the new password: %d", code)
	}
	feed = openFeed(t, ctx, node+"couch/"+user+"/_changes", testkit.BasicAuth(user, pw2))
	at = changePassword(pw2, "revocation password 3")
	testkit.Eventually(t, 4*time.Second, func() string {
		if code := put(node, tok2, "e"); code != 401 {
			return fmt.Sprintf("token issued before the change: %d", code)
		}
		if code := put(node, testkit.BasicAuth(user, pw2), "e"); code != 401 {
			return fmt.Sprintf("cached old password: %d", code)
		}
		return ""
	})
	t.Logf("event lost: old token and cached password refused %v after the change", time.Since(at).Round(time.Millisecond))
	t.Logf("event lost: feed ended %v after the change", waitEnded(t, feed, at, 10*time.Second, "event lost").Round(time.Millisecond))

	// A key published after the nodes' last key fetch.
	if _, err := v.Directory().RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	tok3, node := token("revocation password 3")
	if code := put(node, tok3, "f"); code != 200 {
		t.Fatalf("token of a new key: %d, want 200 at once", code)
	}
}

// TestDeleteRecreateServe is issue #11's deletion in `serve`: a token
// and a feed of a deleted account stop working, and a new account
// registered with the same e-mail sees none of the old account's
// records, neither those written before the deletion nor any written
// with the old credentials after it, and accepts none of its
// credentials.
func TestDeleteRecreateServe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := startServer(t)
	a := s.newAccount(t)
	r := s.do(t, "GET", "/user/1.0/"+a.Name+"/token", nil, "Authorization", testkit.BasicAuth(a.Name, a.Password))
	var tr struct{ Token string }
	if r.Status != 200 || json.Unmarshal(r.Body, &tr) != nil {
		t.Fatalf("token: %v", r)
	}
	bearer := "Bearer " + tr.Token
	a.put(t, "bookmarks", "before", map[string]string{"payload": "old"})
	feed := openFeed(t, ctx, s.base+"/couch/"+a.Name+"/_changes", testkit.BasicAuth(a.Name, a.Password))

	del := s.do(t, "DELETE", "/user/1.0/"+a.Name, nil, "Authorization", testkit.BasicAuth(a.Name, a.Password))
	want(t, del, 200)
	t.Logf("feed ended %v after the deletion", waitEnded(t, feed, time.Now(), 5*time.Second, "deletion").Round(time.Millisecond))
	if r := s.do(t, "PUT", a.path("storage/bookmarks/after"), map[string]string{"payload": "ghost"}, "Authorization", bearer); r.Status != 401 {
		t.Fatalf("write with the deleted account's token: %v", r)
	}

	// The same e-mail again, another password.
	b := &account{s: s, Name: a.Name, Email: a.Email, Password: "another horse battery", Ver: "1.1"}
	if r := s.do(t, "PUT", "/user/1.0/"+b.Name, map[string]string{"email": b.Email, "password": b.Password}); r.Status != 200 {
		t.Fatalf("register again: %v", r)
	}
	if ids := b.ids(t, "storage/bookmarks"); len(ids) != 0 {
		t.Fatalf("the new account sees %v", ids)
	}
	for _, authz := range []string{bearer, testkit.BasicAuth(a.Name, a.Password)} {
		if r := s.do(t, "GET", b.path("storage/bookmarks"), nil, "Authorization", authz); r.Status != 401 {
			t.Fatalf("old credentials on the new account: %v", r)
		}
	}
}

// noCache is a dirclient.CredentialCache with nothing to forget.
type noCache struct{}

func (noCache) Forget(string) {}

// TestDeleteRecreateFederation: in a federation, a name whose account was
// deleted while its nodes missed the deletion is taken again only once
// those nodes confirmed wiping it (503 until then), so the new account
// starts empty on every node.
func TestDeleteRecreateFederation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	fed := startFederation(t, ctx, []string{"alpha", "beta"}, nil, func(c *NodeConfig) {
		c.HeartbeatInterval = 250 * time.Millisecond
	})
	v := fed.v
	email := uniqueEmail(t)
	user, pw := accountName(email), "recreate password 1"
	register := func(pw string) (int, []byte) {
		return fedCall(t, "PUT", v.URL()+"user/1.0/"+user, "", []byte(fmt.Sprintf(`{"password":%q,"email":%q}`, pw, email)))
	}
	if code, body := register(pw); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	code, body := fedCall(t, "GET", v.URL()+"user/1.0/"+user+"/node/weave", "", nil)
	if code != 200 {
		t.Fatalf("node/weave: %d", code)
	}
	primary := string(body)
	if code, _ := fedCall(t, "PUT", primary+"1.1/"+user+"/storage/bookmarks/old", testkit.BasicAuth(user, pw), []byte(`{"payload":"old"}`)); code != 200 {
		t.Fatalf("write: %d", code)
	}
	// The nodes stop hearing account events: the deletion does not reach
	// them.
	for _, n := range fed.nodes {
		n.Host().RemoveStreamHandler(dirproto.ProtoAccount)
		n.Host().RemoveStreamHandler(dirproto.ProtoAccount11)
	}
	if code, body := fedCall(t, "DELETE", v.URL()+"user/1.0/"+user, testkit.BasicAuth(user, pw), nil); code != 200 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if code, body := register("recreate password 2"); code != 503 {
		t.Fatalf("re-registration while the old account's nodes cannot wipe it: %d %s", code, body)
	}
	// They hear events again (a node back from a partition).
	for _, n := range fed.nodes {
		cfg := dirclient.DefaultAccountEventsConfig()
		cfg.Store, cfg.Auth, cfg.IsVoter = n.Store(), noCache{}, n.dc.IsVoter
		if err := dirclient.ServeAccountEvents(n.Host(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	if code, body := register("recreate password 2"); code != 200 {
		t.Fatalf("re-registration: %d %s", code, body)
	}
	for _, n := range fed.nodes {
		ts, _, err := n.Store().CollectionTimestamps(ctx, user)
		if err != nil || len(ts) != 0 {
			t.Fatalf("node %s holds %v (%v) of the old account", n.ID(), ts, err)
		}
	}
	code, body = fedCall(t, "GET", v.URL()+"user/1.0/"+user+"/node/weave", "", nil)
	if code != 200 {
		t.Fatalf("node/weave: %d", code)
	}
	code, body = fedCall(t, "GET", string(body)+"1.1/"+user+"/storage/bookmarks", testkit.BasicAuth(user, "recreate password 2"), nil)
	if code != 200 || string(body) != "[]" {
		t.Fatalf("the new account reads %d %s", code, body)
	}
}
