package testnet

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/client"
)

// newClient returns an api/client Client for a fresh e-mail on base.
func newClient(t *testing.T, base string, mod func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Directory = base
	cfg.Email = uniqueEmail(t)
	cfg.Password = storyPassword
	cfg.HTTP = &http.Client{Timeout: 20 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func strp(s string) *string { return &s }
func i64p(n int64) *int64   { return &n }

// TestClientStandalone drives every call of api/client against a real
// Standalone: the user API (with a capturing mailer for resets), the
// storage API with options, the newlines stream and token auth.
func TestClientStandalone(t *testing.T) {
	t.Parallel()
	mailer := &captureMailer{}
	s := startServer(t, withMailer(mailer))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := newClient(t, s.s.URL(), nil)
	if c.User() != api.AccountName(c.Email()) {
		t.Fatalf("User %q is not the account name of %q", c.User(), c.Email())
	}

	// User API: name check, registration, node lookup.
	if ok, err := c.Exists(ctx); err != nil || ok {
		t.Fatalf("Exists before Register: %v %v", ok, err)
	}
	if _, err := c.NodeWeave(ctx); client.StatusOf(err) != 404 {
		t.Fatalf("NodeWeave of an unknown user: %v, want 404", err)
	}
	if err := c.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(ctx); client.StatusOf(err) != 400 || client.CodeOf(err) != 4 {
		t.Fatalf("second Register: %v, want 400 code 4", err)
	}
	if ok, err := c.Exists(ctx); err != nil || !ok {
		t.Fatalf("Exists after Register: %v %v", ok, err)
	}
	if n, err := c.NodeWeave(ctx); err != nil || n != s.s.URL() || c.Node() != n {
		t.Fatalf("NodeWeave: %q %v (Node %q)", n, err, c.Node())
	}

	// Storage: writes of every kind, then reads with options.
	m, err := c.Put(ctx, "bookmarks", client.Record{ID: "a", Payload: strp("pa"), SortIndex: i64p(5)}, 0)
	if err != nil || m.Timestamp == 0 {
		t.Fatalf("Put: %+v %v", m, err)
	}
	first := m.Timestamp
	if _, err := c.Put(ctx, "bookmarks", client.Record{ID: "a", Payload: strp("late")}, first-1); client.StatusOf(err) != 412 {
		t.Fatalf("Put with a stale X-If-Unmodified-Since: %v, want 412", err)
	}
	res, m, err := c.Post(ctx, "bookmarks", []client.Record{
		{ID: "b", Payload: strp("pb"), SortIndex: i64p(9)},
		{ID: "c", Payload: strp("pc"), SortIndex: i64p(1), TTL: i64p(3600)},
		{ID: "bad/id", Payload: strp("x")},
	}, 0)
	if err != nil || !reflect.DeepEqual(res.Success, []string{"b", "c"}) || len(res.Failed["bad/id"]) == 0 || res.Modified <= first {
		t.Fatalf("Post: %+v %+v %v", res, m, err)
	}
	r, _, err := c.Get(ctx, "bookmarks", "b")
	if err != nil || r.ID != "b" || *r.Payload != "pb" || *r.SortIndex != 9 || r.Modified == nil || *r.Modified != res.Modified {
		t.Fatalf("Get: %+v %v", r, err)
	}
	if _, _, err := c.Get(ctx, "bookmarks", "nope"); client.StatusOf(err) != 404 {
		t.Fatalf("Get of a missing record: %v", err)
	}
	ids, m, err := c.IDs(ctx, "bookmarks", client.Options{"sort": {"index"}})
	if err != nil || !reflect.DeepEqual(ids, []string{"b", "a", "c"}) || m.Records != 3 {
		t.Fatalf("IDs sort=index: %v %+v %v", ids, m, err)
	}
	ids, _, err = c.IDs(ctx, "bookmarks", client.Options{"newer": {first.String()}, "sort": {"oldest"}, "full": {"1"}})
	if err != nil || !reflect.DeepEqual(ids, []string{"b", "c"}) {
		t.Fatalf("IDs newer: %v %v", ids, err)
	}
	recs, _, err := c.Records(ctx, "bookmarks", client.Options{"sort": {"index"}, "limit": {"2"}})
	if err != nil || len(recs) != 2 || recs[0].ID != "b" || recs[1].ID != "a" || *recs[1].Payload != "pa" {
		t.Fatalf("Records limit=2: %+v %v", recs, err)
	}
	var streamed []string
	m, err = c.StreamRecords(ctx, "bookmarks", client.Options{"sort": {"index"}}, func(r client.Record) error {
		streamed = append(streamed, r.ID+"="+*r.Payload)
		return nil
	})
	if err != nil || !reflect.DeepEqual(streamed, []string{"b=pb", "a=pa", "c=pc"}) || m.Records != 3 {
		t.Fatalf("StreamRecords: %v %+v %v", streamed, m, err)
	}
	stop := errors.New("enough")
	if _, err := c.StreamRecords(ctx, "bookmarks", nil, func(client.Record) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("StreamRecords stopping early: %v", err)
	}
	if _, _, err := c.Post(ctx, "history", []client.Record{{ID: "h1", Payload: strp("x")}}, 0); err != nil {
		t.Fatal(err)
	}

	// Info calls.
	colls, m, err := c.InfoCollections(ctx)
	if err != nil || len(colls) != 2 || colls["bookmarks"] != res.Modified || m.Timestamp == 0 {
		t.Fatalf("InfoCollections: %v %+v %v", colls, m, err)
	}
	counts, _, err := c.InfoCounts(ctx)
	if err != nil || !reflect.DeepEqual(counts, map[string]int64{"bookmarks": 3, "history": 1}) {
		t.Fatalf("InfoCounts: %v %v", counts, err)
	}
	usage, _, err := c.InfoUsage(ctx)
	if err != nil || usage["bookmarks"] <= 0 || usage["history"] <= 0 {
		t.Fatalf("InfoUsage: %v %v", usage, err)
	}
	used, quota, _, err := c.InfoQuota(ctx)
	if err != nil || used <= 0 || quota != nil {
		t.Fatalf("InfoQuota: %v %v %v", used, quota, err)
	}

	// Deletes: one record, by filter, a collection, everything.
	if _, err := c.Delete(ctx, "bookmarks", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteCollection(ctx, "bookmarks", client.Options{"ids": {"b"}}); err != nil {
		t.Fatal(err)
	}
	if ids, _, err := c.IDs(ctx, "bookmarks", nil); err != nil || !reflect.DeepEqual(ids, []string{"c"}) {
		t.Fatalf("IDs after deletes: %v %v", ids, err)
	}
	if _, err := c.DeleteCollection(ctx, "bookmarks", nil); err != nil {
		t.Fatal(err)
	}
	if colls, _, err := c.InfoCollections(ctx); err != nil || len(colls) != 1 {
		t.Fatalf("after DeleteCollection: %v %v", colls, err)
	}
	if _, err := c.DeleteStorage(ctx); err != nil {
		t.Fatal(err)
	}
	if colls, _, err := c.InfoCollections(ctx); err != nil || len(colls) != 0 {
		t.Fatalf("after DeleteStorage: %v %v", colls, err)
	}

	// Token auth: a token from the directory works on its node; a client
	// that fetches its own tokens writes with them.
	g, err := c.Token(ctx)
	if err != nil || g.Token == "" || g.Node != s.s.URL() || time.Until(g.Expires) <= 0 {
		t.Fatalf("Token: %+v %v", g, err)
	}
	cfg := client.DefaultConfig()
	cfg.User = c.User()
	cfg.HTTP = &http.Client{Timeout: 20 * time.Second}
	tc, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.UseToken(g)
	if _, err := tc.Put(ctx, "tabs", client.Record{ID: "t", Payload: strp("by token")}, 0); err != nil {
		t.Fatalf("Put with a bearer token: %v", err)
	}
	bad, err := client.New(client.Config{User: c.User(), Token: g.Token + "x"})
	if err != nil {
		t.Fatal(err)
	}
	bad.SetNode(s.s.URL())
	if _, _, err := bad.Get(ctx, "tabs", "t"); client.StatusOf(err) != 401 {
		t.Fatalf("forged token: %v, want 401", err)
	}
	auto := newClient(t, s.s.URL(), func(cfg *client.Config) {
		cfg.Email, cfg.User, cfg.UseTokens = "", c.User(), true
	})
	if r, _, err := auto.Get(ctx, "tabs", "t"); err != nil || *r.Payload != "by token" {
		t.Fatalf("UseTokens Get: %+v %v", r, err)
	}

	// Password and e-mail changes.
	if err := c.ChangePassword(ctx, "a brand new password"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.InfoCollections(ctx); err != nil {
		t.Fatalf("storage with the new password: %v", err)
	}
	stale := newClient(t, s.s.URL(), func(cfg *client.Config) { cfg.Email, cfg.User = "", c.User() })
	if _, _, err := stale.InfoCollections(ctx); client.StatusOf(err) != 401 {
		t.Fatalf("old password: %v, want 401", err)
	}
	if _, err := stale.Token(ctx); client.StatusOf(err) != 401 {
		t.Fatalf("Token with the old password: %v, want 401", err)
	}
	newEmail := strings.Replace(uniqueEmail(t), "@", "+moved@", 1)
	if got, err := c.ChangeEmail(ctx, newEmail); err != nil || got != newEmail {
		t.Fatalf("ChangeEmail: %q %v", got, err)
	}
	if _, err := c.ChangeEmail(ctx, "bademailhere"); client.CodeOf(err) != 12 {
		t.Fatalf("ChangeEmail to a malformed address: %v, want code 12", err)
	}

	// Password reset through the mailed code.
	sent := mailer.count()
	if err := c.RequestPasswordReset(ctx); err != nil {
		t.Fatal(err)
	}
	if mailer.count() != sent+1 {
		t.Fatal("no reset mail")
	}
	to, code := mailer.lastCode(t, c.User())
	if to != newEmail {
		t.Fatalf("reset mail to %q, want %q", to, newEmail)
	}
	if err := c.ResetPassword(ctx, "0000000000000000", "yet another password"); client.CodeOf(err) != 10 {
		t.Fatalf("ResetPassword with a wrong code: %v, want code 10", err)
	}
	if err := c.ResetPassword(ctx, code, "yet another password"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.InfoCollections(ctx); err != nil {
		t.Fatalf("storage after the reset: %v", err)
	}
	if err := c.RequestPasswordReset(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CancelPasswordReset(ctx); err != nil {
		t.Fatal(err)
	}

	// Deleting the account.
	if err := c.DeleteAccount(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Exists(ctx); err != nil || ok {
		t.Fatalf("Exists after DeleteAccount: %v %v", ok, err)
	}
}
