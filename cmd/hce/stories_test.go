package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/client"
	"github.com/hce-sync/hce/testnet"
)

// storyListing reads every record of coll of user on the node at base
// (GET ?full=1, Basic auth) and returns id -> payload.
func storyListing(ctx context.Context, hc *http.Client, base, user, password, coll string) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"1.1/"+user+"/storage/"+coll+"?full=1", nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(user, password)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ws []struct {
		ID      string `json:"id"`
		Payload string `json:"payload"`
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", base, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&ws); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ws))
	for _, w := range ws {
		out[w.ID] = w.Payload
	}
	return out, nil
}

// TestStoryPrimaryKilledMidStream: a federation of child processes (one
// `hce directory`, three `hce node`); a Sync client streams history
// records in batches, keeping every acknowledged id. While it streams,
// the user's primary is SIGKILLed. The client follows the reassignment
// flow (refused connection -> node/weave until the directory moves the
// user -> retry) to the new primary and goes on writing. At the end every
// acknowledged record, from before and after the kill, is on the new
// primary and, once the replicas converge, on every node of the user's
// new replica set.
func TestStoryPrimaryKilledMidStream(t *testing.T) {
	bin := hceBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const downAfter = 2 * time.Second
	begin := time.Now()
	tn := childNet(t, ctx, testnet.Config{Binary: bin, Directories: 1, Nodes: 3, DownAfter: downAfter, Heartbeat: 250 * time.Millisecond})
	t.Logf("child-process testnet (1 directory, 3 nodes) up in %v", time.Since(begin).Round(time.Millisecond))

	_, dir := tn.Leader()
	const password = "story primary killed"
	hc := &http.Client{Timeout: 10 * time.Second}
	c, err := client.New(client.Config{Directory: dir, Email: "story-killed-primary@example.com", Password: password,
		FailoverWait: 30 * time.Second, HTTP: hc})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Register(ctx); err != nil {
		t.Fatal(err)
	}
	user := c.User()
	set, err := tn.ReplicaSet(ctx, user)
	if err != nil || len(set) != 2 {
		t.Fatalf("replica set %v %v", set, err)
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

	// The client streams batches of 5 records; every acknowledged one is
	// kept with the node that acknowledged it.
	type ack struct {
		id, payload, node string
		at                time.Time
	}
	var (
		mu    sync.Mutex
		acked []ack
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
			rs := make([]client.Record, 5)
			for i := range rs {
				id := fmt.Sprintf("r%05d-%d", n, i)
				p := fmt.Sprintf(`{"ciphertext":"%s","batch":%d}`, strings.Repeat(id, 4), n)
				rs[i] = client.Record{ID: id, Payload: &p}
			}
			res, _, err := c.Post(wctx, "history", rs, 0)
			if wctx.Err() != nil {
				writerDone <- nil
				return
			}
			if err != nil || len(res.Failed) != 0 || len(res.Success) != len(rs) {
				writerDone <- fmt.Errorf("batch %d: %+v %v (client on %s)", n, res, err, c.Node())
				return
			}
			now, node := time.Now(), c.Node()
			mu.Lock()
			for _, r := range rs {
				acked = append(acked, ack{r.ID, *r.Payload, node, now})
			}
			mu.Unlock()
		}
	}()
	waitAcks := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
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

	waitAcks(150, "streaming to the first primary")
	if err := tn.Kill(nameOf(oldPrimary)); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	before := count()
	waitAcks(before+150, "streaming after the kill")
	stopWriter()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	all := append([]ack(nil), acked...)
	mu.Unlock()
	var firstAfter time.Time
	var longestGap time.Duration
	for i, a := range all {
		if i > 0 && a.at.Sub(all[i-1].at) > longestGap {
			longestGap = a.at.Sub(all[i-1].at)
		}
		if firstAfter.IsZero() && a.at.After(killedAt) && a.node != oldPrimary {
			firstAfter = a.at
		}
	}
	if firstAfter.IsZero() {
		t.Fatalf("no write acknowledged by another node after the kill of %s", nameOf(oldPrimary))
	}
	set, err = tn.ReplicaSet(ctx, user)
	if err != nil || len(set) != 2 || set[0] == oldPrimary || set[1] == oldPrimary {
		t.Fatalf("replica set after the kill: %v %v", set, err)
	}
	if c.Node() != set[0] {
		t.Fatalf("client on %s, the new primary is %s", c.Node(), set[0])
	}
	t.Logf("%d records acknowledged before the SIGKILL of %s, %d after; first write on the new primary %s %v after the kill (down-after %v); longest pause between acknowledgements %v",
		before, nameOf(oldPrimary), len(all)-before, nameOf(set[0]), firstAfter.Sub(killedAt).Round(time.Millisecond),
		downAfter, longestGap.Round(time.Millisecond))

	check := func(base string) {
		t.Helper()
		got, err := storyListing(ctx, hc, base, user, password, "history")
		if err != nil {
			t.Fatal(err)
		}
		lost := 0
		for _, a := range all {
			if got[a.id] != a.payload {
				if lost < 5 {
					t.Errorf("acknowledged record %s (acknowledged by %s) missing or changed on %s", a.id, nameOf(a.node), nameOf(base))
				}
				lost++
			}
		}
		if lost > 0 {
			t.Fatalf("%d of %d acknowledged records lost on %s", lost, len(all), nameOf(base))
		}
	}
	check(set[0])
	converging := time.Now()
	if err := tn.WaitConverged(ctx, user, password); err != nil {
		t.Fatal(err)
	}
	t.Logf("new replica set %s, %s converged %v after the writes stopped",
		nameOf(set[0]), nameOf(set[1]), time.Since(converging).Round(time.Millisecond))
	for _, base := range set {
		check(base)
	}
	// Writes the old primary acknowledged without a replica's
	// confirmation (after the 2 s wait) are the ones a kill could lose.
	if b, err := os.ReadFile(filepath.Join(tn.Dir(), "logs", nameOf(oldPrimary)+".log")); err == nil {
		if n := bytes.Count(b, []byte("without a replica's confirmation")); n > 0 {
			t.Logf("the killed primary acknowledged %d writes without a replica's confirmation", n)
		}
	}
}
