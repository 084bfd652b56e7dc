package directory

import (
	"errors"
	"sync"
	"time"

	"github.com/hce-sync/hce/api"
)

// ResetLimits bounds password-reset mails (AccountConfig.Resets). A zero
// field means the default; a negative one, no limit.
type ResetLimits struct {
	// PerAccount is how many reset mails one account is sent within
	// Window. The state machine counts them (Account.Resets), so it holds
	// for all voters together. Default 3.
	PerAccount int
	// PerAddr is how many reset requests one client address (an IPv4
	// address or IPv6 /64) may make within Window on this voter.
	// Default 10.
	PerAddr int
	// Global is how many reset mails this voter sends within Window, to
	// anyone. Default 500.
	Global int
	// Window is the period the limits count over. Default 1 h.
	Window time.Duration
}

// DefaultResetLimits returns the defaults of ResetLimits.
func DefaultResetLimits() ResetLimits {
	return ResetLimits{PerAccount: 3, PerAddr: 10, Global: 500, Window: time.Hour}
}

func (l ResetLimits) withDefaults() ResetLimits {
	d := DefaultResetLimits()
	if l.PerAccount == 0 {
		l.PerAccount = d.PerAccount
	}
	if l.PerAddr == 0 {
		l.PerAddr = d.PerAddr
	}
	if l.Global == 0 {
		l.Global = d.Global
	}
	if l.Window <= 0 {
		l.Window = d.Window
	}
	return l
}

// Errors of the reset-mail limits, each wrapped in an api.ThrottleError.
var (
	// ErrResetsFromAddr: the client address asked for too many reset mails.
	ErrResetsFromAddr = errors.New("directory: too many password reset requests from this address")
	// ErrResetsGlobal: this voter sent as many reset mails as it may.
	ErrResetsGlobal = errors.New("directory: too many password reset mails; try later")
)

// resetLimiter counts reset requests per client address and in all, in
// fixed windows of ResetLimits.Window, on this voter (the per-account
// limit is the state machine's).
type resetLimiter struct {
	lim ResetLimits

	mu     sync.Mutex
	addrs  boundedMap[string, resetWindow]
	global resetWindow
}

type resetWindow struct {
	start time.Time
	n     int
}

func newResetLimiter(lim ResetLimits, maxEntries int) *resetLimiter {
	return &resetLimiter{lim: lim, addrs: newBoundedMap[string, resetWindow](maxEntries)}
}

// count adds one to w unless it is at max within its window; it returns
// the wait when it is.
func (r *resetLimiter) count(w *resetWindow, max int, now time.Time) (time.Duration, bool) {
	if now.Sub(w.start) >= r.lim.Window {
		*w = resetWindow{start: now}
	}
	if max >= 0 && w.n >= max {
		return w.start.Add(r.lim.Window).Sub(now), false
	}
	w.n++
	return 0, true
}

// take counts one reset request from addr ("" unknown) at now, or
// returns an *api.ThrottleError naming the limit reached.
func (r *resetLimiter) take(addr string, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lim.Global >= 0 && r.global.n >= r.lim.Global && now.Sub(r.global.start) < r.lim.Window {
		return api.TooManyRequests(ErrResetsGlobal, r.global.start.Add(r.lim.Window).Sub(now))
	}
	if k := addrKey(addr); k != "" {
		w, _ := r.addrs.get(k)
		wait, ok := r.count(&w, r.lim.PerAddr, now)
		if !ok {
			return api.TooManyRequests(ErrResetsFromAddr, wait)
		}
		r.addrs.put(k, w, w.start.Add(r.lim.Window), now)
	}
	r.count(&r.global, r.lim.Global, now)
	return nil
}
