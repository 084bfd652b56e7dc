package raftls

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/api/testkit"
)

// TestTransportDoesNotPipeline: the transport refuses raft's pipelined
// replication, so raft replicates with plain AppendEntries calls.
// raft's netPipeline (hashicorp/raft v1.7.3, still on its main branch)
// can deadlock: once a follower answers a pipelined append with a newer
// term or a failure, the decoder stops reading the pipeline's answers
// while the sender may already be parked handing it one more request;
// the replication goroutine then never ends, that follower gets no more
// entries from this leader and raft's Shutdown waits forever.
func TestTransportDoesNotPipeline(t *testing.T) {
	ca, _ := NewCA("directory CA", time.Hour)
	s, err := Listen("127.0.0.1:0", Config{TLS: voterTLS(t, ca, "a")})
	if err != nil {
		t.Fatal(err)
	}
	trans := NewTransport(s, TransportConfig{})
	defer trans.Close()
	p, err := trans.AppendEntriesPipeline("b", "127.0.0.1:1")
	if !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		if p != nil {
			p.Close()
		}
		t.Fatalf("AppendEntriesPipeline: %v, want ErrPipelineReplicationNotSupported", err)
	}
}

// TestLeadershipTransfersUnderWrites moves leadership around a 3-voter
// cluster over this transport again and again while writers apply
// entries to whichever voter leads; every voter then holds every
// acknowledged entry, and every voter shuts down in bounded time (with
// raft's pipelining this hung: a deposed leader's replication goroutine
// stayed parked in the pipeline, see TestTransportDoesNotPipeline).
func TestLeadershipTransfersUnderWrites(t *testing.T) {
	voters := startRaftCluster(t, 3)
	leader := func() *raftVoter { return raftLeader(t, voters) }

	var (
		stop  atomic.Bool
		wg    sync.WaitGroup
		mu    sync.Mutex
		want  uint64
		acked int
	)
	var next atomic.Uint64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var l *raftVoter
				for _, v := range voters {
					if v.r.State() == raft.Leader {
						l = v
						break
					}
				}
				if l == nil {
					time.Sleep(time.Millisecond)
					continue
				}
				x := next.Add(1)
				var b [8]byte
				binary.BigEndian.PutUint64(b[:], x)
				if l.r.Apply(b[:], 2*time.Second).Error() == nil {
					mu.Lock()
					want += x
					acked++
					mu.Unlock()
				}
			}
		}()
	}
	// With pipelining, 300 transfers hung 3 runs of 9 under -race.
	transfers := 300
	if testing.Short() {
		transfers = 40
	}
	for range transfers {
		l := leader()
		before := next.Load()
		testkit.WaitFor(t, 10*time.Second, "writes under this leader", func() bool { return next.Load() >= before+20 })
		if err := l.r.LeadershipTransfer().Error(); err != nil {
			t.Logf("transfer from %s: %v", l.id, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	total, count := want, acked
	mu.Unlock()
	if count == 0 {
		t.Fatal("no write acknowledged")
	}
	// Unacknowledged applies may have committed too: every voter holds at
	// least the acknowledged entries and all voters agree.
	testkit.WaitFor(t, 20*time.Second, "every voter holding the same entries", func() bool {
		s0, n0 := voters[0].fsm.get()
		for _, v := range voters[1:] {
			if s, k := v.fsm.get(); s != s0 || k != n0 {
				return false
			}
		}
		return n0 >= count && s0 >= total
	})
	for _, v := range voters {
		done := make(chan error, 1)
		go func() { done <- v.r.Shutdown().Error() }()
		v.shut = true // a shutdown that never returns is not waited for again
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("shutdown %s: %v", v.id, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("raft %s did not shut down within 30 s after %d leadership transfers under writes", v.id, transfers)
		}
	}
	t.Logf("%d leadership transfers, %d writes acknowledged", transfers, count)
}
