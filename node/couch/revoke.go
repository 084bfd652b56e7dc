package couch

import (
	"context"
	"net/http"
	"time"

	"github.com/hce-sync/hce/api"
)

// revocations is implemented by authenticators that say when a user's
// credentials are revoked (node.Authenticator: a password change, a reset
// or the account's deletion): the channel closes then.
type revocations interface {
	Watch(user string) (revoked <-chan struct{}, stop func())
}

// watchCredentials returns a context for a long-lived feed of db opened
// with r's credentials that is cancelled as soon as they are revoked:
// when the authenticator says so (an account event), or when checking
// them again, every Config.Recheck, says they are no longer good (so a
// feed also ends when an event is lost, or its token expires). A check
// that cannot be made (the directory unreachable) leaves the feed open.
// The returned function releases it.
func (h *handler) watchCredentials(ctx context.Context, r *http.Request, db string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	creds, err := api.ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		cancel()
		return ctx, cancel
	}
	var revoked <-chan struct{}
	stop := func() {}
	if rv, ok := h.auth.(revocations); ok {
		revoked, stop = rv.Watch(db)
	}
	go func() {
		defer stop()
		t := time.NewTicker(h.cfg.Recheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-revoked:
				h.log.Info("couch: feed ended: credentials revoked", "user", db)
				cancel()
				return
			case <-t.C:
				if err := h.auth.Authenticate(ctx, db, creds); err != nil && isAuthErr(err) {
					h.log.Info("couch: feed ended: credentials no longer valid", "user", db, "err", err)
					cancel()
					return
				}
			}
		}
	}()
	return ctx, cancel
}
