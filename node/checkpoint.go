package node

import (
	"context"
	"errors"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api/bincode"
)

// Checkpoint is how far this node has replicated one user from one peer:
// everything up to Seq of the peer's changes feed, as long as the peer's
// store is still the one with UUID Source.
type Checkpoint struct {
	Source string
	Seq    uint64
}

const verCkpt = 1

// GetCheckpoint returns how far this node has replicated user from peer
// (the zero Checkpoint when it never did).
func (s *Store) GetCheckpoint(ctx context.Context, user, peer string) (Checkpoint, error) {
	if err := checkNames(user); err != nil {
		return Checkpoint{}, err
	}
	if err := s.enter(); err != nil {
		return Checkpoint{}, err
	}
	defer s.leave()
	kp, err := s.userKeyOf(user)
	if err != nil {
		return Checkpoint{}, err
	}
	v, closer, err := s.db.Get(ckptKey(nil, kp, peer))
	if errors.Is(err, pebble.ErrNotFound) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, err
	}
	defer closer.Close()
	return decodeCheckpoint(v)
}

// SetCheckpoint records a checkpoint without revisions (a batch whose
// revisions were all known already), synced.
func (s *Store) SetCheckpoint(ctx context.Context, user, peer string, cp Checkpoint) error {
	_, err := s.ApplyRevisions(ctx, user, nil, peer, &cp)
	return err
}

func appendCheckpoint(b []byte, cp *Checkpoint) []byte {
	b = bincode.AppendString(append(b, verCkpt), cp.Source)
	return appendU64(b, cp.Seq)
}

func decodeCheckpoint(v []byte) (Checkpoint, error) {
	if len(v) < 1 || v[0] != verCkpt {
		return Checkpoint{}, errCorrupt
	}
	d := newDecoder(v[1:])
	src := d.String(noMax)
	if d.Err() != nil || d.Len() != 8 {
		return Checkpoint{}, errCorrupt
	}
	return Checkpoint{Source: src, Seq: tailU64(d.Rest(), 0)}, nil
}
