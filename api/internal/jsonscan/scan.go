package jsonscan

import (
	"strings"
	"unicode/utf8"
	"unsafe"
)

// Kind is the JSON kind of a scanned Value.
type Kind uint8

// The kinds of a Value. The zero Kind, Null, also stands for a member a
// decoder did not see.
const (
	Null Kind = iota
	String
	Number
	Bool
	// Complex is an object or an array (skipped, not decoded).
	Complex
)

// Value is one scanned JSON value. S is the decoded text of a String or
// the literal text of a Number, and empty for the other kinds.
type Value struct {
	Kind Kind
	S    string
}

// Scanner scans JSON text in S from offset I. Its zero value (with S set)
// is ready and follows encoding/json's rules for strings. Decoded strings
// without escapes or replacements are substrings of S; the others are
// fresh memory. A method that fails leaves I at an unspecified offset; the
// caller then refuses the whole text. A Scanner is not safe for concurrent
// use.
type Scanner struct {
	// S is the input.
	S string
	// I is the offset of the next byte to scan.
	I int
	// Strict makes invalid UTF-8 and escapes of lone surrogates fail a
	// string; otherwise each becomes U+FFFD, as encoding/json does.
	Strict bool
	// MaxDepth is how many non-empty objects and arrays Skip may be inside
	// at once (so 1 skips [[]] and [1] but not [[1]]); 0 means no limit.
	MaxDepth int
}

// WS skips whitespace.
func (d *Scanner) WS() {
	for d.I < len(d.S) {
		switch d.S[d.I] {
		case ' ', '\t', '\n', '\r':
			d.I++
		default:
			return
		}
	}
}

// Peek returns the byte at I, or 0 at the end of the input.
func (d *Scanner) Peek() byte {
	if d.I < len(d.S) {
		return d.S[d.I]
	}
	return 0
}

// End skips whitespace and reports whether the input is all scanned.
func (d *Scanner) End() bool {
	d.WS()
	return d.I == len(d.S)
}

// Open consumes the bracket at I ('{' or '[') and the whitespace after it,
// and reports whether close (its closing bracket) follows at once, in
// which case that is consumed too: the container is empty.
func (d *Scanner) Open(close byte) (empty bool) {
	d.I++
	d.WS()
	if d.I < len(d.S) && d.S[d.I] == close {
		d.I++
		return true
	}
	return false
}

// Next is called after a member or an element of a container closed by
// close: it consumes whitespace and then ',' (more is true) or close (more
// is false), and fails on anything else.
func (d *Scanner) Next(close byte) (more, ok bool) {
	d.WS()
	if d.I >= len(d.S) {
		return false, false
	}
	switch d.S[d.I] {
	case ',':
		d.I++
		return true, true
	case close:
		d.I++
		return false, true
	}
	return false, false
}

// Member scans one member of an object, `"key" : value`, with the
// whitespace before it; the value is scanned as by Value.
func (d *Scanner) Member() (key string, v Value, ok bool) {
	d.WS()
	if d.I >= len(d.S) || d.S[d.I] != '"' {
		return "", Value{}, false
	}
	if key, ok = d.str(); !ok {
		return "", Value{}, false
	}
	d.WS()
	if d.I >= len(d.S) || d.S[d.I] != ':' {
		return "", Value{}, false
	}
	d.I++
	d.WS()
	v, ok = d.Value()
	return key, v, ok
}

// Value scans the value at I (no whitespace before it): strings and
// numbers are decoded, literals recognised, objects and arrays skipped
// (Kind Complex).
func (d *Scanner) Value() (Value, bool) {
	if d.I >= len(d.S) {
		return Value{}, false
	}
	var v Value
	var ok bool
	switch c := d.S[d.I]; {
	case c == '"':
		v.Kind = String
		v.S, ok = d.str()
	case c == '-' || c >= '0' && c <= '9':
		v.Kind = Number
		v.S, ok = d.num()
	case c == 't':
		v.Kind, ok = Bool, d.lit("true")
	case c == 'f':
		v.Kind, ok = Bool, d.lit("false")
	case c == 'n':
		ok = d.lit("null")
	case c == '{' || c == '[':
		v.Kind, ok = Complex, d.Skip()
	}
	return v, ok
}

func (d *Scanner) lit(word string) bool {
	if strings.HasPrefix(d.S[d.I:], word) {
		d.I += len(word)
		return true
	}
	return false
}

// num scans a JSON number and returns its literal text.
func (d *Scanner) num() (string, bool) {
	s, start, i := d.S, d.I, d.I
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = digits(s, i)
	default:
		return "", false
	}
	if i < len(s) && s[i] == '.' {
		j := digits(s, i+1)
		if j == i+1 {
			return "", false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := digits(s, i)
		if j == i {
			return "", false
		}
		i = j
	}
	d.I = i
	return s[start:i], true
}

// digits returns the offset of the first byte at or after i in s that is
// not a decimal digit.
func digits(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// str decodes the string at I ('"'). Raw control characters and bad
// escapes make it fail; invalid UTF-8 and lone surrogates fail it too when
// d.Strict, and otherwise become U+FFFD.
func (d *Scanner) str() (string, bool) {
	s := d.S
	start := d.I + 1
	i := start
	for i < len(s) {
		c := s[i]
		if c == '"' {
			d.I = i + 1
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
			if d.Strict {
				return "", false
			}
			break
		}
		i += size
	}
	if i >= len(s) || s[i] < 0x20 {
		return "", false
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
			d.I = i + 1
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
				lone := false
				if r >= 0xD800 && r < 0xDC00 {
					// High surrogate: a low one must follow for a pair.
					lone = true
					if i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
						if r2, ok2 := hex4(s, i+3); ok2 && r2 >= 0xDC00 && r2 < 0xE000 {
							r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
							i += 6
							lone = false
						}
					}
				} else if r >= 0xDC00 && r < 0xE000 {
					lone = true
				}
				if lone {
					if d.Strict {
						return "", false
					}
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
				if d.Strict {
					return "", false
				}
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

// Skip scans over the value at I (and the whitespace before it),
// iteratively, failing when objects and arrays nest deeper than
// d.MaxDepth.
func (d *Scanner) Skip() bool {
	var stack []byte // closing brackets of the open containers
	for {
		d.WS()
		if d.I >= len(d.S) {
			return false
		}
		// A value.
		switch c := d.S[d.I]; {
		case c == '{' || c == '[':
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			if d.Open(closer) {
				break
			}
			if d.MaxDepth > 0 && len(stack) >= d.MaxDepth {
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
			top := stack[len(stack)-1]
			more, ok := d.Next(top)
			if !ok {
				return false
			}
			if !more {
				stack = stack[:len(stack)-1]
				continue
			}
			if top == '}' && !d.key() {
				return false
			}
			break
		}
	}
}

// key scans `"key" :` inside an object being skipped.
func (d *Scanner) key() bool {
	d.WS()
	if d.I >= len(d.S) || d.S[d.I] != '"' {
		return false
	}
	if _, ok := d.str(); !ok {
		return false
	}
	d.WS()
	if d.I >= len(d.S) || d.S[d.I] != ':' {
		return false
	}
	d.I++
	return true
}
