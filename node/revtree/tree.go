package revtree

import (
	"fmt"
	"slices"
)

// DefaultRevsLimit is the default number of revisions kept per path by Stem,
// CouchDB's and PouchDB's default _revs_limit.
const DefaultRevsLimit = 1000

// HardMaxPathLen is the absolute bound on the ids of one path accepted by
// Merge, whatever the configuration.
const HardMaxPathLen = 10000

// Config bounds a Tree. The zero Config means "all defaults".
type Config struct {
	// RevsLimit is the number of revisions Stem keeps per root-to-leaf path
	// when called with limit <= 0. Zero means DefaultRevsLimit (1000).
	RevsLimit int
	// MaxPathLen is the longest path (number of ids) Merge accepts from
	// untrusted input. Zero means min(2*RevsLimit, HardMaxPathLen). It must
	// not exceed HardMaxPathLen.
	MaxPathLen int
}

// DefaultConfig returns the defaults: RevsLimit 1000, MaxPathLen 2000.
func DefaultConfig() Config {
	return Config{RevsLimit: DefaultRevsLimit, MaxPathLen: 2 * DefaultRevsLimit}
}

// Validate reports a negative or out-of-range field with ErrInvalidConfig.
func (c Config) Validate() error {
	if c.RevsLimit < 0 || c.RevsLimit > HardMaxPathLen {
		return fmt.Errorf("%w: RevsLimit %d not in [0, %d]", ErrInvalidConfig, c.RevsLimit, HardMaxPathLen)
	}
	if c.MaxPathLen < 0 || c.MaxPathLen > HardMaxPathLen {
		return fmt.Errorf("%w: MaxPathLen %d not in [0, %d]", ErrInvalidConfig, c.MaxPathLen, HardMaxPathLen)
	}
	return nil
}

func (c Config) revsLimit() int {
	if c.RevsLimit <= 0 {
		return DefaultRevsLimit
	}
	return c.RevsLimit
}

func (c Config) maxPathLen() int {
	if c.MaxPathLen > 0 {
		return min(c.MaxPathLen, HardMaxPathLen)
	}
	return min(2*c.revsLimit(), HardMaxPathLen)
}

// Path is the ancestry of one revision in CouchDB's _revisions shape: IDs
// newest first, IDs[i] at position Start-i. Deleted is the deleted flag of
// the newest revision (IDs[0]), the path's leaf.
type Path struct {
	// Start is the position of IDs[0].
	Start uint64
	// IDs are the revision hashes, newest first.
	IDs [][HashLen]byte
	// Deleted reports whether IDs[0] is a tombstone.
	Deleted bool
}

// Leaf returns the newest revision of p, or the zero Rev for an empty path.
func (p Path) Leaf() Rev {
	if len(p.IDs) == 0 {
		return Rev{}
	}
	return Rev{Pos: p.Start, Hash: p.IDs[0]}
}

// Rev returns the i-th revision of p (0 is the newest). It panics if i is
// out of range.
func (p Path) Rev(i int) Rev { return Rev{Pos: p.Start - uint64(i), Hash: p.IDs[i]} }

// HashStrings returns the ids as lowercase hex strings, the "ids" member of
// CouchDB's _revisions.
func (p Path) HashStrings() []string {
	out := make([]string, len(p.IDs))
	for i := range p.IDs {
		out[i] = Rev{Hash: p.IDs[i]}.HashString()
	}
	return out
}

// ParseRevisions builds a Path from the members of CouchDB's _revisions
// ({"start": start, "ids": ids}) and the document's _deleted flag. Each id
// must be 32 lowercase hex characters. The path is not otherwise validated:
// Merge does that.
func ParseRevisions(start uint64, ids []string, deleted bool) (Path, error) {
	if len(ids) > HardMaxPathLen {
		return Path{}, fmt.Errorf("%w: %d ids exceed %d", ErrInvalidPath, len(ids), HardMaxPathLen)
	}
	p := Path{Start: start, IDs: make([][HashLen]byte, len(ids)), Deleted: deleted}
	for i, s := range ids {
		h, err := ParseHash(s)
		if err != nil {
			return Path{}, err
		}
		p.IDs[i] = h
	}
	return p, nil
}

// validate checks a path from untrusted input against maxLen.
func (p Path) validate(maxLen int) error {
	n := len(p.IDs)
	switch {
	case n == 0:
		return fmt.Errorf("%w: no ids", ErrInvalidPath)
	case n > maxLen:
		return fmt.Errorf("%w: %d ids exceed the limit %d", ErrInvalidPath, n, maxLen)
	case p.Start > MaxPos:
		return fmt.Errorf("%w: start %d exceeds %d", ErrInvalidPath, p.Start, uint64(MaxPos))
	case p.Start < uint64(n):
		return fmt.Errorf("%w: start %d is below the %d ids it carries", ErrInvalidPath, p.Start, n)
	}
	seen := make(map[[HashLen]byte]struct{}, n)
	for _, id := range p.IDs {
		if _, dup := seen[id]; dup {
			return fmt.Errorf("%w: duplicate id %x", ErrInvalidPath, id)
		}
		seen[id] = struct{}{}
	}
	return nil
}

// node is one revision in the tree.
type node struct {
	// parent is the parent revision, or the zero Rev for a root (a first
	// revision, or one whose ancestors were stemmed or never received).
	parent Rev
	// children counts the children present in the tree; 0 means leaf.
	children int
	// deleted and value are meaningful only for leaves and are cleared
	// when the node gains a child, so the state is canonical.
	deleted bool
	value   uint64
}

// Leaf describes one open revision.
type Leaf struct {
	// Rev is the leaf revision.
	Rev Rev
	// Deleted reports whether the leaf is a tombstone.
	Deleted bool
	// Value is the opaque handle the store attached with SetValue (0 if
	// none), for example the key of the leaf's body.
	Value uint64
}

// Tree is the revision tree (a forest once stemmed) of one document. Each
// revision appears once and has at most one parent; the state is the union
// of the nodes and parent links of every merged path, so the result of a set
// of merges does not depend on their order. The zero Tree is empty, uses the
// default Config and is ready to use. A Tree is not safe for concurrent use.
type Tree struct {
	cfg   Config
	nodes map[Rev]*node
}

// New returns an empty tree bounded by cfg.
func New(cfg Config) (*Tree, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Tree{cfg: cfg}, nil
}

// Config returns the tree's configuration.
func (t *Tree) Config() Config { return t.cfg }

// SetConfig replaces the tree's configuration, for example after Decode.
func (t *Tree) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	t.cfg = cfg
	return nil
}

// Len returns the number of revisions in the tree.
func (t *Tree) Len() int { return len(t.nodes) }

// Clone returns a deep copy of t.
func (t *Tree) Clone() *Tree {
	c := &Tree{cfg: t.cfg}
	if t.nodes != nil {
		c.nodes = make(map[Rev]*node, len(t.nodes))
		for r, n := range t.nodes {
			nn := *n
			c.nodes[r] = &nn
		}
	}
	return c
}

// Merge grafts path into the tree with CouchDB's new_edits=false semantics:
// revisions are aligned by position and id, shared prefixes merge, a
// divergence becomes a branch, and a path that shares no id with the tree
// becomes a new root (its parent link is added if a later path supplies it).
// Merging a path whose revisions and links are all known changes nothing
// and returns false. Merge does not stem; call Stem afterwards.
//
// The path is validated as untrusted input (ErrInvalidPath); a path that
// contradicts the tree (ErrParentMismatch, ErrDeletedMismatch) is refused
// as a whole and leaves the tree untouched.
func (t *Tree) Merge(p Path) (changed bool, err error) {
	if err := p.validate(t.cfg.maxPathLen()); err != nil {
		return false, err
	}
	// Check everything before changing anything.
	for i := range p.IDs {
		r := p.Rev(i)
		n, ok := t.nodes[r]
		if !ok {
			continue
		}
		if i+1 < len(p.IDs) && !n.parent.IsZero() && n.parent != p.Rev(i+1) {
			return false, fmt.Errorf("%w: %s has parent %s, path says %s", ErrParentMismatch, r, n.parent, p.Rev(i+1))
		}
		if i == 0 && n.children == 0 && n.deleted != p.Deleted {
			return false, fmt.Errorf("%w: leaf %s", ErrDeletedMismatch, r)
		}
	}
	if t.nodes == nil {
		t.nodes = make(map[Rev]*node)
	}
	// Oldest first, so every parent exists before its child links to it.
	for i := len(p.IDs) - 1; i >= 0; i-- {
		r := p.Rev(i)
		n, ok := t.nodes[r]
		if !ok {
			n = &node{}
			if i == 0 {
				n.deleted = p.Deleted
			}
			t.nodes[r] = n
			changed = true
		}
		if i+1 < len(p.IDs) && n.parent.IsZero() {
			pr := p.Rev(i + 1)
			n.parent = pr
			parent := t.nodes[pr]
			if parent.children == 0 {
				parent.deleted, parent.value = false, 0
			}
			parent.children++
			changed = true
		}
	}
	return changed, nil
}

// Stem keeps, for every leaf, at most limit revisions on its path to the
// root (the leaf included, as CouchDB's _revs_limit); revisions further than
// that from every leaf are removed and their children become roots. Leaves
// are never removed. A limit <= 0 means the tree's Config.RevsLimit. It
// returns the number of revisions removed.
func (t *Tree) Stem(limit int) int {
	if limit <= 0 {
		limit = t.cfg.revsLimit()
	}
	// keep[r] is the largest number of revisions still allowed above and
	// including r on some leaf's path; a walk stops where a previous walk
	// already had at least as much budget left.
	keep := make(map[Rev]int, len(t.nodes))
	for r, n := range t.nodes {
		if n.children != 0 {
			continue
		}
		cur, budget := r, limit
		for budget > 0 && !cur.IsZero() {
			if b, seen := keep[cur]; seen && b >= budget {
				break
			}
			keep[cur] = budget
			budget--
			cur = t.nodes[cur].parent
		}
	}
	removed := 0
	for r := range t.nodes {
		if _, ok := keep[r]; !ok {
			delete(t.nodes, r)
			removed++
		}
	}
	if removed == 0 {
		return 0
	}
	// A removed revision's kept children become roots, and a kept revision
	// may lose a child (a long branch stemmed below it while a short one
	// keeps it): recount. Leaves never change, so flags stay valid.
	for _, n := range t.nodes {
		n.children = 0
	}
	for _, n := range t.nodes {
		if n.parent.IsZero() {
			continue
		}
		if p, ok := t.nodes[n.parent]; ok {
			p.children++
		} else {
			n.parent = Rev{}
		}
	}
	return removed
}

// Contains reports whether r is in the tree, as a leaf or an ancestor (what
// _revs_diff counts as present).
func (t *Tree) Contains(r Rev) bool {
	_, ok := t.nodes[r]
	return ok
}

// IsLeaf reports whether r is in the tree and has no children.
func (t *Tree) IsLeaf(r Rev) bool {
	n, ok := t.nodes[r]
	return ok && n.children == 0
}

// Parent returns the parent of r; ok is false if r is unknown or a root.
func (t *Tree) Parent(r Rev) (parent Rev, ok bool) {
	n, found := t.nodes[r]
	if !found || n.parent.IsZero() {
		return Rev{}, false
	}
	return n.parent, true
}

// SetValue attaches an opaque handle to a leaf (0 clears it). The handle is
// dropped when the leaf gains a child. It fails with ErrNotLeaf if r is not
// a leaf of the tree.
func (t *Tree) SetValue(r Rev, v uint64) error {
	n, ok := t.nodes[r]
	if !ok || n.children != 0 {
		return fmt.Errorf("%w: %s", ErrNotLeaf, r)
	}
	n.value = v
	return nil
}

// winnerCmp orders leaves best first: non-deleted before deleted, then the
// higher position, then the greater hash (CouchDB's to_doc_info_path and
// PouchDB's winningRev).
func winnerCmp(a, b Leaf) int {
	if a.Deleted != b.Deleted {
		if !a.Deleted {
			return -1
		}
		return 1
	}
	return -Compare(a.Rev, b.Rev)
}

// Leaves returns the open revisions, best first: Leaves()[0] is the winner,
// then the remaining leaves in the same order (live before deleted, higher
// position first, greater hash first). The order is deterministic.
func (t *Tree) Leaves() []Leaf {
	var out []Leaf
	for r, n := range t.nodes {
		if n.children == 0 {
			out = append(out, Leaf{Rev: r, Deleted: n.deleted, Value: n.value})
		}
	}
	slices.SortFunc(out, winnerCmp)
	return out
}

// Winner returns the revision every peer shows for the document: a
// non-deleted leaf beats a deleted one, then the higher position wins, then
// the greater hash. ok is false for an empty tree. If Winner().Deleted, the
// document is deleted.
func (t *Tree) Winner() (w Leaf, ok bool) {
	first := true
	for r, n := range t.nodes {
		if n.children != 0 {
			continue
		}
		l := Leaf{Rev: r, Deleted: n.deleted, Value: n.value}
		if first || winnerCmp(l, w) < 0 {
			w, first = l, false
		}
	}
	return w, !first
}

// Conflicts returns the non-deleted leaves other than the winner (CouchDB's
// _conflicts), best first.
func (t *Tree) Conflicts() []Rev { return t.losers(false) }

// DeletedConflicts returns the deleted leaves other than the winner
// (CouchDB's _deleted_conflicts), best first.
func (t *Tree) DeletedConflicts() []Rev { return t.losers(true) }

func (t *Tree) losers(deleted bool) []Rev {
	leaves := t.Leaves()
	var out []Rev
	for i, l := range leaves {
		if i > 0 && l.Deleted == deleted {
			out = append(out, l.Rev)
		}
	}
	return out
}

// PathTo returns the ancestry of r, newest first, with at most max ids
// (max <= 0 means all), as _bulk_get's _revisions needs it. The path's
// Deleted flag is r's if r is a leaf, false otherwise. ok is false if r is
// not in the tree.
func (t *Tree) PathTo(r Rev, max int) (p Path, ok bool) {
	n, found := t.nodes[r]
	if !found {
		return Path{}, false
	}
	p.Start = r.Pos
	p.Deleted = n.children == 0 && n.deleted
	cur := r
	for max <= 0 || len(p.IDs) < max {
		p.IDs = append(p.IDs, cur.Hash)
		if n.parent.IsZero() {
			break
		}
		cur = n.parent
		n = t.nodes[cur]
	}
	return p, true
}

// Equal reports whether t and o hold the same revisions, links, leaf flags
// and values (the configuration is not compared).
func (t *Tree) Equal(o *Tree) bool {
	if len(t.nodes) != len(o.nodes) {
		return false
	}
	for r, n := range t.nodes {
		m, ok := o.nodes[r]
		if !ok || *n != *m {
			return false
		}
	}
	return true
}
