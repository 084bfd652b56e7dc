package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/client"
	"github.com/hce-sync/hce/testnet"
)

// TestStorySync15PrimaryKilled: a federation of child processes (one
// `hce directory --fxa-local`, three `hce node`); a Firefox-like Sync 1.5
// client (an access token from the local issuer, Hawk credentials from
// the tokenserver) streams history records in POSTs and batch uploads,
// keeping every acknowledged id. Its node is SIGKILLed mid-stream. The
// client meets a refused connection, asks the tokenserver again until the
// directory moves its uid's account to the replica, and goes on there; at
// the end every acknowledged record, from before and after the kill, is
// on the new node, read through the Sync 1.5 API.
func TestStorySync15PrimaryKilled(t *testing.T) {
	bin := hceBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	tn := childNet(t, ctx, testnet.Config{Binary: bin, Directories: 1, Nodes: 3, DownAfter: 2 * time.Second, Heartbeat: 250 * time.Millisecond})
	_, dir := tn.Leader()
	hc := &http.Client{Timeout: 10 * time.Second}
	const password = "story sync15 killed"
	weave, err := client.New(client.Config{Directory: dir, Email: "story-sync15@example.com", Password: password, HTTP: hc})
	if err != nil {
		t.Fatal(err)
	}
	if err := weave.Register(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Directory: dir, User: weave.User(), Password: password, API: client.API15,
		FailoverWait: 40 * time.Second, HTTP: hc})
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.SyncToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	account := fmt.Sprintf("sync-%d", first.UID)
	set, err := tn.ReplicaSet(ctx, account)
	if err != nil || len(set) != 2 {
		t.Fatalf("replica set of %s: %v %v", account, set, err)
	}
	nameOf := func(url string) string {
		for _, n := range tn.Nodes() {
			if n.HTTP == url {
				return n.Name
			}
		}
		return url
	}
	oldPrimary := set[0]

	var (
		mu    sync.Mutex
		acked = map[string]string{}
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	wctx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	writerDone := make(chan error, 1)
	go func() {
		for n := 0; ; n++ {
			if wctx.Err() != nil {
				writerDone <- nil
				return
			}
			var chunks [][]client.Record
			for k := 0; k < 1+n%3; k++ { // POSTs and batches of 2 and 3 requests
				var rs []client.Record
				for i := 0; i < 5; i++ {
					id := fmt.Sprintf("r%05d-%d-%d", n, k, i)
					p := fmt.Sprintf(`{"ciphertext":"%s"}`, strings.Repeat(id, 3))
					rs = append(rs, client.Record{ID: id, Payload: &p})
				}
				chunks = append(chunks, rs)
			}
			res, _, err := c.PostBatch(wctx, "history", chunks, 0)
			if wctx.Err() != nil {
				writerDone <- nil
				return
			}
			if err != nil && client.StatusOf(err) == http.StatusBadRequest && len(chunks) > 1 {
				// A batch opened on the killed node: start it over.
				continue
			}
			if err != nil || len(res.Failed) != 0 {
				writerDone <- fmt.Errorf("upload %d: %+v %v (client on %s)", n, res, err, c.Node())
				return
			}
			mu.Lock()
			for _, ch := range chunks {
				for _, r := range ch {
					acked[r.ID] = *r.Payload
				}
			}
			mu.Unlock()
		}
	}()
	waitAcks := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(40 * time.Second)
		for count() < n {
			select {
			case err := <-writerDone:
				t.Fatalf("writer stopped while %s: %v", what, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d records acknowledged while %s", count(), what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAcks(150, "streaming to the first node")
	if err := tn.Kill(nameOf(oldPrimary)); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	before := count()
	waitAcks(before+150, "streaming after the SIGKILL")
	stopWriter()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	set, err = tn.ReplicaSet(ctx, account)
	if err != nil || set[0] == oldPrimary {
		t.Fatalf("replica set after the kill: %v %v", set, err)
	}
	if !strings.HasPrefix(c.Node(), strings.TrimSuffix(set[0], "/")) || c.UID() != first.UID {
		t.Fatalf("client on %s (uid %d), the new primary is %s", c.Node(), c.UID(), set[0])
	}
	got := map[string]string{}
	if _, err := c.StreamRecords(ctx, "history", nil, func(r client.Record) error {
		got[r.ID] = *r.Payload
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	lost := 0
	for id, p := range acked {
		if got[id] != p {
			if lost < 5 {
				t.Errorf("acknowledged record %s missing or changed on %s", id, nameOf(set[0]))
			}
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged records lost", lost, len(acked))
	}
	t.Logf("%d records acknowledged before the SIGKILL of %s, %d after; all %d found on %s through Sync 1.5 (%v after the kill)",
		before, nameOf(oldPrimary), len(acked)-before, len(acked), nameOf(set[0]), time.Since(killed).Round(time.Millisecond))
}
