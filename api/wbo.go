package api

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/hce-sync/hce/api/internal/jsonscan"
)

// WBOError is a WBO validation failure. Its text is exactly the reason the
// protocol reports for the record in the "failed" map of a batch response.
type WBOError string

// Error returns the protocol's reason string.
func (e WBOError) Error() string { return string(e) }

// The validation failures of weave-api.md 1.1 and 2.5, with their exact
// wire strings.
const (
	ErrInvalidWBO           WBOError = "invalid wbo"
	ErrInvalidID            WBOError = "invalid id"
	ErrInvalidParentID      WBOError = "invalid parentid"
	ErrInvalidPredecessorID WBOError = "invalid predecessorid"
	ErrInvalidTTL           WBOError = "invalid ttl"
	ErrInvalidSortIndex     WBOError = "invalid sortindex"
	ErrPayloadNotString     WBOError = "payload not a string"
	ErrPayloadTooLarge      WBOError = "payload too large"
	// ErrRetryWBO and ErrRetryBytes mark batch records beyond the batch
	// limits (BatchMaxCount, BatchMaxBytes); the client sends them again.
	ErrRetryWBO   WBOError = "retry wbo"
	ErrRetryBytes WBOError = "retry bytes"
)

// ErrMalformedJSON is returned by the decoders when the input is not a
// single well-formed JSON text (Weave code 6).
var ErrMalformedJSON = errors.New("api: malformed JSON")

// DecodeWBO decodes and validates one WBO from a JSON object with the 1.1
// rules (weave-api.md 1.1). It returns ErrMalformedJSON when raw is not JSON,
// ErrInvalidWBO when it is not an object or holds a list or object value,
// and otherwise the first failing check as a WBOError, in the protocol's
// order: parentid, id, predecessorid, ttl, sortindex, payload type, payload
// size. Unknown fields are dropped and null values count as absent. An
// absent id is not an error here (w.ID is then empty).
func DecodeWBO(raw []byte) (WBO, error) {
	return decodeWBOString(string(raw))
}

// decodeWBOString is DecodeWBO over a string; the decoded strings may share
// s's memory.
func decodeWBOString(s string) (WBO, error) {
	d := decoder{jsonscan.Scanner{S: s}}
	d.WS()
	if d.I >= len(d.S) {
		return WBO{}, ErrMalformedJSON
	}
	var (
		f  wboFields
		ok bool
	)
	if d.Peek() == '{' {
		ok = d.object(&f)
	} else {
		ok = d.Skip()
		f.nested = true
	}
	if !ok || !d.End() {
		return WBO{}, ErrMalformedJSON
	}
	if f.nested {
		return WBO{}, ErrInvalidWBO
	}
	return f.validate()
}

// BatchEntry is one element of a decoded POST body: either a valid WBO
// (Err nil) or the reason it was refused; for a refused element WBO.ID is
// the key it gets in the "failed" map ("" when it had no usable id) and
// the other fields are empty.
type BatchEntry struct {
	WBO WBO
	Err error
}

// DecodeBatch decodes a JSON array of WBOs, validating each element as
// DecodeWBO does. An element that is not an object or has a list/object
// value gets ErrInvalidWBO, one with no id gets ErrInvalidID (both with an
// empty WBO.ID). It returns ErrMalformedJSON when raw is not JSON and
// ErrNotArray when it is JSON but not an array. The batch limits are not
// applied here.
func DecodeBatch(raw []byte) ([]BatchEntry, error) {
	return decodeBatchString(string(raw))
}

// decodeBatchString is DecodeBatch over a string; the decoded strings may
// share s's memory.
func decodeBatchString(s string) ([]BatchEntry, error) {
	d := decoder{jsonscan.Scanner{S: s}}
	d.WS()
	if d.I >= len(d.S) {
		return nil, ErrMalformedJSON
	}
	if d.Peek() != '[' {
		if !d.Skip() || !d.End() {
			return nil, ErrMalformedJSON
		}
		return nil, ErrNotArray
	}
	out, ok := d.batch()
	if !ok || !d.End() {
		return nil, ErrMalformedJSON
	}
	return out, nil
}

// ErrNotArray is returned by DecodeBatch for well-formed JSON that is not an
// array.
var ErrNotArray = errors.New("api: JSON value is not an array")

// batch decodes an array at d.I (which is '[').
func (d *decoder) batch() ([]BatchEntry, bool) {
	if d.Open(']') {
		return []BatchEntry{}, true
	}
	// Count elements cheaply would need a second scan; guess from size.
	out := make([]BatchEntry, 0, min(BatchMaxCount+8, len(d.S)/64+1))
	for {
		d.WS()
		var e BatchEntry
		if d.Peek() == '{' {
			var f wboFields
			if !d.object(&f) {
				return nil, false
			}
			switch {
			case f.nested:
				e.Err = ErrInvalidWBO
			case f.id.Kind == jsonscan.Null:
				e.Err = ErrInvalidID
			default:
				e.WBO, e.Err = f.validate()
				if e.Err != nil {
					e.WBO = WBO{ID: f.idKey()}
				}
			}
		} else {
			if !d.Skip() {
				return nil, false
			}
			e.Err = ErrInvalidWBO
		}
		out = append(out, e)
		more, ok := d.Next(']')
		if !ok {
			return nil, false
		}
		if !more {
			return out, true
		}
	}
}

// wboFields holds the raw known fields of one JSON object.
type wboFields struct {
	id, sortindex, payload, parentid, predecessorid, ttl jsonscan.Value
	// nested: the object has an object or array value, or is not an
	// object at all.
	nested bool
}

// idKey is the id under which a failed record is reported.
func (f *wboFields) idKey() string {
	if f.id.Kind == jsonscan.String || f.id.Kind == jsonscan.Number {
		return f.id.S
	}
	return ""
}

// validate applies the 1.1 checks in the reference server's order.
func (f *wboFields) validate() (WBO, error) {
	var w WBO
	var ok bool
	if f.parentid.Kind != jsonscan.Null {
		if w.ParentID, ok = idString(f.parentid); !ok {
			return WBO{}, ErrInvalidParentID
		}
		w.Has |= FieldParentID
	}
	if f.id.Kind != jsonscan.Null {
		if w.ID, ok = idString(f.id); !ok {
			return WBO{}, ErrInvalidID
		}
	}
	if f.predecessorid.Kind != jsonscan.Null {
		if w.PredecessorID, ok = idString(f.predecessorid); !ok {
			return WBO{}, ErrInvalidPredecessorID
		}
		w.Has |= FieldPredecessorID
	}
	if f.ttl.Kind != jsonscan.Null {
		if w.TTL, ok = parseTTL(f.ttl); !ok {
			return WBO{}, ErrInvalidTTL
		}
		w.Has |= FieldTTL
	}
	if f.sortindex.Kind != jsonscan.Null {
		if w.SortIndex, ok = parseSortIndex(f.sortindex); !ok {
			return WBO{}, ErrInvalidSortIndex
		}
		w.Has |= FieldSortIndex
	}
	if f.payload.Kind != jsonscan.Null {
		if f.payload.Kind != jsonscan.String {
			return WBO{}, ErrPayloadNotString
		}
		if len(f.payload.S) > MaxPayloadBytes {
			return WBO{}, ErrPayloadTooLarge
		}
		if !utf8.ValidString(f.payload.S) {
			// Raw invalid UTF-8 inside a JSON string: the payload could
			// not be returned byte for byte, so it is refused.
			return WBO{}, ErrPayloadNotString
		}
		w.Payload = f.payload.S
		w.Has |= FieldPayload
	}
	return w, nil
}

func idString(v jsonscan.Value) (string, bool) {
	if v.Kind != jsonscan.String && v.Kind != jsonscan.Number {
		return "", false
	}
	// An id that is not valid UTF-8 could not be sent back unchanged.
	return v.S, len(v.S) <= MaxIDBytes && utf8.ValidString(v.S)
}

// numericText reports whether s only holds characters of a decimal number
// (so that strconv's hex, underscore, inf and nan forms are refused).
func numericText(s string) bool {
	if s == "" {
		return false
	}
	digit := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digit = true
		case c == '+', c == '-', c == '.', c == 'e', c == 'E':
		default:
			return false
		}
	}
	return digit
}

func isIntText(s string) bool {
	return !strings.ContainsAny(s, ".eE")
}

// parseSortIndex accepts an integer, a float (truncated) or a numeric string.
func parseSortIndex(v jsonscan.Value) (int64, bool) {
	var s string
	switch v.Kind {
	case jsonscan.Number:
		s = v.S
	case jsonscan.String:
		s = strings.TrimSpace(v.S)
	default:
		return 0, false
	}
	if !numericText(s) {
		return 0, false
	}
	if isIntText(s) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < MinSortIndex || n > MaxSortIndex {
			return 0, false
		}
		return n, true
	}
	fl, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(fl) || math.IsInf(fl, 0) {
		return 0, false
	}
	fl = math.Trunc(fl)
	if fl < MinSortIndex || fl > MaxSortIndex {
		return 0, false
	}
	return int64(fl), true
}

// parseTTL accepts a number (truncated) or an integer string in 0..MaxTTLSeconds.
func parseTTL(v jsonscan.Value) (int64, bool) {
	var s string
	switch v.Kind {
	case jsonscan.Number:
		s = v.S
	case jsonscan.String:
		s = strings.TrimSpace(v.S)
		if !numericText(s) || !isIntText(s) {
			return 0, false
		}
	default:
		return 0, false
	}
	if !numericText(s) {
		return 0, false
	}
	if isIntText(s) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > MaxTTLSeconds {
			return 0, false
		}
		return n, true
	}
	fl, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(fl) || math.IsInf(fl, 0) {
		return 0, false
	}
	fl = math.Trunc(fl)
	if fl < 0 || fl > MaxTTLSeconds {
		return 0, false
	}
	return int64(fl), true
}

// decoder decodes WBOs with the shared scanner, in encoding/json's manner
// for strings (invalid UTF-8 and lone surrogates become U+FFFD) and with
// no nesting limit. Decoded strings without escapes share the input's
// memory.
type decoder struct {
	jsonscan.Scanner
}

// object decodes an object at d.I ('{') into f.
func (d *decoder) object(f *wboFields) bool {
	if d.Open('}') {
		return true
	}
	for {
		key, v, ok := d.Member()
		if !ok {
			return false
		}
		if v.Kind == jsonscan.Complex {
			f.nested = true
		}
		switch key {
		case "id":
			f.id = v
		case "payload":
			f.payload = v
		case "sortindex":
			f.sortindex = v
		case "parentid":
			f.parentid = v
		case "predecessorid":
			f.predecessorid = v
		case "ttl":
			f.ttl = v
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

// AppendWBOJSON appends w as a JSON object with the output fields of
// weave-api.md 1.1 in the order id, modified, payload, sortindex, parentid,
// predecessorid. Fields not in w.Has and a zero Modified are omitted.
// Strings that w.Plain marks are copied between quotes unscanned.
func AppendWBOJSON(b []byte, w WBO) []byte { return appendWBOJSON(b, &w, nil) }

// stampMemo keeps the last stamp a list wrote and its text: the records
// of one write share their modified time.
type stampMemo struct {
	s   Stamp
	n   int
	txt [24]byte
}

// appendWBOJSON is AppendWBOJSON without copying the record (lists append
// a hundred per request), with an optional memo of the last stamp.
func appendWBOJSON(b []byte, w *WBO, m *stampMemo) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONStr(b, w.ID, w.Plain&PlainID != 0)
	if w.Modified != 0 {
		b = append(b, `,"modified":`...)
		switch {
		case m == nil:
			b = w.Modified.AppendTo(b)
		case m.n > 0 && m.s == w.Modified:
			b = append(b, m.txt[:m.n]...)
		default:
			at := len(b)
			b = w.Modified.AppendTo(b)
			m.s, m.n = w.Modified, copy(m.txt[:], b[at:])
		}
	}
	if w.Has&FieldPayload != 0 {
		b = append(b, `,"payload":`...)
		b = appendJSONStr(b, w.Payload, w.Plain&PlainPayload != 0)
	}
	if w.Has&FieldSortIndex != 0 {
		b = append(b, `,"sortindex":`...)
		b = appendInt(b, w.SortIndex)
	}
	if w.Has&FieldParentID != 0 {
		b = append(b, `,"parentid":`...)
		b = appendJSONStr(b, w.ParentID, w.Plain&PlainParentID != 0)
	}
	if w.Has&FieldPredecessorID != 0 {
		b = append(b, `,"predecessorid":`...)
		b = appendJSONStr(b, w.PredecessorID, w.Plain&PlainPredecessorID != 0)
	}
	return append(b, '}')
}

// appendInt is strconv.AppendInt in base 10, by hand below 1000 (most
// sort indexes).
func appendInt(b []byte, v int64) []byte {
	switch {
	case v < 0 || v >= 1000:
		return strconv.AppendInt(b, v, 10)
	case v < 10:
		return append(b, byte('0'+v))
	case v < 100:
		return append(b, byte('0'+v/10), byte('0'+v%10))
	}
	return append(b, byte('0'+v/100), byte('0'+v/10%10), byte('0'+v%10))
}

// appendJSONStr appends s as a JSON string; plain says it needs no
// escaping (a store's hint, see WBO.Plain), so it is copied between quotes.
func appendJSONStr(b []byte, s string, plain bool) []byte {
	if !plain {
		return AppendJSONString(b, s)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// safeASCII marks the ASCII bytes that need no escape in a JSON string.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string literal. Control characters,
// '"' and '\\' are escaped, U+2028 and U+2029 are written as \u2028 and
// \u2029, and invalid UTF-8 becomes \ufffd, as encoding/json does (HTML
// characters are not escaped).
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Skip 8 plain ASCII bytes at a time.
		for i+8 <= len(s) && plain8(s[i:]) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const (
	lo8 = 0x0101010101010101
	hi8 = 0x8080808080808080
)

// plain8 reports whether the first 8 bytes of s (len(s) >= 8) are ASCII
// that needs no escape in a JSON string: no control character, '"', '\\'
// or byte >= 0x80.
func plain8(s string) bool {
	x := binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s), 8))
	quote := x ^ (lo8 * '"')
	bslash := x ^ (lo8 * '\\')
	m := (x - lo8*0x20) | (quote - lo8) | (bslash - lo8) | x
	// A byte of m has its high bit set when the byte of x is < 0x20, equal
	// to '"' or '\\', or >= 0x80 (the subtractions may also flag bytes after
	// one that borrowed, which only sends us to the exact slow path).
	return m&hi8 == 0
}
