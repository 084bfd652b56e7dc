package directory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// fakeVerify is a verifyFunc comparing with a fixed password, counting
// its calls and the priority ones, optionally held until release closes.
type fakeVerify struct {
	password        string
	calls, priority atomic.Int32
	release         chan struct{}
}

func (f *fakeVerify) verify(password string) verifyFunc {
	return func(ctx context.Context, prio bool) (bool, error) {
		f.calls.Add(1)
		if prio {
			f.priority.Add(1)
		}
		if f.release != nil {
			select {
			case <-f.release:
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		return password == f.password, nil
	}
}

// TestGuardBackoff walks the failed-login limits with a fake clock: free
// wrong passwords, then a doubling wait answered 429 without hashing,
// the account's wait not applying where it is known, repeated identical
// wrong passwords answered from the cache and not counted, and the wait
// over once the window passes.
func TestGuardBackoff(t *testing.T) {
	clk := testkit.NewClock(time.Unix(1_800_000_000, 0))
	lim := LoginLimits{AccountFailures: 3, AddrFailures: 100, BackoffBase: time.Second, BackoffMax: 8 * time.Second,
		FailureWindow: time.Minute, CacheTTL: 10 * time.Second}
	g, err := newGuard(lim, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v := &fakeVerify{password: "right"}
	check := func(pw, addr string) (bool, error) { return g.check(ctx, "alice", pw, "hash1", addr, v.verify(pw)) }

	// The owner logs in from home: alice is known there.
	if ok, err := check("right", "192.0.2.1"); !ok || err != nil {
		t.Fatalf("first login: %v %v", ok, err)
	}
	// An attacker elsewhere: three free wrong passwords, then waits of 1,
	// 2, 4, 8, 8 s, each refused without hashing until it passes.
	for i := range 3 {
		if ok, err := check(fmt.Sprintf("guess%d", i), "198.51.100.7"); ok || err != nil {
			t.Fatalf("free guess %d: %v %v", i, ok, err)
		}
	}
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		calls := v.calls.Load()
		if ok, err := check(fmt.Sprintf("guess-b%d", i), "198.51.100.7"); ok || err != nil {
			t.Fatalf("guess %d after the wait: %v %v", i, ok, err)
		}
		_, err := check(fmt.Sprintf("guess-c%d", i), "198.51.100.8")
		te, ok := api.ThrottleHint(err)
		if !ok || te.After != wait || !errors.Is(err, ErrLoginBackoff) {
			t.Fatalf("guess %d within the wait: %v, want a %v throttle", i, err, wait)
		}
		if v.calls.Load() != calls+1 {
			t.Fatalf("a throttled check was hashed")
		}
		// The owner, at home, is not locked out.
		if ok, err := check("right", "192.0.2.1"); !ok || err != nil {
			t.Fatalf("owner during the attacker's wait: %v %v", ok, err)
		}
		clk.Add(wait)
	}
	// A repeated wrong password: answered from the cache, not counted.
	calls := v.calls.Load()
	for range 20 {
		if ok, err := check("guess-b4", "198.51.100.7"); ok || err != nil {
			t.Fatalf("repeated wrong password: %v %v", ok, err)
		}
	}
	if v.calls.Load() != calls {
		t.Fatalf("repeated wrong passwords hashed %d times", v.calls.Load()-calls)
	}
	// A changed stored hash voids the cache.
	if _, err := g.check(ctx, "alice", "guess-b4", "hash2", "198.51.100.7", v.verify("guess-b4")); err == nil && v.calls.Load() == calls {
		t.Fatal("cached answer used for another stored hash")
	}
	// A right password not in the cache, from an address where alice is
	// not known, waits like any other.
	clk.Add(lim.CacheTTL)
	if _, err := check("guess-d", "198.51.100.7"); err != nil {
		t.Fatal(err)
	}
	if _, err := check("right", "203.0.113.5"); !errors.Is(err, api.ErrTooManyRequests) {
		t.Fatalf("right password from a new address during the wait: %v", err)
	}
	// After the window, the account starts afresh.
	clk.Add(2 * time.Minute)
	if ok, err := check("right", "203.0.113.5"); !ok || err != nil {
		t.Fatalf("after the window: %v %v", ok, err)
	}
}

// TestGuardAddress checks the per-address limit (IPv6 grouped by /64)
// and that an unknown address counts against the account only.
func TestGuardAddress(t *testing.T) {
	clk := testkit.NewClock(time.Unix(1_800_000_000, 0))
	g, err := newGuard(LoginLimits{AccountFailures: 1000, AddrFailures: 2}, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	v := &fakeVerify{password: "right"}
	ctx := context.Background()
	for i, addr := range []string{"2001:db8::1", "2001:db8::2"} {
		if _, err := g.check(ctx, fmt.Sprintf("u%d", i), "wrong", "h", addr, v.verify("wrong")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.check(ctx, "u9", "x", "h", "2001:db8::ffff", v.verify("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := g.check(ctx, "u10", "y", "h", "2001:db8:0:0:1::1", v.verify("y")); !errors.Is(err, api.ErrTooManyRequests) {
		t.Fatalf("third wrong password from the /64: %v", err)
	}
	if _, err := g.check(ctx, "u10", "y", "h", "2001:db8:0:1::1", v.verify("y")); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	if _, err := g.check(ctx, "u10", "z", "h", "", v.verify("z")); err != nil {
		t.Fatalf("unknown address: %v", err)
	}
}

// TestGuardFlood checks the bounds on checks in flight: identical
// concurrent credentials share one computation, one address or account
// gets at most MaxInFlightPerClient computations (then 429), the general
// lane at most MaxQueue (then 503 busy), and an account known at its
// address goes through the priority lane past all of it.
func TestGuardFlood(t *testing.T) {
	clk := testkit.NewClock(time.Unix(1_800_000_000, 0))
	g, err := newGuard(LoginLimits{MaxInFlightPerClient: 2, MaxQueue: 3, AccountFailures: 1000, AddrFailures: 1000}, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v := &fakeVerify{password: "right"}
	// Known pair first (no hold).
	if ok, err := g.check(ctx, "owner", "right", "h", "192.0.2.1", v.verify("right")); !ok || err != nil {
		t.Fatal(ok, err)
	}
	v.release = make(chan struct{})
	var wg sync.WaitGroup
	results := make(chan error, 100)
	start := func(user, pw, addr string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := g.check(ctx, user, pw, "h", addr, v.verify(pw))
			results <- err
		}()
	}
	// 10 identical checks: one computation.
	for range 10 {
		start("victim", "same", "198.51.100.1")
	}
	testkit.WaitFor(t, 5*time.Second, "one computation", func() bool { return v.calls.Load() == 2 })
	// The same address, other passwords: one more fits, then 429.
	start("victim", "other1", "198.51.100.1")
	testkit.WaitFor(t, 5*time.Second, "second computation", func() bool { return v.calls.Load() == 3 })
	if _, err := g.check(ctx, "victim", "other2", "h", "198.51.100.1", v.verify("other2")); !errors.Is(err, ErrLoginConcurrency) {
		t.Fatalf("third from one address: %v", err)
	}
	// Another address: the general lane holds MaxQueue (3), then busy.
	start("someone", "p", "198.51.100.2")
	testkit.WaitFor(t, 5*time.Second, "third computation", func() bool { return v.calls.Load() == 4 })
	_, err = g.check(ctx, "else", "q", "h", "198.51.100.3", v.verify("q"))
	if re, ok := api.RetryHint(err); !ok || !re.Backoff || !errors.Is(err, ErrLoginQueueFull) {
		t.Fatalf("past the queue: %v", err)
	}
	// The owner at home is in the priority lane.
	prio := v.priority.Load()
	start("owner", "right-but-held", "192.0.2.1")
	testkit.WaitFor(t, 5*time.Second, "priority computation", func() bool { return v.priority.Load() == prio+1 })
	close(v.release)
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Fatalf("held check: %v", err)
		}
	}
}

// TestBoundedMap checks that the tables stay bounded, dropping expired
// entries first.
func TestBoundedMap(t *testing.T) {
	now := time.Unix(1000, 0)
	m := newBoundedMap[int, int](10)
	for i := range 10 {
		m.put(i, i, now.Add(time.Duration(i)*time.Second), now)
	}
	later := now.Add(5500 * time.Millisecond)
	for i := 10; i < 100; i++ {
		m.put(i, i, later.Add(time.Hour), later)
		if m.len() > 10 {
			t.Fatalf("%d entries", m.len())
		}
	}
	if _, ok := m.live(99, later); !ok {
		t.Fatal("newest entry missing")
	}
}

// TestGuardSharedCheckCancelled: a check waiting for an identical one
// whose caller went away makes its own instead of failing.
func TestGuardSharedCheckCancelled(t *testing.T) {
	g, err := newGuard(LoginLimits{}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	v := &fakeVerify{password: "right", release: make(chan struct{})}
	lctx, cancel := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() {
		_, err := g.check(lctx, "alice", "right", "h", "192.0.2.1", v.verify("right"))
		leader <- err
	}()
	testkit.WaitFor(t, 5*time.Second, "the first check", func() bool { return v.calls.Load() == 1 })
	waiter := make(chan error, 1)
	go func() {
		ok, err := g.check(context.Background(), "alice", "right", "h", "192.0.2.1", v.verify("right"))
		if err == nil && !ok {
			err = errors.New("refused")
		}
		waiter <- err
	}()
	testkit.WaitFor(t, 5*time.Second, "the waiter", func() bool { return g.shared.Load() == 1 })
	cancel()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled check: %v", err)
	}
	close(v.release)
	if err := <-waiter; err != nil {
		t.Fatalf("waiting check: %v", err)
	}
}
