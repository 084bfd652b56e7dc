package directory

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/tokenserver"
	"github.com/hce-sync/hce/directory/state"
)

// maxInternalBody bounds the bodies of internal requests.
const maxInternalBody = 2 << 20

// HTTPHandler serves the directory's internal and admin routes (the
// Weave user API is mounted separately with api.NewUserHandler):
//
//	POST /internal/v1/join               add a voter (admin token)
//	POST /internal/v1/forward            apply a forwarded write (admin token)
//	POST /internal/v1/heartbeat          a node's heartbeat passed on by a follower (admin token)
//	POST /internal/v1/nodes/register     signed storage-node registration
//	GET  /internal/v1/p2p                voters' libp2p peer IDs and addresses (public)
//	GET  /admin/v1/status[?linearizable=1]
//	GET  /admin/v1/nodes                 nodes with their last heartbeat (NodeStatus)
//	GET  /admin/v1/users/{user}          the user's members and leaving nodes (UserView)
//	POST /admin/v1/nodes/{id}/approve|drain|undrain
//	POST /admin/v1/nodes/{id}/retire[?force=accept-data-loss]
//	                                     drain, then retire once nothing is left (RetireProgress);
//	                                     forced: at once, accepting losses
//	GET  /admin/v1/voters                the raft configuration with the voters' records (VotersView)
//	POST /admin/v1/voters                add a voter {id, raft_addr, http_url} (leader; followers pass it on)
//	DELETE /admin/v1/voters/{id}         remove a voter (the leader hands leadership over first)
//	GET  /internal/v1/commands           the command types and versions this voter decodes (admin token)
//	GET  /internal/v1/lookup?user=U      the leader's state about U after a raft barrier (admin token; absent.go)
//	GET  /admin/v1/backup                a backup file of this voter's state (Backup)
//	POST /admin/v1/restore               replace the cluster's state with the backup in the body (leader)
//	GET  /admin/v1/settings              the cluster settings (Settings)
//	PUT  /admin/v1/settings              change them: the JSON fields given replace theirs
//	POST /admin/v1/invites[?ttl=DURATION] a new invite code (InviteView), shown once
//	GET  /admin/v1/invites               the unused invites, without their codes
//	GET  /1.0/sync/1.5                   the Sync 1.5 tokenserver (sync.go)
//	POST /fxa-local/v1/token             an access token of the local issuer (Basic credentials)
//	GET  /fxa-local/v1/jwks              the local issuer's key set
//
// Admin and voter-to-voter routes need "Authorization: Bearer
// <Config.AdminToken>" (compared in constant time; 401 otherwise, and
// always 401 when no token is configured). Every 503 is logged at WARN
// with a crash id that its message names.
func (d *Directory) HTTPHandler() http.Handler {
	a := &httpAPI{d: d}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathJoin, a.admin(a.join))
	mux.HandleFunc("POST "+pathForward, a.admin(a.forward))
	mux.HandleFunc("POST "+pathHeartbeat, a.admin(a.heartbeat))
	mux.HandleFunc("GET "+pathCommands, a.admin(a.commands))
	mux.HandleFunc("GET "+pathLookup, a.admin(a.lookup))
	mux.HandleFunc("POST "+pathRegister, a.register)
	mux.HandleFunc("GET "+PathP2P, a.p2pInfo)
	mux.HandleFunc("GET /admin/v1/status", a.admin(a.status))
	mux.HandleFunc("GET /admin/v1/nodes", a.admin(a.nodes))
	mux.HandleFunc("GET /admin/v1/users/{user}", a.admin(a.user))
	mux.HandleFunc("POST /admin/v1/nodes/{id}/{action}", a.admin(a.nodeAction))
	mux.HandleFunc("GET /admin/v1/voters", a.admin(a.voters))
	mux.HandleFunc("POST /admin/v1/voters", a.admin(a.addVoterHTTP))
	mux.HandleFunc("DELETE /admin/v1/voters/{id}", a.admin(a.removeVoterHTTP))
	mux.HandleFunc("GET /admin/v1/backup", a.admin(a.backupHTTP))
	mux.HandleFunc("POST /admin/v1/restore", a.admin(a.restoreHTTP))
	mux.HandleFunc("GET /admin/v1/settings", a.admin(a.getSettings))
	mux.HandleFunc("PUT /admin/v1/settings", a.admin(a.putSettings))
	mux.HandleFunc("POST /admin/v1/invites", a.admin(a.createInvite))
	mux.HandleFunc("GET /admin/v1/invites", a.admin(a.listInvites))
	mux.HandleFunc("GET "+tokenserver.Path, a.syncToken)
	mux.HandleFunc("POST "+PathFxALocalToken, a.fxaLocalToken)
	mux.HandleFunc("GET "+PathFxALocalJWKS, a.fxaLocalJWKS)
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
			a.d.auth.adminToken.Add(1)
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
		errors.Is(err, ErrUnknownCommand), errors.Is(err, ErrBadNodeState), errors.Is(err, ErrBadVoter):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotCurrentMember), errors.Is(err, api.ErrBadInvite):
		return http.StatusForbidden
	case errors.Is(err, state.ErrTooManyResets):
		return http.StatusTooManyRequests
	case errors.Is(err, state.ErrTooManyInvites):
		return http.StatusConflict
	case errors.Is(err, ErrNoTransfer), errors.Is(err, ErrGated), errors.Is(err, ErrNodeNotDrained),
		errors.Is(err, ErrVoterRemoved):
		return http.StatusConflict
	case errors.Is(err, ErrNodeDown), errors.Is(err, ErrLastVoter):
		return http.StatusConflict
	case errors.Is(err, ErrUnknownNode), errors.Is(err, api.ErrUserNotFound), errors.Is(err, ErrUnknownVoter):
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
func (a *httpAPI) writeResult(w http.ResponseWriter, r *http.Request, err error) {
	a.writeIndexed(w, r, err, 0)
}

// writeIndexed is writeResult carrying a raft index.
func (a *httpAPI) writeIndexed(w http.ResponseWriter, r *http.Request, err error, index uint64) {
	if err == nil {
		writeJSON(w, http.StatusOK, wireResult{OK: true, Index: index})
		return
	}
	status := statusOf(err)
	msg := a.logUnavailable(r, status, err)
	writeJSON(w, status, wireResult{Error: errorCode(err), Message: msg, Index: index})
}

// logUnavailable logs a 503 at WARN with a new crash id and returns the
// error message naming it (the message unchanged for other statuses).
func (a *httpAPI) logUnavailable(r *http.Request, status int, err error) string {
	if status != http.StatusServiceUnavailable {
		return err.Error()
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	crash := hex.EncodeToString(id[:])
	a.d.log.Warn("directory: request failed with 503", "method", r.Method, "path", r.URL.Path, "crash_id", crash, "err", err)
	return err.Error() + " (crash id " + crash + ")"
}

func (a *httpAPI) join(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxInternalBody))
	if err != nil {
		a.writeResult(w, r, err)
		return
	}
	var j joinRequest
	if err := json.Unmarshal(body, &j); err != nil {
		a.writeResult(w, r, errors.Join(ErrMalformedCommand, err))
		return
	}
	if !a.d.IsLeader() {
		// Forward once to the leader.
		id, url := a.d.Leader()
		if r.Header.Get(headerForwarded) != "" || id == "" || url == "" {
			a.writeResult(w, r, ErrNotLeader)
			return
		}
		resp, err := a.d.internalPost(r.Context(), url+pathJoin, "application/json", body, true)
		if err != nil {
			a.writeResult(w, r, errors.Join(ErrNotLeader, err))
			return
		}
		a.writeResult(w, r, decodeWireResult(resp))
		return
	}
	a.writeResult(w, r, a.d.addVoter(r.Context(), j))
}

// forward applies a write another voter forwarded; never forwards.
func (a *httpAPI) forward(w http.ResponseWriter, r *http.Request) {
	enc, err := io.ReadAll(io.LimitReader(r.Body, maxInternalBody))
	if err != nil {
		a.writeResult(w, r, err)
		return
	}
	if _, err := state.DecodeCommand(enc); err != nil {
		a.writeResult(w, r, err)
		return
	}
	if err := a.d.refuseRemovedVoter(enc); err != nil {
		a.writeIndexed(w, r, err, a.d.state.AppliedIndex())
		return
	}
	err = a.d.writeLocal(r.Context(), enc)
	// The applied index goes with errors too: a state-machine error is a
	// result of an applied entry, which the forwarding voter waits for.
	a.writeIndexed(w, r, err, a.d.state.AppliedIndex())
}

// heartbeat records a node's heartbeat a follower passed on; leader only,
// never forwarded.
func (a *httpAPI) heartbeat(w http.ResponseWriter, r *http.Request) {
	var hb forwardedHeartbeat
	dec := json.NewDecoder(io.LimitReader(r.Body, maxInternalBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hb); err != nil || hb.Node == "" || hb.Heartbeat.Validate() != nil {
		a.writeResult(w, r, errors.Join(ErrMalformedCommand, err))
		return
	}
	if !a.d.IsLeader() {
		a.writeResult(w, r, ErrNotLeader)
		return
	}
	a.writeResult(w, r, a.d.beats.beat(r.Context(), hb.Node, hb.Heartbeat))
}

func (a *httpAPI) register(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		a.writeResult(w, r, errors.Join(ErrBadRegistration, err))
		return
	}
	n, err := a.d.RegisterNode(r.Context(), body, r.Header.Get(SignatureHeader))
	if err != nil {
		a.writeResult(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (a *httpAPI) status(w http.ResponseWriter, r *http.Request) {
	lin := r.URL.Query().Get("linearizable")
	s, err := a.d.Status(r.Context(), lin == "1" || lin == "true")
	if err != nil {
		id, url := a.d.Leader()
		status := statusOf(err)
		writeJSON(w, status, map[string]any{
			"error": errorCode(err), "message": a.logUnavailable(r, status, err),
			"leader": map[string]string{"id": id, "url": url},
		})
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// MemberView is one member (or leaving node) in UserView.
type MemberView struct {
	ID  string `json:"id"`
	URL string `json:"url"`
	// Filling: the member may lack acknowledged writes (never for a
	// leaving node); Epoch its filling epoch.
	Filling bool   `json:"filling,omitempty"`
	Epoch   uint64 `json:"epoch,omitempty"`
	// Down: the directory considers the node down.
	Down bool `json:"down,omitempty"`
	// Leave: a rebalancing transfer moves the member off the set.
	Leave bool `json:"leave,omitempty"`
}

// UserView is the answer of GET /admin/v1/users/{user}: the primary (the
// fallback URL alone for a user without a set), the other members in
// order, the nodes that left the set and still owe a handoff, and whether
// a member serves the user's clients now (Waiting: the primary is down
// or filling, node/weave answers 503).
type UserView struct {
	User     string       `json:"user"`
	Primary  MemberView   `json:"primary"`
	Replicas []MemberView `json:"replicas"`
	Leaving  []MemberView `json:"leaving"`
	Waiting  bool         `json:"waiting,omitempty"`
}

func memberView(m MemberInfo) MemberView {
	return MemberView{ID: m.ID, URL: m.URL, Filling: m.Filling, Epoch: m.Epoch, Down: m.Down(), Leave: m.Leave}
}

func (a *httpAPI) user(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	reps, fallback, ok := a.d.state.Replicas(user)
	if !ok {
		a.writeResult(w, r, api.ErrUserNotFound)
		return
	}
	out := UserView{User: user, Primary: MemberView{URL: fallback}, Replicas: []MemberView{}, Leaving: []MemberView{}}
	for i, m := range reps.Members {
		if i == 0 {
			out.Primary = memberView(m)
			continue
		}
		out.Replicas = append(out.Replicas, memberView(m))
	}
	for _, n := range reps.Leaving {
		out.Leaving = append(out.Leaving, memberView(MemberInfo{NodeInfo: n}))
	}
	_, serving := reps.Serving()
	out.Waiting = len(reps.Members) > 0 && !serving
	writeJSON(w, http.StatusOK, out)
}

// NodeStatus is one node in the answer of GET /admin/v1/nodes: its
// record (NodeInfo: Load members, Leaving handoffs owed) and, when this
// voter has seen one, its last heartbeat. The leader sees every node's
// heartbeats; a follower only those it passed on.
type NodeStatus struct {
	NodeInfo
	// Waiting, for a down node, is how many users wait for it: it holds
	// their only current copy, so they stayed in place (node/weave
	// answers 503 for them until it returns).
	Waiting   int              `json:"waiting,omitempty"`
	Heartbeat *HeartbeatStatus `json:"heartbeat,omitempty"`
}

// HeartbeatStatus is what a node's last heartbeat said.
type HeartbeatStatus struct {
	// AgeMS is how long ago this voter received it.
	AgeMS int64 `json:"age_ms"`
	// Load is the number of users the node says it serves.
	Load int `json:"load"`
	// Unconfirmed counts the writes the node acknowledged, since it
	// started, without every other member's confirmation.
	Unconfirmed uint64 `json:"unconfirmed"`
	// HandoffBacklog is the number of users the node holds as a leaving
	// member, not yet handed off.
	HandoffBacklog int `json:"handoff_backlog"`
	// SkewMS is the node's clock minus this voter's, when it was sent.
	SkewMS int64 `json:"skew_ms"`
}

// NodesView is the answer of GET /admin/v1/nodes.
type NodesView struct {
	Nodes []NodeStatus `json:"nodes"`
	// Voter is the answering voter; Leader the leader it knows.
	Voter  string `json:"voter"`
	Leader string `json:"leader"`
	// Transfers is the number of rebalancing transfers under way.
	Transfers int `json:"transfers"`
}

func (a *httpAPI) nodes(w http.ResponseWriter, _ *http.Request) {
	now := a.d.cfg.Clock()
	beats := a.d.beats.beats()
	out := NodesView{Nodes: []NodeStatus{}, Voter: a.d.cfg.ID, Transfers: a.d.state.Transfers()}
	out.Leader, _ = a.d.Leader()
	for _, n := range a.d.Nodes() {
		st := NodeStatus{NodeInfo: n}
		if n.Down() {
			st.Waiting = n.Load
		}
		if hb, ok := beats[n.ID]; ok {
			st.Heartbeat = &HeartbeatStatus{
				AgeMS: now.Sub(hb.at).Milliseconds(), Load: hb.req.Load, Unconfirmed: hb.req.Unconfirmed,
				HandoffBacklog: hb.req.HandoffBacklog, SkewMS: hb.req.Time - hb.at.UnixMilli(),
			}
		}
		out.Nodes = append(out.Nodes, st)
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
	case "undrain":
		err = a.d.UndrainNode(r.Context(), id)
	case "retire":
		a.retireHTTP(w, r, id)
		return
	default:
		http.NotFound(w, r)
		return
	}
	a.writeResult(w, r, err)
}

func (a *httpAPI) getSettings(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.d.Settings())
}

// putSettings replaces the settings named in the JSON body, keeping the
// others, and answers the settings as committed.
func (a *httpAPI) putSettings(w http.ResponseWriter, r *http.Request) {
	s := a.d.Settings()
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		writeJSON(w, http.StatusBadRequest, wireResult{Error: "bad_request", Message: err.Error()})
		return
	}
	if s.MaxNodeCapacity < 0 || s.MaxOperatorCapacity < 0 || s.Replicas < 0 || s.DownAfterMS < 0 {
		writeJSON(w, http.StatusBadRequest, wireResult{Error: "bad_request", Message: "negative setting"})
		return
	}
	if err := a.d.SetSettings(r.Context(), s); err != nil {
		a.writeResult(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a.d.Settings())
}

// InviteView is an invite in the admin API: the code only when it is
// created (it is stored hashed), its hash and expiry.
type InviteView struct {
	Code    string `json:"code,omitempty"`
	Hash    string `json:"hash"`
	Created int64  `json:"created,omitempty"`
	Expires int64  `json:"expires"`
}

func (a *httpAPI) createInvite(w http.ResponseWriter, r *http.Request) {
	var ttl time.Duration
	if s := r.URL.Query().Get("ttl"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			writeJSON(w, http.StatusBadRequest, wireResult{Error: "bad_request", Message: "ttl must be a positive duration (e.g. 72h)"})
			return
		}
		ttl = d
	}
	code, exp, err := a.d.CreateInvite(r.Context(), ttl)
	if err != nil {
		a.writeResult(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, InviteView{Code: code, Hash: state.InviteHash(code), Expires: exp.Unix()})
}

func (a *httpAPI) listInvites(w http.ResponseWriter, _ *http.Request) {
	out := struct {
		Invites []InviteView `json:"invites"`
	}{Invites: []InviteView{}}
	now := a.d.cfg.Clock().Unix()
	for _, inv := range a.d.Invites() {
		if inv.Expires > now {
			out.Invites = append(out.Invites, InviteView{Hash: inv.Hash, Created: inv.Created, Expires: inv.Expires})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *httpAPI) p2pInfo(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, P2PInfo{Voters: a.d.P2PVoters()})
}
