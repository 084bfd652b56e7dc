package httpserve

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/hce-sync/hce/api/testkit"
)

// connLifetime sends head on a new connection to addr, then feeds it
// with feed (until the connection breaks) and returns how long the
// connection lived after head was sent and what the server answered.
func connLifetime(t *testing.T, addr, head string, feed func(net.Conn) error) (time.Duration, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		if feed == nil {
			return
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			if feed(c) != nil {
				return
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, _ := io.ReadAll(c) // until the server closes the connection
	life := time.Since(begin)
	close(stop)
	c.Close()
	<-fed
	return life, string(got)
}

// oneByteEvery returns a feed that sends one byte per period.
func oneByteEvery(period time.Duration) func(net.Conn) error {
	return func(c net.Conn) error {
		t := time.NewTimer(period)
		<-t.C
		_, err := c.Write([]byte("x"))
		return err
	}
}

// TestSlowBodyCut is issue 11's first finding: connections sending a
// body one byte at a time were held as long as the attacker liked. With
// BodyTimeout 300 ms and MinBodyRate 1 KiB/s the connection is closed
// about 300 ms after its headers, while a slow but steady body passes.
func TestSlowBodyCut(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "body", http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "got %d", len(b))
	})
	cfg.BodyTimeout = 300 * time.Millisecond
	cfg.MinBodyRate = 16 << 10
	s := start(t, cfg, nil)
	addr := s.ln.Addr().String()

	life, _ := connLifetime(t, addr, "PUT /user/1.0/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n", oneByteEvery(50*time.Millisecond))
	t.Logf("a body sent one byte per 50 ms held its connection %v (BodyTimeout 300 ms)", life)
	if life < 250*time.Millisecond || life > 2*time.Second {
		t.Fatalf("slow-body connection lived %v, want about 300 ms", life)
	}
	if n := testCounter(t, s.Registry(), "hce_http_body_timeouts_total", nil); n != 1 {
		t.Errorf("body timeouts counted %v, want 1", n)
	}

	// A body at 25 KiB/s, above the minimum rate, takes about a second:
	// far beyond BodyTimeout, and it passes.
	const chunk, chunks = 1 << 10, 24
	sent := 0
	life, answer := connLifetime(t, addr, fmt.Sprintf("PUT /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: %d\r\n\r\n", chunk*chunks),
		func(c net.Conn) error {
			if sent == chunks {
				return io.EOF
			}
			tm := time.NewTimer(40 * time.Millisecond)
			<-tm.C
			sent++
			_, err := c.Write(bytes.Repeat([]byte("y"), chunk))
			return err
		})
	if !strings.Contains(answer, "200 OK") || !strings.Contains(answer, fmt.Sprintf("got %d", chunk*chunks)) {
		t.Fatalf("a steady slow body was refused after %v: %q", life, answer)
	}
	if life < 600*time.Millisecond {
		t.Fatalf("the steady body took %v: the test did not outlast BodyTimeout", life)
	}
}

// TestHeaderAndIdleTimeouts checks that a connection sending headers
// slowly, and an idle keep-alive connection, are closed in bounded time.
func TestHeaderAndIdleTimeouts(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Handler = okHandler
	cfg.HeaderTimeout = 200 * time.Millisecond
	cfg.IdleTimeout = 300 * time.Millisecond
	s := start(t, cfg, nil)
	addr := s.ln.Addr().String()

	life, _ := connLifetime(t, addr, "GET / HTTP/1.1\r\n", oneByteEvery(50*time.Millisecond))
	if life > 2*time.Second {
		t.Fatalf("slow headers held the connection %v", life)
	}
	life, answer := connLifetime(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", nil)
	t.Logf("idle keep-alive connection closed %v after its request (IdleTimeout 300 ms)", life)
	if !strings.Contains(answer, "200 OK") || life < 250*time.Millisecond || life > 2*time.Second {
		t.Fatalf("idle connection lived %v (answer %q), want about 300 ms", life, answer)
	}
}

// TestConnectionCaps checks the per-address and total caps: connections
// beyond them get a 503 before anything is read, and a closed connection
// frees its slot.
func TestConnectionCaps(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Handler = okHandler
	cfg.MaxConns = 3
	cfg.MaxConnsPerAddr = 2
	s := start(t, cfg, fakeFrom("203.0.113.1:1001", "203.0.113.1:1002", "203.0.113.1:1003", "[2001:db8:1:2::5]:1", "[2001:db8:1:2::6]:1", "192.0.2.5:1", "203.0.113.1:1004"))
	addr := s.ln.Addr().String()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	accepted := func(c net.Conn, br *bufio.Reader) bool {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		// A refused connection has its 503 waiting; an accepted one
		// answers a request.
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			return true
		case 503:
			if resp.Header.Get("Retry-After") == "" {
				t.Error("refused connection's 503 has no Retry-After")
			}
			return false
		}
		t.Fatalf("status %d", resp.StatusCode)
		return false
	}
	c1, b1 := dial()
	c2, b2 := dial()
	c3, b3 := dial()
	if !accepted(c1, b1) || !accepted(c2, b2) {
		t.Fatal("first two connections of an address refused")
	}
	if accepted(c3, b3) {
		t.Fatal("third connection of 203.0.113.1 accepted (cap 2)")
	}
	c4, b4 := dial() // 2001:db8:1:2::5
	if !accepted(c4, b4) {
		t.Fatal("another address refused below the total cap")
	}
	c5, b5 := dial() // 2001:db8:1:2::6: same /64, but the total cap (3) is reached first
	if accepted(c5, b5) {
		t.Fatal("connection beyond the total cap accepted")
	}
	c6, b6 := dial() // 192.0.2.5: total cap
	if accepted(c6, b6) {
		t.Fatal("connection beyond the total cap accepted")
	}
	c1.Close()
	testkit.WaitFor(t, 5*time.Second, "the closed connection's slot", func() bool { return s.conns.open() == 2 })
	c7, b7 := dial() // 203.0.113.1 again, below both caps now
	if !accepted(c7, b7) {
		t.Fatal("connection refused after a slot was freed")
	}
	if n := testCounter(t, s.Registry(), "hce_http_connections_refused_total", map[string]string{"reason": "address"}); n != 1 {
		t.Errorf("refused per address: %v, want 1", n)
	}
	if n := testCounter(t, s.Registry(), "hce_http_connections_refused_total", map[string]string{"reason": "total"}); n != 2 {
		t.Errorf("refused in total: %v, want 2", n)
	}
	if k := addrKey(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::6")}); k != "2001:db8:1:2::/64" {
		t.Errorf("IPv6 key %q", k)
	}
}

// TestBasicOverPlainHTTP checks that Basic credentials over plain HTTP
// from a non-loopback address get 401 with a reason, unless the client is
// on loopback, the connection is TLS or InsecureBasic is set.
func TestBasicOverPlainHTTP(t *testing.T) {
	basic := testkit.BasicAuth("alice", "secret password")
	get := func(c *http.Client, url, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url+"/1.1/alice/info/collections", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	cfg := DefaultConfig()
	cfg.Handler = okHandler
	remote := start(t, cfg, fakeFrom("203.0.113.7:5000"))
	hc := &http.Client{Timeout: 5 * time.Second}
	if code, body := get(hc, remote.url, basic); code != 401 || !strings.Contains(body, "https://") {
		t.Fatalf("Basic over plain HTTP from 203.0.113.7: %d %q", code, body)
	}
	if code, _ := get(hc, remote.url, "Bearer some-token"); code != 200 {
		t.Fatalf("bearer over plain HTTP: %d", code)
	}
	if code, _ := get(hc, remote.url, ""); code != 200 {
		t.Fatalf("no credentials: %d", code)
	}
	if n := testCounter(t, remote.Registry(), "hce_http_basic_refused_total", nil); n != 1 {
		t.Errorf("refusals counted: %v", n)
	}

	loop := start(t, cfg, nil)
	if code, _ := get(hc, loop.url, basic); code != 200 {
		t.Fatalf("Basic from loopback: %d", code)
	}
	icfg := cfg
	icfg.InsecureBasic = true
	insecure := start(t, icfg, fakeFrom("203.0.113.7:5000"))
	if code, _ := get(hc, insecure.url, basic); code != 200 {
		t.Fatalf("Basic with InsecureBasic: %d", code)
	}
	certFile, keyFile, cert := writeCert(t, t.TempDir(), "tls")
	tcfg := cfg
	tcfg.TLSCertFile, tcfg.TLSKeyFile = certFile, keyFile
	secure := start(t, tcfg, fakeFrom("203.0.113.7:5000"))
	if code, _ := get(tlsClient(cert), secure.url, basic); code != 200 {
		t.Fatalf("Basic over TLS: %d", code)
	}
}

// tlsClient trusts the given certificates only and opens a new
// connection for every request.
func tlsClient(certs ...*x509.Certificate) *http.Client {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
}

// TestTLS checks HTTPS: TLS 1.2 or later only, and the certificate
// reloaded on ReloadTLS and when its files change.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, one := writeCert(t, dir, "one")
	cfg := DefaultConfig()
	cfg.Handler = okHandler
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	cfg.TLSReloadInterval = 50 * time.Millisecond
	s := start(t, cfg, nil)
	if s.Scheme() != "https" {
		t.Fatalf("scheme %q", s.Scheme())
	}
	served := func(c *http.Client) string {
		t.Helper()
		resp, err := c.Get(s.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.TLS.Version < tls.VersionTLS12 || resp.ProtoMajor != 1 {
			t.Fatalf("TLS version %x, protocol %s", resp.TLS.Version, resp.Proto)
		}
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if cn := served(tlsClient(one)); cn != "one" {
		t.Fatalf("served %q", cn)
	}
	old := tlsClient(one)
	old.Transport.(*http.Transport).TLSClientConfig.MaxVersion = tls.VersionTLS11
	if _, err := old.Get(s.url + "/"); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}
	if resp, err := http.Get("http://" + s.ln.Addr().String() + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP on the TLS port: %d", resp.StatusCode)
		}
	}

	// The files change on disk: the watcher picks the new certificate up.
	_, _, two := writeCert(t, dir, "two")
	c := tlsClient(one, two)
	testkit.WaitFor(t, 5*time.Second, "the changed certificate", func() bool { return served(c) == "two" })

	// A broken file: ReloadTLS fails and the previous certificate stays.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadTLS(); err == nil {
		t.Fatal("ReloadTLS accepted a broken certificate")
	}
	if cn := served(c); cn != "two" {
		t.Fatalf("after a failed reload served %q", cn)
	}
	// SIGHUP's path: ReloadTLS at once.
	_, _, three := writeCert(t, dir, "three")
	if err := s.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if cn := served(tlsClient(three)); cn != "three" {
		t.Fatalf("after ReloadTLS served %q", cn)
	}
	if v := testGauge(t, s.Registry(), "hce_tls_certificate_expiry_timestamp_seconds"); int64(v) != three.NotAfter.Unix() {
		t.Errorf("expiry metric %v, want %d", v, three.NotAfter.Unix())
	}
	if err := start(t, func() Config { c := cfg; c.TLSReloadInterval = 0; return c }(), nil).Server.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	plain := DefaultConfig()
	plain.Handler = okHandler
	if err := start(t, plain, nil).ReloadTLS(); err != ErrNoTLS {
		t.Fatalf("ReloadTLS without TLS: %v", err)
	}
}

// getJSON GETs url and decodes a JSON answer.
func getJSON(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
	}
	return resp.StatusCode
}

// TestHealthEndpoints checks each Dockerflow endpoint, and that each
// turns 503 when what it watches fails.
func TestHealthEndpoints(t *testing.T) {
	var storeErr, dirErr atomic.Pointer[error]
	check := func(p *atomic.Pointer[error]) Checker {
		return CheckFunc(func(context.Context) error {
			if e := p.Load(); e != nil {
				return *e
			}
			return nil
		})
	}
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	cfg := DefaultConfig()
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-release
		}
	})
	cfg.MaxInFlight = 1
	cfg.Checks = map[string]Checker{"store": check(&storeErr), "directory": check(&dirErr)}
	cfg.CheckCacheTTL = -1
	s := start(t, cfg, nil)

	var hb heartbeatAnswer
	if code := getJSON(t, s.url+PathHeartbeat, &hb); code != 200 || hb.Status != "ok" || hb.Checks["store"] != "ok" || hb.Checks["directory"] != "ok" {
		t.Fatalf("heartbeat: %d %+v", code, hb)
	}
	e := fmt.Errorf("store: write probe: no space left on device")
	storeErr.Store(&e)
	hb = heartbeatAnswer{}
	if code := getJSON(t, s.url+PathHeartbeat, &hb); code != 503 || hb.Status != "error" || hb.Checks["store"] != "error" ||
		hb.Checks["directory"] != "ok" || !strings.Contains(hb.Details["store"].Message, "no space") {
		t.Fatalf("heartbeat with a failing store: %d %+v", code, hb)
	}
	storeErr.Store(nil)
	e2 := fmt.Errorf("no raft leader known")
	dirErr.Store(&e2)
	hb = heartbeatAnswer{}
	if code := getJSON(t, s.url+PathHeartbeat, &hb); code != 503 || hb.Checks["directory"] != "error" || hb.Checks["store"] != "ok" {
		t.Fatalf("heartbeat with a failing directory: %d %+v", code, hb)
	}
	dirErr.Store(nil)

	var lb map[string]string
	if code := getJSON(t, s.url+PathLBHeartbeat, &lb); code != 200 || lb["status"] != "ok" {
		t.Fatalf("lbheartbeat: %d %v", code, lb)
	}
	// Saturated: the one in-flight slot is taken.
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.Get(s.url + "/block"); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	if code := getJSON(t, s.url+PathLBHeartbeat, &lb); code != 503 || lb["status"] != "saturated" {
		t.Fatalf("lbheartbeat while saturated: %d %v", code, lb)
	}
	close(release)
	<-done
	if code := getJSON(t, s.url+PathLBHeartbeat, &lb); code != 200 {
		t.Fatalf("lbheartbeat after the load: %d %v", code, lb)
	}

	var v Version
	if code := getJSON(t, s.url+PathVersion, &v); code != 200 || v.Version == "" || !strings.HasPrefix(v.Go, "go") {
		t.Fatalf("version: %d %+v", code, v)
	}

	// Shutting down: draining turns the load balancer's check 503 while
	// requests are still served.
	s.StartDrain()
	if code := getJSON(t, s.url+PathLBHeartbeat, &lb); code != 503 || lb["status"] != "draining" {
		t.Fatalf("lbheartbeat while draining: %d %v", code, lb)
	}
	if code := getJSON(t, s.url+"/", nil); code != 200 {
		t.Fatalf("request while draining: %d", code)
	}
}

// TestHeartbeatCached checks that polling /__heartbeat__ does not run the
// checks more than once per CheckCacheTTL.
func TestHeartbeatCached(t *testing.T) {
	var runs atomic.Int64
	cfg := DefaultConfig()
	cfg.Handler = okHandler
	cfg.Checks = map[string]Checker{"x": CheckFunc(func(context.Context) error { runs.Add(1); return nil })}
	cfg.CheckCacheTTL = time.Hour
	s := start(t, cfg, nil)
	for range 20 {
		getJSON(t, s.url+PathHeartbeat, nil)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("checks ran %d times for 20 polls", n)
	}
}

// TestShedding checks the in-flight bounds: beyond them 503 with
// Retry-After and X-Weave-Backoff in seconds, counted; long-lived
// requests do not count.
func TestShedding(t *testing.T) {
	release := make(chan struct{})
	var entered sync.WaitGroup
	cfg := DefaultConfig()
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/fast" {
			entered.Done()
			<-release
		}
	})
	cfg.MaxInFlight = 3
	cfg.MaxInFlightPerClient = 1
	cfg.LongLived = func(r *http.Request) bool { return r.URL.Path == "/feed" }
	s := start(t, cfg, nil)
	do := func(path, auth string) *http.Response {
		req, _ := http.NewRequest("GET", s.url+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return nil
		}
		resp.Body.Close()
		return resp
	}
	var wg sync.WaitGroup
	background := func(path, auth string) {
		entered.Add(1)
		wg.Add(1)
		go func() { defer wg.Done(); do(path, auth) }()
	}
	background("/slow", "Bearer alice")
	background("/feed", "Bearer alice") // long-lived: not counted
	entered.Wait()
	resp := do("/fast", "Bearer alice")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "10" || resp.Header.Get("X-Weave-Backoff") != "10" {
		t.Fatalf("second request of one client: %d %v", resp.StatusCode, resp.Header)
	}
	background("/slow", "Bearer bob")
	background("/slow", "") // no credentials: no per-client bound
	entered.Wait()
	resp = do("/fast", "Bearer carol")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "10" {
		t.Fatalf("request beyond the server's bound: %d %v", resp.StatusCode, resp.Header)
	}
	close(release)
	wg.Wait()
	if resp := do("/fast", "Bearer alice"); resp.StatusCode != 200 {
		t.Fatalf("after the load: %d", resp.StatusCode)
	}
	for reason, want := range map[string]float64{"client": 1, "server": 1} {
		if n := testCounter(t, s.Registry(), "hce_http_requests_shed_total", map[string]string{"reason": reason}); n != want {
			t.Errorf("shed %s: %v, want %v", reason, n, want)
		}
	}
}

// TestLongLivedStreams checks that a feed outlives WriteTimeout while its
// client reads, and that a client that stops reading is cut.
func TestLongLivedStreams(t *testing.T) {
	writeErr := make(chan error, 1)
	cfg := DefaultConfig()
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		switch r.URL.Path {
		case "/feed":
			for i := range 8 {
				fmt.Fprintf(w, "row %d\n", i)
				if err := rc.Flush(); err != nil {
					return
				}
				tm := time.NewTimer(100 * time.Millisecond)
				<-tm.C
			}
		case "/flood":
			chunk := bytes.Repeat([]byte("z"), 1<<20)
			for {
				if _, err := w.Write(chunk); err != nil {
					writeErr <- err
					return
				}
			}
		}
	})
	cfg.WriteTimeout = 200 * time.Millisecond
	cfg.MinWriteRate = -1
	cfg.LongLived = func(r *http.Request) bool { return r.URL.Path == "/feed" }
	s := start(t, cfg, nil)
	began := time.Now()
	resp, err := http.Get(s.url + "/feed")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || strings.Count(string(b), "row") != 8 {
		t.Fatalf("feed: %v %q", err, b)
	}
	if time.Since(began) < 700*time.Millisecond {
		t.Fatal("the feed did not outlast WriteTimeout")
	}
	c, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /flood HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-writeErr:
		t.Logf("a client that does not read is cut: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("writing to a client that does not read never failed")
	}
}

// TestRequestIDAndAccessLog checks X-Request-Id (kept when valid, else
// new) and the access log line's fields.
func TestRequestIDAndAccessLog(t *testing.T) {
	var logs syncBuffer
	cfg := DefaultConfig()
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte("hello"))
	})
	cfg.AccessLog = slog.New(slog.NewJSONHandler(&logs, nil))
	cfg.Routes = []string{"/{ver}/{user}/storage/{coll}/{id}"}
	s := start(t, cfg, nil)
	send := func(id string) string {
		req, _ := http.NewRequest("PUT", s.url+"/1.1/alice/storage/bookmarks/rec1", strings.NewReader("payload-xyz"))
		req.Header.Set("Authorization", "Bearer tok-secret")
		if id != "" {
			req.Header.Set(RequestIDHeader, id)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get(RequestIDHeader)
	}
	if got := send("client-id_1.2:3"); got != "client-id_1.2:3" {
		t.Fatalf("valid incoming id replaced by %q", got)
	}
	for _, bad := range []string{"has space", strings.Repeat("a", 65), "semi;colon", ""} {
		if got := send(bad); got == bad || len(got) != 16 {
			t.Fatalf("incoming id %q answered with %q", bad, got)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "5 access log lines", func() bool { return strings.Count(logs.String(), "\n") == 5 })
	var line map[string]any
	first, _, _ := strings.Cut(logs.String(), "\n")
	if err := json.Unmarshal([]byte(first), &line); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"msg": "request", "method": "PUT", "route": "/{ver}/{user}/storage/{coll}/{id}", "status": 201.0,
		"bytes": 5.0, "request_id": "client-id_1.2:3"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("access log %s = %v, want %v (line %s)", k, line[k], v, first)
		}
	}
	if _, ok := line["duration_ms"]; !ok {
		t.Errorf("no duration in %s", first)
	}
	for _, secret := range []string{"alice", "rec1", "tok-secret", "payload-xyz"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("access log contains %q: %s", secret, logs.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestMetricsAfterTraffic checks the metric names, that requests are
// counted per route template (never the raw path) and status, and the
// histogram's buckets; and /metrics on a separate listener.
func TestMetricsAfterTraffic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/missing") {
			w.WriteHeader(http.StatusNotFound)
		}
	})
	cfg.Routes = []string{"/{ver}/{user}/storage/{coll}", "/{ver}/{user}/storage/{coll}/{id}"}
	s := start(t, cfg, nil)
	for _, p := range []string{"/1.1/alice/storage/bookmarks", "/1.1/bob/storage/tabs", "/1.1/bob/storage/tabs/missing", "/nothing/here/at/all/x"} {
		getJSON(t, s.url+p, nil)
	}
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		names[mf.GetName()] = mf
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "alice") || strings.Contains(l.GetValue(), "bookmarks") {
					t.Errorf("%s has a raw path label %s=%s", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	for _, n := range []string{"hce_http_requests_total", "hce_http_request_duration_seconds", "hce_http_requests_in_flight",
		"hce_http_requests_shed_total", "hce_http_connections_open", "hce_http_connections_refused_total",
		"hce_http_body_timeouts_total", "hce_http_basic_refused_total", "hce_tls_reloads_total",
		"hce_tls_certificate_expiry_timestamp_seconds", "hce_http_limit", "hce_build_info"} {
		if names[n] == nil {
			t.Errorf("metric %s missing", n)
		}
	}
	if n := testCounter(t, s.Registry(), "hce_http_requests_total", map[string]string{"route": "/{ver}/{user}/storage/{coll}", "method": "GET", "code": "200"}); n != 2 {
		t.Errorf("GET storage/{coll} 200: %v, want 2", n)
	}
	if n := testCounter(t, s.Registry(), "hce_http_requests_total", map[string]string{"route": "/{ver}/{user}/storage/{coll}/{id}", "code": "404"}); n != 1 {
		t.Errorf("404 on storage/{coll}/{id}: %v, want 1", n)
	}
	if n := testCounter(t, s.Registry(), "hce_http_requests_total", map[string]string{"route": "other"}); n != 1 {
		t.Errorf("unmatched path: %v, want 1", n)
	}
	h := names["hce_http_request_duration_seconds"].GetMetric()[0].GetHistogram()
	var les []float64
	for _, b := range h.GetBucket() {
		les = append(les, b.GetUpperBound())
	}
	if !slices.Equal(les, DurationBuckets) {
		t.Errorf("buckets %v, want %v", les, DurationBuckets)
	}

	resp, err := http.Get(s.url + PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(text), `hce_http_request_duration_seconds_bucket{code="200",method="GET",route="/{ver}/{user}/storage/{coll}",le="0.005"}`) {
		t.Errorf("/metrics lacks the histogram:\n%s", text)
	}

	// Separate metrics listener: /metrics leaves the main port.
	scfg := cfg
	scfg.SeparateMetrics = true
	sep := start(t, scfg, nil)
	mln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- sep.ServeMetrics(mln) }()
	if code := getJSON(t, sep.url+PathMetrics, nil); code != 200 {
		// the Handler answers it (200 here), not the platform
		t.Logf("main port /metrics: %d", code)
	}
	resp, err = http.Get("http://" + mln.Addr().String() + PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	text, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(text), "hce_http_requests_total") || strings.Contains(string(text), "# HELP go_") {
		t.Errorf("metrics listener: %s", text)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sep.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	<-served
}

// TestDefault503RetryAfter checks that a handler's 503 without
// Retry-After gets the platform's.
func TestDefault503RetryAfter(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/own" {
			w.Header().Set("Retry-After", "3")
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	cfg.ShedRetryAfter = 7 * time.Second
	s := start(t, cfg, nil)
	for path, want := range map[string]string{"/": "7", "/own": "3"} {
		resp, err := http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Retry-After"); got != want {
			t.Errorf("%s: Retry-After %q, want %q", path, got, want)
		}
	}
}

// TestBodyCap checks MaxBodyBytes, declared and streamed.
func TestBodyCap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		}
	})
	cfg.MaxBodyBytes = 1000
	s := start(t, cfg, nil)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(strings.Repeat("a", 2000))
		if chunked {
			body = io.MultiReader(body)
		}
		resp, err := http.Post(s.url+"/", "text/plain", body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("chunked=%v: %d", chunked, resp.StatusCode)
		}
	}
}

func TestRoutes(t *testing.T) {
	rt := newRouter([]string{"/", "/couch/{db}/_changes", "/couch/{db}/{doc...}", "/couch/{db}", "/{ver}/{user}/storage/{coll}/{id}",
		"/{ver}/{user}/storage/{coll}", "/user/{ver}/{user}/node/weave", "/user/{ver}/{user}"})
	for path, want := range map[string]string{
		"/":                             "/",
		"/couch/alice/_changes":         "/couch/{db}/_changes",
		"/couch/alice/bookmarks/b1":     "/couch/{db}/{doc...}",
		"/couch/alice/_local/x":         "/couch/{db}/{doc...}",
		"/couch/alice":                  "/couch/{db}",
		"/couch/alice/":                 "/couch/{db}",
		"/1.1/alice/storage/tabs/x":     "/{ver}/{user}/storage/{coll}/{id}",
		"//1.0/alice/storage/tabs/":     "/{ver}/{user}/storage/{coll}",
		"/user/1.0/alice/node/weave":    "/user/{ver}/{user}/node/weave",
		"/user/1.0/alice":               "/user/{ver}/{user}",
		"/1.1/alice/storage/tabs/x/y/z": "other",
		"/nope":                         "other",
	} {
		if got := rt.name(path); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
	for _, bad := range []string{"nolead", "/a//b", "/{x...}/b", "/a{b}"} {
		if _, err := parseRoute(bad); err == nil {
			t.Errorf("route %q accepted", bad)
		}
	}
	if _, err := New(Config{Handler: okHandler, Routes: []string{"bad"}}); err == nil {
		t.Error("New accepted a bad route")
	}
}

// testCounter returns the sum of the counter (or gauge) samples of name
// whose labels include want.
func testCounter(t *testing.T, g interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func testGauge(t *testing.T, g interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string) float64 {
	return testCounter(t, g, name, nil)
}

// TestRefusalDoesNotWaitForBody checks that an error answered before the
// body is read goes out at once when the body is large or of unknown
// length (net/http would first read up to 256 KiB of it), and that a
// small unread body still leaves the connection reusable.
func TestRefusalDoesNotWaitForBody(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	})
	s := start(t, cfg, nil)
	for _, tc := range []struct {
		head  string
		close bool
	}{
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", true},
	} {
		c, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, tc.head); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode != 401 || resp.Close != tc.close {
			t.Fatalf("%q: %v %v", tc.head, resp, err)
		}
	}
	// A small body is read and discarded: the connection stays.
	resp, err := http.Post(s.url+"/", "text/plain", strings.NewReader("small"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Close {
		t.Fatalf("small body: %d close=%v", resp.StatusCode, resp.Close)
	}
}
