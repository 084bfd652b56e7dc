package testnet

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/client"
	"github.com/hce-sync/hce/api/hawk"
)

// sync15Client is a Sync 1.5 client of a registered account: its access
// token comes from the directory's local issuer, its Hawk credentials
// from the tokenserver.
func sync15Client(t *testing.T, dir, user string) *client.Client {
	t.Helper()
	return newClient(t, dir, func(c *client.Config) {
		c.Email, c.User, c.API, c.FailoverWait = "", user, client.API15, 30*time.Second
	})
}

// TestSync15Standalone drives the Sync 1.5 API of `hce serve` through
// api/client: tokenserver credentials from the local issuer, writes,
// reads in the protocol's orders with offsets, a batch upload, deletes;
// the same uid for every login; Weave and 1.5 clients do not see each
// other's data (different accounts).
func TestSync15Standalone(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *StandaloneConfig) { c.FxA.Local = true })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	weave := newClient(t, s.s.URL(), nil)
	if err := weave.Register(ctx); err != nil {
		t.Fatal(err)
	}
	c := sync15Client(t, s.s.URL(), weave.User())
	r, err := c.SyncToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.UID == 0 || !strings.HasPrefix(r.APIEndpoint, strings.TrimSuffix(s.s.URL(), "/")+"/1.5/") {
		t.Fatalf("token answer %+v", r)
	}
	if _, err := c.Put(ctx, "meta", client.Record{ID: "global", Payload: strp(`{"syncID":"x"}`)}, 0); err != nil {
		t.Fatal(err)
	}
	var recs []client.Record
	for i := 0; i < 30; i++ {
		recs = append(recs, client.Record{ID: fmt.Sprintf("h%02d", i), Payload: strp(fmt.Sprint(i)), SortIndex: i64p(int64(i % 3))})
	}
	res, _, err := c.PostBatch(ctx, "history", [][]client.Record{recs[:10], recs[10:20], recs[20:]}, 0)
	if err != nil || len(res.Success) != 30 || len(res.Failed) != 0 || res.Modified == 0 {
		t.Fatalf("batch %+v %v", res, err)
	}
	got, _, err := c.Records(ctx, "history", client.Options{"sort": {"oldest"}})
	if err != nil || len(got) != 30 {
		t.Fatalf("records %d %v", len(got), err)
	}
	for _, g := range got {
		if *g.Modified != res.Modified {
			t.Fatalf("%s modified %s, the commit's %s", g.ID, *g.Modified, res.Modified)
		}
	}
	// Pages of the index order, chained by offsets.
	var ids []string
	opts := client.Options{"sort": {"index"}, "limit": {"7"}}
	for pages := 0; pages < 10; pages++ {
		page, off, err := pageIDs(ctx, c, "history", opts)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, page...)
		if off == "" {
			break
		}
		opts.Set("offset", off)
	}
	if len(ids) != 30 || ids[0] != "h29" || ids[9] != "h02" || ids[10] != "h28" {
		t.Fatalf("index pages %v", ids)
	}
	if _, err := c.Delete(ctx, "history", "h00"); err != nil {
		t.Fatal(err)
	}
	counts, _, err := c.InfoCounts(ctx)
	if err != nil || counts["history"] != 29 || counts["meta"] != 1 {
		t.Fatalf("counts %v %v", counts, err)
	}
	// Another login gets the same uid, and the Weave account does not
	// see the Sync 1.5 data.
	c2 := sync15Client(t, s.s.URL(), weave.User())
	r2, err := c2.SyncToken(ctx)
	if err != nil || r2.UID != r.UID {
		t.Fatalf("second login %+v %v", r2, err)
	}
	if cols, _, err := weave.InfoCollections(ctx); err != nil || len(cols) != 0 {
		t.Fatalf("Weave view %v %v", cols, err)
	}
	// Credentials of one uid do not open another's storage.
	other := strings.Replace(r.APIEndpoint, fmt.Sprintf("/1.5/%d", r.UID), fmt.Sprintf("/1.5/%d", r.UID+100), 1)
	if code := hawkGet(t, other+"/info/collections", r.ID, r.Key); code != 401 {
		t.Fatalf("another uid's storage: %d", code)
	}
}

// pageIDs returns one page of ids and the next offset.
func pageIDs(ctx context.Context, c *client.Client, coll string, opts client.Options) ([]string, string, error) {
	ids, m, err := c.IDs(ctx, coll, opts)
	return ids, m.NextOffset, err
}

// hawkGet GETs url with Hawk credentials and returns the status.
func hawkGet(t *testing.T, url, id, key string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	port := 80
	if p := req.URL.Port(); p != "" {
		fmt.Sscan(p, &port)
	}
	auth, err := hawk.Sign(hawk.Credentials{ID: id, Key: []byte(key)}, "GET", req.URL.RequestURI(), req.URL.Hostname(), port, hawk.SignOptions{}, time.Now().Unix())
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestSync15Failover: a Sync 1.5 client writes on its node (records and
// a batch upload), the node is killed, and the client gets new
// credentials from the tokenserver and finds every acknowledged record on
// the new primary; its writes go on there. The Hawk credentials of the
// killed node are not accepted by the new one (sealed to the old node's
// key, for its audience).
func TestSync15Failover(t *testing.T) {
	ctx := storyContext(t, 120*time.Second)
	tn := storyNet(t, ctx, 4, nil)
	_, dir := tn.Leader()
	weave := storyUser(t, ctx, tn)
	c := sync15Client(t, dir, weave.User())
	first, err := c.SyncToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	account := fmt.Sprintf("sync-%d", first.UID)
	set, err := tn.ReplicaSet(ctx, account)
	if err != nil || len(set) != 2 {
		t.Fatalf("replica set of %s: %v %v", account, set, err)
	}
	if !strings.HasPrefix(first.APIEndpoint, strings.TrimSuffix(set[0], "/")) {
		t.Fatalf("endpoint %s, primary %s", first.APIEndpoint, set[0])
	}
	want := map[string]string{}
	for b := 0; b < 10; b++ {
		var rs []client.Record
		for i := 0; i < 10; i++ {
			id := fmt.Sprintf("r%02d-%d", b, i)
			rs = append(rs, client.Record{ID: id, Payload: strp("p-" + id)})
			want[id] = "p-" + id
		}
		if res, _, err := c.Post(ctx, "history", rs, 0); err != nil || len(res.Success) != 10 {
			t.Fatalf("post %d: %+v %v", b, res, err)
		}
	}
	var batch [][]client.Record
	for k := 0; k < 3; k++ {
		var chunk []client.Record
		for i := 0; i < 5; i++ {
			id := fmt.Sprintf("b%d-%d", k, i)
			chunk = append(chunk, client.Record{ID: id, Payload: strp("p-" + id)})
			want[id] = "p-" + id
		}
		batch = append(batch, chunk)
	}
	if res, _, err := c.PostBatch(ctx, "history", batch, 0); err != nil || len(res.Success) != 15 {
		t.Fatalf("batch: %+v %v", res, err)
	}
	name := func(url string) string {
		for _, n := range tn.Nodes() {
			if n.HTTP == url {
				return n.Name
			}
		}
		return url
	}
	if err := tn.Kill(name(set[0])); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// The next call meets a refused connection, asks the tokenserver
	// (503 while the directory still names the dead primary) until it
	// names the new primary, and reads everything there.
	got := map[string]string{}
	if _, err := c.StreamRecords(ctx, "history", nil, func(r client.Record) error {
		got[r.ID] = *r.Payload
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("client on its new node %v after the kill", time.Since(killed).Round(time.Millisecond))
	if c.Node() == first.APIEndpoint+"/" || c.UID() != first.UID {
		t.Fatalf("client on %s uid %d", c.Node(), c.UID())
	}
	var missing []string
	for id, p := range want {
		if got[id] != p {
			missing = append(missing, id)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 || len(got) != len(want) {
		t.Fatalf("%d records missing on the new node (%d found): %v", len(missing), len(got), missing[:min(len(missing), 10)])
	}
	newSet, err := tn.ReplicaSet(ctx, account)
	if err != nil || newSet[0] == set[0] || !strings.HasPrefix(c.Node(), strings.TrimSuffix(newSet[0], "/")) {
		t.Fatalf("new set %v, client on %s", newSet, c.Node())
	}
	// The old credentials do not open the new node.
	if code := hawkGet(t, strings.Replace(first.APIEndpoint, strings.TrimSuffix(set[0], "/"), strings.TrimSuffix(newSet[0], "/"), 1)+"/info/collections", first.ID, first.Key); code != 401 {
		t.Fatalf("old credentials on the new node: %d", code)
	}
	// Writes go on.
	ts, err := c.Put(ctx, "history", client.Record{ID: "after", Payload: strp("after")}, 0)
	if err != nil || ts.Timestamp == 0 {
		t.Fatalf("write after failover: %v", err)
	}
}
