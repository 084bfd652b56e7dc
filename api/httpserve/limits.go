package httpserve

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// rejectAnswer is what a plain-HTTP connection over a cap gets before it
// is closed; nothing of its request has been read.
func rejectAnswer(retry time.Duration) []byte {
	const body = "too many connections; retry shortly\n"
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Retry-After: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", seconds(retry), len(body), body)
}

// connLimiter counts open connections in total and per client address.
type connLimiter struct {
	maxTotal, maxPer int
	mu               sync.Mutex
	total            int
	per              map[string]int
}

// acquire takes a slot for key; reason says which cap refused it.
func (l *connLimiter) acquire(key string) (reason string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxTotal > 0 && l.total >= l.maxTotal {
		return "total", false
	}
	if l.maxPer > 0 && l.per[key] >= l.maxPer {
		return "address", false
	}
	l.total++
	l.per[key]++
	return "", true
}

func (l *connLimiter) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.per[key]--; l.per[key] <= 0 {
		delete(l.per, key)
	}
}

// open reports the open connections.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// limitListener refuses connections beyond the caps as it accepts them.
type limitListener struct {
	net.Listener
	s     *Server
	plain bool // answer a refused connection with a 503 (no TLS)
}

// Accept returns the next connection within the caps; those beyond are
// answered (plain HTTP) or closed (TLS) and counted.
func (ln *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := addrKey(c.RemoteAddr())
		reason, ok := ln.s.conns.acquire(key)
		if ok {
			ln.s.m.conns.Inc()
			return &countedConn{Conn: c, s: ln.s, key: key}, nil
		}
		ln.s.m.connsRefused.WithLabelValues(reason).Inc()
		ln.s.warnLimited(&ln.s.lastConnWarn, "connection refused: cap reached", "cap", reason, "client", key)
		if ln.plain {
			// A fresh socket's send buffer takes this at once; the
			// deadline only guards against the unexpected.
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write(ln.s.rejectMsg)
		}
		_ = c.Close()
	}
}

// countedConn releases its slot when closed.
type countedConn struct {
	net.Conn
	s      *Server
	key    string
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.s.conns.release(c.key)
		c.s.m.conns.Dec()
	}
	return c.Conn.Close()
}

// inFlight bounds requests in flight in total and per client key.
type inFlight struct {
	max, perMax int
	n           atomic.Int64
	mu          sync.Mutex
	per         map[uint64]int
}

// acquire takes a slot; keyed says whether key is a client's. reason says
// which bound refused it.
func (f *inFlight) acquire(key uint64, keyed bool) (reason string, ok bool) {
	if n := f.n.Add(1); f.max > 0 && n > int64(f.max) {
		f.n.Add(-1)
		return "server", false
	}
	if keyed && f.perMax > 0 {
		f.mu.Lock()
		if f.per[key] >= f.perMax {
			f.mu.Unlock()
			f.n.Add(-1)
			return "client", false
		}
		f.per[key]++
		f.mu.Unlock()
	}
	return "", true
}

func (f *inFlight) release(key uint64, keyed bool) {
	if keyed && f.perMax > 0 {
		f.mu.Lock()
		if f.per[key]--; f.per[key] <= 0 {
			delete(f.per, key)
		}
		f.mu.Unlock()
	}
	f.n.Add(-1)
}

// saturated reports whether the server is at its in-flight bound.
func (f *inFlight) saturated() bool { return f.max > 0 && f.n.Load() >= int64(f.max) }
