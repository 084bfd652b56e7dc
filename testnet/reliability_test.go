package testnet

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
)

// TestStoryUnconfirmedWritesReachNewSet (issue #10): a user's primary A
// is cut off from the other member B of the set and acknowledges writes
// that no replica confirmed; then A leaves the set (an operator drains
// it) and the partition heals. Every write A acknowledged reaches every
// node of the user's new replica set.
func TestStoryUnconfirmedWritesReachNewSet(t *testing.T) {
	ctx := storyContext(t, 90*time.Second)
	tn, c, user, set := storyUserOn(t, ctx, 4)
	a, aName := tn.inProcess(t, set[0])
	_, bName := tn.inProcess(t, set[1])
	want := map[string]string{}
	post := func(base, prefix string, k int) {
		t.Helper()
		rs := storyBatch(prefix, k)
		body, _ := json.Marshal(rs)
		r, err := storyCall(ctx, http.MethodPost, base+"1.1/"+user+"/storage/forms", user, storyPassword, body)
		if err != nil || r.code != http.StatusOK {
			t.Fatalf("POST %s on %s: %v %d %s", prefix, base, err, r.code, r.body)
		}
		var out struct{ Success []string }
		if err := json.Unmarshal(r.body, &out); err != nil || len(out.Success) != k {
			t.Fatalf("POST %s on %s: %s %v", prefix, base, r.body, err)
		}
		for _, rec := range rs {
			want[rec.ID] = *rec.Payload
		}
	}
	storyPost(t, ctx, c, "forms", storyBatch("confirmed", 5))
	for _, r := range storyBatch("confirmed", 5) {
		want[r.ID] = *r.Payload
	}

	// A cut from B: its writes wait for B, then are acknowledged anyway.
	if err := tn.Cut([]string{aName}, []string{bName}); err != nil {
		t.Fatal(err)
	}
	b, _ := tn.inProcess(t, bName)
	testkit.WaitFor(t, 5*time.Second, "the cut applied", func() bool { return a.deny.blocked(b.PeerID()) && b.deny.blocked(a.PeerID()) })
	before := a.Store().UnconfirmedWrites()
	for i := range 3 {
		post(set[0], fmt.Sprintf("alone%d", i), 5)
	}
	if got := a.Store().UnconfirmedWrites() - before; got == 0 {
		t.Fatal("A acknowledged no write without a replica; the scenario did not happen")
	} else {
		t.Logf("%s acknowledged %d writes that no replica confirmed", aName, got)
	}

	// A leaves the set: drained by the operator.
	if err := tn.Drain(ctx, aName); err != nil {
		t.Fatal(err)
	}
	var final []string
	testkit.Eventually(t, 30*time.Second, func() string {
		s, err := tn.ReplicaSet(ctx, user)
		if err != nil {
			return err.Error()
		}
		if slices.Contains(s, set[0]) || len(s) != 2 {
			return fmt.Sprintf("user still on %v", s)
		}
		final = s
		return ""
	})
	if err := tn.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	testkit.Eventually(t, 30*time.Second, func() string {
		var why []string
		for _, base := range final {
			got, _, err := storyListing(ctx, base, user, storyPassword, "forms", "")
			if err != nil {
				return err.Error()
			}
			missing := 0
			for id, p := range want {
				if got[id].Payload != p {
					missing++
				}
			}
			if missing > 0 {
				why = append(why, fmt.Sprintf("%s lacks %d of %d acknowledged records", base, missing, len(want)))
			}
		}
		return strings.Join(why, "; ")
	})
	t.Logf("every write %s acknowledged alone is on the new set %v, %v after the heal", aName, final,
		time.Since(healed).Round(time.Millisecond))
	if err := tn.WaitConverged(ctx, user, storyPassword); err != nil {
		t.Fatal(err)
	}
}
