package replication

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/revtree"
)

// Handle implements Handler: it answers the requests of other nodes.
// Changes, fetches and sequence numbers are served to a member of the
// user's replica set by a member or a leaving member; notices and syncs
// are taken by a member from a member (or, for notices, a leaving
// member). Everything else is refused with CodeForbidden, malformed
// requests with CodeBadRequest.
func (r *Replicator) Handle(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
	m, err := Decode(req)
	if err != nil {
		r.c.reqRefused.Add(1)
		r.log.Warn("replication: malformed request", "peer", from, "err", err)
		return nil, p2p.Errorf(CodeBadRequest, "%v", err)
	}
	var resp Message
	switch m := m.(type) {
	case *ChangesRequest:
		resp, err = r.serveChanges(ctx, from, m)
	case *FetchRequest:
		resp, err = r.serveFetch(ctx, from, m)
	case *SeqsRequest:
		resp, err = r.serveSeqs(ctx, from, m)
	case *Notice:
		resp, err = r.serveNotice(ctx, from, m)
	case *SyncRequest:
		resp, err = r.serveSync(ctx, from, m)
	default:
		err = p2p.Errorf(CodeBadRequest, "message type %d is not a request", m.msgType())
	}
	if err != nil {
		if p2p.IsCode(err, CodeForbidden) || p2p.IsCode(err, CodeBadRequest) {
			r.c.reqRefused.Add(1)
			r.log.Warn("replication: request refused", "peer", from, "err", err)
		}
		return nil, err
	}
	r.c.served.Add(1)
	return Encode(resp), nil
}

// checkServe returns user's replica set when this node may serve user to
// from: from is a member of the set, this node a member or a leaving
// member. Otherwise it returns a CodeForbidden error.
func (r *Replicator) checkServe(ctx context.Context, user string, from peer.ID) (ReplicaSet, error) {
	set, ok, err := r.allowed(ctx, user, from, r.self)
	if err != nil {
		return ReplicaSet{}, err
	}
	if !ok {
		return ReplicaSet{}, p2p.Errorf(CodeForbidden, "user %q is not shared with %s", user, from)
	}
	return set, nil
}

func (r *Replicator) serveChanges(ctx context.Context, from peer.ID, m *ChangesRequest) (*ChangesResponse, error) {
	set, err := r.checkServe(ctx, m.User, from)
	if err != nil {
		return nil, err
	}
	// Final: by this node's view (read before the feed, so a write the
	// feed misses was not acknowledged), it left the set and takes no
	// more writes of the user.
	final := !set.IsMember(r.self)
	limit := int(m.Limit)
	if limit <= 0 || limit > MaxRows {
		limit = MaxRows
	}
	rows, last, err := r.st.Changes(ctx, m.User, m.Since, limit)
	if err != nil {
		return nil, err
	}
	resp := &ChangesResponse{Source: r.st.UUID(), Last: last, More: len(rows) >= limit, Final: final}
	resp.Rows = make([]ChangeRow, 0, len(rows))
	size := 0
	for i, c := range rows {
		leaves := c.Leaves
		if len(leaves) > MaxLeaves {
			leaves = leaves[:MaxLeaves] // winner first: the rest are old conflicts
		}
		size += 8 + len(c.Coll) + len(c.ID) + len(leaves)*(revtree.HashLen+3)
		if i > 0 && size > MaxResponseBytes {
			resp.Last, resp.More = rows[i-1].Seq, true
			break
		}
		resp.Rows = append(resp.Rows, ChangeRow{Coll: c.Coll, ID: c.ID, Leaves: leaves, Deleted: c.Deleted})
	}
	if m.InlineBytes > 0 && len(resp.Rows) > 0 && len(resp.Rows) <= maxInlineRows {
		if err := r.inline(ctx, m.User, resp, int(m.InlineBytes)); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// maxInlineRows bounds the rows whose revisions a changes answer carries:
// inlining is for live replication (a few rows); backfills fetch.
const maxInlineRows = 64

// inline adds the rows' open revisions with their paths to resp when they
// all fit in max bytes (else none: the puller fetches).
func (r *Replicator) inline(ctx context.Context, user string, resp *ChangesResponse, max int) error {
	refs := make([]node.DocRef, len(resp.Rows))
	for i, row := range resp.Rows {
		refs[i] = node.DocRef{Coll: row.Coll, ID: row.ID}
	}
	docs, err := r.st.GetDocs(ctx, user, refs)
	if err != nil {
		return err
	}
	size := 0
	var revs []node.Revision
	for i, d := range docs {
		if d == nil {
			continue
		}
		for _, l := range resp.Rows[i].Leaves {
			x, ok := d.Revision(l, 0)
			if !ok {
				continue // changed since the feed was read: the puller fetches
			}
			size += revisionSize(&x)
			if size > max || len(revs) >= MaxFetchRevs {
				return nil
			}
			revs = append(revs, x)
		}
	}
	resp.Revisions = revs
	return nil
}

func revisionSize(x *node.Revision) int {
	return 64 + len(x.Coll) + len(x.ID) + len(x.Path.IDs)*revtree.HashLen + len(x.Body.Payload) +
		len(x.Body.ParentID) + len(x.Body.PredecessorID) + len(x.Body.Origin)
}

func (r *Replicator) serveFetch(ctx context.Context, from peer.ID, m *FetchRequest) (*FetchResponse, error) {
	if _, err := r.checkServe(ctx, m.User, from); err != nil {
		return nil, err
	}
	resp := &FetchResponse{}
	size := 0
	refs := make([]node.DocRef, len(m.Docs))
	for i, fd := range m.Docs {
		refs[i] = node.DocRef{Coll: fd.Coll, ID: fd.ID}
	}
	docs, err := r.st.GetDocs(ctx, m.User, refs)
	if err != nil {
		return nil, err
	}
	for i, fd := range m.Docs {
		doc := docs[i]
		if doc == nil {
			resp.Done++
			continue
		}
		var revs []node.Revision
		docSize := 0
		seen := map[revtree.Rev]bool{}
		for _, want := range fd.Revs {
			for _, l := range doc.LeavesFrom(want) {
				if seen[l] {
					continue
				}
				seen[l] = true
				if x, ok := doc.Revision(l, 0); ok {
					revs = append(revs, x)
					docSize += revisionSize(&x)
				}
			}
		}
		if i > 0 && (size+docSize > MaxResponseBytes || len(resp.Revisions)+len(revs) > MaxFetchRevs) {
			break
		}
		if len(revs) > MaxFetchRevs {
			revs = revs[:MaxFetchRevs]
		}
		size += docSize
		resp.Revisions = append(resp.Revisions, revs...)
		resp.Done++
	}
	return resp, nil
}

func (r *Replicator) serveSeqs(ctx context.Context, from peer.ID, m *SeqsRequest) (*SeqsResponse, error) {
	resp := &SeqsResponse{Source: r.st.UUID(), Seqs: make([]uint64, len(m.Users))}
	for i, u := range m.Users {
		_, ok, err := r.allowed(ctx, u, from, r.self)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if resp.Seqs[i], err = r.st.UpdateSeq(ctx, u); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func (r *Replicator) serveNotice(ctx context.Context, from peer.ID, m *Notice) (*NoticeAck, error) {
	for _, u := range m.Users {
		// This node pulls from the sender: a member or a leaving member
		// (which announces what it still holds).
		_, ok, err := r.allowed(ctx, u.User, r.self, from)
		if err != nil {
			return nil, err
		}
		if !ok {
			r.c.noticeRefused.Add(1)
			r.log.Warn("replication: notice about a user not shared", "peer", from, "user", u.User)
			continue
		}
		r.c.received.Add(1)
		if err := r.mark(from, u.User, nil); err != nil {
			return nil, p2p.Errorf(p2p.CodeUnavailable, "%v", err)
		}
	}
	return &NoticeAck{}, nil
}

// serveSync pulls the user from the caller through the caller's pull loop
// and answers when that pull is done. Only a member confirms (a filling
// one too: that is how it keeps up while it fills).
func (r *Replicator) serveSync(ctx context.Context, from peer.ID, m *SyncRequest) (*SyncResponse, error) {
	set, ok, err := r.allowed(ctx, m.User, r.self, from)
	if err != nil {
		return nil, err
	}
	if !set.IsMember(r.self) {
		// A writer asking a node that left (leavers.go): this node does
		// not serve the user.
		return nil, p2p.Errorf(CodeNotMember, "this node is not a member of %q's replica set", m.User)
	}
	if !ok {
		return nil, p2p.Errorf(CodeForbidden, "user %q is not shared with %s", m.User, from)
	}
	done := make(chan error, 1)
	if err := r.mark(from, m.User, done); err != nil {
		return nil, p2p.Errorf(p2p.CodeUnavailable, "%v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			return nil, p2p.Errorf(p2p.CodeUnavailable, "pull: %v", err)
		}
		r.c.syncs.Add(1)
		return &SyncResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
