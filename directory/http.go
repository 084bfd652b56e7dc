package directory

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/state"
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
	a := &httpAPI{d: d}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathJoin, a.admin(a.join))
	mux.HandleFunc("POST "+pathForward, a.admin(a.forward))
	mux.HandleFunc("POST "+pathRegister, a.register)
	mux.HandleFunc("GET "+PathP2P, a.p2pInfo)
	mux.HandleFunc("GET /admin/v1/status", a.admin(a.status))
	mux.HandleFunc("GET /admin/v1/nodes", a.admin(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"nodes": d.Nodes()})
	}))
	mux.HandleFunc("GET /admin/v1/users/{user}", a.admin(a.user))
	mux.HandleFunc("POST /admin/v1/nodes/{id}/{action}", a.admin(a.nodeAction))
	return mux
}

// httpAPI serves HTTPHandler's routes for a Directory.
type httpAPI struct{ d *Directory }

// admin wraps h with the admin-token check.
func (a *httpAPI) admin(h http.HandlerFunc) http.HandlerFunc {
	want := []byte("Bearer " + a.d.cfg.AdminToken)
	return func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if a.d.cfg.AdminToken == "" || subtle.ConstantTimeCompare(got, want) != 1 {
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

func (a *httpAPI) join(w http.ResponseWriter, r *http.Request) {
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
	if !a.d.IsLeader() {
		// Forward once to the leader.
		id, url := a.d.Leader()
		if r.Header.Get(headerForwarded) != "" || id == "" || url == "" {
			writeResult(w, ErrNotLeader)
			return
		}
		resp, err := a.d.internalPost(r.Context(), url+pathJoin, "application/json", body, true)
		if err != nil {
			writeResult(w, errors.Join(ErrNotLeader, err))
			return
		}
		writeResult(w, decodeWireResult(resp))
		return
	}
	writeResult(w, a.d.addVoter(r.Context(), j))
}

// forward applies a write another voter forwarded; never forwards.
func (a *httpAPI) forward(w http.ResponseWriter, r *http.Request) {
	enc, err := io.ReadAll(io.LimitReader(r.Body, maxInternalBody))
	if err != nil {
		writeResult(w, err)
		return
	}
	if _, err := state.DecodeCommand(enc); err != nil {
		writeResult(w, err)
		return
	}
	if err := a.d.writeLocal(r.Context(), enc); err != nil {
		writeResult(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wireResult{OK: true, Index: a.d.state.AppliedIndex()})
}

func (a *httpAPI) register(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeResult(w, errors.Join(ErrBadRegistration, err))
		return
	}
	n, err := a.d.RegisterNode(r.Context(), body, r.Header.Get(SignatureHeader))
	if err != nil {
		writeResult(w, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (a *httpAPI) status(w http.ResponseWriter, r *http.Request) {
	lin := r.URL.Query().Get("linearizable")
	s, err := a.d.Status(r.Context(), lin == "1" || lin == "true")
	if err != nil {
		id, url := a.d.Leader()
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

func (a *httpAPI) user(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	set, fallback, ok := a.d.state.Assignment(user)
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

func (a *httpAPI) nodeAction(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var err error
	switch r.PathValue("action") {
	case "approve":
		err = a.d.ApproveNode(r.Context(), id)
	case "drain":
		err = a.d.DrainNode(r.Context(), id)
	case "retire":
		err = a.d.RetireNode(r.Context(), id)
	default:
		http.NotFound(w, r)
		return
	}
	writeResult(w, err)
}

func (a *httpAPI) p2pInfo(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, P2PInfo{Voters: a.d.P2PVoters()})
}
