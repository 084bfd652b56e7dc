package testnet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hce-sync/hce/replication"
)

// check runs the end-of-run checks into res: convergence, every
// acknowledged record on every node of its user's final set, every
// acknowledged registration, the reads' findings and the registration
// outages.
func (n *nemesis) check(ctx context.Context, res *NemesisResult) {
	ctx = context.WithoutCancel(ctx)
	cctx, cancel := context.WithTimeout(ctx, n.cfg.Recover)
	for _, u := range n.users {
		if err := n.tn.WaitConverged(cctx, u.name, nemesisPassword); err != nil {
			res.NotConverged = append(res.NotConverged, fmt.Sprintf("%s: %v", u.name, err))
		}
	}
	cancel()
	rctx, cancel := context.WithTimeout(ctx, n.cfg.Recover)
	defer cancel()
	for _, u := range n.users {
		// A member added by a repair or a rebalance after the heal may
		// still be backfilling: it serves nobody yet, so check the set
		// once every member is current.
		set, err := n.tn.SettledReplicaSet(rctx, u.name)
		if err != nil || len(set) == 0 {
			res.Unchecked = append(res.Unchecked, fmt.Sprintf("%s: replica set: %v %v", u.name, set, err))
			continue
		}
		var names []string
		for _, base := range set {
			names = append(names, n.nodeName(base))
		}
		if res.FinalSets == nil {
			res.FinalSets = map[string][]string{}
		}
		res.FinalSets[u.name] = names
		if len(set) < res.Replicas {
			res.UnderReplicated = append(res.UnderReplicated, fmt.Sprintf("%s on %s", u.name, strings.Join(names, ",")))
		}
		u.mu.Lock()
		acks := slices.Clone(u.acks)
		u.mu.Unlock()
		for _, base := range set {
			got, err := n.listing(rctx, base, u.name)
			for try := 0; err != nil && try < 20 && rctx.Err() == nil; try++ {
				// A member refusing (401, 503) may have just left the set
				// or be refreshing its membership view: look again.
				time.Sleep(250 * time.Millisecond)
				if cur, serr := n.tn.SettledReplicaSet(rctx, u.name); serr == nil && !slices.Contains(cur, base) {
					err = nil
					got = nil
					break
				}
				got, err = n.listing(rctx, base, u.name)
			}
			if err == nil && got == nil {
				continue // no longer a member
			}
			if err != nil {
				res.Unchecked = append(res.Unchecked, fmt.Sprintf("%s on %s: %v", u.name, n.nodeName(base), err))
				continue
			}
			for _, a := range acks {
				p, ok := got[a.id]
				if ok && p == a.payload {
					continue
				}
				why := "missing"
				if ok {
					why = "payload differs"
				}
				res.Lost = append(res.Lost, LostRecord{User: u.name, Node: n.nodeName(base), ID: a.id,
					AckedBy: n.nodeName(a.node), AckedAt: n.since(a.at), Why: why})
			}
		}
	}

	n.mu.Lock()
	regs := slices.Clone(n.regs)
	st := n.stats
	res.Acked, res.Lookups, res.Reads = st.acked, st.lookups, st.reads
	res.WriteErrors, res.LookupErrors = maps.Clone(st.writeErrors), maps.Clone(st.lookupErrors)
	res.ReadErrors, res.RegisterErrors = maps.Clone(st.readErrors), maps.Clone(st.regErrors)
	res.StaleReads = slices.Clone(st.stale)
	n.mu.Unlock()

	var end time.Time
	last, fails, lastErr := n.begin, 0, ""
	outage := func(to time.Time) {
		o := Outage{From: n.since(last), To: n.since(to), Attempts: fails, LastErr: lastErr}
		if o.To-o.From > res.LongestOutage.To-res.LongestOutage.From {
			res.LongestOutage = o
		}
		if o.To-o.From > 2*time.Second {
			res.Outages = append(res.Outages, o)
		}
	}
	for i, r := range regs {
		if i == 0 {
			last = r.at // measure from the first answer
		}
		end = r.at
		if r.err != nil {
			fails++
			lastErr = r.err.Error()
			continue
		}
		res.Registered++
		outage(r.at)
		last, fails, lastErr = r.at, 0, ""
		if ok, err := n.existsErr(rctx, r.name); !ok {
			if err != nil {
				res.Unchecked = append(res.Unchecked, fmt.Sprintf("registration %s: %v", r.name, err))
			} else {
				res.MissingRegistered = append(res.MissingRegistered, r.name)
			}
		}
	}
	if fails > 0 {
		outage(end)
	}
}

// nodeLogs lists the child nodes' log files (none in process).
func (n *nemesis) nodeLogs() []string {
	var out []string
	for _, nd := range n.nodes {
		p := filepath.Join(n.tn.Dir(), "logs", nd+".log")
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// logOffsets returns the node logs' sizes now.
func (n *nemesis) logOffsets() map[string]int64 {
	out := map[string]int64{}
	for _, p := range n.nodeLogs() {
		if fi, err := os.Stat(p); err == nil {
			out[p] = fi.Size()
		}
	}
	return out
}

// The lines nodes log when a write was acknowledged after reporting the
// members that did not confirm it, and when one waited out a node that
// had just left the set.
var (
	unconfirmedLine = []byte(replication.UnconfirmedAckLog)
	leaverWaitLine  = []byte(replication.LeaverWaitLog)
)

// ackLogCountsSince counts unconfirmedLine and leaverWaitLine in the node
// logs after the offsets (-1 without logs).
func (n *nemesis) ackLogCountsSince(offsets map[string]int64) (unconfirmed, leaverWaits int) {
	logs := n.nodeLogs()
	if len(logs) == 0 {
		return -1, -1
	}
	for _, p := range logs {
		b := readFrom(p, offsets[p])
		unconfirmed += bytes.Count(b, unconfirmedLine)
		leaverWaits += bytes.Count(b, leaverWaitLine)
	}
	return unconfirmed, leaverWaits
}

// Print writes the run's schedule, statistics and checks, and how to
// replay it, for people.
func (r *NemesisResult) Print(w io.Writer) {
	mode := "faults"
	if r.Quiet {
		mode = "no faults (quiet run)"
	}
	fmt.Fprintf(w, "nemesis: seed %d, %v of %s, %d voters, %d nodes, %d replicas, %d users; +0s is %s\n",
		r.Seed, r.Duration, mode, r.Voters, r.Nodes, r.Replicas, len(r.Users), r.Began.UTC().Format("2006-01-02T15:04:05.000Z"))
	fmt.Fprintln(w, "schedule:")
	for _, e := range r.Schedule {
		line := fmt.Sprintf("  %+9.2fs  %s", e.At.Seconds(), e.What)
		if e.Err != "" {
			line += "  FAILED: " + e.Err
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "checks:")
	verdict := func(ok bool) string {
		if ok {
			return "[PASS]"
		}
		return "[FAIL]"
	}
	fmt.Fprintf(w, "  %s acknowledged records: %d acknowledged for %d users", verdict(len(r.Lost) == 0), r.Acked, len(r.Users))
	if len(r.Lost) == 0 {
		fmt.Fprintln(w, "; every one is on every node of its user's final replica set with its payload")
	} else {
		fmt.Fprintf(w, "; %d record copies missing or changed on nodes of the final replica sets:\n", len(r.Lost))
		printLost(w, r.Lost)
	}
	fmt.Fprintf(w, "  %s reads through node/weave: %d answered 200", verdict(len(r.StaleReads) == 0), r.Reads)
	if len(r.StaleReads) == 0 {
		fmt.Fprintln(w, "; none lacked a write acknowledged before it started")
	} else {
		fmt.Fprintf(w, "; %d lacked writes acknowledged before they started:\n", len(r.StaleReads))
		for i, s := range r.StaleReads {
			if i == 10 {
				fmt.Fprintf(w, "      ... %d more\n", len(r.StaleReads)-10)
				break
			}
			fmt.Fprintf(w, "      %+.2fs %s on %s listed %d, lacked %d (e.g. %s); answered at %+.2fs; the missing writes were acknowledged by %s from %+.2fs to %+.2fs\n",
				s.At.Seconds(), s.User, s.Node, s.Listed, s.Missing, strings.Join(s.Example, " "),
				s.Answered.Seconds(), strings.Join(s.AckedBy, ","), s.FirstAcked.Seconds(), s.LastAcked.Seconds())
		}
	}
	fmt.Fprintf(w, "  %s registrations: %d acknowledged", verdict(len(r.MissingRegistered) == 0), r.Registered)
	if len(r.MissingRegistered) == 0 {
		fmt.Fprintln(w, ", every one exists")
	} else {
		fmt.Fprintf(w, ", %d missing: %s\n", len(r.MissingRegistered), strings.Join(r.MissingRegistered[:min(10, len(r.MissingRegistered))], " "))
	}
	fmt.Fprintf(w, "         longest stretch without a successful registration: %v (%+.2fs .. %+.2fs, %d failed attempts%s)\n",
		(r.LongestOutage.To - r.LongestOutage.From).Round(10*time.Millisecond), r.LongestOutage.From.Seconds(),
		r.LongestOutage.To.Seconds(), r.LongestOutage.Attempts, lastErr(r.LongestOutage.LastErr))
	for _, o := range r.Outages {
		fmt.Fprintf(w, "         no registration for %v: %+.2fs .. %+.2fs, %d failed attempts%s\n",
			(o.To - o.From).Round(10*time.Millisecond), o.From.Seconds(), o.To.Seconds(), o.Attempts, lastErr(o.LastErr))
	}
	fmt.Fprintf(w, "  %s convergence: ", verdict(len(r.NotConverged) == 0 && len(r.UnderReplicated) == 0))
	if len(r.NotConverged) == 0 {
		fmt.Fprint(w, "every user's replicas serve the same winners")
	} else {
		fmt.Fprintf(w, "%d users not converged", len(r.NotConverged))
	}
	var sets []string
	for _, u := range r.Users {
		if s, ok := r.FinalSets[u]; ok {
			sets = append(sets, strings.Join(s, ","))
		}
	}
	fmt.Fprintf(w, "; final replica sets %s\n", strings.Join(sets, " "))
	for _, s := range r.NotConverged {
		fmt.Fprintf(w, "      %s\n", s)
	}
	if len(r.UnderReplicated) > 0 {
		fmt.Fprintf(w, "      %d users have fewer than %d replicas after every node was restarted: %s\n",
			len(r.UnderReplicated), r.Replicas, strings.Join(r.UnderReplicated, "; "))
	}
	fmt.Fprintf(w, "  %s recovery: ", verdict(r.Unhealthy == "" && len(r.NoAckAfterHeal) == 0))
	if r.Unhealthy == "" && len(r.NoAckAfterHeal) == 0 {
		fmt.Fprintf(w, "healthy after the heal; every writer had writes acknowledged after it (the last %.2fs after the heal)\n",
			r.WritesResumed.Seconds())
	} else {
		if r.Unhealthy != "" {
			fmt.Fprintf(w, "not healthy after the heal: %s", r.Unhealthy)
		}
		fmt.Fprintln(w)
		if len(r.NoAckAfterHeal) > 0 {
			fmt.Fprintf(w, "      %d writers had no write acknowledged after the heal:\n", len(r.NoAckAfterHeal))
			for _, s := range r.NoAckAfterHeal {
				fmt.Fprintf(w, "      %s\n", s)
			}
		}
	}
	if len(r.Unchecked) > 0 {
		fmt.Fprintf(w, "  [FAIL] could not check %d things:\n", len(r.Unchecked))
		for _, s := range r.Unchecked[:min(10, len(r.Unchecked))] {
			fmt.Fprintf(w, "      %s\n", s)
		}
	}
	fmt.Fprintf(w, "stats: write failures %s; node/weave look-ups %d, failures %s; read failures %s; registration failures %s",
		counts(r.WriteErrors), r.Lookups, counts(r.LookupErrors), counts(r.ReadErrors), counts(r.RegisterErrors))
	if r.Unconfirmed >= 0 {
		fmt.Fprintf(w, "; writes acknowledged after reporting members that did not confirm them (node logs): %d", r.Unconfirmed)
	}
	if r.LeaverWaits >= 0 {
		fmt.Fprintf(w, "; writes that waited out a node that had just left the set: %d", r.LeaverWaits)
	}
	fmt.Fprintln(w)
	if r.OK() {
		fmt.Fprintf(w, "result: PASS (seed %d)\n", r.Seed)
	} else {
		fmt.Fprintf(w, "result: FAIL (seed %d; replay with the same seed and duration)\n", r.Seed)
	}
}

// printLost summarises lost records per user and node, with examples.
func printLost(w io.Writer, lost []LostRecord) {
	type key struct{ user, node, why string }
	groups := map[key][]LostRecord{}
	var keys []key
	for _, l := range lost {
		k := key{l.User, l.Node, l.Why}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], l)
	}
	sort.Slice(keys, func(i, j int) bool {
		return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j])
	})
	for _, k := range keys {
		g := groups[k]
		by := map[string]int{}
		for _, l := range g {
			by[l.AckedBy]++
		}
		fmt.Fprintf(w, "      %s on %s: %d %s (acknowledged by %s; first %s at %+.2fs, last %s at %+.2fs)\n",
			k.user, k.node, len(g), k.why, counts(by), g[0].ID, g[0].AckedAt.Seconds(), g[len(g)-1].ID, g[len(g)-1].AckedAt.Seconds())
	}
}

// counts formats a map of counts in key order.
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func lastErr(s string) string {
	if s == "" {
		return ""
	}
	return "; last: " + s
}
