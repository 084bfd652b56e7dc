package node

import (
	"context"

	"github.com/hce-sync/hce/api"
)

// CollectionTimestamps maps each non-empty collection to its last modified
// time. It never scans: the metadata is in memory.
func (s *Store) CollectionTimestamps(ctx context.Context, user string) (map[string]api.Stamp, api.Stamp, error) {
	if err := checkNames(user); err != nil {
		return nil, 0, err
	}
	if err := s.enter(); err != nil {
		return nil, 0, err
	}
	defer s.leave()
	mu := s.lock(user)
	mu.RLock()
	defer mu.RUnlock()
	st, now, _, err := s.readStamp(user)
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]api.Stamp, len(st.colls))
	for c, m := range st.colls {
		out[c] = api.Stamp(m.last)
	}
	return out, now, nil
}

// liveInfo calls fn with the user's metadata after expired records have
// been purged, under the user's lock, with the request's time.
func (s *Store) liveInfo(user string, fn func(st *userState)) (api.Stamp, error) {
	if err := checkNames(user); err != nil {
		return 0, err
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	mu := s.lock(user)
	mu.RLock()
	st, now, mono, err := s.readStamp(user)
	if err != nil {
		mu.RUnlock()
		return 0, err
	}
	if st.hasTTL() {
		exp, err := s.anyExpired(user, st, mono/100)
		if err != nil {
			mu.RUnlock()
			return 0, err
		}
		if exp {
			mu.RUnlock()
			mu.Lock()
			defer mu.Unlock()
			if _, err := s.purgeUserLocked(user, nil); err != nil {
				return 0, err
			}
			if st, now, _, err = s.readStamp(user); err != nil {
				return 0, err
			}
			fn(st)
			return now, nil
		}
	}
	fn(st)
	mu.RUnlock()
	return now, nil
}

// CollectionCounts maps each collection with live records to their count.
func (s *Store) CollectionCounts(ctx context.Context, user string) (map[string]int64, api.Stamp, error) {
	return s.perCollection(user, func(m *collMeta) int64 { return m.count })
}

// CollectionUsage maps each collection with live records to the byte length
// of their payloads.
func (s *Store) CollectionUsage(ctx context.Context, user string) (map[string]int64, api.Stamp, error) {
	return s.perCollection(user, func(m *collMeta) int64 { return m.bytes })
}

// perCollection maps each collection with live records to f of its
// metadata, after the lazy purge (liveInfo).
func (s *Store) perCollection(user string, f func(m *collMeta) int64) (map[string]int64, api.Stamp, error) {
	var out map[string]int64
	now, err := s.liveInfo(user, func(st *userState) {
		out = make(map[string]int64, len(st.colls))
		for c, m := range st.colls {
			out[c] = f(&m)
		}
	})
	return out, now, err
}

// Quota returns the user's usage, as the quota counts it (the payloads of
// live records and of conflicting leaves, and the _local documents'
// bytes), and the quota (0 = off).
func (s *Store) Quota(ctx context.Context, user string) (used, limit int64, now api.Stamp, err error) {
	now, err = s.liveInfo(user, func(st *userState) { used = st.usage() })
	return used, s.cfg.QuotaBytes, now, err
}
