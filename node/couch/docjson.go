package couch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/revtree"
)

// The JSON members of a document body that carry the WBO fields.
const (
	fieldPayload       = "payload"
	fieldSortIndex     = "sortindex"
	fieldParentID      = "parentid"
	fieldPredecessorID = "predecessorid"
	fieldExpiry        = "expiry"
	fieldOrigin        = "hce_origin"
	fieldOriginTime    = "hce_origin_time"
)

// docError is a document that cannot be stored, with its CouchDB error
// string ("forbidden" for a refused document, "bad_request" for input that
// is not a document at all).
type docError struct {
	code, reason string
}

func (e *docError) Error() string { return e.code + ": " + e.reason }

func forbidden(format string, a ...any) *docError {
	return &docError{code: "forbidden", reason: fmt.Sprintf(format, a...)}
}

// splitDocID splits a CouchDB document id "<collection>/<id>" at the first
// '/' and checks both halves with node.ValidateDocID.
func splitDocID(docID string) (coll, id string, err error) {
	coll, id, ok := strings.Cut(docID, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: document id %q is not <collection>/<id>", node.ErrRevRejected, docID)
	}
	if err := node.ValidateDocID(coll, id); err != nil {
		return "", "", err
	}
	return coll, id, nil
}

// revisionsJSON is CouchDB's _revisions member.
type revisionsJSON struct {
	Start uint64   `json:"start"`
	IDs   []string `json:"ids"`
}

// inDoc is a decoded document: its names as sent (for error rows, set as
// far as they could be read) and, when err is nil, the revision.
type inDoc struct {
	DocID, Rev string
	Revision   node.Revision
}

// decodeDoc decodes one document of a _bulk_docs request with
// new_edits=false. The names are filled in as far as they could be read
// even when it fails. Every failure is a *docError.
func decodeDoc(data []byte) (d inDoc, err error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return d, forbidden("a document must be a JSON object")
	}
	str := func(k string) (string, bool, error) {
		raw, ok := m[k]
		if !ok || isNull(raw) {
			return "", false, nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false, forbidden("%s must be a string", k)
		}
		return s, true, nil
	}
	num := func(k string) (int64, bool, error) {
		raw, ok := m[k]
		if !ok || isNull(raw) {
			return 0, false, nil
		}
		var v int64
		if err := json.Unmarshal(raw, &v); err != nil {
			return 0, false, forbidden("%s must be an integer", k)
		}
		return v, true, nil
	}
	var ok bool
	if d.DocID, ok, err = str("_id"); err != nil {
		return d, err
	} else if !ok {
		return d, forbidden("the document has no _id")
	}
	if d.Rev, _, err = str("_rev"); err != nil {
		return d, err
	}
	var deleted bool
	if raw, ok := m["_deleted"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &deleted); err != nil {
			return d, forbidden("_deleted must be a boolean")
		}
	}
	r := &d.Revision
	if strings.HasPrefix(d.DocID, "_") {
		return d, forbidden("document ids starting with '_' are reserved")
	}
	if r.Coll, r.ID, err = splitDocID(d.DocID); err != nil {
		return d, forbidden("%v", err)
	}
	if raw, ok := m["_revisions"]; ok && !isNull(raw) {
		var rj revisionsJSON
		if err := json.Unmarshal(raw, &rj); err != nil {
			return d, forbidden("_revisions must be {\"start\":N,\"ids\":[...]}")
		}
		if r.Path, err = revtree.ParseRevisions(rj.Start, rj.IDs, deleted); err != nil {
			return d, forbidden("_revisions: %v", err)
		}
		if len(r.Path.IDs) == 0 || rj.Start < uint64(len(rj.IDs)) || rj.Start > revtree.MaxPos {
			return d, forbidden("_revisions: start %d does not fit %d ids", rj.Start, len(rj.IDs))
		}
		if d.Rev == "" {
			d.Rev = r.Path.Leaf().String()
		} else if d.Rev != r.Path.Leaf().String() {
			return d, forbidden("_rev %q is not the first of _revisions", d.Rev)
		}
	} else {
		if d.Rev == "" {
			return d, forbidden("the document has neither _rev nor _revisions")
		}
		leaf, err := revtree.ParseRev(d.Rev)
		if err != nil {
			return d, forbidden("%v", err)
		}
		r.Path = revtree.Path{Start: leaf.Pos, IDs: [][revtree.HashLen]byte{leaf.Hash}, Deleted: deleted}
	}
	b := &r.Body
	for k := range m {
		switch k {
		case "_id", "_rev", "_revisions", "_deleted",
			// Read-only members a document fetched from CouchDB may carry.
			"_conflicts", "_deleted_conflicts", "_revs_info", "_local_seq":
		case "_attachments":
			return d, forbidden("attachments are not supported")
		case fieldPayload:
			var has bool
			if b.Payload, has, err = str(k); err != nil {
				return d, err
			} else if has {
				b.Has |= api.FieldPayload
			}
		case fieldSortIndex:
			var has bool
			if b.SortIndex, has, err = num(k); err != nil {
				return d, err
			} else if has {
				b.Has |= api.FieldSortIndex
			}
		case fieldParentID:
			var has bool
			if b.ParentID, has, err = str(k); err != nil {
				return d, err
			} else if has {
				b.Has |= api.FieldParentID
			}
		case fieldPredecessorID:
			var has bool
			if b.PredecessorID, has, err = str(k); err != nil {
				return d, err
			} else if has {
				b.Has |= api.FieldPredecessorID
			}
		case fieldExpiry:
			if b.Expiry, _, err = num(k); err != nil {
				return d, err
			}
		case fieldOrigin:
			if b.Origin, _, err = str(k); err != nil {
				return d, err
			}
		case fieldOriginTime:
			if b.OriginTime, _, err = num(k); err != nil {
				return d, err
			}
		default:
			if strings.HasPrefix(k, "_") {
				return d, forbidden("bad special document member %q", k)
			}
			return d, forbidden("unknown member %q: a document carries only WBO fields", k)
		}
	}
	if deleted {
		// A tombstone carries no record fields (CouchDB clients may
		// delete with the whole body); only the origin survives.
		*b = node.Body{Origin: b.Origin, OriginTime: b.OriginTime}
	}
	if r.Verify() != nil {
		// A client (PouchDB) edited a revision made by a node and kept
		// its origin members: the new revision is the client's.
		b.Origin, b.OriginTime = "", 0
	}
	return d, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// outDoc is a document as served.
type outDoc struct {
	ID            string         `json:"_id"`
	Rev           string         `json:"_rev"`
	Deleted       bool           `json:"_deleted,omitempty"`
	Payload       *string        `json:"payload,omitempty"`
	SortIndex     *int64         `json:"sortindex,omitempty"`
	ParentID      *string        `json:"parentid,omitempty"`
	PredecessorID *string        `json:"predecessorid,omitempty"`
	Expiry        int64          `json:"expiry,omitempty"`
	Origin        string         `json:"hce_origin,omitempty"`
	OriginTime    int64          `json:"hce_origin_time,omitempty"`
	Revisions     *revisionsJSON `json:"_revisions,omitempty"`
	Conflicts     []string       `json:"_conflicts,omitempty"`
}

// newOutDoc builds the served form of revision r of coll/id. withPath adds
// _revisions from r.Path.
func newOutDoc(r *node.Revision, withPath bool) *outDoc {
	b := &r.Body
	o := &outDoc{
		ID:         r.Coll + "/" + r.ID,
		Rev:        r.Rev().String(),
		Deleted:    r.Path.Deleted,
		Expiry:     b.Expiry,
		Origin:     b.Origin,
		OriginTime: b.OriginTime,
	}
	if b.Has&api.FieldPayload != 0 {
		o.Payload = &b.Payload
	}
	if b.Has&api.FieldSortIndex != 0 {
		o.SortIndex = &b.SortIndex
	}
	if b.Has&api.FieldParentID != 0 {
		o.ParentID = &b.ParentID
	}
	if b.Has&api.FieldPredecessorID != 0 {
		o.PredecessorID = &b.PredecessorID
	}
	if withPath {
		o.Revisions = &revisionsJSON{Start: r.Path.Start, IDs: r.Path.HashStrings()}
	}
	return o
}

// encodeDoc is the JSON of revision r (see newOutDoc).
func encodeDoc(r *node.Revision, withPath bool) []byte {
	b, err := json.Marshal(newOutDoc(r, withPath))
	if err != nil {
		panic(err) // only strings and integers: cannot fail
	}
	return b
}
