package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// DefaultIdleTimeout is how long a server keeps a session stream open
// without a request (RPCConfig.IdleTimeout). A client keeps an idle
// stream for half of it, so it rarely reuses one the server is closing.
const DefaultIdleTimeout = 30 * time.Second

// DefaultMaxIdleStreams is how many idle session streams a client keeps
// per peer (RPCConfig.MaxIdleStreams).
const DefaultMaxIdleStreams = 8

// ServeSessions registers handler for the session protocol proto on h,
// replacing any previous handler; h.RemoveStreamHandler(proto) stops it.
// A session stream carries any number of requests, one after another:
// each request frame gets one answer frame (data or error), under
// cfg.Timeout from the request's first byte, and the stream stays open
// for the next request. Between requests the server waits at most
// cfg.IdleTimeout, then closes the stream cleanly: a caller that sees the
// end of the stream before any byte of an answer knows its request was
// not read. The end of the caller's writes closes the stream too. A
// malformed or oversized request, a handler panic or a failed write
// resets the stream. The memory a request's frame holds is released when
// its answer is written. Stop ends the service.
func ServeSessions(h host.Host, proto protocol.ID, handler Handler, cfg RPCConfig) *SessionServer {
	srv := &SessionServer{h: h, proto: proto, live: map[network.Stream]struct{}{}}
	cfg = cfg.withDefaults()
	h.SetStreamHandler(proto, func(s network.Stream) { srv.serve(s, handler, cfg) })
	return srv
}

// SessionServer is a session protocol served by ServeSessions.
type SessionServer struct {
	h     host.Host
	proto protocol.ID

	mu      sync.Mutex
	live    map[network.Stream]struct{}
	stopped bool
}

// Stop removes the stream handler and closes every session stream once
// its request in progress, if any, is answered: an idle stream is closed
// cleanly at once, so its caller knows its next request was not read.
func (srv *SessionServer) Stop() {
	srv.h.RemoveStreamHandler(srv.proto)
	srv.mu.Lock()
	srv.stopped = true
	for s := range srv.live {
		// Wakes a stream waiting for its next request; one reading a
		// request fails it (a reset), one answering finishes first.
		s.SetReadDeadline(time.Now())
	}
	srv.mu.Unlock()
}

// enter registers s as live; it reports false when the server stopped.
func (srv *SessionServer) enter(s network.Stream) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.stopped {
		return false
	}
	srv.live[s] = struct{}{}
	return true
}

func (srv *SessionServer) leave(s network.Stream) {
	srv.mu.Lock()
	delete(srv.live, s)
	srv.mu.Unlock()
}

// await sets s's read deadline for the wait for its next request; it
// reports false when the server stopped. Under the lock, so that Stop's
// deadline is never overwritten.
func (srv *SessionServer) await(s network.Stream, idle time.Duration) (bool, error) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.stopped {
		return false, nil
	}
	return true, s.SetReadDeadline(time.Now().Add(idle))
}

func (srv *SessionServer) serve(s network.Stream, handler Handler, cfg RPCConfig) {
	if !srv.enter(s) {
		s.Close()
		return
	}
	defer srv.leave(s)
	from := s.Conn().RemotePeer()
	log := cfg.Logger.With("protocol", s.Protocol(), "peer", from)
	ok := false
	defer endStream(s, log, &ok)
	var first [1]byte
	for {
		running, err := srv.await(s, cfg.IdleTimeout)
		if err != nil {
			log.Debug("p2p: set deadline", "err", err)
			return
		}
		if !running {
			ok = s.Close() == nil
			return
		}
		if _, err := io.ReadFull(s, first[:]); err != nil {
			// The caller is done, or the stream sat idle: nothing of a
			// request was read, so a clean close tells the caller so.
			if errors.Is(err, io.EOF) || isTimeout(err) {
				ok = s.Close() == nil
			}
			return
		}
		if !serveOne(s, first[0], from, handler, cfg, log) {
			return
		}
	}
}

// serveOne reads the rest of a session request whose first byte is b0,
// answers it and releases the frame's memory. It reports whether the
// stream may carry another request.
func serveOne(s network.Stream, b0 byte, from peer.ID, handler Handler, cfg RPCConfig, log *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	if err := s.SetDeadline(deadline); err != nil {
		log.Debug("p2p: set deadline", "err", err)
		return false
	}
	t, req, reserved, err := readRest(s, b0, cfg.MaxFrameSize)
	defer s.Scope().ReleaseMemory(reserved)
	if err != nil {
		log.Debug("p2p: refused request", "err", err)
		return false
	}
	if t != FrameData {
		log.Debug("p2p: refused request", "err", fmt.Errorf("%w: request of type %d", ErrBadFrame, t))
		return false
	}
	return answer(ctx, s, from, handler, req, cfg, log)
}

// answer runs handler on req and writes its answer (or error) frame to s.
// It reports whether the frame was written.
func answer(ctx context.Context, s network.Stream, from peer.ID, handler Handler, req []byte, cfg RPCConfig, log *slog.Logger) bool {
	resp, herr := handler(ctx, from, req)
	if herr == nil && len(resp) > cfg.MaxFrameSize {
		herr = fmt.Errorf("response of %d bytes over the frame limit", len(resp))
	}
	if herr != nil {
		var re *RemoteError
		if !errors.As(herr, &re) {
			re = &RemoteError{Code: CodeInternal, Message: herr.Error()}
		}
		e := *re
		if len(e.Message) > maxErrorMessage {
			e.Message = e.Message[:maxErrorMessage]
		}
		body := marshalError(e)
		// An error frame is small by construction; it may exceed a tiny
		// MaxFrameSize rather than turn into a reset.
		if err := WriteFrame(s, FrameError, body, max(cfg.MaxFrameSize, len(body))); err != nil {
			log.Debug("p2p: write error frame", "err", err)
			return false
		}
		return true
	}
	if err := WriteFrame(s, FrameData, resp, cfg.MaxFrameSize); err != nil {
		log.Debug("p2p: write response", "err", err)
		return false
	}
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// Sessions calls a session protocol (ServeSessions) on any peer, keeping
// the streams it opened for the next calls to the same peer: a call on a
// kept stream writes one frame and reads one, where a stream per call
// costs a stream opening, a protocol negotiation and both sides' closes.
// A peer that does not speak the session protocol is called over the
// fallback protocol (Serve's one request per stream) when one is given.
// Safe for concurrent use: a stream carries one call at a time, and a
// call with no idle stream opens one.
type Sessions struct {
	h        host.Host
	proto    protocol.ID
	fallback protocol.ID
	cfg      RPCConfig
	now      func() time.Time

	mu   sync.Mutex
	idle map[peer.ID][]idleStream
	// pruned is when keep last closed the stale streams of every peer,
	// so that peers no longer called do not keep theirs.
	pruned time.Time
}

type idleStream struct {
	s     network.Stream
	since time.Time
}

// NewSessions returns a Sessions calling proto over h; fallback ("":
// none) is the one-request protocol for peers that lack proto.
func NewSessions(h host.Host, proto, fallback protocol.ID, cfg RPCConfig) *Sessions {
	return &Sessions{h: h, proto: proto, fallback: fallback, cfg: cfg.withDefaults(), now: time.Now, idle: map[peer.ID][]idleStream{}}
}

// CloseIdle closes the idle streams.
func (c *Sessions) CloseIdle() {
	c.mu.Lock()
	all := c.idle
	c.idle = map[peer.ID][]idleStream{}
	c.mu.Unlock()
	for _, ss := range all {
		for _, is := range ss {
			is.s.Close()
		}
	}
}

// Idle returns how many idle streams are kept for p.
func (c *Sessions) Idle(p peer.ID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idle[p])
}

// take returns a kept stream to p that is still usable, or nil; it closes
// those kept too long.
func (c *Sessions) take(p peer.ID) network.Stream {
	var stale []network.Stream
	defer func() {
		for _, s := range stale {
			s.Close()
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	ss := c.idle[p]
	for len(ss) > 0 {
		is := ss[len(ss)-1]
		ss = ss[:len(ss)-1]
		if c.now().Sub(is.since) >= c.cfg.IdleTimeout/2 || is.s.Conn().IsClosed() {
			stale = append(stale, is.s)
			continue
		}
		c.setIdle(p, ss)
		return is.s
	}
	c.setIdle(p, ss)
	return nil
}

func (c *Sessions) setIdle(p peer.ID, ss []idleStream) {
	if len(ss) == 0 {
		delete(c.idle, p)
		return
	}
	c.idle[p] = ss
}

// keep puts s back among p's idle streams, or closes it when there are
// enough. Every half idle timeout it also closes the stale streams kept
// for any peer.
func (c *Sessions) keep(p peer.ID, s network.Stream) {
	var stale []network.Stream
	now := c.now()
	c.mu.Lock()
	if now.Sub(c.pruned) >= c.cfg.IdleTimeout/2 {
		c.pruned = now
		for q, ss := range c.idle {
			fresh := ss[:0]
			for _, is := range ss {
				if now.Sub(is.since) >= c.cfg.IdleTimeout/2 {
					stale = append(stale, is.s)
				} else {
					fresh = append(fresh, is)
				}
			}
			c.setIdle(q, fresh)
		}
	}
	if ss := c.idle[p]; len(ss) < c.cfg.MaxIdleStreams {
		c.idle[p] = append(ss, idleStream{s: s, since: now})
	} else {
		stale = append(stale, s)
	}
	c.mu.Unlock()
	for _, s := range stale {
		s.Close()
	}
}

// Call sends req to p and returns the answer's payload, bounded by ctx
// and cfg.Timeout, as CallWith does. On a kept stream that the peer
// closed before reading the request (its idle timeout, or a restart of
// the peer's handler) the call is made again on a new stream; any other
// failure resets the stream and is returned. An error answer (a
// *RemoteError) leaves the stream usable.
func (c *Sessions) Call(ctx context.Context, p peer.ID, req []byte) ([]byte, error) {
	if len(req) > c.cfg.MaxFrameSize {
		return nil, fmt.Errorf("%w: request of %d bytes, limit %d", ErrFrameTooLarge, len(req), c.cfg.MaxFrameSize)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	for {
		s := c.take(p)
		kept := s != nil
		if !kept {
			protos := []protocol.ID{c.proto}
			if c.fallback != "" {
				protos = append(protos, c.fallback)
			}
			var err error
			if s, err = c.h.NewStream(ctx, p, protos...); err != nil {
				return nil, fmt.Errorf("p2p: open %s to %s: %w", c.proto, p, ctxErr(ctx, err))
			}
			if s.Protocol() != c.proto {
				return callOnce(ctx, s, p, req, c.cfg.MaxFrameSize)
			}
		}
		t, body, unread, err := c.exchange(ctx, s, req)
		if err == nil {
			c.keep(p, s)
			return decodeAnswer(t, body)
		}
		s.Reset()
		if kept && unread && ctx.Err() == nil {
			continue
		}
		return nil, fmt.Errorf("p2p: %s to %s: %w", s.Protocol(), p, ctxErr(ctx, err))
	}
}

// exchange makes one call on the session stream s and returns the
// answer frame. unread reports a failure that proves the peer did not
// read the request: the request was not fully written, or the stream
// ended before any byte of an answer.
func (c *Sessions) exchange(ctx context.Context, s network.Stream, req []byte) (t FrameType, body []byte, unread bool, err error) {
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer func() {
		if !stop() && err == nil {
			// ctx ended as the answer arrived: the stream was reset.
			t, body, err = 0, nil, ctx.Err()
		}
	}()
	if deadline, ok := ctx.Deadline(); ok {
		if err := s.SetDeadline(deadline); err != nil {
			return 0, nil, true, err
		}
	}
	if err := WriteFrame(s, FrameData, req, c.cfg.MaxFrameSize); err != nil {
		return 0, nil, true, err
	}
	var b0 [1]byte
	if _, err := io.ReadFull(s, b0[:]); err != nil {
		return 0, nil, errors.Is(err, io.EOF), err
	}
	t, body, reserved, err := readRest(s, b0[0], c.cfg.MaxFrameSize)
	s.Scope().ReleaseMemory(reserved)
	return t, body, false, err
}

// readRest reads the frame of a session stream whose first byte b0 was
// read already, reserving its memory in the stream's scope; the caller
// releases reserved (0 when nothing was reserved) once done with it.
func readRest(s network.Stream, b0 byte, maxSize int) (t FrameType, body []byte, reserved int, err error) {
	reserve := func(n int) error {
		if err := reserver(s)(n); err != nil {
			return err
		}
		reserved = n
		return nil
	}
	t, body, err = readFrame(io.MultiReader(bytes.NewReader([]byte{b0}), s), maxSize, reserve)
	return t, body, reserved, err
}
