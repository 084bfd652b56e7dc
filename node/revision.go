package node

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/bincode"
	"github.com/hce-sync/hce/node/revtree"
)

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
	// ErrTooManyConflicts: the revision would give its document more
	// conflicting live leaves than Config.MaxConflicts. It wraps
	// ErrRevRejected.
	ErrTooManyConflicts = fmt.Errorf("%w: too many conflicts", ErrRevRejected)
	// ErrDocTooLarge: the revision would take its document past
	// Config.MaxDocBytes. It wraps ErrRevRejected.
	ErrDocTooLarge = fmt.Errorf("%w: document too large", ErrRevRejected)
)

// MaxOriginLen bounds Body.Origin.
const MaxOriginLen = 256

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

// Verify checks that a revision with an origin hashes to its id (see
// RevisionHash), and returns an error wrapping ErrRevRejected when it does
// not. A revision without an origin (made by a CouchDB-protocol client),
// or whose path does not reach its parent (stemmed to one id above
// position 1), cannot be checked: Verify accepts it. ApplyRevisions
// verifies every revision it is given; the CouchDB endpoint uses Verify to
// tell a node's revision from a client's edit that kept its origin.
func (r *Revision) Verify() error {
	if r.Body.Origin == "" {
		return nil
	}
	var parent revtree.Rev
	switch {
	case len(r.Path.IDs) == 0:
		return fmt.Errorf("%w: empty revision path", ErrRevRejected)
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

// RevisionHash returns the hash of the edit that made a revision of coll/id
// with the given parent (the zero Rev for a first edit), deleted flag and
// body: revtree.NewRevHash over coll and id (length-prefixed) followed by
// the version byte 1 and AppendBody's encoding of body. Nodes compute it
// for their own edits and check it (Verify) on revisions with an origin
// that peers send.
func RevisionHash(coll, id string, parent revtree.Rev, deleted bool, body *Body) [revtree.HashLen]byte {
	buf := bincode.AppendString(bincode.AppendString(make([]byte, 0, 64+len(body.Payload)), coll), id)
	return revtree.NewRevHash(parent, deleted, appendStoredBody(buf, body))
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
