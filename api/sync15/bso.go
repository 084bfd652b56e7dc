package sync15

import (
	"errors"
	"strconv"
	"strings"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/internal/jsonscan"
)

// Limits of a BSO (the storage API 1.5 document, and syncstorage-rs).
const (
	// MaxIDLen is the longest BSO id; ids are 1 to 64 printable ASCII
	// characters (space through '~').
	MaxIDLen = 64
	// MinSortIndex and MaxSortIndex bound sortindex ("integer, 9 digits").
	MinSortIndex = -999_999_999
	MaxSortIndex = 999_999_999
	// MaxTTL is the largest ttl in seconds ("positive, 9 digits").
	MaxTTL = 999_999_999
	// MaxCollectionLen is the longest collection name; names are 1 to 32
	// characters of [a-zA-Z0-9._-].
	MaxCollectionLen = 32
)

// Field is a bit set of BSO fields.
type Field uint8

// The fields a client can set.
const (
	FieldPayload Field = 1 << iota
	FieldSortIndex
	FieldTTL
)

// BSO is one Basic Storage Object. Decoded from a client, Has says which
// fields the body carried (a null counts as absent, as Mozilla's servers
// treat it). Read from a store, Has has FieldPayload set (a stored record
// always has a payload, "" by default) and FieldSortIndex when the record
// has a sortindex.
type BSO struct {
	ID string
	// Modified is the server time of the record's last write that carried
	// a payload or sortindex (or of the batch commit that wrote it).
	Modified  api.Stamp
	Has       Field
	SortIndex int64
	Payload   string
	// TTL is the requested lifetime in seconds (input only): the record
	// expires TTL seconds after the write's timestamp. It is never
	// returned.
	TTL int64
	// Plain is a store's hint on the records it reads, as api.WBO.Plain:
	// the id and payload it marks (api.PlainID, api.PlainPayload) are
	// printable ASCII without '"' and '\\', so AppendBSOJSON copies them
	// between quotes without scanning them. Zero is always correct;
	// decoders never set it.
	Plain api.Plain
}

// ValidID reports whether s is a valid BSO id: 1 to MaxIDLen printable
// ASCII characters.
func ValidID(s string) bool {
	if s == "" || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ValidCollection reports whether s is a valid collection name.
func ValidCollection(s string) bool {
	if s == "" || len(s) > MaxCollectionLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// AppendBSOJSON appends b as the storage API writes a record:
// {"id":..,"modified":..,"payload":..} plus "sortindex" when the record has
// one. The ttl is never written.
func AppendBSOJSON(dst []byte, b *BSO) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONStr(dst, b.ID, b.Plain&api.PlainID != 0)
	dst = append(dst, `,"modified":`...)
	dst = b.Modified.AppendTo(dst)
	dst = append(dst, `,"payload":`...)
	dst = appendJSONStr(dst, b.Payload, b.Plain&api.PlainPayload != 0)
	if b.Has&FieldSortIndex != 0 {
		dst = append(dst, `,"sortindex":`...)
		dst = strconv.AppendInt(dst, b.SortIndex, 10)
	}
	return append(dst, '}')
}

// appendJSONStr appends s as a JSON string, copied between quotes when
// plain says it needs no escaping.
func appendJSONStr(dst []byte, s string, plain bool) []byte {
	if !plain {
		return api.AppendJSONString(dst, s)
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// Decoding errors of whole request bodies.
var (
	// ErrMalformedJSON: the body is not well-formed JSON (or, for
	// application/newlines, a line is not), or holds invalid UTF-8 or a
	// lone surrogate escape. Weave code 6.
	ErrMalformedJSON = errors.New("sync15: malformed JSON")
	// ErrInvalidBSOs: the body is JSON but not a list of BSOs: not an
	// array, an element that is not an object, an element without a
	// string id, or two elements with the same id. Weave code 8.
	ErrInvalidBSOs = errors.New("sync15: not a list of BSOs")
)

// InvalidBSO is a BSO validation failure; its text is the reason the
// storage API reports for the record (in the "failed" map of a POST, or
// behind a 400 with code 8 for a PUT).
type InvalidBSO string

// Error returns the reason.
func (e InvalidBSO) Error() string { return string(e) }

// The validation failures, with their wire strings (as the Python server
// words them).
const (
	ErrInvalidID        InvalidBSO = "invalid id"
	ErrInvalidSortIndex InvalidBSO = "invalid sortindex"
	ErrInvalidTTL       InvalidBSO = "invalid ttl"
	ErrPayloadNotString InvalidBSO = "payload not a string"
	ErrPayloadTooLarge  InvalidBSO = "payload too large"
	ErrNotAnObject      InvalidBSO = "invalid bso"
	// ErrRetryBSO and ErrRetryBytes mark records of a POST beyond
	// max_post_records and max_post_bytes: the client sends them again.
	ErrRetryBSO   InvalidBSO = "retry bso"
	ErrRetryBytes InvalidBSO = "retry bytes"
)

// DecodeBSO decodes and validates the body of a PUT: one JSON object with
// the fields id, sortindex, payload and ttl, and optionally modified and
// collection (ignored). It returns ErrMalformedJSON for text that is not
// one well-formed JSON value, ErrNotAnObject for another value, and
// otherwise the first failing check as an InvalidBSO, in the Python
// server's order: unknown or duplicated field, id, ttl, sortindex, payload
// type, payload size (over maxPayload bytes). An id in the body is checked
// but the caller uses the one in the URL.
func DecodeBSO(body string, maxPayload int64) (BSO, error) {
	d := newScanner(body)
	d.WS()
	if d.I >= len(d.S) {
		return BSO{}, ErrMalformedJSON
	}
	var f rawBSO
	var ok bool
	isObj := d.Peek() == '{'
	if isObj {
		ok = d.object(&f)
	} else {
		ok = d.Skip()
	}
	if !ok || !d.End() {
		return BSO{}, ErrMalformedJSON
	}
	if !isObj {
		return BSO{}, ErrNotAnObject
	}
	b, reason := f.validate(maxPayload)
	if reason != nil {
		return BSO{}, reason
	}
	return b, nil
}

// Entry is one record of a decoded POST body: a valid BSO (Err nil) or
// the reason it is refused, with BSO.ID set to the id it is reported
// under.
type Entry struct {
	BSO BSO
	Err error
}

// DecodeBSOs decodes the body of a POST: a JSON array of BSO objects, or
// with newlines set the application/newlines form (one JSON object per
// line, lines ended by "\n" or "\r\n"; the line after the last "\n" may be
// empty, no other may be). Each element is validated as DecodeBSO does;
// failures are per element. The whole body is refused with
// ErrMalformedJSON or ErrInvalidBSOs (see there). The per-request limits
// (max_post_records, max_post_bytes) are not applied here.
func DecodeBSOs(body string, newlines bool, maxPayload int64) ([]Entry, error) {
	var out []Entry
	seen := make(map[string]struct{})
	add := func(f *rawBSO) error {
		if f.id.Kind != jsonscan.String {
			return ErrInvalidBSOs
		}
		if _, dup := seen[f.id.S]; dup {
			return ErrInvalidBSOs
		}
		seen[f.id.S] = struct{}{}
		b, reason := f.validate(maxPayload)
		if reason != nil {
			out = append(out, Entry{BSO: BSO{ID: f.id.S}, Err: reason})
		} else {
			out = append(out, Entry{BSO: b})
		}
		return nil
	}
	if newlines {
		out = make([]Entry, 0, strings.Count(body, "\n")+1)
		rest := body
		for rest != "" {
			line, tail, _ := strings.Cut(rest, "\n")
			rest = tail
			line = strings.TrimSuffix(line, "\r")
			d := newScanner(line)
			d.WS()
			if d.I >= len(d.S) {
				return nil, ErrMalformedJSON
			}
			var f rawBSO
			isObj := d.Peek() == '{'
			var ok bool
			if isObj {
				ok = d.object(&f)
			} else {
				ok = d.Skip()
			}
			if !ok || !d.End() {
				return nil, ErrMalformedJSON
			}
			if !isObj {
				return nil, ErrInvalidBSOs
			}
			if err := add(&f); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	d := newScanner(body)
	d.WS()
	if d.I >= len(d.S) {
		return nil, ErrMalformedJSON
	}
	if d.Peek() != '[' {
		if !d.Skip() || !d.End() {
			return nil, ErrMalformedJSON
		}
		return nil, ErrInvalidBSOs
	}
	out = make([]Entry, 0, min(128, len(body)/32+1))
	if !d.Open(']') {
		for {
			d.WS()
			var f rawBSO
			if d.Peek() != '{' {
				// Keep scanning so that malformed JSON wins over "not a BSO".
				if !d.Skip() {
					return nil, ErrMalformedJSON
				}
				f.notObject = true
			} else if !d.object(&f) {
				return nil, ErrMalformedJSON
			}
			if f.notObject {
				return nil, errNotObjectElem(&d)
			}
			if err := add(&f); err != nil {
				// Scan the rest: malformed JSON is reported first.
				if !d.skipRestOfArray() {
					return nil, ErrMalformedJSON
				}
				return nil, err
			}
			more, ok := d.Next(']')
			if !ok {
				return nil, ErrMalformedJSON
			}
			if !more {
				break
			}
		}
	}
	if !d.End() {
		return nil, ErrMalformedJSON
	}
	return out, nil
}

// errNotObjectElem reports an element that is not an object, unless the
// rest of the body is malformed.
func errNotObjectElem(d *scanner) error {
	if !d.skipRestOfArray() {
		return ErrMalformedJSON
	}
	return ErrInvalidBSOs
}

// rawBSO holds the members of one JSON object.
type rawBSO struct {
	id, sortindex, payload, ttl jsonscan.Value
	seen                        uint8 // known members present, to find duplicates
	unknown, dup                string
	notObject                   bool
}

// validate applies the 1.5 checks in the Python server's order.
func (f *rawBSO) validate(maxPayload int64) (BSO, error) {
	var b BSO
	if f.unknown != "" {
		return b, InvalidBSO("unknown field " + strconv.Quote(f.unknown))
	}
	if f.dup != "" {
		return b, InvalidBSO("duplicate field " + strconv.Quote(f.dup))
	}
	switch f.id.Kind {
	case jsonscan.Null:
	case jsonscan.String:
		if !ValidID(f.id.S) {
			return b, ErrInvalidID
		}
		b.ID = f.id.S
	default:
		return b, ErrInvalidID
	}
	if f.ttl.Kind != jsonscan.Null {
		n, ok := intLiteral(f.ttl)
		if !ok || n < 0 || n > MaxTTL {
			return BSO{}, ErrInvalidTTL
		}
		b.TTL = n
		b.Has |= FieldTTL
	}
	if f.sortindex.Kind != jsonscan.Null {
		n, ok := intLiteral(f.sortindex)
		if !ok || n < MinSortIndex || n > MaxSortIndex {
			return BSO{}, ErrInvalidSortIndex
		}
		b.SortIndex = n
		b.Has |= FieldSortIndex
	}
	if f.payload.Kind != jsonscan.Null {
		if f.payload.Kind != jsonscan.String {
			return BSO{}, ErrPayloadNotString
		}
		if int64(len(f.payload.S)) > maxPayload {
			return BSO{}, ErrPayloadTooLarge
		}
		b.Payload = f.payload.S
		b.Has |= FieldPayload
	}
	return b, nil
}

// intLiteral reads a JSON number that is written as an integer (no
// fraction or exponent; "-0" is 0) within 10 digits.
func intLiteral(v jsonscan.Value) (int64, bool) {
	if v.Kind != jsonscan.Number {
		return 0, false
	}
	s := strings.TrimPrefix(v.S, "-")
	if len(s) == 0 || len(s) > 10 || strings.ContainsAny(s, ".eE") {
		return 0, false
	}
	n, err := strconv.ParseInt(v.S, 10, 64)
	return n, err == nil
}

// scanner decodes BSOs with the shared scanner, strictly: invalid UTF-8
// and escapes of lone surrogates are malformed JSON, and values nest at
// most maxDepth levels. Decoded strings without escapes share the input's
// memory.
type scanner struct {
	jsonscan.Scanner
}

// maxDepth bounds the nesting the scanner skips over.
const maxDepth = 512

func newScanner(s string) scanner {
	return scanner{jsonscan.Scanner{S: s, Strict: true, MaxDepth: maxDepth}}
}

// object decodes the object at d.I ('{') into f.
func (d *scanner) object(f *rawBSO) bool {
	if d.Open('}') {
		return true
	}
	for {
		key, v, ok := d.Member()
		if !ok {
			return false
		}
		var bit uint8
		var dst *jsonscan.Value
		switch key {
		case "id":
			bit, dst = 1, &f.id
		case "sortindex":
			bit, dst = 2, &f.sortindex
		case "payload":
			bit, dst = 4, &f.payload
		case "ttl":
			bit, dst = 8, &f.ttl
		case "modified":
			bit = 16
		case "collection":
			bit = 32
		default:
			if f.unknown == "" {
				f.unknown = key
			}
		}
		if bit != 0 {
			if f.seen&bit != 0 && f.dup == "" {
				f.dup = key
			}
			f.seen |= bit
			if dst != nil {
				*dst = v
			}
		}
		more, ok := d.Next('}')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// skipRestOfArray scans the rest of an array whose opening bracket was
// consumed, after an element: (, value)* ] and end of input.
func (d *scanner) skipRestOfArray() bool {
	for {
		more, ok := d.Next(']')
		if !ok {
			return false
		}
		if !more {
			return d.End()
		}
		if !d.Skip() {
			return false
		}
	}
}
