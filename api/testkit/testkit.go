// Package testkit holds the helpers HCE's tests share: polling with a
// deadline instead of sleeping (WaitFor, Eventually), free loopback
// addresses (FreeAddr), a clock tests move by hand (Clock), a logger that
// writes to the test log (Logger), HTTP Basic credentials (BasicAuth), a
// record with a payload (WBO) and
// goroutine-leak checks (NoLeaks, VerifyTestMain).
//
// It lives under api because every package may import api; it imports no
// HCE package but api itself. Production code never imports it.
package testkit

import (
	"encoding/base64"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hce-sync/hce/api"
)

// PollInterval is how often WaitFor and Eventually test their condition.
const PollInterval = 20 * time.Millisecond

// WaitFor polls cond every PollInterval until it holds, and fails the test
// with "timed out waiting for <what>" once d has passed. Call it from the
// test's goroutine only (it calls t.Fatalf).
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(PollInterval)
	}
}

// Eventually polls check every PollInterval until it returns "" and fails
// the test with the last non-empty answer once d has passed: check says
// what is still missing.
func Eventually(t testing.TB, d time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", d, msg)
		}
		time.Sleep(PollInterval)
	}
}

// FreeAddr returns a loopback TCP address ("127.0.0.1:port") that was free
// a moment ago. Another process may take it before the caller listens;
// prefer listening on port 0 where the code allows it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Clock is a wall clock tests move by hand. The zero value reads the zero
// time; NewClock starts it somewhere useful. Safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d (backwards when d is negative).
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// Logger returns a logger that writes lines at level and above to the
// test's log (they show only when the test fails or with -v). Lines
// logged once the test's cleanup has run (by a goroutine still stopping)
// are dropped: testing panics on a log after the test's end. With the
// environment variable HCE_TEST_LOG set, it logs at debug level to stderr
// instead, for watching a test live.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	if os.Getenv("HCE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// testWriter sends log lines to t.Log until the test's cleanup.
type testWriter struct {
	t    testing.TB
	mu   sync.RWMutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.done {
		w.t.Helper()
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// BasicAuth returns the Authorization header value of HTTP Basic
// credentials user:password (RFC 7617; no validation, so tests can send
// what a client should not).
func BasicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// WBO returns a record with id and payload (and no other field), the
// record most tests write.
func WBO(id, payload string) api.WBO {
	return api.WBO{ID: id, Has: api.FieldPayload, Payload: payload}
}

// Discard is a logger that drops everything.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// leakIgnores are goroutines that outlive a clean shutdown by design:
// process-wide pools and caches of libraries we embed, started once.
var leakIgnores = []goleak.Option{
	// Pebble's shared cache and background workers are per process.
	goleak.IgnoreTopFunction("github.com/cockroachdb/pebble/v2/internal/cache.(*shard).releaseLoop"),
}

// NoLeaks notes the goroutines running now and returns a check that fails
// the test if goroutines started since are still running (it retries for
// a few seconds, so closing connections and timers can finish). Use it as
//
//	defer testkit.NoLeaks(t)()
func NoLeaks(t testing.TB, ignore ...goleak.Option) func() {
	t.Helper()
	opts := append(append([]goleak.Option{goleak.IgnoreCurrent()}, leakIgnores...), ignore...)
	return func() {
		t.Helper()
		if err := goleak.Find(opts...); err != nil {
			t.Fatalf("goroutines leaked: %v", err)
		}
	}
}

// VerifyTestMain runs a package's tests and then fails the run if any
// goroutine outlives them. Use it as a package's TestMain:
//
//	func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
func VerifyTestMain(m *testing.M, ignore ...goleak.Option) {
	goleak.VerifyTestMain(m, append(append([]goleak.Option{}, leakIgnores...), ignore...)...)
}
