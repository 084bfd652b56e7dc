package node

import (
	"bytes"
	"context"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// Users returns up to limit names of users with data stored, in
// ascending order, after the name after ("" = from the start). A user
// whose only key is its counters (after WipeUser, or a write that changed
// nothing) has no data and is left out.
func (s *Store) Users(ctx context.Context, after string, limit int) ([]string, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	lo := []byte{1}
	if after != "" {
		lo = userEnd(nil, after)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []string
	var meta []byte
	for ok := it.First(); ok && (limit <= 0 || len(out) < limit); {
		k := it.Key()
		i := strings.IndexByte(string(k), 0)
		if i <= 0 {
			break
		}
		u := string(k[:i])
		meta = metaKey(meta[:0], u, "")
		if bytes.Equal(k, meta) {
			// The user meta sorts first; data, if any, follows it.
			ok = it.Next()
			if !ok || !bytes.HasPrefix(it.Key(), meta[:len(u)+1]) {
				if ok {
					continue // the next user
				}
				break
			}
		}
		out = append(out, u)
		ok = it.SeekGE(userEnd(nil, u))
	}
	return out, it.Error()
}

// WipeUser removes everything the node keeps for user — records,
// documents and their tombstones, the changes feed, checkpoints and _local
// documents — in one synced batch, without making tombstones: for an
// account deleted at the directory, whose every replica is wiped the same
// way and which no peer may replicate any more. The user's counters and
// last stamp are kept, so numbers and stamps are never reissued.
func (s *Store) WipeUser(ctx context.Context, user string) error {
	if err := checkNames(user); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	_, _, err := s.writeLocked(user, nil,
		func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
			sc.k = userStart(sc.k[:0], user)
			sc.k2 = userEnd(sc.k2[:0], user)
			if err := b.DeleteRange(sc.k, sc.k2, nil); err != nil {
				return nil, err
			}
			sc.k = metaKey(sc.k[:0], user, "")
			sc.v = appendUserMeta(sc.v[:0], &userMeta{nextSeq: st.nextSeq, last: int64(t.ts), chg: st.chg.Load()})
			if err := b.Set(sc.k, sc.v, nil); err != nil {
				return nil, err
			}
			return func() {
				clear(st.colls)
				st.used, st.conf, st.local, st.nlocal = 0, 0, 0, 0
			}, nil
		})
	return err
}
