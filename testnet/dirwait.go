package testnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrDirectoryUnreachable is returned by StartNode when the directory did
// not answer (the voters' addresses, the registration) before its context
// ended; the error names the URL, how long the node waited and the last
// failure.
var ErrDirectoryUnreachable = errors.New("directory unreachable")

// dirWarnEvery is how often a node waiting for its directory logs a WARN.
const dirWarnEvery = 5 * time.Second

// waitDirectory calls fn every 100 ms until it succeeds or ctx ends,
// logging a WARN with the last error every dirWarnEvery. When ctx ends it
// returns an error wrapping ErrDirectoryUnreachable.
func waitDirectory(ctx context.Context, log *slog.Logger, what, url string, fn func() error) error {
	begin := time.Now()
	lastWarn := begin
	err, last := pollUntil(ctx, 100*time.Millisecond, func() error {
		err := fn()
		if err != nil && time.Since(lastWarn) >= dirWarnEvery {
			lastWarn = time.Now()
			log.Warn("waiting for the directory", "what", what, "directory", url,
				"waited", time.Since(begin).Round(time.Second), "err", err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: %s at %s: no success after %v (last error: %v)", ErrDirectoryUnreachable,
			what, url, time.Since(begin).Round(100*time.Millisecond), last)
	}
	return nil
}
