package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
)

// ErrNodeDown means a node that is down cannot be retired without
// accepting a loss: it cannot hand its data over. Bring it back, or
// retire it with force.
var ErrNodeDown = errors.New("directory: storage node is down: it cannot hand its users over")

// RetireProgress is where a retirement stands (Retire, POST
// /admin/v1/nodes/{id}/retire).
type RetireProgress struct {
	// Retired: the node is retired; its data may be released.
	Retired bool `json:"retired"`
	// State is the node's state ("draining" while its users move).
	State string `json:"state"`
	// Load is how many sets still list the node as a member, Leaving
	// how many leaving lists still name it (handoffs it owes).
	Load    int `json:"load"`
	Leaving int `json:"leaving"`
}

// Retire retires a storage node only once every user it held is on
// other current members and every handoff it owed is done: an active
// node is drained first (DrainNode), and the node is retired
// (RetireDrained) when no set names it any more. Call it again until
// Retired: each call takes the next step and reports the progress. A
// pending node holds nothing and is retired at once; a down node cannot
// hand anything over (ErrNodeDown): bring it back, or ForceRetireNode.
func (d *Directory) Retire(ctx context.Context, id string) (RetireProgress, error) {
	n, ok := d.state.Node(id)
	if !ok {
		return RetireProgress{}, fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	switch n.State {
	case placement.Retired.String():
		return RetireProgress{Retired: true, State: n.State}, nil
	case placement.Down.String():
		return progressOf(n), fmt.Errorf("%w (%d users, %d handoffs)", ErrNodeDown, n.Load, n.Leaving)
	case placement.Active.String():
		if err := d.DrainNode(ctx, id); err != nil {
			return progressOf(n), err
		}
		n, _ = d.state.Node(id)
	}
	if n.Load > 0 || n.Leaving > 0 {
		return progressOf(n), nil
	}
	err := d.write(ctx, state.RetireDrained{ID: id})
	if errors.Is(err, ErrGated) {
		// An older voter would not decode RetireDrained. A draining node
		// with nothing left gets nothing back but by an undrain, so the
		// check just made holds: retire it the old way.
		d.log.Warn("directory: retiring a drained node with RetireNode: not every voter decodes RetireDrained", "node", id)
		err = d.write(ctx, state.RetireNode{ID: id})
	}
	if errors.Is(err, ErrNodeNotDrained) {
		n, _ = d.state.Node(id)
		return progressOf(n), nil
	}
	if err != nil {
		return progressOf(n), err
	}
	n, _ = d.state.Node(id)
	d.log.Info("directory: storage node retired after its users moved", "node", id)
	return progressOf(n), nil
}

// progressOf reports a node's record as a retirement's progress.
func progressOf(n NodeInfo) RetireProgress {
	return RetireProgress{Retired: n.State == placement.Retired.String(), State: n.State, Load: n.Load, Leaving: n.Leaving}
}

// ForceRetireNode retires a storage node at once, whatever it still
// holds (RetireNode): for a node that is gone for good. A set whose only
// current copies it held has its filling members made current, and the
// writes acknowledged only on the node are lost (logged at ERROR).
func (d *Directory) ForceRetireNode(ctx context.Context, id string) error {
	return d.RetireNode(ctx, id)
}

// UndrainNode ends a node's drain (state.UndrainNode): it becomes active
// again and keeps the users that have not moved yet; the replacements
// that have not backfilled leave those sets. It fails with
// ErrBadNodeState unless the node drains, and with ErrGated while some
// voter does not decode the command.
func (d *Directory) UndrainNode(ctx context.Context, id string) error {
	return d.write(ctx, state.UndrainNode{ID: id})
}

// forceRetire is the value of ?force= that retires a node at once.
const forceRetire = "accept-data-loss"

// commands answers GET /internal/v1/commands.
func (a *httpAPI) commands(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, commandsAnswer{ID: a.d.cfg.ID, Commands: knownCommands()})
}

// voters answers GET /admin/v1/voters.
func (a *httpAPI) voters(w http.ResponseWriter, r *http.Request) {
	v, err := a.d.Voters()
	if err != nil {
		a.writeResult(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// addVoterHTTP answers POST /admin/v1/voters ({id, raft_addr, http_url}).
func (a *httpAPI) addVoterHTTP(w http.ResponseWriter, r *http.Request) {
	var j joinRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		a.writeResult(w, r, fmt.Errorf("%w: %w", ErrBadVoter, err))
		return
	}
	if !a.d.IsLeader() {
		if r.Header.Get(headerForwarded) != "" {
			a.writeResult(w, r, ErrNotLeader)
			return
		}
		body, _ := json.Marshal(j)
		a.writeResult(w, r, a.d.viaLeader(r.Context(), http.MethodPost, "/admin/v1/voters", body))
		return
	}
	a.writeResult(w, r, a.d.addVoter(r.Context(), j))
}

// removeVoterHTTP answers DELETE /admin/v1/voters/{id}.
func (a *httpAPI) removeVoterHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !a.d.IsLeader() {
		if r.Header.Get(headerForwarded) != "" {
			a.writeResult(w, r, ErrNotLeader)
			return
		}
		a.writeResult(w, r, a.d.viaLeader(r.Context(), http.MethodDelete, "/admin/v1/voters/"+id, nil))
		return
	}
	a.writeResult(w, r, a.d.removeVoter(r.Context(), id))
}

// retireHTTP answers POST /admin/v1/nodes/{id}/retire[?force=accept-data-loss].
func (a *httpAPI) retireHTTP(w http.ResponseWriter, r *http.Request, id string) {
	switch f := r.URL.Query().Get("force"); f {
	case "":
	case forceRetire:
		if err := a.d.ForceRetireNode(r.Context(), id); err != nil {
			a.writeResult(w, r, err)
			return
		}
		n, _ := a.d.state.Node(id)
		writeJSON(w, http.StatusOK, progressOf(n))
		return
	default:
		writeJSON(w, http.StatusBadRequest, wireResult{Error: "bad_request",
			Message: fmt.Sprintf("force=%q: the only forced retirement is force=%s", f, forceRetire)})
		return
	}
	p, err := a.d.Retire(r.Context(), id)
	if err != nil {
		status := statusOf(err)
		writeJSON(w, status, map[string]any{"error": errorCode(err), "message": a.logUnavailable(r, status, err),
			"state": p.State, "load": p.Load, "leaving": p.Leaving})
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// backupHTTP answers GET /admin/v1/backup with a backup file of this
// voter's state (Backup); the header is also in X-Hce-Backup.
func (a *httpAPI) backupHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="hce-directory.backup"`)
	ww := &wroteWriter{w: w}
	if _, err := a.d.Backup(r.Context(), ww); err != nil {
		// Once bytes are out, a cut answer never passes for a whole
		// backup: the header line gives the snapshot's size.
		a.d.log.Warn("directory: backup failed", "err", err)
		if !ww.wrote {
			status := statusOf(err)
			writeJSON(w, status, wireResult{Error: errorCode(err), Message: a.logUnavailable(r, status, err)})
		}
	}
}

// wroteWriter remembers whether anything was written.
type wroteWriter struct {
	w     io.Writer
	wrote bool
}

func (w *wroteWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.w.Write(p)
}

// restoreHTTP answers POST /admin/v1/restore (the body is a backup
// file): leader only (a follower answers 503 naming the leader).
func (a *httpAPI) restoreHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.d.IsLeader() {
		id, url := a.d.Leader()
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "not_leader",
			"message": "restore goes to the leader", "leader": map[string]string{"id": id, "url": url}})
		return
	}
	info, err := a.d.Restore(r.Context(), r.Body)
	if err != nil {
		status := statusOf(err)
		if errors.Is(err, ErrBadBackup) {
			status = http.StatusBadRequest
		}
		writeJSON(w, status, wireResult{Error: errorCode(err), Message: a.logUnavailable(r, status, err)})
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// MarkRestored records that storage node id was restored from a backup
// (state.MarkRestored): it becomes filling wherever another member is
// current, and backfills before it serves those users again.
func (d *Directory) MarkRestored(ctx context.Context, id string) error {
	return d.write(ctx, state.MarkRestored{Node: id})
}

// restored answers dirproto.ProtoRestored.
func (s *p2pServer) restored(ctx context.Context, from peer.ID, r dirproto.RestoredRequest) (struct{}, error) {
	self, err := s.admittedNode(from)
	if err != nil {
		return struct{}{}, err
	}
	if err := s.d.MarkRestored(ctx, self.ID); err != nil {
		return struct{}{}, p2pError(err)
	}
	s.d.log.Warn("directory: storage node restored from a backup: it backfills before it serves again",
		"node", self.ID, "store", r.Store, "old_store", r.OldStore)
	return struct{}{}, nil
}
