package testnet

import (
	"strings"
	"testing"
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
