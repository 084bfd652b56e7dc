package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/client"
)

// The scenarios of issue #10 ("What it must show") that need child
// processes: voters killed the way `hce testnet kill` kills them.

// reliabilityUser is an account written before the fault, with what it
// must read back.
type reliabilityUser struct {
	c    *client.Client
	want map[string]string // id -> payload
}

// writeUsers registers n accounts through the voter at dir with
// api/client and writes 20 records for each; it returns them.
func writeUsers(t *testing.T, ctx context.Context, dir string, n int, tag string) []*reliabilityUser {
	t.Helper()
	var out []*reliabilityUser
	for i := range n {
		c, err := client.New(client.Config{Directory: dir, Email: fmt.Sprintf("%s-%d-%d@example.com", tag, i, time.Now().UnixNano()),
			Password: "reliability story", FailoverWait: 30 * time.Second, HTTP: &http.Client{Timeout: 10 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Register(ctx); err != nil {
			t.Fatalf("register: %v", err)
		}
		u := &reliabilityUser{c: c, want: map[string]string{}}
		u.write(t, ctx, "before", 20)
		out = append(out, u)
	}
	return out
}

// write posts k new records and keeps them as acknowledged.
func (u *reliabilityUser) write(t *testing.T, ctx context.Context, prefix string, k int) {
	t.Helper()
	rs := make([]client.Record, k)
	for i := range rs {
		p := fmt.Sprintf(`{"ciphertext":"%s-%d-%s"}`, prefix, i, u.c.User())
		rs[i] = client.Record{ID: fmt.Sprintf("%s-%d", prefix, i), Payload: &p}
	}
	res, _, err := u.c.Post(ctx, "tabs", rs, 0)
	if err != nil || len(res.Success) != k {
		t.Fatalf("POST for %s: %+v %v", u.c.User(), res, err)
	}
	for _, r := range rs {
		u.want[r.ID] = *r.Payload
	}
}

// read checks that the user reads every acknowledged record back through
// node/weave (the client follows it) and returns a description of what
// is wrong, or "".
func (u *reliabilityUser) read(ctx context.Context) string {
	rs, _, err := u.c.Records(ctx, "tabs", nil)
	if err != nil {
		return fmt.Sprintf("%s: %v", u.c.User(), err)
	}
	got := map[string]string{}
	for _, r := range rs {
		if r.Payload != nil {
			got[r.ID] = *r.Payload
		}
	}
	if !maps.Equal(got, u.want) {
		return fmt.Sprintf("%s on %s reads %d records, %d acknowledged", u.c.User(), u.c.Node(), len(got), len(u.want))
	}
	return ""
}

// TestStoryFirstVoterKilled: `hce testnet kill d1`, the voter every node
// was started against, while the other two voters keep a quorum. For
// four times --down-after no running node is marked down, every user
// still reads every acknowledged record through node/weave and writes
// more; after d1 restarts, the same holds.
func TestStoryFirstVoterKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := chaosNet(t, ctx)
	const downAfter = 2 * time.Second
	voters := tn.Voters()
	first, survivor := voters[0], voters[1]
	users := writeUsers(t, ctx, survivor.HTTP, 3, "first-voter")

	if err := tn.Kill(first.ID); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Watch the directory for 4 x down-after: a node marked down while it
	// runs is a wrong failover.
	watch := time.NewTicker(200 * time.Millisecond)
	defer watch.Stop()
	for time.Since(killed) < 4*downAfter {
		if st, err := tn.Status(ctx); err == nil {
			for _, n := range st.Nodes {
				if n.Running && n.State != "active" {
					t.Fatalf("node %s, which runs, is %q %v after %s was killed", n.Name, n.State,
						time.Since(killed).Round(time.Millisecond), first.ID)
				}
			}
		}
		<-watch.C
	}
	for _, u := range users {
		if why := u.read(ctx); why != "" {
			t.Fatalf("after the kill of %s: %s", first.ID, why)
		}
		u.write(t, ctx, "after-kill", 5)
		if why := u.read(ctx); why != "" {
			t.Fatalf("after the kill of %s, writing: %s", first.ID, why)
		}
	}
	if err := tn.Restart(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithTimeout(ctx, 30*time.Second)
	defer hcancel()
	if err := tn.WaitHealthy(hctx); err != nil {
		t.Fatalf("after %s restarted: %v", first.ID, err)
	}
	for _, u := range users {
		u.write(t, ctx, "after-restart", 5)
		if why := u.read(ctx); why != "" {
			t.Fatalf("after %s restarted: %s", first.ID, why)
		}
		if err := tn.WaitConverged(ctx, u.c.User(), "reliability story"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("killing %s marked no running node down in %v; %d users read everything acknowledged", first.ID, 4*downAfter, len(users))
}

// TestStoryLeaderKilledTwice: the leader is SIGKILLed; registrations
// through every surviving voter succeed again within 5 s. The old leader
// restarts, then the new leader is killed: again within 5 s.
func TestStoryLeaderKilledTwice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := chaosNet(t, ctx)
	hc := &http.Client{Timeout: 10 * time.Second}
	seq := 0
	register := func(base string) error {
		seq++
		email := fmt.Sprintf("leader-killed-%d-%d@example.com", seq, time.Now().UnixNano())
		name := api.AccountName(email)
		body, _ := json.Marshal(map[string]string{"email": email, "password": "leader killed twice"})
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"user/1.0/"+name, bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(b) != name {
			return fmt.Errorf("%s: %d %s", base, resp.StatusCode, bytes.TrimSpace(b))
		}
		return nil
	}
	url := map[string]string{}
	for _, v := range tn.Voters() {
		url[v.ID] = v.HTTP
	}
	killLeader := func(round int) string {
		t.Helper()
		leader, _ := tn.Leader()
		if leader == "" {
			t.Fatalf("round %d: no leader", round)
		}
		if err := tn.Kill(leader); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		for id, base := range url {
			if id == leader {
				continue
			}
			var last error
			tick := time.NewTicker(100 * time.Millisecond)
			for {
				if last = register(base); last == nil {
					break
				}
				if time.Since(killed) > 5*time.Second {
					tick.Stop()
					t.Fatalf("round %d: registrations through %s still fail %v after the leader %s was killed: %v",
						round, id, time.Since(killed).Round(time.Millisecond), leader, last)
				}
				<-tick.C
			}
			tick.Stop()
			t.Logf("round %d: registration through %s succeeded %v after the kill of the leader %s", round, id,
				time.Since(killed).Round(time.Millisecond), leader)
		}
		return leader
	}
	old := killLeader(1)
	if err := tn.Restart(ctx, old); err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithTimeout(ctx, 30*time.Second)
	defer hcancel()
	if err := tn.WaitHealthy(hctx); err != nil {
		t.Fatalf("after %s restarted: %v", old, err)
	}
	if next := killLeader(2); next == old {
		t.Logf("the restarted %s led again", old)
	}
	var out strings.Builder
	st, _ := tn.Status(ctx)
	for _, v := range st.Voters {
		fmt.Fprintf(&out, "%s running=%v; ", v.ID, v.Running)
	}
	t.Logf("voters at the end: %s", out.String())
}
