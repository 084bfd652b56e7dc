package raftls

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/api/testkit"
)

// issueCustom signs a certificate with arbitrary role URIs (to forge
// non-voter certificates under the real CA).
func issueCustom(t *testing.T, ca *CA, uris []string) (certPEM, keyPEM []byte) {
	t.Helper()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	serial, _ := newSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "custom"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := x509.MarshalPKCS8PrivateKey(key)
	return encodePEM("CERTIFICATE", der), encodePEM("PRIVATE KEY", k)
}

func mustCert(t *testing.T, ca *CA, uris []string) *x509.Certificate {
	t.Helper()
	p, _ := issueCustom(t, ca, uris)
	c, err := parseCertPEM(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func voterTLS(t *testing.T, ca *CA, id string) *tls.Config {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(id, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerClientTLS(ca.CertPEM(), certPEM, keyPEM, id)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func listen(t *testing.T, cfg Config) *StreamLayer {
	t.Helper()
	s, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// acceptOne runs Accept in the background and delivers its result.
func acceptOne(s *StreamLayer) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := s.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

// expectPingPong checks that a dialed connection reaches Accept and carries
// bytes both ways.
func expectPingPong(t *testing.T, srv *StreamLayer, dialer *StreamLayer) {
	t.Helper()
	accepted := acceptOne(srv)
	c, err := dialer.Dial(raft.ServerAddress(srv.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatalf("legitimate dial failed: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	var sc net.Conn
	select {
	case sc = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return the legitimate connection")
	}
	if sc == nil {
		t.Fatal("Accept failed")
	}
	defer sc.Close()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}
	state := sc.(*tls.Conn).ConnectionState()
	if state.Version != tls.VersionTLS13 {
		t.Fatalf("version %x", state.Version)
	}
	if id, err := PeerID(state.PeerCertificates[0]); err != nil || id == "" {
		t.Fatalf("server sees peer %q, %v", id, err)
	}
}

func TestRefusedPeers(t *testing.T) {
	ca, _ := NewCA("directory CA", time.Hour)
	evil, _ := NewCA("directory CA", time.Hour) // same name, other key
	srv := listen(t, Config{TLS: voterTLS(t, ca, "a"), HandshakeTimeout: 2 * time.Second})

	caPool := x509.NewCertPool()
	caPool.AddCert(ca.cert)
	certPair := func(certPEM, keyPEM []byte) []tls.Certificate {
		p, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{p}
	}
	evilCert, evilKey, _ := evil.Issue("a", []string{"127.0.0.1"}, time.Hour)
	nodeCert, nodeKey := issueCustom(t, ca, []string{"hce://node/n1"})
	voterCert, voterKey, _ := ca.Issue("b", []string{"127.0.0.1"}, time.Hour)

	tests := []struct {
		name string
		cfg  *tls.Config
	}{
		{"certificate from another CA", &tls.Config{RootCAs: caPool, Certificates: certPair(evilCert, evilKey), MinVersion: tls.VersionTLS13}},
		{"no client certificate", &tls.Config{RootCAs: caPool, MinVersion: tls.VersionTLS13}},
		{"right CA, wrong role", &tls.Config{RootCAs: caPool, Certificates: certPair(nodeCert, nodeKey), MinVersion: tls.VersionTLS13}},
		{"TLS 1.2", &tls.Config{RootCAs: caPool, Certificates: certPair(voterCert, voterKey), MaxVersion: tls.VersionTLS12}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Rejected()
			c, err := tls.Dial("tcp", srv.Addr().String(), tc.cfg)
			if err == nil {
				// TLS 1.3: the server's verdict on the client certificate
				// arrives after the client's handshake; a read sees it.
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Read(make([]byte, 1))
				_ = c.Close()
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("server did not refuse the connection")
				}
			}
			if err == nil {
				t.Fatal("connection was not refused")
			}
			testkit.WaitFor(t, 5*time.Second, "rejection counted", func() bool { return srv.Rejected() > before })
		})
	}

	// The voter side refuses servers from another CA or without the role.
	b, err := Listen("127.0.0.1:0", Config{TLS: voterTLS(t, ca, "b")})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	evilTLS, err := ServerClientTLS(evil.CertPEM(), evilCert, evilKey, "a")
	if err != nil {
		t.Fatal(err)
	}
	impostor := listen(t, Config{TLS: evilTLS})
	if c, err := b.Dial(raft.ServerAddress(impostor.Addr().String()), 2*time.Second); err == nil {
		c.Close()
		t.Fatal("dialed a server from another CA")
	}
	roleless := &tls.Config{Certificates: certPair(nodeCert, nodeKey), MinVersion: tls.VersionTLS13}
	nodeLn := listen(t, Config{TLS: roleless})
	if c, err := b.Dial(raft.ServerAddress(nodeLn.Addr().String()), 2*time.Second); err == nil {
		c.Close()
		t.Fatal("dialed a server without the voter role")
	}

	// None of this disturbed the listener.
	expectPingPong(t, srv, b)
}

func TestGarbageDoesNotBreakListener(t *testing.T) {
	ca, _ := NewCA("directory CA", time.Hour)
	srv := listen(t, Config{TLS: voterTLS(t, ca, "a"), HandshakeTimeout: 300 * time.Millisecond})
	dialer := listen(t, Config{TLS: voterTLS(t, ca, "b")})

	before := srv.Rejected()
	// An idle connection that never speaks: times out.
	idle, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// Plain garbage, an HTTP request, a truncated TLS record, random bytes.
	junk := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0x16, 0x03, 0x01, 0xff, 0xff, 0x01},
		bytes.Repeat([]byte{0}, 4096),
	}
	rnd := make([]byte, 2048)
	_, _ = rand.Read(rnd)
	junk = append(junk, rnd)
	for _, j := range junk {
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(j)
		_ = c.Close()
	}
	testkit.WaitFor(t, 5*time.Second, "garbage connections refused", func() bool {
		return srv.Rejected() >= before+uint64(len(junk))+1
	})
	// While all that happened, and after, a voter still gets through.
	expectPingPong(t, srv, dialer)
}

func TestConfigValidate(t *testing.T) {
	tlsCfg := &tls.Config{}
	tests := []struct {
		name string
		cfg  Config
		err  error
	}{
		{"no tls", Config{}, ErrNoTLS},
		{"unspecified advertise", Config{TLS: tlsCfg, Advertise: &net.TCPAddr{IP: net.IPv4zero, Port: 1}}, ErrNotAdvertisable},
		{"ok", Config{TLS: tlsCfg, Advertise: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}}, nil},
	}
	for _, tc := range tests {
		if err := tc.cfg.Validate(); !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
	if _, err := Listen("0.0.0.0:0", Config{TLS: tlsCfg}); !errors.Is(err, ErrNotAdvertisable) {
		t.Errorf("listen on 0.0.0.0 without Advertise: %v", err)
	}
}

// counterFSM sums uint64 commands.
type counterFSM struct {
	mu  sync.Mutex
	sum uint64
	n   int
}

func (f *counterFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sum += binary.BigEndian.Uint64(l.Data)
	f.n++
	return f.sum
}

func (f *counterFSM) get() (uint64, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sum, f.n
}

func (f *counterFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return counterSnap{f.sum, f.n}, nil
}

func (f *counterFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [16]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sum, f.n = binary.BigEndian.Uint64(b[:8]), int(binary.BigEndian.Uint64(b[8:]))
	return nil
}

type counterSnap struct {
	sum uint64
	n   int
}

func (s counterSnap) Persist(sink raft.SnapshotSink) error {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], s.sum)
	binary.BigEndian.PutUint64(b[8:], uint64(s.n))
	if _, err := sink.Write(b[:]); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (counterSnap) Release() {}

// raftVoter is one raft server of a test cluster over this package.
type raftVoter struct {
	id    raft.ServerID
	fsm   *counterFSM
	trans *raft.NetworkTransport
	r     *raft.Raft
	shut  bool // shut down by the test itself
}

// startRaftCluster starts n raft voters over mutual TLS on loopback
// (in-memory log, quick timeouts), bootstraps them as one cluster and
// returns once one leads. Cleanup shuts down the voters the test did not
// and closes the transports with their pooled connections (Close keeps
// them open, and the peers' readers would wait until a GC finalizes them).
func startRaftCluster(t *testing.T, n int) []*raftVoter {
	t.Helper()
	ca, _ := NewCA("directory CA", time.Hour)
	voters := make([]*raftVoter, n)
	var servers []raft.Server
	for i := range voters {
		id := fmt.Sprintf("v%d", i)
		s, err := Listen("127.0.0.1:0", Config{TLS: voterTLS(t, ca, id)})
		if err != nil {
			t.Fatal(err)
		}
		trans := NewTransport(s, TransportConfig{Timeout: 2 * time.Second})
		voters[i] = &raftVoter{id: raft.ServerID(id), fsm: &counterFSM{}, trans: trans}
		servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: trans.LocalAddr()})
	}
	t.Cleanup(func() {
		for _, v := range voters {
			if v.r != nil && !v.shut {
				_ = v.r.Shutdown().Error()
			}
			v.trans.CloseStreams()
			_ = v.trans.Close()
		}
	})
	for _, v := range voters {
		cfg := raft.DefaultConfig()
		cfg.LocalID = v.id
		cfg.HeartbeatTimeout = 300 * time.Millisecond
		cfg.ElectionTimeout = 300 * time.Millisecond
		cfg.LeaderLeaseTimeout = 150 * time.Millisecond
		cfg.CommitTimeout = 5 * time.Millisecond
		cfg.LogLevel = "off"
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(cfg, v.fsm, store, store, raft.NewInmemSnapshotStore(), v.trans)
		if err != nil {
			t.Fatal(err)
		}
		v.r = r
	}
	if err := voters[0].r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	raftLeader(t, voters)
	return voters
}

// raftLeader waits for a voter that leads.
func raftLeader(t *testing.T, voters []*raftVoter) *raftVoter {
	t.Helper()
	var l *raftVoter
	testkit.WaitFor(t, 10*time.Second, "a leader", func() bool {
		for _, v := range voters {
			if v.r.State() == raft.Leader {
				l = v
				return true
			}
		}
		return false
	})
	return l
}

func TestRaftClusterOverMutualTLS(t *testing.T) {
	voters := startRaftCluster(t, 3)
	leader := raftLeader(t, voters)
	const entries = 50
	var want uint64
	for i := 1; i <= entries; i++ {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i))
		want += uint64(i)
		if err := leader.r.Apply(b[:], 5*time.Second).Error(); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "replication to every voter", func() bool {
		for _, v := range voters {
			if sum, k := v.fsm.get(); sum != want || k != entries {
				return false
			}
		}
		return true
	})
	// Every voter knows the same leader at its advertised TLS address.
	for _, v := range voters {
		addr, id := v.r.LeaderWithID()
		if id != leader.id || addr != leader.trans.LocalAddr() {
			t.Fatalf("%s sees leader %s@%s", v.id, id, addr)
		}
	}
}

// TestRefuse: Config.Refuse cuts a voter off by its certificate's ID in
// both directions (accepted connections never reach Accept, dials fail
// with ErrRefused) and closes an established connection once the peer
// becomes refused; other voters are unaffected.
func TestRefuse(t *testing.T) {
	ca, _ := NewCA("directory CA", time.Hour)
	var mu sync.Mutex
	refused := map[string]bool{"b": true}
	refuse := func(id string) bool {
		mu.Lock()
		defer mu.Unlock()
		return refused[id]
	}
	a := listen(t, Config{TLS: voterTLS(t, ca, "a"), Refuse: refuse})
	b := listen(t, Config{TLS: voterTLS(t, ca, "b")})
	c := listen(t, Config{TLS: voterTLS(t, ca, "c")})

	// a refuses to dial b.
	if conn, err := a.Dial(raft.ServerAddress(b.Addr().String()), 2*time.Second); !errors.Is(err, ErrRefused) {
		if conn != nil {
			conn.Close()
		}
		t.Fatalf("a dialing the refused b: %v, want ErrRefused", err)
	}
	// b's dial to a is closed after the handshake and never reaches Accept.
	before := a.Rejected()
	accepted := acceptOne(a)
	if conn, err := b.Dial(raft.ServerAddress(a.Addr().String()), 2*time.Second); err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("a did not close b's connection: %v", err)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "b's connection refused", func() bool { return a.Rejected() > before })

	// c gets through both ways; the accepted connection is c's.
	cc, err := c.Dial(raft.ServerAddress(a.Addr().String()), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := cc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	var sc net.Conn
	select {
	case sc = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return c's connection")
	}
	defer sc.Close()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("a read %q, %v", buf, err)
	}
	ac, err := a.Dial(raft.ServerAddress(c.Addr().String()), 2*time.Second)
	if err != nil {
		t.Fatalf("a dialing c: %v", err)
	}
	defer ac.Close()

	// Once c is refused, a's established connections to it fail on use
	// and c sees them closed.
	mu.Lock()
	refused["c"] = true
	mu.Unlock()
	if _, err := ac.Write([]byte("x")); !errors.Is(err, ErrRefused) {
		t.Fatalf("write to c after refusing it: %v", err)
	}
	if _, err := cc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Read(buf); !errors.Is(err, ErrRefused) {
		t.Fatalf("read from c after refusing it: %v", err)
	}
	_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := cc.Read(buf); err == nil {
		t.Fatal("c's connection to a still open")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("c's connection to a not closed")
	}
}
