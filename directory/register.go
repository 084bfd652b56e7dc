package directory

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/hce-sync/hce/directory/state"
)

// Errors of node registration.
var (
	// ErrBadSignature means a registration is unsigned, its signature does
	// not verify, or its ID does not belong to its key (HTTP 401).
	ErrBadSignature = errors.New("directory: registration signature invalid")
	// ErrBadRegistration means a registration is malformed or stale
	// (HTTP 400).
	ErrBadRegistration = errors.New("directory: bad registration")
)

// SignatureHeader carries the base64 (standard, padded) Ed25519 signature
// of a registration body.
const SignatureHeader = "X-Hce-Signature"

// registrationContext prefixes the signed bytes, so a registration
// signature cannot be replayed as any other signed message of the node.
const registrationContext = "hce-node-register-v1\n"

// MaxRegistrationAge is how far a registration's timestamp may lie from
// the directory's clock (either way).
const MaxRegistrationAge = 5 * time.Minute

// Registration is the JSON body of POST /internal/v1/nodes/register. The
// signature (SignatureHeader) covers registrationContext followed by the
// exact body bytes, made with the key in PublicKey.
type Registration struct {
	// ID is the node's libp2p peer ID (PeerID) or the hex public key.
	ID string `json:"id"`
	// PublicKey is the node's Ed25519 public key, standard base64.
	PublicKey string `json:"public_key"`
	// BaseURL is where the node serves the Weave storage API.
	BaseURL string `json:"base_url"`
	// P2PAddrs are the node's libp2p multiaddresses.
	P2PAddrs []string `json:"p2p_addrs,omitempty"`
	// Operator names who runs the node.
	Operator string `json:"operator"`
	// Capacity is the most users the node accepts.
	Capacity int `json:"capacity"`
	// Timestamp is the signing time, Unix seconds.
	Timestamp int64 `json:"timestamp"`
	// HawkKey is the node's X25519 public key for Sync 1.5 (standard
	// base64 of 32 bytes), to which the tokenserver seals the Hawk keys
	// of the node's users; empty for a node that serves no Sync 1.5. A
	// directory that predates it refuses the field as unknown (400): the
	// node then registers without it.
	HawkKey string `json:"hawk_key,omitempty"`
}

// SignRegistration fills r's ID (if empty, with PeerID), PublicKey and
// (if zero) Timestamp from key and now, and returns the body to send and
// the value of SignatureHeader.
func SignRegistration(key ed25519.PrivateKey, r Registration, now time.Time) (body []byte, sig string, err error) {
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok || len(key) != ed25519.PrivateKeySize {
		return nil, "", fmt.Errorf("%w: not an Ed25519 key", ErrBadRegistration)
	}
	if r.ID == "" {
		r.ID = PeerID(pub)
	}
	r.PublicKey = base64.StdEncoding.EncodeToString(pub)
	if r.Timestamp == 0 {
		r.Timestamp = now.Unix()
	}
	body, err = json.Marshal(r)
	if err != nil {
		return nil, "", err
	}
	s := ed25519.Sign(key, append([]byte(registrationContext), body...))
	return body, base64.StdEncoding.EncodeToString(s), nil
}

// VerifyRegistration checks a registration body and its signature at
// time now: the key parses, the signature verifies, the ID is the key's
// (PeerID or hex), the timestamp is within MaxRegistrationAge, and the
// base URL is an absolute http(s) URL. Errors wrap ErrBadSignature or
// ErrBadRegistration.
func VerifyRegistration(body []byte, sig string, now time.Time) (Registration, ed25519.PublicKey, error) {
	var r Registration
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, nil, fmt.Errorf("%w: %v", ErrBadRegistration, err)
	}
	pk, err := base64.StdEncoding.DecodeString(r.PublicKey)
	if err != nil || len(pk) != ed25519.PublicKeySize {
		return r, nil, fmt.Errorf("%w: public_key is not a base64 Ed25519 key", ErrBadRegistration)
	}
	pub := ed25519.PublicKey(pk)
	s, err := base64.StdEncoding.DecodeString(sig)
	if sig == "" || err != nil || len(s) != ed25519.SignatureSize {
		return r, nil, fmt.Errorf("%w: missing or malformed signature", ErrBadSignature)
	}
	if !ed25519.Verify(pub, append([]byte(registrationContext), body...), s) {
		return r, nil, fmt.Errorf("%w: signature does not verify", ErrBadSignature)
	}
	if r.ID != PeerID(pub) && r.ID != hex.EncodeToString(pub) {
		return r, nil, fmt.Errorf("%w: id %q is not the key's", ErrBadSignature, r.ID)
	}
	age := now.Sub(time.Unix(r.Timestamp, 0))
	if age > MaxRegistrationAge || age < -MaxRegistrationAge {
		return r, nil, fmt.Errorf("%w: timestamp %d is stale", ErrBadRegistration, r.Timestamp)
	}
	if u, err := url.Parse(r.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return r, nil, fmt.Errorf("%w: base_url %q is not an absolute http(s) URL", ErrBadRegistration, r.BaseURL)
	}
	if r.Capacity < 0 {
		return r, nil, fmt.Errorf("%w: negative capacity", ErrBadRegistration)
	}
	if r.HawkKey != "" {
		if k, err := base64.StdEncoding.DecodeString(r.HawkKey); err != nil || len(k) != state.HawkKeySize {
			return r, nil, fmt.Errorf("%w: hawk_key is not a base64 X25519 key", ErrBadRegistration)
		}
	}
	return r, pub, nil
}

// RegisterNode verifies a signed registration (see VerifyRegistration)
// and records the node through raft: pending until approved, unless auto
// approval is on (Nodes.AutoApprove or the AutoApprove setting). A known
// node's addresses, operator and capacity are updated, and its Sync 1.5
// key (state.SetNodeHawkKey) when the registration carries a new one.
func (d *Directory) RegisterNode(ctx context.Context, body []byte, sig string) (NodeInfo, error) {
	r, pub, err := VerifyRegistration(body, sig, d.cfg.Clock())
	if err != nil {
		return NodeInfo{}, err
	}
	if err := d.write(ctx, state.RegisterNode{
		ID: r.ID, Operator: r.Operator, BaseURL: r.BaseURL, P2PAddrs: r.P2PAddrs,
		Capacity: r.Capacity, PublicKey: pub, Approve: d.cfg.Nodes.AutoApprove,
	}); err != nil {
		return NodeInfo{}, err
	}
	if r.HawkKey != "" {
		key, _ := base64.StdEncoding.DecodeString(r.HawkKey)
		if n, _ := d.state.Node(r.ID); !bytes.Equal(n.HawkKey, key) {
			err := d.write(ctx, state.SetNodeHawkKey{ID: r.ID, Key: key})
			if errors.Is(err, ErrGated) {
				// A voter of an earlier build is in the cluster (a rolling
				// upgrade): the node is registered without its Sync 1.5
				// key, which this voter records once the gate opens.
				d.log.Warn("directory: a node's Sync 1.5 key waits until every voter is upgraded", "node", r.ID)
				d.spawn(func(ctx context.Context) { d.recordHawkKeyLater(ctx, r.ID, key) })
			} else if err != nil {
				return NodeInfo{}, err
			}
		}
	}
	n, _ := d.state.Node(r.ID)
	return n, nil
}

// recordHawkKeyLater retries SetNodeHawkKey every 10 s for up to a day
// while the feature gate holds it, until it is recorded or superseded
// (the node registered another key) or this voter closes.
func (d *Directory) recordHawkKeyLater(ctx context.Context, id string, key []byte) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for end := time.Now().Add(24 * time.Hour); time.Now().Before(end); {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, ok := d.state.Node(id)
		if !ok || bytes.Equal(n.HawkKey, key) || len(n.HawkKey) > 0 {
			return
		}
		err := d.write(ctx, state.SetNodeHawkKey{ID: id, Key: key})
		if err == nil {
			d.log.Info("directory: a node's Sync 1.5 key recorded after the upgrade", "node", id)
			return
		}
		if !errors.Is(err, ErrGated) {
			d.log.Debug("directory: recording a node's Sync 1.5 key", "node", id, "err", err)
		}
	}
}

// PeerID returns the libp2p peer ID of an Ed25519 public key: base58btc
// of the identity multihash of the key's protobuf encoding ("12D3KooW...").
func PeerID(pub ed25519.PublicKey) string {
	// multihash(identity=0x00, len=36) + protobuf{1: KeyType Ed25519 (1), 2: 32 bytes}
	b := append([]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}, pub...)
	return base58(b)
}

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

func base58(b []byte) string {
	x := new(big.Int).SetBytes(b)
	base, mod := big.NewInt(58), new(big.Int)
	var out []byte
	for x.Sign() > 0 {
		x.DivMod(x, base, mod)
		out = append(out, base58Alphabet[mod.Int64()])
	}
	for _, c := range b {
		if c != 0 {
			break
		}
		out = append(out, '1')
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return string(out)
}
