package mix

import (
	"math/rand/v2"
	"testing"
)

// FuzzParse feeds mix files to Parse: it never panics, a mix it accepts
// writes itself back (String) as a file that parses to the same text, and
// the generator draws from it within the limits.
func FuzzParse(f *testing.F) {
	for _, name := range Builtins() {
		b, _ := builtin.ReadFile("mixes/" + name + ".mix")
		f.Add(string(b))
	}
	f.Add("hce-mix 1\nname x\nthink 0.5*uniform(1s,2s) + 0.5*exp(3m)\nop a 1 POST /1.1/{user}/storage/{coll} coll=a,b wbos=geometric(0,50,2) size=pareto(2,10,1KiB) ids=pool(3)\nbackground b 2 PUT /user/1.0/{new} body=register\nprefill a devices\n")
	f.Add("hce-mix 1\nname y\ndevices 2\nsync first=a\nop a 1 GET /{user}\nop b 3 DELETE /1.1/{user}/storage header=X-Confirm-Delete:1 # c\n")
	f.Fuzz(func(t *testing.T, text string) {
		m, err := Parse(text)
		if err != nil {
			return
		}
		s1 := m.String()
		m2, err := Parse(s1)
		if err != nil {
			t.Fatalf("String() of an accepted mix does not parse: %v\n%s", err, s1)
		}
		s2 := m2.String()
		m3, err := Parse(s2)
		if err != nil || m3.String() != s2 {
			t.Fatalf("String() is not a fixed point:\n%s\n---\n%s", s2, m3)
		}
		g := NewGenerator(m, 0.001)
		r := rand.New(rand.NewPCG(1, 2))
		for range 3 {
			s := g.Sync(r)
			if len(s.Requests) == 0 || len(s.Requests) > maxExtra+1 {
				t.Fatalf("a sync of %d requests", len(s.Requests))
			}
			for _, q := range s.Requests {
				if len(q.WBOs) > MaxWBOs {
					t.Fatalf("%d WBOs in one request", len(q.WBOs))
				}
			}
			if g.HasBackground() {
				g.Background(r)
			}
		}
		if g.RatePerUser() < 0 {
			t.Fatal("negative rate")
		}
	})
}
