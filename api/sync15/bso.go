package sync15

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hce-sync/hce/api"
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
	dst = api.AppendJSONString(dst, b.ID)
	dst = append(dst, `,"modified":`...)
	dst = b.Modified.AppendTo(dst)
	dst = append(dst, `,"payload":`...)
	dst = api.AppendJSONString(dst, b.Payload)
	if b.Has&FieldSortIndex != 0 {
		dst = append(dst, `,"sortindex":`...)
		dst = strconv.AppendInt(dst, b.SortIndex, 10)
	}
	return append(dst, '}')
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
	d := scanner{s: body}
	d.ws()
	if d.i >= len(d.s) {
		return BSO{}, ErrMalformedJSON
	}
	var f rawBSO
	var ok bool
	isObj := d.s[d.i] == '{'
	if isObj {
		ok = d.object(&f)
	} else {
		ok = d.skip()
	}
	d.ws()
	if !ok || d.i != len(d.s) {
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
		if f.id.kind != kString {
			return ErrInvalidBSOs
		}
		if _, dup := seen[f.id.s]; dup {
			return ErrInvalidBSOs
		}
		seen[f.id.s] = struct{}{}
		b, reason := f.validate(maxPayload)
		if reason != nil {
			out = append(out, Entry{BSO: BSO{ID: f.id.s}, Err: reason})
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
			d := scanner{s: line}
			d.ws()
			if d.i >= len(d.s) {
				return nil, ErrMalformedJSON
			}
			var f rawBSO
			isObj := d.s[d.i] == '{'
			var ok bool
			if isObj {
				ok = d.object(&f)
			} else {
				ok = d.skip()
			}
			d.ws()
			if !ok || d.i != len(d.s) {
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
	d := scanner{s: body}
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
		return nil, ErrInvalidBSOs
	}
	d.i++
	d.ws()
	out = make([]Entry, 0, min(128, len(body)/32+1))
	if d.i < len(d.s) && d.s[d.i] == ']' {
		d.i++
	} else {
		for {
			d.ws()
			if d.i >= len(d.s) {
				return nil, ErrMalformedJSON
			}
			var f rawBSO
			if d.s[d.i] != '{' {
				// Keep scanning so that malformed JSON wins over "not a BSO".
				if !d.skip() {
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
			d.ws()
			if d.i >= len(d.s) {
				return nil, ErrMalformedJSON
			}
			if d.s[d.i] == ',' {
				d.i++
				continue
			}
			if d.s[d.i] != ']' {
				return nil, ErrMalformedJSON
			}
			d.i++
			break
		}
	}
	d.ws()
	if d.i != len(d.s) {
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

// JSON value kinds.
const (
	kAbsent uint8 = iota // absent or null
	kString
	kNumber
	kBool
	kComplex
)

type jval struct {
	kind uint8
	s    string // decoded string or number literal
}

// rawBSO holds the members of one JSON object.
type rawBSO struct {
	id, sortindex, payload, ttl jval
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
	switch f.id.kind {
	case kAbsent:
	case kString:
		if !ValidID(f.id.s) {
			return b, ErrInvalidID
		}
		b.ID = f.id.s
	default:
		return b, ErrInvalidID
	}
	if f.ttl.kind != kAbsent {
		n, ok := intLiteral(f.ttl)
		if !ok || n < 0 || n > MaxTTL {
			return BSO{}, ErrInvalidTTL
		}
		b.TTL = n
		b.Has |= FieldTTL
	}
	if f.sortindex.kind != kAbsent {
		n, ok := intLiteral(f.sortindex)
		if !ok || n < MinSortIndex || n > MaxSortIndex {
			return BSO{}, ErrInvalidSortIndex
		}
		b.SortIndex = n
		b.Has |= FieldSortIndex
	}
	if f.payload.kind != kAbsent {
		if f.payload.kind != kString {
			return BSO{}, ErrPayloadNotString
		}
		if int64(len(f.payload.s)) > maxPayload {
			return BSO{}, ErrPayloadTooLarge
		}
		b.Payload = f.payload.s
		b.Has |= FieldPayload
	}
	return b, nil
}

// intLiteral reads a JSON number that is written as an integer (no
// fraction or exponent; "-0" is 0) within 10 digits.
func intLiteral(v jval) (int64, bool) {
	if v.kind != kNumber {
		return 0, false
	}
	s := strings.TrimPrefix(v.s, "-")
	if len(s) == 0 || len(s) > 10 || strings.ContainsAny(s, ".eE") {
		return 0, false
	}
	n, err := strconv.ParseInt(v.s, 10, 64)
	return n, err == nil
}

// scanner is a strict single-pass JSON scanner over a string. Decoded
// strings without escapes share the input's memory.
type scanner struct {
	s string
	i int
}

// maxDepth bounds the nesting the scanner skips over.
const maxDepth = 512

func (d *scanner) ws() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// object decodes the object at d.i ('{') into f.
func (d *scanner) object(f *rawBSO) bool {
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
		v, ok := d.value()
		if !ok {
			return false
		}
		var bit uint8
		var dst *jval
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

// value scans one value: scalars are decoded, objects and arrays skipped.
func (d *scanner) value() (jval, bool) {
	if d.i >= len(d.s) {
		return jval{}, false
	}
	var v jval
	var ok bool
	switch c := d.s[d.i]; {
	case c == '"':
		v.kind = kString
		v.s, ok = d.str()
	case c == '-' || c >= '0' && c <= '9':
		v.kind = kNumber
		v.s, ok = d.num()
	case c == 't':
		v.kind, ok = kBool, d.lit("true")
	case c == 'f':
		v.kind, ok = kBool, d.lit("false")
	case c == 'n':
		ok = d.lit("null")
	case c == '{' || c == '[':
		v.kind, ok = kComplex, d.skip()
	}
	return v, ok
}

func (d *scanner) lit(word string) bool {
	if strings.HasPrefix(d.s[d.i:], word) {
		d.i += len(word)
		return true
	}
	return false
}

// num scans a JSON number and returns its text.
func (d *scanner) num() (string, bool) {
	s, start, i := d.s, d.i, d.i
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

// str decodes the string at d.i ('"'). Raw control characters, invalid
// UTF-8 and escapes of lone surrogates make it fail.
func (d *scanner) str() (string, bool) {
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
			return "", false
		}
		i += size
	}
	if i >= len(s) || s[i] < 0x20 {
		return "", false
	}
	// Slow path: escapes.
	b := make([]byte, 0, i-start+16)
	b = append(b, s[start:i]...)
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			d.i = i + 1
			return string(b), true
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
				switch {
				case r >= 0xD800 && r < 0xDC00:
					if i+6 >= len(s) || s[i+1] != '\\' || s[i+2] != 'u' {
						return "", false
					}
					r2, ok := hex4(s, i+3)
					if !ok || r2 < 0xDC00 || r2 >= 0xE000 {
						return "", false
					}
					r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
					i += 6
				case r >= 0xDC00 && r < 0xE000:
					return "", false
				}
				b = utf8.AppendRune(b, r)
			default:
				return "", false
			}
			i++
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return "", false
			}
			b = append(b, s[i:i+size]...)
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

// skip scans over any JSON value at d.i, iteratively, failing beyond
// maxDepth levels of nesting.
func (d *scanner) skip() bool {
	var stack []byte
	for {
		d.ws()
		if d.i >= len(d.s) {
			return false
		}
		switch c := d.s[d.i]; {
		case c == '{' || c == '[':
			d.i++
			d.ws()
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			if d.i < len(d.s) && d.s[d.i] == closer {
				d.i++
				break
			}
			if len(stack) >= maxDepth {
				return false
			}
			stack = append(stack, closer)
			if c == '{' && !d.key() {
				return false
			}
			continue
		case c == '"':
			if _, ok := d.str(); !ok {
				return false
			}
		case c == '-' || c >= '0' && c <= '9':
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
			switch d.s[d.i] {
			case ',':
				d.i++
				if top == '}' && !d.key() {
					return false
				}
			case top:
				d.i++
				stack = stack[:len(stack)-1]
				continue
			default:
				return false
			}
			break
		}
	}
}

// key scans `"name" :` inside an object being skipped.
func (d *scanner) key() bool {
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

// skipRestOfArray scans the rest of an array whose opening bracket was
// consumed, after an element: (, value)* ] and end of input.
func (d *scanner) skipRestOfArray() bool {
	for {
		d.ws()
		if d.i >= len(d.s) {
			return false
		}
		switch d.s[d.i] {
		case ']':
			d.i++
			d.ws()
			return d.i == len(d.s)
		case ',':
			d.i++
			if !d.skip() {
				return false
			}
		default:
			return false
		}
	}
}
