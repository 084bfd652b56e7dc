package p2p

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Error codes shared by HCE's libp2p protocols (besides CodeBadRequest and
// CodeInternal, which the RPC layer itself uses).
const (
	// CodeForbidden: the calling peer may not use this protocol or ask
	// for this resource.
	CodeForbidden = "forbidden"
	// CodeUnavailable: the server cannot answer now (closing, no quorum,
	// storage failing); try again or try another peer.
	CodeUnavailable = "unavailable"
)

// MaxMessageSize bounds an encoded JSON message (Marshal, Unmarshal).
const MaxMessageSize = 64 << 10

// ErrBadMessage means a JSON message is malformed or out of bounds.
var ErrBadMessage = errors.New("p2p: bad message")

// Validator is a message that checks its own bounds.
type Validator interface {
	Validate() error
}

// Marshal encodes a JSON message.
func Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("p2p: encode %T: %w", v, err)
	}
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %T of %d bytes", ErrBadMessage, v, len(b))
	}
	return b, nil
}

// Unmarshal decodes a JSON message strictly: at most MaxMessageSize
// bytes, one JSON value with no unknown fields and nothing after it, and,
// when v is a Validator, valid. Errors wrap ErrBadMessage.
func Unmarshal(data []byte, v any) error {
	if len(data) > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes", ErrBadMessage, len(data))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %T: %v", ErrBadMessage, v, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: %T: trailing data", ErrBadMessage, v)
	}
	if val, ok := v.(Validator); ok {
		return val.Validate()
	}
	return nil
}

// HandleJSON adapts a typed handler to Handler: the request is decoded
// with Unmarshal (an empty request decodes as the zero Req, for protocols
// without a request body), a bad one is answered with CodeBadRequest, and
// the response is encoded with Marshal.
func HandleJSON[Req, Resp any](fn func(ctx context.Context, from peer.ID, req Req) (Resp, error)) Handler {
	return func(ctx context.Context, from peer.ID, raw []byte) ([]byte, error) {
		var req Req
		if len(raw) > 0 {
			if err := Unmarshal(raw, &req); err != nil {
				return nil, &RemoteError{Code: CodeBadRequest, Message: err.Error()}
			}
		} else if val, ok := any(&req).(Validator); ok {
			if err := val.Validate(); err != nil {
				return nil, &RemoteError{Code: CodeBadRequest, Message: err.Error()}
			}
		}
		resp, err := fn(ctx, from, req)
		if err != nil {
			return nil, err
		}
		return Marshal(resp)
	}
}

// CallJSON encodes req (nil: an empty request), calls p over proto with
// cfg (see CallWith) and decodes the response into resp (nil: the response
// is ignored) with Unmarshal.
func CallJSON(ctx context.Context, cfg RPCConfig, h host.Host, p peer.ID, proto protocol.ID, req, resp any) error {
	var raw []byte
	if req != nil {
		var err error
		if raw, err = Marshal(req); err != nil {
			return err
		}
	}
	out, err := CallWith(ctx, cfg, h, p, proto, raw)
	if err != nil {
		return err
	}
	if resp == nil {
		return nil
	}
	return Unmarshal(out, resp)
}
