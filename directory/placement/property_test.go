package placement

import (
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// sim is a toy directory: it keeps nodes and replica sets, derives loads
// from the sets, and applies the policy the way the directory's state
// machine does (the operation, then Normalize over every set, in user
// order), checking the invariants after every step.
type sim struct {
	t     *testing.T
	rng   *rand.Rand
	r     int
	pol   Policy
	seq   uint64
	nodes []Node // in insertion order; Load is recomputed by sync
	sets  map[string]Set
	nextN int
	nextU int
	log   []string // every decision, for the determinism check
}

func newSim(t *testing.T, seed uint64) *sim {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := Policy{ReleaseStep: 1 + rng.IntN(5), ReleaseInterval: uint64(1 + rng.IntN(20)),
		NewNodeWindow: uint64(1 + rng.IntN(30))}
	return &sim{t: t, rng: rng, r: 1 + rng.IntN(3), pol: p, sets: map[string]Set{}}
}

func (s *sim) tick() { s.pol.Now++ }

// sync recomputes every node's Load from the sets.
func (s *sim) sync() {
	all := make([]Set, 0, len(s.sets))
	for _, u := range s.users() {
		all = append(all, s.sets[u])
	}
	loads := Loads(all)
	for i := range s.nodes {
		s.nodes[i].Load = loads[s.nodes[i].ID]
	}
}

// shuffled returns the nodes in a random order (the policy must not care).
func (s *sim) shuffled() []Node {
	out := slices.Clone(s.nodes)
	s.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (s *sim) node(id string) *Node {
	var i int
	if _, err := fmt.Sscanf(id, "n%d", &i); err != nil || i >= len(s.nodes) {
		return nil
	}
	return &s.nodes[i]
}

func (s *sim) users() []string {
	out := make([]string, 0, len(s.sets))
	for u := range s.sets {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

func (s *sim) randomUser() (string, Set, bool) {
	us := s.users()
	if len(us) == 0 {
		return "", Set{}, false
	}
	u := us[s.rng.IntN(len(us))]
	return u, s.sets[u], true
}

func (s *sim) isAlive(id string) bool {
	n := s.node(id)
	return n != nil && Alive(*n)
}

func (s *sim) addNode() {
	id := fmt.Sprintf("n%03d", s.nextN)
	s.nextN++
	s.nodes = append(s.nodes, Node{ID: id, Operator: fmt.Sprintf("op%d", s.rng.IntN(4)),
		Capacity: s.rng.IntN(25), State: Active, Added: s.pol.Now})
	s.log = append(s.log, "add "+id)
}

func (s *sim) assignUser() {
	u := fmt.Sprintf("u%04d", s.nextU)
	s.nextU++
	got, err := Assign(s.shuffled(), s.r, s.pol)
	s.log = append(s.log, fmt.Sprintf("assign %s %v %v", u, got, err))
	if err != nil && !errors.Is(err, ErrUnderReplicated) {
		return
	}
	s.sets[u] = NewSet(got)
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
	if n := s.pick(from...); n != nil {
		if to == Retired && n.State == Draining && n.Load > 0 {
			return // a drain ends when the node holds no user
		}
		n.State = to
		s.log = append(s.log, fmt.Sprintf("%s -> %s", n.ID, to))
	}
}

// unconfirmed: a random member acknowledges a write some others did not
// confirm.
func (s *sim) unconfirmed() {
	u, set, ok := s.randomUser()
	if !ok || len(set.Members) == 0 {
		return
	}
	caller := set.Members[s.rng.IntN(len(set.Members))]
	var confirmed []string
	for _, m := range set.Members {
		if s.rng.IntN(2) == 0 {
			confirmed = append(confirmed, m.ID)
		}
	}
	got, ok := MarkUnconfirmed(set, caller.ID, confirmed, &s.seq)
	if ok == caller.Filling {
		s.t.Fatalf("MarkUnconfirmed by %+v applied=%v", caller, ok)
	}
	for _, m := range got.Members {
		if ok && m.ID != caller.ID && !slices.Contains(confirmed, m.ID) && !m.Filling {
			s.t.Fatalf("unconfirmed member %s still current in %s", m.ID, notation(got))
		}
	}
	s.log = append(s.log, fmt.Sprintf("unconfirmed %s by %s %v: %s", u, caller.ID, confirmed, notation(got)))
	s.sets[u] = got
}

// filled: a filling member reports a backfill, sometimes under a stale
// epoch or from a filling source (both must be refused).
func (s *sim) filled() {
	u, set, ok := s.randomUser()
	if !ok {
		return
	}
	var filling []Member
	for _, m := range set.Members {
		if m.Filling {
			filling = append(filling, m)
		}
	}
	if len(filling) == 0 || len(set.Members) < 2 {
		return
	}
	m := filling[s.rng.IntN(len(filling))]
	src := set.Members[s.rng.IntN(len(set.Members))]
	epoch := m.Epoch
	if s.rng.IntN(4) == 0 {
		epoch--
	}
	got, ok := MarkFilled(set, m.ID, epoch, src.ID)
	want := epoch == m.Epoch && !src.Filling && src.ID != m.ID
	if ok != want {
		s.t.Fatalf("MarkFilled(%s, %s, %d, %s) = %v, want %v", notation(set), m.ID, epoch, src.ID, ok, want)
	}
	s.log = append(s.log, fmt.Sprintf("filled %s %s: %s", u, m.ID, notation(got)))
	s.sets[u] = got
}

// handoff: a member reports a handoff from a leaving node.
func (s *sim) handoff() {
	u, set, ok := s.randomUser()
	if !ok || len(set.Leaving) == 0 || len(set.Members) == 0 {
		return
	}
	m := set.Members[s.rng.IntN(len(set.Members))]
	got, ok := HandOff(set, m.ID, set.Leaving[0])
	if ok == m.Filling {
		s.t.Fatalf("HandOff by %+v applied=%v", m, ok)
	}
	s.log = append(s.log, fmt.Sprintf("handoff %s: %s", u, notation(got)))
	s.sets[u] = got
}

// finishLeaves drops every leaving member that may leave, as the leader's
// loop does.
func (s *sim) finishLeaves() {
	for _, u := range s.users() {
		for _, m := range s.sets[u].Members {
			before := s.sets[u]
			got, ok := FinishLeave(before, m.ID, s.shuffled())
			if !ok {
				continue
			}
			if !got.Current() || slices.ContainsFunc(got.Members, func(m Member) bool { return m.Filling && s.node(m.ID).State == Active && !m.Leave }) {
				s.t.Fatalf("FinishLeave of %s from %s gave %s", m.ID, notation(before), notation(got))
			}
			s.log = append(s.log, fmt.Sprintf("leave %s %s", u, m.ID))
			s.sets[u] = got
			s.sync()
		}
	}
}

// rebalance starts the transfers Rebalance proposes, one per source, as
// the leader's loop does.
func (s *sim) rebalance() int {
	s.sync()
	started := 0
	used := map[string]bool{}
	for _, t := range Rebalance(s.shuffled(), s.pol) {
		if used[t.From] || used[t.To] {
			continue
		}
		for _, u := range s.users() {
			if !CanTransfer(s.sets[u], t, s.nodes) {
				continue
			}
			got, err := StartTransfer(s.sets[u], t, s.shuffled(), s.pol, &s.seq)
			if err != nil {
				s.t.Fatalf("StartTransfer after CanTransfer: %v", err)
			}
			s.log = append(s.log, fmt.Sprintf("transfer %s %v", u, t))
			s.sets[u] = got
			used[t.From], used[t.To] = true, true
			started++
			s.sync()
			break
		}
	}
	return started
}

// normalizeAll applies Normalize to every set in user order and checks
// that doing it again changes nothing.
func (s *sim) normalizeAll(retiring bool) {
	s.sync()
	for _, u := range s.users() {
		before := s.sets[u]
		got, oc := Normalize(before, s.shuffled(), s.r, s.pol, &s.seq)
		if oc.Lost && !retiring {
			s.t.Fatalf("user %s lost its current copies without a retirement: %s -> %s", u, notation(before), notation(got))
		}
		if before.Current() && !got.Current() && !(retiring && len(got.Members) == 0) {
			s.t.Fatalf("user %s lost its only current member: %s -> %s", u, notation(before), notation(got))
		}
		if oc.Changed {
			s.log = append(s.log, fmt.Sprintf("normalize %s %s", u, notation(got)))
			s.sets[u] = got
			s.sync()
		}
	}
	for _, u := range s.users() {
		seq := s.seq
		again, oc := Normalize(s.sets[u], s.shuffled(), s.r, s.pol, &seq)
		if oc.Changed || !again.Equal(s.sets[u]) {
			s.t.Fatalf("user %s: Normalize not idempotent: %s -> %s", u, notation(s.sets[u]), notation(again))
		}
	}
	s.check()
}

// check verifies the invariants of every set.
func (s *sim) check() {
	for _, n := range s.nodes {
		if n.Load > max(n.Capacity, 0) {
			s.t.Fatalf("node %s over capacity: %d > %d", n.ID, n.Load, n.Capacity)
		}
	}
	for _, u := range s.users() {
		set := s.sets[u]
		seen := map[string]bool{}
		for _, id := range append(set.IDs(), set.Leaving...) {
			if seen[id] {
				s.t.Fatalf("user %s: %s twice in %s", u, id, notation(set))
			}
			seen[id] = true
		}
		if len(set.Members) == 0 {
			continue
		}
		if !set.Current() {
			s.t.Fatalf("user %s has no current member: %s", u, notation(set))
		}
		// A primary is never a filling member, and is alive when a current
		// member is.
		if set.Members[0].Filling {
			s.t.Fatalf("user %s: filling primary in %s", u, notation(set))
		}
		liveCurrent := slices.ContainsFunc(set.Members, func(m Member) bool { return !m.Filling && s.isAlive(m.ID) })
		if liveCurrent && !s.isAlive(set.Members[0].ID) {
			s.t.Fatalf("user %s: dead primary while a current member is alive: %s", u, notation(set))
		}
		if !liveCurrent {
			continue
		}
		serving := 0
		for _, m := range set.Members {
			n := s.node(m.ID)
			if !Alive(*n) {
				s.t.Fatalf("user %s keeps dead member %s although a current member is alive: %s", u, m.ID, notation(set))
			}
			if n.State == Active && !m.Leave {
				serving++
			}
		}
		if serving < s.r {
			for _, n := range s.nodes {
				if n.State == Active && n.Load < n.Capacity && !set.Names(n.ID) {
					s.t.Fatalf("user %s: %d serving members < %d while %s has room: %s", u, serving, s.r, n.ID, notation(set))
				}
			}
		}
	}
}

func (s *sim) run(steps int) string {
	for range steps {
		s.tick()
		retiring := false
		switch k := s.rng.IntN(24); {
		case k < 3:
			s.addNode()
		case k < 10:
			s.assignUser()
		case k < 12:
			s.setState([]State{Active, Draining}, Down)
		case k < 14:
			s.setState([]State{Down}, Active)
		case k < 15:
			retiring = true
			s.setState([]State{Down, Draining}, Retired)
		case k < 16:
			s.setState([]State{Active}, Draining)
		case k < 18:
			s.unconfirmed()
		case k < 21:
			s.filled()
		case k < 22:
			s.handoff()
		case k < 23:
			s.normalizeAll(false)
			s.finishLeaves()
		default:
			s.normalizeAll(false)
			s.rebalance()
		}
		s.normalizeAll(retiring)
	}
	var b strings.Builder
	for _, l := range s.log {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestPropertyRandomClusters drives random clusters through node
// failures, returns, drains, retirements, unconfirmed writes, backfills,
// handoffs and rebalancing, checking after every step that no set loses
// its only current member (except by retiring it), that the primary is
// never a filling member, that a set with a live current member keeps no
// dead member and is topped up to R where capacity allows, that Normalize
// is idempotent, and that equal inputs give equal decisions.
func TestPropertyRandomClusters(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 15
	}
	for seed := range uint64(seeds) {
		a := newSim(t, seed).run(200)
		b := newSim(t, seed).run(200)
		if a != b {
			t.Fatalf("seed %d: same operations gave different decisions", seed)
		}
	}
}

// potential is the sum over Active nodes of Load²/released, which every
// transfer strictly lowers.
func (s *sim) potential() *big.Rat {
	sum := new(big.Rat)
	for _, n := range s.nodes {
		if rel := s.pol.Released(n); n.State == Active && rel > 0 {
			sum.Add(sum, big.NewRat(int64(n.Load)*int64(n.Load), int64(rel)))
		}
	}
	return sum
}

// TestPropertyRebalanceTerminates packs users onto a few nodes, adds
// empty ones, and rebalances (each transfer completing at once) until
// nothing is proposed: it must end, every transfer must lower the
// potential, and at the end no proposed transfer has a user it could
// move.
func TestPropertyRebalanceTerminates(t *testing.T) {
	for seed := range uint64(40) {
		s := newSim(t, seed)
		s.pol.Now = 1 << 20 // every node's capacity released
		for range 2 + s.rng.IntN(3) {
			s.addNode()
		}
		for range 20 + s.rng.IntN(60) {
			s.assignUser()
			s.sync()
		}
		for range 1 + s.rng.IntN(4) {
			s.addNode()
		}
		s.normalizeAll(false)
		moves := 0
		for round := 0; ; round++ {
			if round > 2000 {
				t.Fatalf("seed %d: rebalancing does not end after %d moves", seed, moves)
			}
			before := s.potential()
			n := s.rebalance()
			if n == 0 {
				break
			}
			moves += n
			// The destinations backfill and the sources leave and hand off.
			for _, u := range s.users() {
				set := s.sets[u]
				for _, m := range set.Members {
					if m.Filling {
						set, _ = MarkFilled(set, m.ID, m.Epoch, set.Members[0].ID)
					}
				}
				s.sets[u] = set
			}
			s.finishLeaves()
			for _, u := range s.users() {
				set := s.sets[u]
				for len(set.Leaving) > 0 {
					set, _ = HandOff(set, set.Members[0].ID, set.Leaving[0])
				}
				s.sets[u] = set
			}
			s.normalizeAll(false)
			if after := s.potential(); after.Cmp(before) >= 0 {
				t.Fatalf("seed %d: %d transfers did not lower the potential (%v -> %v)", seed, n, before, after)
			}
		}
		s.sync()
		for _, tr := range Rebalance(s.nodes, s.pol) {
			for _, u := range s.users() {
				if CanTransfer(s.sets[u], tr, s.nodes) {
					t.Fatalf("seed %d: stopped with %v possible for %s", seed, tr, u)
				}
			}
		}
		t.Logf("seed %d: %d nodes, %d users, %d transfers", seed, len(s.nodes), len(s.sets), moves)
	}
}
