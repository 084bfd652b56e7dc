package directory

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hce-sync/hce/api"
)

// The login guard stands in front of every password check (the user
// API's Basic checks, the token endpoint, the nodes' checkpw), so that a
// flood of wrong guesses can neither find a password nor starve real
// logins of the argon2 slots:
//
//   - Answers are cached for CacheTTL under HMAC-SHA256(process-local
//     key, user NUL password), with the stored hash they were computed
//     against: the same credentials again (a client retrying a stale
//     password, or concurrent identical requests, which share one
//     computation) cost no argon2 run, and a changed hash voids the
//     entry. Nothing derived from a password outlives CacheTTL.
//   - Each client address (an IPv4 address or IPv6 /64) and each account
//     may send a few distinct wrong passwords within FailureWindow; each
//     further one doubles a wait (BackoffBase up to BackoffMax) during
//     which its checks are refused with api.ErrTooManyRequests (429)
//     without hashing. Repeated identical wrong passwords are answered
//     from the cache and not counted again: they teach nothing.
//   - An account that logged in from an address is "known" there for
//     KnownTTL: its checks from there skip the account's back-off (an
//     attacker elsewhere cannot lock its owner out) and take the
//     priority lane of the hasher, a share of the argon2 slots the other
//     checks cannot use. Other checks may have MaxInFlightPerClient
//     computations in flight per address and per account (beyond: 429)
//     and MaxQueue waiting for a slot (beyond: 503 busy).
//
// Everything is in memory, per voter: a restart forgets it, and each
// voter counts what it sees.

// LoginLimits configures the login guard (AccountConfig.Limits). A zero
// field means the default.
type LoginLimits struct {
	// Off turns the guard off: every check hashes, nothing is cached
	// or refused. For benchmarks; never in production.
	Off bool
	// AccountFailures is how many distinct wrong passwords an account
	// may get within FailureWindow before each further one makes it
	// wait. Default 5.
	AccountFailures int
	// AddrFailures is the same for a client address. Default 10.
	AddrFailures int
	// FailureWindow: failures older than this are forgotten. Default
	// 15 min.
	FailureWindow time.Duration
	// BackoffBase is the first wait, BackoffMax the longest; each
	// failure beyond the free ones doubles it. Defaults 1 s and 10 min.
	BackoffBase, BackoffMax time.Duration
	// CacheTTL is how long an answer is reused for the same credentials
	// (and the same stored hash). Default 60 s.
	CacheTTL time.Duration
	// KnownTTL is how long an account keeps priority at an address it
	// logged in from. Default 7 days.
	KnownTTL time.Duration
	// MaxEntries bounds each table (answers, failures, known pairs);
	// when one is full, expired entries and then arbitrary ones go.
	// Default 100,000.
	MaxEntries int
	// MaxInFlightPerClient bounds the checks outside the priority lane
	// in flight for one address and for one account. Default 4.
	MaxInFlightPerClient int
	// MaxQueue bounds the checks outside the priority lane waiting for
	// an argon2 slot; beyond, 503 with Retry-After (busy). Default 64.
	MaxQueue int
}

// DefaultLoginLimits returns the defaults of LoginLimits.
func DefaultLoginLimits() LoginLimits {
	return LoginLimits{
		AccountFailures:      5,
		AddrFailures:         10,
		FailureWindow:        15 * time.Minute,
		BackoffBase:          time.Second,
		BackoffMax:           10 * time.Minute,
		CacheTTL:             time.Minute,
		KnownTTL:             7 * 24 * time.Hour,
		MaxEntries:           100000,
		MaxInFlightPerClient: 4,
		MaxQueue:             64,
	}
}

func (l LoginLimits) withDefaults() LoginLimits {
	d := DefaultLoginLimits()
	set := func(v *int, dv int) {
		if *v <= 0 {
			*v = dv
		}
	}
	setD := func(v *time.Duration, dv time.Duration) {
		if *v <= 0 {
			*v = dv
		}
	}
	set(&l.AccountFailures, d.AccountFailures)
	set(&l.AddrFailures, d.AddrFailures)
	set(&l.MaxEntries, d.MaxEntries)
	set(&l.MaxInFlightPerClient, d.MaxInFlightPerClient)
	set(&l.MaxQueue, d.MaxQueue)
	setD(&l.FailureWindow, d.FailureWindow)
	setD(&l.BackoffBase, d.BackoffBase)
	setD(&l.BackoffMax, d.BackoffMax)
	setD(&l.CacheTTL, d.CacheTTL)
	setD(&l.KnownTTL, d.KnownTTL)
	return l
}

// Errors of the login guard; each comes wrapped in an api.ThrottleError
// (429) or api.RetryError (503 busy).
var (
	// ErrLoginBackoff: the account or the client address sent too many
	// wrong passwords and must wait.
	ErrLoginBackoff = errors.New("directory: too many failed logins; wait")
	// ErrLoginConcurrency: the client address or the account has too
	// many password checks in flight.
	ErrLoginConcurrency = errors.New("directory: too many password checks at once")
	// ErrLoginQueueFull: too many password checks wait for the hasher.
	ErrLoginQueueFull = errors.New("directory: password checks queue full")
)

// credKey identifies credentials in the caches without keeping them.
type credKey [sha256.Size]byte

// answer is a cached check result.
type answer struct {
	hash string // the stored hash it was computed against
	ok   bool
}

// failures counts a key's recent distinct wrong passwords.
type failures struct {
	n     int
	last  time.Time
	until time.Time // refused before this
}

// flight is a check in progress that identical ones wait for.
type flight struct {
	done chan struct{}
	ok   bool
	err  error
}

// guard implements the login guard for one Directory.
type guard struct {
	lim   LoginLimits
	clock func() time.Time
	key   []byte

	mu       sync.Mutex
	answers  boundedMap[credKey, answer]
	fails    boundedMap[string, failures] // "a:"+user, "ip:"+addr
	known    boundedMap[string, struct{}]
	flights  map[credKey]*flight
	inflight map[string]int // "a:"+user, "ip:"+addr: general-lane checks

	queued atomic.Int64 // general-lane checks waiting for a slot
	// Counters, for tests and metrics: checks hashed, answered from the
	// cache, refused, and waiting for an identical one.
	hashed, cached, refused, shared atomic.Uint64
}

func newGuard(lim LoginLimits, clock func() time.Time) (*guard, error) {
	lim = lim.withDefaults()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("directory: login guard key: %w", err)
	}
	return &guard{
		lim: lim, clock: clock, key: key,
		answers:  newBoundedMap[credKey, answer](lim.MaxEntries),
		fails:    newBoundedMap[string, failures](lim.MaxEntries),
		known:    newBoundedMap[string, struct{}](lim.MaxEntries),
		flights:  make(map[credKey]*flight),
		inflight: make(map[string]int),
	}, nil
}

func (g *guard) mac(user, password string) credKey {
	m := hmac.New(sha256.New, g.key)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var k credKey
	m.Sum(k[:0])
	return k
}

// addrKey groups client addresses: an IPv4 address, or the /64 of an
// IPv6 one. "" (unknown) groups nothing.
func addrKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return ""
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// verifyFunc runs the argon2 check in the given lane.
type verifyFunc func(ctx context.Context, priority bool) (bool, error)

// check answers whether password is user's, through the caches, limits
// and lanes described above; hash is the stored hash verify compares
// with ("" for an unknown user) and addr the client's address
// ("" unknown). It returns the verdict, or an error: a *api.ThrottleError
// (429), a busy *api.RetryError (503), ctx's error or verify's.
func (g *guard) check(ctx context.Context, user, password, hash, addr string, verify verifyFunc) (bool, error) {
	if g.lim.Off {
		return verify(ctx, false)
	}
	k := g.mac(user, password)
	ak := addrKey(addr)
	acct, ip, pair := "a:"+user, "ip:"+ak, user+"\x00"+ak
	now := g.clock()

	g.mu.Lock()
	if a, ok := g.answers.live(k, now); ok && a.hash == hash {
		if a.ok && ak != "" {
			g.known.put(pair, struct{}{}, now.Add(g.lim.KnownTTL), now)
		}
		g.mu.Unlock()
		g.cached.Add(1)
		return a.ok, nil
	}
	known := false
	if ak != "" {
		_, known = g.known.live(pair, now)
	}
	var wait time.Duration
	if ak != "" {
		wait = g.waitLocked(ip, now)
	}
	if !known {
		wait = max(wait, g.waitLocked(acct, now))
	}
	if wait > 0 {
		g.mu.Unlock()
		g.refused.Add(1)
		return false, api.TooManyRequests(ErrLoginBackoff, wait)
	}
	if f, ok := g.flights[k]; ok {
		g.mu.Unlock()
		g.shared.Add(1)
		select {
		case <-f.done:
			if f.err != nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) && ctx.Err() == nil {
				// The check we waited for gave up with its caller: make
				// our own.
				return g.check(ctx, user, password, hash, addr, verify)
			}
			return f.ok, f.err
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	var counted []string
	if !known {
		counted = []string{acct}
		if ak != "" {
			counted = append(counted, ip)
		}
		for _, c := range counted {
			if g.inflight[c] >= g.lim.MaxInFlightPerClient {
				g.mu.Unlock()
				g.refused.Add(1)
				return false, api.TooManyRequests(ErrLoginConcurrency, time.Second)
			}
		}
		if g.queued.Load() >= int64(g.lim.MaxQueue) {
			g.mu.Unlock()
			g.refused.Add(1)
			return false, api.Busy(ErrLoginQueueFull, api.RetryBusy)
		}
		for _, c := range counted {
			g.inflight[c]++
		}
	}
	f := &flight{done: make(chan struct{})}
	g.flights[k] = f
	g.mu.Unlock()

	if !known {
		g.queued.Add(1)
	}
	ok, err := verify(ctx, known)
	if !known {
		g.queued.Add(-1)
	}
	g.hashed.Add(1)
	now = g.clock()

	g.mu.Lock()
	delete(g.flights, k)
	for _, c := range counted {
		if g.inflight[c]--; g.inflight[c] <= 0 {
			delete(g.inflight, c)
		}
	}
	if err == nil {
		g.answers.put(k, answer{hash: hash, ok: ok}, now.Add(g.lim.CacheTTL), now)
		switch {
		case ok && ak != "":
			g.known.put(pair, struct{}{}, now.Add(g.lim.KnownTTL), now)
		case !ok:
			g.failLocked(acct, g.lim.AccountFailures, now)
			if ak != "" {
				g.failLocked(ip, g.lim.AddrFailures, now)
			}
		}
	}
	g.mu.Unlock()
	f.ok, f.err = ok, err
	close(f.done)
	return ok, err
}

// waitLocked returns how long key must still wait; g.mu is held.
func (g *guard) waitLocked(key string, now time.Time) time.Duration {
	f, ok := g.fails.get(key)
	if !ok || !now.Before(f.until) {
		return 0
	}
	return f.until.Sub(now)
}

// failLocked counts a distinct wrong password for key, allowed free
// ones; g.mu is held.
func (g *guard) failLocked(key string, free int, now time.Time) {
	f, _ := g.fails.get(key)
	if now.Sub(f.last) > g.lim.FailureWindow {
		f = failures{}
	}
	f.n++
	f.last = now
	if over := f.n - free; over > 0 {
		d := g.lim.BackoffMax
		if over <= 30 {
			d = min(d, g.lim.BackoffBase<<(over-1))
		}
		f.until = now.Add(d)
	}
	g.fails.put(key, f, now.Add(g.lim.FailureWindow+g.lim.BackoffMax), now)
}

// forget drops the cached answers and failure counts of user (after its
// credentials changed, an old right password must be hashed again).
// Answers are keyed by credentials, so they stay: each names the hash it
// was computed against and a changed hash voids it.
func (g *guard) forget(user string) {
	g.mu.Lock()
	g.fails.delete("a:" + user)
	g.mu.Unlock()
}

// boundedMap is a map of at most max entries, each with an expiry; when
// full, put drops expired entries it meets (at most a few dozen looked
// at) and then an arbitrary one. Not safe for concurrent use.
type boundedMap[K comparable, V any] struct {
	max int
	m   map[K]boundedEntry[V]
}

type boundedEntry[V any] struct {
	v       V
	expires time.Time
}

func newBoundedMap[K comparable, V any](max int) boundedMap[K, V] {
	return boundedMap[K, V]{max: max, m: make(map[K]boundedEntry[V])}
}

// get returns k's value, whether or not it expired.
func (b *boundedMap[K, V]) get(k K) (V, bool) {
	e, ok := b.m[k]
	return e.v, ok
}

// live returns k's value if it has not expired at now.
func (b *boundedMap[K, V]) live(k K, now time.Time) (V, bool) {
	e, ok := b.m[k]
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put stores v under k until expires; now decides what has expired.
func (b *boundedMap[K, V]) put(k K, v V, expires, now time.Time) {
	if _, ok := b.m[k]; !ok && len(b.m) >= b.max {
		n := 0
		for old, e := range b.m {
			if !now.Before(e.expires) {
				delete(b.m, old)
			}
			if n++; n >= 64 {
				break
			}
		}
		if len(b.m) >= b.max {
			for old := range b.m {
				delete(b.m, old)
				break
			}
		}
	}
	b.m[k] = boundedEntry[V]{v: v, expires: expires}
}

func (b *boundedMap[K, V]) delete(k K) { delete(b.m, k) }

func (b *boundedMap[K, V]) len() int { return len(b.m) }
