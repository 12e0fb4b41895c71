package core

import (
	"errors"
	"fmt"
	"slices"
)

// Config sets up one node. Zero values pick the defaults noted per field.
type Config struct {
	// ID is this node's id; it must be non-zero.
	ID NodeID
	// Peers is the bootstrap membership (every voter, this node included).
	// It is used only when the node starts with empty persistent state.
	Peers []NodeID

	// ElectionTick is the election timeout in ticks; each follower draws its
	// actual timeout uniformly from (ElectionTick, 2*ElectionTick]. Default 10.
	ElectionTick int
	// HeartbeatTick is how often, in ticks, a leader sends heartbeats.
	// Default 1. Must be less than ElectionTick.
	HeartbeatTick int

	// Seed seeds the node's only source of randomness (election timeouts).
	// Two nodes with equal seeds still draw differently: the ID is mixed in.
	Seed uint64

	// DisablePreVote turns off the PreVote phase (on by default), which stops
	// a node rejoining after a partition from bumping the cluster's term.
	DisablePreVote bool
	// DisableCheckQuorum turns off CheckQuorum (on by default): a leader that
	// has not heard from a majority within an election timeout steps down,
	// and followers that hear from a leader ignore vote requests meanwhile.
	DisableCheckQuorum bool
	// LeaseRead answers ReadIndex from the leader's lease instead of a
	// heartbeat round. It trades a network round trip for a dependence on
	// bounded clock drift; it requires CheckQuorum. Off by default.
	LeaseRead bool

	// MaxInflightMsgs bounds the append messages in flight to one follower.
	// Default 256.
	MaxInflightMsgs int
	// MaxMsgBytes bounds the entry bytes in one append message (a single
	// larger entry is still sent alone). Default 1 MiB.
	MaxMsgBytes uint64
	// MaxInflightBytes bounds the entry bytes in flight to one follower;
	// 0 means only MaxInflightMsgs bounds it.
	MaxInflightBytes uint64
	// MaxApplyBytes bounds the committed entry bytes handed out in one
	// Ready (at least one entry is always handed out). Default 64 MiB.
	MaxApplyBytes uint64

	// Join starts a node with empty state that is not part of the bootstrap
	// membership: it has no configuration, never campaigns, and waits for
	// the leader of the cluster that added it (as a learner) to send it the
	// log or a snapshot. Peers must be empty.
	Join bool
	// MaxLearnerLag is how many entries behind the leader's log a learner
	// may be and still be promoted to voter. Default 1000.
	MaxLearnerLag uint64

	// Applied is, on restart, the index the runtime's state machine has
	// already applied; entries up to it are not handed out again.
	Applied uint64

	// VoteFloor is, after a repair that dropped entries this node once held
	// (a damaged WAL), the end of the log it had: (Term, Index) of its last
	// entry. The node then votes as if it still had that log — it grants a
	// vote only to a candidate whose log is at least as up to date as both
	// its own and the floor — and campaigns only once its own log has
	// reached the floor again. So the dropped entries still count, for
	// every election, exactly as they did before they were lost (the
	// argument is in docs/disk.md). Zero when there was no repair.
	VoteFloor LogPosition
}

// LogPosition is the position of a log entry: its term and index. One
// position is at least as up to date as another when its term is higher,
// or the terms are equal and its index is not lower (Raft's election
// rule).
type LogPosition struct {
	Term, Index uint64
}

// AtLeast reports whether p is at least as up to date as o.
func (p LogPosition) AtLeast(o LogPosition) bool {
	return p.Term > o.Term || (p.Term == o.Term && p.Index >= o.Index)
}

// Defaults used when a Config field is zero.
const (
	DefaultElectionTick    = 10
	DefaultHeartbeatTick   = 1
	DefaultMaxInflightMsgs = 256
	DefaultMaxMsgBytes     = 1 << 20
	DefaultMaxApplyBytes   = 64 << 20
	DefaultMaxLearnerLag   = 1000
)

func (c *Config) validate() error {
	if c.ID == None {
		return errors.New("config: ID must be non-zero")
	}
	if c.ElectionTick == 0 {
		c.ElectionTick = DefaultElectionTick
	}
	if c.HeartbeatTick == 0 {
		c.HeartbeatTick = DefaultHeartbeatTick
	}
	if c.HeartbeatTick < 0 || c.ElectionTick <= c.HeartbeatTick {
		return fmt.Errorf("config: ElectionTick (%d) must be greater than HeartbeatTick (%d) > 0", c.ElectionTick, c.HeartbeatTick)
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = DefaultMaxInflightMsgs
	}
	if c.MaxInflightMsgs < 0 {
		return fmt.Errorf("config: MaxInflightMsgs %d must be positive", c.MaxInflightMsgs)
	}
	if c.MaxMsgBytes == 0 {
		c.MaxMsgBytes = DefaultMaxMsgBytes
	}
	if c.MaxApplyBytes == 0 {
		c.MaxApplyBytes = DefaultMaxApplyBytes
	}
	if c.MaxLearnerLag == 0 {
		c.MaxLearnerLag = DefaultMaxLearnerLag
	}
	if c.Join && len(c.Peers) > 0 {
		return errors.New("config: a joining node takes its membership from the cluster, not from Peers")
	}
	if c.LeaseRead && c.DisableCheckQuorum {
		return errors.New("config: LeaseRead requires CheckQuorum")
	}
	for _, p := range c.Peers {
		if p == None {
			return errors.New("config: Peers must not contain id 0")
		}
	}
	return nil
}

// PersistentState is what a node recovered from its stable storage: exactly
// what earlier Readys asked to persist.
type PersistentState struct {
	HardState HardState
	// Snapshot is the latest snapshot (or bootstrap configuration) persisted;
	// nil for a brand-new node.
	Snapshot *SnapshotMeta
	// Entries follow Snapshot contiguously.
	Entries []Entry
	// Holes are entries of Entries known by index and term only (their
	// data lost to disk damage): they are not applied, sent or served until
	// another member gives them back. A node with holes does not campaign.
	Holes Holes
}

func (s PersistentState) isEmpty() bool {
	return s.HardState.IsEmpty() && s.Snapshot == nil && len(s.Entries) == 0
}

func (s PersistentState) validate() error {
	if s.Snapshot == nil {
		return errors.New("persistent state has entries or a hard state but no snapshot or bootstrap configuration")
	}
	next := s.Snapshot.Index + 1
	for _, e := range s.Entries {
		if e.Index != next {
			return fmt.Errorf("persistent state: entry index %d where %d was expected", e.Index, next)
		}
		next++
	}
	last := s.Snapshot.Index + uint64(len(s.Entries))
	if h := s.Holes; !h.Empty() && (!slices.IsSorted(h) || h[0] <= s.Snapshot.Index || h[len(h)-1] > last) {
		return fmt.Errorf("persistent state: holes %v not ascending inside the log (%d, %d]", h, s.Snapshot.Index, last)
	}
	for _, i := range s.Holes {
		if s.Entries[i-s.Snapshot.Index-1].Term == 0 && i > s.HardState.Commit {
			return fmt.Errorf("persistent state: hole %d of unknown term beyond the commit index %d", i, s.HardState.Commit)
		}
	}
	if s.HardState.Commit > last {
		return fmt.Errorf("persistent state: commit %d beyond the last entry %d", s.HardState.Commit, last)
	}
	return nil
}

func sortedIDs(ids []NodeID) []NodeID {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// ErrNotLeader refuses a request that only the leader can serve. Leader is
// the current leader as far as this node knows (None if unknown), so the
// caller can retry there.
type ErrNotLeader struct{ Leader NodeID }

func (e *ErrNotLeader) Error() string {
	if e.Leader == None {
		return "not the leader, and no leader is known"
	}
	return fmt.Sprintf("not the leader; the leader is node %d", e.Leader)
}

var (
	// ErrTransferring refuses a proposal while leadership is being handed
	// to another node.
	ErrTransferring = errors.New("leadership transfer in progress")
	// ErrUnknownPeer names a node that is not a member.
	ErrUnknownPeer = errors.New("unknown peer")
	// ErrCompacted means the requested index is behind the latest snapshot.
	ErrCompacted = errors.New("index compacted away by a snapshot")
	// ErrUnavailable means the requested index is not in the log yet.
	ErrUnavailable = errors.New("index not available")
)
