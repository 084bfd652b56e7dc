package directory

import (
	"context"
	"fmt"
	"testing"
)

// TestForwardedWriteReadableAtOnce checks read-your-writes through a
// follower: a registration forwarded to the leader is visible in the
// follower's own (local) reads as soon as the call returns.
func TestForwardedWriteReadableAtOnce(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.leader()
	var f *voter
	for _, v := range c.voters {
		if v != l {
			f = v
			break
		}
	}
	ctx := context.Background()
	for i := range 20 {
		name := fmt.Sprintf("ryw-%d", i)
		if err := f.d.CreateUser(ctx, name, "a password 1", ""); err != nil {
			t.Fatal(err)
		}
		if ok, err := f.d.UserExists(ctx, name); err != nil || !ok {
			t.Fatalf("%s not visible on the follower right after its registration returned (%v)", name, err)
		}
	}
}
