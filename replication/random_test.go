package replication

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node"
)

// TestRandomConvergence runs seeded random histories on in-memory nodes:
// random writes, deletes and wipes on random nodes, pulls between random
// pairs in random order (so revisions arrive in any order, in small
// batches), random partitions. After healing and pulling to quiescence,
// every replica must be identical and hold every acknowledged write.
// HCE_REPL_RANDOM_ITERS sets the number of histories (default 4);
// HCE_REPL_RANDOM_SEED replays one.
func TestRandomConvergence(t *testing.T) {
	iters := 4
	if v, err := strconv.Atoi(os.Getenv("HCE_REPL_RANDOM_ITERS")); err == nil && v > 0 {
		iters = v
	}
	seed0 := uint64(1)
	if v, err := strconv.ParseUint(os.Getenv("HCE_REPL_RANDOM_SEED"), 10, 64); err == nil {
		seed0, iters = v, 1
	}
	for i := range iters {
		seed := seed0 + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { randomHistory(t, seed) })
	}
}

func randomHistory(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	n := 2 + rng.IntN(3)
	c := newCluster(t, n, clusterOpts{mem: true, noStart: true, changesBatch: 1 + rng.IntN(4), fetchBatch: 1 + rng.IntN(3)})
	users := []string{"u0", "u1"}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	for _, u := range users {
		c.share(u, all...)
	}
	stores := make([]*node.Store, n)
	for i, tn := range c.nodes {
		stores[i] = tn.store
	}
	var acks ackLog
	colls := []string{"a", "b"}
	steps := 150 + rng.IntN(150)
	for step := range steps {
		i := rng.IntN(n)
		s := stores[i]
		u := users[rng.IntN(len(users))]
		coll := colls[rng.IntN(len(colls))]
		id := fmt.Sprintf("r%d", rng.IntN(6))
		switch op := rng.IntN(100); {
		case op < 35:
			acks.put(t, s, u, coll, id, fmt.Sprintf("s%d n%d step%d", seed, i, step))
		case op < 40:
			ws := []api.WBO{testkit.WBO(id, fmt.Sprintf("b1 %d", step)), testkit.WBO(id+"x", fmt.Sprintf("b2 %d", step))}
			if _, err := s.PostItems(bg, u, coll, ws, api.Precondition{}); err != nil {
				t.Fatal(err)
			}
		case op < 46:
			if _, err := s.DeleteItem(bg, u, coll, id, api.Precondition{}); err != nil {
				t.Fatal(err)
			}
		case op < 48:
			if _, err := s.DeleteCollection(bg, u, coll, nil, api.Precondition{}); err != nil {
				t.Fatal(err)
			}
		case op < 49:
			if _, err := s.DeleteStorage(bg, u); err != nil {
				t.Fatal(err)
			}
		case op < 53:
			a, b := rng.IntN(n), rng.IntN(n)
			if a != b {
				c.partition(a, b)
			}
		case op < 57:
			a, b := rng.IntN(n), rng.IntN(n)
			c.heal(a, b)
		default:
			j := rng.IntN(n)
			if j == i {
				continue
			}
			// Errors are expected across a partition.
			_ = c.nodes[i].repl.pull(bg, c.nodes[j].id, u)
		}
	}
	c.net.HealAll()
	for round := 0; ; round++ {
		if round > 20 {
			t.Fatalf("no convergence after %d rounds: %s", round, diff(users[0], stores...)+diff(users[1], stores...))
		}
		for _, i := range rng.Perm(n) {
			for _, j := range rng.Perm(n) {
				if i == j {
					continue
				}
				for _, u := range users {
					if err := c.nodes[i].repl.pull(bg, c.nodes[j].id, u); err != nil {
						t.Fatalf("pull %d<-%d %s: %v", i, j, u, err)
					}
				}
			}
		}
		if diff(users[0], stores...) == "" && diff(users[1], stores...) == "" {
			break
		}
	}
	acks.check(t, stores...)
	for i, tn := range c.nodes {
		if st := tn.repl.Stats(); st.RefusedRevisions != 0 {
			t.Errorf("node %d refused %d revisions", i, st.RefusedRevisions)
		}
	}
}
