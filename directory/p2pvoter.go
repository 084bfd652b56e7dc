package directory

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
)

// PathP2P is the public endpoint listing the voters' libp2p identities
// and addresses (GET, no authentication): storage nodes read it before
// they dial the directory.
const PathP2P = "/internal/v1/p2p"

// VoterP2P is one voter in the answer of GET /internal/v1/p2p.
type VoterP2P struct {
	// ID is the voter's raft server ID.
	ID string `json:"id"`
	// HTTP is the voter's HTTP base URL ("" when not recorded).
	HTTP string `json:"http"`
	// PeerID is the voter's libp2p peer ID.
	PeerID string `json:"peer_id"`
	// Addrs are the voter's libp2p multiaddresses.
	Addrs []string `json:"addrs"`
}

// P2PInfo is the answer of GET /internal/v1/p2p.
type P2PInfo struct {
	Voters []VoterP2P `json:"voters"`
}

// startP2P creates the voter's libp2p host when Nodes.P2PListen is set:
// identity from the data folder, a gater over the state (p2pAllowed), and
// the directory protocols (ServeP2P).
func (d *Directory) startP2P(ctx context.Context) error {
	if len(d.cfg.Nodes.P2PListen) == 0 {
		return nil
	}
	key, _, err := p2p.LoadOrCreateIdentity(d.cfg.Dir)
	if err != nil {
		return fmt.Errorf("directory: libp2p identity: %w", err)
	}
	hc := p2p.DefaultConfig()
	hc.Key = key
	hc.ListenAddrs = d.cfg.Nodes.P2PListen
	hc.Logger = d.log.With("component", "p2p")
	hc.Gater = p2p.NewGater(p2p.AllowFunc(d.p2pAllowed), hc.Logger)
	h, err := d.newP2PHost(ctx, hc) // p2pport.go: the same port across restarts
	if err != nil {
		return fmt.Errorf("directory: libp2p host: %w", err)
	}
	d.host = h
	if d.cfg.Nodes.NotifyNodes {
		d.notes.host = h
	}
	d.ServeP2P(h)
	return nil
}

// P2PHost returns the voter's libp2p host, or nil without
// Nodes.P2PListen.
func (d *Directory) P2PHost() host.Host { return d.host }

// p2pAllowed is the voter's gater policy, read from the state on every
// connection so that it always matches the committed state: registered
// storage nodes that are not retired (pending ones too: they heartbeat),
// and the voters that recorded a peer ID; never a peer Config.Faults
// refuses.
func (d *Directory) p2pAllowed(id peer.ID) bool {
	if d.refusesPeer(id) {
		return false
	}
	if n, ok := nodeOfPeer(d.state, id); ok {
		return n.State != placement.Retired.String()
	}
	return d.state.HasVoterPeer(id.String())
}

// selfP2P returns this voter's peer ID and sorted listen addresses ("",
// nil without a host).
func (d *Directory) selfP2P() (string, []string) {
	if d.host == nil {
		return "", nil
	}
	var addrs []string
	for _, a := range d.host.Addrs() {
		addrs = append(addrs, a.String())
	}
	sort.Strings(addrs)
	return d.host.ID().String(), addrs
}

// selfVoter is the SetVoter describing this voter now.
func (d *Directory) selfVoter() state.SetVoter {
	pid, addrs := d.selfP2P()
	return state.SetVoter{ID: d.cfg.ID, HTTPURL: d.cfg.Cluster.HTTPURL, RaftAddr: string(d.stores.trans.LocalAddr()),
		PeerID: pid, P2PAddrs: addrs}
}

// voterRecorded reports whether the state holds this voter's current record.
func (d *Directory) voterRecorded() bool {
	v, ok := d.state.Voters()[d.cfg.ID]
	if !ok || v.HTTPURL != d.cfg.Cluster.HTTPURL {
		return false
	}
	pid, addrs := d.selfP2P()
	return v.PeerID == pid && slices.Equal(v.P2PAddrs, addrs)
}

// voterRecordLoop writes this voter's record (SetVoter with its libp2p
// identity) until the state holds it: at start, and after a restart on new
// ports. It retries every 200 ms while there is no leader.
func (d *Directory) voterRecordLoop(ctx context.Context) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !d.voterRecorded() {
		if _, id := d.raft.LeaderWithID(); id != "" {
			wctx, cancel := context.WithTimeout(ctx, d.cfg.Raft.ApplyTimeout)
			err := d.write(wctx, d.selfVoter())
			cancel()
			if err != nil && ctx.Err() == nil {
				d.log.Debug("directory: recording voter failed, retrying", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// P2PVoters returns the voters with a recorded libp2p identity, sorted by
// ID; this voter's entry comes from its live host.
func (d *Directory) P2PVoters() []VoterP2P {
	var out []VoterP2P
	for _, v := range d.state.Voters() {
		if v.ID == d.cfg.ID && d.host != nil {
			continue
		}
		if v.PeerID == "" {
			continue
		}
		out = append(out, VoterP2P{ID: v.ID, HTTP: v.HTTPURL, PeerID: v.PeerID, Addrs: slices.Clone(v.P2PAddrs)})
	}
	if d.host != nil {
		pid, addrs := d.selfP2P()
		out = append(out, VoterP2P{ID: d.cfg.ID, HTTP: d.cfg.Cluster.HTTPURL, PeerID: pid, Addrs: addrs})
	}
	slices.SortFunc(out, func(a, b VoterP2P) int { return strings.Compare(a.ID, b.ID) })
	return out
}
