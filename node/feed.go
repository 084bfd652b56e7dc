package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api/bincode"
	"github.com/hce-sync/hce/node/revtree"
)

// Change is one row of a user's changes feed: a document at the local
// sequence number of its latest change.
type Change struct {
	Seq      uint64
	Coll, ID string
	// Leaves are the document's open revisions, the winner first.
	Leaves []revtree.Rev
	// Deleted reports whether the winner is a tombstone.
	Deleted bool
	// Expiry is the winner's expiry (Unix seconds, 0 = never).
	Expiry int64
}

// Changes returns the user's changes feed after since: each document once,
// at the number of its latest change, in ascending order, at most limit rows
// (limit <= 0: no limit). Documents whose winner has expired are left out
// (they are invisible and about to be purged). last is the number of the
// last row scanned, skipped ones included, or since when there was none: a
// replicator that got fewer than limit rows has everything up to last.
// The feed is read from one consistent snapshot.
func (s *Store) Changes(ctx context.Context, user string, since uint64, limit int) (rows []Change, last uint64, err error) {
	if err := checkNames(user); err != nil {
		return nil, 0, err
	}
	if err := s.enter(); err != nil {
		return nil, 0, err
	}
	defer s.leave()
	m, err := s.clock.mono()
	if err != nil {
		return nil, 0, err
	}
	nowSec := m / 100
	if since == ^uint64(0) {
		return nil, since, nil
	}
	kp, err := s.userKeyOf(user)
	if err != nil {
		return nil, 0, err
	}
	lo := chgKey(nil, kp, since+1)
	hi := prefixEnd(nil, userTag(nil, kp, tagChg))
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, 0, err
	}
	defer it.Close()
	last = since
	for ok := it.First(); ok; ok = it.Next() {
		if limit > 0 && len(rows) >= limit {
			break
		}
		k := it.Key()
		if len(k) != len(lo) {
			return nil, 0, errCorrupt
		}
		seq := tailU64(k, 0)
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, err
		}
		last = seq
		var c Change
		if err := decodeChange(v, &c); err != nil {
			return nil, 0, fmt.Errorf("node: changes row %d of %s: %w", seq, user, err)
		}
		if !c.Deleted && c.Expiry != 0 && c.Expiry <= nowSec {
			continue
		}
		c.Seq = seq
		rows = append(rows, c)
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
	}
	if err := it.Error(); err != nil {
		return nil, 0, err
	}
	return rows, last, nil
}

// changeEntry is the value of a changes-index key: the document and what a
// changes row needs, so the feed is a range scan.
func appendChange(b []byte, coll, id string, ds *docState) ([]byte, error) {
	var one [1]revtree.Leaf
	var leaves []revtree.Leaf
	if ds.tree != nil {
		leaves = ds.tree.Leaves()
	} else if w, ok := ds.winner(); ok {
		one[0] = w
		leaves = one[:]
	}
	w := leaves[0]
	b = append(b, 1)
	b = bincode.AppendString(b, coll)
	b = bincode.AppendString(b, id)
	b = bincode.AppendBool(b, w.Deleted)
	x, _, err := ds.body(w.Rev)
	if err != nil {
		return nil, err
	}
	b = binary.AppendVarint(b, x.Expiry)
	b = binary.AppendUvarint(b, uint64(len(leaves)))
	for _, l := range leaves {
		b = binary.AppendUvarint(b, l.Rev.Pos)
		b = append(b, l.Rev.Hash[:]...)
	}
	return b, nil
}

func decodeChange(v []byte, c *Change) error {
	if len(v) < 1 || v[0] != 1 {
		return errCorrupt
	}
	d := newDecoder(v[1:])
	c.Coll = d.String(noMax)
	c.ID = d.String(noMax)
	c.Deleted = d.Byte() == 1
	c.Expiry = d.Varint()
	n := d.Count(noMax, 1+revtree.HashLen)
	if d.Err() != nil || n == 0 {
		return errCorrupt
	}
	c.Leaves = make([]revtree.Rev, 0, n)
	for range n {
		var r revtree.Rev
		r.Pos = d.Uvarint()
		copy(r.Hash[:], d.Take(revtree.HashLen))
		if d.Err() != nil {
			return errCorrupt
		}
		c.Leaves = append(c.Leaves, r)
	}
	return nil
}

// UpdateSeq returns the user's last changes-feed number (0 before the first
// change).
func (s *Store) UpdateSeq(ctx context.Context, user string) (uint64, error) {
	if err := checkNames(user); err != nil {
		return 0, err
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	mu := s.lock(user)
	mu.RLock()
	defer mu.RUnlock()
	st, err := s.state(user)
	if err != nil {
		return 0, err
	}
	return st.chg.Load(), nil
}

// WaitChanges returns nil as soon as the user's changes feed has a number
// above since (at once if it has already), or ctx's error.
func (s *Store) WaitChanges(ctx context.Context, user string, since uint64) error {
	for {
		c := s.watch.ch(user)
		seq, err := s.UpdateSeq(ctx, user)
		if err != nil {
			return err
		}
		if seq > since {
			return nil
		}
		select {
		case <-c:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stop:
			return ErrClosed
		}
	}
}

// watchers wakes the callers of WaitChanges.
type watchers struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (w *watchers) ch(user string) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.m[user]
	if c == nil {
		c = make(chan struct{})
		w.m[user] = c
	}
	return c
}

func (w *watchers) wake(user string) {
	w.mu.Lock()
	if c := w.m[user]; c != nil {
		close(c)
		delete(w.m, user)
	}
	w.mu.Unlock()
}
