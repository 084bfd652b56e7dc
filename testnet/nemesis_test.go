package testnet

import (
	"strings"
	"testing"
	"time"
)

// TestNemesisQuorum: the nemesis takes a fault step only if some running
// voter still reaches a majority of the voters, itself included.
func TestNemesisQuorum(t *testing.T) {
	n := &nemesis{voters: []string{"d1", "d2", "d3"}}
	cuts := func(pairs ...string) map[[2]string]bool {
		m := map[[2]string]bool{}
		for _, p := range pairs {
			ab := strings.Split(p, "-")
			m[cutPair(ab[0], ab[1])] = true
		}
		return m
	}
	down := func(ids ...string) map[string]bool {
		m := map[string]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	tests := []struct {
		name string
		down map[string]bool
		cut  map[[2]string]bool
		want bool
	}{
		{"all up", down(), cuts(), true},
		{"one down", down("d1"), cuts(), true},
		{"two down", down("d1", "d2"), cuts(), false},
		{"one isolated", down(), cuts("d1-d2", "d1-d3"), true},
		{"one down, another isolated", down("d3"), cuts("d1-d2"), false},
		{"one down, the other two connected", down("d3"), cuts("d1-d3", "d2-d3"), true},
		{"a chain d1-d2-d3", down(), cuts("d1-d3"), true},
		{"all cut apart", down(), cuts("d1-d2", "d1-d3", "d2-d3"), false},
		{"node links do not matter", down("d1"), cuts("n1-d2", "n1-n2"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := n.quorum(tc.down, tc.cut); got != tc.want {
				t.Fatalf("quorum = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestNemesisConfig: zero fields take the defaults; nonsense is refused.
func TestNemesisConfig(t *testing.T) {
	c := NemesisConfig{}.withDefaults()
	d := DefaultNemesisConfig()
	if c.Duration != d.Duration || c.Users != d.Users || c.MinGap != d.MinGap || c.MaxGap != d.MaxGap || c.BatchSize != d.BatchSize {
		t.Fatalf("defaults: %+v", c)
	}
	if c := (NemesisConfig{MaxGap: 500 * 1e6}).withDefaults(); c.MinGap > c.MaxGap {
		t.Fatalf("a short MaxGap alone: MinGap %v above MaxGap %v", c.MinGap, c.MaxGap)
	}
	for _, bad := range []NemesisConfig{{Duration: -1}, {Users: -1}, {MinGap: 5e9, MaxGap: 1e9}} {
		if bad.Validate() == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
}

// TestNemesisPrintsStaleReadTrace: a stale read is printed with what it
// takes to find it in the members' logs: the wall-clock time of +0s, when
// the read was answered, and which nodes acknowledged the writes it
// lacked, when.
func TestNemesisPrintsStaleReadTrace(t *testing.T) {
	began := time.Date(2026, 12, 6, 20, 29, 43, 500_000_000, time.UTC)
	r := &NemesisResult{Seed: 7, Duration: time.Minute, Began: began, Users: []string{"u"},
		StaleReads: []StaleRead{{User: "u", Node: "n4", At: 71840 * time.Millisecond, Listed: 2770, Missing: 130,
			Example: []string{"u0-0002771"}, Answered: 71900 * time.Millisecond, AckedBy: []string{"n1", "n2"},
			FirstAcked: 69120 * time.Millisecond, LastAcked: 71800 * time.Millisecond}}}
	var out strings.Builder
	r.Print(&out)
	for _, want := range []string{
		"+0s is 2026-12-06T20:29:43.500Z",
		"+71.84s u on n4 listed 2770, lacked 130 (e.g. u0-0002771); answered at +71.90s; the missing writes were acknowledged by n1,n2 from +69.12s to +71.80s",
		"[FAIL] reads through node/weave",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}
