package testnet

import (
	"context"
	"testing"

	"github.com/hce-sync/hce/testnet/load"
)

// TestLoadGenerator runs each scenario of the load generator briefly
// against a real server and checks every request succeeded and moved the
// WBOs it should.
func TestLoadGenerator(t *testing.T) {
	ctx := context.Background()
	s := startServer(t)
	r := load.NewRunner(load.Config{URL: s.s.URL(), Users: 2, Requests: 10})
	defer r.Close()
	if err := r.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Prepare(ctx); err != nil { // accounts exist: reused
		t.Fatalf("second Prepare: %v", err)
	}
	for _, sc := range load.Scenarios {
		res, err := r.Run(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 10 || res.Errors != 0 {
			t.Fatalf("%s: %d requests, %d errors (%s)", sc, res.Requests, res.Errors, res.FirstError)
		}
		if want := map[load.Scenario]int64{load.Post100: 1000, load.Get100: 1000}[sc]; res.WBOs != want {
			t.Fatalf("%s: %d WBOs, want %d", sc, res.WBOs, want)
		}
	}
}
