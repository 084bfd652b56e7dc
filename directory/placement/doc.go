// Package placement is the allocation policy of the HCE directory: it decides
// which storage nodes hold a user's data (an ordered replica set whose first
// member is the primary), which members hold every acknowledged write
// (current) and which may lack some (filling), how a set follows node
// failures, drains and rebalancing without ever dropping its only current
// copy, and which nodes still owe a set a handoff (leaving).
//
// Every function is pure: no IO, no clock, no randomness, and no dependence on
// map iteration order or on the order of the input slices. The directory calls
// it inside raft's FSM.Apply, so every voter computes the same answer from the
// same committed state. The caller supplies "now" as Policy.Now, a
// deterministic clock (the directory uses the raft index of the entry being
// applied), in the same unit as Node.Added.
//
// # Terms
//
// A node's Load is the number of users whose replica set lists the node as a
// member (leaving nodes do not count). Loads computes it from a list of sets;
// the directory keeps it up to date as it commits sets.
//
// A candidate for a new placement is a node in state Active with
// Load < Capacity that is not already in the user's set. Capacity is a hard
// limit: a node is never given a user when Load >= Capacity. Pending, Draining,
// Down and Retired nodes never receive users.
//
// # Gradual release of capacity
//
// As Mozilla's tokenserver did, a node's usable capacity is released in steps
// so that a freshly added node is not flooded with every new user at once:
//
//	released(n) = min(Capacity, ReleaseStep × (1 + (Now − Added) / ReleaseInterval))
//
// (integer division; Now < Added counts as 0). A node is "within release" when
// Load < released(n). The release is soft: a node beyond its released capacity
// (but below Capacity) is chosen only when no candidate within release is left
// for that slot, which is how tokenserver releases more capacity once every node
// has used its current allowance. So release never causes ErrNoCapacity.
//
// # New nodes hold replicas before primaries
//
// A node is "new" while Now < Added + NewNodeWindow. A new node is not made the
// primary of a new user while an established candidate exists; it still takes
// replica slots normally.
//
// # Choosing a node for a slot
//
// Slots are filled one at a time, primary first. For each slot the candidates
// are ordered by these keys, the first difference deciding:
//
//  1. replica slots only: a node of an operator not yet in the set first
//     (so a set spans min(R, operators available) distinct operators, falling
//     back to the same operator when there are not enough);
//  2. primary slot only: an established node before a new one;
//  3. within release before beyond release;
//  4. lower fill after placement, (Load+1)/Capacity, compared exactly by
//     cross-multiplication;
//  5. lower ID (byte-wise).
//
// The best candidate takes the slot and the next slot is chosen from the rest.
//
// # Members: current, filling, leaving
//
// A Set is a list of Members and a Leaving list. A current member holds every
// write acknowledged for the user; a filling member may lack some. A member
// becomes filling when it is added (Normalize, StartTransfer) or when a write
// is acknowledged without its confirmation (MarkUnconfirmed), each time with a
// fresh Epoch, and current again only by a backfill report for that epoch from
// a current source (MarkFilled). A node that leaves the set (failover, drain,
// transfer) is listed in Leaving until a current member reports that it
// pulled everything the node held (HandOff); it is not added back before.
//
// Invariants every function keeps: a set that has a current member keeps one
// (only retiring every current member ends it, reported as Outcome.Lost), and
// the primary is a current member, alive when one is. A set whose only current
// members are down is left as it is: the user waits for them rather than being
// served by a node lacking its data.
//
// # Failover, drain and transfers
//
// Normalize is applied after every change. While some member is current and
// alive, dead members move to Leaving and filling replacements are appended
// until r members are Active and not leaving (the replica-slot keys above),
// excluding the set's members and leaving nodes. A Draining member or one
// marked Leave (a rebalancing transfer) stays, serving, until ReadyToLeave
// holds (another current alive member, every Active non-leaving member
// current); FinishLeave then moves it to Leaving.
//
// Rebalance lists transfers from nodes whose load, relative to released
// capacity, is well above others' (Improves: the move strictly shrinks the
// spread by more than one user) while every node is up and none drains;
// StartTransfer marks the source member Leave and adds the destination as a
// filling member. Each transfer strictly lowers the sum of Load²/released over
// the nodes, so rebalancing at a fixed clock ends.
package placement
