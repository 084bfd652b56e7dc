package sync15

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// Batch ids.
//
// A batch id is opaque to clients; this package makes it
//
//	base64url(version=1 | creation time, 8-byte big-endian Unix ms | 12 random bytes)
//
// without padding: 28 characters of the URL-safe alphabet, so it needs no
// escaping in ?batch=. The store keys a batch by (user, collection, id), so
// an id is only meaningful to the user and collection it was made for; the
// random part makes ids unguessable and unique; the creation time lets
// the handler refuse a batch older than Config.BatchLifetime without
// asking the store, and lets a store expire abandoned batches.

const (
	batchVersion = 1
	batchIDBytes = 1 + 8 + 12
	// BatchIDLen is the length of a batch id's text.
	BatchIDLen = (batchIDBytes*8 + 5) / 6
)

// BatchID is a decoded batch id.
type BatchID struct {
	// Created is the creation time, to the millisecond.
	Created time.Time
	// Nonce is the random part.
	Nonce [12]byte
}

// NewBatchID returns a fresh batch id created at now.
func NewBatchID(now time.Time, rand io.Reader) (BatchID, error) {
	id := BatchID{Created: time.UnixMilli(now.UnixMilli())}
	if _, err := io.ReadFull(rand, id.Nonce[:]); err != nil {
		return BatchID{}, fmt.Errorf("sync15: NewBatchID: %w", err)
	}
	return id, nil
}

// String returns the id's text, as the "batch" field and ?batch= carry it.
func (id BatchID) String() string {
	var b [batchIDBytes]byte
	b[0] = batchVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(id.Created.UnixMilli()))
	copy(b[9:], id.Nonce[:])
	return b64.EncodeToString(b[:])
}

// ParseBatchID parses a batch id's text. Anything but exactly the text
// String writes (length, alphabet, version, a positive creation time)
// gives an error wrapping ErrBadQuery.
func ParseBatchID(s string) (BatchID, error) {
	if len(s) != BatchIDLen {
		return BatchID{}, fmt.Errorf("%w: batch id length", ErrBadQuery)
	}
	b, err := decodeB64(s)
	if err != nil || len(b) != batchIDBytes || b[0] != batchVersion {
		return BatchID{}, fmt.Errorf("%w: batch id", ErrBadQuery)
	}
	ms := int64(binary.BigEndian.Uint64(b[1:9]))
	if ms <= 0 || ms > maxStamp*10 {
		return BatchID{}, fmt.Errorf("%w: batch id time", ErrBadQuery)
	}
	id := BatchID{Created: time.UnixMilli(ms)}
	copy(id.Nonce[:], b[9:])
	return id, nil
}
