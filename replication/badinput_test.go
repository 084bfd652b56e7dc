package replication

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node"
)

// evil wraps an honest handler and corrupts its answers.
type evil struct {
	inner Handler
	mu    sync.Mutex
	mode  string
}

func (e *evil) set(mode string) {
	e.mu.Lock()
	e.mode = mode
	e.mu.Unlock()
}

func (e *evil) Handle(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
	e.mu.Lock()
	mode := e.mode
	e.mu.Unlock()
	resp, err := e.inner.Handle(ctx, from, req)
	if err != nil {
		return nil, err
	}
	m, err := Decode(resp)
	if err != nil {
		return nil, err
	}
	switch m := m.(type) {
	case *FetchResponse:
		switch mode {
		case "tamper":
			for i := range m.Revisions {
				m.Revisions[i].Body.Payload += " (forged)"
			}
		case "extra":
			x := m.Revisions[0]
			x.ID = "notasked"
			m.Revisions = append(m.Revisions, x)
		case "huge":
			return make([]byte, MaxFrameSize+1), nil
		case "garbage":
			return []byte{WireVersion, typeFetchResp, 0xff}, nil
		}
	case *ChangesResponse:
		if mode == "inline" {
			// Forged inline revisions: the store's hash check refuses them.
			for i := range m.Revisions {
				m.Revisions[i].Body.Payload += " (forged)"
			}
		} else {
			m.Revisions = nil // the fetch answers are the ones tampered with
		}
		if mode == "rows" && len(m.Rows) > 0 {
			for len(m.Rows) <= DefaultChangesBatch {
				m.Rows = append(m.Rows, m.Rows[0])
			}
		}
	}
	return Encode(m), nil
}

func TestBadInput(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	a, b, e := c.nodes[0], c.nodes[1], c.nodes[2]
	c.share("u", 0, 1) // a and b
	c.share("v", 0, 2) // a and e (e is a member, but lies)
	ev := &evil{inner: e.repl}
	e.tr.Listen(ev)
	// e sends no notices, so a pulls from e only when the test says so.
	e.store.SetChangeNotifier(nil)

	// Malformed frames and messages from e: refused, a keeps serving.
	for _, raw := range [][]byte{
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // length overflows
		{0x05, 0x09, 'x'}, // unknown frame type, truncated
		{0x00},            // zero length
	} {
		s, err := e.host.NewStream(bg, a.id, ProtocolID)
		if err != nil {
			t.Fatal(err)
		}
		s.Write(raw)
		s.CloseWrite()
		if _, _, err := p2p.ReadFrame(s, MaxFrameSize); err == nil {
			t.Errorf("malformed frame %x answered", raw)
		}
		s.Close()
	}
	for _, req := range [][]byte{{}, {WireVersion}, {9, 9}, {WireVersion, typeChangesReq, 0xff}, Encode(&NoticeAck{}), Encode(&ChangesResponse{Source: "x"})} {
		_, err := e.tr.Call(bg, a.id, req)
		if !p2p.IsCode(err, CodeBadRequest) {
			t.Errorf("request %x: %v, want %s", req, err, CodeBadRequest)
		}
	}

	// e asks for, or claims, a user it does not share.
	if _, err := b.store.PutItem(bg, "u", "c", testkit.WBO("secret", "s"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() string { return diff("u", a.store, b.store) })
	for _, m := range []Message{&ChangesRequest{User: "u"}, &FetchRequest{User: "u", Docs: []FetchDoc{{Coll: "c", ID: "secret", Revs: nil}}}} {
		if f, ok := m.(*FetchRequest); ok {
			d, _ := a.store.GetDoc(bg, "u", "c", "secret")
			w, _ := d.Winner()
			f.Docs[0].Revs = append(f.Docs[0].Revs, w.Rev)
		}
		if _, err := e.tr.Call(bg, a.id, Encode(m)); !p2p.IsCode(err, CodeForbidden) {
			t.Errorf("%T for a user not shared: %v, want %s", m, err, CodeForbidden)
		}
	}
	resp, err := e.tr.Call(bg, a.id, Encode(&SeqsRequest{Users: []string{"u", "v"}}))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := Decode(resp); err != nil || m.(*SeqsResponse).Seqs[0] != 0 {
		t.Errorf("seqs of a user not shared: %+v, %v", m, err)
	}
	// e has its own (forged) data for u and announces it.
	if _, err := e.store.PutItem(bg, "u", "c", testkit.WBO("forged", "f"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	before := a.repl.Stats().NoticesRefused
	if _, err := e.tr.Call(bg, a.id, Encode(&Notice{Users: []UserSeq{{User: "u", Seq: 1}}})); err != nil {
		t.Fatal(err)
	}
	if got := a.repl.Stats().NoticesRefused; got != before+1 {
		t.Errorf("NoticesRefused %d, want %d", got, before+1)
	}
	if err := a.repl.pull(bg, e.id, "u"); !errors.Is(err, ErrNotShared) {
		t.Errorf("pull of u from e: %v, want ErrNotShared", err)
	}

	// e serves v, a user it shares, with bad answers: nothing is stored.
	if _, err := e.store.PutItem(bg, "v", "c", testkit.WBO("r1", "honest"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"tamper", "inline", "rows", "huge", "garbage", "extra"} {
		ev.set(mode)
		refused := a.repl.Stats().RefusedRevisions
		err := a.repl.pull(bg, e.id, "v")
		switch mode {
		case "tamper", "inline":
			if err != nil || a.repl.Stats().RefusedRevisions == refused {
				t.Errorf("%s: pull %v, refused %d", mode, err, a.repl.Stats().RefusedRevisions-refused)
			}
		case "extra":
			// The honest revision goes in; the one not asked for is refused.
			if err != nil || a.repl.Stats().RefusedRevisions != refused+1 {
				t.Errorf("%s: pull %v, refused %d", mode, err, a.repl.Stats().RefusedRevisions-refused)
			}
			continue
		default:
			if err == nil {
				t.Errorf("%s: pull succeeded", mode)
			}
		}
		if ds, _ := docs(a.store, "v"); len(ds) != 0 {
			t.Fatalf("%s: a stored %d documents of v", mode, len(ds))
		}
		if cp, _ := a.store.GetCheckpoint(bg, "v", e.id.String()); mode != "tamper" && mode != "inline" && cp.Seq != 0 {
			t.Errorf("%s: checkpoint moved to %d", mode, cp.Seq)
		}
		// Reset the checkpoint so that the next mode is tried on the same
		// change.
		if err := a.store.SetCheckpoint(bg, "v", e.id.String(), node.Checkpoint{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.store.GetDoc(bg, "v", "c", "notasked"); !errors.Is(err, node.ErrDocNotFound) {
		t.Errorf("revision not asked for was stored: %v", err)
	}
	if _, err := a.store.GetDoc(bg, "v", "c", "r1"); err != nil {
		t.Errorf("honest revision not stored: %v", err)
	}
	if _, err := a.store.GetDoc(bg, "u", "c", "forged"); !errors.Is(err, node.ErrDocNotFound) {
		t.Errorf("e's data for u reached a: %v", err)
	}

	// a still serves and pulls from honest peers.
	if _, err := b.store.PutItem(bg, "u", "c", testkit.WBO("after", "ok"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() string { return diff("u", a.store, b.store) })
	if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO("after2", "ok"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() string { return diff("u", a.store, b.store) })
	t.Logf("a: %+v", a.repl.Stats())
}
