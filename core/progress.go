package core

import (
	"fmt"
	"slices"
)

// ProgressState is how the leader is currently replicating to one follower.
type ProgressState uint8

const (
	// StateProbe: the leader does not know where the follower's log matches
	// its own. It sends one append at a time and waits for the answer.
	StateProbe ProgressState = iota
	// StateReplicate: the logs match up to Match; the leader streams entries
	// optimistically, bounded by the in-flight window.
	StateReplicate
	// StateSnapshot: the follower needs entries the leader has compacted; a
	// snapshot is on its way and nothing else is sent until it lands.
	StateSnapshot
)

func (s ProgressState) String() string {
	switch s {
	case StateProbe:
		return "Probe"
	case StateReplicate:
		return "Replicate"
	case StateSnapshot:
		return "Snapshot"
	}
	return fmt.Sprintf("ProgressState(%d)", uint8(s))
}

// Progress is the leader's view of one follower (or of itself).
type Progress struct {
	// Match is the highest index known to be on the follower's stable log;
	// Next is the index of the next entry to send.
	Match, Next uint64
	State       ProgressState
	// PendingSnapshot is the index of the snapshot being sent (StateSnapshot).
	PendingSnapshot uint64
	// LastHeard is the leader's tick count when the follower last answered;
	// CheckQuorum steps down once a majority has been silent too long.
	LastHeard uint64
	// probeSent pauses a probing follower after one append until it answers
	// (or a heartbeat response shows it is alive).
	probeSent bool
	// sentCommit is the highest commit index sent to the follower, so an
	// idle follower learns of new commits without being spammed.
	sentCommit uint64
	// matchAtHeartbeat is Match as of the previous heartbeat answer; no
	// progress across a whole heartbeat round while entries are outstanding
	// means an append was lost, and the leader resends from Match.
	matchAtHeartbeat uint64
	inflights        inflights
	learner          bool
	// removedAt is the index of the configuration entry that removed this
	// node; the leader keeps replicating to it until it has that entry and
	// knows it is committed, so the node learns of its removal.
	removedAt uint64
}

func (p *Progress) becomeProbe() {
	if p.State == StateSnapshot {
		p.Next = max(p.Match+1, p.PendingSnapshot+1)
	} else {
		p.Next = p.Match + 1
	}
	p.State = StateProbe
	p.PendingSnapshot = 0
	p.probeSent = false
	p.inflights.reset()
}

func (p *Progress) becomeReplicate() {
	p.State = StateReplicate
	p.Next = p.Match + 1
	p.PendingSnapshot = 0
	p.probeSent = false
	p.inflights.reset()
}

func (p *Progress) becomeSnapshot(index uint64) {
	p.State = StateSnapshot
	p.PendingSnapshot = index
	p.probeSent = false
	p.inflights.reset()
}

// maybeUpdate records that the follower's log matches up to n. It reports
// whether that was news.
func (p *Progress) maybeUpdate(n uint64) bool {
	updated := n > p.Match
	if updated {
		p.Match = n
		p.probeSent = false
	}
	p.Next = max(p.Next, n+1)
	return updated
}

// maybeDecrTo handles a rejection of the append that followed index
// rejected. hint is where the leader should probe next (already adjusted by
// the follower's conflict-term hint). It reports false when the rejection is
// stale and must be ignored.
func (p *Progress) maybeDecrTo(rejected, hint uint64) bool {
	if p.State == StateReplicate {
		if rejected <= p.Match {
			return false
		}
		p.Next = p.Match + 1
		return true
	}
	if p.Next-1 != rejected {
		return false
	}
	p.Next = max(min(rejected, hint+1), p.Match+1)
	p.probeSent = false
	return true
}

// forgetMatch drops what the leader knew of the follower's log, after a
// repair cut it short, and starts probing it again from where it was.
func (p *Progress) forgetMatch() {
	p.Match = 0
	p.State = StateProbe
	p.PendingSnapshot = 0
	p.probeSent = false
	p.inflights.reset()
}

// paused reports whether the leader must hold back appends to this follower.
func (p *Progress) paused() bool {
	switch p.State {
	case StateProbe:
		return p.probeSent
	case StateReplicate:
		return p.inflights.full()
	}
	return true
}

// inflights is a ring buffer of the last index of each append message sent
// but not yet acknowledged, with their sizes, bounding how far the leader
// runs ahead of a follower (in messages and in bytes).
type inflights struct {
	start, count int
	bytes        uint64
	maxBytes     uint64
	index        []uint64
	size         []uint64
}

func newInflights(maxMsgs int, maxBytes uint64) inflights {
	return inflights{index: make([]uint64, maxMsgs), size: make([]uint64, maxMsgs), maxBytes: maxBytes}
}

func (in *inflights) add(index, bytes uint64) {
	pos := (in.start + in.count) % len(in.index)
	in.index[pos] = index
	in.size[pos] = bytes
	in.count++
	in.bytes += bytes
}

// freeLE releases every in-flight message whose last index is ≤ to.
func (in *inflights) freeLE(to uint64) {
	for in.count > 0 && in.index[in.start] <= to {
		in.bytes -= in.size[in.start]
		in.start = (in.start + 1) % len(in.index)
		in.count--
	}
}

func (in *inflights) full() bool {
	return in.count == len(in.index) || (in.maxBytes > 0 && in.bytes >= in.maxBytes)
}

func (in *inflights) reset() { in.start, in.count, in.bytes = 0, 0, 0 }

// tracker holds the progress of every member, and the membership itself.
type tracker struct {
	conf ConfState
	// ids is every member, voters and learners, and on a leader the
	// removed nodes not yet told so, sorted: iteration over it (never over
	// the map) keeps behaviour independent of map order.
	ids      []NodeID
	progress progressSet
	// members is how many of ids are voters or learners; the rest are
	// removed nodes still being told.
	members int
}

// progressSet is the progress of each node a leader replicates to. A
// cluster has a handful of them and the leader looks one up for nearly
// every message it sends or receives: a short list searched in order costs
// less than a map's hashing.
type progressSet struct {
	ids []NodeID
	prs []*Progress
}

// get returns id's progress, nil if it has none.
func (s *progressSet) get(id NodeID) *Progress {
	for i, x := range s.ids {
		if x == id {
			return s.prs[i]
		}
	}
	return nil
}

func (s *progressSet) set(id NodeID, pr *Progress) {
	if i := slices.Index(s.ids, id); i >= 0 {
		s.prs[i] = pr
		return
	}
	s.ids = append(s.ids, id)
	s.prs = append(s.prs, pr)
}

func (s *progressSet) remove(id NodeID) {
	if i := slices.Index(s.ids, id); i >= 0 {
		s.ids = slices.Delete(s.ids, i, i+1)
		s.prs = slices.Delete(s.prs, i, i+1)
	}
}

func newTracker(conf ConfState) *tracker {
	t := &tracker{conf: conf}
	t.ids = append(append([]NodeID(nil), conf.Voters...), conf.Learners...)
	slices.Sort(t.ids)
	t.ids = slices.Compact(t.ids)
	t.members = len(t.ids)
	return t
}

func (t *tracker) isVoter(id NodeID) bool {
	_, found := slices.BinarySearch(t.conf.Voters, id)
	return found
}

func (t *tracker) isMember(id NodeID) bool {
	_, learner := slices.BinarySearch(t.conf.Learners, id)
	return learner || t.isVoter(id)
}

// dropInformed forgets removed nodes that have been sent the commit of
// their own removal, which they had already stored.
func (t *tracker) dropInformed() {
	if len(t.ids) == t.members {
		return // nobody removed: the usual case, and the leader calls this at every Ready
	}
	t.ids = slices.DeleteFunc(t.ids, func(id NodeID) bool {
		pr := t.progress.get(id)
		if pr == nil || pr.removedAt == 0 || pr.Match < pr.removedAt || pr.sentCommit < pr.removedAt {
			return false
		}
		t.progress.remove(id)
		return true
	})
}

// committedIndex is the highest index stored on a majority of voters.
func (t *tracker) committedIndex() uint64 {
	n := len(t.conf.Voters)
	if n == 0 {
		return 0
	}
	matches := make([]uint64, 0, 8)
	for _, id := range t.conf.Voters {
		if pr := t.progress.get(id); pr != nil {
			matches = append(matches, pr.Match)
		} else {
			matches = append(matches, 0)
		}
	}
	slices.Sort(matches)
	// With matches sorted ascending, the value at n-quorum is held by at
	// least quorum voters.
	return matches[n-quorum(n)]
}

// quorumActive reports whether a majority of voters (counting self) has
// been heard from within the last window ticks.
func (t *tracker) quorumActive(self NodeID, now, window uint64) bool {
	n := 0
	for _, id := range t.conf.Voters {
		if pr := t.progress.get(id); id == self || (pr != nil && now-pr.LastHeard < window) {
			n++
		}
	}
	return n >= quorum(len(t.conf.Voters))
}

func quorum(voters int) int { return voters/2 + 1 }

// voteResult tallies votes: won once a majority granted, lost once a
// majority can no longer be reached.
type voteResult uint8

const (
	votePending voteResult = iota
	voteWon
	voteLost
)

// hasQuorum reports whether ids, each listed once, include a quorum of
// the voters.
func (t *tracker) hasQuorum(ids []NodeID) bool {
	n := 0
	for _, id := range t.conf.Voters {
		if slices.Contains(ids, id) {
			n++
		}
	}
	return n >= quorum(len(t.conf.Voters))
}

func (t *tracker) tally(votes map[NodeID]bool) voteResult {
	granted, rejected := 0, 0
	for _, id := range t.conf.Voters {
		v, ok := votes[id]
		switch {
		case !ok:
		case v:
			granted++
		default:
			rejected++
		}
	}
	q := quorum(len(t.conf.Voters))
	switch {
	case granted >= q:
		return voteWon
	case rejected > len(t.conf.Voters)-q:
		return voteLost
	}
	return votePending
}
