package p2p

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// KeyFile is the name of the identity key file inside a data folder.
const KeyFile = "node.key"

// maxKeyFile bounds what LoadOrCreateIdentity reads.
const maxKeyFile = 4096

// ErrBadKeyFile means the identity key file is unreadable as an Ed25519
// libp2p key, or is accessible by other users.
var ErrBadKeyFile = errors.New("p2p: bad identity key file")

// LoadOrCreateIdentity returns the Ed25519 identity kept in dir/node.key
// and its peer ID, creating the key (and dir) on first use. The file holds
// the libp2p protobuf encoding of the private key, mode 0600; it is
// created atomically and never overwritten, so two processes racing on a
// fresh folder end up with the same key. A file readable by group or
// others, or holding another key type, is refused with ErrBadKeyFile.
func LoadOrCreateIdentity(dir string) (crypto.PrivKey, peer.ID, error) {
	if dir == "" {
		return nil, "", errors.New("p2p: identity folder not set")
	}
	path := filepath.Join(dir, KeyFile)
	k, err := loadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return idOf(k, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("p2p: identity folder: %w", err)
	}
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, "", fmt.Errorf("p2p: generate identity: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return nil, "", fmt.Errorf("p2p: encode identity: %w", err)
	}
	tmp, err := os.CreateTemp(dir, KeyFile+".tmp*")
	if err != nil {
		return nil, "", fmt.Errorf("p2p: write identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := writeSync(tmp, raw); err != nil {
		return nil, "", fmt.Errorf("p2p: write identity: %w", err)
	}
	// Link fails if the key already exists: whoever links first wins and
	// everybody loads the winner's key.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, "", fmt.Errorf("p2p: install identity: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return idOf(loadKey(path))
}

func writeSync(f *os.File, b []byte) error {
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func loadKey(path string) (crypto.PrivKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %o, want 0600", ErrBadKeyFile, path, st.Mode().Perm())
	}
	if st.Size() > maxKeyFile {
		return nil, fmt.Errorf("%w: %s is too large", ErrBadKeyFile, path)
	}
	raw := make([]byte, st.Size())
	if _, err := f.ReadAt(raw, 0); err != nil {
		return nil, fmt.Errorf("p2p: read identity: %w", err)
	}
	k, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKeyFile, path, err)
	}
	if k.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%w: %s holds a %v key, want Ed25519", ErrBadKeyFile, path, k.Type())
	}
	return k, nil
}

func idOf(k crypto.PrivKey, err error) (crypto.PrivKey, peer.ID, error) {
	if err != nil {
		return nil, "", err
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return nil, "", fmt.Errorf("p2p: peer id: %w", err)
	}
	return k, id, nil
}

// Ed25519Key returns k as a standard library Ed25519 key, as needed to
// sign a node registration. k must be an Ed25519 key.
func Ed25519Key(k crypto.PrivKey) (ed25519.PrivateKey, error) {
	if k == nil || k.Type() != crypto.Ed25519 {
		return nil, errors.New("p2p: not an Ed25519 key")
	}
	raw, err := k.Raw()
	if err != nil {
		return nil, fmt.Errorf("p2p: raw key: %w", err)
	}
	if len(raw) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("p2p: raw Ed25519 key has %d bytes", len(raw))
	}
	return ed25519.PrivateKey(raw), nil
}

// PeerIDFromEd25519 returns the peer ID of an Ed25519 public key.
func PeerIDFromEd25519(pub ed25519.PublicKey) (peer.ID, error) {
	k, err := crypto.UnmarshalEd25519PublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("p2p: public key: %w", err)
	}
	return peer.IDFromPublicKey(k)
}
