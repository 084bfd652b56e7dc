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

	"github.com/hce-sync/hce/api"
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

// ErrTooManyLocal: PutLocal of a new _local document when the user has
// Config.MaxLocalDocs of them.
var ErrTooManyLocal = errors.New("node: too many _local documents")

// GetLocal returns the _local document id of user or ErrDocNotFound.
func (s *Store) GetLocal(ctx context.Context, user, id string) (LocalDoc, error) {
	if err := checkNames(user); err != nil {
		return LocalDoc{}, err
	}
	if err := s.enter(); err != nil {
		return LocalDoc{}, err
	}
	defer s.leave()
	kp, err := s.userKeyOf(user)
	if err != nil {
		return LocalDoc{}, err
	}
	return s.getLocal(kp, id)
}

func (s *Store) getLocal(kp ukey, id string) (LocalDoc, error) {
	v, closer, err := s.db.Get(localKey(nil, kp, id))
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
// revision. A user keeps at most Config.MaxLocalDocs documents
// (ErrTooManyLocal for another); their bytes count against the quota, and
// a write that adds bytes fails with api.ErrOverQuota when the user is at
// or over it.
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
	var out string
	err := s.localWrite(user, func(st *userState, b *pebble.Batch) (int64, int64, error) {
		var n uint64
		cur, err := s.getLocal(st.kp, id)
		var added int64
		switch {
		case errors.Is(err, ErrDocNotFound):
			if rev != "" && rev != "0-0" {
				return 0, 0, ErrLocalConflict
			}
			if int64(s.cfg.MaxLocalDocs) <= st.nlocal {
				return 0, 0, fmt.Errorf("%w: %d, the most a user may keep", ErrTooManyLocal, st.nlocal)
			}
			added = 1
		case err != nil:
			return 0, 0, err
		default:
			if rev != "" && rev != cur.Rev {
				return 0, 0, ErrLocalConflict
			}
			n, _ = strconv.ParseUint(strings.TrimPrefix(cur.Rev, "0-"), 10, 64)
		}
		grow := int64(len(body)) - int64(len(cur.Body))
		if grow > 0 && s.cfg.QuotaBytes > 0 && st.usage() >= s.cfg.QuotaBytes {
			return 0, 0, api.ErrOverQuota
		}
		n++
		v := append(binary.AppendUvarint([]byte{1}, n), body...)
		if err := b.Set(localKey(nil, st.kp, id), v, nil); err != nil {
			return 0, 0, err
		}
		out = "0-" + strconv.FormatUint(n, 10)
		return grow, added, nil
	})
	return out, err
}

// DeleteLocal deletes the _local document id of user, synced. rev must be
// its current revision (or "", as for PutLocal), else ErrLocalConflict;
// ErrDocNotFound when there is none.
func (s *Store) DeleteLocal(ctx context.Context, user, id, rev string) error {
	if err := checkNames(user); err != nil {
		return err
	}
	return s.localWrite(user, func(st *userState, b *pebble.Batch) (int64, int64, error) {
		cur, err := s.getLocal(st.kp, id)
		if err != nil {
			return 0, 0, err
		}
		if rev != "" && rev != cur.Rev {
			return 0, 0, ErrLocalConflict
		}
		if err := b.Delete(localKey(nil, st.kp, id), nil); err != nil {
			return 0, 0, err
		}
		return -int64(len(cur.Body)), -1, nil
	})
}

// localWrite runs a change of the user's _local documents under the
// user's exclusive lock: stage fills b and returns the change of the
// user's _local bytes and number, which the same synced batch persists in
// the user meta and which memory takes after the commit.
func (s *Store) localWrite(user string, stage func(st *userState, b *pebble.Batch) (dBytes, dCount int64, err error)) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	st, err := s.state(user)
	if err != nil {
		return err
	}
	if st, err = s.purgedLocked(user, st); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	pn, err := s.numberUser(user, st, b)
	if err != nil {
		return err
	}
	defer pn.end()
	dBytes, dCount, err := stage(st, b)
	if err != nil {
		return err
	}
	m := st.meta(st.last.Load(), st.chg.Load())
	m.local, m.nlocal = max(0, st.local+dBytes), max(0, st.nlocal+dCount)
	if err := b.Set(metaKey(nil, st.kp, ""), appendUserMeta(nil, m), nil); err != nil {
		return err
	}
	if err := pn.commit(s, b); err != nil {
		return err
	}
	st.local, st.nlocal = m.local, m.nlocal
	return nil
}
