// Package testnet composes directory voters and storage nodes into running
// systems on one machine, with the same code paths as a real federation:
//
//   - Standalone is what `hce serve` runs: one directory voter and one
//     storage node behind one HTTP port.
//   - StartVoter and StartNode run one voter (raft over mutual TLS, libp2p)
//     or one storage node (Pebble, libp2p, Weave storage API); `hce
//     directory` and `hce node` are thin wrappers around them.
//   - Testnet (Start, Attach) runs a whole federation of D voters and N
//     nodes over named operators, in-process or as child `hce` processes,
//     with Leader, Kill, Restart, Drain, Partition and Heal for fault
//     injection (partitions cut node-node, node-voter and voter-voter
//     links; see BlocklistFile); `hce testnet` drives it from the command
//     line through DIR/testnet.json.
//   - RunNemesis is a randomized fault test of a running Testnet: Sync-like
//     clients write, read and register while a seeded nemesis kills,
//     restarts and partitions voters and nodes; then it heals everything
//     and checks that no acknowledged write or registration was lost and
//     no read missed an acknowledged write (`hce testnet chaos`).
//   - Sync 1.5 (sync15.go): every node and Standalone serves the Sync 1.5
//     storage API with Hawk credentials sealed to its X25519 key; voters
//     and Standalone run the tokenserver (FxAConfig), a testnet's voters
//     the local issuer with one shared key.
//   - Every voter, node and Standalone serves HTTP on the platform of
//     package api/httpserve (HTTPConfig: TLS, timeouts, limits, health
//     checks, metrics, access log); Config.TLS runs a testnet over HTTPS.
//
// The tests of this package drive these systems through real HTTP and real
// libp2p, exactly as Sync clients and peers do.
package testnet
