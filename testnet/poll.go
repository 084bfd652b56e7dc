package testnet

import (
	"context"
	"time"
)

// pollUntil calls check at once and then every interval until it returns
// nil (then pollUntil returns nil, nil) or ctx ends (then it returns
// ctx's error and check's last error).
func pollUntil(ctx context.Context, every time.Duration, check func() error) (ctxErr, last error) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if last = check(); last == nil {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err(), last
		case <-tick.C:
		}
	}
}
