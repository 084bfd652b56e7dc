package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/node/revtree"
)

// DocRef names a document of a user.
type DocRef struct{ Coll, ID string }

// DocRevs names revisions of one document (the rows of _revs_diff).
type DocRevs struct {
	Coll, ID string
	Revs     []revtree.Rev
}

// Doc is a document as stored: its revision tree and the bodies of its
// leaves. It is a copy; changing it changes nothing in the store.
type Doc struct {
	Coll, ID string
	// Seq is the local sequence number of the document's latest change.
	Seq    uint64
	Tree   *revtree.Tree
	Bodies map[revtree.Rev]Body
}

// Winner returns the winning leaf (CouchDB's rule) and its body.
func (d *Doc) Winner() (revtree.Leaf, Body) {
	w, _ := d.Tree.Winner()
	return w, d.Bodies[w.Rev]
}

// Revision returns the leaf r with its ancestry (at most maxPath ids; 0 =
// all), or false when r is not a leaf of d (only leaves keep bodies).
func (d *Doc) Revision(r revtree.Rev, maxPath int) (Revision, bool) {
	if !d.Tree.IsLeaf(r) {
		return Revision{}, false
	}
	if maxPath <= 0 {
		maxPath = revtree.HardMaxPathLen
	}
	p, ok := d.Tree.PathTo(r, maxPath)
	if !ok {
		return Revision{}, false
	}
	return Revision{Coll: d.Coll, ID: d.ID, Path: p, Body: d.Bodies[r]}, true
}

// LeavesFrom returns the leaves that descend from r (r itself when it is a
// leaf): the answer to a fetch with CouchDB's latest=true. It is empty when
// r is not in the tree.
func (d *Doc) LeavesFrom(r revtree.Rev) []revtree.Rev {
	if !d.Tree.Contains(r) {
		return nil
	}
	var out []revtree.Rev
	for _, l := range d.Tree.Leaves() {
		for cur := l.Rev; ; {
			if cur == r {
				out = append(out, l.Rev)
				break
			}
			p, ok := d.Tree.Parent(cur)
			if !ok || p.Pos < r.Pos {
				break
			}
			cur = p
		}
	}
	return out
}

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
	st, err := s.state(user)
	if err != nil {
		return nil, err
	}
	kp := st.kp
	states, seqs, err := s.loadStates(user, kp, refs)
	if err != nil {
		return nil, err
	}
	out := make([]*Doc, len(refs))
	var views []int
	first := make(map[*docState]int, len(refs))
	for i, ds := range states {
		if ds == nil {
			continue
		}
		if _, dup := first[ds]; dup {
			continue
		}
		first[ds] = i
		r := refs[i]
		if err := s.loadPath(user, kp, ds); err != nil {
			return nil, err
		}
		if err := ds.decodeAll(); err != nil {
			return nil, fmt.Errorf("node: document %s/%s of %s: %w: %w", r.Coll, r.ID, user, errCorrupt, err)
		}
		out[i] = &Doc{Coll: r.Coll, ID: r.ID, Seq: ds.seq, Tree: ds.t(), Bodies: ds.bodyMap()}
		if ds.inView {
			views = append(views, i)
		}
	}
	if fill && len(views) > 0 {
		// Live winners' fields, from the records in key order.
		slices.SortFunc(views, func(a, b int) int {
			return bytes.Compare(dataKey(nil, kp, refs[a].Coll, seqs[a]), dataKey(nil, kp, refs[b].Coll, seqs[b]))
		})
		var rec record
		var missErr error
		var k []byte
		err = s.scanKeys(userTag(nil, kp, tagData), views, func(i int) []byte {
			if seqs[i] == 0 {
				return nil
			}
			k = dataKey(k[:0], kp, refs[i].Coll, seqs[i])
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
	// Duplicates get copies of the first.
	for i, ds := range states {
		if ds == nil || out[i] != nil {
			continue
		}
		j := first[ds]
		c := *out[j]
		c.Tree = out[j].Tree.Clone()
		c.Bodies = maps.Clone(out[j].Bodies)
		out[i] = &c
	}
	return out, nil
}

// loadStates reads the stored state of refs' documents (nil for a
// missing one or an invalid name; duplicates share one) with one iterator
// per key kind, in key order, without loading their paths: record heads
// first (documents embedded there, and the records' numbers for the live
// winners' fields: seqs, 0 without a record), then document keys. The
// caller holds the user's lock.
func (s *Store) loadStates(user string, kp ukey, refs []DocRef) (states []*docState, seqs []uint64, err error) {
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
	// Distinct refs in key order; duplicates are filled in at the end.
	uniq := order[:0:0]
	for j, i := range order {
		if j == 0 || refs[order[j-1]] != refs[i] {
			uniq = append(uniq, i)
		}
	}
	states = make([]*docState, len(refs))
	seqs = make([]uint64, len(refs))
	slab := make([]docState, len(uniq))
	for j, i := range uniq {
		states[i] = &slab[j]
		states[i].init(refs[i].Coll, refs[i].ID, s.revCfg)
	}
	var inV []int
	var k []byte
	err = s.scanKeys(userTag(nil, kp, tagRec), uniq, func(i int) []byte {
		k = recKey(k[:0], kp, refs[i].Coll, refs[i].ID)
		return k
	}, func(i int, v []byte) error {
		ds := states[i]
		rest, err := splitHead(v, &ds.pre.h)
		if err != nil {
			return err
		}
		ds.pre.ok, ds.preSet = true, true
		seqs[i] = ds.pre.h.seq
		if len(rest) == 0 {
			inV = append(inV, i)
			return nil
		}
		ds.inR = true
		if err := s.decodeDoc(rest, ds, &ds.pre.h, false); err != nil {
			return fmt.Errorf("node: document %s/%s of %s: %w", refs[i].Coll, refs[i].ID, user, err)
		}
		return nil
	}, func(i int) { inV = append(inV, i) })
	if err != nil {
		return nil, nil, err
	}
	found := make([]bool, len(refs))
	for i, ds := range states {
		found[i] = ds != nil && ds.inR
	}
	err = s.scanKeys(userTag(nil, kp, tagDoc), inV, func(i int) []byte {
		k = docKey(k[:0], kp, refs[i].Coll, refs[i].ID)
		return k
	}, func(i int, v []byte) error {
		ds := states[i]
		ds.inV, found[i] = true, true
		if err := s.decodeDoc(v, ds, nil, false); err != nil {
			return fmt.Errorf("node: document %s/%s of %s: %w", refs[i].Coll, refs[i].ID, user, err)
		}
		return nil
	}, nil)
	if err != nil {
		return nil, nil, err
	}
	for _, i := range uniq {
		if !found[i] {
			states[i] = nil
		}
	}
	for j, i := range order {
		if j > 0 && refs[order[j-1]] == refs[i] {
			states[i], seqs[i] = states[order[j-1]], seqs[order[j-1]]
		}
	}
	return states, seqs, nil
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
	// The shared lock keeps a document and its ancestor keys consistent.
	mu := s.lock(user)
	mu.RLock()
	defer mu.RUnlock()
	st, err := s.state(user)
	if err != nil {
		return nil, err
	}
	states, _, err := s.loadStates(user, st.kp, refs)
	if err != nil {
		return nil, err
	}
	var out []DocRevs
	for i, d := range q {
		var miss []revtree.Rev
		for _, r := range d.Revs {
			in, err := s.hasRev(user, st.kp, states[i], r)
			if err != nil {
				return nil, err
			}
			if !in {
				miss = append(miss, r)
			}
		}
		if len(miss) > 0 {
			out = append(out, DocRevs{Coll: d.Coll, ID: d.ID, Revs: miss})
		}
	}
	return out, nil
}

// hasRev reports whether document ds (nil: missing) has revision r. For a
// single path it reads at most the one ancestor key of r's position: a
// replicated update asks about a leaf newer than the path, which needs
// none.
func (s *Store) hasRev(user string, kp ukey, ds *docState, r revtree.Rev) (bool, error) {
	if ds == nil {
		return false, nil
	}
	in, known := ds.containsKnown(r)
	if known {
		return in, nil
	}
	h, ok, err := s.ancestorAt(user, kp, ds, r.Pos)
	return ok && h == r.Hash, err
}
