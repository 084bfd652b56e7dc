package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/directory/state"
)

// Voter membership: voters are added (Cluster.Join, or an admin's
// AddVoter for a voter started with Cluster.AwaitAdd) and removed
// (RemoveVoter) through the leader; a removed voter stops and does not
// come back by itself.

// Errors of voter membership.
var (
	// ErrVoterRemoved means this voter was removed from the cluster: it
	// stops (Fatal) and refuses to open again (a marker file in its data
	// folder says so) until its folder is emptied and it joins anew. A
	// leader also answers it to a removed voter that tries to record
	// itself again.
	ErrVoterRemoved = errors.New("directory: this voter was removed from the cluster")
	// ErrUnknownVoter means no voter of the raft configuration has that ID.
	ErrUnknownVoter = errors.New("directory: no voter with that id")
	// ErrBadVoter means a voter could not be admitted: its raft address
	// did not answer with a certificate of the directory CA for its ID,
	// or the request lacks a field.
	ErrBadVoter = errors.New("directory: voter not admitted")
	// ErrLastVoter means the only voter cannot be removed.
	ErrLastVoter = errors.New("directory: the last voter cannot be removed")
	// ErrUndecodableEntry means this voter met a committed raft entry
	// its build cannot decode: an older build than the leader's. It stops
	// (Fatal) instead of serving a state that differs from the others'.
	ErrUndecodableEntry = errors.New("directory: a committed raft entry cannot be decoded by this build")
	// ErrNodeNotDrained means a storage node still holds users: it is not
	// retired until its drain and handoffs are done (RetireNode with
	// force retires it anyway).
	ErrNodeNotDrained = state.ErrNodeNotDrained
)

// removedFile is the marker a removed voter leaves in its data folder.
const removedFile = "removed"

// Fatal returns a channel that receives, once, why this voter must stop
// serving: it was removed from the cluster (ErrVoterRemoved) or it met
// a raft entry it cannot decode (ErrUndecodableEntry). The process
// running the voter should log it and exit; the Directory keeps running
// until Close.
func (d *Directory) Fatal() <-chan error { return d.fatal }

// fail reports a fatal condition once.
func (d *Directory) fail(err error) {
	d.fatalOnce.Do(func() {
		d.log.Error("directory: this voter must stop", "err", err)
		d.fatal <- err
	})
}

// checkRemoved refuses to open a data folder whose voter was removed.
func checkRemoved(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, removedFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("directory: reading %s: %w", removedFile, err)
	}
	return fmt.Errorf("%w (%s); it does not rejoin by itself: to make this machine a voter again, "+
		"empty %s and start it with --join (or --await-add and hce admin voter add)",
		ErrVoterRemoved, strings.TrimSpace(string(b)), dir)
}

// removed marks this voter removed: the marker file, an ERROR, Fatal.
func (d *Directory) removed(reason string) {
	line := fmt.Sprintf("removed at %s: %s\n", time.Now().UTC().Format(time.RFC3339), reason)
	if err := writeFileSync(filepath.Join(d.cfg.Dir, removedFile), []byte(line)); err != nil {
		d.log.Error("directory: writing the removed marker", "err", err)
	}
	d.fail(fmt.Errorf("%w: %s; it does not rejoin by itself: empty %s and start it with --join to make it a voter again",
		ErrVoterRemoved, reason, d.cfg.Dir))
}

// VoterView is one voter in the answer of GET /admin/v1/voters.
type VoterView struct {
	ID       string `json:"id"`
	URL      string `json:"url,omitempty"`
	RaftAddr string `json:"raft"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader,omitempty"`
	// PeerID is the voter's libp2p peer ID (empty until recorded).
	PeerID string `json:"peer,omitempty"`
	// Recorded says the state machine holds the voter's record
	// (SetVoter): nodes know it.
	Recorded bool `json:"recorded"`
}

// VotersView is the answer of GET /admin/v1/voters: the raft
// configuration as this voter knows it, with the recorded voters that
// raft no longer lists (Stale: their records go once every voter
// decodes RemoveVoter).
type VotersView struct {
	Leader string      `json:"leader"`
	Voters []VoterView `json:"voters"`
	Stale  []string    `json:"stale,omitempty"`
}

// Voters returns the raft configuration with the voters' records.
func (d *Directory) Voters() (VotersView, error) {
	servers, err := d.raftServers()
	if err != nil {
		return VotersView{}, err
	}
	recs := d.state.Voters()
	lid, _ := d.Leader()
	out := VotersView{Leader: lid}
	for _, s := range servers {
		id := string(s.ID)
		rec, ok := recs[id]
		v := VoterView{ID: id, URL: rec.HTTPURL, RaftAddr: string(s.Address), Suffrage: s.Suffrage.String(),
			Leader: id == lid, PeerID: rec.PeerID, Recorded: ok}
		if id == d.cfg.ID && d.cfg.Cluster.HTTPURL != "" {
			v.URL = d.cfg.Cluster.HTTPURL
		}
		out.Voters = append(out.Voters, v)
		delete(recs, id)
	}
	for id := range recs {
		out.Stale = append(out.Stale, id)
	}
	slices.SortFunc(out.Voters, func(a, b VoterView) int { return strings.Compare(a.ID, b.ID) })
	slices.Sort(out.Stale)
	return out, nil
}

// inConfig reports whether id is a server of the latest configuration.
func inConfig(servers []raft.Server, id string) bool {
	return slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == id })
}

// admitVoter checks, on the leader, that the voter to add answers at its
// raft address with a certificate of the directory CA naming its ID.
func (d *Directory) admitVoter(ctx context.Context, j joinRequest) error {
	if j.ID == "" || j.RaftAddr == "" || j.HTTPURL == "" {
		return fmt.Errorf("%w: id, raft_addr and http_url are needed", ErrBadVoter)
	}
	if d.stores.stream == nil {
		return fmt.Errorf("%w: this directory runs a single voter without raft over TLS", ErrBadVoter)
	}
	got, err := d.stores.stream.Identify(ctx, j.RaftAddr)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadVoter, err)
	}
	if got != j.ID {
		return fmt.Errorf("%w: the raft address %s answers as voter %q, not %q", ErrBadVoter, j.RaftAddr, got, j.ID)
	}
	return nil
}

// AddVoter adds a voter (or gives a voter of the configuration a new
// address) through the leader, with the admission of a join: the voter
// must answer at raftAddr with a certificate of the directory CA for id.
// The voter must be running: a fresh one started with Cluster.AwaitAdd,
// or one that lost its place. It returns once the voter's record is
// committed. A follower passes the request to the leader.
func (d *Directory) AddVoter(ctx context.Context, id, raftAddr, httpURL string) error {
	j := joinRequest{ID: id, RaftAddr: raftAddr, HTTPURL: strings.TrimSuffix(httpURL, "/")}
	if d.IsLeader() {
		return d.addVoter(ctx, j)
	}
	body, _ := json.Marshal(j)
	return d.viaLeader(ctx, http.MethodPost, "/admin/v1/voters", body)
}

// RemoveVoter removes voter id from the cluster through the leader
// (raft RemoveServer, then its record). Removing the leader hands
// leadership to another voter first. The removed voter notices, stops
// (Fatal) and does not come back by itself. The last voter cannot be
// removed (ErrLastVoter); an ID raft does not list fails with
// ErrUnknownVoter unless a record of it remains, which is then dropped.
func (d *Directory) RemoveVoter(ctx context.Context, id string) error {
	if !d.IsLeader() {
		return d.viaLeader(ctx, http.MethodDelete, "/admin/v1/voters/"+id, nil)
	}
	return d.removeVoter(ctx, id)
}

// removeVoter runs on the leader. Removing itself, it hands leadership
// over and passes the request on to the new leader (one more hop than a
// forwarded request otherwise takes).
func (d *Directory) removeVoter(ctx context.Context, id string) error {
	servers, err := d.raftServers()
	if err != nil {
		return err
	}
	if !inConfig(servers, id) {
		if _, ok := d.state.Voters()[id]; ok {
			return d.dropVoterRecord(ctx, id)
		}
		return fmt.Errorf("%w: %q", ErrUnknownVoter, id)
	}
	if len(servers) == 1 {
		return ErrLastVoter
	}
	if id == d.cfg.ID {
		return d.removeSelf(ctx)
	}
	start := time.Now()
	f := d.raft.RemoveServer(raft.ServerID(id), 0, d.cfg.Raft.ApplyTimeout)
	if err := d.awaitFuture(ctx, f); err != nil {
		return mapRaftErr(err)
	}
	d.log.Info("directory: voter removed", "id", id, "took", time.Since(start))
	return d.dropVoterRecord(ctx, id)
}

// dropVoterRecord commits RemoveVoter, or leaves it to the voters loop
// while some voter does not decode it.
func (d *Directory) dropVoterRecord(ctx context.Context, id string) error {
	err := d.write(ctx, state.RemoveVoter{ID: id})
	if errors.Is(err, ErrGated) {
		d.log.Warn("directory: removed voter's record kept until every voter decodes RemoveVoter", "id", id, "err", err)
		return nil
	}
	return err
}

// removeSelf hands leadership to another voter, then passes the removal
// of this voter to the new leader.
func (d *Directory) removeSelf(ctx context.Context) error {
	d.log.Info("directory: removing the leader: handing leadership over first", "id", d.cfg.ID)
	if err := d.awaitFuture(ctx, d.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("directory: leadership transfer: %w", mapRaftErr(err))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if id, url := d.Leader(); id != "" && id != d.cfg.ID && url != "" {
			resp, err := d.internalDo(ctx, http.MethodDelete, url+"/admin/v1/voters/"+d.cfg.ID, "", nil, true)
			if err != nil {
				return fmt.Errorf("%w: passing the removal to the new leader %s: %w", ErrOutcomeUnknown, id, err)
			}
			return decodeWireResult(resp)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: no new leader within 10 s of the transfer", ErrNotLeader)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(leaderPoll):
		}
	}
}

// viaLeader sends an admin request to the leader (once).
func (d *Directory) viaLeader(ctx context.Context, method, path string, body []byte) error {
	id, url := d.Leader()
	if id == "" || url == "" || id == d.cfg.ID {
		return ErrNotLeader
	}
	resp, err := d.internalDo(ctx, method, url+path, "application/json", body, true)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	return decodeWireResult(resp)
}

// internalDo sends an authenticated voter-to-voter request for the
// voters' admin calls (a removal may wait for a leadership transfer).
func (d *Directory) internalDo(ctx context.Context, method, url, ctype string, body []byte, forwarded bool) (*http.Response, error) {
	return d.internalRequest(ctx, 2*d.cfg.Raft.ApplyTimeout+10*time.Second, method, url, ctype, body, forwarded)
}

// votersTick is how often the voters loop looks.
const votersTick = 500 * time.Millisecond

// probeAfter is how long a voter waits without a leader before it asks
// the other voters whether it was removed while it was away.
const probeAfter = 3 * time.Second

// votersLoop runs on every cluster voter until ctx ends. It notices
// that this voter was removed: the configuration it holds no longer
// lists it, after having listed it; or, while it knows no leader (a
// voter removed while it was down restarts with a configuration that
// still lists it, and nobody replicates to it), the leader of the other
// voters answers with a newer configuration without it. On the leader
// it also drops the records of voters raft no longer lists, once every
// voter decodes RemoveVoter.
func (d *Directory) votersLoop(ctx context.Context) {
	tick := time.NewTicker(votersTick)
	defer tick.Stop()
	// A restarted voter was a member (it bootstrapped or joined); a new
	// one becomes one once the configuration lists it (while it catches
	// up, older configurations without it go by) or its join returned.
	if !d.stores.fresh {
		d.member.Store(true)
	}
	var leaderless, lastProbe, lastClean, lastRecord time.Time
	urls := voterURLs{path: filepath.Join(d.cfg.Dir, voterURLsFile)}
	for {
		select {
		case <-ctx.Done():
			urls.save(d)
			return
		case <-tick.C:
		}
		servers, err := d.raftServers()
		if err != nil {
			continue
		}
		in := inConfig(servers, d.cfg.ID)
		if in {
			d.member.Store(true)
		}
		seen := d.member.Load()
		if seen && len(servers) > 0 && !in {
			d.removed(fmt.Sprintf("the raft configuration no longer lists voter %s (at log index %d)", d.cfg.ID, d.raft.LastIndex()))
			return
		}
		urls.save(d)
		now := time.Now()
		if in && now.Sub(lastRecord) > 2*time.Second && !d.voterRecorded() {
			// A restored backup may lack this voter's record, or hold an
			// old one.
			lastRecord = now
			if lid, _ := d.Leader(); lid != "" {
				wctx, cancel := context.WithTimeout(ctx, d.cfg.Raft.ApplyTimeout)
				_ = d.write(wctx, d.selfVoter())
				cancel()
			}
		}
		if lid, _ := d.Leader(); lid != "" {
			leaderless = time.Time{}
		} else if leaderless.IsZero() {
			leaderless = now
		} else if seen && now.Sub(leaderless) > probeAfter && now.Sub(lastProbe) > probeAfter {
			lastProbe = now
			if reason := d.probeRemoved(ctx, d.raft.LastIndex()); reason != "" {
				d.removed(reason)
				return
			}
		}
		if d.IsLeader() && now.Sub(lastClean) > 5*time.Second {
			lastClean = now
			for id := range d.state.Voters() {
				if !inConfig(servers, id) {
					if err := d.dropVoterRecord(ctx, id); err != nil {
						d.log.Debug("directory: dropping a removed voter's record", "id", id, "err", err)
					}
				}
			}
		}
	}
}

// probeRemoved asks the other recorded voters for their status; it
// returns why this voter counts as removed when a leader that has
// applied more of the log than this voter holds (last) answers with a
// configuration that does not list it, else "".
func (d *Directory) probeRemoved(ctx context.Context, last uint64) string {
	// A restarted voter applies nothing before a leader tells it the
	// commit index: its state may not list the voters yet, the file
	// does.
	known := make(map[string]string)
	if b, err := os.ReadFile(filepath.Join(d.cfg.Dir, voterURLsFile)); err == nil {
		_ = json.Unmarshal(b, &known)
	}
	for id, v := range d.state.Voters() {
		known[id] = v.HTTPURL
	}
	for id, url := range known {
		if id == d.cfg.ID || url == "" {
			continue
		}
		st, err := d.askStatus(ctx, url)
		if err != nil || st.State != raft.Leader.String() || st.AppliedIndex <= last {
			continue
		}
		if !slices.ContainsFunc(st.Voters, func(s VoterStatus) bool { return s.ID == d.cfg.ID }) {
			return fmt.Sprintf("leader %s's raft configuration (applied index %d) does not list voter %s (this voter's log ends at %d)",
				st.ID, st.AppliedIndex, d.cfg.ID, last)
		}
	}
	return ""
}

// voterURLsFile keeps the other voters' HTTP URLs across restarts, for
// probeRemoved.
const voterURLsFile = "voter-urls.json"

// voterURLs writes the recorded voters' URLs to a file when they change.
type voterURLs struct {
	path string
	last string
}

// save writes the voters' URLs when they changed since the last save.
func (u *voterURLs) save(d *Directory) {
	m := make(map[string]string)
	for id, v := range d.state.Voters() {
		m[id] = v.HTTPURL
	}
	if len(m) == 0 {
		return
	}
	b, _ := json.Marshal(m)
	if string(b) == u.last {
		return
	}
	if err := writeFileSync(u.path, b); err != nil {
		d.log.Warn("directory: saving "+voterURLsFile, "err", err)
		return
	}
	u.last = string(b)
}

// askStatus reads another voter's GET /admin/v1/status.
func (d *Directory) askStatus(ctx context.Context, url string) (Status, error) {
	var st Status
	err := d.getJSON(ctx, url+"/admin/v1/status", 2*time.Second, &st)
	return st, err
}

// refuseRemovedVoter refuses a forwarded SetVoter of a voter the raft
// configuration does not list: a removed voter that still runs must not
// record itself again.
func (d *Directory) refuseRemovedVoter(enc []byte) error {
	if len(enc) < 2 || state.CommandType(enc[0]) != state.CmdSetVoter {
		return nil
	}
	c, err := state.DecodeCommand(enc)
	if err != nil {
		return err
	}
	sv, ok := c.(state.SetVoter)
	if !ok {
		return nil
	}
	servers, err := d.raftServers()
	if err != nil {
		return err
	}
	if !inConfig(servers, sv.ID) {
		return fmt.Errorf("%w: voter %q is not in the raft configuration", ErrVoterRemoved, sv.ID)
	}
	return nil
}
