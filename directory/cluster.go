package directory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/state"
)

// Paths of the voter-to-voter endpoints served by HTTPHandler.
const (
	pathJoin     = "/internal/v1/join"
	pathForward  = "/internal/v1/forward"
	pathRegister = "/internal/v1/nodes/register"
	// headerForwarded marks a request one voter sent another; it is never
	// forwarded again.
	headerForwarded = "X-Hce-Forwarded"
)

// joinRequest is the body of POST /internal/v1/join.
type joinRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPURL  string `json:"http_url"`
}

// Errors of a cluster voter's first start.
var (
	// ErrNoCluster means a cluster voter with no raft state was given
	// neither Cluster.Bootstrap nor Cluster.Join: it could only wait
	// forever for a cluster that does not know it.
	ErrNoCluster = errors.New("directory: no raft state, and neither Bootstrap nor Join given")
	// ErrJoinRefused means the voter at Cluster.Join refused this voter's
	// admin token (401): retrying cannot succeed.
	ErrJoinRefused = errors.New("directory: join refused: wrong admin token")
)

// startCluster runs after raft started: it starts the liveness loop (and,
// with a libp2p host, the voter-record loop), then, on the first start of
// a cluster voter, joins the cluster (Cluster.Join) and waits until this
// voter's record is committed. ctx bounds the wait.
func (d *Directory) startCluster(ctx context.Context) error {
	d.spawn(d.beats.run)
	d.spawn(d.placementLoop)
	d.spawn(d.members.run)
	if d.host != nil {
		d.spawn(d.voterRecordLoop)
	}
	if !d.cfg.clustered() {
		return nil
	}
	d.spawn(d.votersLoop)
	if !d.stores.fresh && !d.cfg.Cluster.Bootstrap {
		// A restarted voter: it catches up from the current leader in the
		// background; Open does not wait for a quorum.
		return nil
	}
	if d.stores.fresh && !d.cfg.Cluster.Bootstrap && d.cfg.Cluster.Join == "" && !d.cfg.Cluster.AwaitAdd {
		return ErrNoCluster
	}
	joined := d.cfg.Cluster.Join == ""
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	awaiting := d.stores.fresh && d.cfg.Cluster.AwaitAdd && d.cfg.Cluster.Join == "" && !d.cfg.Cluster.Bootstrap
	var lastSay time.Time
	for {
		if awaiting && time.Since(lastSay) > 30*time.Second {
			lastSay = time.Now()
			d.log.Info("directory: waiting to be added to a cluster: run on any voter's host: hce admin voter add "+
				d.cfg.ID+" --raft "+string(d.stores.trans.LocalAddr())+" --url "+d.cfg.Cluster.HTTPURL, "id", d.cfg.ID)
		}
		if !joined {
			err := d.join(ctx)
			if err == nil {
				joined = true
			} else if errors.Is(err, api.ErrUnauthorized) {
				return fmt.Errorf("%w (%s answered 401)", ErrJoinRefused, d.cfg.Cluster.Join)
			} else {
				d.log.Debug("directory: join failed, retrying", "via", d.cfg.Cluster.Join, "err", err)
			}
		}
		if joined {
			if d.voterRecorded() {
				d.member.Store(true)
				return nil
			}
			if _, id := d.raft.LeaderWithID(); id != "" {
				wctx, cancel := context.WithTimeout(ctx, time.Second)
				err := d.write(wctx, d.selfVoter())
				cancel()
				if err == nil {
					continue
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("directory: joining the cluster: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// join asks the voter at Cluster.Join to add this one.
func (d *Directory) join(ctx context.Context) error {
	body, _ := json.Marshal(joinRequest{ID: d.cfg.ID, RaftAddr: string(d.stores.trans.LocalAddr()), HTTPURL: d.cfg.Cluster.HTTPURL})
	resp, err := d.internalPost(ctx, d.cfg.Cluster.Join+pathJoin, "application/json", body, false)
	if err != nil {
		return err
	}
	return decodeWireResult(resp)
}

// internalPost sends an authenticated voter-to-voter POST, bounded by
// Raft.ApplyTimeout.
func (d *Directory) internalPost(ctx context.Context, url, ctype string, body []byte, forwarded bool) (*http.Response, error) {
	return d.internalRequest(ctx, d.cfg.Raft.ApplyTimeout, http.MethodPost, url, ctype, body, forwarded)
}

// internalRequest sends an authenticated voter-to-voter request bounded
// by timeout (the response body included: closing it ends the bound).
func (d *Directory) internalRequest(ctx context.Context, timeout time.Duration, method, url, ctype string, body []byte, forwarded bool) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Authorization", "Bearer "+d.cfg.AdminToken)
	if forwarded {
		req.Header.Set(headerForwarded, "1")
	}
	resp, err := d.cfg.Cluster.HTTPClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// statusError is another voter's answer other than 200 to getJSON.
type statusError struct {
	code   int
	status string
}

func (e *statusError) Error() string { return e.status }

// getJSON sends an admin-token GET of url to another voter, bounded by
// timeout, and decodes its JSON answer (at most 1 MiB) into out. Unknown
// fields are ignored: the voter may run a later build (rolling upgrades).
// An answer other than 200 is a *statusError.
func (d *Directory) getJSON(ctx context.Context, url string, timeout time.Duration, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.cfg.AdminToken)
	resp, err := d.cfg.Cluster.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return &statusError{code: resp.StatusCode, status: resp.Status}
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// addVoter adds (or re-addresses) a voter; leader only. The voter must
// answer at its raft address with a certificate of the directory CA for
// its ID (admitVoter).
func (d *Directory) addVoter(ctx context.Context, j joinRequest) error {
	if j.ID == "" || j.RaftAddr == "" || j.HTTPURL == "" {
		return fmt.Errorf("%w: join needs id, raft_addr and http_url", ErrMalformedCommand)
	}
	if d.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if err := d.admitVoter(ctx, j); err != nil {
		return err
	}
	start := time.Now()
	f := d.raft.AddVoter(raft.ServerID(j.ID), raft.ServerAddress(j.RaftAddr), 0, d.cfg.Raft.ApplyTimeout)
	if err := d.awaitFuture(ctx, f); err != nil {
		return mapRaftErr(err)
	}
	d.log.Info("directory: voter added", "id", j.ID, "raft", j.RaftAddr, "http", j.HTTPURL, "took", time.Since(start))
	return d.writeLocal(ctx, mustEncode(state.SetVoter{ID: j.ID, HTTPURL: strings.TrimSuffix(j.HTTPURL, "/"), RaftAddr: j.RaftAddr}))
}

// Leader returns the current leader's voter ID and HTTP URL as this voter
// knows them ("" when unknown).
func (d *Directory) Leader() (id, httpURL string) {
	_, lid := d.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	id = string(lid)
	if id == d.cfg.ID && d.cfg.Cluster.HTTPURL != "" {
		return id, d.cfg.Cluster.HTTPURL
	}
	return id, d.state.Voters()[id].HTTPURL
}

// IsLeader reports whether this voter is the raft leader.
func (d *Directory) IsLeader() bool { return d.raft.State() == raft.Leader }

// leaderWait bounds how long a write on a cluster voter waits for a
// leader it can reach (an election, a dead leader's address marked stale)
// before it fails with ErrNotLeader.
const leaderWait = 5 * time.Second

// leaderPoll is how often a write waiting for a leader looks again.
const leaderPoll = 20 * time.Millisecond

// errRetryLeader marks a write that was certainly not applied and may be
// sent again once another leader (or term) is known: the forward failed
// before the request was sent, or the target answered that it does not
// lead.
var errRetryLeader = errors.New("directory: write not sent; retry with a new leader")

// propose commits an encoded write: on the leader through the group
// commit, on a follower by forwarding it to the leader (forwardTo). While
// no usable leader is known (an election, or only a leader address marked
// stale) a cluster voter waits, up to leaderWait in leaderPoll steps, and
// then tries again, so a write during a leader change succeeds once the
// new leader is elected instead of failing at once. Writes whose outcome
// is unknown (sent, no answer; leadership lost with the entry in raft)
// are never retried: ErrOutcomeUnknown.
func (d *Directory) propose(ctx context.Context, enc []byte) error {
	// The gate holds on the proposing voter too: a leader of an older
	// build, which has no gate, would refuse a command it cannot decode
	// less clearly.
	if err := d.gate.check(ctx, enc); err != nil {
		return err
	}
	deadline := time.Now().Add(leaderWait)
	var last error
	for {
		if d.closed.Load() || d.raft.State() == raft.Shutdown {
			return ErrNotLeader
		}
		var err error
		if d.IsLeader() {
			err = d.writeLocal(ctx, enc)
			if !errors.Is(err, ErrNotLeader) {
				return err
			}
		} else if t, ok := d.leaderTarget(); ok {
			err = d.forwardTo(ctx, t, enc)
			if !errors.Is(err, errRetryLeader) {
				return err
			}
		}
		if err != nil {
			last = err
		}
		if !d.cfg.clustered() {
			return ErrNotLeader // a single voter has nobody to wait for
		}
		if time.Now().After(deadline) {
			if last == nil {
				last = errors.New("no leader known")
			}
			return fmt.Errorf("%w: no reachable leader within %v (last: %v)", ErrNotLeader, leaderWait, last)
		}
		t := time.NewTimer(leaderPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-d.ctx.Done():
			t.Stop()
			return ErrClosed
		case <-t.C:
		}
	}
}

// leaderTarget is a leader a follower forwards to: its voter ID, HTTP
// URL and the raft term in which this voter saw it lead.
type leaderTarget struct {
	id, url string
	term    uint64
}

// staleLeader is the last leader address a forward could not reach
// (marked by markStale).
type staleLeader struct {
	mu     sync.Mutex
	target leaderTarget
	at     time.Time
}

// leaderTarget returns the leader to forward to, if one is known, has an
// HTTP URL, is not this voter, and is not the stale one: the same address
// in the same term with no contact from the leader over raft since it was
// marked (a leader that a partition hid is used again once raft hears from
// it; a dead one only after a new election).
func (d *Directory) leaderTarget() (leaderTarget, bool) {
	id, url := d.Leader()
	if id == "" || id == d.cfg.ID || url == "" || d.cfg.AdminToken == "" {
		return leaderTarget{}, false
	}
	t := leaderTarget{id: id, url: url, term: d.raft.CurrentTerm()}
	d.stale.mu.Lock()
	defer d.stale.mu.Unlock()
	if d.stale.target.url == t.url && d.stale.target.term == t.term && !d.raft.LastContact().After(d.stale.at) {
		return leaderTarget{}, false
	}
	return t, true
}

// markStale records that t could not take a write that was not applied.
func (d *Directory) markStale(t leaderTarget, err error) {
	d.stale.mu.Lock()
	d.stale.target, d.stale.at = t, time.Now()
	d.stale.mu.Unlock()
	d.log.Info("directory: leader address unusable until raft hears from it or elects another",
		"leader", t.id, "url", t.url, "term", t.term, "err", err)
}

// notSent reports whether a failed HTTP request certainly never reached
// the server: the connection could not be made (refused, unreachable,
// name resolution).
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// forwardTo sends an encoded write to the leader t; the leader applies it
// without forwarding further. A failure before the request was sent, or
// an answer that t does not lead, marks t stale and returns an error
// wrapping errRetryLeader. A transport failure after the request may have
// been sent (a reused connection the dead leader closed) marks t stale
// too, but the write's outcome is unknown: ErrOutcomeUnknown.
func (d *Directory) forwardTo(ctx context.Context, t leaderTarget, enc []byte) error {
	resp, err := d.internalPost(ctx, t.url+pathForward, "application/octet-stream", enc, true)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The address failed either way: do not send there again until
		// raft hears from it or elects another.
		d.markStale(t, err)
		if notSent(err) {
			return fmt.Errorf("%w: forward to %s: %w", errRetryLeader, t.id, err)
		}
		return fmt.Errorf("%w: forward to leader %s: %w", ErrOutcomeUnknown, t.id, err)
	}
	index, err := decodeWireIndex(resp)
	if errors.Is(err, ErrNotLeader) || errors.Is(err, ErrClosed) {
		// Not applied: a voter answers these before its group commit
		// took the write (a closing one answers ErrClosed only for
		// writes still queued).
		d.markStale(t, err)
		return fmt.Errorf("%w: %w", errRetryLeader, err)
	}
	// Read your writes: the client that wrote through this voter reads
	// through it next (node/weave right after registering), and reads
	// answer from the local state, so wait until the write is applied
	// here too (also when it was applied with an error result).
	if werr := d.waitApplied(ctx, index); werr != nil {
		return werr
	}
	return err
}

// waitApplied waits until this voter's state machine has applied the
// command entry at raft index i, or until ctx ends or a few seconds pass
// (then the write still succeeded: it answers with the write's outcome and
// only the read-your-writes promise is lost, which is logged; this happens
// when the entry reached this voter inside a snapshot, which does not
// advance the command index).
func (d *Directory) waitApplied(ctx context.Context, i uint64) error {
	if i == 0 {
		return nil
	}
	deadline := time.Now().Add(min(d.cfg.Raft.ApplyTimeout, 3*time.Second))
	for d.state.AppliedIndex() < i {
		if ctx.Err() != nil || time.Now().After(deadline) {
			d.log.Warn("directory: forwarded write not yet applied locally", "index", i, "applied", d.state.AppliedIndex())
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// wireErrors maps the errors a forwarded write can return to codes.
var wireErrors = []struct {
	code string
	err  error
}{
	{"user_exists", api.ErrUserExists},
	{"user_not_found", api.ErrUserNotFound},
	{"bad_reset_code", api.ErrBadResetCode},
	{"unavailable", api.ErrUnavailable},
	{"unauthorized", api.ErrUnauthorized},
	{"not_leader", ErrNotLeader},
	{"closed", ErrClosed},
	{"outcome_unknown", ErrOutcomeUnknown},
	{"unknown_command", ErrUnknownCommand},
	{"malformed", ErrMalformedCommand},
	{"unknown_node", ErrUnknownNode},
	{"node_retired", ErrNodeRetired},
	{"bad_node_state", ErrBadNodeState},
	{"bad_registration", ErrBadRegistration},
	{"bad_signature", ErrBadSignature},
	{"not_current_member", ErrNotCurrentMember},
	{"no_transfer", ErrNoTransfer},
	{"bad_invite", api.ErrBadInvite},
	{"too_many_invites", state.ErrTooManyInvites},
	{"too_many_resets", state.ErrTooManyResets},
	{"sync_refused", state.ErrSyncRefused},
	{"gated", ErrGated},
	{"not_drained", ErrNodeNotDrained},
	{"voter_removed", ErrVoterRemoved},
	{"unknown_voter", ErrUnknownVoter},
	{"bad_voter", ErrBadVoter},
	{"last_voter", ErrLastVoter},
	{"node_down", ErrNodeDown},
}

// wireResult is the JSON answer of the internal endpoints.
type wireResult struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
	// Index is, for a forwarded write, the raft index the leader had
	// applied when it answered, also with an error (so the forwarding
	// voter can wait for it).
	Index uint64 `json:"index,omitempty"`
}

func errorCode(err error) string {
	for _, w := range wireErrors {
		if errors.Is(err, w.err) {
			return w.code
		}
	}
	return "internal"
}

func decodeWireResult(resp *http.Response) error {
	_, err := decodeWireIndex(resp)
	return err
}

// decodeWireIndex is decodeWireResult that also returns the raft index the
// leader had applied when it answered a write (0 if not sent): for a
// failed write that was applied (the state machine's error), the index
// includes it.
func decodeWireIndex(resp *http.Response) (uint64, error) {
	defer resp.Body.Close()
	var r wireResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&r); err != nil {
		return 0, fmt.Errorf("%w: leader answered %s: %w", ErrOutcomeUnknown, resp.Status, err)
	}
	if r.OK {
		return r.Index, nil
	}
	for _, w := range wireErrors {
		if w.code == r.Error {
			return r.Index, fmt.Errorf("%w (from leader: %s)", w.err, r.Message)
		}
	}
	return r.Index, fmt.Errorf("directory: leader: %s: %s", r.Error, r.Message)
}

// VoterStatus describes one raft voter in Status.
type VoterStatus struct {
	ID       string `json:"id"`
	URL      string `json:"url,omitempty"`
	RaftAddr string `json:"raft"`
	Suffrage string `json:"suffrage"`
}

// Status is the directory's view of the cluster.
type Status struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Leader struct {
		ID  string `json:"id"`
		URL string `json:"url,omitempty"`
	} `json:"leader"`
	Voters       []VoterStatus `json:"voters"`
	AppliedIndex uint64        `json:"applied_index"`
	Users        int           `json:"users"`
	Nodes        int           `json:"nodes"`
	Settings     Settings      `json:"settings"`
}

// Status returns the cluster status from this voter's point of view.
// With linearizable, the leader first confirms it still leads and that
// its state is current (VerifyLeader, Barrier); a follower answers
// ErrNotLeader.
func (d *Directory) Status(ctx context.Context, linearizable bool) (Status, error) {
	if d.closed.Load() {
		return Status{}, ErrClosed
	}
	if linearizable {
		if err := d.awaitFuture(ctx, d.raft.VerifyLeader()); err != nil {
			return Status{}, mapRaftErr(err)
		}
		if err := d.awaitFuture(ctx, d.raft.Barrier(d.cfg.Raft.ApplyTimeout)); err != nil {
			return Status{}, mapRaftErr(err)
		}
	}
	var s Status
	s.ID = d.cfg.ID
	s.State = d.raft.State().String()
	s.Leader.ID, s.Leader.URL = d.Leader()
	s.AppliedIndex = d.raft.AppliedIndex()
	s.Users = d.state.Accounts()
	s.Nodes = len(d.state.Nodes())
	s.Settings = d.state.Settings()
	cf := d.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return Status{}, mapRaftErr(err)
	}
	voters := d.state.Voters()
	for _, sv := range cf.Configuration().Servers {
		v := VoterStatus{ID: string(sv.ID), RaftAddr: string(sv.Address), Suffrage: sv.Suffrage.String()}
		v.URL = voters[v.ID].HTTPURL
		if v.ID == d.cfg.ID && d.cfg.Cluster.HTTPURL != "" {
			v.URL = d.cfg.Cluster.HTTPURL
		}
		s.Voters = append(s.Voters, v)
	}
	slices.SortFunc(s.Voters, func(a, b VoterStatus) int { return strings.Compare(a.ID, b.ID) })
	return s, nil
}
