package node

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// TestCheckpointUnderWrites: a checkpoint taken while writers run holds
// every write acknowledged before it began, opens as a store of its own
// with the same UUID until RenewUUID gives it a new one.
func TestCheckpointUnderWrites(t *testing.T) {
	s := openTest(t, t.TempDir(), nil, 0)
	var done atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				w := api.WBO{ID: id, Payload: "payload " + id, Has: api.FieldPayload}
				if _, err := s.PutItem(ctx, "alice", "tabs", w, api.Precondition{}); err != nil {
					t.Error(err)
					return
				}
				done.Add(1)
			}
		}()
	}
	testkit.WaitFor(t, 10*time.Second, "writes", func() bool { return done.Load() >= 200 })
	before := done.Load()
	dir := filepath.Join(t.TempDir(), "cp")
	info, err := s.Checkpoint(dir)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if info.Bytes == 0 || info.UUID != s.UUID() {
		t.Fatalf("checkpoint %+v (store %s)", info, s.UUID())
	}
	if _, err := s.Checkpoint(dir); !errors.Is(err, ErrBackupExists) {
		t.Fatalf("checkpoint over an existing folder: %v", err)
	}
	old, renewed, err := RenewUUID(dir, nil)
	if err != nil || old != s.UUID() || renewed == old {
		t.Fatalf("RenewUUID: %s -> %s, %v", old, renewed, err)
	}
	c := openTest(t, dir, nil, 0)
	if c.UUID() != renewed {
		t.Fatalf("copy's UUID %s, want %s", c.UUID(), renewed)
	}
	got := mustGet(t, c, "alice", "tabs", api.Query{})
	if int64(len(got)) < before {
		t.Fatalf("checkpoint holds %d records, %d were acknowledged before it began", len(got), before)
	}
	t.Logf("checkpoint of %d records (%d acknowledged before it began): %d bytes in %v", len(got), before, info.Bytes, info.Took)
}
