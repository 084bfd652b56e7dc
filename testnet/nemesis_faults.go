package testnet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// faultState is what the nemesis broke and has not repaired yet; only the
// nemesis goroutine touches it.
type faultState struct {
	downVoters map[string]bool
	downNode   string
	cut        map[[2]string]bool // cut links, as sorted pairs of names
}

// cutPair is the key of the link between a and b.
func cutPair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// quorum reports whether some running voter reaches (itself included) a
// majority of the voters that run, with down voters down and cut links
// cut: raft can then elect a leader and commit.
func (n *nemesis) quorum(down map[string]bool, cut map[[2]string]bool) bool {
	need := len(n.voters)/2 + 1
	for _, v := range n.voters {
		if down[v] {
			continue
		}
		k := 0
		for _, w := range n.voters {
			if !down[w] && (w == v || !cut[cutPair(v, w)]) {
				k++
			}
		}
		if k >= need {
			return true
		}
	}
	return false
}

// nemAction is one fault step the nemesis may take now.
type nemAction struct {
	weight int
	do     func(ctx context.Context)
}

// faults runs fault steps, each followed by a random pause, until the
// deadline or ctx ends.
func (n *nemesis) faults(ctx context.Context, until time.Time) {
	for ctx.Err() == nil && time.Now().Before(until) {
		var acts []nemAction
		acts = append(acts, n.voterActions()...)
		acts = append(acts, n.nodeActions()...)
		acts = append(acts, n.partitionActions()...)
		total := 0
		for _, a := range acts {
			total += a.weight
		}
		pick := n.rng.IntN(total)
		for _, a := range acts {
			if pick < a.weight {
				a.do(ctx)
				break
			}
			pick -= a.weight
		}
		gap := n.cfg.MinGap + time.Duration(n.rng.Int64N(int64(n.cfg.MaxGap-n.cfg.MinGap)+1))
		n.pause(ctx, min(gap, max(time.Until(until), 0)))
	}
}

// running returns the voters not down, in order.
func (n *nemesis) runningVoters() []string {
	var out []string
	for _, v := range n.voters {
		if !n.st.downVoters[v] {
			out = append(out, v)
		}
	}
	return out
}

// canKill reports whether voter v may go down now (a quorum remains).
func (n *nemesis) canKill(v string) bool {
	down := map[string]bool{v: true}
	for d := range n.st.downVoters {
		down[d] = true
	}
	return n.quorum(down, n.st.cut)
}

// voterActions: kill the leader, kill a voter, restart a voter.
func (n *nemesis) voterActions() []nemAction {
	var acts []nemAction
	if len(n.st.downVoters) > 0 {
		acts = append(acts, nemAction{5, func(ctx context.Context) {
			var down []string
			for v := range n.st.downVoters {
				down = append(down, v)
			}
			slices.Sort(down)
			n.restartVoter(ctx, down[n.rng.IntN(len(down))])
		}})
	}
	var killable []string
	for _, v := range n.runningVoters() {
		if n.canKill(v) {
			killable = append(killable, v)
		}
	}
	if len(killable) == 0 {
		return acts
	}
	acts = append(acts, nemAction{3, func(context.Context) {
		leader, _ := n.tn.Leader()
		if leader == "" || !slices.Contains(killable, leader) {
			n.event("kill the leader: skipped (leader %q, killable %v)", leader, killable)
			return
		}
		n.killVoter(leader, " (leader)")
	}})
	acts = append(acts, nemAction{2, func(context.Context) {
		n.killVoter(killable[n.rng.IntN(len(killable))], "")
	}})
	return acts
}

func (n *nemesis) killVoter(v, note string) {
	err := n.tn.Kill(v)
	n.record(err, "kill %s%s", v, note)
	if err == nil {
		n.st.downVoters[v] = true
	}
}

func (n *nemesis) restartVoter(ctx context.Context, v string) {
	rctx, cancel := context.WithTimeout(ctx, n.cfg.Recover)
	err := n.tn.Restart(rctx, v)
	cancel()
	n.record(err, "restart %s", v)
	if err == nil {
		delete(n.st.downVoters, v)
	}
}

// nodeActions: kill a node (one at a time), restart it.
func (n *nemesis) nodeActions() []nemAction {
	if n.st.downNode != "" {
		return []nemAction{{5, func(ctx context.Context) { n.restartNode(ctx, n.st.downNode) }}}
	}
	return []nemAction{{3, func(context.Context) {
		nd := n.nodes[n.rng.IntN(len(n.nodes))]
		note := ""
		if holders := n.primaryOf(nd); holders > 0 {
			note = fmt.Sprintf(" (primary of %d written users)", holders)
		}
		err := n.tn.Kill(nd)
		n.record(err, "kill %s%s", nd, note)
		if err == nil {
			n.st.downNode = nd
		}
	}}}
}

func (n *nemesis) restartNode(ctx context.Context, nd string) {
	rctx, cancel := context.WithTimeout(ctx, n.cfg.Recover)
	err := n.tn.Restart(rctx, nd)
	cancel()
	n.record(err, "restart %s", nd)
	if err == nil {
		n.st.downNode = ""
	}
}

// primaryOf counts the written users whose primary is node nd now (for
// the schedule's notes; 0 on any error).
func (n *nemesis) primaryOf(nd string) int {
	url := ""
	for _, e := range n.tn.Nodes() {
		if e.Name == nd {
			url = e.HTTP
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k := 0
	for _, u := range n.users {
		if set, err := n.tn.ReplicaSet(ctx, u.name); err == nil && len(set) > 0 && set[0] == url {
			k++
		}
	}
	return k
}

// partitionActions: split the nodes, cut nodes from the voters, cut a
// voter from the other voters or from everyone, a random split of
// everything; heal. Each replaces the partition before it and keeps a
// quorum of running voters connected.
func (n *nemesis) partitionActions() []nemAction {
	var acts []nemAction
	if len(n.st.cut) > 0 {
		acts = append(acts, nemAction{4, func(context.Context) {
			err := n.tn.Heal()
			n.record(err, "heal")
			if err == nil {
				n.st.cut = nil
			}
		}})
	}
	if len(n.nodes) > 1 {
		acts = append(acts, nemAction{3, func(context.Context) {
			nodes := n.shuffled(n.nodes)
			k := 1 + n.rng.IntN(len(nodes)-1)
			n.partition([][]string{nodes[:k], nodes[k:]})
		}})
	}
	acts = append(acts, nemAction{3, func(context.Context) {
		nodes := n.shuffled(n.nodes)
		k := 1 + n.rng.IntN(max(len(nodes)/2, 1))
		n.cutLinks(nodes[:k], n.voters)
	}})
	if len(n.voters) > 1 {
		acts = append(acts, nemAction{2, func(context.Context) {
			v := n.pickVoter()
			n.cutLinks([]string{v}, without(n.voters, v))
		}})
		acts = append(acts, nemAction{2, func(context.Context) {
			v := n.pickVoter()
			n.partition([][]string{{v}, append(without(n.voters, v), n.nodes...)})
		}})
	}
	acts = append(acts, nemAction{2, func(context.Context) {
		var g [2][]string
		for _, m := range append(slices.Clone(n.voters), n.nodes...) {
			i := n.rng.IntN(2)
			g[i] = append(g[i], m)
		}
		if len(g[0]) == 0 || len(g[1]) == 0 {
			n.event("random partition: skipped (one side empty)")
			return
		}
		n.partition([][]string{g[0], g[1]})
	}})
	return acts
}

// pickVoter returns the leader half of the time (when known), else a
// random voter.
func (n *nemesis) pickVoter() string {
	if n.rng.IntN(2) == 0 {
		if l, _ := n.tn.Leader(); l != "" {
			return l
		}
	}
	return n.voters[n.rng.IntN(len(n.voters))]
}

// partition applies Partition(groups) (every member named, or nodes
// only), unless it would leave no quorum.
func (n *nemesis) partition(groups [][]string) {
	cut := map[[2]string]bool{}
	for i, a := range groups {
		for _, b := range groups[i+1:] {
			for _, x := range a {
				for _, y := range b {
					cut[cutPair(x, y)] = true
				}
			}
		}
	}
	var desc []string
	for _, g := range groups {
		desc = append(desc, strings.Join(g, ","))
	}
	what := "partition " + strings.Join(desc, " | ")
	if !n.quorum(n.st.downVoters, cut) {
		n.event("%s: skipped (no quorum)", what)
		return
	}
	err := n.tn.Partition(groups...)
	n.record(err, "%s", what)
	if err == nil {
		n.st.cut = cut
	}
}

// cutLinks applies Cut(a, b), unless it would leave no quorum.
func (n *nemesis) cutLinks(a, b []string) {
	cut := map[[2]string]bool{}
	for _, x := range a {
		for _, y := range b {
			cut[cutPair(x, y)] = true
		}
	}
	what := fmt.Sprintf("cut %s -/- %s", strings.Join(a, ","), strings.Join(b, ","))
	if !n.quorum(n.st.downVoters, cut) {
		n.event("%s: skipped (no quorum)", what)
		return
	}
	err := n.tn.Cut(a, b)
	n.record(err, "%s", what)
	if err == nil {
		n.st.cut = cut
	}
}

// shuffled returns a shuffled copy of s.
func (n *nemesis) shuffled(s []string) []string {
	out := slices.Clone(s)
	n.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// without returns s without x.
func without(s []string, x string) []string {
	var out []string
	for _, e := range s {
		if e != x {
			out = append(out, e)
		}
	}
	return out
}

// healAll ends the partition and restarts every member the nemesis
// killed (bounded by cfg.Recover each, even after ctx ended) and returns
// when it was done.
func (n *nemesis) healAll(ctx context.Context) time.Time {
	ctx = context.WithoutCancel(ctx)
	err := n.tn.Heal()
	n.record(err, "heal everything")
	down := make([]string, 0, len(n.st.downVoters))
	for v := range n.st.downVoters {
		down = append(down, v)
	}
	slices.Sort(down)
	for _, v := range down {
		n.restartVoter(ctx, v)
	}
	if n.st.downNode != "" {
		n.restartNode(ctx, n.st.downNode)
	}
	n.st.cut = nil
	return time.Now()
}
