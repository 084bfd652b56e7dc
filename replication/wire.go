package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/bincode"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/revtree"
)

// WireVersion is the first byte of every message of ProtocolID. Version 2
// (ProtocolID /hce/repl/2.0.0) added ChangesResponse.Final; Decode refuses
// every other version.
const WireVersion = 2

// Bounds of the wire format. The decoder refuses anything beyond them
// before allocating for it.
const (
	// MaxFrameSize bounds one frame (request or response). libp2p's
	// resource manager grants a stream 16 MiB by default, so frames stay
	// well below that.
	MaxFrameSize = 8 << 20
	// MaxResponseBytes is the size at which a server stops adding rows or
	// revisions to a response (a response always carries at least one when
	// there is one to send).
	MaxResponseBytes = 4 << 20
	// MaxRows bounds the rows of a ChangesResponse and the Limit of a
	// ChangesRequest.
	MaxRows = 1000
	// MaxLeaves bounds the leaves of one changes row and the revisions
	// asked for one document.
	MaxLeaves = 1000
	// MaxFetchDocs bounds the documents of a FetchRequest.
	MaxFetchDocs = 1000
	// MaxFetchRevs bounds the revisions of a FetchResponse.
	MaxFetchRevs = 1000
	// MaxUsers bounds the users of a SeqsRequest or a Notice.
	MaxUsers = 1000
	// MaxUserLen bounds a user name; MaxSourceLen a store UUID.
	MaxUserLen   = dirproto.MaxUserLen
	MaxSourceLen = 256
)

// ErrBadMessage means a message is malformed, out of bounds, of an unknown
// version or type, or followed by trailing bytes.
var ErrBadMessage = errors.New("replication: bad message")

// Message types (the second byte of a message).
const (
	typeChangesReq  = 1
	typeChangesResp = 2
	typeSeqsReq     = 3
	typeSeqsResp    = 4
	typeFetchReq    = 5
	typeFetchResp   = 6
	typeNotice      = 7
	typeNoticeAck   = 8
	typeSyncReq     = 9
	typeSyncResp    = 10
)

// Message is one message of the replication protocol: a *ChangesRequest,
// *ChangesResponse, *SeqsRequest, *SeqsResponse, *FetchRequest,
// *FetchResponse, *Notice, *NoticeAck, *SyncRequest or *SyncResponse.
type Message interface {
	msgType() byte
	appendTo(b []byte) []byte
	decode(d *decoder)
}

// ChangesRequest asks for one user's changes feed after Since (the
// source's _changes?style=all_docs&since=).
type ChangesRequest struct {
	User  string
	Since uint64
	// Limit is the most rows wanted (at most MaxRows; 0 means MaxRows).
	Limit uint32
	// InlineBytes, when not 0, asks the source to send the rows' open
	// revisions with their paths in the answer when they fit in this many
	// bytes (at most MaxResponseBytes): live replication then needs no
	// fetch round trip.
	InlineBytes uint32
}

// ChangeRow is one document of a changes feed: its open revisions (winner
// first) and whether the winner is a tombstone.
type ChangeRow struct {
	Coll, ID string
	Leaves   []revtree.Rev
	Deleted  bool
}

// ChangesResponse answers a ChangesRequest.
type ChangesResponse struct {
	// Source is the UUID of the answering store: checkpoints are valid
	// only against the same store.
	Source string
	Rows   []ChangeRow
	// Last is the sequence number up to which the rows are complete.
	Last uint64
	// More reports that the feed may have rows after Last.
	More bool
	// Revisions are the rows' open revisions with their paths, when the
	// request asked for them and they fit; otherwise empty.
	Revisions []node.Revision
	// Final is true when the source, by its own view of the replica set
	// (at most the membership cache lifetime old), is no longer a member
	// of the user's set: it takes no writes of the user any more, so a
	// pull that reaches the end of its feed (More false) with a Final
	// answer has everything it will ever have (a handoff).
	Final bool
}

// SeqsRequest asks for the current sequence numbers of users (the cheap
// sweep that finds users with something to pull).
type SeqsRequest struct {
	Users []string
}

// SeqsResponse answers a SeqsRequest: Seqs[i] is the sequence number of
// Users[i] of the request, 0 for users the source does not share with the
// caller.
type SeqsResponse struct {
	Source string
	Seqs   []uint64
}

// FetchDoc names the revisions wanted of one document.
type FetchDoc struct {
	Coll, ID string
	Revs     []revtree.Rev
}

// FetchRequest asks for revisions with their ancestry (CouchDB's
// _bulk_get?revs=true&latest=true): for each revision asked, the leaves
// that descend from it.
type FetchRequest struct {
	User string
	Docs []FetchDoc
}

// FetchResponse answers a FetchRequest.
type FetchResponse struct {
	// Done is how many of the request's documents were answered (in
	// order); the caller asks again for the others. Revisions the source
	// no longer has are simply absent.
	Done      uint32
	Revisions []node.Revision
}

// UserSeq names a user's sequence number on the sender.
type UserSeq struct {
	User string
	Seq  uint64
}

// Notice tells a replica that users changed on the sender, so that it
// pulls them now. It is answered with a NoticeAck.
type Notice struct {
	Users []UserSeq
}

// NoticeAck is the empty answer to a Notice.
type NoticeAck struct{}

// SyncRequest asks the receiver to pull User from the sender now and to
// answer once it has everything up to the sender's feed number Seq (or
// later): the sender acknowledges a client's write only when another
// replica holds it.
type SyncRequest struct {
	User string
	Seq  uint64
}

// SyncResponse answers a SyncRequest: the pull succeeded.
type SyncResponse struct{}

func (*ChangesRequest) msgType() byte  { return typeChangesReq }
func (*ChangesResponse) msgType() byte { return typeChangesResp }
func (*SeqsRequest) msgType() byte     { return typeSeqsReq }
func (*SeqsResponse) msgType() byte    { return typeSeqsResp }
func (*FetchRequest) msgType() byte    { return typeFetchReq }
func (*FetchResponse) msgType() byte   { return typeFetchResp }
func (*Notice) msgType() byte          { return typeNotice }
func (*NoticeAck) msgType() byte       { return typeNoticeAck }
func (*SyncRequest) msgType() byte     { return typeSyncReq }
func (*SyncResponse) msgType() byte    { return typeSyncResp }

// Encode returns the encoding of m. The caller keeps m within the bounds
// above (Decode refuses what is not).
func Encode(m Message) []byte {
	return m.appendTo([]byte{WireVersion, m.msgType()})
}

// Decode decodes one message strictly: a known version and type, every
// count and length within bounds, names and revision paths valid, integers
// minimally encoded and no trailing bytes. For a message that Decode
// accepts, Encode gives back the same bytes.
func Decode(b []byte) (Message, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadMessage, len(b))
	}
	if b[0] != WireVersion {
		return nil, fmt.Errorf("%w: version %d", ErrBadMessage, b[0])
	}
	var m Message
	switch b[1] {
	case typeChangesReq:
		m = &ChangesRequest{}
	case typeChangesResp:
		m = &ChangesResponse{}
	case typeSeqsReq:
		m = &SeqsRequest{}
	case typeSeqsResp:
		m = &SeqsResponse{}
	case typeFetchReq:
		m = &FetchRequest{}
	case typeFetchResp:
		m = &FetchResponse{}
	case typeNotice:
		m = &Notice{}
	case typeNoticeAck:
		m = &NoticeAck{}
	case typeSyncReq:
		m = &SyncRequest{}
	case typeSyncResp:
		m = &SyncResponse{}
	default:
		return nil, fmt.Errorf("%w: type %d", ErrBadMessage, b[1])
	}
	d := decoder{bincode.NewDecoder(b[2:], ErrBadMessage)}
	m.decode(&d)
	if err := d.End(); err != nil {
		return nil, err
	}
	return m, nil
}

// Minimal encoded sizes, used to refuse counts the remaining input cannot
// hold before allocating.
const (
	minRev      = 1 + revtree.HashLen
	minRow      = 2 + 2 + 1 + minRev + 1
	minFetchDoc = 2 + 2 + 1 + minRev
	minRevision = 2 + 2 + 1 + 1 + revtree.HashLen + 1 + 9
	minUserSeq  = 2 + 1
)

func (m *ChangesRequest) appendTo(b []byte) []byte {
	b = bincode.AppendString(b, m.User)
	b = binary.AppendUvarint(b, m.Since)
	b = binary.AppendUvarint(b, uint64(m.Limit))
	return binary.AppendUvarint(b, uint64(m.InlineBytes))
}

func (m *ChangesRequest) decode(d *decoder) {
	m.User = d.user()
	m.Since = d.Uvarint()
	m.Limit = uint32(d.Count(MaxRows, 0))
	m.InlineBytes = uint32(d.Count(MaxResponseBytes, 0))
}

func (m *ChangesResponse) appendTo(b []byte) []byte {
	b = bincode.AppendString(b, m.Source)
	b = binary.AppendUvarint(b, uint64(len(m.Rows)))
	for i := range m.Rows {
		r := &m.Rows[i]
		b = bincode.AppendString(bincode.AppendString(b, r.Coll), r.ID)
		b = bincode.AppendBool(b, r.Deleted)
		b = binary.AppendUvarint(b, uint64(len(r.Leaves)))
		for _, l := range r.Leaves {
			b = appendRev(b, l)
		}
	}
	b = binary.AppendUvarint(b, m.Last)
	b = bincode.AppendBool(b, m.More)
	b = bincode.AppendBool(b, m.Final)
	b = binary.AppendUvarint(b, uint64(len(m.Revisions)))
	for i := range m.Revisions {
		b = appendRevision(b, &m.Revisions[i])
	}
	return b
}

func (m *ChangesResponse) decode(d *decoder) {
	m.Source = d.String(MaxSourceLen)
	n := d.Count(MaxRows, minRow)
	if n > 0 {
		m.Rows = make([]ChangeRow, n)
	}
	for i := 0; i < n && d.Err() == nil; i++ {
		r := &m.Rows[i]
		r.Coll, r.ID = d.docID()
		r.Deleted = d.Bool()
		k := d.Count(MaxLeaves, minRev)
		if d.Err() == nil && k == 0 {
			d.Fail("row without leaves")
		}
		r.Leaves = make([]revtree.Rev, 0, k)
		for j := 0; j < k && d.Err() == nil; j++ {
			r.Leaves = append(r.Leaves, d.rev())
		}
	}
	m.Last = d.Uvarint()
	m.More = d.Bool()
	m.Final = d.Bool()
	k := d.Count(MaxFetchRevs, minRevision)
	if k > 0 {
		m.Revisions = make([]node.Revision, k)
	}
	for i := 0; i < k && d.Err() == nil; i++ {
		d.revision(&m.Revisions[i])
	}
}

func (m *SeqsRequest) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.Users)))
	for _, u := range m.Users {
		b = bincode.AppendString(b, u)
	}
	return b
}

func (m *SeqsRequest) decode(d *decoder) {
	n := d.Count(MaxUsers, 2)
	if n > 0 {
		m.Users = make([]string, 0, n)
	}
	for i := 0; i < n && d.Err() == nil; i++ {
		m.Users = append(m.Users, d.user())
	}
}

func (m *SeqsResponse) appendTo(b []byte) []byte {
	b = bincode.AppendString(b, m.Source)
	b = binary.AppendUvarint(b, uint64(len(m.Seqs)))
	for _, s := range m.Seqs {
		b = binary.AppendUvarint(b, s)
	}
	return b
}

func (m *SeqsResponse) decode(d *decoder) {
	m.Source = d.String(MaxSourceLen)
	n := d.Count(MaxUsers, 1)
	if n > 0 {
		m.Seqs = make([]uint64, 0, n)
	}
	for i := 0; i < n && d.Err() == nil; i++ {
		m.Seqs = append(m.Seqs, d.Uvarint())
	}
}

func (m *FetchRequest) appendTo(b []byte) []byte {
	b = bincode.AppendString(b, m.User)
	b = binary.AppendUvarint(b, uint64(len(m.Docs)))
	for i := range m.Docs {
		x := &m.Docs[i]
		b = bincode.AppendString(bincode.AppendString(b, x.Coll), x.ID)
		b = binary.AppendUvarint(b, uint64(len(x.Revs)))
		for _, r := range x.Revs {
			b = appendRev(b, r)
		}
	}
	return b
}

func (m *FetchRequest) decode(d *decoder) {
	m.User = d.user()
	n := d.Count(MaxFetchDocs, minFetchDoc)
	if n > 0 {
		m.Docs = make([]FetchDoc, n)
	}
	for i := 0; i < n && d.Err() == nil; i++ {
		x := &m.Docs[i]
		x.Coll, x.ID = d.docID()
		k := d.Count(MaxLeaves, minRev)
		if d.Err() == nil && k == 0 {
			d.Fail("fetch of a document without revisions")
		}
		x.Revs = make([]revtree.Rev, 0, k)
		for j := 0; j < k && d.Err() == nil; j++ {
			x.Revs = append(x.Revs, d.rev())
		}
	}
}

func (m *FetchResponse) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(m.Done))
	b = binary.AppendUvarint(b, uint64(len(m.Revisions)))
	for i := range m.Revisions {
		b = appendRevision(b, &m.Revisions[i])
	}
	return b
}

func (m *FetchResponse) decode(d *decoder) {
	m.Done = uint32(d.Count(MaxFetchDocs, 0))
	n := d.Count(MaxFetchRevs, minRevision)
	if n > 0 {
		m.Revisions = make([]node.Revision, n)
	}
	for i := 0; i < n && d.Err() == nil; i++ {
		d.revision(&m.Revisions[i])
	}
}

func (m *Notice) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.Users)))
	for _, u := range m.Users {
		b = binary.AppendUvarint(bincode.AppendString(b, u.User), u.Seq)
	}
	return b
}

func (m *Notice) decode(d *decoder) {
	n := d.Count(MaxUsers, minUserSeq)
	if n > 0 {
		m.Users = make([]UserSeq, 0, n)
	}
	for i := 0; i < n && d.Err() == nil; i++ {
		u := d.user()
		m.Users = append(m.Users, UserSeq{User: u, Seq: d.Uvarint()})
	}
}

func (*NoticeAck) appendTo(b []byte) []byte { return b }
func (*NoticeAck) decode(*decoder)          {}

func (m *SyncRequest) appendTo(b []byte) []byte {
	return binary.AppendUvarint(bincode.AppendString(b, m.User), m.Seq)
}

func (m *SyncRequest) decode(d *decoder) {
	m.User = d.user()
	m.Seq = d.Uvarint()
}

func (*SyncResponse) appendTo(b []byte) []byte { return b }
func (*SyncResponse) decode(*decoder)          {}

func appendRevision(b []byte, r *node.Revision) []byte {
	b = bincode.AppendString(bincode.AppendString(b, r.Coll), r.ID)
	b = bincode.AppendBool(b, r.Path.Deleted)
	b = binary.AppendUvarint(b, r.Path.Start)
	b = binary.AppendUvarint(b, uint64(len(r.Path.IDs)))
	for _, h := range r.Path.IDs {
		b = append(b, h[:]...)
	}
	return node.AppendBody(b, &r.Body)
}

func (d *decoder) revision(r *node.Revision) {
	r.Coll, r.ID = d.docID()
	r.Path.Deleted = d.Bool()
	r.Path.Start = d.Uvarint()
	n := d.Count(revtree.HardMaxPathLen, revtree.HashLen)
	switch {
	case d.Err() != nil:
		return
	case n == 0:
		d.Fail("empty revision path")
		return
	case r.Path.Start < uint64(n) || r.Path.Start > revtree.MaxPos:
		d.Fail("path start %d with %d ids", r.Path.Start, n)
		return
	}
	r.Path.IDs = make([][revtree.HashLen]byte, n)
	for i := range r.Path.IDs {
		copy(r.Path.IDs[i][:], d.Take(revtree.HashLen))
	}
	node.DecodeBody(&d.Decoder, &r.Body)
}

func appendRev(b []byte, r revtree.Rev) []byte {
	return append(binary.AppendUvarint(b, r.Pos), r.Hash[:]...)
}

// decoder reads the fields of a message: bincode's strict primitives and
// the protocol's names and revisions. The first error sticks and every
// later read returns a zero value.
type decoder struct{ bincode.Decoder }

func (d *decoder) user() string {
	u := d.Text(MaxUserLen)
	if d.Err() == nil && !validUser(u) {
		d.Fail("bad user name")
	}
	return u
}

// validUser reports whether u is a user name a store accepts.
func validUser(u string) bool {
	if u == "" || len(u) > MaxUserLen || !utf8.ValidString(u) {
		return false
	}
	for i := 0; i < len(u); i++ {
		if u[i] == 0 {
			return false
		}
	}
	return true
}

func (d *decoder) docID() (coll, id string) {
	coll = d.String(api.MaxCollectionName)
	id = d.String(api.MaxIDBytes)
	if d.Err() == nil {
		if err := node.ValidateDocID(coll, id); err != nil {
			d.Fail("%v", err)
		}
	}
	return coll, id
}

func (d *decoder) rev() revtree.Rev {
	var r revtree.Rev
	r.Pos = d.Uvarint()
	if d.Err() != nil {
		return r
	}
	if r.Pos == 0 || r.Pos > revtree.MaxPos || d.Len() < revtree.HashLen {
		d.Fail("bad revision")
		return r
	}
	copy(r.Hash[:], d.Take(revtree.HashLen))
	return r
}
