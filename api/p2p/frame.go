package p2p

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FrameType is the first byte of a frame's body.
type FrameType byte

// Frame types.
const (
	// FrameData carries a request or a successful response.
	FrameData FrameType = 1
	// FrameError carries a RemoteError as JSON.
	FrameError FrameType = 2
)

// DefaultMaxFrameSize is the default bound on a frame's payload.
const DefaultMaxFrameSize = 1 << 20

// Frame errors.
var (
	// ErrFrameTooLarge means a frame's payload exceeds the maximum size.
	ErrFrameTooLarge = errors.New("p2p: frame too large")
	// ErrBadFrame means a frame is malformed: a bad length, an unknown
	// type or a truncated payload.
	ErrBadFrame = errors.New("p2p: malformed frame")
)

// WriteFrame writes one frame of type t carrying payload to w. It refuses
// a payload over maxSize (DefaultMaxFrameSize when maxSize <= 0) with
// ErrFrameTooLarge, writing nothing.
func WriteFrame(w io.Writer, t FrameType, payload []byte, maxSize int) error {
	if maxSize <= 0 {
		maxSize = DefaultMaxFrameSize
	}
	if len(payload) > maxSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(payload), maxSize)
	}
	buf := make([]byte, 0, binary.MaxVarintLen64+1+len(payload))
	buf = binary.AppendUvarint(buf, uint64(len(payload))+1)
	buf = append(buf, byte(t))
	buf = append(buf, payload...)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame from r, reading no byte past it. A payload
// over maxSize (DefaultMaxFrameSize when maxSize <= 0) is refused with
// ErrFrameTooLarge before it is read; a malformed or truncated frame with
// ErrBadFrame. A clean end of input before the first byte gives io.EOF.
func ReadFrame(r io.Reader, maxSize int) (FrameType, []byte, error) {
	return readFrame(r, maxSize, nil)
}

// readFrame is ReadFrame calling reserve (when not nil) with the body's
// size before allocating it; an error from reserve aborts the read.
func readFrame(r io.Reader, maxSize int, reserve func(n int) error) (FrameType, []byte, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxFrameSize
	}
	n, err := readUvarint(r)
	if err != nil {
		return 0, nil, err
	}
	switch {
	case n == 0:
		return 0, nil, fmt.Errorf("%w: zero length", ErrBadFrame)
	case n-1 > uint64(maxSize):
		return 0, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n-1, maxSize)
	}
	if reserve != nil {
		if err := reserve(int(n)); err != nil {
			return 0, nil, err
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: truncated payload", ErrBadFrame)
		}
		return 0, nil, err
	}
	t := FrameType(body[0])
	if t != FrameData && t != FrameError {
		return 0, nil, fmt.Errorf("%w: unknown type %d", ErrBadFrame, t)
	}
	return t, body[1:], nil
}

// readUvarint reads a minimal-or-not uvarint one byte at a time, so that
// nothing after it is consumed.
func readUvarint(r io.Reader) (uint64, error) {
	var (
		x     uint64
		shift uint
		b     [1]byte
	)
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if i > 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
				return 0, fmt.Errorf("%w: truncated length", ErrBadFrame)
			}
			return 0, err
		}
		if b[0] < 0x80 {
			if i == binary.MaxVarintLen64-1 && b[0] > 1 {
				break
			}
			return x | uint64(b[0])<<shift, nil
		}
		x |= uint64(b[0]&0x7f) << shift
		shift += 7
	}
	return 0, fmt.Errorf("%w: length overflows", ErrBadFrame)
}
