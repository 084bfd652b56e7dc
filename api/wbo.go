package api

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
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
	d := decoder{s: s}
	d.ws()
	if d.i >= len(d.s) {
		return WBO{}, ErrMalformedJSON
	}
	var (
		f  wboFields
		ok bool
	)
	if d.s[d.i] == '{' {
		ok = d.object(&f)
	} else {
		ok = d.skip()
		f.nested = true
	}
	d.ws()
	if !ok || d.i != len(d.s) {
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
	d := decoder{s: s}
	d.ws()
	if d.i >= len(d.s) {
		return nil, ErrMalformedJSON
	}
	if d.s[d.i] != '[' {
		if !d.skip() {
			return nil, ErrMalformedJSON
		}
		d.ws()
		if d.i != len(d.s) {
			return nil, ErrMalformedJSON
		}
		return nil, ErrNotArray
	}
	out, ok := d.batch()
	d.ws()
	if !ok || d.i != len(d.s) {
		return nil, ErrMalformedJSON
	}
	return out, nil
}

// ErrNotArray is returned by DecodeBatch for well-formed JSON that is not an
// array.
var ErrNotArray = errors.New("api: JSON value is not an array")

// batch decodes an array at d.i (which is '[').
func (d *decoder) batch() ([]BatchEntry, bool) {
	d.i++
	d.ws()
	if d.i < len(d.s) && d.s[d.i] == ']' {
		d.i++
		return []BatchEntry{}, true
	}
	// Count elements cheaply would need a second scan; guess from size.
	out := make([]BatchEntry, 0, min(BatchMaxCount+8, len(d.s)/64+1))
	for {
		d.ws()
		if d.i >= len(d.s) {
			return nil, false
		}
		var e BatchEntry
		if d.s[d.i] == '{' {
			var f wboFields
			if !d.object(&f) {
				return nil, false
			}
			switch {
			case f.nested:
				e.Err = ErrInvalidWBO
			case f.id.kind == kNull:
				e.Err = ErrInvalidID
			default:
				e.WBO, e.Err = f.validate()
				if e.Err != nil {
					e.WBO = WBO{ID: f.idKey()}
				}
			}
		} else {
			if !d.skip() {
				return nil, false
			}
			e.Err = ErrInvalidWBO
		}
		out = append(out, e)
		d.ws()
		if d.i >= len(d.s) {
			return nil, false
		}
		switch d.s[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			return out, true
		default:
			return nil, false
		}
	}
}

// JSON value kinds of a WBO field.
const (
	kNull uint8 = iota // absent or null
	kString
	kNumber
	kBool
	kComplex
)

type jval struct {
	kind uint8
	s    string // decoded string, or the raw number literal
}

// wboFields holds the raw known fields of one JSON object.
type wboFields struct {
	id, sortindex, payload, parentid, predecessorid, ttl jval
	nested                                               bool
}

// idKey is the id under which a failed record is reported.
func (f *wboFields) idKey() string {
	if f.id.kind == kString || f.id.kind == kNumber {
		return f.id.s
	}
	return ""
}

// validate applies the 1.1 checks in the reference server's order.
func (f *wboFields) validate() (WBO, error) {
	var w WBO
	var ok bool
	if f.parentid.kind != kNull {
		if w.ParentID, ok = idString(f.parentid); !ok {
			return WBO{}, ErrInvalidParentID
		}
		w.Has |= FieldParentID
	}
	if f.id.kind != kNull {
		if w.ID, ok = idString(f.id); !ok {
			return WBO{}, ErrInvalidID
		}
	}
	if f.predecessorid.kind != kNull {
		if w.PredecessorID, ok = idString(f.predecessorid); !ok {
			return WBO{}, ErrInvalidPredecessorID
		}
		w.Has |= FieldPredecessorID
	}
	if f.ttl.kind != kNull {
		if w.TTL, ok = parseTTL(f.ttl); !ok {
			return WBO{}, ErrInvalidTTL
		}
		w.Has |= FieldTTL
	}
	if f.sortindex.kind != kNull {
		if w.SortIndex, ok = parseSortIndex(f.sortindex); !ok {
			return WBO{}, ErrInvalidSortIndex
		}
		w.Has |= FieldSortIndex
	}
	if f.payload.kind != kNull {
		if f.payload.kind != kString {
			return WBO{}, ErrPayloadNotString
		}
		if len(f.payload.s) > MaxPayloadBytes {
			return WBO{}, ErrPayloadTooLarge
		}
		if !utf8.ValidString(f.payload.s) {
			// Raw invalid UTF-8 inside a JSON string: the payload could
			// not be returned byte for byte, so it is refused.
			return WBO{}, ErrPayloadNotString
		}
		w.Payload = f.payload.s
		w.Has |= FieldPayload
	}
	return w, nil
}

func idString(v jval) (string, bool) {
	if v.kind != kString && v.kind != kNumber {
		return "", false
	}
	// An id that is not valid UTF-8 could not be sent back unchanged.
	return v.s, len(v.s) <= MaxIDBytes && utf8.ValidString(v.s)
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
func parseSortIndex(v jval) (int64, bool) {
	var s string
	switch v.kind {
	case kNumber:
		s = v.s
	case kString:
		s = strings.TrimSpace(v.s)
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
func parseTTL(v jval) (int64, bool) {
	var s string
	switch v.kind {
	case kNumber:
		s = v.s
	case kString:
		s = strings.TrimSpace(v.s)
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

// decoder is a strict single-pass JSON scanner over a string. Decoded
// strings without escapes are substrings of s (no copy).
type decoder struct {
	s string
	i int
}

func (d *decoder) ws() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// object decodes an object at d.i ('{') into f.
func (d *decoder) object(f *wboFields) bool {
	d.i++
	d.ws()
	if d.i < len(d.s) && d.s[d.i] == '}' {
		d.i++
		return true
	}
	for {
		d.ws()
		if d.i >= len(d.s) || d.s[d.i] != '"' {
			return false
		}
		key, ok := d.str()
		if !ok {
			return false
		}
		d.ws()
		if d.i >= len(d.s) || d.s[d.i] != ':' {
			return false
		}
		d.i++
		d.ws()
		if d.i >= len(d.s) {
			return false
		}
		var v jval
		switch c := d.s[d.i]; {
		case c == '"':
			v.kind = kString
			v.s, ok = d.str()
		case c == '-' || (c >= '0' && c <= '9'):
			v.kind = kNumber
			v.s, ok = d.num()
		case c == 't':
			v.kind = kBool
			ok = d.lit("true")
		case c == 'f':
			v.kind = kBool
			ok = d.lit("false")
		case c == 'n':
			ok = d.lit("null")
		case c == '{' || c == '[':
			v.kind = kComplex
			ok = d.skip()
			f.nested = true
		default:
			ok = false
		}
		if !ok {
			return false
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
		d.ws()
		if d.i >= len(d.s) {
			return false
		}
		switch d.s[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			return true
		default:
			return false
		}
	}
}

func (d *decoder) lit(word string) bool {
	if strings.HasPrefix(d.s[d.i:], word) {
		d.i += len(word)
		return true
	}
	return false
}

// num scans a JSON number and returns its literal text.
func (d *decoder) num() (string, bool) {
	s, start := d.s, d.i
	i := d.i
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return "", false
	}
	if i < len(s) && s[i] == '.' {
		i++
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == j {
			return "", false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == j {
			return "", false
		}
	}
	d.i = i
	return s[start:i], true
}

// str decodes a JSON string at d.i ('"'). Invalid UTF-8 and lone
// surrogates become U+FFFD, as encoding/json does.
func (d *decoder) str() (string, bool) {
	s := d.s
	start := d.i + 1
	i := start
	for i < len(s) {
		c := s[i]
		if c == '"' {
			d.i = i + 1
			return s[start:i], true
		}
		if c == '\\' || c < 0x20 {
			break
		}
		if c < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		i += size
	}
	// Slow path: escapes or invalid UTF-8. The decoded text is at most as
	// long as the raw text up to the closing quote (except for U+FFFD
	// replacements), so size the buffer from a quick scan.
	end := i
	for end < len(s) && s[end] != '"' {
		if s[end] == '\\' {
			end++
		}
		end++
	}
	b := make([]byte, 0, min(end, len(s))-start+8)
	b = append(b, s[start:i]...)
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			d.i = i + 1
			// b is never written again, so the string may share it.
			return unsafe.String(unsafe.SliceData(b), len(b)), true
		case c < 0x20:
			return "", false
		case c == '\\':
			i++
			if i >= len(s) {
				return "", false
			}
			switch s[i] {
			case '"', '\\', '/':
				b = append(b, s[i])
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := hex4(s, i+1)
				if !ok {
					return "", false
				}
				i += 4
				if r >= 0xD800 && r < 0xDC00 {
					// High surrogate: a low one must follow for a pair.
					if i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
						if r2, ok2 := hex4(s, i+3); ok2 && r2 >= 0xDC00 && r2 < 0xE000 {
							r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
							i += 6
						} else {
							r = utf8.RuneError
						}
					} else {
						r = utf8.RuneError
					}
				} else if r >= 0xDC00 && r < 0xE000 {
					r = utf8.RuneError
				}
				b = utf8.AppendRune(b, r)
			default:
				return "", false
			}
			i++
		case c < utf8.RuneSelf:
			// Copy the run of plain ASCII up to the next special byte.
			j := i + 1
			for j < len(s) && s[j] < utf8.RuneSelf && s[j] >= 0x20 && s[j] != '"' && s[j] != '\\' {
				j++
			}
			b = append(b, s[i:j]...)
			i = j
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, "\uFFFD"...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
		}
	}
	return "", false
}

func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for j := i; j < i+4; j++ {
		c := s[j]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// skip scans over any JSON value at d.i without recursion.
func (d *decoder) skip() bool {
	var stack []byte // open brackets
	for {
		d.ws()
		if d.i >= len(d.s) {
			return false
		}
		// A value.
		switch c := d.s[d.i]; {
		case c == '{':
			d.i++
			d.ws()
			if d.i < len(d.s) && d.s[d.i] == '}' {
				d.i++
				break
			}
			stack = append(stack, '{')
			if !d.key() {
				return false
			}
			continue
		case c == '[':
			d.i++
			d.ws()
			if d.i < len(d.s) && d.s[d.i] == ']' {
				d.i++
				break
			}
			stack = append(stack, '[')
			continue
		case c == '"':
			if _, ok := d.str(); !ok {
				return false
			}
		case c == '-' || (c >= '0' && c <= '9'):
			if _, ok := d.num(); !ok {
				return false
			}
		case c == 't':
			if !d.lit("true") {
				return false
			}
		case c == 'f':
			if !d.lit("false") {
				return false
			}
		case c == 'n':
			if !d.lit("null") {
				return false
			}
		default:
			return false
		}
		// After a value: close containers or move to the next element.
		for {
			if len(stack) == 0 {
				return true
			}
			d.ws()
			if d.i >= len(d.s) {
				return false
			}
			top := stack[len(stack)-1]
			c := d.s[d.i]
			if c == ',' {
				d.i++
				if top == '{' && !d.key() {
					return false
				}
				break
			}
			if (top == '{' && c == '}') || (top == '[' && c == ']') {
				d.i++
				stack = stack[:len(stack)-1]
				continue
			}
			return false
		}
	}
}

// key scans `"key" :` inside an object.
func (d *decoder) key() bool {
	d.ws()
	if d.i >= len(d.s) || d.s[d.i] != '"' {
		return false
	}
	if _, ok := d.str(); !ok {
		return false
	}
	d.ws()
	if d.i >= len(d.s) || d.s[d.i] != ':' {
		return false
	}
	d.i++
	return true
}

// AppendWBOJSON appends w as a JSON object with the output fields of
// weave-api.md 1.1 in the order id, modified, payload, sortindex, parentid,
// predecessorid. Fields not in w.Has and a zero Modified are omitted.
// Strings that w.Plain marks are copied between quotes unscanned.
func AppendWBOJSON(b []byte, w WBO) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONStr(b, w.ID, w.Plain&PlainID != 0)
	if w.Modified != 0 {
		b = append(b, `,"modified":`...)
		b = w.Modified.AppendTo(b)
	}
	if w.Has&FieldPayload != 0 {
		b = append(b, `,"payload":`...)
		b = appendJSONStr(b, w.Payload, w.Plain&PlainPayload != 0)
	}
	if w.Has&FieldSortIndex != 0 {
		b = append(b, `,"sortindex":`...)
		b = strconv.AppendInt(b, w.SortIndex, 10)
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
