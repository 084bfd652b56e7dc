package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hce-sync/hce/directory"
)

// liveVoterURL returns the leader's URL, else the first running voter's.
func (t *Testnet) liveVoterURL(ctx context.Context) string {
	if _, u := t.Leader(); u != "" {
		return u
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, v := range t.voters {
		if v.running() {
			return v.url
		}
	}
	return t.voters[0].url
}

// admin sends method base+path with the admin token and decodes a 2xx
// answer's JSON body into out (nil: the body is ignored).
func (t *Testnet) admin(ctx context.Context, method, base, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	resp, err := t.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("testnet: %s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(body))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// voterURLs lists the voters' URLs, running ones first.
func (t *Testnet) voterURLs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var up, down []string
	for _, v := range t.voters {
		if v.running() {
			up = append(up, v.url)
		} else {
			down = append(down, v.url)
		}
	}
	return append(up, down...)
}

// status asks the voters, in turn, for the cluster status.
func (t *Testnet) status(ctx context.Context) (directory.Status, error) {
	var errs []error
	for _, u := range t.voterURLs() {
		var s directory.Status
		err := t.admin(ctx, http.MethodGet, u, "/admin/v1/status", &s)
		if err == nil && s.Leader.ID != "" {
			return s, nil
		}
		if err == nil {
			err = fmt.Errorf("testnet: %s knows no leader", u)
		}
		errs = append(errs, err)
	}
	return directory.Status{}, errors.Join(errs...)
}

// Leader returns the current raft leader's ID and HTTP URL as the voters
// report it, or empty strings when none is known.
func (t *Testnet) Leader() (id, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := t.status(ctx)
	if err != nil {
		return "", ""
	}
	if s.Leader.URL != "" && !strings.HasSuffix(s.Leader.URL, "/") {
		s.Leader.URL += "/"
	}
	return s.Leader.ID, s.Leader.URL
}

// nodeStates returns the directory's nodes by ID, asked of the leader.
func (t *Testnet) nodeStates(ctx context.Context, leaderURL string) (map[string]directory.NodeInfo, error) {
	var out struct {
		Nodes []directory.NodeInfo `json:"nodes"`
	}
	if err := t.admin(ctx, http.MethodGet, leaderURL, "/admin/v1/nodes", &out); err != nil {
		return nil, err
	}
	m := make(map[string]directory.NodeInfo, len(out.Nodes))
	for _, n := range out.Nodes {
		m[n.ID] = n
	}
	return m, nil
}

// WaitHealthy polls the admin API until the directory has a leader and
// every voter as a member, and every node is active, or ctx ends.
func (t *Testnet) WaitHealthy(ctx context.Context) error {
	err, why := pollUntil(ctx, 50*time.Millisecond, func() error {
		// Each check runs to its end (5 s at most), so that a failure says
		// why the testnet is unhealthy, not that ctx ended mid-check.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if why := t.unhealthy(cctx); why != "" {
			return errors.New(why)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %s (%w)", ErrNotReady, why, err)
	}
	return nil
}

// unhealthy says why the testnet is not healthy yet, or "".
func (t *Testnet) unhealthy(ctx context.Context) string {
	s, err := t.status(ctx)
	if err != nil {
		return err.Error()
	}
	if len(s.Voters) != len(t.voters) {
		return fmt.Sprintf("%d of %d voters in the cluster", len(s.Voters), len(t.voters))
	}
	states, err := t.nodeStates(ctx, s.Leader.URL)
	if err != nil {
		return err.Error()
	}
	for _, n := range t.Nodes() {
		if st := states[n.ID].State; st != "active" {
			return fmt.Sprintf("node %s (%s) is %q", n.Name, n.ID, st)
		}
	}
	return ""
}

// Status is a snapshot of the testnet: which members run, who leads and
// what the directory says about each node.
type Status struct {
	// Leader is the raft leader's ID ("" when none is known).
	Leader string
	// Voters and Nodes list every member with Running (its process or
	// in-process instance is alive).
	Voters []VoterStatus
	Nodes  []NodeStatus
}

// VoterStatus is a voter in a Status.
type VoterStatus struct {
	VoterEntry
	Running bool
	// Suffrage is "Voter" while the cluster lists the voter.
	Suffrage string
}

// NodeStatus is a node in a Status.
type NodeStatus struct {
	NodeEntry
	Running bool
	// State is the directory's state for the node ("active", "down",
	// "draining", ...); Load the number of users it holds.
	State string
	Load  int
}

// Status asks the directory about the cluster and nodes. With no voter
// answering it still lists the members, with an error.
func (t *Testnet) Status(ctx context.Context) (Status, error) {
	t.mu.Lock()
	var st Status
	for _, v := range t.voters {
		st.Voters = append(st.Voters, VoterStatus{VoterEntry: VoterEntry{ID: v.id, PeerID: v.p2pID, HTTP: v.url, Raft: v.raftAddr, P2P: v.p2pAddr, PID: v.pid, Data: v.data}, Running: v.running()})
	}
	for _, n := range t.nodes {
		st.Nodes = append(st.Nodes, NodeStatus{NodeEntry: NodeEntry{Name: n.name, ID: n.id, Operator: n.operator, HTTP: n.url, P2P: n.p2pAddr, PID: n.pid, Data: n.data}, Running: n.running()})
	}
	t.mu.Unlock()
	s, err := t.status(ctx)
	if err != nil {
		return st, err
	}
	st.Leader = s.Leader.ID
	for i := range st.Voters {
		for _, v := range s.Voters {
			if v.ID == st.Voters[i].ID {
				st.Voters[i].Suffrage = v.Suffrage
			}
		}
	}
	states, err := t.nodeStates(ctx, s.Leader.URL)
	if err != nil {
		return st, err
	}
	for i := range st.Nodes {
		info := states[st.Nodes[i].ID]
		st.Nodes[i].State, st.Nodes[i].Load = info.State, info.Load
	}
	return st, nil
}
