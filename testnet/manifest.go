package testnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ManifestFile is the name of the manifest a Testnet keeps in its folder.
const ManifestFile = "testnet.json"

// VoterEntry describes a directory voter in testnet.json.
type VoterEntry struct {
	// ID is the voter's raft server ID (d1, d2, ...).
	ID string `json:"id"`
	// PeerID is the voter's libp2p peer ID ("" until it started once).
	PeerID string `json:"peer_id,omitempty"`
	// HTTP is the voter's base URL; Raft and P2P its raft and libp2p
	// listen addresses (host:port).
	HTTP string `json:"http"`
	Raft string `json:"raft"`
	P2P  string `json:"p2p"`
	// PID is the child process ID (0 when not running, or in process).
	PID int `json:"pid"`
	// Data is the voter's data folder.
	Data string `json:"data"`
}

// NodeEntry describes a storage node in testnet.json.
type NodeEntry struct {
	// Name is the testnet's short name (n1, n2, ...); ID is the node's
	// directory ID (its libp2p peer ID). Either names the node.
	Name string `json:"name"`
	ID   string `json:"id"`
	// Operator is who runs the node (op1..opK).
	Operator string `json:"operator"`
	// HTTP is the node's base URL; P2P its libp2p listen address.
	HTTP string `json:"http"`
	P2P  string `json:"p2p"`
	// PID is the child process ID (0 when not running, or in process).
	PID int `json:"pid"`
	// Data is the node's data folder.
	Data string `json:"data"`
}

// Manifest is the content of DIR/testnet.json.
type Manifest struct {
	Directories []VoterEntry `json:"directories"`
	Nodes       []NodeEntry  `json:"nodes"`
	AdminToken  string       `json:"admin_token"`
	// Mode, Binary, CA, Replicas, DownAfter, Heartbeat and LogLevel are
	// what Restart needs to start a member again from another process.
	Mode      string `json:"mode"`
	Binary    string `json:"binary,omitempty"`
	CA        string `json:"ca"`
	Replicas  int    `json:"replicas"`
	DownAfter string `json:"down_after"`
	Heartbeat string `json:"heartbeat"`
	LogLevel  string `json:"log_level,omitempty"`
	// Store is the nodes' Pebble sizing (Config.Store).
	Store StoreSizing `json:"store,omitzero"`
	// HTTPSCA is the certificate of the CA that issued the members'
	// HTTPS certificates, when the testnet serves HTTPS (Config.TLS).
	HTTPSCA string `json:"https_ca,omitempty"`
}

// ReadManifest reads DIR/testnet.json.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return m, fmt.Errorf("testnet: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("testnet: %s: %w", ManifestFile, err)
	}
	return m, nil
}

// manifestLocked builds the manifest from the members; t.mu held.
func (t *Testnet) manifestLocked() Manifest {
	m := Manifest{Directories: []VoterEntry{}, Nodes: []NodeEntry{}, AdminToken: t.token, Mode: t.cfg.Mode.String(),
		Binary: t.cfg.Binary, CA: filepath.Join(t.cfg.Dir, "ca"), Replicas: t.cfg.Replicas,
		DownAfter: t.cfg.DownAfter.String(), Heartbeat: t.cfg.Heartbeat.String(), LogLevel: t.cfg.ChildLogLevel,
		Store: t.cfg.Store}
	if t.cfg.TLS {
		m.HTTPSCA = filepath.Join(t.cfg.Dir, HTTPSCADir, "ca.pem")
	}
	for _, v := range t.voters {
		m.Directories = append(m.Directories, VoterEntry{ID: v.id, PeerID: v.p2pID, HTTP: v.url, Raft: v.raftAddr, P2P: v.p2pAddr, PID: v.pid, Data: v.data})
	}
	for _, n := range t.nodes {
		m.Nodes = append(m.Nodes, NodeEntry{Name: n.name, ID: n.id, Operator: n.operator, HTTP: n.url, P2P: n.p2pAddr, PID: n.pid, Data: n.data})
	}
	return m
}

// Manifest returns the testnet's current description (what
// DIR/testnet.json holds).
func (t *Testnet) Manifest() Manifest {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.manifestLocked()
}

// Voters returns the directory voters.
func (t *Testnet) Voters() []VoterEntry { return t.Manifest().Directories }

// Nodes returns the storage nodes.
func (t *Testnet) Nodes() []NodeEntry { return t.Manifest().Nodes }

// adopt takes the PIDs other processes (hce testnet kill/restart) wrote
// into the manifest: a member whose recorded PID differs from its own
// child is run by that PID now.
func (t *Testnet) adopt() {
	m, err := ReadManifest(t.cfg.Dir)
	if err != nil {
		return
	}
	pids := map[string]int{}
	for _, v := range m.Directories {
		pids[v.ID] = v.PID
	}
	for _, n := range m.Nodes {
		pids[n.Name] = n.PID
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, mem := range append(append([]*member{}, t.voters...), t.nodes...) {
		pid, ok := pids[mem.name]
		if !ok || pid == mem.pid {
			continue
		}
		if mem.child != nil && mem.child.exited() {
			mem.child = nil
		}
		if mem.child == nil {
			mem.pid = pid
		}
	}
}

// updateManifest rewrites DIR/testnet.json under an exclusive lock
// (DIR/testnet.lock), so that kill and restart from several shells do
// not lose each other's updates. With only set, just that member's entry
// changes in the file as it is; otherwise the whole manifest is written.
func (t *Testnet) updateManifest(only *member) error {
	lock, err := os.OpenFile(filepath.Join(t.cfg.Dir, "testnet.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("testnet: lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	t.mu.Lock()
	mine := t.manifestLocked()
	t.mu.Unlock()
	out := mine
	if cur, err := ReadManifest(t.cfg.Dir); err == nil && only != nil {
		out = cur
		for i := range out.Directories {
			if out.Directories[i].ID == only.name {
				for _, v := range mine.Directories {
					if v.ID == only.name {
						out.Directories[i] = v
					}
				}
			}
		}
		for i := range out.Nodes {
			if out.Nodes[i].Name == only.name {
				for _, n := range mine.Nodes {
					if n.Name == only.name {
						out.Nodes[i] = n
					}
				}
			}
		}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(t.cfg.Dir, ManifestFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(t.cfg.Dir, ManifestFile)); err != nil {
		return errors.Join(fmt.Errorf("testnet: %w", err), os.Remove(tmp))
	}
	return nil
}
