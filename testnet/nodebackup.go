package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/node"
)

// Node backups. A running node takes a backup when asked over a unix
// socket in its data folder (AdminSocket): only the node's own user (and
// root) can connect, the trust of reading the data folder itself, which
// a backup amounts to; it needs no token that could leak, and it is
// never reachable from the network, unlike a route on the node's public
// HTTP listener. The backup is a folder: the Pebble checkpoint of the
// whole store (store/), the node's identity (node.key) and a manifest
// (backup.json). RestoreNode turns it into a data folder offline; the
// node started on it tells the directory before it serves
// (dirproto.ProtoRestored), which makes it backfill what it missed.

// File names in a node's data folder and in a backup.
const (
	// AdminSocket is the unix socket of a running node's local admin
	// requests (backups), in its data folder.
	AdminSocket = "admin.sock"
	// BackupManifest describes a node backup.
	BackupManifest = "backup.json"
	// RestoredMarker, in a data folder, says its store came from a
	// backup and the directory has not been told yet.
	RestoredMarker = "restored.json"
	nodeKeyFile    = p2p.KeyFile
)

// Node backup format.
const (
	backupFormat  = "hce-node-backup"
	backupVersion = 1
)

// ErrBadNodeBackup means a folder is not a node backup this build can
// restore.
var ErrBadNodeBackup = errors.New("testnet: not a usable node backup")

// NodeBackup is a node backup's manifest (BackupManifest).
type NodeBackup struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	// Node is the node's ID (its key's peer ID); Store its store's UUID
	// when the backup was taken.
	Node  string `json:"node"`
	Store string `json:"store"`
	// Created is when the checkpoint was taken (RFC 3339); Bytes the
	// size of the store's files; TookMS how long the checkpoint took.
	Created string `json:"created"`
	Bytes   int64  `json:"bytes"`
	TookMS  int64  `json:"took_ms"`
}

// Backup writes a backup of the running node into dir, which must not
// exist: a checkpoint of the whole store taken while the node serves
// (node.Store.Checkpoint), its identity key and the manifest.
func (n *Node) Backup(dir string) (NodeBackup, error) {
	if !filepath.IsAbs(dir) {
		return NodeBackup{}, fmt.Errorf("testnet: backup folder %q is not an absolute path", dir)
	}
	if _, err := os.Stat(dir); err == nil {
		return NodeBackup{}, fmt.Errorf("%w: %s", node.ErrBackupExists, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return NodeBackup{}, err
	}
	begin := time.Now()
	info, err := n.store.Checkpoint(filepath.Join(dir, "store"))
	if err != nil {
		return NodeBackup{}, err
	}
	if err := copyFile(filepath.Join(n.dir, nodeKeyFile), filepath.Join(dir, nodeKeyFile), 0o600); err != nil {
		return NodeBackup{}, fmt.Errorf("testnet: backup of the node key: %w", err)
	}
	b := NodeBackup{Format: backupFormat, Version: backupVersion, Node: n.ID(), Store: info.UUID,
		Created: begin.UTC().Format(time.RFC3339Nano), Bytes: info.Bytes, TookMS: time.Since(begin).Milliseconds()}
	if err := writeJSONSync(filepath.Join(dir, BackupManifest), b); err != nil {
		return NodeBackup{}, err
	}
	return b, syncDir(dir)
}

// RestoredNode says what RestoreNode did.
type RestoredNode struct {
	Backup NodeBackup `json:"backup"`
	// OldStore and NewStore are the store's UUID in the backup and the
	// one the restored store got.
	OldStore string `json:"old_store"`
	NewStore string `json:"new_store"`
}

// RestoreNode makes data (absent or empty) a node data folder from the
// backup in from: the store and the identity copied, the store given a
// new UUID (node.RenewUUID: peers then pull its feed from the start, so
// nothing it writes after the restore is skipped) and a RestoredMarker,
// so that the node started on it tells the directory it may lack writes
// made since the backup before it serves. The node that was backed up
// must not run any more: the restored one takes its identity.
func RestoreNode(from, data string) (RestoredNode, error) {
	var out RestoredNode
	b, err := os.ReadFile(filepath.Join(from, BackupManifest))
	if err != nil {
		return out, fmt.Errorf("%w: %v", ErrBadNodeBackup, err)
	}
	if err := json.Unmarshal(b, &out.Backup); err != nil {
		return out, fmt.Errorf("%w: %s: %v", ErrBadNodeBackup, BackupManifest, err)
	}
	if out.Backup.Format != backupFormat || out.Backup.Version != backupVersion {
		return out, fmt.Errorf("%w: format %q version %d; this build restores %q version %d",
			ErrBadNodeBackup, out.Backup.Format, out.Backup.Version, backupFormat, backupVersion)
	}
	if ents, err := os.ReadDir(data); err == nil && len(ents) > 0 {
		return out, fmt.Errorf("testnet: restore into %s: the folder is not empty", data)
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return out, err
	}
	if err := copyTree(filepath.Join(from, "store"), filepath.Join(data, "store")); err != nil {
		return out, fmt.Errorf("testnet: restoring the store: %w", err)
	}
	if err := copyFile(filepath.Join(from, nodeKeyFile), filepath.Join(data, nodeKeyFile), 0o600); err != nil {
		return out, fmt.Errorf("testnet: restoring the node key: %w", err)
	}
	if out.OldStore, out.NewStore, err = node.RenewUUID(filepath.Join(data, "store"), nil); err != nil {
		return out, err
	}
	if err := writeJSONSync(filepath.Join(data, RestoredMarker), out); err != nil {
		return out, err
	}
	return out, syncDir(data)
}

// tellRestored tells the directory, before the node serves, that its
// store came from a backup (the RestoredMarker in dir), retrying until
// the directory committed it or ctx ends; then it removes the marker.
func (n *Node) tellRestored(ctx context.Context, dir string, log *slog.Logger) error {
	path := filepath.Join(dir, RestoredMarker)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var r RestoredNode
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("testnet: %s: %w", path, err)
	}
	req := dirproto.RestoredRequest{Store: r.NewStore, OldStore: r.OldStore}
	var last time.Time
	for {
		err := n.dc.Restored(ctx, req)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("restored from a backup, the directory could not be told (it must, before this node serves): %w", err)
		}
		if time.Since(last) > 5*time.Second {
			last = time.Now()
			log.Warn("restored from a backup: telling the directory before serving", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	log.Info("restored from a backup: the directory knows; backfilling what was written since",
		"backup", r.Backup.Created, "old_store", r.OldStore, "store", r.NewStore)
	return os.Remove(path)
}

// serveAdminSocket serves the node's local admin requests on the unix
// socket AdminSocket in dir until ctx ends:
//
//	POST /backup?to=ABSOLUTE-DIR   Backup (NodeBackup as JSON)
func (n *Node) serveAdminSocket(ctx context.Context, dir string, log *slog.Logger) error {
	path := filepath.Join(dir, AdminSocket)
	// A socket left by a process that died: the data folder lock is ours.
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		log.Warn("testnet: no admin socket (hce node backup will not reach this node)", "path", path, "err", err)
		return nil
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /backup", func(w http.ResponseWriter, r *http.Request) {
		to := r.URL.Query().Get("to")
		log.Info("backup requested", "to", to)
		b, err := n.Backup(to)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			log.Warn("backup failed", "to", to, "err", err)
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		log.Info("backup done", "to", to, "bytes", b.Bytes, "took_ms", b.TookMS)
		_ = json.NewEncoder(w).Encode(b)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	n.runs.Add(2)
	go func() {
		defer n.runs.Done()
		_ = srv.Serve(ln)
	}()
	go func() {
		defer n.runs.Done()
		<-ctx.Done()
		_ = srv.Close()
		_ = os.Remove(path)
	}()
	return nil
}

// RequestBackup asks the node running on data folder dataDir (over its
// AdminSocket) to write a backup into to (an absolute path that must not
// exist).
func RequestBackup(ctx context.Context, dataDir, to string) (NodeBackup, error) {
	sock := filepath.Join(dataDir, AdminSocket)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://node/backup?to="+url.QueryEscape(to), nil)
	if err != nil {
		return NodeBackup{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return NodeBackup{}, fmt.Errorf("no node answers on %s (is it running on that data folder, as this user?): %w", sock, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.Unmarshal(body, &e)
		return NodeBackup{}, fmt.Errorf("backup refused: %s", strings.TrimSpace(e.Error))
	}
	var b NodeBackup
	if err := json.Unmarshal(body, &b); err != nil {
		return NodeBackup{}, err
	}
	return b, nil
}

// copyTree copies the regular files under from into to (created).
func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		return copyFile(p, dst, 0o600)
	})
}

// copyFile copies a file, synced.
func copyFile(from, to string, perm os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err = io.Copy(out, in); err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeJSONSync writes v as indented JSON to path, synced.
func writeJSONSync(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(append(b, '\n')); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir fsyncs a folder, so the names in it are durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// SetDataDir points a stopped node of the testnet (by ID or short name)
// at another data folder, for its next Restart: a node restored from a
// backup into a new folder (RestoreNode).
func (t *Testnet) SetDataDir(id, dir string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.find(id)
	if m == nil || m.voter {
		return fmt.Errorf("%w: node %q", ErrUnknownMember, id)
	}
	if m.running() {
		return fmt.Errorf("%w: %s", ErrRunning, m.name)
	}
	m.data = dir
	return nil
}

// DataDir is the data folder of a voter or node (by ID or short name).
func (t *Testnet) DataDir(id string) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.find(id)
	if m == nil {
		return "", fmt.Errorf("%w: %q", ErrUnknownMember, id)
	}
	return m.data, nil
}
