package node

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// LocalDoc is a _local document: replication state a CouchDB replicator
// keeps on this node. It is never replicated and never in the feed.
type LocalDoc struct {
	// Rev is "0-N", N counting the updates.
	Rev string
	// Body is the JSON object as stored (without _id and _rev).
	Body json.RawMessage
}

// MaxLocalDocBytes bounds a _local document's body.
const MaxLocalDocBytes = 64 << 10

// GetLocal returns the _local document id of user or ErrDocNotFound.
func (s *Store) GetLocal(ctx context.Context, user, id string) (LocalDoc, error) {
	if err := checkNames(user); err != nil {
		return LocalDoc{}, err
	}
	if err := s.enter(); err != nil {
		return LocalDoc{}, err
	}
	defer s.leave()
	return s.getLocal(user, id)
}

func (s *Store) getLocal(user, id string) (LocalDoc, error) {
	v, closer, err := s.db.Get(localKey(nil, user, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return LocalDoc{}, ErrDocNotFound
	}
	if err != nil {
		return LocalDoc{}, err
	}
	defer closer.Close()
	if len(v) < 1 || v[0] != 1 {
		return LocalDoc{}, errCorrupt
	}
	d := newDecoder(v[1:])
	n := d.Uvarint()
	body := append(json.RawMessage(nil), d.Rest()...)
	if d.Err() != nil {
		return LocalDoc{}, errCorrupt
	}
	return LocalDoc{Rev: "0-" + strconv.FormatUint(n, 10), Body: body}, nil
}

// PutLocal stores the _local document id of user, synced. rev must be the
// current revision ("" when the document does not exist yet; CouchDB's
// PouchDB-style callers may also omit it for an existing one, which is
// accepted as an overwrite), else ErrLocalConflict. It returns the new
// revision.
func (s *Store) PutLocal(ctx context.Context, user, id string, body json.RawMessage, rev string) (string, error) {
	if err := checkNames(user); err != nil {
		return "", err
	}
	if id == "" || len(id) > 1024 {
		return "", fmt.Errorf("%w: local document id of %d bytes", ErrRevRejected, len(id))
	}
	if len(body) > MaxLocalDocBytes {
		return "", fmt.Errorf("%w: local document of %d bytes", ErrRevRejected, len(body))
	}
	if err := s.enter(); err != nil {
		return "", err
	}
	defer s.leave()
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	var n uint64
	cur, err := s.getLocal(user, id)
	switch {
	case errors.Is(err, ErrDocNotFound):
		if rev != "" && rev != "0-0" {
			return "", ErrLocalConflict
		}
	case err != nil:
		return "", err
	default:
		if rev != "" && rev != cur.Rev {
			return "", ErrLocalConflict
		}
		n, _ = strconv.ParseUint(strings.TrimPrefix(cur.Rev, "0-"), 10, 64)
	}
	n++
	v := append(binary.AppendUvarint([]byte{1}, n), body...)
	if err := s.db.Set(localKey(nil, user, id), v, pebble.Sync); err != nil {
		return "", fmt.Errorf("node: commit: %w", err)
	}
	return "0-" + strconv.FormatUint(n, 10), nil
}
