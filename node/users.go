package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
	if s.nums.on {
		return s.usersByNumber(after, limit)
	}
	lo := []byte{1}
	if after != "" {
		lo = userEnd(nil, ukey(after))
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []string
	for ok := it.First(); ok && (limit <= 0 || len(out) < limit); {
		k := it.Key()
		i := strings.IndexByte(string(k), 0)
		if i <= 0 {
			break
		}
		u := string(k[:i])
		has, err := hasData(it, ukey(u))
		if err != nil {
			return nil, err
		}
		if has {
			out = append(out, u)
		}
		ok = it.SeekGE(userEnd(nil, ukey(u)))
	}
	return out, it.Error()
}

// usersByNumber is Users in a store of the number layout: the names, in
// order, are the keys of \0N.
func (s *Store) usersByNumber(after string, limit int) ([]string, error) {
	lo := userNamePrefix
	if after != "" {
		lo = append(userNameKey(nil, after), 0)
	}
	names, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(nil, userNamePrefix)})
	if err != nil {
		return nil, err
	}
	defer names.Close()
	data, err := s.db.NewIter(nil)
	if err != nil {
		return nil, err
	}
	defer data.Close()
	var out []string
	for ok := names.First(); ok && (limit <= 0 || len(out) < limit); ok = names.Next() {
		v := names.Value()
		if len(v) != 4 {
			return nil, fmt.Errorf("node: number of %q: %w", names.Key()[len(userNamePrefix):], errCorrupt)
		}
		kp := numKey(binary.BigEndian.Uint32(v))
		if !data.SeekGE(userStart(nil, kp)) {
			if err := data.Error(); err != nil {
				return nil, err
			}
			continue
		}
		has, err := hasData(data, kp)
		if err != nil {
			return nil, err
		}
		if has {
			out = append(out, string(names.Key()[len(userNamePrefix):]))
		}
	}
	return out, errors.Join(names.Error(), data.Error())
}

// hasData reports whether the keys from it's position on, which start
// with kp's keys, hold any of them but the user meta (the counters alone
// are not data). It moves it.
func hasData(it *pebble.Iterator, kp ukey) (bool, error) {
	start := userStart(nil, kp)
	if !bytes.HasPrefix(it.Key(), start) {
		return false, nil
	}
	if bytes.Equal(it.Key(), metaKey(nil, kp, "")) {
		// The user meta sorts first; data, if any, follows it.
		if !it.Next() {
			return false, it.Error()
		}
	}
	return bytes.HasPrefix(it.Key(), start), nil
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
	// A user without a number (number layout) has no keys to wipe; it is
	// not given one for nothing.
	errNone := errors.New("no keys")
	_, _, err := s.writeLocked(user,
		func(st *userState) (*userState, error) {
			if st.kp == noUserKey {
				return nil, errNone
			}
			return st, nil
		},
		func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
			sc.k = userStart(sc.k[:0], st.kp)
			sc.k2 = userEnd(sc.k2[:0], st.kp)
			if err := b.DeleteRange(sc.k, sc.k2, nil); err != nil {
				return nil, err
			}
			sc.k = metaKey(sc.k[:0], st.kp, "")
			sc.v = appendUserMeta(sc.v[:0], &userMeta{nextSeq: st.nextSeq, last: int64(t.ts), chg: st.chg.Load()})
			if err := b.Set(sc.k, sc.v, nil); err != nil {
				return nil, err
			}
			return func() {
				clear(st.colls)
				st.used, st.conf, st.local, st.nlocal = 0, 0, 0, 0
			}, nil
		})
	if errors.Is(err, errNone) {
		return nil
	}
	return err
}
