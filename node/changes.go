package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/node/revtree"
)

// ChangeNotifier hears about every committed change of a user's revision
// trees (a client write or replicated revisions; client writes only when no
// ReplicaWaiter is set, since the waiter reaches the replicas itself): the
// replicator sends push notices from it. from is the peer argument of the ApplyRevisions call
// that made the change ("" for a client write), so the notice need not go
// back where the revisions came from. Changed is called with the user's
// lock held, right after the commit: it must not block or call back into
// the store.
type ChangeNotifier interface {
	Changed(user string, seq uint64, from string)
}

// ReplicaWaiter confirms that another replica holds a user's changes: the
// replicator implements it. WaitReplicated returns nil once some other
// node of the user's replica set has everything of the user's feed up to
// seq (at once when the user has no other replica).
type ReplicaWaiter interface {
	WaitReplicated(ctx context.Context, user string, seq uint64) error
}

// SetReplicaWaiter makes every client write that changed documents wait,
// after its commit and before it returns, until w confirms that another
// replica holds it, at most timeout (nil w turns this off). A write whose
// confirmation fails or times out (every other replica down or cut off)
// is still acknowledged: it is durable here and replicates later; it is
// counted in UnconfirmedWrites and logged. Call before serving.
func (s *Store) SetReplicaWaiter(w ReplicaWaiter, timeout time.Duration) {
	s.waiter, s.waitTimeout = w, timeout
}

// UnconfirmedWrites counts the client writes acknowledged without a
// replica's confirmation (see SetReplicaWaiter).
func (s *Store) UnconfirmedWrites() uint64 { return s.unconfirmed.Load() }

// awaitReplicas runs the replica waiter after a client write of user whose
// state entry is st (a write that changed nothing waits too: the replica
// answers quickly, having nothing to pull).
func (s *Store) awaitReplicas(ctx context.Context, user string, st *userState) {
	if s.waiter == nil || st == nil {
		return
	}
	seq := st.chg.Load()
	if seq == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.waitTimeout)
	defer cancel()
	if err := s.waiter.WaitReplicated(wctx, user, seq); err != nil {
		s.unconfirmed.Add(1)
		s.log.Warn("write acknowledged without a replica's confirmation", "user", user, "seq", seq, "err", err)
	}
}

// SetChangeNotifier installs n (nil removes it). Safe for concurrent use.
func (s *Store) SetChangeNotifier(n ChangeNotifier) {
	if n == nil {
		s.notify.Store(nil)
		return
	}
	s.notify.Store(&n)
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

// changed runs after a commit that changed user's documents.
func (s *Store) changed(user string, seq uint64, from string) {
	s.watch.wake(user)
	if from == "" && s.waiter != nil {
		// A client write: the replica waiter contacts every other
		// replica right after the commit (awaitReplicas); a notice would
		// only make them pull twice.
		return
	}
	if n := s.notify.Load(); n != nil {
		(*n).Changed(user, seq, from)
	}
}

// UUID returns the store's identity: a random UUID made when the store was
// created and kept for its lifetime (the CouchDB server uuid; replication
// checkpoints name the source store by it, so a wiped and recreated store
// is replicated from scratch).
func (s *Store) UUID() string { return s.uuid }

// Origin returns the id this node writes as the origin of its revisions.
func (s *Store) Origin() string { return s.origin }

func (s *Store) loadUUID() (string, error) {
	v, closer, err := s.db.Get(keyUUID)
	if err == nil {
		id := string(v)
		closer.Close()
		return id, nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return "", fmt.Errorf("node: reading uuid: %w", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	id := h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	if err := s.db.Set(keyUUID, []byte(id), pebble.Sync); err != nil {
		return "", fmt.Errorf("node: writing uuid: %w", err)
	}
	return id, nil
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
	lo := chgKey(nil, user, since+1)
	if since == ^uint64(0) {
		return nil, since, nil
	}
	hi := prefixEnd(nil, userTag(nil, user, tagChg))
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

// DocRef names a document of a user.
type DocRef struct{ Coll, ID string }

// GetDoc returns a copy of document coll/id of user, or ErrDocNotFound.
func (s *Store) GetDoc(ctx context.Context, user, coll, id string) (*Doc, error) {
	docs, err := s.GetDocs(ctx, user, []DocRef{{coll, id}})
	if err != nil {
		return nil, err
	}
	if docs[0] == nil {
		return nil, ErrDocNotFound
	}
	return docs[0], nil
}

// GetDocs returns copies of the documents refs of user, nil for a missing
// one (or an invalid name), in the order of refs. The documents are read
// with one iterator per key kind (documents, and for live winners their
// records), in key order, under the user's shared lock: a batch costs a
// few seeks per document instead of a Get (a seek in every level) each.
func (s *Store) GetDocs(ctx context.Context, user string, refs []DocRef) ([]*Doc, error) {
	if err := checkNames(user); err != nil {
		return nil, err
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	// The shared lock keeps the documents and their Weave records (which
	// hold the live winners' fields) consistent with each other.
	mu := s.lock(user)
	mu.RLock()
	defer mu.RUnlock()
	return s.loadDocs(user, refs, true)
}

// loadDocs reads refs' documents; with fill, live winners get their
// fields from the Weave records. The caller holds the user's lock.
func (s *Store) loadDocs(user string, refs []DocRef, fill bool) ([]*Doc, error) {
	out := make([]*Doc, len(refs))
	order := make([]int, 0, len(refs))
	for i, r := range refs {
		if checkNames(r.Coll) == nil {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		if c := strings.Compare(refs[a].Coll, refs[b].Coll); c != 0 {
			return c
		}
		return strings.Compare(refs[a].ID, refs[b].ID)
	})
	// Distinct refs in key order; duplicates are copied at the end.
	uniq := order[:0:0]
	for j, i := range order {
		if j == 0 || refs[order[j-1]] != refs[i] {
			uniq = append(uniq, i)
		}
	}
	seqs := make(map[int]uint64, len(uniq)) // ref -> its record's insertion number
	var views, inV []int
	add := func(i int, ds *docState) error {
		r := refs[i]
		if ds.lin != nil && !ds.lin.loaded {
			if err := s.loadHist(user, r.Coll, r.ID, ds.lin); err != nil {
				return err
			}
		}
		out[i] = &Doc{Coll: r.Coll, ID: r.ID, Seq: ds.seq, Tree: ds.t(), Bodies: ds.bodies}
		if ds.inView {
			views = append(views, i)
		}
		return nil
	}
	// Record heads first: documents embedded there, and the records'
	// numbers for the live winners' fields.
	var k []byte
	err := s.scanKeys(userTag(nil, user, tagRec), uniq, func(i int) []byte {
		k = recKey(k[:0], user, refs[i].Coll, refs[i].ID)
		return k
	}, func(i int, v []byte) error {
		var h head
		rest, err := splitHead(v, &h)
		if err != nil {
			return err
		}
		seqs[i] = h.seq
		if len(rest) == 0 {
			inV = append(inV, i)
			return nil
		}
		ds, err := decodeDoc(rest, s.revCfg)
		if err != nil {
			return fmt.Errorf("node: document %s/%s of %s: %w", refs[i].Coll, refs[i].ID, user, err)
		}
		return add(i, ds)
	}, func(i int) { inV = append(inV, i) })
	if err != nil {
		return nil, err
	}
	err = s.scanKeys(userTag(nil, user, tagDoc), inV, func(i int) []byte {
		k = docKey(k[:0], user, refs[i].Coll, refs[i].ID)
		return k
	}, func(i int, v []byte) error {
		ds, err := decodeDoc(v, s.revCfg)
		if err != nil {
			return fmt.Errorf("node: document %s/%s of %s: %w", refs[i].Coll, refs[i].ID, user, err)
		}
		return add(i, ds)
	}, nil)
	if err != nil {
		return nil, err
	}
	if fill && len(views) > 0 {
		// Live winners' fields, from the records in key order.
		slices.SortFunc(views, func(a, b int) int {
			return bytes.Compare(dataKey(nil, user, refs[a].Coll, seqs[a]), dataKey(nil, user, refs[b].Coll, seqs[b]))
		})
		var rec record
		var missErr error
		err = s.scanKeys(userTag(nil, user, tagData), views, func(i int) []byte {
			if _, ok := seqs[i]; !ok {
				return nil
			}
			k = dataKey(k[:0], user, refs[i].Coll, seqs[i])
			return k
		}, func(i int, v []byte) error {
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			d := out[i]
			win, _ := d.Tree.Winner()
			x := d.Bodies[win.Rev]
			fillBody(&x, &rec)
			d.Bodies[win.Rev] = x
			return nil
		}, func(i int) {
			if missErr == nil {
				missErr = fmt.Errorf("node: document %s/%s of %s: %w: live winner without a record", refs[i].Coll, refs[i].ID, user, errCorrupt)
			}
		})
		if err = errors.Join(err, missErr); err != nil {
			return nil, err
		}
	}
	for j, i := range order {
		if j > 0 && refs[order[j-1]] == refs[i] {
			if prev := out[order[j-1]]; prev != nil {
				c := *prev
				c.Tree = prev.Tree.Clone()
				c.Bodies = maps.Clone(prev.Bodies)
				out[i] = &c
			}
		}
	}
	return out, nil
}

// scanKeys seeks, with one iterator bounded by prefix, the key of each of
// idx (in ascending key order; a nil key is skipped) and calls found with
// the value, or missing (when not nil) for keys that are absent.
func (s *Store) scanKeys(prefix []byte, idx []int, key func(i int) []byte, found func(i int, v []byte) error, missing func(i int)) error {
	if len(idx) == 0 {
		return nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(nil, prefix)})
	if err != nil {
		return err
	}
	for _, i := range idx {
		k := key(i)
		if k == nil {
			continue
		}
		if !it.SeekGE(k) || !bytes.Equal(it.Key(), k) {
			if missing != nil {
				missing(i)
			}
			continue
		}
		v, err := it.ValueAndErr()
		if err == nil {
			err = found(i, v)
		}
		if err != nil {
			it.Close()
			return err
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// RevsDiff returns, for the documents of q, the revisions the store does
// not have anywhere in their trees (CouchDB's _revs_diff); documents with
// nothing missing are left out. Invalid names count as missing documents.
// The trees are read with one iterator (see GetDocs).
func (s *Store) RevsDiff(ctx context.Context, user string, q []DocRevs) ([]DocRevs, error) {
	if err := checkNames(user); err != nil {
		return nil, err
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	refs := make([]DocRef, len(q))
	for i, d := range q {
		refs[i] = DocRef{d.Coll, d.ID}
	}
	docs, err := s.loadDocs(user, refs, false)
	if err != nil {
		return nil, err
	}
	var out []DocRevs
	for i, d := range q {
		var miss []revtree.Rev
		for _, r := range d.Revs {
			if docs[i] == nil || !docs[i].Tree.Contains(r) {
				miss = append(miss, r)
			}
		}
		if len(miss) > 0 {
			out = append(out, DocRevs{Coll: d.Coll, ID: d.ID, Revs: miss})
		}
	}
	return out, nil
}

// GetCheckpoint returns how far this node has replicated user from peer
// (the zero Checkpoint when it never did).
func (s *Store) GetCheckpoint(ctx context.Context, user, peer string) (Checkpoint, error) {
	if err := checkNames(user); err != nil {
		return Checkpoint{}, err
	}
	if err := s.enter(); err != nil {
		return Checkpoint{}, err
	}
	defer s.leave()
	v, closer, err := s.db.Get(ckptKey(nil, user, peer))
	if errors.Is(err, pebble.ErrNotFound) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, err
	}
	defer closer.Close()
	return decodeCheckpoint(v)
}

// SetCheckpoint records a checkpoint without revisions (a batch whose
// revisions were all known already), synced.
func (s *Store) SetCheckpoint(ctx context.Context, user, peer string, cp Checkpoint) error {
	_, err := s.ApplyRevisions(ctx, user, nil, peer, &cp)
	return err
}

// LocalDoc is a _local document: replication state a CouchDB replicator
// keeps on this node. It is never replicated and never in the feed.
type LocalDoc struct {
	// Rev is "0-N", N counting the updates.
	Rev string
	// Body is the JSON object as stored (without _id and _rev).
	Body json.RawMessage
}

// MaxLocalDocBytes bounds a _local document's body.
const MaxLocalDocBytes = 64 << 10

// GetLocal returns the _local document id of user or ErrDocNotFound.
func (s *Store) GetLocal(ctx context.Context, user, id string) (LocalDoc, error) {
	if err := checkNames(user); err != nil {
		return LocalDoc{}, err
	}
	if err := s.enter(); err != nil {
		return LocalDoc{}, err
	}
	defer s.leave()
	return s.getLocal(user, id)
}

func (s *Store) getLocal(user, id string) (LocalDoc, error) {
	v, closer, err := s.db.Get(localKey(nil, user, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return LocalDoc{}, ErrDocNotFound
	}
	if err != nil {
		return LocalDoc{}, err
	}
	defer closer.Close()
	if len(v) < 1 || v[0] != 1 {
		return LocalDoc{}, errCorrupt
	}
	d := decoder{b: v[1:]}
	n := d.uvarint()
	body := append(json.RawMessage(nil), d.b...)
	if d.err != nil {
		return LocalDoc{}, errCorrupt
	}
	return LocalDoc{Rev: "0-" + strconv.FormatUint(n, 10), Body: body}, nil
}

// PutLocal stores the _local document id of user, synced. rev must be the
// current revision ("" when the document does not exist yet; CouchDB's
// PouchDB-style callers may also omit it for an existing one, which is
// accepted as an overwrite), else ErrLocalConflict. It returns the new
// revision.
func (s *Store) PutLocal(ctx context.Context, user, id string, body json.RawMessage, rev string) (string, error) {
	if err := checkNames(user); err != nil {
		return "", err
	}
	if id == "" || len(id) > 1024 {
		return "", fmt.Errorf("%w: local document id of %d bytes", ErrRevRejected, len(id))
	}
	if len(body) > MaxLocalDocBytes {
		return "", fmt.Errorf("%w: local document of %d bytes", ErrRevRejected, len(body))
	}
	if err := s.enter(); err != nil {
		return "", err
	}
	defer s.leave()
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	var n uint64
	cur, err := s.getLocal(user, id)
	switch {
	case errors.Is(err, ErrDocNotFound):
		if rev != "" && rev != "0-0" {
			return "", ErrLocalConflict
		}
	case err != nil:
		return "", err
	default:
		if rev != "" && rev != cur.Rev {
			return "", ErrLocalConflict
		}
		n, _ = strconv.ParseUint(strings.TrimPrefix(cur.Rev, "0-"), 10, 64)
	}
	n++
	v := append(binary.AppendUvarint([]byte{1}, n), body...)
	if err := s.db.Set(localKey(nil, user, id), v, pebble.Sync); err != nil {
		return "", fmt.Errorf("node: commit: %w", err)
	}
	return "0-" + strconv.FormatUint(n, 10), nil
}

// Users returns up to limit names of users with anything stored, in
// ascending order, after the name after ("" = from the start).
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
	for ok := it.First(); ok && (limit <= 0 || len(out) < limit); {
		k := it.Key()
		i := strings.IndexByte(string(k), 0)
		if i <= 0 {
			break
		}
		u := string(k[:i])
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
	_, _, err := s.writeLocked(user, func(st *userState) (*userState, error) { return st, nil },
		func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
			sc.k = userStart(sc.k[:0], user)
			sc.k2 = userEnd(sc.k2[:0], user)
			if err := b.DeleteRange(sc.k, sc.k2, nil); err != nil {
				return nil, err
			}
			sc.k = metaKey(sc.k[:0], user, "")
			sc.v = appendUserMeta(sc.v[:0], st.nextSeq, int64(t.ts), st.chg.Load())
			if err := b.Set(sc.k, sc.v, nil); err != nil {
				return nil, err
			}
			return func() {
				clear(st.colls)
				st.used = 0
			}, nil
		})
	return err
}
