package revtree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestEncodeRoundTrip(t *testing.T) {
	var empty Tree
	if got := empty.Encode(); !bytes.Equal(got, []byte{EncodingVersion, 0}) {
		t.Fatalf("empty encoding %x", got)
	}
	var tr Tree
	mustMerge(t, &tr, pth(t, 5, true, "e", "d", "c", "b", "a"))
	mustMerge(t, &tr, pth(t, 3, false, "9", "b", "a"))
	mustMerge(t, &tr, pth(t, 300, false, "1", "2"))
	mustMerge(t, &tr, pth(t, MaxPos, false, "3"))
	if err := tr.SetValue(rv(t, 3, "9"), 1<<40); err != nil {
		t.Fatal(err)
	}
	for _, src := range []*Tree{&empty, &tr} {
		enc := src.Encode()
		got, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if !got.Equal(src) || !bytes.Equal(got.Encode(), enc) {
			t.Fatal("round trip differs")
		}
		if got.Config() != (Config{}) {
			t.Fatal("Decode uses the zero (default) config")
		}
	}
	t.Logf("%d revisions in %d bytes", tr.Len(), len(tr.Encode()))
}

// rec encodes one revision by hand for the corruption table.
func rec(delta uint64, h byte, flags byte, extra ...uint64) []byte {
	b := binary.AppendUvarint(nil, delta)
	b = append(b, bytes.Repeat([]byte{h}, HashLen)...)
	b = append(b, flags)
	for _, e := range extra {
		b = binary.AppendUvarint(b, e)
	}
	return b
}

func enc(count uint64, recs ...[]byte) []byte {
	b := binary.AppendUvarint([]byte{EncodingVersion}, count)
	for _, r := range recs {
		b = append(b, r...)
	}
	return b
}

func TestDecodeRefusals(t *testing.T) {
	valid := enc(2, rec(1, 0xaa, 0), rec(1, 0xbb, flagParent|flagDeleted, 1))
	if _, err := Decode(valid); err != nil {
		t.Fatalf("valid input refused: %v", err)
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"version only", []byte{EncodingVersion}},
		{"version 0", []byte{0, 0}},
		{"version 2", []byte{2, 0}},
		{"trailing byte", append(bytes.Clone(valid), 0)},
		{"truncated", valid[:len(valid)-1]},
		{"count too large", enc(3, rec(1, 0xaa, 0), rec(1, 0xbb, flagParent, 1))},
		{"huge count", enc(1<<62, rec(1, 0xaa, 0))},
		{"non-minimal count", append([]byte{EncodingVersion, 0x81, 0x00}, rec(1, 0xaa, 0)...)},
		{"non-minimal delta", append(enc(1), append([]byte{0x81, 0x00}, rec(1, 0xaa, 0)[1:]...)...)},
		{"position zero", enc(1, rec(0, 0xaa, 0))},
		{"position above MaxPos", enc(1, rec(MaxPos+1, 0xaa, 0))},
		{"position overflow by delta", enc(2, rec(MaxPos, 0xaa, 0), rec(1, 0xbb, 0))},
		{"duplicate", enc(2, rec(1, 0xaa, 0), rec(0, 0xaa, 0))},
		{"unsorted hashes", enc(2, rec(1, 0xbb, 0), rec(0, 0xaa, 0))},
		{"unknown flag", enc(1, rec(1, 0xaa, 0x08))},
		{"parent offset zero", enc(2, rec(1, 0xaa, 0), rec(1, 0xbb, flagParent, 0))},
		{"parent offset beyond start", enc(2, rec(1, 0xaa, 0), rec(1, 0xbb, flagParent, 2))},
		{"parent not at previous position", enc(2, rec(1, 0xaa, 0), rec(2, 0xbb, flagParent, 1))},
		{"parent at same position", enc(2, rec(1, 0xaa, 0), rec(0, 0xbb, flagParent, 1))},
		{"deleted flag on inner revision", enc(2, rec(1, 0xaa, flagDeleted), rec(1, 0xbb, flagParent, 1))},
		{"value on inner revision", enc(2, rec(1, 0xaa, flagValue, 5), rec(1, 0xbb, flagParent, 1))},
		{"zero value flagged", enc(1, rec(1, 0xaa, flagValue, 0))},
		{"missing value", enc(1, rec(1, 0xaa, flagValue))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tr, err := Decode(tc.in); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Decode(%x) = %v, %v; want ErrCorrupt", tc.in, tr, err)
			}
		})
	}
}
