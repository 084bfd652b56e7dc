package dirclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/node"
)

// DefaultAccountEventTimeout bounds the handling of one account event
// (a deletion waits for the store).
const DefaultAccountEventTimeout = 10 * time.Second

// StorageWiper removes everything stored for a user (records, documents,
// tombstones); *Store implements it.
type StorageWiper interface {
	WipeUser(ctx context.Context, user string) error
}

// CredentialCache drops cached credentials of a user; *Authenticator
// implements it.
type CredentialCache interface {
	Forget(user string)
}

// AccountEventsConfig configures ServeAccountEvents. A zero field means
// "use the default".
type AccountEventsConfig struct {
	// Store deletes the records of deleted accounts. Required.
	Store StorageWiper
	// Auth is the cache of Basic-auth answers to drop entries from.
	// Required.
	Auth CredentialCache
	// IsVoter admits callers: only peers it reports as directory voters
	// may send events (Client.IsVoter). Required.
	IsVoter func(peer.ID) bool
	// Noted, when set, is told every admitted event first
	// (Client.NoteAccountEvent), so that tokens issued before the change
	// are refused from then on.
	Noted func(dirproto.AccountEvent)
	// Logger receives each event handled (info) and refused (debug).
	// Default: discard.
	Logger *slog.Logger
	// Timeout bounds one event. Default DefaultAccountEventTimeout.
	Timeout time.Duration
}

// DefaultAccountEventsConfig returns an AccountEventsConfig with the
// defaults filled in; Store, Auth and IsVoter must still be set.
func DefaultAccountEventsConfig() AccountEventsConfig {
	return AccountEventsConfig{
		Logger:  slog.New(slog.DiscardHandler),
		Timeout: DefaultAccountEventTimeout,
	}
}

// Validate reports whether c is usable.
func (c AccountEventsConfig) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("dirclient: AccountEventsConfig.Store is required")
	case c.Auth == nil:
		return errors.New("dirclient: AccountEventsConfig.Auth is required")
	case c.IsVoter == nil:
		return errors.New("dirclient: AccountEventsConfig.IsVoter is required")
	case c.Timeout < 0:
		return fmt.Errorf("dirclient: AccountEventsConfig.Timeout %v is negative", c.Timeout)
	}
	return nil
}

// ServeAccountEvents serves dirproto.ProtoAccount11 and ProtoAccount on h:
// a directory voter tells this node that a user's credentials changed or
// that the account was deleted. Callers that cfg.IsVoter does not admit
// get p2p.CodeForbidden. The node records the change (cfg.Noted: tokens
// issued before it are refused), drops its cached Basic-auth answers for
// the user and ends the feeds opened with them (Auth.Forget), so the old
// credentials stop working at once instead of after the cache TTL. On a
// deletion it also deletes the user's records (Store.WipeUser, synced to
// disk) and drops the cached answers again (a request authenticated from
// the cache while the wipe ran must not refill it), and answers only
// then, so an OK means the records are durably gone. Requests are bounded
// by p2p.MaxMessageSize and decoded strictly; version 1.0 events carry no
// credential state.
func ServeAccountEvents(h host.Host, cfg AccountEventsConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	d := DefaultAccountEventsConfig()
	if cfg.Logger == nil {
		cfg.Logger = d.Logger
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = d.Timeout
	}
	rpc := p2p.RPCConfig{MaxFrameSize: p2p.MaxMessageSize, Timeout: cfg.Timeout, Logger: cfg.Logger}
	p2p.Serve(h, dirproto.ProtoAccount11, p2p.HandleJSON(func(ctx context.Context, from peer.ID, ev dirproto.AccountEvent) (struct{}, error) {
		return struct{}{}, handleAccountEvent(ctx, cfg, from, ev)
	}), rpc)
	p2p.Serve(h, dirproto.ProtoAccount, p2p.HandleJSON(func(ctx context.Context, from peer.ID, ev dirproto.AccountEvent) (struct{}, error) {
		ev.ChangedAt, ev.Gen = 0, 0
		return struct{}{}, handleAccountEvent(ctx, cfg, from, ev)
	}), rpc)
	return nil
}

func handleAccountEvent(ctx context.Context, cfg AccountEventsConfig, from peer.ID, ev dirproto.AccountEvent) error {
	if !cfg.IsVoter(from) {
		cfg.Logger.Debug("dirclient: account event from a peer that is not a voter", "peer", from)
		return p2p.Errorf(p2p.CodeForbidden, "peer %s is not a directory voter", from)
	}
	if err := ev.Validate(); err != nil {
		return p2p.Errorf(p2p.CodeBadRequest, "%v", err)
	}
	if cfg.Noted != nil {
		cfg.Noted(ev)
	}
	cfg.Auth.Forget(ev.User)
	if !ev.Deleted {
		cfg.Logger.Info("dirclient: credentials changed at the directory", "user", ev.User, "voter", from)
		return nil
	}
	if err := cfg.Store.WipeUser(ctx, ev.User); err != nil {
		if errors.Is(err, node.ErrBadName) {
			return p2p.Errorf(p2p.CodeBadRequest, "user %q: %v", ev.User, err)
		}
		return fmt.Errorf("dirclient: delete records of %q: %w", ev.User, err)
	}
	cfg.Auth.Forget(ev.User)
	cfg.Logger.Info("dirclient: account deleted at the directory, records removed", "user", ev.User, "voter", from)
	return nil
}
