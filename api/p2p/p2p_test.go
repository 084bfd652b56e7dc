package p2p

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
)

const protoEcho protocol.ID = "/hce/test/1.0.0/echo"

// newTestHost starts a loopback host gated by allow (nil: no gater).
func newTestHost(t *testing.T, allow Allowlist) host.Host {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Key: k}
	if allow != nil {
		cfg.Gater = NewGater(allow, nil)
	}
	h, err := NewHost(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// know makes a's peerstore hold b's addresses.
func know(a, b host.Host) {
	a.Peerstore().AddAddrs(b.ID(), b.Addrs(), peerstore.PermanentAddrTTL)
}

func echo(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
	return append([]byte(from.String()+":"), req...), nil
}

func TestLoadOrCreateIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, id1, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	k2, id2, err := LoadOrCreateIdentity(dir)
	if err != nil || id1 != id2 || !k1.Equals(k2) {
		t.Fatalf("reload: %v %s %s", err, id1, id2)
	}
	ed, err := Ed25519Key(k1)
	if err != nil {
		t.Fatal(err)
	}
	if pid, err := PeerIDFromEd25519(ed.Public().(ed25519.PublicKey)); err != nil || pid != id1 {
		t.Fatalf("PeerIDFromEd25519 = %s, %v; want %s", pid, err, id1)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("folder holds %d entries, want only the key", len(entries))
	}

	os.Chmod(filepath.Join(dir, KeyFile), 0o644)
	if _, _, err := LoadOrCreateIdentity(dir); !errors.Is(err, ErrBadKeyFile) {
		t.Fatalf("world-readable key: %v", err)
	}
	os.WriteFile(filepath.Join(dir, KeyFile), []byte("garbage"), 0o600)
	os.Chmod(filepath.Join(dir, KeyFile), 0o600)
	if _, _, err := LoadOrCreateIdentity(dir); !errors.Is(err, ErrBadKeyFile) {
		t.Fatalf("garbage key: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	k, _, _ := crypto.GenerateEd25519Key(nil)
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Key: k}, true},
		{"no key", Config{}, false},
		{"bad addr", Config{Key: k, ListenAddrs: []string{"nope"}}, false},
		{"udp addr", Config{Key: k, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0"}}, false},
		{"negative memory", Config{Key: k, ResourceMemory: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
	}
}

func TestRPCRoundTrip(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	Serve(srv, protoEcho, echo, RPCConfig{})
	know(cli, srv)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := bytes.Repeat([]byte{byte('a' + i)}, 1000*i)
			resp, err := Call(context.Background(), cli, srv.ID(), protoEcho, req)
			if err != nil {
				t.Error(err)
				return
			}
			if want := append([]byte(cli.ID().String()+":"), req...); !bytes.Equal(resp, want) {
				t.Errorf("call %d: got %d bytes, want %d", i, len(resp), len(want))
			}
		}()
	}
	wg.Wait()
	// An unknown protocol fails without a RemoteError.
	_, err := Call(context.Background(), cli, srv.ID(), "/hce/test/1.0.0/none", nil)
	var re *RemoteError
	if err == nil || errors.As(err, &re) {
		t.Fatalf("unknown protocol: %v", err)
	}
}

func TestGaterRefusesUnlisted(t *testing.T) {
	// a admits b only; b admits a and c; c admits a.
	la, lb, lc := NewStaticAllowlist(), NewStaticAllowlist(), NewStaticAllowlist()
	a, b, c := newTestHost(t, la), newTestHost(t, lb), newTestHost(t, lc)
	la.Replace([]peer.ID{b.ID()})
	lb.Replace([]peer.ID{a.ID(), c.ID()})
	lc.Add(a.ID())
	for _, h := range []host.Host{a, b, c} {
		Serve(h, protoEcho, echo, RPCConfig{})
		for _, o := range []host.Host{a, b, c} {
			if o != h {
				know(h, o)
			}
		}
	}
	ctx := context.Background()
	if _, err := Call(ctx, b, a.ID(), protoEcho, []byte("x")); err != nil {
		t.Fatalf("listed peer b -> a: %v", err)
	}
	if _, err := Call(ctx, a, b.ID(), protoEcho, []byte("x")); err != nil {
		t.Fatalf("listed peer a -> b: %v", err)
	}
	// Inbound: c lists a, but a does not list c.
	if _, err := Call(ctx, c, a.ID(), protoEcho, []byte("x")); err == nil {
		t.Fatal("a accepted unlisted inbound peer c")
	}
	// Outbound: a refuses to dial c.
	if _, err := Call(ctx, a, c.ID(), protoEcho, []byte("x")); err == nil {
		t.Fatal("a dialed unlisted peer c")
	}
	if n := len(a.Network().ConnsToPeer(c.ID())); n != 0 {
		t.Fatalf("a holds %d connections to c", n)
	}
	// Listing c lets it in.
	la.Add(c.ID())
	if _, err := Call(ctx, c, a.ID(), protoEcho, []byte("x")); err != nil {
		t.Fatalf("after listing: %v", err)
	}
	// Unit check: InterceptSecured decides in both directions.
	g := NewGater(lb, nil)
	for _, dir := range []network.Direction{network.DirInbound, network.DirOutbound} {
		if !g.InterceptSecured(dir, a.ID(), nil) {
			t.Errorf("%v: listed peer refused", dir)
		}
		if g.InterceptSecured(dir, b.ID(), nil) {
			t.Errorf("%v: unlisted peer admitted", dir)
		}
	}
	if got := lb.List(); len(got) != 2 {
		t.Errorf("List() = %v", got)
	}
	lb.Remove(a.ID())
	if lb.Allowed(a.ID()) {
		t.Error("removed peer still allowed")
	}
}

func TestOversizedFrames(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	Serve(srv, protoEcho, echo, RPCConfig{MaxFrameSize: 100})
	know(cli, srv)
	ctx := context.Background()
	// The caller refuses to send over its own limit.
	if _, err := CallWith(ctx, RPCConfig{MaxFrameSize: 10}, cli, srv.ID(), protoEcho, make([]byte, 11)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("client-side limit: %v", err)
	}
	// The server resets a request over its limit.
	_, err := CallWith(ctx, RPCConfig{MaxFrameSize: 1000}, cli, srv.ID(), protoEcho, make([]byte, 200))
	var re *RemoteError
	if err == nil || errors.As(err, &re) {
		t.Fatalf("server-side limit: %v", err)
	}
	// A response over the caller's limit is refused.
	if _, err := CallWith(ctx, RPCConfig{MaxFrameSize: 60}, cli, srv.ID(), protoEcho, make([]byte, 20)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("response limit: %v", err)
	}
	// A handler answer over the server's limit becomes an error frame.
	big := func(context.Context, peer.ID, []byte) ([]byte, error) { return make([]byte, 101), nil }
	Serve(srv, "/hce/test/1.0.0/big", big, RPCConfig{MaxFrameSize: 100})
	if _, err := Call(ctx, cli, srv.ID(), "/hce/test/1.0.0/big", nil); !IsCode(err, CodeInternal) {
		t.Fatalf("oversized answer: %v", err)
	}
	if _, err := Call(ctx, cli, srv.ID(), protoEcho, []byte("ok")); err != nil {
		t.Fatalf("server stopped serving: %v", err)
	}
}

func TestMalformedFrameRefused(t *testing.T) {
	srv, bad, good := newTestHost(t, nil), newTestHost(t, nil), newTestHost(t, nil)
	Serve(srv, protoEcho, echo, RPCConfig{})
	know(bad, srv)
	know(good, srv)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"zero length", []byte{0}},
		{"unknown type", []byte{2, 7, 'x'}},
		{"error frame as request", []byte{3, byte(FrameError), '{', '}'}},
		{"truncated", []byte{9, 1, 'x'}},
		{"length overflow", bytes.Repeat([]byte{0xff}, 11)},
		{"too large", []byte{0xff, 0xff, 0xff, 0x7f}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := bad.NewStream(ctx, srv.ID(), protoEcho)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			s.SetDeadline(time.Now().Add(5 * time.Second))
			s.Write(tc.raw)
			s.CloseWrite()
			if typ, p, err := ReadFrame(s, 0); err == nil {
				t.Fatalf("server answered a malformed request: %d %q", typ, p)
			}
			if _, err := Call(ctx, good, srv.ID(), protoEcho, []byte("still")); err != nil {
				t.Fatalf("server stopped serving other peers: %v", err)
			}
			if _, err := Call(ctx, bad, srv.ID(), protoEcho, []byte("again")); err != nil {
				t.Fatalf("server stopped serving the bad peer: %v", err)
			}
		})
	}
}

func TestRemoteErrors(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	know(cli, srv)
	handlers := map[protocol.ID]Handler{
		"/t/typed": func(context.Context, peer.ID, []byte) ([]byte, error) {
			return nil, Errorf(CodeUnavailable, "leader is %s", "v2")
		},
		"/t/wrapped": func(context.Context, peer.ID, []byte) ([]byte, error) {
			return nil, errors.Join(errors.New("context"), &RemoteError{Code: "x"})
		},
		"/t/plain": func(context.Context, peer.ID, []byte) ([]byte, error) {
			return nil, errors.New("disk on fire")
		},
		"/t/panic": func(context.Context, peer.ID, []byte) ([]byte, error) {
			panic("boom")
		},
	}
	for p, h := range handlers {
		Serve(srv, p, h, RPCConfig{})
	}
	Serve(srv, protoEcho, echo, RPCConfig{})
	ctx := context.Background()
	for _, tc := range []struct {
		proto protocol.ID
		code  string
		msg   string
	}{
		{"/t/typed", CodeUnavailable, "leader is v2"},
		{"/t/wrapped", "x", ""},
		{"/t/plain", CodeInternal, "disk on fire"},
	} {
		_, err := Call(ctx, cli, srv.ID(), tc.proto, nil)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != tc.code || re.Message != tc.msg {
			t.Errorf("%s: err = %v, want code %q message %q", tc.proto, err, tc.code, tc.msg)
		}
	}
	if _, err := Call(ctx, cli, srv.ID(), "/t/panic", nil); err == nil || IsCode(err, CodeInternal) {
		t.Errorf("panic: err = %v, want a reset stream", err)
	}
	if _, err := Call(ctx, cli, srv.ID(), protoEcho, nil); err != nil {
		t.Errorf("server stopped after panic: %v", err)
	}
}

func TestCallContext(t *testing.T) {
	srv, cli := newTestHost(t, nil), newTestHost(t, nil)
	know(cli, srv)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	Serve(srv, "/t/block", func(ctx context.Context, _ peer.ID, _ []byte) ([]byte, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}, RPCConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Call(ctx, cli, srv.ID(), "/t/block", nil)
		errc <- err
	}()
	<-started
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Call did not return after cancel")
	}
	// Deadline: the caller's timeout bounds the call.
	_, err := CallWith(context.Background(), RPCConfig{Timeout: 100 * time.Millisecond}, cli, srv.ID(), "/t/block", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: err = %v", err)
	}
	<-started
	// A context cancelled up front fails before dialing.
	if _, err := Call(ctx, cli, srv.ID(), protoEcho, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

// TestCloseLeavesNoGoroutines checks that hosts, servers and callers
// leave nothing running once the hosts are closed.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	var hosts []host.Host
	for range 2 {
		k, _, _ := crypto.GenerateEd25519Key(nil)
		h, err := NewHost(context.Background(), Config{Key: k, Gater: NewGater(AllowFunc(func(peer.ID) bool { return true }), nil)})
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	srv, cli := hosts[0], hosts[1]
	Serve(srv, protoEcho, echo, RPCConfig{})
	know(cli, srv)
	for range 5 {
		if _, err := Call(context.Background(), cli, srv.ID(), protoEcho, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range hosts {
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a synchronisation sleep
	}
}
