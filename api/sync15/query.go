package sync15

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/hce-sync/hce/api"
)

// Sort is the sort= parameter of GET storage/{coll}.
type Sort uint8

// The orders. Every Store must return records in exactly these orders,
// which are total (the id breaks ties) so that pagination by position is
// exact:
//
//   - SortNone and SortNewest: modified descending, then id descending;
//   - SortOldest: modified ascending, then id ascending;
//   - SortIndex: records with a sortindex first, by sortindex descending,
//     then id descending; then records without one, by id descending.
//
// (Newest and index are the reverse of the ascending orders of
// (modified, id) and (has sortindex, sortindex, id), so a store can serve
// all three from two ascending indexes.)
const (
	SortNone Sort = iota
	SortNewest
	SortOldest
	SortIndex
	sortCount
)

// String returns the parameter value of s ("" for SortNone).
func (s Sort) String() string {
	switch s {
	case SortNewest:
		return "newest"
	case SortOldest:
		return "oldest"
	case SortIndex:
		return "index"
	}
	return ""
}

// Query is a parsed GET storage/{coll} request.
type Query struct {
	// IDs, when non-nil, keeps only records with one of these ids (1 to
	// MaxIDs valid ids).
	IDs []string
	// Newer keeps records modified strictly after it (when HasNewer);
	// Older keeps records modified strictly before it (when HasOlder).
	Newer, Older       api.Stamp
	HasNewer, HasOlder bool
	// Sort is the order.
	Sort Sort
	// Full asks for whole records; otherwise only ids are returned (a
	// store then only needs ID, Modified and the sort keys).
	Full bool
	// Limit is the page size: at most this many records are returned. The
	// handler always sets it (the client's limit capped by
	// Config.MaxGetRecords); 0 returns no record but still reports
	// whether any match.
	Limit int
	// HasLimit records whether the client gave a limit.
	HasLimit bool
	// After, when set, resumes the listing strictly after this position
	// in the Sort order (from an offset token).
	After *Position
}

// MaxIDs is the most ids an ids= parameter may list.
const MaxIDs = 100

// Position is a place in a collection's order: the sort keys of a record.
// Only the keys of the order it is used with matter (Modified and ID for
// the time orders, SortIndex, HasSortIndex and ID for SortIndex).
type Position struct {
	Modified     api.Stamp
	SortIndex    int64
	HasSortIndex bool
	ID           string
}

// PositionOf returns the position of a record.
func PositionOf(b *BSO) Position {
	return Position{Modified: b.Modified, SortIndex: b.SortIndex, HasSortIndex: b.Has&FieldSortIndex != 0, ID: b.ID}
}

// Compare orders two positions under sort s: negative when a comes first,
// zero when they are the same record.
func Compare(s Sort, a, b *Position) int {
	switch s {
	case SortOldest:
		if a.Modified != b.Modified {
			return cmp.Compare(int64(a.Modified), int64(b.Modified))
		}
		return strings.Compare(a.ID, b.ID)
	case SortIndex:
		if a.HasSortIndex != b.HasSortIndex {
			if a.HasSortIndex {
				return -1
			}
			return 1
		}
		if a.HasSortIndex && a.SortIndex != b.SortIndex {
			return cmp.Compare(b.SortIndex, a.SortIndex)
		}
		return strings.Compare(b.ID, a.ID)
	default:
		if a.Modified != b.Modified {
			return cmp.Compare(int64(b.Modified), int64(a.Modified))
		}
		return strings.Compare(b.ID, a.ID)
	}
}

// Matches reports whether a live record is selected by q's filters (ids,
// newer, older) and lies after q.After. It is the reference a Store's
// selection must agree with.
func (q *Query) Matches(b *BSO) bool {
	if q.IDs != nil {
		found := false
		for _, id := range q.IDs {
			if id == b.ID {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if q.HasNewer && b.Modified <= q.Newer {
		return false
	}
	if q.HasOlder && b.Modified >= q.Older {
		return false
	}
	if q.After != nil {
		p := PositionOf(b)
		if Compare(q.Sort, &p, q.After) <= 0 {
			return false
		}
	}
	return true
}

// ErrBadQuery is wrapped by the errors of ParseQuery and of the token
// decoders: the request gets 400.
var ErrBadQuery = errors.New("sync15: invalid query")

// ParseQuery parses the parameters of GET storage/{coll}: ids (comma
// separated, at most MaxIDs, each a valid id, spaces around commas
// trimmed), newer and older (non-negative decimal seconds), full (present
// = true), limit (a non-negative integer below 2^32), offset (a token from
// X-Weave-Next-Offset, for the same sort) and sort (newest, oldest or
// index). A parameter given twice or out of its rules gives an error
// wrapping ErrBadQuery. Other parameters are ignored. Limit is left for
// the handler to cap; with no limit, Limit is 0 and HasLimit false.
func ParseQuery(v url.Values) (*Query, error) {
	q := &Query{}
	get := func(k string) (string, bool, error) {
		vs, ok := v[k]
		if !ok {
			return "", false, nil
		}
		if len(vs) != 1 {
			return "", false, fmt.Errorf("%w: %s given %d times", ErrBadQuery, k, len(vs))
		}
		return vs[0], true, nil
	}
	var err error
	if s, ok, e := get("ids"); e != nil {
		return nil, e
	} else if ok {
		if q.IDs, err = ParseIDs(s); err != nil {
			return nil, err
		}
	}
	for _, p := range []struct {
		name string
		dst  *api.Stamp
		has  *bool
	}{{"newer", &q.Newer, &q.HasNewer}, {"older", &q.Older, &q.HasOlder}} {
		s, ok, e := get(p.name)
		if e != nil {
			return nil, e
		}
		if !ok {
			continue
		}
		ts, err := ParseTimestamp(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s=%q", ErrBadQuery, p.name, s)
		}
		*p.dst, *p.has = ts, true
	}
	if _, ok, e := get("full"); e != nil {
		return nil, e
	} else {
		q.Full = ok
	}
	if s, ok, e := get("limit"); e != nil {
		return nil, e
	} else if ok {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || strings.TrimLeft(s, "0123456789") != "" {
			return nil, fmt.Errorf("%w: limit=%q", ErrBadQuery, s)
		}
		q.Limit, q.HasLimit = int(n), true
	}
	if s, ok, e := get("sort"); e != nil {
		return nil, e
	} else if ok {
		switch s {
		case "newest":
			q.Sort = SortNewest
		case "oldest":
			q.Sort = SortOldest
		case "index":
			q.Sort = SortIndex
		default:
			return nil, fmt.Errorf("%w: sort=%q", ErrBadQuery, s)
		}
	}
	if s, ok, e := get("offset"); e != nil {
		return nil, e
	} else if ok {
		tok, err := DecodeOffset(s)
		if err != nil {
			return nil, err
		}
		if tok.Sort != q.Sort {
			return nil, fmt.Errorf("%w: offset for sort %q used with sort %q", ErrBadQuery, tok.Sort, q.Sort)
		}
		if tok.Position != nil && q.Sort != SortIndex {
			m := tok.Position.Modified
			if q.HasNewer && m < q.Newer || q.HasOlder && m > q.Older {
				return nil, fmt.Errorf("%w: offset outside newer/older", ErrBadQuery)
			}
		}
		q.After = tok.Position
	}
	return q, nil
}

// ParseIDs parses an ids= value: comma-separated valid ids (spaces around
// each trimmed), 1 to MaxIDs of them.
func ParseIDs(s string) ([]string, error) {
	parts := strings.Split(s, ",")
	if len(parts) > MaxIDs {
		return nil, fmt.Errorf("%w: more than %d ids", ErrBadQuery, MaxIDs)
	}
	for i, p := range parts {
		p = strings.Trim(p, " ")
		if !ValidID(p) {
			return nil, fmt.Errorf("%w: invalid id %q", ErrBadQuery, p)
		}
		parts[i] = p
	}
	return parts, nil
}

// ParseTimestamp parses a client timestamp (decimal seconds, rounded to
// centiseconds) that must not be negative.
func ParseTimestamp(s string) (api.Stamp, error) {
	ts, err := api.ParseStamp(s)
	if err != nil || ts < 0 || strings.HasPrefix(strings.TrimSpace(s), "-") {
		return 0, fmt.Errorf("%w: timestamp %q", ErrBadQuery, s)
	}
	return ts, nil
}

// Offset tokens.
//
// X-Weave-Next-Offset carries the position of the last record of the page
// (or "the start", after a limit=0 page), so that the next request resumes
// strictly after it: keyset pagination. The token is
//
//	base64url(version=1 | sort | flags | position)
//
// without padding, where flags bit 0 says a position follows and bit 1
// that it has a sortindex; the position is the 8-byte big-endian modified
// time and the id (1-byte length, then the id) for the time orders, and
// the 8-byte sortindex (when flagged) and the id for SortIndex. It is at
// most 3+8+1+64 bytes (102 characters).
//
// A token is not a secret and not signed: it only names a place in the
// order, so a forged one makes the server do exactly the work of a fresh
// query with the same limit, never more (there is no numeric skip to
// inflate, unlike the "timestamp:count" tokens of Mozilla's servers). It
// is validated strictly: version, a sort equal to the request's, flags,
// bounds of every field, a valid id, no trailing bytes, canonical
// base64url.

const offsetVersion = 1

// maxOffsetLen bounds an offset parameter before decoding.
const maxOffsetLen = 128

var b64 = base64.RawURLEncoding.Strict()

// decodeB64 decodes s strictly: encoding/base64 skips '\r' and '\n' even
// in strict mode, so two texts would name one token; they are refused.
func decodeB64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, base64.CorruptInputError(strings.IndexAny(s, "\r\n"))
	}
	return b64.DecodeString(s)
}

// OffsetToken is a decoded offset: the order it belongs to and the
// position to resume after (nil: from the start).
type OffsetToken struct {
	Sort     Sort
	Position *Position
}

// EncodeOffset returns the X-Weave-Next-Offset value for resuming sort s
// after p (from the start when p is nil).
func EncodeOffset(s Sort, p *Position) string {
	b := make([]byte, 0, 3+8+1+MaxIDLen)
	b = append(b, offsetVersion, byte(s), 0)
	if p != nil {
		b[2] = 1
		if s == SortIndex {
			if p.HasSortIndex {
				b[2] |= 2
				b = binary.BigEndian.AppendUint64(b, uint64(p.SortIndex))
			}
		} else {
			b = binary.BigEndian.AppendUint64(b, uint64(p.Modified))
		}
		b = append(b, byte(len(p.ID)))
		b = append(b, p.ID...)
	}
	return b64.EncodeToString(b)
}

// DecodeOffset parses an offset token. Any deviation from the format gives
// an error wrapping ErrBadQuery.
func DecodeOffset(s string) (OffsetToken, error) {
	bad := func(why string) (OffsetToken, error) {
		return OffsetToken{}, fmt.Errorf("%w: offset: %s", ErrBadQuery, why)
	}
	if len(s) > maxOffsetLen {
		return bad("too long")
	}
	b, err := decodeB64(s)
	if err != nil {
		return bad("encoding")
	}
	if len(b) < 3 || b[0] != offsetVersion {
		return bad("version")
	}
	t := OffsetToken{Sort: Sort(b[1])}
	flags := b[2]
	if t.Sort >= sortCount || flags&^3 != 0 || flags&2 != 0 && (t.Sort != SortIndex || flags&1 == 0) {
		return bad("header")
	}
	b = b[3:]
	if flags&1 == 0 {
		if len(b) != 0 {
			return bad("trailing bytes")
		}
		return t, nil
	}
	p := &Position{}
	if t.Sort == SortIndex {
		if flags&2 != 0 {
			if len(b) < 8 {
				return bad("short")
			}
			p.SortIndex, p.HasSortIndex = int64(binary.BigEndian.Uint64(b)), true
			if p.SortIndex < MinSortIndex || p.SortIndex > MaxSortIndex {
				return bad("sortindex")
			}
			b = b[8:]
		}
	} else {
		if len(b) < 8 {
			return bad("short")
		}
		m := int64(binary.BigEndian.Uint64(b))
		if m < 0 || m > maxStamp {
			return bad("modified")
		}
		p.Modified = api.Stamp(m)
		b = b[8:]
	}
	if len(b) < 1 || int(b[0]) != len(b)-1 {
		return bad("id length")
	}
	p.ID = string(b[1:])
	if !ValidID(p.ID) {
		return bad("id")
	}
	t.Position = p
	return t, nil
}

// maxStamp bounds timestamps in tokens: year 9999 in centiseconds.
const maxStamp = 253402300799_99
