package directory

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
)

// TestFirstStartFailsFast checks the two first-start mistakes that used
// to make a cluster voter wait forever: neither Bootstrap nor Join
// (ErrNoCluster), and a Join whose admin token the cluster refuses
// (ErrJoinRefused, at once rather than after retries until ctx ends).
func TestFirstStartFailsFast(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	for _, tc := range []struct {
		name  string
		join  string
		token string
		want  error
	}{
		{"neither bootstrap nor join", "", testAdminToken, ErrNoCluster},
		{"wrong admin token", c.voters[0].url(), "not-the-cluster-token", ErrJoinRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &voter{id: "v9", dir: filepath.Join(t.TempDir(), "v9"), httpAddr: testkit.FreeAddr(t), raftAddr: testkit.FreeAddr(t)}
			var err error
			if v.cert, v.key, err = c.ca.Issue(v.id, []string{"127.0.0.1"}, time.Hour); err != nil {
				t.Fatal(err)
			}
			cfg := c.config(v, false, tc.join)
			cfg.AdminToken = tc.token
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			begin := time.Now()
			d, err := Open(ctx, cfg)
			if err == nil {
				d.Close()
			}
			if !errors.Is(err, tc.want) || ctx.Err() != nil {
				t.Fatalf("Open: %v after %v, want %v at once", err, time.Since(begin), tc.want)
			}
		})
	}
}
