package p2p

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

const protoSession protocol.ID = "/hce/test/1.0.0/session"

// counted returns echo counting its calls in n.
func counted(n *atomic.Int64) Handler {
	return func(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
		n.Add(1)
		return echo(ctx, from, req)
	}
}

// keptStream returns the one idle stream c keeps for p (nil when none).
func keptStream(t *testing.T, c *Sessions, p peer.ID) network.Stream {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ss := c.idle[p]; len(ss) {
	case 0:
		return nil
	case 1:
		return ss[0].s
	default:
		t.Fatalf("%d idle streams, want at most 1", len(ss))
		return nil
	}
}

func callEcho(t *testing.T, c *Sessions, cli, srv peer.ID, req string) {
	t.Helper()
	resp, err := c.Call(context.Background(), srv, []byte(req))
	if err != nil {
		t.Fatalf("call %q: %v", req, err)
	}
	if want := cli.String() + ":" + req; string(resp) != want {
		t.Fatalf("call %q: got %q", req, resp)
	}
}

// TestSessionsReuseStreams: sequential calls share one stream; concurrent
// ones open more, and at most MaxIdleStreams stay; answers are right.
func TestSessionsReuseStreams(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	var n atomic.Int64
	ServeSessions(srv, protoSession, counted(&n), RPCConfig{})
	know(cli, srv)
	c := NewSessions(cli, protoSession, "", RPCConfig{MaxIdleStreams: 3})
	callEcho(t, c, cli.ID(), srv.ID(), "first")
	s := keptStream(t, c, srv.ID())
	if s == nil {
		t.Fatal("no stream kept after a call")
	}
	for i := range 20 {
		callEcho(t, c, cli.ID(), srv.ID(), "call "+strconv.Itoa(i))
		if got := keptStream(t, c, srv.ID()); got != s {
			t.Fatalf("call %d used another stream", i)
		}
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			req := bytes.Repeat([]byte{byte('a' + i)}, 1000*i)
			resp, err := c.Call(context.Background(), srv.ID(), req)
			if err != nil {
				t.Error(err)
				return
			}
			if want := append([]byte(cli.ID().String()+":"), req...); !bytes.Equal(resp, want) {
				t.Errorf("call %d: got %d bytes, want %d", i, len(resp), len(want))
			}
		})
	}
	wg.Wait()
	if got := c.Idle(srv.ID()); got < 1 || got > 3 {
		t.Fatalf("%d idle streams, want 1 to 3", got)
	}
	if got := n.Load(); got != 37 {
		t.Fatalf("handler ran %d times for 37 calls", got)
	}
	c.CloseIdle()
	if got := c.Idle(srv.ID()); got != 0 {
		t.Fatalf("%d idle streams after CloseIdle", got)
	}
	callEcho(t, c, cli.ID(), srv.ID(), "after CloseIdle")
}

// TestSessionsFallback: a peer that serves only the one-request protocol
// is called over it, and no stream is kept.
func TestSessionsFallback(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	Serve(srv, protoEcho, echo, RPCConfig{})
	know(cli, srv)
	c := NewSessions(cli, protoSession, protoEcho, RPCConfig{})
	for i := range 3 {
		callEcho(t, c, cli.ID(), srv.ID(), "old "+strconv.Itoa(i))
	}
	if got := c.Idle(srv.ID()); got != 0 {
		t.Fatalf("%d streams kept for a one-request peer", got)
	}
	// Without a fallback the call fails, and not as a RemoteError.
	_, err := NewSessions(cli, protoSession, "", RPCConfig{}).Call(context.Background(), srv.ID(), []byte("x"))
	var re *RemoteError
	if err == nil || errors.As(err, &re) {
		t.Fatalf("call to a peer without the protocol: %v", err)
	}
}

// TestSessionsServerIdleClose: a stream the server closed for idleness is
// not used for the request: the call goes over a new stream, and the
// handler runs once per call.
func TestSessionsServerIdleClose(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	var n atomic.Int64
	ServeSessions(srv, protoSession, counted(&n), RPCConfig{IdleTimeout: 100 * time.Millisecond})
	know(cli, srv)
	// The client keeps its streams far longer than the server.
	c := NewSessions(cli, protoSession, "", RPCConfig{IdleTimeout: time.Hour})
	for i := range 5 {
		callEcho(t, c, cli.ID(), srv.ID(), "before "+strconv.Itoa(i))
		old := keptStream(t, c, srv.ID())
		time.Sleep(300 * time.Millisecond)
		callEcho(t, c, cli.ID(), srv.ID(), "after "+strconv.Itoa(i))
		if keptStream(t, c, srv.ID()) == old {
			t.Fatal("the call reused the stream the server closed")
		}
	}
	if got := n.Load(); got != 10 {
		t.Fatalf("handler ran %d times for 10 calls", got)
	}
}

// TestSessionsClientIdleExpiry: the client does not reuse a stream kept
// for half the idle timeout or more.
func TestSessionsClientIdleExpiry(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	ServeSessions(srv, protoSession, echo, RPCConfig{})
	know(cli, srv)
	c := NewSessions(cli, protoSession, "", RPCConfig{})
	now := time.Now()
	c.now = func() time.Time { return now }
	callEcho(t, c, cli.ID(), srv.ID(), "one")
	old := keptStream(t, c, srv.ID())
	now = now.Add(DefaultIdleTimeout / 2)
	callEcho(t, c, cli.ID(), srv.ID(), "two")
	if keptStream(t, c, srv.ID()) == old {
		t.Fatal("a stream kept past half the idle timeout was reused")
	}
}

// TestSessionsPruneOtherPeers: streams kept for a peer no longer called
// are closed by a later call to another peer.
func TestSessionsPruneOtherPeers(t *testing.T) {
	a, b, cli := newTestHost(t, nil), newTestHost(t, nil), newTestHost(t, nil)
	ServeSessions(a, protoSession, echo, RPCConfig{})
	ServeSessions(b, protoSession, echo, RPCConfig{})
	know(cli, a)
	know(cli, b)
	c := NewSessions(cli, protoSession, "", RPCConfig{})
	now := time.Now()
	c.now = func() time.Time { return now }
	callEcho(t, c, cli.ID(), a.ID(), "to a")
	old := keptStream(t, c, a.ID())
	now = now.Add(DefaultIdleTimeout / 2)
	callEcho(t, c, cli.ID(), b.ID(), "to b")
	if c.Idle(a.ID()) != 0 {
		t.Fatal("a's stale stream is still kept")
	}
	if c.Idle(b.ID()) != 1 {
		t.Fatal("b's fresh stream was not kept")
	}
	// The closed stream is closed for writing.
	if err := WriteFrame(old, FrameData, []byte("x"), 0); err == nil {
		t.Fatal("the pruned stream still takes writes")
	}
}

// TestSessionsStop: after Stop, kept streams are closed by the server and
// new ones refused; no request reaches the handler.
func TestSessionsStop(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	var n atomic.Int64
	ss := ServeSessions(srv, protoSession, counted(&n), RPCConfig{})
	know(cli, srv)
	c := NewSessions(cli, protoSession, "", RPCConfig{})
	callEcho(t, c, cli.ID(), srv.ID(), "before")
	ss.Stop()
	if _, err := c.Call(context.Background(), srv.ID(), []byte("after")); err == nil {
		t.Fatal("a call after Stop was answered")
	}
	if got := n.Load(); got != 1 {
		t.Fatalf("handler ran %d times, want 1", got)
	}
}

// TestSessionsErrorsAndCancel: an error answer keeps the stream; a
// cancelled call resets its stream, and the next call works.
func TestSessionsErrorsAndCancel(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	release := make(chan struct{})
	ServeSessions(srv, protoSession, func(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
		switch string(req) {
		case "fail":
			return nil, Errorf("teapot", "no %s", req)
		case "panic":
			panic("handler bug")
		case "block":
			select {
			case <-release:
			case <-ctx.Done():
			}
			return []byte("late"), nil
		}
		return echo(ctx, from, req)
	}, RPCConfig{})
	know(cli, srv)
	c := NewSessions(cli, protoSession, "", RPCConfig{})
	callEcho(t, c, cli.ID(), srv.ID(), "ok")
	s := keptStream(t, c, srv.ID())
	_, err := c.Call(context.Background(), srv.ID(), []byte("fail"))
	if !IsCode(err, "teapot") {
		t.Fatalf("error answer: %v", err)
	}
	if keptStream(t, c, srv.ID()) != s {
		t.Fatal("an error answer lost the stream")
	}
	// A handler panic resets its stream only.
	if _, err := c.Call(context.Background(), srv.ID(), []byte("panic")); err == nil || IsCode(err, CodeInternal) {
		t.Fatalf("call whose handler panicked: %v", err)
	}
	if c.Idle(srv.ID()) != 0 {
		t.Fatal("the stream of a panicked handler was kept")
	}
	callEcho(t, c, cli.ID(), srv.ID(), "after the panic")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Call(ctx, srv.ID(), []byte("block")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled call: %v", err)
	}
	close(release)
	if c.Idle(srv.ID()) != 0 {
		t.Fatal("the cancelled call's stream was kept")
	}
	callEcho(t, c, cli.ID(), srv.ID(), "after cancel")
	// A response over the caller's limit is refused, and its stream not
	// kept.
	small := NewSessions(cli, protoSession, "", RPCConfig{MaxFrameSize: 10})
	if _, err := small.Call(context.Background(), srv.ID(), []byte("0123456789")); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized answer: %v", err)
	}
	if small.Idle(srv.ID()) != 0 {
		t.Fatal("the stream of an oversized answer was kept")
	}
}

// TestSessionsMalformed: a malformed request resets its session stream,
// after any number of good requests on it; the server goes on serving.
func TestSessionsMalformed(t *testing.T) {
	srv, bad := newTestHost(t, nil), newTestHost(t, nil)
	var n atomic.Int64
	ServeSessions(srv, protoSession, counted(&n), RPCConfig{})
	know(bad, srv)
	ctx := context.Background()
	for _, raw := range [][]byte{{0}, {2, 7, 'x'}, {3, byte(FrameError), '{', '}'}, {0xff, 0xff, 0xff, 0x7f}, bytes.Repeat([]byte{0xff}, 11)} {
		s, err := bad.NewStream(ctx, srv.ID(), protoSession)
		if err != nil {
			t.Fatal(err)
		}
		s.SetDeadline(time.Now().Add(5 * time.Second))
		for i := range 3 {
			if err := WriteFrame(s, FrameData, []byte("good"), 0); err != nil {
				t.Fatal(err)
			}
			if typ, p, err := ReadFrame(s, 0); err != nil || typ != FrameData || string(p) != bad.ID().String()+":good" {
				t.Fatalf("request %d: %d %q %v", i, typ, p, err)
			}
		}
		s.Write(raw)
		if typ, p, err := ReadFrame(s, 0); err == nil {
			t.Fatalf("server answered a malformed request: %d %q", typ, p)
		}
		s.Reset()
	}
	callEcho(t, NewSessions(bad, protoSession, "", RPCConfig{}), bad.ID(), srv.ID(), "still")
}

// TestSessionsReleaseMemory: the frames of a stream's requests and
// answers are released one by one: 200 calls of 512 KiB each way over one
// kept stream stay within the resource manager's stream limit (a few
// MiB), which the frames alone would pass after a few calls if they were
// held until the stream's end.
func TestSessionsReleaseMemory(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	ServeSessions(srv, protoSession, echo, RPCConfig{})
	know(cli, srv)
	c := NewSessions(cli, protoSession, "", RPCConfig{})
	req := bytes.Repeat([]byte("m"), 512<<10)
	for i := range 200 {
		if _, err := c.Call(context.Background(), srv.ID(), req); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if c.Idle(srv.ID()) != 1 {
		t.Fatalf("%d idle streams, want 1", c.Idle(srv.ID()))
	}
}
