package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Backups of a node's store: an online checkpoint of the whole store
// (records, revision trees, changes feeds, replication checkpoints,
// clock, UUID) and the preparation of a restored copy.

// ErrBackupExists means a checkpoint's target folder already exists.
var ErrBackupExists = errors.New("node: backup target already exists")

// CheckpointInfo describes a checkpoint Checkpoint wrote.
type CheckpointInfo struct {
	// Dir is the checkpoint's folder; Bytes the size of its files.
	Dir   string `json:"dir"`
	Bytes int64  `json:"bytes"`
	// UUID is the store's UUID at the time (a restored copy gets a new
	// one: RenewUUID).
	UUID string `json:"uuid"`
	// Took is how long the checkpoint took.
	Took time.Duration `json:"took_ns"`
}

// Checkpoint writes a consistent copy of the whole store into dir, which
// must not exist (ErrBackupExists), while the store keeps serving: a
// Pebble checkpoint after a synced WAL flush, so every write committed
// before the call is in it, and, since every batch is applied
// atomically, every replication checkpoint in it is consistent with the
// revisions it covers. Files are hard-linked where dir is on the same
// file system as the store (copied otherwise); a hard-linked copy stays
// valid whatever the store does later. The copy opens as a store of its
// own (Open); before it serves as a node again, RenewUUID must give it a
// new UUID.
func (s *Store) Checkpoint(dir string) (CheckpointInfo, error) {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return CheckpointInfo{}, ErrClosed
	}
	if _, err := os.Stat(dir); err == nil {
		return CheckpointInfo{}, fmt.Errorf("%w: %s", ErrBackupExists, dir)
	}
	begin := time.Now()
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return CheckpointInfo{}, fmt.Errorf("node: checkpoint into %s: %w", dir, err)
	}
	info := CheckpointInfo{Dir: dir, UUID: s.uuid, Took: time.Since(begin)}
	info.Bytes, _ = dirBytes(dir)
	return info, nil
}

// dirBytes adds up the sizes of the files under dir.
func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	return n, err
}

// RenewUUID gives the (closed) store in dir a new random UUID and
// returns the old and the new one (Pebble's errors go to log, which may
// be nil). A store restored from a backup needs
// it before it serves: the peers' replication checkpoints of its feed
// name its UUID and a sequence number past what the backup holds, so
// under the old UUID they would skip the changes it makes after the
// restore (its sequence numbers start again where the backup stopped).
// Under a new UUID every peer pulls its feed from the start, and what
// they hold already is not fetched again (revs_diff).
func RenewUUID(dir string, log *slog.Logger) (old, renewed string, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := pebble.Open(dir, &pebble.Options{ErrorIfNotExists: true,
		Logger: &pebbleLogger{l: log, limit: rateLimit{every: 10 * time.Second}}})
	if err != nil {
		return "", "", fmt.Errorf("node: opening pebble in %s: %w", dir, err)
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("node: closing pebble: %w", cerr)
		}
	}()
	v, closer, gerr := db.Get(keyUUID)
	switch {
	case gerr == nil:
		old = string(v)
		closer.Close()
	case !errors.Is(gerr, pebble.ErrNotFound):
		return "", "", fmt.Errorf("node: reading uuid: %w", gerr)
	}
	if renewed, err = newUUID(); err != nil {
		return "", "", err
	}
	if err := db.Set(keyUUID, []byte(renewed), pebble.Sync); err != nil {
		return "", "", fmt.Errorf("node: writing uuid: %w", err)
	}
	return old, renewed, nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}
