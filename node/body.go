package node

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/bincode"
)

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

// BodyFields are the field bits a Body may have: the Weave fields a
// revision carries.
const BodyFields = api.FieldPayload | api.FieldSortIndex | api.FieldParentID | api.FieldPredecessorID

// validate checks b against the Weave limits; deleted bodies carry no
// fields.
func (b *Body) validate(deleted bool) error {
	switch {
	case b.Has&^BodyFields != 0:
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

// AppendBody appends the binary encoding of x: its field bits (one byte),
// payload, sortindex, parentid, predecessorid, expiry, origin and origin
// time, strings length-prefixed and integers as varints (api/bincode).
// It is the one encoding of a revision body: stored documents keep it
// behind a version byte, RevisionHash hashes it, and the replication
// protocol carries it. A new field is added here and in DecodeBody.
func AppendBody(b []byte, x *Body) []byte {
	b = append(b, byte(x.Has))
	b = bincode.AppendString(b, x.Payload)
	b = binary.AppendVarint(b, x.SortIndex)
	b = bincode.AppendString(b, x.ParentID)
	b = bincode.AppendString(b, x.PredecessorID)
	b = binary.AppendVarint(b, x.Expiry)
	b = bincode.AppendString(b, x.Origin)
	return binary.AppendVarint(b, x.OriginTime)
}

// DecodeBody reads a body that AppendBody encoded from d, strictly: field
// bits other than BodyFields, strings longer than the Weave bounds
// (api.MaxPayloadBytes, api.MaxIDBytes, MaxOriginLen) or not valid UTF-8
// and non-minimal varints fail d. It does not check what Body's other
// rules require (a tombstone without fields, sortindex bounds):
// ApplyRevisions does.
func DecodeBody(d *bincode.Decoder, x *Body) {
	x.Has = api.Field(d.Byte())
	if d.Err() == nil && x.Has&^BodyFields != 0 {
		d.Fail("unknown body field bits %#x", x.Has)
		return
	}
	x.Payload = d.Text(api.MaxPayloadBytes)
	x.SortIndex = d.Varint()
	x.ParentID = d.Text(api.MaxIDBytes)
	x.PredecessorID = d.Text(api.MaxIDBytes)
	x.Expiry = d.Varint()
	x.Origin = d.Text(MaxOriginLen)
	x.OriginTime = d.Varint()
}

// verBody is the version byte of a stored body (and of the body in a
// revision hash's input).
const verBody = 1

// appendStoredBody is a body as stored and hashed: verBody, then AppendBody.
func appendStoredBody(b []byte, x *Body) []byte {
	return AppendBody(append(b, verBody), x)
}

// decodeStoredBody reads what appendStoredBody wrote.
func decodeStoredBody(d *bincode.Decoder, x *Body) {
	if v := d.Byte(); d.Err() == nil && v != verBody {
		d.Fail("body version %d", v)
		return
	}
	DecodeBody(d, x)
}

// setFields sets x's Weave fields (BodyFields and their values) from
// record rec, whose strings x then shares.
func (x *Body) setFields(rec *record) {
	x.Has = rec.has & BodyFields
	x.Payload, x.SortIndex, x.ParentID, x.PredecessorID = "", 0, "", ""
	if x.Has&api.FieldPayload != 0 {
		x.Payload = rec.payload
	}
	if x.Has&api.FieldSortIndex != 0 {
		x.SortIndex = rec.si
	}
	if x.Has&api.FieldParentID != 0 {
		x.ParentID = rec.parent
	}
	if x.Has&api.FieldPredecessorID != 0 {
		x.PredecessorID = rec.pred
	}
}

// fillBody copies the Weave fields of rec into x, with copies of its
// strings (rec may alias a Pebble value).
func fillBody(x *Body, rec *record) {
	x.setFields(rec)
	x.Payload = strings.Clone(x.Payload)
	x.ParentID = strings.Clone(x.ParentID)
	x.PredecessorID = strings.Clone(x.PredecessorID)
}
