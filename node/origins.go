package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// The origin dictionary: every record head with a live winner names the
// winner's origin (a node id: the store's UUID, 36 bytes, or a libp2p
// peer id, 52), and most name the same few. The dictionary gives each of
// them a number, kept under a global key of its own (\0o + 4-byte number,
// the origin as value) written once, synced, before a document refers to
// it: a document then stores the number (one byte) instead of the string.
// Entries are never removed or renumbered. An origin met when the
// dictionary is full (maxOrigins), or while the store refuses writes, is
// stored as a string.

// maxOrigins bounds the dictionary: origins are node ids, so a
// federation's nodes fit; a CouchDB client inventing origins fills it and
// its further origins are stored as strings.
const maxOrigins = 256

var originPrefix = []byte("\x00o")

func originKey(n uint32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), originPrefix...), n)
}

// originDict is an immutable snapshot of the dictionary.
type originDict struct {
	list []string
	idx  map[string]int
}

// origins holds the store's origin dictionary.
type origins struct {
	mu   sync.Mutex // serializes additions
	dict atomic.Pointer[originDict]
}

// loadOrigins reads the dictionary and enters the store's own origin.
func (s *Store) loadOrigins() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: originPrefix, UpperBound: prefixEnd(nil, originPrefix)})
	if err != nil {
		return err
	}
	d := &originDict{idx: map[string]int{}}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != len(originPrefix)+4 || binary.BigEndian.Uint32(k[len(originPrefix):]) != uint32(len(d.list)) {
			it.Close()
			return fmt.Errorf("node: origin dictionary key %q: %w", k, errCorrupt)
		}
		o := string(it.Value())
		d.idx[o] = len(d.list)
		d.list = append(d.list, o)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("node: reading the origin dictionary: %w", err)
	}
	s.orig.dict.Store(d)
	if _, ok := d.idx[s.origin]; !ok {
		if _, ok := s.intern(s.origin); !ok {
			return errors.New("node: cannot enter the store's origin in its dictionary")
		}
	}
	return nil
}

// originAt returns dictionary entry n.
func (s *Store) originAt(n uint64) (string, bool) {
	d := s.orig.dict.Load()
	if n >= uint64(len(d.list)) {
		return "", false
	}
	return d.list[n], true
}

// originRef returns o's number in the dictionary, entering it if there
// is room; ok is false when o is to be stored as a string.
func (s *Store) originRef(o string) (n int, ok bool) {
	if n, ok := s.orig.dict.Load().idx[o]; ok {
		return n, true
	}
	return s.intern(o)
}

// intern enters o in the dictionary: its key is written and synced first.
func (s *Store) intern(o string) (int, bool) {
	s.orig.mu.Lock()
	defer s.orig.mu.Unlock()
	d := s.orig.dict.Load()
	if n, ok := d.idx[o]; ok {
		return n, true
	}
	if len(d.list) >= maxOrigins || o == "" || s.disk.writable() != nil {
		return 0, false
	}
	n := len(d.list)
	err := s.guarded(func() error { return s.db.Set(originKey(uint32(n)), []byte(o), pebble.Sync) })
	if err != nil {
		s.log.Warn("cannot add an origin to the dictionary; stored as a string", "origin", o, "err", err)
		return 0, false
	}
	nd := &originDict{list: append(d.list[:len(d.list):len(d.list)], o), idx: make(map[string]int, len(d.idx)+1)}
	for k, v := range d.idx {
		nd.idx[k] = v
	}
	nd.idx[o] = n
	s.orig.dict.Store(nd)
	return n, true
}
