package bincode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

var errTest = errors.New("test: corrupt")

func TestDecoderReadsWhatAppendWrote(t *testing.T) {
	var b []byte
	b = binary.AppendUvarint(b, 0)
	b = binary.AppendUvarint(b, math.MaxUint64)
	b = binary.AppendVarint(b, -1)
	b = binary.AppendVarint(b, math.MinInt64)
	b = AppendString(b, "héllo")
	b = AppendString(b, "")
	b = AppendBool(b, true)
	b = AppendBool(b, false)
	b = append(b, 7, 1, 2, 3)
	b = binary.AppendUvarint(b, 3) // a count of 3 items of 1 byte
	b = append(b, 'a', 'b', 'c')

	d := NewDecoder(b, errTest)
	if v := d.Uvarint(); v != 0 {
		t.Errorf("Uvarint = %d", v)
	}
	if v := d.Uvarint(); v != math.MaxUint64 {
		t.Errorf("Uvarint = %d", v)
	}
	if v := d.Varint(); v != -1 {
		t.Errorf("Varint = %d", v)
	}
	if v := d.Varint(); v != math.MinInt64 {
		t.Errorf("Varint = %d", v)
	}
	if s := d.Text(6); s != "héllo" {
		t.Errorf("Text = %q", s)
	}
	if s := d.String(0); s != "" {
		t.Errorf("String = %q", s)
	}
	if !d.Bool() || d.Bool() {
		t.Error("Bool")
	}
	if c := d.Byte(); c != 7 {
		t.Errorf("Byte = %d", c)
	}
	if p := d.Take(3); !bytes.Equal(p, []byte{1, 2, 3}) {
		t.Errorf("Take = %v", p)
	}
	if n := d.Count(3, 1); n != 3 {
		t.Errorf("Count = %d", n)
	}
	if d.Len() != 3 || !bytes.Equal(d.Rest(), []byte("abc")) {
		t.Errorf("Rest = %q", d.Rest())
	}
	d.Take(3)
	if err := d.End(); err != nil {
		t.Fatal(err)
	}
}

func TestDecoderRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		read func(d *Decoder)
	}{
		{"empty uvarint", nil, func(d *Decoder) { d.Uvarint() }},
		{"truncated uvarint", []byte{0x80}, func(d *Decoder) { d.Uvarint() }},
		{"overflowing uvarint", bytes.Repeat([]byte{0xff}, 11), func(d *Decoder) { d.Uvarint() }},
		{"non-minimal uvarint", []byte{0x81, 0x00}, func(d *Decoder) { d.Uvarint() }},
		{"non-minimal zero", []byte{0x80, 0x00}, func(d *Decoder) { d.Uvarint() }},
		{"non-minimal varint", []byte{0x82, 0x00}, func(d *Decoder) { d.Varint() }},
		{"count over max", []byte{5, 1, 2, 3, 4, 5}, func(d *Decoder) { d.Count(4, 1) }},
		{"count over input", []byte{3, 1, 2, 3, 4, 5}, func(d *Decoder) { d.Count(10, 2) }},
		{"string over max", []byte{3, 'a', 'b', 'c'}, func(d *Decoder) { d.String(2) }},
		{"string over input", []byte{4, 'a', 'b', 'c'}, func(d *Decoder) { d.Bytes(10) }},
		{"text not UTF-8", []byte{1, 0xff}, func(d *Decoder) { d.Text(10) }},
		{"bool 2", []byte{2}, func(d *Decoder) { d.Bool() }},
		{"bool missing", nil, func(d *Decoder) { d.Bool() }},
		{"byte missing", nil, func(d *Decoder) { d.Byte() }},
		{"take over input", []byte{1, 2}, func(d *Decoder) { d.Take(3) }},
		{"trailing bytes", []byte{1, 2}, func(d *Decoder) { d.Byte() }},
	} {
		d := NewDecoder(tc.in, errTest)
		tc.read(&d)
		err := d.End()
		if !errors.Is(err, errTest) {
			t.Errorf("%s: End() = %v, want an error wrapping errTest", tc.name, err)
			continue
		}
		// The first failure sticks and later reads return zero values.
		if d.Uvarint() != 0 || d.Len() != 0 || d.Bytes(10) != nil || d.Err() != err {
			t.Errorf("%s: reads after a failure", tc.name)
		}
	}
}

func TestCountWithoutSize(t *testing.T) {
	// minSize 0 bounds by max only: a count of empty items, or a number.
	d := NewDecoder([]byte{0xe8, 0x07}, errTest)
	if n := d.Count(1000, 0); n != 1000 || d.End() != nil {
		t.Fatalf("Count = %d, %v", n, d.Err())
	}
}

// FuzzDecoder reads random input as uvarints, varints and strings and
// checks that every accepted field re-encodes to the bytes it was read
// from.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0, 1, 0x81, 0x01, 2, 'a', 'b'})
	f.Add([]byte{0x81, 0x00})
	f.Add(AppendString(binary.AppendVarint(nil, -300), "x"))
	f.Fuzz(func(t *testing.T, in []byte) {
		for kind := range 3 {
			d := NewDecoder(in, errTest)
			var out []byte
			for d.Len() > 0 && d.Err() == nil {
				switch kind {
				case 0:
					if v := d.Uvarint(); d.Err() == nil {
						out = binary.AppendUvarint(out, v)
					}
				case 1:
					if v := d.Varint(); d.Err() == nil {
						out = binary.AppendVarint(out, v)
					}
				case 2:
					if s := d.String(len(in)); d.Err() == nil {
						out = AppendString(out, s)
					}
				}
			}
			if d.Err() == nil && !bytes.Equal(out, in) {
				t.Fatalf("kind %d: %x re-encodes to %x", kind, in, out)
			}
			if d.Err() != nil && !bytes.HasPrefix(in, out) {
				t.Fatalf("kind %d: accepted fields %x are not a prefix of %x", kind, out, in)
			}
		}
	})
}
