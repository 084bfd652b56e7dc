package node

import (
	"sync"
	"time"
)

// rateLimit lets one event through per interval and counts the events it
// held back meanwhile, so that a condition that persists (a full disk, a
// user over quota on every replicated batch) is logged at a bounded rate
// with the count of what was not logged.
type rateLimit struct {
	every time.Duration
	mu    sync.Mutex
	next  time.Time
	held  int
}

// allow reports whether an event at now may be logged, and how many were
// held back since the last one that was.
func (r *rateLimit) allow(now time.Time) (ok bool, held int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Before(r.next) {
		r.held++
		return false, 0
	}
	held, r.held = r.held, 0
	r.next = now.Add(r.every)
	return true, held
}
