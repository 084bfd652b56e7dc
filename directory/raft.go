package directory

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/hce-sync/hce/directory/raftls"
)

// raftStores are what raft runs on: raft-boltdb as log and stable store,
// the file snapshot store and the transport.
type raftStores struct {
	bolt  *raftboltdb.BoltStore
	logs  raft.LogStore // the log raft reads (a cache over bolt): termStart searches it
	snaps *raft.FileSnapshotStore
	trans raft.Transport
	ownTr bool // trans was made by Open: Close closes it
	// stream is the mutual-TLS stream layer under trans in cluster mode
	// (nil otherwise): it identifies voters being added.
	stream *raftls.StreamLayer
	fresh  bool // no raft state existed at Open
}

// startRaft opens the stores, bootstraps a new single voter or cluster
// founder, and starts raft over the transport of the mode (raftls in
// cluster mode, Raft.Transport or an in-memory one otherwise).
func (d *Directory) startRaft() error {
	cfg := d.cfg
	rlog := newRaftLogger(cfg.Logger, cfg.Raft.LogLevel)
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(cfg.Dir, "raft.db"),
		// Fail instead of hanging when another process holds the file.
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true},
	})
	if err != nil {
		return fmt.Errorf("directory: open raft.db: %w", err)
	}
	d.stores.bolt = store
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.Raft.SnapshotRetain, rlog)
	if err != nil {
		return fmt.Errorf("directory: snapshot store: %w", err)
	}
	d.stores.snaps = snaps
	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		return fmt.Errorf("directory: log cache: %w", err)
	}
	d.stores.logs = logs

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = rlog
	t := cfg.Raft
	if t.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = t.HeartbeatTimeout
	}
	if t.ElectionTimeout > 0 {
		rc.ElectionTimeout = t.ElectionTimeout
	} else if rc.ElectionTimeout < rc.HeartbeatTimeout {
		rc.ElectionTimeout = rc.HeartbeatTimeout
	}
	if t.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	} else if rc.LeaderLeaseTimeout > rc.HeartbeatTimeout {
		rc.LeaderLeaseTimeout = rc.HeartbeatTimeout
	}
	if t.CommitTimeout > 0 {
		rc.CommitTimeout = t.CommitTimeout
	}
	if t.SnapshotInterval > 0 {
		rc.SnapshotInterval = t.SnapshotInterval
	}
	if t.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = t.SnapshotThreshold
	}
	if t.TrailingLogs > 0 {
		rc.TrailingLogs = t.TrailingLogs
	}
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("directory: raft config: %w", err)
	}

	d.viewLag = rc.HeartbeatTimeout
	d.stores.trans = cfg.Raft.Transport
	var tls *raft.NetworkTransport // cluster mode's: its RPCs are watched (leadercommit.go)
	if cfg.clustered() {
		if tls, d.stores.stream, err = newTLSTransport(cfg, rlog); err != nil {
			return err
		}
		d.stores.trans, d.stores.ownTr = tls, true
	}
	if d.stores.trans == nil {
		_, d.stores.trans = raft.NewInmemTransport(raft.ServerAddress(cfg.ID))
		d.stores.ownTr = true
	}
	existing, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		return fmt.Errorf("directory: inspect raft state: %w", err)
	}
	d.stores.fresh = !existing
	if !existing && (!cfg.clustered() || cfg.Cluster.Bootstrap) {
		boot := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: rc.LocalID, Address: d.stores.trans.LocalAddr(),
		}}}
		if err := raft.BootstrapCluster(rc, logs, store, snaps, d.stores.trans, boot); err != nil {
			return fmt.Errorf("directory: bootstrap: %w", err)
		}
		d.log.Info("directory: bootstrapped single-voter cluster", "id", cfg.ID)
	}
	trans := d.stores.trans
	if tls != nil {
		d.leaderSent, d.leaderSentDone = &leaderCommits{}, make(chan struct{})
		trans = watchCommits(tls, d.leaderSent, d.leaderSentDone)
	}
	r, err := raft.NewRaft(rc, d.state, logs, store, snaps, trans)
	if err != nil {
		d.stopWatchingCommits()
		return fmt.Errorf("directory: start raft: %w", err)
	}
	d.raft = r
	return nil
}

// newTLSTransport listens on cfg.Cluster.RaftAddr with a mutual-TLS stream layer.
func newTLSTransport(cfg Config, rlog hclog.Logger) (*raft.NetworkTransport, *raftls.StreamLayer, error) {
	tlsCfg, err := raftls.ServerClientTLS(cfg.Cluster.TLSCA, cfg.Cluster.TLSCert, cfg.Cluster.TLSKey, cfg.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("directory: raft TLS: %w", err)
	}
	scfg := raftls.DefaultConfig()
	scfg.TLS = tlsCfg
	scfg.Logger = cfg.Logger.With("component", "raftls")
	if cfg.Faults != nil {
		scfg.Refuse = cfg.Faults.RefuseVoter
	}
	if cfg.Cluster.RaftAdvertise != "" {
		adv, err := net.ResolveTCPAddr("tcp", cfg.Cluster.RaftAdvertise)
		if err != nil {
			return nil, nil, fmt.Errorf("directory: RaftAdvertise: %w", err)
		}
		scfg.Advertise = adv
	}
	stream, err := raftls.Listen(cfg.Cluster.RaftAddr, scfg)
	if err != nil {
		return nil, nil, fmt.Errorf("directory: raft listen: %w", err)
	}
	return raftls.NewTransport(stream, raftls.TransportConfig{Logger: rlog.Named("transport")}), stream, nil
}

// waitReady waits until this voter leads and its state has applied every
// entry committed before (a barrier), so reads see the restored state.
func (d *Directory) waitReady(ctx context.Context) error {
	if d.cfg.clustered() {
		return nil // startCluster joins and waits for a leader
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for d.raft.State() != raft.Leader {
		select {
		case <-ctx.Done():
			return fmt.Errorf("directory: waiting for leadership: %w", ctx.Err())
		case <-tick.C:
		}
	}
	if err := d.awaitFuture(ctx, d.raft.Barrier(d.cfg.Raft.ApplyTimeout)); err != nil {
		return fmt.Errorf("directory: barrier: %w", mapRaftErr(err))
	}
	return nil
}

// awaitFuture waits for f or for ctx, whichever comes first. The
// goroutine that waits on f is one of the Directory's (spawn): Close
// waits for it before it shuts raft down, because raft does not answer
// every future at shutdown (a barrier still queued for its leader loop or
// its state machine is never answered, and its waiter would block for
// ever). While Close runs, f is not waited for: ErrClosed.
func (d *Directory) awaitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	if !d.spawn(func(context.Context) { done <- f.Error() }) {
		return ErrClosed
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mapRaftErr turns raft's errors into the package's.
func mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return fmt.Errorf("directory: raft: %w", err)
}

func (d *Directory) shutdownRaft() error {
	var errs []error
	if d.raft != nil {
		if err := d.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("directory: raft shutdown: %w", err))
		}
	}
	d.stopWatchingCommits()
	if err := d.closeStores(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopWatchingCommits ends the watch of the transport's RPCs, once raft
// no longer reads them.
func (d *Directory) stopWatchingCommits() {
	if d.leaderSentDone != nil {
		close(d.leaderSentDone)
		d.leaderSentDone = nil
	}
}

func (d *Directory) closeStores() error {
	var errs []error
	if d.stores.ownTr && d.stores.trans != nil {
		// raft's NetworkTransport keeps its pooled outbound connections
		// open on Close, and each peer's handler of one would wait on it
		// for as long as this process lives: close them.
		if s, ok := d.stores.trans.(interface{ CloseStreams() }); ok {
			s.CloseStreams()
		}
		if c, ok := d.stores.trans.(raft.WithClose); ok {
			_ = c.Close()
		}
	}
	if d.stores.bolt != nil {
		if err := d.stores.bolt.Close(); err != nil {
			errs = append(errs, fmt.Errorf("directory: close raft.db: %w", err))
		}
	}
	return errors.Join(errs...)
}
