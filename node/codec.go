package node

import (
	"encoding/binary"
	"errors"
	"math"
	"unsafe"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/bincode"
)

// Value encodings. Every value starts with a version byte so that later
// formats (revision trees) can be told apart from these.
const (
	verHead = 1
	// verRecord is the record format written; verRecord1 records (without
	// the plain flags) are still read.
	verRecord  = 2
	verRecord1 = 1
	// verMeta2 collection metas carry flags (metaKeep); they are written
	// only when a flag is set, verMeta ones otherwise.
	verMeta  = 1
	verMeta2 = 2
)

var errCorrupt = errors.New("node: corrupt value")

// Head flags.
const (
	headSortIndex = 1 << iota
	headParent
	headPred
	headPayload
)

// head is the value of a record key: what index maintenance and quota
// accounting need without reading the record itself.
type head struct {
	seq   uint64
	mod   int64
	exp   int64 // expiry in whole seconds; 0 = never
	si    int64
	plen  int64
	flags byte
}

func (h *head) hasSI() bool { return h.flags&headSortIndex != 0 }

func appendHead(b []byte, h *head) []byte {
	b = append(b, verHead, h.flags)
	b = binary.AppendUvarint(b, h.seq)
	b = binary.AppendVarint(b, h.mod)
	b = binary.AppendVarint(b, h.exp)
	b = binary.AppendVarint(b, h.si)
	return binary.AppendUvarint(b, uint64(h.plen))
}

func decodeHead(v []byte, h *head) error {
	_, err := splitHead(v, h)
	return err
}

// splitHead decodes the head at the start of a record key's value and
// returns what follows it: the record's document when it is embedded
// there (see DESIGN.md, "Revisions"), else nothing.
func splitHead(v []byte, h *head) ([]byte, error) {
	if len(v) < 2 || v[0] != verHead {
		return nil, errCorrupt
	}
	h.flags = v[1]
	d := newDecoder(v[2:])
	h.seq = d.Uvarint()
	h.mod = d.Varint()
	h.exp = d.Varint()
	h.si = d.Varint()
	h.plen = int64(d.Uvarint())
	return d.Rest(), d.Err()
}

// record is one stored WBO. When decoded from Pebble its strings alias the
// value they were decoded from (see decodeRecord): they must be copied
// before that value is released.
type record struct {
	seq uint64
	mod int64
	exp int64
	si  int64
	has api.Field // FieldPayload, FieldSortIndex, FieldParentID, FieldPredecessorID
	// plain marks the strings that need no escaping in JSON (plainID...),
	// so reads copy them between quotes; computed by appendRecord,
	// stored from verRecord 2 on (0 for version-1 records).
	plain   byte
	id      string
	payload string
	parent  string
	pred    string
}

func (r *record) head() head {
	h := head{seq: r.seq, mod: r.mod, exp: r.exp, si: r.si, plen: int64(len(r.payload))}
	if r.has&api.FieldSortIndex != 0 {
		h.flags |= headSortIndex
	}
	if r.has&api.FieldParentID != 0 {
		h.flags |= headParent
	}
	if r.has&api.FieldPredecessorID != 0 {
		h.flags |= headPred
	}
	if r.has&api.FieldPayload != 0 {
		h.flags |= headPayload
	}
	return h
}

// Plain flags of a record: which strings are JSON-plain. They are the
// bits of api.Plain, the hint a read hands to the encoder.
const (
	plainID      = byte(api.PlainID)
	plainPayload = byte(api.PlainPayload)
	plainParent  = byte(api.PlainParentID)
	plainPred    = byte(api.PlainPredecessorID)
)

// jsonPlain reports whether s is printable ASCII without '"' and '\\', so
// that api.AppendJSONString would write it unchanged between quotes. It
// checks 8 bytes per step; it may only err towards false (a plain string
// then takes the escaping path, which gives the same bytes).
func jsonPlain(s string) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s[i:]), 8))
		// A byte's high bit ends up set when it is < 0x20, '"', '\\' or
		// >= 0x80 (borrows may flag a neighbour too, never hide one).
		m := (x - lo*0x20) | ((x ^ lo*'"') - lo) | ((x ^ lo*'\\') - lo) | x
		if m&hi != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func plainFlags(r *record) byte {
	var f byte
	if jsonPlain(r.id) {
		f |= plainID
	}
	if jsonPlain(r.payload) {
		f |= plainPayload
	}
	if jsonPlain(r.parent) {
		f |= plainParent
	}
	if jsonPlain(r.pred) {
		f |= plainPred
	}
	return f
}

// appendRecord encodes r in the current record format (version 2): the
// version byte, the field bits, the plain flags (computed here, r.plain is
// ignored), then seq, mod, exp, si and the four strings.
func appendRecord(b []byte, r *record) []byte {
	b = append(b, verRecord, byte(r.has), plainFlags(r))
	b = binary.AppendUvarint(b, r.seq)
	b = binary.AppendVarint(b, r.mod)
	b = binary.AppendVarint(b, r.exp)
	b = binary.AppendVarint(b, r.si)
	b = bincode.AppendString(b, r.id)
	b = bincode.AppendString(b, r.payload)
	b = bincode.AppendString(b, r.parent)
	return bincode.AppendString(b, r.pred)
}

// decodeRecord decodes v (record format 1 or 2) into r without copying:
// r's strings alias v, so v must stay unchanged while they are used. It
// reads what a bincode.Decoder would (minimal varints, lengths within v;
// FuzzDecodeRecord compares them), unrolled: every record a listing
// returns goes through it.
func decodeRecord(v []byte, r *record) error {
	if len(v) < 2 {
		return errCorrupt
	}
	var b []byte
	switch v[0] {
	case verRecord:
		if len(v) < 3 {
			return errCorrupt
		}
		r.plain, b = v[2], v[3:]
	case verRecord1:
		r.plain, b = 0, v[2:]
	default:
		return errCorrupt
	}
	r.has = api.Field(v[1])
	var n [4]uint64 // seq, then zig-zag mod, exp, si
	for i := range n {
		x, k := binary.Uvarint(b)
		if k <= 0 || k > 1 && b[k-1] == 0 {
			return errCorrupt
		}
		n[i], b = x, b[k:]
	}
	var s [4][]byte // id, payload, parent, pred
	for i := range s {
		l, k := binary.Uvarint(b)
		if k <= 0 || k > 1 && b[k-1] == 0 || l > uint64(len(b)-k) {
			return errCorrupt
		}
		end := k + int(l)
		s[i], b = b[k:end:end], b[end:]
	}
	r.seq, r.mod, r.exp, r.si = n[0], unzigzag(n[1]), unzigzag(n[2]), unzigzag(n[3])
	r.id, r.payload, r.parent, r.pred = alias(s[0]), alias(s[1]), alias(s[2]), alias(s[3])
	return nil
}

// unzigzag undoes binary.AppendVarint's zig-zag encoding.
func unzigzag(u uint64) int64 {
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

// collMeta is the metadata of one non-empty collection, or of an empty
// one that exists for Sync 1.5 (keep).
type collMeta struct {
	last  int64 // last modified (centiseconds)
	count int64 // records stored, expired ones included until purged
	bytes int64 // payload bytes of those records
	ttl   int64 // how many of them have an expiry
	// keep makes the collection exist with no record: a Sync 1.5
	// collection exists from its first write until it is deleted
	// (verMeta2).
	keep bool
}

// metaKeep is the collection meta flag of collMeta.keep.
const metaKeep = 1

// exists reports whether the meta describes a collection that exists.
func (m *collMeta) exists() bool { return m.count > 0 || m.keep }

func appendMeta(b []byte, m *collMeta) []byte {
	if m.keep {
		b = append(b, verMeta2, metaKeep)
	} else {
		b = append(b, verMeta)
	}
	b = binary.AppendVarint(b, m.last)
	b = binary.AppendVarint(b, m.count)
	b = binary.AppendVarint(b, m.bytes)
	return binary.AppendVarint(b, m.ttl)
}

func decodeMeta(v []byte, m *collMeta) error {
	if len(v) < 1 || (v[0] != verMeta && v[0] != verMeta2) {
		return errCorrupt
	}
	rest := v[1:]
	m.keep = false
	if v[0] == verMeta2 {
		if len(rest) < 1 || rest[0]&^metaKeep != 0 {
			return errCorrupt
		}
		m.keep = rest[0]&metaKeep != 0
		rest = rest[1:]
	}
	d := newDecoder(rest)
	m.last = d.Varint()
	m.count = d.Varint()
	m.bytes = d.Varint()
	m.ttl = d.Varint()
	return d.Err()
}

// The user meta (under the empty collection name) holds the next insertion
// sequence number and the user's last write stamp (version 2; version 1,
// written before the per-user clock, has no last and reads as 0).
// Version 3 adds the user's last changes-feed sequence number; version 4
// the bytes the quota counts beyond the Weave records: the payloads of
// conflicting leaves, and the _local documents' bytes and number (read
// as 0 from older versions). Version 5, written only for a user served
// by Sync 1.5, adds flags (userSync15: the Sync 1.5 indexes are kept) and
// the storage's last-modified time for Sync 1.5 (userMeta.smod).
const (
	verUserMeta5 = 5
	verUserMeta  = 4
	verUserMeta3 = 3
	verUserMeta2 = 2
	verUserMeta1 = 1
)

// userMeta is the decoded user meta.
type userMeta struct {
	nextSeq uint64
	last    int64
	chg     uint64
	// conf is the payload bytes of the user's conflicting live leaves
	// (live leaves that are not their document's winner); local and
	// nlocal the bytes and number of the _local documents.
	conf, local, nlocal int64
	// flags (userSync15) and smod (the Sync 1.5 storage's last-modified
	// time, at least the last time of every collection it ever had) are
	// version 5's.
	flags byte
	smod  int64
}

// userSync15 is the user meta flag of a user served by Sync 1.5: its
// Sync 1.5 indexes (index15.go) are kept.
const userSync15 = 1

func appendUserMeta(b []byte, m *userMeta) []byte {
	v := byte(verUserMeta)
	if m.flags != 0 || m.smod != 0 {
		v = verUserMeta5
	}
	b = binary.AppendUvarint(append(b, v), m.nextSeq)
	b = binary.AppendVarint(b, m.last)
	b = binary.AppendUvarint(b, m.chg)
	b = binary.AppendVarint(b, m.conf)
	b = binary.AppendVarint(b, m.local)
	b = binary.AppendVarint(b, m.nlocal)
	if v == verUserMeta5 {
		b = append(b, m.flags)
		b = binary.AppendVarint(b, m.smod)
	}
	return b
}

func decodeUserMeta(v []byte) (m userMeta, err error) {
	if len(v) < 1 || v[0] < verUserMeta1 || v[0] > verUserMeta5 {
		return userMeta{}, errCorrupt
	}
	d := newDecoder(v[1:])
	m.nextSeq = d.Uvarint()
	if v[0] >= verUserMeta2 {
		m.last = d.Varint()
	}
	if v[0] >= verUserMeta3 {
		m.chg = d.Uvarint()
	}
	if v[0] >= verUserMeta {
		m.conf = d.Varint()
		m.local = d.Varint()
		m.nlocal = d.Varint()
	}
	if v[0] >= verUserMeta5 {
		m.flags = d.Byte()
		m.smod = d.Varint()
		if m.flags&^userSync15 != 0 {
			return userMeta{}, errCorrupt
		}
	}
	return m, d.Err()
}

// alias returns a string sharing b's memory.
func alias(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// newDecoder returns bincode's strict decoder of a stored value (after its
// version byte); its failures wrap errCorrupt.
func newDecoder(v []byte) bincode.Decoder { return bincode.NewDecoder(v, errCorrupt) }

// noMax is the length bound of stored strings when they are read back:
// they were bounded when they were written, so a read checks only that
// they fit in the value.
const noMax = math.MaxInt
