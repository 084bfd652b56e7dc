package p2p

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// DefaultRPCTimeout bounds one RPC (both sides) when no other deadline is
// set.
const DefaultRPCTimeout = 10 * time.Second

// Error codes of RemoteError used by this package; protocols add their
// own.
const (
	// CodeInternal: the handler failed with an error that was not a
	// *RemoteError.
	CodeInternal = "internal"
	// CodeBadRequest: the request could not be decoded or is invalid.
	CodeBadRequest = "bad_request"
)

// maxErrorMessage bounds the message of an error frame the server sends.
const maxErrorMessage = 1024

// RemoteError is an error the remote handler returned. A handler returns
// one to choose the code its caller sees; any other error reaches the
// caller as CodeInternal with the error's text.
type RemoteError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error implements error.
func (e *RemoteError) Error() string {
	if e.Message == "" {
		return "p2p: remote error " + e.Code
	}
	return "p2p: remote error " + e.Code + ": " + e.Message
}

// Errorf returns a *RemoteError with code and a formatted message.
func Errorf(code, format string, args ...any) *RemoteError {
	return &RemoteError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// IsCode reports whether err is (or wraps) a *RemoteError with code.
func IsCode(err error, code string) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Code == code
}

// Handler answers one request from peer from. Returning a *RemoteError
// (possibly wrapped) sends that code and message; any other error sends
// CodeInternal.
type Handler func(ctx context.Context, from peer.ID, req []byte) ([]byte, error)

// RPCConfig tunes Serve and CallWith. A zero field means "use the
// default".
type RPCConfig struct {
	// MaxFrameSize bounds request and response payloads. Default
	// DefaultMaxFrameSize.
	MaxFrameSize int
	// Timeout bounds one RPC: the server's whole exchange, and the
	// caller's when its context has no earlier deadline. Default
	// DefaultRPCTimeout.
	Timeout time.Duration
	// Logger receives refused streams (debug) and handler panics (error).
	// Default: discard.
	Logger *slog.Logger
	// IdleTimeout is how long ServeSessions keeps a stream open between
	// requests; Sessions keeps an idle stream for half of it. Default
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxIdleStreams bounds the idle streams Sessions keeps per peer.
	// Default DefaultMaxIdleStreams.
	MaxIdleStreams int
}

// DefaultRPCConfig returns the default RPCConfig.
func DefaultRPCConfig() RPCConfig {
	return RPCConfig{
		MaxFrameSize:   DefaultMaxFrameSize,
		Timeout:        DefaultRPCTimeout,
		Logger:         slog.New(slog.DiscardHandler),
		IdleTimeout:    DefaultIdleTimeout,
		MaxIdleStreams: DefaultMaxIdleStreams,
	}
}

// Validate reports whether c is usable.
func (c RPCConfig) Validate() error {
	switch {
	case c.MaxFrameSize < 0:
		return fmt.Errorf("p2p: RPCConfig.MaxFrameSize %d is negative", c.MaxFrameSize)
	case c.Timeout < 0:
		return fmt.Errorf("p2p: RPCConfig.Timeout %v is negative", c.Timeout)
	case c.IdleTimeout < 0:
		return fmt.Errorf("p2p: RPCConfig.IdleTimeout %v is negative", c.IdleTimeout)
	case c.MaxIdleStreams < 0:
		return fmt.Errorf("p2p: RPCConfig.MaxIdleStreams %d is negative", c.MaxIdleStreams)
	}
	return nil
}

func (c RPCConfig) withDefaults() RPCConfig {
	d := DefaultRPCConfig()
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = d.MaxFrameSize
	}
	if c.Timeout <= 0 {
		c.Timeout = d.Timeout
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MaxIdleStreams <= 0 {
		c.MaxIdleStreams = d.MaxIdleStreams
	}
	return c
}

// Serve registers handler for proto on h, replacing any previous handler;
// h.RemoveStreamHandler(proto) stops it. Each stream carries one request:
// the handler runs with a context bounded by cfg.Timeout, and its answer
// (or error) goes back as one frame. A malformed or oversized request, or
// a handler panic, resets that stream only. A negative field of cfg is
// treated as zero (the default).
func Serve(h host.Host, proto protocol.ID, handler Handler, cfg RPCConfig) {
	cfg = cfg.withDefaults()
	h.SetStreamHandler(proto, func(s network.Stream) { serveStream(s, handler, cfg) })
}

func serveStream(s network.Stream, handler Handler, cfg RPCConfig) {
	from := s.Conn().RemotePeer()
	log := cfg.Logger.With("protocol", s.Protocol(), "peer", from)
	ok := false
	defer endStream(s, log, &ok)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	if err := s.SetDeadline(deadline); err != nil {
		log.Debug("p2p: set deadline", "err", err)
	}
	t, req, err := readFrame(s, cfg.MaxFrameSize, reserver(s))
	if err != nil {
		log.Debug("p2p: refused request", "err", err)
		return
	}
	if t != FrameData {
		log.Debug("p2p: refused request", "err", fmt.Errorf("%w: request of type %d", ErrBadFrame, t))
		return
	}
	ok = answer(ctx, s, from, handler, req, cfg, log) && s.Close() == nil
}

// endStream ends a served stream (deferred by its handler): it logs a
// handler panic and resets s unless *ok.
func endStream(s network.Stream, log *slog.Logger, ok *bool) {
	if r := recover(); r != nil {
		log.Error("p2p: handler panic", "panic", r)
	}
	if !*ok {
		s.Reset()
	}
}

// Call sends req to peer p over proto and returns the response payload,
// with the default RPCConfig. See CallWith.
func Call(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID, req []byte) ([]byte, error) {
	return CallWith(ctx, DefaultRPCConfig(), h, p, proto, req)
}

// CallWith sends req to peer p over proto and returns the response
// payload. It opens a stream (dialing p with the addresses h's peerstore
// holds), bounded by ctx and by cfg.Timeout; cancelling ctx resets the
// stream and returns ctx's error. A request over cfg.MaxFrameSize is
// refused with ErrFrameTooLarge before anything is sent; so is a larger
// response. An error frame from the server comes back as a *RemoteError.
func CallWith(ctx context.Context, cfg RPCConfig, h host.Host, p peer.ID, proto protocol.ID, req []byte) ([]byte, error) {
	cfg = cfg.withDefaults()
	if len(req) > cfg.MaxFrameSize {
		return nil, fmt.Errorf("%w: request of %d bytes, limit %d", ErrFrameTooLarge, len(req), cfg.MaxFrameSize)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	s, err := h.NewStream(ctx, p, proto)
	if err != nil {
		return nil, fmt.Errorf("p2p: open %s to %s: %w", proto, p, ctxErr(ctx, err))
	}
	return callOnce(ctx, s, p, req, cfg.MaxFrameSize)
}

// callOnce makes a one-request call on the new stream s (Serve's
// protocol) and closes or resets it.
func callOnce(ctx context.Context, s network.Stream, p peer.ID, req []byte, maxSize int) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	t, body, err := exchange(ctx, s, req, maxSize)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("p2p: %s to %s: %w", s.Protocol(), p, ctxErr(ctx, err))
	}
	s.Close()
	return decodeAnswer(t, body)
}

// ctxErr returns ctx's error when ctx is done or its deadline has passed
// (the stream deadline, set to the same instant, may fire first), else
// err.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return err
}

func exchange(ctx context.Context, s network.Stream, req []byte, maxSize int) (FrameType, []byte, error) {
	if deadline, ok := ctx.Deadline(); ok {
		if err := s.SetDeadline(deadline); err != nil {
			return 0, nil, err
		}
	}
	if err := WriteFrame(s, FrameData, req, maxSize); err != nil {
		return 0, nil, err
	}
	if err := s.CloseWrite(); err != nil {
		return 0, nil, err
	}
	return readFrame(s, maxSize, reserver(s))
}

// decodeAnswer returns the payload of a data frame, or the *RemoteError
// an error frame carries.
func decodeAnswer(t FrameType, body []byte) ([]byte, error) {
	if t == FrameData {
		return body, nil
	}
	var re RemoteError
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&re); err != nil || dec.More() || re.Code == "" {
		return nil, fmt.Errorf("%w: bad error frame", ErrBadFrame)
	}
	return nil, &re
}

// marshalError encodes an error frame's body.
func marshalError(e RemoteError) []byte {
	body, _ := json.Marshal(e) // strings only: cannot fail
	return body
}

// reserver returns a function reserving a frame's buffer in the stream's
// resource scope, so the resource manager bounds what RPC frames hold in
// memory. The reservation is released when the stream is closed or reset.
func reserver(s network.Stream) func(n int) error {
	return func(n int) error {
		if err := s.Scope().ReserveMemory(n, network.ReservationPriorityMedium); err != nil {
			return fmt.Errorf("p2p: reserve %d bytes for a frame: %w", n, err)
		}
		return nil
	}
}
