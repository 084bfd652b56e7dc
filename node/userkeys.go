package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// User key prefixes. Every per-user key starts with the user's prefix
// (ukey) and a NUL. In a store of the name layout (every store written by
// builds before the user numbers) the prefix is the user's name. In a store
// of the number layout (a store created by this build) it is \x01 and the
// user's 4-byte number, 5 bytes instead of a Weave name's 32: a POST's keys
// are about half as long, and the memtable, the batch sort and every
// compaction compare and copy them (DESIGN.md, Key layout).
//
// The numbers are kept under two global keys per user, \0N name -> number
// and \0n number -> name, written once, in the batch of the user's first
// write. A user without a number has no data, and reads use noUserKey,
// which no key has. Numbers are never given twice: WipeUser keeps the
// user's.

// ukey is a user's key prefix: its name (name layout) or \x01 and its
// number (number layout).
type ukey string

// check returns u, and panics when it is empty: a key built from the zero
// ukey (a prefix not taken from the user's state) would land among the
// global keys.
func (u ukey) check() ukey {
	if u == "" {
		panic("node: a user key without the user's prefix")
	}
	return u
}

// noUserKey is the prefix of a user without a number in a store of the
// number layout: the largest number, never given, so no key starts with
// it and reads of such a user find nothing.
const noUserKey = ukey("\x01\xff\xff\xff\xff")

// maxUserNumber is the number of numbers a store can give.
const maxUserNumber = 1<<32 - 1

var (
	// keyLayout marks a store of the number layout.
	keyLayout      = []byte("\x00layout")
	userNamePrefix = []byte("\x00N") // \0N name -> number
	userNumPrefix  = []byte("\x00n") // \0n number -> name
	layoutNumbers  = []byte{1}
	errUsersFull   = errors.New("node: the store has given every user number")
)

// userNums holds the number layout's allocator.
type userNums struct {
	on   bool       // the store has the number layout
	mu   sync.Mutex // serializes assignments
	next uint64     // the next number to give
}

func numKey(n uint32) ukey {
	var b [5]byte
	b[0] = 1
	binary.BigEndian.PutUint32(b[1:], n)
	return ukey(b[:])
}

func userNameKey(b []byte, user string) []byte {
	return append(append(b, userNamePrefix...), user...)
}

func userNumKey(b []byte, n uint32) []byte {
	return binary.BigEndian.AppendUint32(append(b, userNumPrefix...), n)
}

// loadLayout decides the store's key layout when it opens: a store marked
// with keyLayout, or one without any per-user key yet (new, or created by
// an earlier build and never written to), has the number layout; any
// other store keeps the name layout of the builds before. It then reads
// the next number to give.
func (s *Store) loadLayout() error {
	v, closer, err := s.db.Get(keyLayout)
	switch {
	case err == nil:
		ok := len(v) == 1 && v[0] == layoutNumbers[0]
		closer.Close()
		if !ok {
			return fmt.Errorf("node: unknown key layout %x: %w", v, errCorrupt)
		}
	case errors.Is(err, pebble.ErrNotFound):
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{1}})
		if err != nil {
			return err
		}
		users := it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return fmt.Errorf("node: reading the key layout: %w", err)
		}
		if users {
			return nil // the name layout
		}
		if err := s.db.Set(keyLayout, layoutNumbers, pebble.Sync); err != nil {
			return fmt.Errorf("node: writing the key layout: %w", err)
		}
	default:
		return fmt.Errorf("node: reading the key layout: %w", err)
	}
	s.nums.on = true
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: userNumPrefix, UpperBound: prefixEnd(nil, userNumPrefix)})
	if err != nil {
		return err
	}
	if it.Last() {
		k := it.Key()
		if len(k) != len(userNumPrefix)+4 {
			it.Close()
			return fmt.Errorf("node: user number key %q: %w", k, errCorrupt)
		}
		s.nums.next = uint64(binary.BigEndian.Uint32(k[len(userNumPrefix):])) + 1
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("node: reading user numbers: %w", err)
	}
	return nil
}

// lookupUserKey returns user's key prefix as stored: its name in the name
// layout, its number's prefix or noUserKey in the number layout.
func (s *Store) lookupUserKey(user string, buf []byte) (ukey, error) {
	if !s.nums.on {
		return ukey(user), nil
	}
	v, closer, err := s.db.Get(userNameKey(buf, user))
	if errors.Is(err, pebble.ErrNotFound) {
		return noUserKey, nil
	}
	if err != nil {
		return "", fmt.Errorf("node: reading the number of %q: %w", user, err)
	}
	defer closer.Close()
	if len(v) != 4 {
		return "", fmt.Errorf("node: number of %q: %w", user, errCorrupt)
	}
	return numKey(binary.BigEndian.Uint32(v)), nil
}

// numberUser gives st's user the store's next number if it has none, and
// stages the number's keys in b, the batch of the user's first write: the
// number and the keys it prefixes become durable together, with no sync
// of their own. It returns nil when the user had a number. The caller
// holds the user's exclusive lock, commits b with the returned
// pendingNumber's commit and calls its end when done.
func (s *Store) numberUser(user string, st *userState, b *pebble.Batch) (*pendingNumber, error) {
	if st.kp != noUserKey {
		return nil, nil
	}
	s.nums.mu.Lock()
	if s.nums.next >= maxUserNumber {
		s.nums.mu.Unlock()
		return nil, errUsersFull
	}
	n := uint32(s.nums.next)
	s.nums.next++
	s.nums.mu.Unlock()
	p := &pendingNumber{s: s, st: st, n: n}
	if err := putUserNumber(b, user, n); err != nil {
		p.end()
		return nil, err
	}
	st.kp = numKey(n)
	return p, nil
}

// pendingNumber is a number numberUser staged in a batch not committed
// yet. Its methods accept nil (no number was given).
type pendingNumber struct {
	s    *Store
	st   *userState
	n    uint32
	sent bool // the batch went to Pebble: it may be durable even if its commit failed
	done bool // the batch committed
}

// commit commits b, which holds p's keys.
func (p *pendingNumber) commit(s *Store, b *pebble.Batch) error {
	if p == nil {
		return s.commit(b)
	}
	p.sent = true
	if err := s.commit(b); err != nil {
		return err
	}
	p.done = true
	return nil
}

// end takes the number back from the user unless its batch committed; it
// goes back to the allocator only when its batch never went to Pebble
// and no later number was given (a write that changed nothing gives no
// number away), else it is never given again.
func (p *pendingNumber) end() {
	if p == nil || p.done {
		return
	}
	p.st.kp = noUserKey
	if p.sent {
		return
	}
	p.s.nums.mu.Lock()
	if p.s.nums.next == uint64(p.n)+1 {
		p.s.nums.next--
	}
	p.s.nums.mu.Unlock()
}

// putUserNumber stages the keys that give user number n.
func putUserNumber(b *pebble.Batch, user string, n uint32) error {
	if err := b.Set(userNameKey(nil, user), binary.BigEndian.AppendUint32(nil, n), nil); err != nil {
		return err
	}
	return b.Set(userNumKey(nil, n), []byte(user), nil)
}

// userKeyOf returns user's key prefix for a read that does not otherwise
// hold the user's lock (the changes feed, checkpoints, _local documents).
// It reads the number from Pebble, not from the user's state, so that it
// neither waits for a write of the user in progress (a write holds the
// user's lock through its commit) nor loads the user into the cache. A
// prefix never changes once given, and it becomes visible in Pebble
// with the first keys it prefixes (numberUser), so a read sees either
// no number and no keys, or the number and the keys. A user without one
// (noUserKey) has no keys.
func (s *Store) userKeyOf(user string) (ukey, error) {
	var buf [64]byte
	return s.lookupUserKey(user, buf[:0])
}
