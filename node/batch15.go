package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/sync15"
)

// Sync 1.5 batch uploads.
//
// A batch lives in Pebble under its user, collection and id until it is
// committed or expires:
//
//	user\0 B coll\0 batch            -> ver, created (Unix ms), records, payload bytes
//	user\0 B coll\0 batch \0 id      -> ver, fields, sortindex, ttl, payload
//	\0 F created user\0 coll\0 batch -> ""   (the global batch expiry queue)
//
// Each request that creates or extends a batch commits its records in one
// synced Pebble batch under the user's lock, after the precondition and
// the limits (records and payload bytes of the merged batch), so a batch
// survives a restart of its node and a refused request adds nothing. The
// records are invisible to every read: only the commit writes them into
// the view, all with the commit's timestamp, in the same synced Pebble
// batch that deletes the batch (a client write like any other: revisions,
// feed, replication, acknowledgement). The purge loop drops batches older
// than Config.BatchLifetime. Batches are not replicated: after a failover
// the client's next request on the batch gets 400 and it starts over.

const verBatch = 1

// globalBatchPrefix starts the keys of the global batch expiry queue.
var globalBatchPrefix = []byte("\x00F")

func batchKey(b []byte, u ukey, coll, id string) []byte {
	return append(collPrefix(b, u, tagBatch, coll), id...)
}

func batchRecKey(b []byte, u ukey, coll, batch, id string) []byte {
	b = append(batchKey(b, u, coll, batch), 0)
	return append(b, id...)
}

func globalBatchKey(b []byte, created int64, user, coll, id string) []byte {
	b = appendU64(append(b, globalBatchPrefix...), uint64(created))
	b = append(append(b, user...), 0)
	b = append(append(b, coll...), 0)
	return append(b, id...)
}

// parseGlobalBatchKey splits a global batch expiry key.
func parseGlobalBatchKey(k []byte) (created int64, user, coll, id string, ok bool) {
	if len(k) < len(globalBatchPrefix)+8 {
		return 0, "", "", "", false
	}
	rest := k[len(globalBatchPrefix):]
	created = int64(binary.BigEndian.Uint64(rest))
	parts := bytes.SplitN(rest[8:], []byte{0}, 3)
	if len(parts) != 3 {
		return 0, "", "", "", false
	}
	return created, string(parts[0]), string(parts[1]), string(parts[2]), true
}

// batchHeader is a batch's header value.
type batchHeader struct {
	created int64 // Unix ms
	count   int64
	bytes   int64
}

func appendBatchHeader(b []byte, h *batchHeader) []byte {
	b = binary.AppendVarint(append(b, verBatch), h.created)
	b = binary.AppendVarint(b, h.count)
	return binary.AppendVarint(b, h.bytes)
}

func decodeBatchHeader(v []byte, h *batchHeader) error {
	if len(v) < 1 || v[0] != verBatch {
		return errCorrupt
	}
	d := newDecoder(v[1:])
	h.created, h.count, h.bytes = d.Varint(), d.Varint(), d.Varint()
	return d.End()
}

func appendBatchRec(b []byte, r *sync15.BSO) []byte {
	b = append(b, verBatch, byte(r.Has))
	b = binary.AppendVarint(b, r.SortIndex)
	b = binary.AppendVarint(b, r.TTL)
	b = binary.AppendUvarint(b, uint64(len(r.Payload)))
	return append(b, r.Payload...)
}

func decodeBatchRec(v []byte, r *sync15.BSO) error {
	if len(v) < 2 || v[0] != verBatch {
		return errCorrupt
	}
	r.Has = sync15.Field(v[1])
	d := newDecoder(v[2:])
	r.SortIndex, r.TTL = d.Varint(), d.Varint()
	r.Payload = string(d.Bytes(noMax))
	return d.End()
}

// mergeBSO applies the fields of b to r (a record already in a batch).
func mergeBSO(r *sync15.BSO, b *sync15.BSO) {
	if b.Has&sync15.FieldPayload != 0 {
		r.Payload = b.Payload
	}
	if b.Has&sync15.FieldSortIndex != 0 {
		r.SortIndex = b.SortIndex
	}
	if b.Has&sync15.FieldTTL != 0 {
		r.TTL = b.TTL
	}
	r.Has |= b.Has
}

// WriteBatch implements sync15.Store.
func (x *Sync15) WriteBatch(ctx context.Context, user, coll string, w *sync15.BatchWrite) (api.Stamp, error) {
	id, err := sync15.ParseBatchID(w.ID)
	if err != nil {
		return 0, err
	}
	if err := x.begin(user, coll); err != nil {
		return 0, err
	}
	defer x.s.leave()
	if w.Commit {
		return x.commitBatch(ctx, user, coll, w)
	}
	return x.extendBatch(user, coll, w, id.Created.UnixMilli())
}

// readBatch returns the batch's header, or ok false when it does not
// exist. The caller holds the user's lock.
func (x *Sync15) readBatch(kp ukey, coll, id string) (h batchHeader, ok bool, err error) {
	v, closer, err := x.s.db.Get(batchKey(nil, kp, coll, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return h, false, nil
	}
	if err != nil {
		return h, false, err
	}
	defer closer.Close()
	return h, true, decodeBatchHeader(v, &h)
}

// merged adds bs to the batch's records (read from Pebble when loadAll,
// else only those bs replace) and returns the records it touched and the
// batch's new record count and payload bytes.
func (x *Sync15) merged(user string, kp ukey, coll, id string, h batchHeader, bs []sync15.BSO, loadAll bool) (map[string]*sync15.BSO, int64, int64, error) {
	recs := make(map[string]*sync15.BSO, len(bs))
	count, total := h.count, h.bytes
	if loadAll {
		lo := append(batchKey(nil, kp, coll, id), 0)
		hi := prefixEnd(nil, lo)
		it, err := x.s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return nil, 0, 0, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			r := &sync15.BSO{ID: string(it.Key()[len(lo):])}
			v, err := it.ValueAndErr()
			if err == nil {
				err = decodeBatchRec(v, r)
			}
			if err != nil {
				it.Close()
				return nil, 0, 0, fmt.Errorf("node: batch of %s/%s: %w", user, coll, err)
			}
			recs[r.ID] = r
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return nil, 0, 0, err
		}
	}
	for i := range bs {
		b := &bs[i]
		r, ok := recs[b.ID]
		if !ok && !loadAll {
			v, closer, err := x.s.db.Get(batchRecKey(nil, kp, coll, id, b.ID))
			switch {
			case errors.Is(err, pebble.ErrNotFound):
			case err != nil:
				return nil, 0, 0, err
			default:
				r = &sync15.BSO{ID: b.ID}
				err = decodeBatchRec(v, r)
				closer.Close()
				if err != nil {
					return nil, 0, 0, err
				}
				ok = true
			}
		}
		if !ok {
			cp := *b
			recs[b.ID] = &cp
			count++
			total += int64(len(b.Payload))
			continue
		}
		total -= int64(len(r.Payload))
		mergeBSO(r, b)
		total += int64(len(r.Payload))
		recs[b.ID] = r
	}
	return recs, count, total, nil
}

// extendBatch creates or extends a batch (w.Commit false).
func (x *Sync15) extendBatch(user, coll string, w *sync15.BatchWrite, created int64) (api.Stamp, error) {
	s := x.s
	if err := s.disk.writable(); err != nil {
		return 0, err
	}
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	st, err := s.state(user)
	if err != nil {
		return 0, err
	}
	ts := collMod(st, coll)
	if err := w.Pre.Check(ts); err != nil {
		return 0, err
	}
	h, ok, err := x.readBatch(st.kp, coll, w.ID)
	switch {
	case err != nil:
		return 0, err
	case w.Create && ok:
		return 0, sync15.ErrConflict
	case !w.Create && !ok:
		return 0, sync15.ErrBatchNotFound
	case w.Create:
		h = batchHeader{created: created}
	}
	recs, count, total, err := x.merged(user, st.kp, coll, w.ID, h, w.BSOs, false)
	if err != nil {
		return 0, err
	}
	if count > int64(w.Limits.MaxRecords) || total > w.Limits.MaxBytes {
		return 0, sync15.ErrSizeLimitExceeded
	}
	h.count, h.bytes = count, total
	b := s.db.NewBatch()
	defer b.Close()
	pn, err := s.numberUser(user, st, b)
	if err != nil {
		return 0, err
	}
	defer pn.end()
	var k, v []byte
	ids := make([]string, 0, len(recs))
	for id := range recs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if w.Create {
		if err := b.Set(globalBatchKey(k[:0], h.created, user, coll, w.ID), nil, nil); err != nil {
			return 0, err
		}
	}
	if err := b.Set(batchKey(k[:0], st.kp, coll, w.ID), appendBatchHeader(v[:0], &h), nil); err != nil {
		return 0, err
	}
	for _, id := range ids {
		k = batchRecKey(k[:0], st.kp, coll, w.ID, id)
		v = appendBatchRec(v[:0], recs[id])
		if err := b.Set(k, v, nil); err != nil {
			return 0, err
		}
	}
	if err := pn.commit(s, b); err != nil {
		return 0, err
	}
	return ts, nil
}

// commitBatch adds w's records to the batch and writes every record of
// it into the view with one timestamp, deleting the batch, in one synced
// Pebble batch.
func (x *Sync15) commitBatch(ctx context.Context, user, coll string, w *sync15.BatchWrite) (api.Stamp, error) {
	var ws []api.WBO
	var created int64
	committed := false
	return x.write15(ctx, user, &committed, func(st *userState) (*userState, error) {
		if err := w.Pre.Check(collMod(st, coll)); err != nil {
			return nil, err
		}
		var h batchHeader
		if !w.Create {
			var ok bool
			var err error
			if h, ok, err = x.readBatch(st.kp, coll, w.ID); err != nil {
				return nil, err
			}
			if !ok {
				return nil, sync15.ErrBatchNotFound
			}
			created = h.created
		}
		recs, count, total, err := x.merged(user, st.kp, coll, w.ID, h, w.BSOs, !w.Create)
		if err != nil {
			return nil, err
		}
		if count > int64(w.Limits.MaxRecords) || total > w.Limits.MaxBytes {
			return nil, sync15.ErrSizeLimitExceeded
		}
		ids := make([]string, 0, len(recs))
		for id := range recs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		ws = make([]api.WBO, len(ids))
		for i, id := range ids {
			ws[i] = toWBO(recs[id])
		}
		return x.s.checkQuotaLocked(user, st)
	}, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		wr := x.writer15(b, sc, st, user, coll, t)
		wr.stampAll = true
		defer multi(wr, len(ws))()
		if err := wr.putAll(ws); err != nil {
			return nil, err
		}
		if !w.Create {
			sc.k = batchKey(sc.k[:0], st.kp, coll, w.ID)
			sc.k2 = append(batchKey(sc.k2[:0], st.kp, coll, w.ID), 1)
			if err := b.DeleteRange(sc.k, sc.k2, nil); err != nil {
				return nil, err
			}
			if err := b.Delete(globalBatchKey(nil, created, user, coll, w.ID), nil); err != nil {
				return nil, err
			}
		}
		committed = len(ws) > 0
		return wr.done(st)
	})
}

// PurgeBatches drops the Sync 1.5 batches created more than
// Config.BatchLifetime ago, and returns how many it dropped. The
// background purge calls it with PurgeExpired.
func (s *Store) PurgeBatches(ctx context.Context) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	cutoff := s.cfg.Clock().Add(-s.cfg.BatchLifetime).UnixMilli()
	hi := appendU64(append([]byte(nil), globalBatchPrefix...), uint64(max(cutoff, 0)))
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: globalBatchPrefix, UpperBound: hi})
		if err != nil {
			return total, err
		}
		var keys [][]byte
		for ok := it.First(); ok && len(keys) < purgeBatchKeys; ok = it.Next() {
			keys = append(keys, slices.Clone(it.Key()))
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return total, err
		}
		for _, k := range keys {
			_, user, coll, id, ok := parseGlobalBatchKey(k)
			mu := s.lock(user)
			mu.Lock()
			err := s.dropBatch(k, user, coll, id, ok && checkNames(user) == nil)
			mu.Unlock()
			if err != nil {
				return total, fmt.Errorf("node: dropping an expired batch of %s: %w", strings.Clone(user), err)
			}
			total++
		}
		if len(keys) < purgeBatchKeys {
			return total, nil
		}
	}
}

// dropBatch deletes global batch expiry key k and, with ok, the batch it
// names, in one synced batch. The caller holds the user's exclusive lock.
func (s *Store) dropBatch(k []byte, user, coll, id string, ok bool) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Delete(k, nil); err != nil {
		return err
	}
	if ok {
		st, err := s.state(user)
		if err != nil {
			return err
		}
		lo := batchKey(nil, st.kp, coll, id)
		if err := b.DeleteRange(lo, append(lo[:len(lo):len(lo)], 1), nil); err != nil {
			return err
		}
	}
	return s.commit(b)
}

// defaultBatchLifetime is Config.BatchLifetime's default: the storage
// API's batch lifetime and a margin for clock differences.
const defaultBatchLifetime = sync15.DefaultBatchLifetime + 10*time.Minute
