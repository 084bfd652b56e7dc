package api

import (
	"errors"
	"strconv"
	"strings"
)

// Stamp is a Weave timestamp in centiseconds (hundredths of a second since
// the Unix epoch). The wire form is decimal seconds with exactly two
// fractional digits, e.g. 1278109839.90. The zero Stamp means "no
// timestamp" (JSON null on the wire).
type Stamp int64

// ErrBadStamp is returned by ParseStamp for a value that is not a decimal
// number.
var ErrBadStamp = errors.New("api: malformed timestamp")

// String formats s as decimal seconds with exactly two fractional digits.
func (s Stamp) String() string {
	return string(s.AppendTo(nil))
}

// AppendTo appends the wire form of s to b.
func (s Stamp) AppendTo(b []byte) []byte {
	v := int64(s)
	if v < 0 {
		b = append(b, '-')
		v = -v
	}
	b = strconv.AppendInt(b, v/100, 10)
	frac := v % 100
	b = append(b, '.', byte('0'+frac/10), byte('0'+frac%10))
	return b
}

// ParseStamp parses a client-supplied decimal number of seconds ("12",
// "12.5", "1278109839.123456", "-3.2", "1e3") and rounds it to centiseconds,
// half to even, as the reference server's Decimal.quantize does.
func ParseStamp(text string) (Stamp, error) {
	t := strings.TrimSpace(text)
	if t == "" {
		return 0, ErrBadStamp
	}
	neg := false
	switch t[0] {
	case '-':
		neg = true
		t = t[1:]
	case '+':
		t = t[1:]
	}
	if strings.ContainsAny(t, "eE") {
		// Rare exponent form: go through float parsing, then round.
		f, err := strconv.ParseFloat(t, 64)
		if err != nil || f != f || f > 1e15 {
			return 0, ErrBadStamp
		}
		return ParseStamp(signed(neg, strconv.FormatFloat(f, 'f', -1, 64)))
	}
	intPart, fracPart, _ := strings.Cut(t, ".")
	if intPart == "" && fracPart == "" {
		return 0, ErrBadStamp
	}
	if len(intPart) > 15 || !allDigits(intPart) || !allDigits(fracPart) {
		return 0, ErrBadStamp
	}
	var whole int64
	if intPart != "" {
		whole, _ = strconv.ParseInt(intPart, 10, 64)
	}
	// centiseconds from the first two fractional digits, then round on the rest.
	var cs int64
	for i := 0; i < 2; i++ {
		cs *= 10
		if i < len(fracPart) {
			cs += int64(fracPart[i] - '0')
		}
	}
	v := whole*100 + cs
	if len(fracPart) > 2 {
		rest := fracPart[2:]
		first := rest[0]
		tail := strings.TrimRight(rest[1:], "0")
		switch {
		case first > '5', first == '5' && tail != "":
			v++
		case first == '5' && tail == "":
			if v%2 == 1 { // half to even
				v++
			}
		}
	}
	if neg {
		v = -v
	}
	return Stamp(v), nil
}

func signed(neg bool, s string) string {
	if neg {
		return "-" + s
	}
	return s
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// MarshalJSON writes s in its wire form (a number with two decimals), or
// null for the zero Stamp.
func (s Stamp) MarshalJSON() ([]byte, error) {
	if s == 0 {
		return []byte("null"), nil
	}
	return s.AppendTo(nil), nil
}

// UnmarshalJSON reads a JSON number (or a numeric string) of seconds, or
// null (the zero Stamp).
func (s *Stamp) UnmarshalJSON(b []byte) error {
	t := strings.TrimSpace(string(b))
	if t == "null" {
		*s = 0
		return nil
	}
	t = strings.TrimSuffix(strings.TrimPrefix(t, `"`), `"`)
	v, err := ParseStamp(t)
	if err != nil {
		return err
	}
	*s = v
	return nil
}
