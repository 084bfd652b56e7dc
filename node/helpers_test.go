package node

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// newFakeClock returns a hand-moved wall clock at a fixed start.
func newFakeClock() *testkit.Clock { return testkit.NewClock(time.Unix(1_700_000_000, 0)) }

var ctx = context.Background()

func openTest(t testing.TB, dir string, clk *testkit.Clock, quota int64) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.QuotaBytes = quota
	cfg.CacheBytes = 8 << 20
	cfg.MemTableBytes = 4 << 20
	if clk != nil {
		cfg.Clock = clk.Now
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustPut(t testing.TB, s *Store, user, coll string, w api.WBO) api.WriteResult {
	t.Helper()
	r, err := s.PutItem(ctx, user, coll, w, api.Precondition{})
	if err != nil {
		t.Fatalf("PutItem(%s/%s/%s): %v", user, coll, w.ID, err)
	}
	return r
}

func mustPost(t testing.TB, s *Store, user, coll string, ws ...api.WBO) api.BatchResult {
	t.Helper()
	r, err := s.PostItems(ctx, user, coll, ws, api.Precondition{})
	if err != nil {
		t.Fatalf("PostItems(%s/%s): %v", user, coll, err)
	}
	return r
}

func mustGet(t testing.TB, s *Store, user, coll string, q api.Query) []api.WBO {
	t.Helper()
	ws, _, err := api.ReadCollection(ctx, s, user, coll, &q)
	if err != nil {
		t.Fatalf("GetCollection(%s/%s): %v", user, coll, err)
	}
	return ws
}

func idsOf(ws []api.WBO) []string {
	out := []string{}
	for _, w := range ws {
		out = append(out, w.ID)
	}
	return out
}

func sameIDs(t testing.TB, what string, got []api.WBO, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if g := idsOf(got); !slices.Equal(g, want) {
		t.Errorf("%s: ids = %q, want %q", what, g, want)
	}
}

func rawPrefixKeys(t testing.TB, s *Store, lo []byte) int {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(nil, lo)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n
}

// rawKeys counts the user's keys in Pebble.
func rawKeys(t testing.TB, s *Store, user string) int {
	return rawPrefixKeys(t, s, userStart(nil, keyOf(t, s, user)))
}

// viewKeys counts the user's keys outside the revision keys (documents,
// changes, checkpoints, _local documents): the Weave view and metadata.
func viewKeys(t testing.TB, s *Store, user string) int {
	n := rawKeys(t, s, user)
	for _, tag := range []byte{tagDoc, tagChg, tagCkpt, tagLocal, tagAnc, tagHist} {
		n -= rawPrefixKeys(t, s, userTag(nil, keyOf(t, s, user), tag))
	}
	return n
}

// keyOf returns user's key prefix in s (its name in a store of the name
// layout).
func keyOf(t testing.TB, s *Store, user string) ukey {
	t.Helper()
	kp, err := s.userKeyOf(user)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}
