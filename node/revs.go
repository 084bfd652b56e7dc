package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node/revtree"
)

// Revisions (see DESIGN.md, "Revisions"). Every version of a WBO is a
// revision of the document (user, collection, id); the document's revision
// tree and the bodies of its leaves live under the V key, and the Weave
// records (R, D, M, S, X) are the view of each document's winning leaf.

// Errors of the revision API.
var (
	// ErrDocNotFound: the store has no document with that collection and id.
	ErrDocNotFound = errors.New("node: document not found")
	// ErrRevRejected wraps the reason a revision offered to ApplyRevisions
	// was refused (bad names, a body out of the protocol's bounds, a path
	// that contradicts the tree, a hash that does not match its body).
	// Nothing of a refused revision is stored.
	ErrRevRejected = errors.New("node: revision rejected")
	// ErrLocalConflict: PutLocal was given a revision that is not the
	// local document's current one.
	ErrLocalConflict = errors.New("node: local document update conflict")
)

// MaxOriginLen bounds Body.Origin.
const MaxOriginLen = 256

// Body is the replicated content of one revision of a WBO: the Weave fields
// without modified (the time a change became visible, which every node
// assigns itself) and with the expiry as an absolute time instead of a ttl,
// so that replication does not restart the countdown. A tombstone's body
// carries only the origin.
type Body struct {
	// Has says which of Payload, SortIndex, ParentID and PredecessorID are
	// set (api.FieldPayload | FieldSortIndex | FieldParentID |
	// FieldPredecessorID); other bits are refused.
	Has           api.Field
	Payload       string
	SortIndex     int64
	ParentID      string
	PredecessorID string
	// Expiry is when the record stops being visible, in Unix seconds; 0
	// means never.
	Expiry int64
	// Origin is the id of the node that made the revision. Empty for a
	// revision made by a CouchDB-protocol client (PouchDB, CouchDB): its
	// hash is that client's and cannot be checked. A revision with an
	// origin must hash to its id (see RevisionHash).
	Origin string
	// OriginTime is the origin's clock when it made the revision, in
	// centiseconds: metadata for debugging, never used as modified.
	OriginTime int64
}

// Revision is one revision of a document with its ancestry.
type Revision struct {
	// Coll and ID name the document (the Weave collection and record id).
	Coll, ID string
	// Path is the revision (Path.Leaf()) and its ancestors, newest first
	// (CouchDB's _revisions); Path.Deleted marks a tombstone.
	Path revtree.Path
	// Body is the revision's content (zero for a tombstone apart from the
	// origin).
	Body Body
}

// Rev returns the revision's id.
func (r *Revision) Rev() revtree.Rev { return r.Path.Leaf() }

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

// ValidateDocID reports whether coll and id are a valid Weave collection
// name and record id, the document names the store accepts.
func ValidateDocID(coll, id string) error {
	if len(coll) == 0 || len(coll) > api.MaxCollectionName {
		return fmt.Errorf("%w: collection name of %d bytes", ErrRevRejected, len(coll))
	}
	for i := 0; i < len(coll); i++ {
		c := coll[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: collection name %q", ErrRevRejected, coll)
		}
	}
	if id == "" || len(id) > api.MaxIDBytes || !utf8.ValidString(id) {
		return fmt.Errorf("%w: record id of %d bytes", ErrRevRejected, len(id))
	}
	return nil
}

// validate checks b against the Weave limits; deleted bodies carry no
// fields.
func (b *Body) validate(deleted bool) error {
	const fields = api.FieldPayload | api.FieldSortIndex | api.FieldParentID | api.FieldPredecessorID
	switch {
	case b.Has&^fields != 0:
		return fmt.Errorf("%w: unknown field bits %#x", ErrRevRejected, b.Has)
	case deleted && (b.Has != 0 || b.Payload != "" || b.ParentID != "" || b.PredecessorID != "" || b.SortIndex != 0 || b.Expiry != 0):
		return fmt.Errorf("%w: a tombstone carries fields", ErrRevRejected)
	case len(b.Payload) > api.MaxPayloadBytes || !utf8.ValidString(b.Payload):
		return fmt.Errorf("%w: payload of %d bytes", ErrRevRejected, len(b.Payload))
	case b.Has&api.FieldPayload == 0 && b.Payload != "":
		return fmt.Errorf("%w: payload without its field bit", ErrRevRejected)
	case b.SortIndex < api.MinSortIndex || b.SortIndex > api.MaxSortIndex:
		return fmt.Errorf("%w: sortindex %d", ErrRevRejected, b.SortIndex)
	case len(b.ParentID) > api.MaxIDBytes || !utf8.ValidString(b.ParentID):
		return fmt.Errorf("%w: parentid", ErrRevRejected)
	case len(b.PredecessorID) > api.MaxIDBytes || !utf8.ValidString(b.PredecessorID):
		return fmt.Errorf("%w: predecessorid", ErrRevRejected)
	case b.Expiry < 0:
		return fmt.Errorf("%w: negative expiry", ErrRevRejected)
	case len(b.Origin) > MaxOriginLen || !utf8.ValidString(b.Origin):
		return fmt.Errorf("%w: origin of %d bytes", ErrRevRejected, len(b.Origin))
	}
	return nil
}

const verBody = 1

// appendBody is the canonical encoding of a body, used both as stored and
// (after the document's names) as the input of the revision hash.
func appendBody(b []byte, x *Body) []byte {
	b = append(b, verBody, byte(x.Has))
	b = appendBytes(b, x.Payload)
	b = binary.AppendVarint(b, x.SortIndex)
	b = appendBytes(b, x.ParentID)
	b = appendBytes(b, x.PredecessorID)
	b = binary.AppendVarint(b, x.Expiry)
	b = appendBytes(b, x.Origin)
	return binary.AppendVarint(b, x.OriginTime)
}

func (d *decoder) body(x *Body) {
	if len(d.b) < 2 || d.b[0] != verBody {
		d.err = errCorrupt
		return
	}
	x.Has = api.Field(d.b[1])
	d.b = d.b[2:]
	x.Payload = string(d.bytes())
	x.SortIndex = d.varint()
	x.ParentID = string(d.bytes())
	x.PredecessorID = string(d.bytes())
	x.Expiry = d.varint()
	x.Origin = string(d.bytes())
	x.OriginTime = d.varint()
}

// RevisionHash returns the hash of the edit that made a revision of coll/id
// with the given parent (the zero Rev for a first edit), deleted flag and
// body: revtree.NewRevHash over the canonical encoding of the names and the
// body. Nodes compute it for their own edits and check it on revisions
// with an origin that peers send.
func RevisionHash(coll, id string, parent revtree.Rev, deleted bool, body *Body) [revtree.HashLen]byte {
	buf := appendBytes(appendBytes(make([]byte, 0, 64+len(body.Payload)), coll), id)
	return revtree.NewRevHash(parent, deleted, appendBody(buf, body))
}

// verify checks that a revision with an origin hashes to its id. A
// revision whose path does not reach its parent (stemmed to one id above
// position 1) cannot be checked and is accepted as it is.
func (r *Revision) verify() error {
	if r.Body.Origin == "" {
		return nil
	}
	var parent revtree.Rev
	switch {
	case len(r.Path.IDs) >= 2:
		parent = r.Path.Rev(1)
	case r.Path.Start == 1:
	default:
		return nil
	}
	if RevisionHash(r.Coll, r.ID, parent, r.Path.Deleted, &r.Body) != r.Path.IDs[0] {
		return fmt.Errorf("%w: %s/%s %s does not match its body", ErrRevRejected, r.Coll, r.ID, r.Path.Leaf())
	}
	return nil
}

// docState is a document being changed by one request. Its revisions are
// either lin (one path, no branch: nearly every document) or tree; both
// nil for a new document. Code that needs the general tree calls t(),
// which turns lin into a tree; the hot paths (a client edit of the leaf,
// a replicated extension of the path) work on lin in O(path) byte copies,
// without building a tree (a 1000-revision tree cost ~1 ms per update).
type docState struct {
	seq    uint64 // changes seq of its latest change; 0 for a new document
	cfg    revtree.Config
	tree   *revtree.Tree
	lin    *linPath
	bodies map[revtree.Rev]Body
	dirty  bool
	run    docRun
	// hadHist: the document has a history key in the store.
	hadHist bool
	// inR: the document is stored embedded in its record's head; inV: in
	// its document key. head: the record head this request wrote for the
	// document's record, written by saveDocs (with the document embedded
	// when it is a single path with a live winner).
	inR, inV bool
	head     *head
	// inView: the live winner's body as decoded holds only its origin,
	// origin time and expiry; the other fields are in the Weave record
	// (fillFromView and GetDocs complete it).
	inView bool
}

// linPath is a document's revisions when they form a single path: the
// leaf at position start and its ancestors. The newest nRecent hashes are
// stored in the document, the more older ones in its history key (tagHist),
// which the hot paths never read: a client edit prepends to the recent
// part, and saveDocs moves all but histWindow of them to the history key
// once more than 2*histWindow have accumulated.
type linPath struct {
	start   uint64
	deleted bool
	// ids are the hashes, newest (the leaf) first, revtree.HashLen each:
	// the recent ones, followed by the older ones when loaded.
	ids      []byte
	nRecent  int  // hashes stored in the document
	more     int  // hashes stored in the history key
	loaded   bool // ids holds the older ones too (or there are none)
	oldDirty bool // the history key must be rewritten
}

// histWindow is how many recent hashes a document keeps after a spill to
// its history key (a variable so tests can exercise spills).
var histWindow = 16

func (l *linPath) n() int { return l.nRecent + l.more }

func (l *linPath) rev(i int) revtree.Rev {
	r := revtree.Rev{Pos: l.start - uint64(i)}
	copy(r.Hash[:], l.ids[i*revtree.HashLen:])
	return r
}

func (l *linPath) path(max int) revtree.Path {
	if !l.loaded {
		panic("node: path of a document whose history is not loaded")
	}
	n := l.n()
	if max > 0 && n > max {
		n = max
	}
	p := revtree.Path{Start: l.start, Deleted: l.deleted, IDs: make([][revtree.HashLen]byte, n)}
	for i := range p.IDs {
		copy(p.IDs[i][:], l.ids[i*revtree.HashLen:])
	}
	return p
}

// t returns the document's tree, building it from lin if needed (lin is
// then dropped; its history must be loaded). An empty document gets an
// empty tree.
func (ds *docState) t() *revtree.Tree {
	if ds.tree == nil {
		ds.tree, _ = revtree.New(ds.cfg)
		if ds.lin != nil {
			p := ds.lin.path(0)
			if _, err := ds.tree.Merge(p); err != nil {
				// A hash repeats along the path (linearize and
				// applyLinear never store one; only a damaged value
				// could): link it pair by pair instead, leaving a
				// pair of equal hashes unlinked.
				ds.tree, _ = revtree.New(ds.cfg)
				for i := len(p.IDs) - 1; i >= 1; i-- {
					_, _ = ds.tree.Merge(revtree.Path{Start: p.Start - uint64(i-1), IDs: p.IDs[i-1 : i+1], Deleted: i == 1 && p.Deleted})
				}
				if len(p.IDs) == 1 {
					_, _ = ds.tree.Merge(p)
				}
			}
			ds.lin = nil
		}
	}
	return ds.tree
}

// winner returns the winning leaf; ok is false for an empty document.
func (ds *docState) winner() (revtree.Leaf, bool) {
	if ds.lin != nil {
		return revtree.Leaf{Rev: ds.lin.rev(0), Deleted: ds.lin.deleted}, true
	}
	if ds.tree == nil {
		return revtree.Leaf{}, false
	}
	return ds.tree.Winner()
}

// leaves returns the leaves, winner first.
func (ds *docState) leaves() []revtree.Leaf {
	if ds.tree == nil {
		if l, ok := ds.winner(); ok {
			return []revtree.Leaf{l}
		}
		return nil
	}
	return ds.tree.Leaves()
}

func (ds *docState) isLeaf(r revtree.Rev) bool {
	if ds.lin != nil {
		return r == ds.lin.rev(0)
	}
	return ds.tree != nil && ds.tree.IsLeaf(r)
}

// linearize turns a tree that is a single path back into lin.
func (ds *docState) linearize() {
	if ds.tree == nil || ds.tree.Len() == 0 {
		return
	}
	ls := ds.tree.Leaves()
	if len(ls) != 1 {
		return
	}
	p, _ := ds.tree.PathTo(ls[0].Rev, 0)
	if len(p.IDs) != ds.tree.Len() {
		return // several roots (stemmed branches)
	}
	if !validPath(p, revtree.HardMaxPathLen) {
		return // a hash repeats at two positions: only a tree holds that
	}
	l := &linPath{start: p.Start, deleted: ls[0].Deleted, ids: make([]byte, 0, len(p.IDs)*revtree.HashLen),
		nRecent: len(p.IDs), loaded: true, oldDirty: true}
	for _, h := range p.IDs {
		l.ids = append(l.ids, h[:]...)
	}
	ds.lin, ds.tree = l, nil
}

// newLin returns the single-path document of path p (ids newest first),
// with all its hashes loaded.
func newLin(start uint64, deleted bool, ids []byte) *linPath {
	n := len(ids) / revtree.HashLen
	return &linPath{start: start, deleted: deleted, ids: ids, nRecent: n, loaded: true, oldDirty: true}
}

// extend makes the leaf of lin the parent of a new leaf h (deleted or
// not), keeping at most limit revisions. It needs no history: the oldest
// ones are dropped by lowering the count of those kept in the history key.
func (l *linPath) extend(h [revtree.HashLen]byte, deleted bool, limit int) {
	have := len(l.ids) / revtree.HashLen
	keep := min(have, limit-1) * revtree.HashLen
	ids := make([]byte, revtree.HashLen+keep, revtree.HashLen*(1+min(have+1, limit)))
	copy(ids, h[:])
	copy(ids[revtree.HashLen:], l.ids[:keep])
	l.ids, l.start, l.deleted = ids, l.start+1, deleted
	l.nRecent = min(l.nRecent+1, limit)
	l.more = max(0, min(l.more, limit-l.nRecent))
}

// Stored document forms.
const (
	verDoc   = 3 // seq, form, revisions, leaf bodies
	formTree = 0 // revtree encoding follows
	formLin  = 1 // leaf position, deleted, count, recent hashes newest first, count in the history key
)

// appendDoc encodes a document: version, seq, its revisions (a single
// path as a plain list of hashes, else the tree), then the bodies of its
// leaves, winner first.
func appendDoc(b []byte, d *docState) []byte {
	b = binary.AppendUvarint(append(b, verDoc), d.seq)
	d.linearize()
	if l := d.lin; l != nil {
		b = append(b, formLin)
		b = binary.AppendUvarint(b, l.start)
		if l.deleted {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		b = binary.AppendUvarint(b, uint64(l.nRecent))
		b = append(b, l.ids[:l.nRecent*revtree.HashLen]...)
		b = binary.AppendUvarint(b, uint64(l.more))
	} else {
		tb := d.tree.Encode()
		b = append(b, formTree)
		b = binary.AppendUvarint(b, uint64(len(tb)))
		b = append(b, tb...)
	}
	leaves := d.leaves()
	for i, l := range leaves {
		x := d.bodies[l.Rev]
		if i == 0 && !l.Deleted {
			// A live winner's fields are the Weave record's: only what
			// the record lacks is kept here (see DESIGN.md).
			b = append(b, bodyInView)
			b = appendBytes(b, x.Origin)
			b = binary.AppendVarint(b, x.OriginTime)
			b = binary.AppendVarint(b, x.Expiry)
			continue
		}
		b = append(b, bodyHere)
		b = appendBody(b, &x)
	}
	return b
}

// Leaf body forms in a stored document.
const (
	bodyHere   = 0 // the whole body follows
	bodyInView = 1 // the live winner: origin, origin time and expiry follow; the rest is the Weave record
)

func decodeDoc(v []byte, cfg revtree.Config) (*docState, error) {
	if len(v) < 2 || v[0] != verDoc {
		return nil, errCorrupt
	}
	d := decoder{b: v[1:]}
	ds := &docState{seq: d.uvarint(), cfg: cfg}
	if d.err != nil || len(d.b) < 1 {
		return nil, errCorrupt
	}
	form := d.b[0]
	d.b = d.b[1:]
	switch form {
	case formLin:
		l := &linPath{start: d.uvarint()}
		if d.err != nil || len(d.b) < 1 || d.b[0] > 1 {
			return nil, errCorrupt
		}
		l.deleted = d.b[0] == 1
		d.b = d.b[1:]
		n := d.uvarint()
		if d.err != nil || n == 0 || n > revtree.HardMaxPathLen || n > l.start || l.start > revtree.MaxPos ||
			uint64(len(d.b)) < n*revtree.HashLen {
			return nil, errCorrupt
		}
		l.ids = append([]byte(nil), d.b[:n*revtree.HashLen]...)
		d.b = d.b[n*revtree.HashLen:]
		more := d.uvarint()
		if d.err != nil || more > revtree.HardMaxPathLen || n+more > l.start {
			return nil, errCorrupt
		}
		l.nRecent, l.more, l.loaded = int(n), int(more), more == 0
		ds.lin, ds.hadHist = l, more > 0
	case formTree:
		tb := d.bytes()
		if d.err != nil {
			return nil, errCorrupt
		}
		t, err := revtree.Decode(tb)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errCorrupt, err)
		}
		if err := t.SetConfig(cfg); err != nil {
			return nil, err
		}
		ds.tree = t
	default:
		return nil, errCorrupt
	}
	leaves := ds.leaves()
	ds.bodies = make(map[revtree.Rev]Body, len(leaves))
	for i, l := range leaves {
		var x Body
		if len(d.b) < 1 {
			return nil, errCorrupt
		}
		form := d.b[0]
		d.b = d.b[1:]
		switch {
		case form == bodyHere:
			d.body(&x)
		case form == bodyInView && i == 0 && !l.Deleted:
			x.Origin = string(d.bytes())
			x.OriginTime = d.varint()
			x.Expiry = d.varint()
			ds.inView = true
		default:
			return nil, errCorrupt
		}
		ds.bodies[l.Rev] = x
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errCorrupt
	}
	return ds, nil
}

// changeEntry is the value of a changes-index key: the document and what a
// changes row needs, so the feed is a range scan.
func appendChange(b []byte, coll, id string, ds *docState) []byte {
	leaves := ds.leaves()
	w := leaves[0]
	b = append(b, 1)
	b = appendBytes(b, coll)
	b = appendBytes(b, id)
	if w.Deleted {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	x := ds.bodies[w.Rev]
	b = binary.AppendVarint(b, x.Expiry)
	b = binary.AppendUvarint(b, uint64(len(leaves)))
	for _, l := range leaves {
		b = binary.AppendUvarint(b, l.Rev.Pos)
		b = append(b, l.Rev.Hash[:]...)
	}
	return b
}

func decodeChange(v []byte, c *Change) error {
	if len(v) < 1 || v[0] != 1 {
		return errCorrupt
	}
	d := decoder{b: v[1:]}
	c.Coll = string(d.bytes())
	c.ID = string(d.bytes())
	if d.err != nil || len(d.b) < 1 {
		return errCorrupt
	}
	c.Deleted = d.b[0] == 1
	d.b = d.b[1:]
	c.Expiry = d.varint()
	n := d.uvarint()
	if d.err != nil || n == 0 || n > uint64(len(d.b)) {
		return errCorrupt
	}
	c.Leaves = make([]revtree.Rev, 0, n)
	for range n {
		var r revtree.Rev
		r.Pos = d.uvarint()
		if d.err != nil || len(d.b) < revtree.HashLen {
			return errCorrupt
		}
		copy(r.Hash[:], d.b)
		d.b = d.b[revtree.HashLen:]
		c.Leaves = append(c.Leaves, r)
	}
	return d.err
}

// prune drops the bodies of revisions that are no longer leaves.
func (ds *docState) prune() {
	for r := range ds.bodies {
		if !ds.isLeaf(r) {
			delete(ds.bodies, r)
		}
	}
}
