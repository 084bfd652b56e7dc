package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/hce-sync/hce/api"
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

// RevisionHash returns the hash of the edit that made a revision of coll/id
// with the given parent (the zero Rev for a first edit), deleted flag and
// body: revtree.NewRevHash over the canonical encoding of the names and the
// body. Nodes compute it for their own edits and check it on revisions
// with an origin that peers send.
func RevisionHash(coll, id string, parent revtree.Rev, deleted bool, body *Body) [revtree.HashLen]byte {
	buf := appendBytes(appendBytes(make([]byte, 0, 64+len(body.Payload)), coll), id)
	return revtree.NewRevHash(parent, deleted, appendBody(buf, body))
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
