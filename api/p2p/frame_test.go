package p2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		t       FrameType
		payload []byte
	}{
		{"empty data", FrameData, nil},
		{"data", FrameData, []byte("hello")},
		{"error", FrameError, []byte(`{"code":"x"}`)},
		{"big", FrameData, bytes.Repeat([]byte{7}, 300)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteFrame(&buf, tc.t, tc.payload, 0); err != nil {
				t.Fatal(err)
			}
			buf.WriteString("next")
			typ, p, err := ReadFrame(&buf, 0)
			if err != nil || typ != tc.t || !bytes.Equal(p, tc.payload) {
				t.Fatalf("got %d %q %v", typ, p, err)
			}
			if buf.String() != "next" {
				t.Fatalf("read past the frame: %q left", buf.String())
			}
		})
	}
}

func TestReadFrameRefuses(t *testing.T) {
	overflow := bytes.Repeat([]byte{0xff}, 10)
	overflow = append(overflow, 0x01)
	for _, tc := range []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"empty input", nil, 0, io.EOF},
		{"zero length", []byte{0}, 0, ErrBadFrame},
		{"unknown type", []byte{2, 9, 'x'}, 0, ErrBadFrame},
		{"truncated payload", []byte{5, 1, 'a'}, 0, ErrBadFrame},
		{"truncated length", []byte{0x80}, 0, ErrBadFrame},
		{"length overflow", overflow, 0, ErrBadFrame},
		{"too large", binary.AppendUvarint(nil, 12), 10, ErrFrameTooLarge},
		{"too large default", binary.AppendUvarint(nil, DefaultMaxFrameSize+2), 0, ErrFrameTooLarge},
		{"huge", binary.AppendUvarint(nil, 1<<62), 0, ErrFrameTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadFrame(bytes.NewReader(tc.in), tc.max)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestWriteFrameRefusesOversized(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteFrame(&buf, FrameData, make([]byte, 11), 10); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("wrote %d bytes", buf.Len())
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func FuzzReadFrame(f *testing.F) {
	var ok bytes.Buffer
	WriteFrame(&ok, FrameData, []byte("payload"), 0)
	f.Add(ok.Bytes(), 16)
	f.Add([]byte{0}, 0)
	f.Add([]byte{0x80, 0x80, 0x80}, 0)
	f.Add([]byte{3, 2, '{', '}'}, 8)
	f.Add(bytes.Repeat([]byte{0xff}, 12), 0)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max > 1<<16 || max < -1 {
			max = 1 << 16
		}
		cr := &countingReader{r: bytes.NewReader(in)}
		typ, p, err := ReadFrame(cr, max)
		if err != nil {
			return
		}
		limit := max
		if limit <= 0 {
			limit = DefaultMaxFrameSize
		}
		if len(p) > limit {
			t.Fatalf("payload of %d bytes over limit %d", len(p), limit)
		}
		if typ != FrameData && typ != FrameError {
			t.Fatalf("type %d accepted", typ)
		}
		// The frame re-encodes to what was consumed when its length was
		// minimally encoded, and never consumes more than header + body.
		if hdr := binary.PutUvarint(make([]byte, binary.MaxVarintLen64), uint64(len(p))+1); cr.n < hdr+1+len(p) {
			t.Fatalf("consumed %d bytes for a %d-byte payload", cr.n, len(p))
		}
		var out bytes.Buffer
		if err := WriteFrame(&out, typ, p, max); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if cr.n == out.Len() && !bytes.Equal(out.Bytes(), in[:cr.n]) {
			t.Fatalf("re-encoding differs: %x vs %x", out.Bytes(), in[:cr.n])
		}
	})
}
