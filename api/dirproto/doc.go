// Package dirproto is the wire protocol between storage nodes and
// directory voters over libp2p: the protocol ids (each carrying its
// version), their request and response messages with their bounds, and the
// directory's error codes. Messages are JSON, decoded strictly by
// p2p.Unmarshal (unknown fields and trailing data are refused) and checked
// by their Validate methods; p2p.HandleJSON and p2p.CallJSON carry them.
//
// Voters serve ProtoHeartbeat, ProtoCheckPassword(11), ProtoKeys,
// ProtoAssignment(11), ProtoPeers, ProtoUsers and ProtoReport; storage
// nodes serve ProtoAccount(11) and ProtoMembership to the voters. A
// message that gains fields gets a new protocol id served beside the old
// one; CallVersioned falls back to the old one for older peers.
package dirproto
