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
		if err := ds.decodeAll(); err != nil {
			return fmt.Errorf("node: document %s/%s of %s: %w: %w", r.Coll, r.ID, user, errCorrupt, err)
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
		ds, err := decodeDoc(rest, s.revCfg, false)
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
		ds, err := decodeDoc(v, s.revCfg, false)
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
