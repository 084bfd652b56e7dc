package directory

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/hce-sync/hce/api"
)

// maxInternalBody bounds the bodies of internal requests.
const maxInternalBody = 2 << 20

// HTTPHandler serves the directory's internal and admin routes (the
// Weave user API is mounted separately with api.NewUserHandler):
//
//	POST /internal/v1/join               add a voter (admin token)
//	POST /internal/v1/forward            apply a forwarded write (admin token)
//	POST /internal/v1/nodes/register     signed storage-node registration
//	GET  /internal/v1/p2p                voters' libp2p peer IDs and addresses (public)
//	GET  /admin/v1/status[?linearizable=1]
//	GET  /admin/v1/nodes
//	GET  /admin/v1/users/{user}
//	POST /admin/v1/nodes/{id}/approve|drain|retire
//
// Admin and voter-to-voter routes need "Authorization: Bearer
// <Config.AdminToken>" (compared in constant time; 401 otherwise, and
// always 401 when no token is configured).
func (d *Directory) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathJoin, d.admin(d.handleJoin))
	mux.HandleFunc("POST "+pathForward, d.admin(d.handleForward))
	mux.HandleFunc("POST "+pathRegister, d.handleRegister)
	mux.HandleFunc("GET "+PathP2P, d.handleP2PInfo)
	mux.HandleFunc("GET /admin/v1/status", d.admin(d.handleStatus))
	mux.HandleFunc("GET /admin/v1/nodes", d.admin(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"nodes": d.Nodes()})
	}))
	mux.HandleFunc("GET /admin/v1/users/{user}", d.admin(d.handleUser))
	mux.HandleFunc("POST /admin/v1/nodes/{id}/{action}", d.admin(d.handleNodeAction))
	return mux
}

// admin wraps h with the admin-token check.
func (d *Directory) admin(h http.HandlerFunc) http.HandlerFunc {
	want := []byte("Bearer " + d.cfg.AdminToken)
	return func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if d.cfg.AdminToken == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hce-directory"`)
			writeJSON(w, http.StatusUnauthorized, wireResult{Error: "unauthorized", Message: "admin token required"})
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// statusOf maps an error to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrBadSignature), errors.Is(err, api.ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, ErrBadRegistration), errors.Is(err, ErrMalformedCommand),
		errors.Is(err, ErrUnknownCommand), errors.Is(err, ErrBadNodeState):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnknownNode), errors.Is(err, api.ErrUserNotFound):
		return http.StatusNotFound
	case errors.Is(err, api.ErrUserExists), errors.Is(err, ErrNodeRetired):
		return http.StatusConflict
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrClosed), errors.Is(err, api.ErrUnavailable),
		errors.Is(err, ErrOutcomeUnknown), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeResult answers with {"ok":true} or the error's code.
func writeResult(w http.ResponseWriter, err error) {
	if err == nil {
		writeJSON(w, http.StatusOK, wireResult{OK: true})
		return
	}
	writeJSON(w, statusOf(err), wireResult{Error: errorCode(err), Message: err.Error()})
}

func (d *Directory) handleJoin(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxInternalBody))
	if err != nil {
		writeResult(w, err)
		return
	}
	var j joinRequest
	if err := json.Unmarshal(body, &j); err != nil {
		writeResult(w, errors.Join(ErrMalformedCommand, err))
		return
	}
	if !d.IsLeader() {
		// Forward once to the leader.
		id, url := d.Leader()
		if r.Header.Get(headerForwarded) != "" || id == "" || url == "" {
			writeResult(w, ErrNotLeader)
			return
		}
		resp, err := d.internalPost(r.Context(), url+pathJoin, "application/json", body, true)
		if err != nil {
			writeResult(w, errors.Join(ErrNotLeader, err))
			return
		}
		writeResult(w, decodeWireResult(resp))
		return
	}
	writeResult(w, d.addVoter(r.Context(), j))
}

// handleForward applies a write another voter forwarded; never forwards.
func (d *Directory) handleForward(w http.ResponseWriter, r *http.Request) {
	enc, err := io.ReadAll(io.LimitReader(r.Body, maxInternalBody))
	if err != nil {
		writeResult(w, err)
		return
	}
	if _, err := DecodeCommand(enc); err != nil {
		writeResult(w, err)
		return
	}
	if err := d.writeLocal(r.Context(), enc); err != nil {
		writeResult(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wireResult{OK: true, Index: d.fsm.appliedIndex()})
}

func (d *Directory) handleRegister(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeResult(w, errors.Join(ErrBadRegistration, err))
		return
	}
	n, err := d.RegisterNode(r.Context(), body, r.Header.Get(SignatureHeader))
	if err != nil {
		writeResult(w, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (d *Directory) handleStatus(w http.ResponseWriter, r *http.Request) {
	lin := r.URL.Query().Get("linearizable")
	s, err := d.Status(r.Context(), lin == "1" || lin == "true")
	if err != nil {
		id, url := d.Leader()
		writeJSON(w, statusOf(err), map[string]any{
			"error": errorCode(err), "message": err.Error(),
			"leader": map[string]string{"id": id, "url": url},
		})
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// nodeRef is a node in the admin user view.
type nodeRef struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

func (d *Directory) handleUser(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	set, fallback, ok := d.fsm.assignment(user)
	if !ok {
		writeResult(w, api.ErrUserNotFound)
		return
	}
	out := struct {
		User     string    `json:"user"`
		Primary  nodeRef   `json:"primary"`
		Replicas []nodeRef `json:"replicas"`
	}{User: user, Primary: nodeRef{URL: fallback}, Replicas: []nodeRef{}}
	for i, n := range set {
		if i == 0 {
			out.Primary = nodeRef{ID: n.ID, URL: n.URL}
			continue
		}
		out.Replicas = append(out.Replicas, nodeRef{ID: n.ID, URL: n.URL})
	}
	writeJSON(w, http.StatusOK, out)
}

func (d *Directory) handleNodeAction(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var err error
	switch r.PathValue("action") {
	case "approve":
		err = d.ApproveNode(r.Context(), id)
	case "drain":
		err = d.DrainNode(r.Context(), id)
	case "retire":
		err = d.RetireNode(r.Context(), id)
	default:
		http.NotFound(w, r)
		return
	}
	writeResult(w, err)
}
