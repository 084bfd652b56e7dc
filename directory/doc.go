// Package directory is HCE's account directory: who the users are
// (name, argon2id password hash, e-mail, pending reset code), which
// storage nodes exist (identity key, operator, URLs, capacity, state),
// which nodes hold each user (replica sets whose members are current or
// filling, and the nodes that left a set and still owe it a handoff), and
// which keys sign the users' bearer tokens, replicated with
// hashicorp/raft.
//
// The replicated state itself is package directory/state: a deterministic
// raft FSM with typed, versioned commands and its snapshot format, which
// reads no clock and does no IO. This package is everything around it,
// one concern per file:
//
//   - directory.go: Directory, Open and Close. Every background goroutine
//     runs under one root context; Close cancels it and waits for them.
//   - config.go: Config, grouped by concern (Accounts, Tokens, Raft,
//     Cluster, Nodes), DefaultConfig and Validate.
//   - raft.go: raft over raft-boltdb (raft.db) and a file snapshot store
//     (snapshots/) in Config.Dir, on raftls (mutual TLS) in cluster mode
//     or an in-memory transport for a single voter; hclog.go adapts raft's
//     logger to slog.
//   - commit.go: the write path. Commands are proposed through a group
//     commit that packs whatever is queued into one Batch entry, so one
//     fsync serves many writes; a follower forwards them to the leader.
//   - cluster.go: joining a cluster, forwarding (a write waits up to 5 s
//     for a leader it can reach; a dead leader's address is not tried
//     twice), leader and Status.
//   - accounts.go, password.go, mailer.go: the api.Accounts methods
//     (with invites: api.InviteAccounts), argon2id hashing before
//     proposing (a priority lane of the slots reserved), reset-code mail
//     (SMTPMailer, or LogMailer for development), and each user's
//     credential state (Credentials), which revokes older tokens.
//   - guard.go, resetlimit.go: the login guard in front of every password
//     check (cached answers, per-account and per-address back-off
//     answered 429, priority for accounts known at their client's
//     address, bounded queues) and the limits on reset mails.
//   - nodes.go, register.go, liveness.go: signed node registration,
//     admin actions (approve, drain, retire), heartbeats (taken by any
//     voter, passed on to the leader) and the leader's watch that marks
//     silent nodes down, unless it hears from too few nodes to trust its
//     own view.
//   - report.go, membership.go, placement.go: the nodes' replication
//     reports (unconfirmed writes, backfills, handoffs) committed
//     through raft, the membership events that tell nodes their users'
//     sets changed, and the leader's loop that ends drains and
//     rebalancing transfers per user and starts bounded transfers.
//   - keys.go, signer.go: each voter's token signing key, published in
//     the state, and IssueToken (api.TokenIssuer).
//   - sync.go: the Sync 1.5 tokenserver (GET /1.0/sync/1.5: Firefox
//     Accounts access tokens verified against a JWKS or the verification
//     endpoint, the X-KeyID rules, Hawk credentials sealed to the
//     primary's X25519 key) and the local issuer (--fxa-local).
//   - p2p.go, p2pvoter.go, p2pport.go, notify.go: the voter's libp2p host
//     (its listen port kept across restarts), the directory protocols it
//     serves to storage nodes (api/dirproto; checkpw and assignment only
//     about the caller's own users), and account events to them (the new
//     credential state; a name deleted recently is wiped on its old
//     nodes before it is taken again).
//   - voters.go, gate.go, lifecycle.go, backup.go: voters added and
//     removed through the leader (a removed voter stops and stays out),
//     the feature gate (a command outside state.Baseline is proposed only
//     once every voter said it decodes it), undrain, a retire that waits
//     until the node's users are elsewhere, nodes restored from a
//     backup, and the directory's own backups, restores and offline
//     recovery after a lost quorum.
//   - http.go: the internal (join, forward, heartbeat, register) and
//     admin routes (status, nodes, users, settings, invites);
//     accounts.go also gives the voters' Weave user API its
//     configuration (UserAPIConfig: registration policy, captcha, admin
//     secret).
//
// Open runs either one self-bootstrapped voter (what `hce serve` uses) or
// a voter of a 3- or 5-voter cluster that bootstraps it or joins through
// any voter's HTTP endpoint. Reads answer from the local state; writes
// return once committed and applied. Replica sets are decided inside the
// state machine with directory/placement: a user's primary is always a
// member holding every acknowledged write, and while none is alive
// node/weave answers 503 instead of naming a node that may lack data.
//
// DESIGN.md in this folder states the invariants, the command and snapshot
// formats and their versioning rules, the cluster and node protocols, and
// the failure modes.
package directory
