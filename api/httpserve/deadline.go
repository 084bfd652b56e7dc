package httpserve

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// seconds renders d as whole seconds, rounded up, at least 1.
func seconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// respWriter records the status and size of an answer and moves the
// connection's write deadline before each write, so a client that stops
// reading is cut after WriteTimeout (plus the time the write needs at
// MinWriteRate) while one that reads keeps its answer, however long.
type respWriter struct {
	http.ResponseWriter
	ctl         *http.ResponseController
	s           *Server
	body        *bodyReader // the request's body, nil without one
	deadlineAt  time.Time   // when the write deadline was last moved
	status      int
	bytes       int64
	wroteHeader bool
}

// maxDiscard is the most unread body an error answer leaves net/http to
// read and discard (to keep the connection) before it answers; with more
// (or an unknown length) the answer goes out at once and the connection
// closes.
const maxDiscard = 64 << 10

// Unwrap lets http.ResponseController reach the connection.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteHeader records the status; a 503 without Retry-After gets the
// server's (every 503 says when to come back).
func (w *respWriter) WriteHeader(code int) {
	if code >= 200 && !w.wroteHeader {
		w.wroteHeader = true
		w.status = code
		if code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", w.s.shedRetry)
		}
		if b := w.body; code >= 400 && b != nil && !b.done && (b.length < 0 || b.length-b.n > maxDiscard) {
			// A refused request (bad credentials, shed, too large) need
			// not wait for its body: net/http would read it first.
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.writeDeadline(len(p))
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Flush sends what is buffered (streamed feeds flush each row).
func (w *respWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.writeDeadline(4 << 10)
	_ = w.ctl.Flush()
}

// writeDeadline gives the next n bytes WriteTimeout plus their time at
// MinWriteRate.
func (w *respWriter) writeDeadline(n int) {
	cfg := &w.s.cfg
	if cfg.WriteTimeout <= 0 {
		return
	}
	d := cfg.WriteTimeout
	if cfg.MinWriteRate > 0 {
		d += time.Duration(int64(n) * int64(time.Second) / cfg.MinWriteRate)
	}
	w.deadlineAt = time.Now()
	_ = w.ctl.SetWriteDeadline(w.deadlineAt.Add(d))
}

// bodyReader moves the connection's read deadline as a request body
// arrives: the body must be in within BodyTimeout of the headers plus one
// second per MinBodyRate bytes. At the end of the body the deadline is
// lifted, so a handler that runs long after reading is not cut.
type bodyReader struct {
	io.ReadCloser
	w      *respWriter
	start  time.Time
	length int64 // declared length, -1 unknown
	n      int64
	first  bool
	done   bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	if !b.first {
		// Reading may first send "100 Continue": give that write a
		// deadline of its own.
		b.first = true
		b.w.writeDeadline(0)
	}
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	cfg := &b.w.s.cfg
	switch {
	case err == io.EOF:
		b.done = true
		_ = b.w.ctl.SetReadDeadline(time.Time{})
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			b.done = true
			b.w.s.m.bodyTimeouts.Inc()
		}
	case n > 0 && cfg.MinBodyRate > 0 && cfg.BodyTimeout > 0:
		_ = b.w.ctl.SetReadDeadline(b.start.Add(cfg.BodyTimeout + time.Duration(b.n*int64(time.Second)/cfg.MinBodyRate)))
	}
	return n, err
}
