// Package dirclient is a storage node's client of the directory over
// libp2p (api/dirproto): it checks HTTP Basic passwords
// (node.PasswordChecker), keeps the directory's token verification keys
// (node.KeySource), sends heartbeats, looks up replica sets
// (node.Membership) and the users assigned to this node, keeps the node's
// connection gater in step with the directory's peer list, and serves the
// account events voters send (ServeAccountEvents). It is wired to the
// store in cmd and testnet, so the root node package knows the directory
// only through the interfaces it owns and imports no libp2p.
package dirclient
