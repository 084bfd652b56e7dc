package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// sim is a toy directory: it keeps nodes and assignments, derives loads from
// the assignments, and applies the policy the way the FSM does.
type sim struct {
	t     *testing.T
	rng   *rand.Rand
	r     int
	pol   Policy
	nodes []Node // in insertion order; Load is recomputed by sync
	as    map[string]Assignment
	nextN int
	nextU int
	log   []string // every decision, for the determinism check
}

func newSim(t *testing.T, seed uint64) *sim {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := Policy{ReleaseStep: 1 + rng.IntN(5), ReleaseInterval: uint64(1 + rng.IntN(20)),
		NewNodeWindow: uint64(1 + rng.IntN(30))}
	return &sim{t: t, rng: rng, r: 1 + rng.IntN(3), pol: p, as: map[string]Assignment{}}
}

func (s *sim) tick() { s.pol.Now++ }

// sync recomputes every node's Load from the assignments.
func (s *sim) sync() {
	all := make([]Assignment, 0, len(s.as))
	for _, a := range s.as {
		all = append(all, a)
	}
	loads := Loads(all)
	for i := range s.nodes {
		s.nodes[i].Load = loads[s.nodes[i].ID]
	}
}

// replace moves one user's load from the old set to the new one.
func (s *sim) replace(old, cur []string) {
	for _, id := range old {
		s.node(id).Load--
	}
	for _, id := range cur {
		s.node(id).Load++
	}
}

// shuffled returns the nodes in a random order (the policy must not care).
func (s *sim) shuffled() []Node {
	out := slices.Clone(s.nodes)
	s.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (s *sim) node(id string) *Node {
	// IDs are n%03d in insertion order.
	var i int
	if _, err := fmt.Sscanf(id, "n%d", &i); err != nil || i >= len(s.nodes) {
		return nil
	}
	return &s.nodes[i]
}

func (s *sim) users() []string {
	out := make([]string, 0, len(s.as))
	for u := range s.as {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// spare counts Active nodes with Load < Capacity, and their distinct operators.
func (s *sim) spare(exclude []string) (n int, ops int) {
	seen := map[string]bool{}
	for _, x := range s.nodes {
		if x.State == Active && x.Load < x.Capacity && !slices.Contains(exclude, x.ID) {
			n++
			if !seen[x.Operator] {
				seen[x.Operator] = true
				ops++
			}
		}
	}
	return n, ops
}

func (s *sim) addNode() {
	s.tick()
	id := fmt.Sprintf("n%03d", s.nextN)
	s.nextN++
	s.nodes = append(s.nodes, Node{ID: id, Operator: fmt.Sprintf("op%d", s.rng.IntN(4)),
		Capacity: s.rng.IntN(25), State: Active, Added: s.pol.Now})
	s.log = append(s.log, "add "+id)
	s.repairAll()
}

func (s *sim) assignUser() {
	s.tick()
	u := fmt.Sprintf("u%04d", s.nextU)
	s.nextU++
	got, err := Assign(s.shuffled(), s.r, s.pol)
	again, err2 := Assign(s.shuffled(), s.r, s.pol)
	if fmt.Sprint(got, err) != fmt.Sprint(again, err2) {
		s.t.Fatalf("Assign not deterministic: %v/%v vs %v/%v", got, err, again, err2)
	}
	spare, ops := s.spare(nil)
	s.log = append(s.log, fmt.Sprintf("assign %s %v %v", u, got, err))
	switch {
	case spare == 0:
		if !errors.Is(err, ErrNoCapacity) || got != nil {
			s.t.Fatalf("no spare node: got %v, %v", got, err)
		}
		return
	case spare < s.r:
		if !errors.Is(err, ErrUnderReplicated) {
			s.t.Fatalf("%d spare < r=%d: err %v", spare, s.r, err)
		}
	case err != nil:
		s.t.Fatalf("Assign: %v", err)
	}
	if want := min(s.r, spare); len(got) != want {
		s.t.Fatalf("Assign gave %d nodes, want %d", len(got), want)
	}
	opsUsed := map[string]bool{}
	for _, id := range got {
		n := s.node(id)
		if n == nil || n.State != Active || n.Load >= n.Capacity {
			s.t.Fatalf("Assign chose ineligible node %v", n)
		}
		opsUsed[n.Operator] = true
	}
	if want := min(len(got), ops); len(opsUsed) != want {
		s.t.Fatalf("Assign %v spans %d operators, %d possible", got, len(opsUsed), want)
	}
	// The primary is new only if no established node could take the user.
	if s.pol.IsNew(*s.node(got[0])) {
		for _, n := range s.nodes {
			if n.State == Active && n.Load < n.Capacity && !s.pol.IsNew(n) {
				s.t.Fatalf("new node %s made primary while established %s could", got[0], n.ID)
			}
		}
	}
	s.as[u] = Assignment{User: u, Nodes: got}
	s.sync()
}

func (s *sim) pick(states ...State) *Node {
	var c []int
	for i, n := range s.nodes {
		if slices.Contains(states, n.State) {
			c = append(c, i)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return &s.nodes[c[s.rng.IntN(len(c))]]
}

func (s *sim) setState(from []State, to State) {
	s.tick()
	if n := s.pick(from...); n != nil {
		n.State = to
		s.log = append(s.log, fmt.Sprintf("%s -> %s", n.ID, to))
		s.repairAll()
	}
}

// drain takes an Active node through Draining to Retired with the two-step
// plan, checking that no user is ever without a live node.
func (s *sim) drain() {
	s.tick()
	n := s.pick(Active)
	if n == nil {
		return
	}
	id := n.ID
	n.State = Draining
	all := make([]Assignment, 0, len(s.as))
	for _, u := range s.users() {
		all = append(all, s.as[u])
	}
	rev := slices.Clone(all)
	slices.Reverse(rev)
	moves, err := Drain(all, id, s.shuffled(), s.r, s.pol)
	moves2, err2 := Drain(rev, id, s.shuffled(), s.r, s.pol)
	if fmt.Sprint(moves, err) != fmt.Sprint(moves2, err2) {
		s.t.Fatalf("Drain not deterministic:\n%v %v\n%v %v", moves, err, moves2, err2)
	}
	if err != nil && !errors.Is(err, ErrNoCapacity) {
		s.t.Fatal(err)
	}
	s.log = append(s.log, fmt.Sprintf("drain %s %v %v", id, moves, err))
	for _, mv := range moves {
		old := s.as[mv.User].Nodes
		if !slices.Equal(mv.Add[:len(old)], old) {
			s.t.Fatalf("Add %v does not extend %v", mv.Add, old)
		}
		s.as[mv.User] = Assignment{User: mv.User, Nodes: mv.Add}
	}
	s.sync()
	s.checkCapacity()
	for _, mv := range moves {
		if slices.Contains(mv.Final, id) || !s.hasActive(mv.Final) || s.node(mv.Final[0]).State != Active {
			s.t.Fatalf("Final %v of %s keeps %s or has no live primary", mv.Final, mv.User, id)
		}
		s.as[mv.User] = Assignment{User: mv.User, Nodes: mv.Final}
	}
	s.sync()
	if s.node(id).Load == 0 {
		s.node(id).State = Retired
	}
	s.repairAll()
}

func (s *sim) hasActive(set []string) bool {
	for _, id := range set {
		if n := s.node(id); n != nil && n.State == Active {
			return true
		}
	}
	return false
}

// repairAll runs Repair over every user, in user order, until nothing changes
// (a draining sole copy takes two rounds).
func (s *sim) repairAll() {
	s.sync()
	for round := 0; ; round++ {
		if round > 3 {
			s.t.Fatal("repair does not converge")
		}
		changedAny := false
		for _, u := range s.users() {
			a := s.as[u]
			got, changed := Repair(a, s.shuffled(), s.r, s.pol)
			got2, changed2 := Repair(a, s.shuffled(), s.r, s.pol)
			if !slices.Equal(got.Nodes, got2.Nodes) || changed != changed2 {
				s.t.Fatalf("Repair not deterministic: %v vs %v", got.Nodes, got2.Nodes)
			}
			if !changed {
				if !slices.Equal(got.Nodes, a.Nodes) {
					s.t.Fatalf("unchanged repair returned a different set")
				}
				continue
			}
			// Never leave the user without a live node if it had one.
			if s.hasLive(a.Nodes) && !s.hasLive(got.Nodes) {
				s.t.Fatalf("repair of %v to %v lost every live node", a.Nodes, got.Nodes)
			}
			// Kept members are old members; added ones are new.
			for _, id := range got.Nodes {
				if !slices.Contains(a.Nodes, id) {
					if n := s.node(id); n.State != Active || n.Load >= n.Capacity {
						s.t.Fatalf("repair added ineligible %v", n)
					}
				}
			}
			s.log = append(s.log, fmt.Sprintf("repair %s %v", u, got.Nodes))
			s.replace(a.Nodes, got.Nodes)
			s.as[u] = got
			changedAny = true
		}
		if !changedAny {
			break
		}
	}
	s.check()
}

func (s *sim) hasLive(set []string) bool {
	for _, id := range set {
		if n := s.node(id); n != nil && (n.State == Active || n.State == Draining) {
			return true
		}
	}
	return false
}

func (s *sim) checkCapacity() {
	for _, n := range s.nodes {
		if n.Load > max(n.Capacity, 0) {
			s.t.Fatalf("node %s over capacity: %d > %d", n.ID, n.Load, n.Capacity)
		}
	}
}

// check verifies the steady-state invariants after a full repair.
func (s *sim) check() {
	before := slices.Clone(s.nodes)
	s.sync()
	if !slices.Equal(before, s.nodes) {
		s.t.Fatal("incremental loads drifted from Loads()")
	}
	s.checkCapacity()
	for _, u := range s.users() {
		set := s.as[u].Nodes
		seen := map[string]bool{}
		active := 0
		for _, id := range set {
			if seen[id] {
				s.t.Fatalf("user %s: duplicate node in %v", u, set)
			}
			seen[id] = true
			if s.node(id).State == Active {
				active++
			}
		}
		spare, _ := s.spare(set)
		// Every user has min(R, eligible) live nodes: R, or all it could get.
		if want := min(s.r, active+spare); active != want {
			s.t.Fatalf("user %s: %d active nodes in %v, want %d (spare %d)", u, active, set, want, spare)
		}
		if active > 0 && s.node(set[0]).State != Active {
			s.t.Fatalf("user %s: primary %s is %s", u, set[0], s.node(set[0]).State)
		}
		for _, id := range set {
			if st := s.node(id).State; active > 0 && st != Active {
				s.t.Fatalf("user %s: set %v keeps %s node %s after repair", u, set, st, id)
			}
		}
	}
}

func (s *sim) run(steps int) string {
	for range steps {
		switch k := s.rng.IntN(20); {
		case k < 3:
			s.addNode()
		case k < 13:
			s.assignUser()
		case k < 15:
			s.setState([]State{Active, Draining}, Down)
		case k < 17:
			s.setState([]State{Down}, Active)
		case k < 18:
			s.setState([]State{Down}, Retired)
		default:
			s.drain()
		}
	}
	var b strings.Builder
	for _, l := range s.log {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

func TestPropertyRandomClusters(t *testing.T) {
	seeds := 50
	if testing.Short() {
		seeds = 20
	}
	for seed := range uint64(seeds) {
		a := newSim(t, seed).run(120)
		b := newSim(t, seed).run(120)
		if a != b {
			t.Fatalf("seed %d: same operations gave different decisions", seed)
		}
	}
}
