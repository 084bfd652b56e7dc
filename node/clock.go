package node

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/hce-sync/hce/api"
)

// clockLease is how far ahead of the last issued value the persisted upper
// bound is set (10 s in centiseconds).
const clockLease = 1000

// nodeClock is the node clock of the design brief: Now() = max(last, wall),
// Tick() = max(last+1, wall). No value above the persisted bound is issued,
// so after a restart (which resumes at the bound) no value is reissued even
// if the wall clock went backwards.
type nodeClock struct {
	mu      sync.Mutex
	wall    func() time.Time
	last    int64
	bound   int64
	persist func(bound int64) error
}

func wallStamp(t time.Time) int64 { return t.UnixNano() / 1e7 }

// now returns max(last, wall) and remembers it, so a later tick is above it.
func (c *nodeClock) now() (api.Stamp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issue(max(c.last, wallStamp(c.wall())))
}

// tick returns max(last+1, wall): strictly above every value issued before.
func (c *nodeClock) tick() (api.Stamp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issue(max(c.last+1, wallStamp(c.wall())))
}

func (c *nodeClock) issue(v int64) (api.Stamp, error) {
	if v > c.bound {
		nb := v + clockLease
		if err := c.persist(nb); err != nil {
			return 0, fmt.Errorf("node: persisting clock bound: %w", err)
		}
		c.bound = nb
	}
	c.last = v
	return api.Stamp(v), nil
}

func encodeClock(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func decodeClock(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}
