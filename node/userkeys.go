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
// user's 4-byte number, 5 bytes instead of the name's 32 or more: a POST's
// keys are a third shorter, which the memtable, the batch sort and every
// compaction compare and copy (DESIGN.md, Key layout).
//
// The numbers are kept under two global keys per user, written once and
// synced before any key of the user uses the number (as the origin
// dictionary's entries are): \0N name -> number and \0n number -> name.
// A user gets its number at its first write; a user without one has no
// data, and reads use noUserKey, which no key has. Numbers are never
// reused: WipeUser keeps the user's.

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

// ensureUserKey gives st's user a number if it has none, writing and
// syncing the number's keys before the caller's batch uses it. The caller
// holds the user's exclusive lock.
func (s *Store) ensureUserKey(user string, st *userState) error {
	if st.kp != noUserKey {
		return nil
	}
	s.nums.mu.Lock()
	defer s.nums.mu.Unlock()
	if s.nums.next >= maxUserNumber {
		return errUsersFull
	}
	n := uint32(s.nums.next)
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(userNameKey(nil, user), binary.BigEndian.AppendUint32(nil, n), nil); err != nil {
		return err
	}
	if err := b.Set(userNumKey(nil, n), []byte(user), nil); err != nil {
		return err
	}
	// The number is used up even if the commit fails: the batch may
	// still be durable, and a number is never given twice.
	s.nums.next++
	if err := s.commit(b); err != nil {
		return err
	}
	st.kp = numKey(n)
	return nil
}

// userKeyOf returns user's key prefix for a read that does not otherwise
// hold the user's lock. A prefix never changes once given, and a user
// without one (noUserKey) has no keys.
func (s *Store) userKeyOf(user string) (ukey, error) {
	if !s.nums.on {
		return ukey(user), nil
	}
	mu := s.lock(user)
	mu.RLock()
	defer mu.RUnlock()
	st, err := s.state(user)
	if err != nil {
		return "", err
	}
	return st.kp, nil
}
