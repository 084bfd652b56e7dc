package state

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// Snapshot format: JSON lines. A snapshotHeader, then exactly
// header.Accounts account objects sorted by name, then (when
// header.Cluster) one clusterState object, then header.Keys signing keys
// sorted by kid, then header.Invites invites sorted by hash, then
// header.Deleted tombstones sorted by name, then header.Sync Sync 1.5
// records sorted by FxA uid, then EOF.
// See DESIGN.md.
const (
	snapshotFormat  = "hce-directory"
	snapshotVersion = 5
)

// snapshotHeader starts a snapshot. Version 2 adds Cluster and Keys;
// version 3 writes replica sets with their members' state and leaving
// lists (clusterState.Sets) where version 2 had lists of node IDs
// (clusterStateV2.Assign); version 4 adds the accounts' credential and
// reset-mail fields (Account.CredsAt, CredsIndex, Resets), Invites and
// Deleted; version 5 adds the Sync 1.5 records (Sync, SyncSeq), the
// accounts' FxA field and the nodes' Hawk keys (nodeRecord.HawkKey).
// Versions 1 (accounts only), 2, 3 and 4 stay readable.
type snapshotHeader struct {
	Format   string `json:"format"`
	Version  int    `json:"version"`
	Accounts int    `json:"accounts"`
	// Cluster (version 2) says one clusterState object follows the
	// accounts.
	Cluster bool `json:"cluster,omitempty"`
	// Keys (version 2) is the number of published signing keys that
	// follow the cluster state (or the accounts); absent means none.
	Keys int `json:"keys,omitempty"`
	// Invites (version 4) is the number of unused invites that follow
	// the keys; absent means none.
	Invites int `json:"invites,omitempty"`
	// Deleted (version 4) is the number of tombstones of deleted
	// accounts that follow the invites; absent means none.
	Deleted int `json:"deleted,omitempty"`
	// Sync (version 5) is the number of Sync 1.5 records that follow the
	// tombstones; SyncSeq the last Sync uid given. Absent means none.
	Sync    int    `json:"sync,omitempty"`
	SyncSeq uint64 `json:"sync_seq,omitempty"`
}

// Snapshot captures the state in O(accounts) pointer copies under the
// read lock; the records themselves are shared (they are immutable) and
// encoded later by Persist, concurrently with further applies.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if n := f.undecodable.Load(); n > 0 {
		// The skipped entries must stay in the log: a snapshot would
		// let raft compact them away, and a build that decodes them
		// could no longer replay them.
		return nil, fmt.Errorf("directory: no snapshot: %d raft entries could not be decoded by this build", n)
	}
	f.mu.RLock()
	accts := make([]*Account, 0, len(f.accounts))
	for _, a := range f.accounts {
		accts = append(accts, a)
	}
	cl := f.cl.clone()
	keys := sortedKeys(f.keys)
	invites := sortedInvites(f.invites)
	deleted := slices.Collect(maps.Values(f.deleted))
	syncUsers := slices.Collect(maps.Values(f.sync))
	syncSeq := f.syncSeq
	f.mu.RUnlock()
	slices.SortFunc(deleted, func(a, b Tombstone) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(syncUsers, func(a, b *SyncUser) int { return strings.Compare(a.FxA, b.FxA) })
	return &fsmSnapshot{accounts: accts, cl: &cl, keys: keys, invites: invites, deleted: deleted,
		sync: syncUsers, syncSeq: syncSeq}, nil
}

// Restore replaces the whole state with the snapshot read from rc and
// calls the revoked hook with "" (any account may have changed). On
// error the state is left unchanged.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.accounts = st.accounts
	f.cl = st.cl
	f.keys = st.keys
	f.invites = st.invites
	f.deleted = st.deleted
	f.sync = st.sync
	f.syncSeq = st.syncSeq
	f.mu.Unlock()
	if f.hooks.Revoked != nil {
		f.hooks.Revoked("")
	}
	return nil
}

// restored is the state a snapshot holds.
type restored struct {
	accounts map[string]*Account
	cl       clusterState
	keys     map[string]*SigningKey
	invites  map[string]*Invite
	deleted  map[string]Tombstone
	sync     map[string]*SyncUser
	syncSeq  uint64
}

func readSnapshot(r io.Reader) (*restored, error) {
	accts, cl, keys, invites, deleted, h, dec, err := readSnapshotV4(r)
	if err != nil {
		return nil, err
	}
	st := &restored{accounts: accts, cl: cl, keys: keys, invites: invites, deleted: deleted,
		sync: make(map[string]*SyncUser), syncSeq: h.SyncSeq}
	if h.Sync < 0 || h.Sync > maxSnapshotSyncUsers {
		return nil, fmt.Errorf("directory: snapshot announces %d sync records", h.Sync)
	}
	for i := range h.Sync {
		u := new(SyncUser)
		if err := dec.Decode(u); err != nil {
			return nil, fmt.Errorf("directory: snapshot sync record %d of %d: %w", i, h.Sync, err)
		}
		if err := u.validate(); err != nil {
			return nil, err
		}
		if _, dup := st.sync[u.FxA]; dup || u.UID > h.SyncSeq {
			return nil, fmt.Errorf("directory: snapshot sync record %q twice or past the uid sequence", u.FxA)
		}
		st.sync[u.FxA] = u
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("directory: snapshot has data after the announced accounts")
	}
	return st, nil
}

// readSnapshotV4 reads a snapshot up to its version 4 sections and
// returns the header and the decoder positioned after them.
func readSnapshotV4(r io.Reader) (map[string]*Account, clusterState, map[string]*SigningKey, map[string]*Invite, map[string]Tombstone, snapshotHeader, *json.Decoder, error) {
	cl := newClusterState()
	keys := make(map[string]*SigningKey)
	invites := make(map[string]*Invite)
	deleted := make(map[string]Tombstone)
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	dec.DisallowUnknownFields()
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot header: %w", err)
	}
	if h.Format != snapshotFormat || h.Version < 1 || h.Version > snapshotVersion || h.Accounts < 0 ||
		(h.Cluster && h.Version < 2) || (h.Keys != 0 && h.Version < 2) || (h.Invites != 0 && h.Version < 4) || (h.Deleted != 0 && h.Version < 4) ||
		((h.Sync != 0 || h.SyncSeq != 0) && h.Version < 5) {
		return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: unsupported snapshot %q version %d", h.Format, h.Version)
	}
	accts := make(map[string]*Account, min(h.Accounts, 1<<20))
	for i := 0; i < h.Accounts; i++ {
		a := new(Account)
		var err error
		if h.Version < 4 {
			err = decodeAccountV3(dec, a)
		} else {
			err = dec.Decode(a)
		}
		if err != nil {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot account %d of %d: %w", i, h.Accounts, err)
		}
		if a.Name == "" {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot account %d has no name", i)
		}
		if _, dup := accts[a.Name]; dup {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot account %q twice", a.Name)
		}
		accts[a.Name] = a
	}
	if h.Cluster {
		var err error
		if h.Version == 2 {
			var v2 clusterStateV2
			err = dec.Decode(&v2)
			cl = v2.upgrade()
		} else {
			err = dec.Decode(&cl)
		}
		if err != nil {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot cluster state: %w", err)
		}
		if err := cl.validate(); err != nil {
			return nil, cl, nil, nil, nil, h, nil, err
		}
		for u := range cl.Sets {
			if _, ok := accts[u]; !ok {
				return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot assigns unknown user %q", u)
			}
		}
	}
	if h.Keys < 0 || h.Keys > MaxPublishedKeys {
		return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot announces %d signing keys", h.Keys)
	}
	for i := range h.Keys {
		k := new(SigningKey)
		if err := dec.Decode(k); err != nil {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot key %d of %d: %w", i, h.Keys, err)
		}
		if err := k.validate(); err != nil {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot key %d: %w", i, err)
		}
		if _, dup := keys[k.Kid]; dup {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot key %q twice", k.Kid)
		}
		keys[k.Kid] = k
	}
	if h.Invites < 0 || h.Invites > MaxInvites {
		return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot announces %d invites", h.Invites)
	}
	for i := range h.Invites {
		inv := new(Invite)
		if err := dec.Decode(inv); err != nil {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot invite %d of %d: %w", i, h.Invites, err)
		}
		if err := inv.validate(); err != nil {
			return nil, cl, nil, nil, nil, h, nil, err
		}
		if _, dup := invites[inv.Hash]; dup {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot invite %q twice", inv.Hash)
		}
		invites[inv.Hash] = inv
	}
	if h.Deleted < 0 || h.Deleted > maxSnapshotTombstones {
		return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot announces %d tombstones", h.Deleted)
	}
	for i := range h.Deleted {
		var ts Tombstone
		if err := dec.Decode(&ts); err != nil {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot tombstone %d of %d: %w", i, h.Deleted, err)
		}
		if _, dup := deleted[ts.Name]; dup || ts.Name == "" {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot tombstone %q twice or unnamed", ts.Name)
		}
		if _, live := accts[ts.Name]; live {
			return nil, cl, nil, nil, nil, h, nil, fmt.Errorf("directory: snapshot tombstone of live account %q", ts.Name)
		}
		deleted[ts.Name] = ts
	}
	return accts, cl, keys, invites, deleted, h, dec, nil
}

// fsmSnapshot is a point-in-time view of the state.
type fsmSnapshot struct {
	accounts []*Account
	cl       *clusterState // nil: no cluster section
	keys     []*SigningKey // published signing keys, sorted by kid
	invites  []*Invite     // unused invites, sorted by hash
	deleted  []Tombstone   // tombstones of deleted accounts, sorted by name
	sync     []*SyncUser   // Sync 1.5 records, sorted by FxA uid
	syncSeq  uint64
}

// maxSnapshotSyncUsers bounds the Sync records a snapshot may announce.
const maxSnapshotSyncUsers = 1 << 26

// maxSnapshotTombstones bounds the tombstones a snapshot may announce,
// so a decoder never allocates for more.
const maxSnapshotTombstones = 1 << 24

// Persist streams the snapshot to sink as JSON lines, sorted so that
// equal states give equal bytes.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("directory: persist snapshot: %w", err)
	}
	return sink.Close()
}

// version is the snapshot version s needs: 4 while nothing of version 5
// is in the state, so that a voter of the previous build (which reads up
// to version 4) can install the snapshots of an upgraded leader during a
// rolling upgrade; the commands that add version 5 content are gated
// until every voter decodes them.
func (s *fsmSnapshot) version() int {
	if len(s.sync) > 0 || s.syncSeq != 0 {
		return snapshotVersion
	}
	for _, a := range s.accounts {
		if a.FxA != "" {
			return snapshotVersion
		}
	}
	if s.cl != nil {
		for _, n := range s.cl.Nodes {
			if len(n.HawkKey) > 0 {
				return snapshotVersion
			}
		}
	}
	return 4
}

func (s *fsmSnapshot) write(w io.Writer) error {
	slices.SortFunc(s.accounts, func(a, b *Account) int { return strings.Compare(a.Name, b.Name) })
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(snapshotHeader{Format: snapshotFormat, Version: s.version(),
		Accounts: len(s.accounts), Cluster: s.cl != nil, Keys: len(s.keys), Invites: len(s.invites),
		Deleted: len(s.deleted), Sync: len(s.sync), SyncSeq: s.syncSeq}); err != nil {
		return err
	}
	for _, a := range s.accounts {
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
	if s.cl != nil {
		// encoding/json sorts map keys, so equal states give equal bytes.
		if err := enc.Encode(s.cl); err != nil {
			return err
		}
	}
	for _, k := range s.keys {
		if err := enc.Encode(k); err != nil {
			return err
		}
	}
	for _, inv := range s.invites {
		if err := enc.Encode(inv); err != nil {
			return err
		}
	}
	for _, ts := range s.deleted {
		if err := enc.Encode(ts); err != nil {
			return err
		}
	}
	for _, u := range s.sync {
		if err := enc.Encode(u); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// accountV3 is an account as snapshot versions 1 to 3 write it.
type accountV3 struct {
	Name          string `json:"name"`
	Hash          string `json:"hash"`
	Email         string `json:"email,omitempty"`
	Created       int64  `json:"created"`
	Node          string `json:"node,omitempty"`
	ResetCodeHash string `json:"reset_code_hash,omitempty"`
	ResetExpires  int64  `json:"reset_expires,omitempty"`
}

// decodeAccountV3 decodes an account of snapshot versions 1 to 3 (the
// decoder refuses unknown fields, so the later fields are refused too).
func decodeAccountV3(dec *json.Decoder, a *Account) error {
	var o accountV3
	if err := dec.Decode(&o); err != nil {
		return err
	}
	*a = Account{Name: o.Name, Hash: o.Hash, Email: o.Email, Created: o.Created, Node: o.Node,
		ResetCodeHash: o.ResetCodeHash, ResetExpires: o.ResetExpires}
	return nil
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() {}
