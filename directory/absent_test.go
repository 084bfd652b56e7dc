package directory

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// cutFaults cuts a voter's raft links while on is set.
type cutFaults struct{ on atomic.Bool }

func (f *cutFaults) RefuseVoter(string) bool { return f.on.Load() }
func (f *cutFaults) RefusePeer(peer.ID) bool { return false }

// TestNegativeAnswersNeedTheLeader: a follower cut off from raft (its
// HTTP still reaches the leader) does not know accounts registered
// since; it must not say they do not exist, refuse their password or
// deny their node: it answers 503 until it catches up. Accounts that
// exist nowhere are still reported absent, and with no leader reachable
// even those get 503.
func TestNegativeAnswersNeedTheLeader(t *testing.T) {
	cut := &cutFaults{}
	const lagging = "v2"
	c := newTestCluster(t, 3, func(cfg *Config) {
		if cfg.ID == lagging {
			cfg.Faults = cut
		}
	})
	var f *voter
	for _, v := range c.voters {
		if v.id == lagging {
			f = v
		}
	}
	if f == nil || f == c.leader() {
		t.Skipf("the cut voter %q is not a follower", lagging)
	}
	ctx := context.Background()
	l := c.leader()
	if err := l.d.CreateUser(ctx, "before", "a password 1", ""); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() string {
		if ok, err := f.d.UserExists(ctx, "before"); !ok || err != nil {
			return fmt.Sprintf("follower does not see 'before' (%v)", err)
		}
		return ""
	})

	cut.on.Store(true)
	for i := range 5 {
		if err := l.d.CreateUser(ctx, fmt.Sprintf("during-%d", i), "a password 1", ""); err != nil {
			t.Fatal(err)
		}
	}
	// Out of touch with the leader, it does not say who serves an account
	// it knows either: its state may name a member the majority has
	// since marked filling.
	testkit.Eventually(t, 5*time.Second, func() string {
		if url, err := f.d.StorageNode(ctx, "before"); !errors.Is(err, api.ErrUnavailable) {
			return fmt.Sprintf("cut-off follower: StorageNode(before) = %q, %v; want a 503 error", url, err)
		}
		return ""
	})
	if st := f.d.Stats(); st.NotFresh == 0 {
		t.Fatalf("stats %+v: no answer refused as not fresh", st)
	}
	if _, err := l.d.StorageNode(ctx, "before"); err != nil {
		t.Fatalf("leader: StorageNode(before) = %v", err)
	}
	// Never "does not exist" for an account the cluster holds. (A
	// confirmation waits for a leader as long as a write would; the
	// callers here give up after a second.)
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ok, err := f.d.UserExists(short, "during-0")
	if ok || !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("lagging follower: UserExists(during-0) = %v, %v; want a 503 error", ok, err)
	}
	short, cancel = context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := f.d.CheckPassword(short, "during-1", "a password 1"); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("lagging follower: CheckPassword(during-1) = %v; want a 503 error, not a refusal", err)
	}
	short, cancel = context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := f.d.StorageNode(short, "during-2"); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("lagging follower: StorageNode(during-2) = %v; want a 503 error, not 'no such user'", err)
	}
	// Cut off, it may not know a leader any more: then even an account
	// that exists nowhere is not reported absent.
	short, cancel = context.WithTimeout(ctx, time.Second)
	defer cancel()
	if ok, err := f.d.UserExists(short, "nobody"); ok || (err != nil && !errors.Is(err, api.ErrUnavailable)) {
		t.Fatalf("lagging follower: UserExists(nobody) = %v, %v; want false or a 503 error", ok, err)
	}
	if st := f.d.Stats(); st.LookupsBehind+st.LookupsNoLeader == 0 {
		t.Fatalf("stats %+v: no unconfirmed lookup counted", st)
	}

	// Healed: it catches up and answers from its own state again.
	cut.on.Store(false)
	testkit.Eventually(t, 10*time.Second, func() string {
		ok, err := f.d.UserExists(ctx, "during-4")
		if !ok || err != nil {
			return fmt.Sprintf("UserExists(during-4) = %v, %v after the heal", ok, err)
		}
		return ""
	})
	if err := f.d.CheckPassword(ctx, "during-1", "a password 1"); err != nil {
		t.Fatalf("CheckPassword after the heal: %v", err)
	}
	if _, err := f.d.StorageNode(ctx, "before"); err != nil {
		t.Fatalf("StorageNode(before) after the heal: %v", err)
	}
	// An account that exists nowhere is absent once the leader agrees.
	if ok, err := f.d.UserExists(ctx, "nobody"); ok || err != nil {
		t.Fatalf("follower: UserExists(nobody) = %v, %v; want false, nil", ok, err)
	}
	if err := f.d.CheckPassword(ctx, "nobody", "a password 1"); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("follower: CheckPassword(nobody) = %v; want ErrUnauthorized", err)
	}
	if _, err := f.d.StorageNode(ctx, "nobody"); !errors.Is(err, api.ErrUserNotFound) {
		t.Fatalf("follower: StorageNode(nobody) = %v; want ErrUserNotFound", err)
	}
	if ok, err := l.d.UserExists(ctx, "nobody"); ok || err != nil {
		t.Fatalf("leader: UserExists(nobody) = %v, %v; want false, nil", ok, err)
	}

	// No leader at all: a negative answer cannot be confirmed.
	for _, v := range c.voters {
		if v != f {
			c.stop(v)
		}
	}
	short, cancel = context.WithTimeout(ctx, time.Second)
	defer cancel()
	ok, err = f.d.UserExists(short, "nobody")
	if ok || !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("without a leader: UserExists(nobody) = %v, %v; want a 503 error", ok, err)
	}
	if ok, err := f.d.UserExists(ctx, "before"); !ok || err != nil {
		t.Fatalf("without a leader: UserExists(before) = %v, %v; a positive answer needs no leader", ok, err)
	}
}
