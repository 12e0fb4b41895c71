package core

import (
	"fmt"
	"slices"
)

// SoftState is volatile state worth reporting to the runtime: who leads,
// and what this node is.
type SoftState struct {
	Lead NodeID
	Role Role
}

// Ready is one batch of work for the runtime. Do it in this order:
//
//  1. Messages may be sent at once, even before anything is persisted (this
//     is how a leader writes its log in parallel with replicating it).
//  2. Persist Snapshot (if any; as a compaction if SnapshotKeepsLog),
//     Filled (the data of holes, before Entries), Entries (an entry with an
//     index already in the log replaces that entry and everything after it)
//     and HardState (if not empty). If MustSync, make all of it durable before going on;
//     one fsync covers the whole batch.
//  3. Only then send MessagesAfterPersist: votes and acknowledgements that
//     promise what step 2 wrote.
//  4. If Snapshot.Index > 0, restore the state machine from the snapshot's
//     bytes (which arrived with the MsgSnap). Then apply CommittedEntries in
//     order, and serve each ReadState once the applied index reaches it.
//  5. Call Advance with this Ready.
type Ready struct {
	SoftState *SoftState
	HardState HardState
	Snapshot  *SnapshotMeta
	// SnapshotKeepsLog: the log after Snapshot stays (it filled holes the
	// log had: persist it as a compaction, not as the log's new start).
	SnapshotKeepsLog bool
	Entries          []Entry
	// Filled are entries the log held as holes (PersistentState.Holes)
	// and now has the data of: persist that data (it promises nothing, so
	// it need not be synced before anything).
	Filled []Entry

	CommittedEntries []Entry

	Messages             []Message
	MessagesAfterPersist []Message

	ReadStates []ReadState
	MustSync   bool
	// WantSnapshot asks the runtime to take a snapshot now (and report it
	// with SnapshotTaken): a follower needs entries CompactLog dropped.
	WantSnapshot bool
}

// Node is the runtime's handle on the Raft state machine. It is not safe for
// concurrent use: one event loop owns it.
type Node struct {
	r        *raft
	prevSoft SoftState
	prevHard HardState
}

// NewNode starts a node from what it recovered from stable storage. With
// empty state it bootstraps a new cluster from cfg.Peers; its first Ready
// then carries the bootstrap configuration as a Snapshot with Index 0, which
// the runtime persists like any snapshot.
func NewNode(cfg Config, st PersistentState) (*Node, error) {
	r, err := newRaft(cfg, st)
	if err != nil {
		return nil, fmt.Errorf("core: %w", err)
	}
	n := &Node{r: r}
	n.prevSoft = SoftState{Lead: r.lead, Role: r.role}
	n.prevHard = r.hardState()
	return n, nil
}

func (r *raft) hardState() HardState {
	return HardState{Term: r.term, Vote: r.vote, Commit: r.log.committed}
}

// Tick advances the node's logical clock by one tick.
func (n *Node) Tick() { n.r.tick() }

// Step hands the node a message from a peer. Malformed messages are refused
// with an error and change nothing.
func (n *Node) Step(m Message) error { return n.r.step(m) }

// Propose appends data to the log if this node is the leader. It returns the
// index and term the entry got: the proposal succeeded if an entry with that
// index and term is later committed (any other term there means it was
// lost). A follower refuses with *ErrNotLeader naming the leader; the
// runtime forwards the request there. Data must not be modified afterwards.
func (n *Node) Propose(data []byte) (index, term uint64, err error) {
	return n.r.propose(EntryNormal, data)
}

// ReadIndex asks for a linearizable read point. ctx must be unique among
// outstanding requests; the answer arrives as a ReadState with that ctx. On
// a follower the request is forwarded to the leader; with no known leader it
// is refused. A request can be lost (with a message or a leader change):
// the runtime times it out and retries.
func (n *Node) ReadIndex(ctx []byte) error { return n.r.readIndex(ctx) }

// ProposeConfChange proposes one membership change. The leader refuses it
// (with ErrConfChangePending, ErrNoTermCommit, ErrLearnerBehind or
// ErrInvalidConfChange) unless it fits: one change at a time, after the
// leader has committed an entry of its term, promoting only a caught-up
// learner, never removing the last voter. The change is in force on each
// node from the moment the entry is in its log; it succeeded if the entry
// at the returned index and term commits. The runtime reads the change back
// from the committed entry with DecodeConfChange.
func (n *Node) ProposeConfChange(cc ConfChange) (index, term uint64, err error) {
	return n.r.proposeConfChange(cc)
}

// InformRemoved tells the leader that node id, which the runtime knows was
// removed from the cluster (its records say so), is still sending: the
// leader replicates the log to it until it holds everything committed now,
// so it applies its own removal and stops. A node removed while cut off
// learns it this way. It does nothing on a follower or for a member.
func (n *Node) InformRemoved(id NodeID) { n.r.informRemoved(id, max(n.r.log.committed, 1)) }

// TransferLeadership asks the leader to hand leadership to the voter to. It
// stops taking proposals, brings the target up to date, and tells it to
// campaign; if that has not happened within an election timeout, it gives up
// and takes proposals again.
func (n *Node) TransferLeadership(to NodeID) error { return n.r.transferLeadership(to) }

// ReportUnreachable tells the leader that a message to id could not be
// delivered; it stops streaming to id and probes instead.
func (n *Node) ReportUnreachable(id NodeID) { n.r.reportUnreachable(id) }

// ForgetLeader tells a follower that the process of node id, its leader,
// is gone: the runtime saw its connection close and nothing listening at
// its address any more. The follower stops honouring that leader's lease,
// so it grants (pre-)votes at once, and it campaigns within a few ticks
// instead of a whole election timeout: the voters left take turns a tick
// apart, in id order, so that when every follower saw the leader die the
// lowest one with an up-to-date log is elected, without split votes. A
// report about any other node, or to a node that is not a follower,
// changes nothing (it may be late: the leader it means may be gone
// already). With LeaseRead it is ignored: a leader answering reads from
// its lease relies on every follower honouring that lease. It reports
// whether the leader was forgotten.
func (n *Node) ForgetLeader(id NodeID) bool { return n.r.forgetLeader(id) }

// ReportSnapshot tells the leader whether the snapshot it asked to send to
// id was delivered.
func (n *Node) ReportSnapshot(id NodeID, ok bool) { n.r.reportSnapshot(id, ok) }

// SnapshotTaken tells the node that the runtime has captured its state
// machine as of index (which must have been applied) and holds its file.
// The node drops its in-memory log up to index (CompactLog may have cut it
// exactly there already) and returns the metadata the runtime records
// with the snapshot's bytes; later followers that need those entries are
// sent this snapshot. One older than the log's start (CompactLog cut past
// it) is refused with ErrCompacted: it cannot be sent.
func (n *Node) SnapshotTaken(index uint64) (SnapshotMeta, error) {
	l := n.r.log
	switch {
	case index == l.snap.Index && index > l.snapFile:
		// CompactLog cut the log here already; now there is a file too.
	case index <= l.snap.Index:
		return SnapshotMeta{}, fmt.Errorf("snapshot at %d (latest is %d): %w", index, l.snap.Index, ErrCompacted)
	case index > l.applied:
		return SnapshotMeta{}, fmt.Errorf("snapshot at %d beyond applied index %d: %w", index, l.applied, ErrUnavailable)
	default:
		conf, _ := l.confAt(index)
		l.compact(index, conf)
	}
	l.snapFile = index
	return l.snap, nil
}

// CompactLog drops the in-memory log up to index, which must be applied,
// where no snapshot file is: it bounds the memory the log holds between
// snapshots. A leader cuts nothing a follower it has heard from within an
// election timeout still needs (past its Match), nor past a snapshot on its
// way to a follower: a follower catching up, from entries or from a
// snapshot, is never made to start over. A follower silent for longer does
// not hold the log back; when it returns needing a dropped entry, the
// older snapshot file cannot serve it (the entries after the file are
// gone), so the leader asks the runtime for a fresh snapshot
// (Ready.WantSnapshot), cutting no further while that follower waits, and
// sends the snapshot once SnapshotTaken reports it. It cuts all the way
// to index or not at all (a cut copies the log's rest, so it is not worth
// making a little at a time behind a slow follower), and reports whether
// it cut.
func (n *Node) CompactLog(index uint64) bool {
	r, l := n.r, n.r.log
	if index <= l.snap.Index || index > l.applied || (r.role == Leader && !r.followersKeepUpAfterCut(index)) {
		return false
	}
	conf, _ := l.confAt(index)
	l.compact(index, conf)
	return true
}

// FirstIndex is the index of the first entry the in-memory log holds.
func (n *Node) FirstIndex() uint64 { return n.r.log.firstIndex() }

// Holes are the entries of the log known by index and term only, waiting
// for their data from another member (PersistentState.Holes).
func (n *Node) Holes() Holes { return slices.Clone(n.r.log.holes) }

// HasReady reports whether Ready has work to hand out.
func (n *Node) HasReady() bool {
	r := n.r
	r.flush()
	return len(r.msgs) > 0 || len(r.msgsAfterPersist) > 0 || len(r.readStates) > 0 ||
		r.pendingSnapshot != nil || r.wantSnapshot || len(r.log.unstable()) > 0 || len(r.log.filled) > 0 ||
		len(r.log.toApply(1)) > 0 ||
		r.hardState() != n.prevHard || (SoftState{Lead: r.lead, Role: r.role}) != n.prevSoft
}

// Ready returns the work accumulated since the last call. Call Advance when
// it is done; a second Ready before that hands out only newer work.
func (n *Node) Ready() Ready {
	r := n.r
	r.flush()
	rd := Ready{
		Entries:              r.log.unstable(),
		CommittedEntries:     r.log.toApply(r.cfg.MaxApplyBytes),
		Snapshot:             r.pendingSnapshot,
		SnapshotKeepsLog:     r.pendingKeepsLog,
		Filled:               r.log.filled,
		Messages:             r.msgs,
		MessagesAfterPersist: r.msgsAfterPersist,
		ReadStates:           r.readStates,
		WantSnapshot:         r.wantSnapshot,
	}
	if ss := (SoftState{Lead: r.lead, Role: r.role}); ss != n.prevSoft {
		changed := ss // only a change costs an allocation: Ready runs for every batch
		rd.SoftState = &changed
		n.prevSoft = ss
	}
	if hs := r.hardState(); hs != n.prevHard {
		rd.HardState = hs
		rd.MustSync = hs.Term != n.prevHard.Term || hs.Vote != n.prevHard.Vote
		n.prevHard = hs
	}
	rd.MustSync = rd.MustSync || len(rd.Entries) > 0 || rd.Snapshot != nil
	r.msgs, r.msgsAfterPersist, r.readStates = nil, nil, nil
	r.pendingSnapshot, r.pendingKeepsLog, r.log.filled, r.wantSnapshot = nil, false, nil, false
	if k := len(rd.Entries); k > 0 {
		r.log.persisting = rd.Entries[k-1].Index
	}
	if k := len(rd.CommittedEntries); k > 0 {
		r.log.applying = rd.CommittedEntries[k-1].Index
	}
	return rd
}

// Advance tells the node that the runtime has done everything rd asked.
func (n *Node) Advance(rd Ready) {
	r := n.r
	l := r.log
	r.selfVoteDurable(rd.HardState.Term)
	if k := len(rd.Entries); k > 0 {
		last := rd.Entries[k-1]
		// Entries overwritten since this Ready was handed out are not stable.
		if l.matchTerm(last.Index, last.Term) && last.Index > l.stable {
			l.stable = last.Index
		}
	}
	if k := len(rd.CommittedEntries); k > 0 {
		l.applied = max(l.applied, rd.CommittedEntries[k-1].Index)
	}
	if r.role == Leader {
		if pr := r.trk.progress.get(r.id); pr != nil && pr.maybeUpdate(l.stable) {
			r.maybeCommit()
		}
	}
}

// maxSpareMessages bounds the arrays RecycleMessages keeps: a Ready takes
// at most two, and a few more cover the batches finishing together.
const maxSpareMessages = 8

// RecycleMessages hands back the Messages or MessagesAfterPersist of an
// earlier Ready once all of them have been sent and nothing refers to the
// slice any more; a later Ready's messages reuse its array. A runtime that
// never calls it loses nothing but allocations: a Ready with messages
// costs one or two, and a loop takes thousands of Readies a second.
func (n *Node) RecycleMessages(msgs []Message) {
	r := n.r
	if cap(msgs) == 0 || len(r.spareMsgs) >= maxSpareMessages {
		return
	}
	clear(msgs) // do not pin entries and contexts
	r.spareMsgs = append(r.spareMsgs, msgs[:0])
}

// HardState reports the node's term, vote and commit index, cheaply.
func (n *Node) HardState() HardState { return n.r.hardState() }

// LastIndex is the index of the last entry in the node's log.
func (n *Node) LastIndex() uint64 { return n.r.log.lastIndex() }

// ConfAt is the membership in force at log index i (ErrCompacted below the
// latest snapshot, ErrUnavailable beyond the log).
func (n *Node) ConfAt(i uint64) (ConfState, error) {
	l := n.r.log
	if i < l.snap.Index {
		return ConfState{}, ErrCompacted
	}
	if i > l.lastIndex() {
		return ConfState{}, ErrUnavailable
	}
	conf, _ := l.confAt(i)
	return conf, nil
}

// Match is how far the leader knows id's log to match its own; for the
// leader itself, how far its own log is durable (as of Advance). 0 on a
// node that does not lead, or for an id it does not track.
func (n *Node) Match(id NodeID) uint64 {
	if n.r.role != Leader {
		return 0
	}
	if pr := n.r.trk.progress.get(id); pr != nil {
		return pr.Match
	}
	return 0
}

// Conf is the node's current membership: that of the latest configuration
// entry in its log, committed or not.
func (n *Node) Conf() ConfState { return n.r.trk.conf }

// SoftState reports the node's role and the leader it knows, cheaply.
func (n *Node) SoftState() SoftState { return SoftState{Lead: n.r.lead, Role: n.r.role} }

// Status is a snapshot of a node's state, for metrics, tests and checkers.
type Status struct {
	ID         NodeID
	Role       Role
	Lead       NodeID
	HardState  HardState
	Applied    uint64
	FirstIndex uint64
	LastIndex  uint64
	// Conf is the configuration in force: the newest change in the log,
	// committed or not (see membership.go). CommittedConf is the newest
	// committed one, which no leader change can undo: what to report as
	// the cluster's members.
	Conf           ConfState
	CommittedConf  ConfState
	LeadTransferee NodeID
	// Progress is the leader's view of each member (including itself),
	// ordered by ID; empty on other nodes.
	Progress []PeerProgress
}

// PeerProgress is one member's replication progress as the leader sees it.
type PeerProgress struct {
	ID      NodeID
	Match   uint64
	Next    uint64
	State   ProgressState
	Learner bool
}

// Status reports the node's current state.
func (n *Node) Status() Status {
	r := n.r
	s := Status{
		ID: r.id, Role: r.role, Lead: r.lead, HardState: r.hardState(),
		Applied: r.log.applied, FirstIndex: r.log.firstIndex(), LastIndex: r.log.lastIndex(),
		Conf: r.trk.conf, CommittedConf: r.trk.conf, LeadTransferee: r.leadTransferee,
	}
	if r.confIndex > r.log.committed {
		s.CommittedConf, _ = r.log.confAt(r.log.committed)
	}
	if r.role == Leader {
		for _, id := range r.trk.ids {
			pr := r.trk.progress.get(id)
			s.Progress = append(s.Progress, PeerProgress{ID: id, Match: pr.Match, Next: pr.Next, State: pr.State, Learner: pr.learner})
		}
	}
	return s
}

// Term returns the term of the entry at index i, for checkers and for the
// runtime's snapshot bookkeeping.
func (n *Node) Term(i uint64) (uint64, error) {
	l := n.r.log
	if i < l.snap.Index {
		return 0, ErrCompacted
	}
	t, ok := l.term(i)
	if !ok {
		return 0, ErrUnavailable
	}
	return t, nil
}

// Entries returns a copy of the log entries in [lo, hi).
func (n *Node) Entries(lo, hi uint64) ([]Entry, error) {
	l := n.r.log
	if lo < l.firstIndex() {
		return nil, ErrCompacted
	}
	if hi > l.lastIndex()+1 || lo > hi {
		return nil, ErrUnavailable
	}
	return append([]Entry(nil), l.slice(lo, hi)...), nil
}
