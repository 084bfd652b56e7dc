package directory

import (
	"context"
	"errors"
	"slices"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/directory/state"
)

// errNoHost means the voter has no libp2p host (Nodes.P2PListen unset).
var errNoHost = errors.New("directory: no libp2p host")

// Report commits a storage node's replication report (the node is
// nodeID; dirproto.ReportRequest) as one NodeReport entry, forwarded to
// the leader from a follower, and returns once it is applied here:
//
//   - Unconfirmed: every member of the user's set other than the node
//     and the confirmed ones becomes filling; the node must be a current
//     member, or the call fails with ErrNotCurrentMember (naming the
//     refused users; the other items are applied all the same) and the
//     node must not acknowledge those writes. The members concerned (as
//     the set was before the report and is after it) are told at once
//     over dirproto.ProtoMembership; Notified says whether all of them
//     confirmed (else the node waits its membership cache lifetime plus
//     ViewLagMs, this voter's view lag: how old a view a member may have
//     read from a fresh voter).
//   - Filled, HandedOff: applied when they still hold (epoch, source),
//     skipped otherwise; nothing is waited for.
//
// Items about users whose set does not name the node are skipped (or
// refused, for Unconfirmed) by the state machine. A report with no item
// answers Notified at once.
func (d *Directory) Report(ctx context.Context, nodeID string, r dirproto.ReportRequest) (dirproto.ReportResponse, error) {
	if d.closed.Load() {
		return dirproto.ReportResponse{}, ErrClosed
	}
	cmd := state.NodeReport{Node: nodeID}
	var users []string
	for _, u := range r.Unconfirmed {
		cmd.Unconfirmed = append(cmd.Unconfirmed, state.ReportUnconfirmed{User: u.User, Confirmed: slices.Clone(u.Confirmed)})
		users = append(users, u.User)
	}
	for _, f := range r.Filled {
		cmd.Filled = append(cmd.Filled, state.ReportFilled{User: f.User, Epoch: f.Epoch, Source: f.Source})
	}
	for _, h := range r.HandedOff {
		cmd.HandedOff = append(cmd.HandedOff, state.ReportHandedOff{User: h.User, Source: h.Source})
	}
	if len(cmd.Unconfirmed)+len(cmd.Filled)+len(cmd.HandedOff) == 0 {
		return d.reportResponse(true), nil
	}
	before := d.memberIDs(users)
	err := d.write(ctx, cmd)
	if err != nil && !errors.Is(err, ErrNotCurrentMember) {
		return dirproto.ReportResponse{}, err
	}
	if len(users) == 0 {
		return d.reportResponse(true), err
	}
	nodes := append(before, d.memberIDs(users)...)
	slices.Sort(nodes)
	notified := d.members.notifyNow(ctx, slices.Compact(nodes), nodeID, users)
	return d.reportResponse(notified), err
}

// reportResponse is a ReportResponse with this voter's view lag.
func (d *Directory) reportResponse(notified bool) dirproto.ReportResponse {
	return dirproto.ReportResponse{Notified: notified, ViewLagMs: d.viewLag.Milliseconds()}
}

// memberIDs returns the IDs of the members of users' sets in the local
// state.
func (d *Directory) memberIDs(users []string) []string {
	var out []string
	for _, u := range users {
		r, _, _ := d.state.Replicas(u)
		for _, m := range r.Members {
			out = append(out, m.ID)
		}
	}
	return out
}
