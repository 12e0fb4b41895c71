// Package core is KeyVal's Raft state machine: a pure function of its inputs.
//
// Nothing in this package starts goroutines, reads a clock, touches a file or
// a socket, or draws from global randomness. A driver (the real server or the
// deterministic simulator) feeds it ticks, messages and proposals, and carries
// out the work it hands back in a Ready. See docs/core.md.
package core

import "fmt"

// NodeID names a member of the cluster. Zero means "nobody".
type NodeID uint64

// None is the NodeID of no node: no vote cast, no leader known.
const None NodeID = 0

// EntryType tells the runtime how to interpret an entry's Data.
type EntryType uint8

const (
	// EntryNormal carries a state machine command (or nothing: the empty
	// entry a new leader appends to commit its term).
	EntryNormal EntryType = iota
	// EntryConfChange carries an encoded membership change.
	EntryConfChange
)

func (t EntryType) String() string {
	switch t {
	case EntryNormal:
		return "Normal"
	case EntryConfChange:
		return "ConfChange"
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Entry is one slot of the replicated log.
type Entry struct {
	Term  uint64
	Index uint64
	Type  EntryType
	Data  []byte
}

// HardState is what a node must have on stable storage before it lets any
// message that depends on it leave: its term, its vote in that term, and the
// highest index it knows to be committed.
type HardState struct {
	Term   uint64
	Vote   NodeID
	Commit uint64
}

// IsEmpty reports whether h is the zero HardState.
func (h HardState) IsEmpty() bool { return h == HardState{} }

// ConfState is a cluster membership: the voters, whose majority decides, and
// the learners, who receive the log but neither vote nor count for commit.
// Both lists are kept sorted and free of duplicates.
type ConfState struct {
	Voters   []NodeID
	Learners []NodeID
}

// Equal reports whether two membership sets are identical.
func (c ConfState) Equal(o ConfState) bool {
	return equalIDs(c.Voters, o.Voters) && equalIDs(c.Learners, o.Learners)
}

func equalIDs(a, b []NodeID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// SnapshotMeta describes a snapshot: the log position it replaces up to and
// including (Index, Term) and the membership in force at that point. The
// snapshot's bytes belong to the runtime; core only tracks this metadata.
//
// A SnapshotMeta with Index 0 is the bootstrap configuration of a brand-new
// node: there is no state machine data to restore, only Conf to persist.
type SnapshotMeta struct {
	Index uint64
	Term  uint64
	Conf  ConfState
}

// MessageType names the kind of a Message.
type MessageType uint8

const (
	MsgApp MessageType = iota + 1 // leader → follower: entries after (Index, LogTerm)
	MsgAppResp
	MsgHeartbeat // leader → follower: "still here", carries commit
	MsgHeartbeatResp
	MsgVote // candidate → all: vote for me, my log ends at (Index, LogTerm)
	MsgVoteResp
	MsgPreVote // would-be candidate → all: would you vote for me?
	MsgPreVoteResp
	MsgSnap       // leader → follower: install the snapshot in Snapshot
	MsgTimeoutNow // leader → transfer target: campaign now
	MsgReadIndex  // follower → leader: forwarded ReadIndex request
	MsgReadIndexResp
	MsgFetch     // node with holes → any member: "send me these entries" (docs/disk.md, "Keeping the log")
	MsgFetchResp // → the node with holes: entries of the asked range, as its log holds them
)

var messageTypeNames = [...]string{
	MsgApp:           "MsgApp",
	MsgAppResp:       "MsgAppResp",
	MsgHeartbeat:     "MsgHeartbeat",
	MsgHeartbeatResp: "MsgHeartbeatResp",
	MsgVote:          "MsgVote",
	MsgVoteResp:      "MsgVoteResp",
	MsgPreVote:       "MsgPreVote",
	MsgPreVoteResp:   "MsgPreVoteResp",
	MsgSnap:          "MsgSnap",
	MsgTimeoutNow:    "MsgTimeoutNow",
	MsgReadIndex:     "MsgReadIndex",
	MsgReadIndexResp: "MsgReadIndexResp",
	MsgFetch:         "MsgFetch",
	MsgFetchResp:     "MsgFetchResp",
}

func (t MessageType) String() string {
	if int(t) < len(messageTypeNames) && messageTypeNames[t] != "" {
		return messageTypeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Message is everything that travels between two nodes. Fields a message type
// does not use are zero.
type Message struct {
	Type MessageType
	From NodeID
	To   NodeID
	Term uint64

	// Index and LogTerm locate a log position: the entry preceding Entries in
	// MsgApp, the last entry of the sender's log in MsgVote/MsgPreVote, the
	// highest matched (or rejected) index in MsgAppResp, the read index in
	// MsgReadIndexResp.
	Index   uint64
	LogTerm uint64

	Entries []Entry
	Commit  uint64

	// Reject marks a refusal (a vote denied, an append that did not match).
	// A rejected MsgAppResp carries a hint in RejectHint/LogTerm: the index
	// and term of the follower's last entry at or before the probed index
	// whose term is at most the probed term, so the leader can skip a whole
	// conflicting term in one round trip.
	Reject     bool
	RejectHint uint64
	// LogCut marks a rejected MsgAppResp from a node whose log a repair
	// cut short (it is below its vote floor): the leader's match index
	// for it may be ahead of what it holds, and must be forgotten.
	LogCut bool

	// Snapshot is set on MsgSnap only.
	Snapshot *SnapshotMeta

	// Context carries an opaque request id for ReadIndex traffic, and marks
	// a vote caused by a leadership transfer (which may disrupt a leader).
	Context []byte
}

func (m Message) String() string {
	return fmt.Sprintf("%s %d→%d t%d i%d lt%d c%d n%d rej=%v hint=%d",
		m.Type, m.From, m.To, m.Term, m.Index, m.LogTerm, m.Commit, len(m.Entries), m.Reject, m.RejectHint)
}
