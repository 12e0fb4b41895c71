package core

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func ents(terms ...uint64) []Entry {
	out := make([]Entry, len(terms))
	for i, t := range terms {
		out[i] = Entry{Index: uint64(i + 1), Term: t, Data: []byte(fmt.Sprintf("e%d", i+1))}
	}
	return out
}

// newTestNode builds a node of a cluster of peers whose log holds entries
// with the given terms, at the given term.
func newTestNode(t *testing.T, id NodeID, peers []NodeID, term uint64, logTerms ...uint64) *Node {
	t.Helper()
	st := PersistentState{
		HardState: HardState{Term: term},
		Snapshot:  &SnapshotMeta{Conf: ConfState{Voters: peers}},
		Entries:   ents(logTerms...),
	}
	n, err := NewNode(Config{ID: id, ElectionTick: 10, HeartbeatTick: 1, Seed: 1}, st)
	require.NoError(t, err)
	return n
}

func peers(n int) []NodeID {
	out := make([]NodeID, n)
	for i := range out {
		out[i] = NodeID(i + 1)
	}
	return out
}

// drain collects every message the node has queued, persisting nothing.
func drain(n *Node) []Message {
	rd := n.Ready()
	out := append(rd.Messages, rd.MessagesAfterPersist...)
	n.Advance(rd)
	return out
}

func only(t *testing.T, ms []Message, typ MessageType) []Message {
	t.Helper()
	var out []Message
	for _, m := range ms {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

func makeLeader(t *testing.T, n *Node) {
	t.Helper()
	n.r.becomeCandidate()
	n.r.becomeLeader()
	drain(n)
}

// Figure 2, AppendEntries 1: reply false if term < currentTerm, and tell
// the stale leader the current term.
func TestAppendRejectsStaleTerm(t *testing.T) {
	n := newTestNode(t, 2, peers(3), 5, 1, 1)
	require.NoError(t, n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 4, Index: 2, LogTerm: 1,
		Entries: []Entry{{Index: 3, Term: 4}}}))
	require.Equal(t, uint64(2), n.Status().LastIndex, "stale append must not change the log")
	resps := only(t, drain(n), MsgAppResp)
	require.Len(t, resps, 1)
	require.Equal(t, uint64(5), resps[0].Term)
}

// Figure 2, AppendEntries 2: reply false if the log has no entry at
// prevLogIndex with prevLogTerm; the reply carries a conflict hint.
func TestAppendRejectsMismatchWithHint(t *testing.T) {
	n := newTestNode(t, 2, peers(3), 3, 1, 1, 2, 2, 2)
	require.NoError(t, n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 3, Index: 5, LogTerm: 3}))
	resps := only(t, drain(n), MsgAppResp)
	require.Len(t, resps, 1)
	m := resps[0]
	require.True(t, m.Reject)
	require.Equal(t, uint64(5), m.Index)
	// The last entry with term ≤ 3 is index 5 (term 2): the leader can jump
	// straight past all of term 2 if it has none of it.
	require.Equal(t, uint64(5), m.RejectHint)
	require.Equal(t, uint64(2), m.LogTerm)

	// Probe beyond the end: the hint points at our last entry.
	require.NoError(t, n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 3, Index: 9, LogTerm: 3}))
	m = only(t, drain(n), MsgAppResp)[0]
	require.True(t, m.Reject)
	require.Equal(t, uint64(5), m.RejectHint)
}

// Figure 2, AppendEntries 3 and 4: a conflicting entry and all that follow
// it are deleted; new entries are appended; entries already present stay.
func TestAppendTruncatesConflicts(t *testing.T) {
	n := newTestNode(t, 2, peers(3), 3, 1, 2, 2, 2)
	require.NoError(t, n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 3, Index: 1, LogTerm: 1,
		Entries: []Entry{{Index: 2, Term: 2, Data: []byte("e2")}, {Index: 3, Term: 3, Data: []byte("x")}}}))
	es, err := n.Entries(1, n.Status().LastIndex+1)
	require.NoError(t, err)
	require.Len(t, es, 3)
	require.Equal(t, uint64(3), es[2].Term)
	require.Equal(t, []byte("x"), es[2].Data)
	rd := n.Ready()
	require.Len(t, rd.Entries, 1, "only the replaced suffix is handed out for persisting")
	require.Equal(t, uint64(3), rd.Entries[0].Index)
	require.True(t, rd.MustSync)
	n.Advance(rd)

	// Re-delivering the same (older) message changes nothing.
	require.NoError(t, n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 3, Index: 1, LogTerm: 1,
		Entries: []Entry{{Index: 2, Term: 2, Data: []byte("e2")}}}))
	require.Equal(t, uint64(3), n.Status().LastIndex)
}

// Figure 2, AppendEntries 5: commit = min(leaderCommit, last new entry).
func TestAppendCommitIsBoundedByNewEntries(t *testing.T) {
	n := newTestNode(t, 2, peers(3), 3, 1, 1, 1, 1)
	require.NoError(t, n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 3, Index: 1, LogTerm: 1,
		Entries: []Entry{{Index: 2, Term: 1, Data: []byte("e2")}}, Commit: 4}))
	require.Equal(t, uint64(2), n.Status().HardState.Commit)
}

// An append behind the follower's commit index cannot change committed
// entries: the follower answers with its commit index instead.
func TestAppendNeverOverwritesCommitted(t *testing.T) {
	n := newTestNode(t, 2, peers(3), 3, 1, 1, 1)
	require.NoError(t, n.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 3, Commit: 3}))
	require.Equal(t, uint64(3), n.Status().HardState.Commit)
	drain(n)
	require.NoError(t, n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 3, Index: 1, LogTerm: 1,
		Entries: []Entry{{Index: 2, Term: 2}}}))
	tm, err := n.Term(2)
	require.NoError(t, err)
	require.Equal(t, uint64(1), tm)
	resp := only(t, drain(n), MsgAppResp)
	require.Len(t, resp, 1)
	require.False(t, resp[0].Reject)
	require.Equal(t, uint64(3), resp[0].Index)
}

// Figure 2, RequestVote: deny a stale term, deny a candidate whose log is
// behind, grant at most one candidate per term.
func TestVoteRules(t *testing.T) {
	for _, tc := range []struct {
		name          string
		logTerms      []uint64
		index, lterm  uint64
		grant         bool
		existingVote  NodeID
		candidateTerm uint64
	}{
		{"up-to-date longer log", []uint64{1, 1}, 3, 1, true, None, 2},
		{"same log", []uint64{1, 1}, 2, 1, true, None, 2},
		{"shorter log same term", []uint64{1, 1}, 1, 1, false, None, 2},
		{"higher last term wins even if shorter", []uint64{1, 1, 1}, 1, 2, true, None, 3},
		{"lower last term", []uint64{1, 2}, 5, 1, false, None, 3},
		{"already voted for another", []uint64{1}, 1, 1, false, 3, 2},
		{"already voted for this candidate", []uint64{1}, 1, 1, true, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, 1, peers(3), 2, tc.logTerms...)
			n.r.vote = tc.existingVote
			require.NoError(t, n.Step(Message{Type: MsgVote, From: 2, To: 1, Term: tc.candidateTerm, Index: tc.index, LogTerm: tc.lterm}))
			rd := n.Ready()
			require.Empty(t, only(t, rd.Messages, MsgVoteResp), "vote replies wait for persistence")
			resps := only(t, rd.MessagesAfterPersist, MsgVoteResp)
			require.Len(t, resps, 1)
			require.Equal(t, !tc.grant, resps[0].Reject)
			if tc.grant {
				require.Equal(t, NodeID(2), rd.HardState.Vote)
				require.True(t, rd.MustSync)
			}
		})
	}
	t.Run("stale term", func(t *testing.T) {
		n := newTestNode(t, 1, peers(3), 5, 1)
		require.NoError(t, n.Step(Message{Type: MsgVote, From: 2, To: 1, Term: 4, Index: 9, LogTerm: 4}))
		require.Empty(t, only(t, drain(n), MsgVoteResp))
		require.Equal(t, None, n.Status().HardState.Vote)
	})
}

// All servers: a higher term in any message makes a node adopt it and
// become a follower; a leader steps down.
func TestHigherTermStepsLeaderDown(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	makeLeader(t, n)
	require.Equal(t, Leader, n.Status().Role)
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 7}))
	s := n.Status()
	require.Equal(t, Follower, s.Role)
	require.Equal(t, uint64(7), s.HardState.Term)
	require.Equal(t, None, s.HardState.Vote)
}

// Candidates: increment the term, vote for self, ask every voter, and
// become leader on a majority.
func TestCandidateWinsWithMajority(t *testing.T) {
	n := newTestNode(t, 1, peers(5), 1, 1)
	n.r.cfg.DisablePreVote = true
	for i := 0; i < 20 && n.Status().Role != Candidate; i++ {
		n.Tick()
	}
	s := n.Status()
	require.Equal(t, Candidate, s.Role)
	require.Equal(t, uint64(2), s.HardState.Term)
	require.Equal(t, NodeID(1), s.HardState.Vote)
	rd := n.Ready()
	require.True(t, rd.MustSync)
	require.Empty(t, only(t, rd.Messages, MsgVote), "vote requests wait until the self-vote is durable")
	require.Len(t, only(t, rd.MessagesAfterPersist, MsgVote), 4)
	n.Advance(rd)
	require.NoError(t, n.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: 2}))
	require.Equal(t, Candidate, n.Status().Role, "two of five is not a majority")
	require.NoError(t, n.Step(Message{Type: MsgVoteResp, From: 3, To: 1, Term: 2, Reject: true}))
	require.NoError(t, n.Step(Message{Type: MsgVoteResp, From: 4, To: 1, Term: 2}))
	require.Equal(t, Leader, n.Status().Role)
	// A new leader appends an empty entry of its own term.
	last := n.Status().LastIndex
	tm, _ := n.Term(last)
	require.Equal(t, uint64(2), tm)
}

// Half of an even number of voters is not a majority: a leader of 2, 4 or
// 6 voters commits an entry only once 2, 3 or 4 of them (itself included)
// store it.
func TestEvenVoterSetsCommitOnlyWithTrueMajority(t *testing.T) {
	for _, size := range []int{2, 4, 6} {
		t.Run(fmt.Sprintf("%d voters", size), func(t *testing.T) {
			n := newTestNode(t, 1, peers(size), 1, 1)
			makeLeader(t, n)
			const index = 2 // the new leader's entry, durable on the leader
			majority := size/2 + 1
			for stored := 1; stored <= size; stored++ {
				if stored > 1 {
					require.NoError(t, n.Step(Message{Type: MsgAppResp, From: NodeID(stored), To: 1, Term: 2, Index: index}))
				}
				commit := n.HardState().Commit
				if stored < majority {
					require.Zero(t, commit, "committed with %d of %d voters", stored, size)
				} else {
					require.Equal(t, uint64(index), commit, "not committed with %d of %d voters", stored, size)
				}
			}
		})
	}
}

// Likewise a candidate with the votes of exactly half of an even number of
// voters, its own included, has not won.
func TestEvenVoterSetsElectOnlyWithTrueMajority(t *testing.T) {
	for _, size := range []int{2, 4, 6} {
		t.Run(fmt.Sprintf("%d voters", size), func(t *testing.T) {
			n := newTestNode(t, 1, peers(size), 1, 1)
			n.r.cfg.DisablePreVote = true
			n.r.campaign(false, false)
			for from := 2; from <= size/2+1; from++ {
				require.Equal(t, Candidate, n.Status().Role, "won with %d of %d votes", from-1, size)
				require.NoError(t, n.Step(Message{Type: MsgVoteResp, From: NodeID(from), To: 1, Term: 2}))
			}
			require.Equal(t, Leader, n.Status().Role)
		})
	}
}

// A 4-voter cluster split 2|2 commits nothing on either side; healed, it
// commits again.
func TestFourVotersSplitInHalvesCommitNothing(t *testing.T) {
	c, err := newCluster(4, 3, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	partner := c.ids[slices.IndexFunc(c.ids, func(id NodeID) bool { return id != lead })]
	for _, a := range []NodeID{lead, partner} {
		for _, b := range c.ids {
			if b != lead && b != partner {
				c.setCut(a, b, true)
				c.setCut(b, a, true)
			}
		}
	}
	before := c.node(lead).HardState().Commit
	i, _, err := c.node(lead).Propose([]byte("half"))
	require.NoError(t, err)
	for k := 0; k < 30; k++ {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(1000))
	}
	for _, id := range c.ids {
		require.LessOrEqual(t, c.node(id).HardState().Commit, before, "node %d: committed without a majority", id)
	}
	c.heal()
	require.NoError(t, c.stabilize(100, func() bool {
		l := c.leader()
		if l != None && c.node(l).HardState().Commit < i {
			_, _, _ = c.node(l).Propose([]byte("healed"))
		}
		return l != None && c.node(l).HardState().Commit > i
	}))
}

func TestCandidateLosesAndStepsDown(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	n.r.cfg.DisablePreVote = true
	n.r.campaign(false, false)
	require.NoError(t, n.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: 2, Reject: true}))
	require.NoError(t, n.Step(Message{Type: MsgVoteResp, From: 3, To: 1, Term: 2, Reject: true}))
	require.Equal(t, Follower, n.Status().Role)
}

func TestCandidateYieldsToLeaderOfSameTerm(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	n.r.campaign(false, false)
	require.NoError(t, n.Step(Message{Type: MsgApp, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1}))
	s := n.Status()
	require.Equal(t, Follower, s.Role)
	require.Equal(t, NodeID(2), s.Lead)
}

// Figure 8: a leader must not commit an entry of an earlier term by
// counting replicas; it commits it only together with one of its own term.
func TestFigure8NoCommitOfOlderTermByCounting(t *testing.T) {
	n := newTestNode(t, 1, peers(5), 3, 1, 2)
	makeLeader(t, n) // term 4, appends index 3
	require.Equal(t, uint64(4), n.Status().HardState.Term)
	// Index 2 (term 2) reaches a majority: self, 2, 3.
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 2}))
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: 4, Index: 2}))
	require.Equal(t, uint64(0), n.Status().HardState.Commit, "an entry of term 2 must not commit by counting in term 4")
	// Once the term-4 entry is on a majority, everything up to it commits.
	rd := n.Ready()
	n.Advance(rd) // the leader's own entry is now durable
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 3}))
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: 4, Index: 3}))
	require.Equal(t, uint64(3), n.Status().HardState.Commit)
}

// Figure 8 played out in a cluster: an old-term entry reaches a majority
// under a new leader, yet is not committed until an entry of the leader's
// own term is on a majority too; and the checker sees no violation as the
// cluster later converges.
func TestFigure8Scenario(t *testing.T) {
	c, err := newCluster(5, 8, func(cfg *Config) {
		cfg.DisablePreVote = true
		cfg.DisableCheckQuorum = true
		cfg.MaxMsgBytes = 1 // one entry per append, so replication is step by step
	})
	require.NoError(t, err)
	// winElection runs an election for id and cuts id off the moment it
	// wins, before it can replicate anything.
	winElection := func(id NodeID, thenIsolate bool) {
		for attempt := 0; c.node(id).Status().Role != Leader; attempt++ {
			// A term already voted in is lost; the next one can be won.
			require.Less(t, attempt, 3, "node %d did not win", id)
			c.node(id).r.campaign(false, false)
			for c.node(id).Status().Role != Leader {
				require.NoError(t, c.ready())
				if len(c.queue) == 0 {
					break
				}
				require.NoError(t, c.deliver(0))
			}
		}
		if thenIsolate {
			c.isolate(id)
		}
	}
	onlyLink := func(ids ...NodeID) {
		c.heal()
		for _, a := range c.ids {
			for _, b := range c.ids {
				c.setCut(a, b, !slices.Contains(ids, a) || !slices.Contains(ids, b))
			}
		}
	}
	winElection(1, false)
	require.NoError(t, c.deliverAll(10000))
	// (a) S1 leads and writes an entry nobody else gets.
	onlyLink(1)
	_, _, err = c.node(1).Propose([]byte("a"))
	require.NoError(t, err)
	require.NoError(t, c.deliverAll(10000))
	// (b) S5 wins with S3 and S4, writes an entry, and is cut off at once.
	onlyLink(3, 4, 5)
	winElection(5, true)
	_, _, err = c.node(5).Propose([]byte("b"))
	require.NoError(t, err)
	require.NoError(t, c.deliverAll(10000))
	// (c) S1 wins with S2 and S3 and brings them up to its old entry, but
	// appends carrying its new term's entry are cut short in flight: the
	// old entry is on a majority (S1, S2, S3), the new one is not.
	c.crash(1) // S1 still thinks it leads: restart it, as in the paper
	require.NoError(t, c.restart(1))
	onlyLink(1, 2, 3)
	winElection(1, false)
	l := c.node(1)
	term := l.Status().HardState.Term
	c.rewrite = func(m *Message) {
		if m.Type != MsgApp {
			return
		}
		for i, e := range m.Entries {
			if e.Term == term {
				m.Entries = m.Entries[:i]
				return
			}
		}
	}
	commitBefore := l.Status().HardState.Commit
	for {
		require.NoError(t, c.ready())
		if len(c.queue) == 0 {
			break
		}
		require.NoError(t, c.deliver(0))
		st := l.Status()
		if st.HardState.Commit == commitBefore {
			continue
		}
		// Whatever S1 commits now must be an entry of its own term.
		tm, err := l.Term(st.HardState.Commit)
		require.NoError(t, err)
		require.Equal(t, term, tm, "commit index %d has term %d: committed by counting an old entry", st.HardState.Commit, tm)
	}
	for _, id := range []NodeID{2, 3} {
		tm, err := c.node(id).Term(2)
		require.NoError(t, err)
		require.Equal(t, uint64(1), tm, "S%d holds S1's old entry", id)
	}
	require.Equal(t, commitBefore, l.Status().HardState.Commit, "the old entry is on a majority but must not commit")
	c.rewrite = nil
	// (d) Everyone reconnects; the cluster converges and agrees.
	c.heal()
	require.NoError(t, c.stabilize(200, func() bool { return c.leader() != None }))
	idx, _, err := c.propose("c")
	require.NoError(t, err)
	require.NoError(t, c.stabilize(200, func() bool { return c.committedEverywhere(idx) }))
}

func TestProposalOnFollowerNamesLeader(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	other := NodeID(1)
	if lead == 1 {
		other = 2
	}
	_, _, err = c.node(other).Propose([]byte("x"))
	var nl *ErrNotLeader
	require.ErrorAs(t, err, &nl)
	require.Equal(t, lead, nl.Leader)
}

func TestReplicationAndCommit(t *testing.T) {
	c, err := newCluster(3, 2, nil)
	require.NoError(t, err)
	_, err = c.electLeader()
	require.NoError(t, err)
	var last uint64
	for i := 0; i < 50; i++ {
		last, _, err = c.propose(fmt.Sprintf("v%d", i))
		require.NoError(t, err)
	}
	require.NoError(t, c.stabilize(50, func() bool { return c.committedEverywhere(last) }))
	for _, id := range c.ids {
		require.Equal(t, uint64(50), c.nodes[id].sm.count)
	}
}

func TestSingleNodeCommits(t *testing.T) {
	c, err := newCluster(1, 3, nil)
	require.NoError(t, err)
	_, err = c.electLeader()
	require.NoError(t, err)
	idx, _, err := c.propose("solo")
	require.NoError(t, err)
	require.NoError(t, c.stabilize(5, func() bool { return c.committedEverywhere(idx) }))
}

// PreVote: a node cut off from the cluster keeps failing pre-votes without
// raising its term, so rejoining does not depose the leader.
func TestPreVoteKeepsRejoiningNodeFromDisrupting(t *testing.T) {
	c, err := newCluster(3, 4, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	term := c.node(lead).Status().HardState.Term
	victim := NodeID(1)
	if lead == 1 {
		victim = 2
	}
	c.isolate(victim)
	for i := 0; i < 100; i++ {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(10000))
	}
	require.Equal(t, term, c.node(victim).Status().HardState.Term, "pre-votes must not raise the term")
	c.heal()
	for i := 0; i < 50; i++ {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(10000))
	}
	require.Equal(t, lead, c.leader())
	require.Equal(t, term, c.node(lead).Status().HardState.Term)
}

// Without PreVote the same partition does raise the term: the test above
// can fail.
func TestWithoutPreVoteRejoiningNodeDisrupts(t *testing.T) {
	c, err := newCluster(3, 4, func(cfg *Config) { cfg.DisablePreVote = true; cfg.DisableCheckQuorum = true })
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	term := c.node(lead).Status().HardState.Term
	victim := NodeID(1)
	if lead == 1 {
		victim = 2
	}
	c.isolate(victim)
	for i := 0; i < 100; i++ {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(10000))
	}
	require.Greater(t, c.node(victim).Status().HardState.Term, term)
}

// CheckQuorum: a leader that hears from no majority steps down within an
// election timeout.
func TestCheckQuorumStepsDownIsolatedLeader(t *testing.T) {
	c, err := newCluster(3, 5, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	c.isolate(lead)
	for i := 0; i < 10; i++ { // ElectionTick
		require.NoError(t, c.tick(lead))
		require.NoError(t, c.deliverAll(1000))
	}
	require.NotEqual(t, Leader, c.node(lead).Status().Role)
}

func TestCheckQuorumKeepsConnectedLeader(t *testing.T) {
	c, err := newCluster(3, 5, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	for i := 0; i < 100; i++ {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(1000))
	}
	require.Equal(t, lead, c.leader())
}

// ReadIndex on the leader needs a heartbeat round; the read is released at
// the commit index the leader had when the request arrived.
func TestReadIndexOnLeader(t *testing.T) {
	c, err := newCluster(3, 6, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	idx, _, err := c.propose("w")
	require.NoError(t, err)
	require.NoError(t, c.stabilize(20, func() bool { return c.committedEverywhere(idx) }))
	require.NoError(t, c.node(lead).ReadIndex([]byte("r1")))
	require.NoError(t, c.readyNode(lead))
	require.Empty(t, c.nodes[lead].reads, "no read before a quorum confirms leadership")
	require.NoError(t, c.deliverAll(1000))
	reads := c.nodes[lead].reads
	require.Len(t, reads, 1)
	require.Equal(t, []byte("r1"), reads[0].Context)
	require.Equal(t, idx, reads[0].Index)
}

// A heartbeat round vouches only for the reads that had arrived when it
// was sent: the leader may have been deposed after sending it, so a read
// that arrives later is released by the next round, never by the acks of
// one already on its way.
func TestReadArrivingAfterRoundWaitsForNextRound(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	makeLeader(t, n)
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 2, Index: 2}))
	drain(n)
	require.Equal(t, uint64(2), n.HardState().Commit)

	require.NoError(t, n.ReadIndex([]byte("before")))
	first := only(t, drain(n), MsgHeartbeat)
	require.Len(t, first, 2)
	require.NoError(t, n.ReadIndex([]byte("after")))
	ack := func(from NodeID, round Message) {
		require.NoError(t, n.Step(Message{Type: MsgHeartbeatResp, From: from, To: 1, Term: 2, Context: round.Context}))
	}

	// A majority answers the first round: only the earlier read goes.
	ack(2, first[0])
	rd := n.Ready()
	require.Equal(t, []ReadState{{Index: 2, Context: []byte("before")}}, rd.ReadStates)
	second := only(t, rd.Messages, MsgHeartbeat)
	require.Len(t, second, 2, "the later read gets a round of its own")
	require.NotEqual(t, first[0].Context, second[0].Context)
	n.Advance(rd)

	// The rest of the first round changes nothing for the later read.
	ack(3, first[1])
	require.Empty(t, n.Ready().ReadStates)
	ack(3, second[1])
	require.Equal(t, []ReadState{{Index: 2, Context: []byte("after")}}, n.Ready().ReadStates)
}

// Contexts are the askers' own, and two members can ask with the same
// one (each numbers its requests from 1). A read that arrives after a
// round was sent, with the context of the read that round was for, is
// still not released by that round's acks: rounds are the leader's.
func TestRoundIsNotTakenForALaterReadWithTheSameContext(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	makeLeader(t, n)
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 2, Index: 2}))
	drain(n)

	require.NoError(t, n.ReadIndex([]byte{0, 0, 0, 0, 0, 0, 0, 7}))
	first := only(t, drain(n), MsgHeartbeat)
	require.NoError(t, n.Step(Message{Type: MsgReadIndex, From: 3, To: 1, Term: 2, Context: []byte{0, 0, 0, 0, 0, 0, 0, 7}}))
	ack := func(from NodeID, round Message) {
		require.NoError(t, n.Step(Message{Type: MsgHeartbeatResp, From: from, To: 1, Term: 2, Context: round.Context}))
	}

	ack(2, first[0])
	rd := n.Ready()
	require.Len(t, rd.ReadStates, 1, "only the leader's own read was confirmed by the first round")
	require.Empty(t, only(t, rd.Messages, MsgReadIndexResp), "node 3's read arrived after the first round was sent")
	second := only(t, rd.Messages, MsgHeartbeat)
	require.Len(t, second, 2)
	n.Advance(rd)

	ack(2, second[0])
	resp := only(t, drain(n), MsgReadIndexResp)
	require.Len(t, resp, 1)
	require.Equal(t, NodeID(3), resp[0].To)
}

// Reads waiting on rounds are released in the order they arrived, a
// follower answering the same round twice counts once, and a read asked
// after others were released waits for a quorum of its own.
func TestReadsReleasedInOrderAndAckedOncePerNode(t *testing.T) {
	n := newTestNode(t, 1, peers(5), 1, 1)
	makeLeader(t, n)
	for _, from := range []NodeID{2, 3} {
		require.NoError(t, n.Step(Message{Type: MsgAppResp, From: from, To: 1, Term: 2, Index: 2}))
	}
	drain(n)
	require.Equal(t, uint64(2), n.HardState().Commit)
	round := map[string][]byte{} // each read's heartbeat round
	ask := func(ctx string) {
		require.NoError(t, n.ReadIndex([]byte(ctx)))
		hb := only(t, drain(n), MsgHeartbeat)
		require.NotEmpty(t, hb)
		round[ctx] = hb[0].Context
	}
	ack := func(from NodeID, ctx string) {
		require.NoError(t, n.Step(Message{Type: MsgHeartbeatResp, From: from, To: 1, Term: 2, Context: round[ctx]}))
	}
	for _, ctx := range []string{"a", "b", "c"} {
		ask(ctx)
	}

	ack(2, "b")
	ack(2, "b")
	require.Empty(t, n.Ready().ReadStates, "one follower's two answers are not a quorum of five")
	ack(3, "b")
	rd := n.Ready()
	require.Equal(t, []ReadState{{Index: 2, Context: []byte("a")}, {Index: 2, Context: []byte("b")}}, rd.ReadStates)
	n.Advance(rd)

	ask("d")
	ack(4, "d")
	require.Empty(t, n.Ready().ReadStates, "acks for c do not count for d")
	ack(4, "c")
	ack(5, "c")
	rd = n.Ready()
	require.Equal(t, []ReadState{{Index: 2, Context: []byte("c")}}, rd.ReadStates)
	n.Advance(rd)
	ack(5, "d")
	require.Equal(t, []ReadState{{Index: 2, Context: []byte("d")}}, n.Ready().ReadStates)
}

// The same rule seen from a client: a leader that is deposed while a round
// is on its way, and then asked for a read, must not release that read on
// the round's late acks, at its stale commit index, missing a write the new
// leader committed before the read was asked.
func TestStaleRoundDoesNotReleaseReadOnDeposedLeader(t *testing.T) {
	c, err := newCluster(3, 6, nil)
	require.NoError(t, err)
	old, err := c.electLeader()
	require.NoError(t, err)
	require.NoError(t, c.node(old).ReadIndex([]byte("before")))
	require.NoError(t, c.readyNode(old))
	// The followers answer the round; the answers are held on the way back.
	for k := 0; k < len(c.queue); {
		if c.queue[k].To == old {
			k++
			continue
		}
		require.NoError(t, c.deliver(k))
		require.NoError(t, c.ready())
	}
	var acks []Message
	c.queue = slices.DeleteFunc(c.queue, func(m Message) bool {
		if m.Type == MsgHeartbeatResp && m.To == old {
			acks = append(acks, m)
			return true
		}
		return false
	})
	require.Len(t, acks, 2)

	// The others elect a new leader and commit a write, ticking only
	// themselves: the old leader, cut off, still thinks it leads.
	c.isolate(old)
	var fresh NodeID
	for i := 0; i < 100 && fresh == None; i++ {
		for _, id := range c.ids {
			if id != old {
				require.NoError(t, c.tick(id))
			}
		}
		require.NoError(t, c.deliverAll(1000))
		if l := c.leader(); l != old {
			fresh = l
		}
	}
	require.NotEqual(t, None, fresh)
	w, _, err := c.node(fresh).Propose([]byte("w"))
	require.NoError(t, err)
	require.NoError(t, c.deliverAll(1000))
	require.GreaterOrEqual(t, c.node(fresh).HardState().Commit, w)
	require.Equal(t, Leader, c.node(old).Status().Role)

	// Now the old leader is asked for a read, and the late acks arrive.
	require.NoError(t, c.node(old).ReadIndex([]byte("after")))
	require.NoError(t, c.readyNode(old))
	c.heal()
	c.queue = nil
	for _, m := range acks {
		require.NoError(t, c.deliverMsg(m))
	}
	require.NoError(t, c.readyNode(old))
	var served []string
	for _, rs := range c.nodes[old].reads {
		served = append(served, string(rs.Context))
		if string(rs.Context) == "after" {
			require.GreaterOrEqual(t, rs.Index, w, "read asked after %d was committed released at %d", w, rs.Index)
		}
	}
	require.Equal(t, []string{"before"}, served)
}

// A leader that has lost its quorum must never answer a read.
func TestReadIndexIsolatedLeaderNeverAnswers(t *testing.T) {
	c, err := newCluster(3, 6, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	c.isolate(lead)
	require.NoError(t, c.node(lead).ReadIndex([]byte("r")))
	for i := 0; i < 30; i++ {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(1000))
	}
	require.Empty(t, c.nodes[lead].reads)
}

// A follower forwards ReadIndex to the leader and gets the answer back.
func TestReadIndexForwardedFromFollower(t *testing.T) {
	c, err := newCluster(3, 7, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	f := NodeID(1)
	if lead == 1 {
		f = 2
	}
	require.NoError(t, c.node(f).ReadIndex([]byte("fr")))
	require.NoError(t, c.deliverAll(1000))
	reads := c.nodes[f].reads
	require.Len(t, reads, 1)
	require.Equal(t, c.node(lead).Status().HardState.Commit, reads[0].Index)
}

// A new leader holds reads until an entry of its term commits.
func TestReadIndexWaitsForCommitInTerm(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1, 1)
	makeLeader(t, n)
	require.NoError(t, n.ReadIndex([]byte("early")))
	rd := n.Ready()
	require.Empty(t, rd.ReadStates)
	require.Empty(t, only(t, rd.Messages, MsgHeartbeat), "no read round before commit in term")
	n.Advance(rd)
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 2, Index: 3}))
	hb := only(t, drain(n), MsgHeartbeat)
	require.NotEmpty(t, hb, "the read's round once an entry of the term commits")
	require.NoError(t, n.Step(Message{Type: MsgHeartbeatResp, From: 2, To: 1, Term: 2, Context: hb[0].Context}))
	rd = n.Ready()
	require.Len(t, rd.ReadStates, 1)
	require.Equal(t, uint64(3), rd.ReadStates[0].Index)
}

func TestReadIndexWithoutLeaderIsRefused(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	var nl *ErrNotLeader
	require.ErrorAs(t, n.ReadIndex([]byte("x")), &nl)
}

func TestLeaseReadAnswersWithoutRound(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	n.r.cfg.LeaseRead = true
	makeLeader(t, n)
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 2, Index: 2}))
	rd := n.Ready()
	n.Advance(rd)
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 2, Index: 2}))
	require.NoError(t, n.ReadIndex([]byte("lease")))
	rd = n.Ready()
	require.Len(t, rd.ReadStates, 1)
}

func TestLeadershipTransfer(t *testing.T) {
	c, err := newCluster(3, 9, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	target := NodeID(1)
	if lead == 1 {
		target = 3
	}
	c.isolate(target)
	idx, _, err := c.propose("behind")
	require.NoError(t, err)
	require.NoError(t, c.deliverAll(1000))
	c.heal()
	require.NoError(t, c.node(lead).TransferLeadership(target))
	_, _, err = c.node(lead).Propose([]byte("refused"))
	require.ErrorIs(t, err, ErrTransferring)
	require.NoError(t, c.stabilize(5, func() bool { return c.leader() == target }))
	require.GreaterOrEqual(t, c.node(target).Status().LastIndex, idx, "the target was caught up first")
}

func TestLeadershipTransferGivesUpAfterElectionTimeout(t *testing.T) {
	c, err := newCluster(3, 9, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	target := NodeID(1)
	if lead == 1 {
		target = 3
	}
	c.crash(target)
	require.NoError(t, c.node(lead).TransferLeadership(target))
	for i := 0; i < 10; i++ {
		require.NoError(t, c.tick(lead))
		require.NoError(t, c.deliverAll(1000))
	}
	require.Equal(t, lead, c.leader())
	_, _, err = c.node(lead).Propose([]byte("ok again"))
	require.NoError(t, err)
}

func TestTransferToNonMemberRefused(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	makeLeader(t, n)
	require.ErrorIs(t, n.TransferLeadership(9), ErrUnknownPeer)
}

// leaveBehind elects a leader of c and cuts a follower off while the
// leader commits 20 entries; before that it calls prepare, if set. It
// returns the leader, the follower left behind and the last index.
func leaveBehind(t *testing.T, c *cluster, prepare func(lead NodeID)) (NodeID, NodeID, uint64) {
	t.Helper()
	lead, err := c.electLeader()
	require.NoError(t, err)
	lag := NodeID(1)
	if lead == 1 {
		lag = 2
	}
	if prepare != nil {
		prepare(lead)
	}
	c.isolate(lag)
	var idx uint64
	for i := 0; i < 20; i++ {
		idx, _, err = c.propose(fmt.Sprintf("s%d", i))
		require.NoError(t, err)
	}
	return lead, lag, idx
}

// A follower that needs compacted entries gets a snapshot and catches up.
func TestSnapshotInstallCatchesUpFollower(t *testing.T) {
	c, err := newCluster(3, 10, nil)
	require.NoError(t, err)
	lead, lag, idx := leaveBehind(t, c, nil)
	require.NoError(t, c.deliverAll(10000))
	require.NoError(t, c.snapshot(lead))
	require.Greater(t, c.node(lead).Status().FirstIndex, uint64(2))
	c.heal()
	var sawSnap bool
	c.trace = func(id NodeID, rd Ready) {
		if id == lag && rd.Snapshot != nil && rd.Snapshot.Index > 0 {
			sawSnap = true
		}
	}
	require.NoError(t, c.stabilize(50, func() bool { return c.committedEverywhere(idx) }))
	require.True(t, sawSnap, "the lagging follower was brought up by a snapshot")
	require.Equal(t, c.nodes[lead].sm, c.nodes[lag].sm)
}

// A leader that cut its log in memory (CompactLog) past its newest
// snapshot file does not send that file to a follower needing the entries
// it dropped (the follower would be left short of them): it asks for a
// fresh snapshot, cuts no further until it has one, and sends that one.
func TestCompactedLogAsksForAFreshSnapshot(t *testing.T) {
	c, err := newCluster(3, 10, nil)
	require.NoError(t, err)
	var oldFile uint64
	lead, lag, idx := leaveBehind(t, c, func(lead NodeID) {
		require.NoError(t, c.snapshot(lead)) // a file, soon behind the cut
		oldFile = c.nodes[lead].node.r.log.snapFile
		require.Positive(t, oldFile)
		c.logKeep = 3
	})
	// Cut off, the follower stops holding the log back once it has been
	// silent for an election timeout.
	require.NoError(t, c.stabilize(30, func() bool {
		return c.node(lead).Status().Applied == idx && c.node(lead).FirstIndex() == idx-2
	}))
	require.Equal(t, oldFile, c.nodes[lead].node.r.log.snapFile, "no snapshot file was taken while nobody needed one")

	var sent []uint64
	var asked int
	c.trace = func(id NodeID, rd Ready) {
		if id != lead {
			return
		}
		if rd.WantSnapshot {
			asked++
			// Until it has the file, the leader cuts no further.
			require.False(t, c.node(lead).CompactLog(idx-1))
		}
		for _, m := range rd.Messages {
			if m.Type == MsgSnap {
				sent = append(sent, m.Snapshot.Index)
				// Nor past the snapshot on its way: the follower goes
				// on from the entries after it.
				c.node(lead).CompactLog(c.node(lead).Status().Applied)
				require.LessOrEqual(t, c.node(lead).FirstIndex(), m.Snapshot.Index+1)
			}
		}
	}
	c.heal()
	require.NoError(t, c.stabilize(50, func() bool { return c.committedEverywhere(idx) }))
	require.Positive(t, asked, "the leader asked for a fresh snapshot")
	require.NotEmpty(t, sent)
	for _, i := range sent {
		require.GreaterOrEqual(t, i, idx-2, "a snapshot older than the cut was sent")
	}
	require.Equal(t, c.nodes[lead].sm, c.nodes[lag].sm)
	// Caught up, the follower no longer holds the log back.
	var more uint64
	for i := 0; i < 5; i++ {
		more, _, err = c.propose(fmt.Sprintf("t%d", i))
		require.NoError(t, err)
	}
	require.NoError(t, c.stabilize(10, func() bool {
		return c.committedEverywhere(more) && c.node(lead).FirstIndex() == more-2
	}))
}

// While a snapshot is on its way to a follower, the leader does not cut
// its log past it: the follower goes on from the entries after it, and a
// cut there would have it ask for another snapshot, and another, for as
// long as writes outpace the transfer.
func TestNoCutPastASnapshotOnItsWay(t *testing.T) {
	c, err := newCluster(3, 10, nil)
	require.NoError(t, err)
	lead, lag, idx := leaveBehind(t, c, nil)
	require.NoError(t, c.deliverAll(10000))
	require.NoError(t, c.snapshot(lead))
	c.trace = func(id NodeID, rd Ready) {
		for _, m := range rd.Messages {
			if m.Type == MsgSnap && m.To == lag {
				c.nodes[lag].stalled = true // the snapshot waits in the queue
			}
		}
	}
	c.heal()
	pr := func() *Progress { return c.nodes[lead].node.r.trk.progress.get(lag) }
	require.NoError(t, c.stabilize(20, func() bool { return pr().State == StateSnapshot }))
	require.Equal(t, idx, pr().PendingSnapshot)
	var more uint64
	for i := 0; i < 10; i++ {
		more, _, err = c.propose(fmt.Sprintf("t%d", i))
		require.NoError(t, err)
	}
	// (Not stabilize: it delivers in order, and the held snapshot would
	// hold up the rest.)
	for i := 0; i < 200 && c.node(lead).Status().Applied != more; i++ {
		require.NoError(t, c.ready())
		require.NoError(t, c.burst())
	}
	require.Equal(t, more, c.node(lead).Status().Applied)
	// Long enough that the leader no longer counts the follower as heard
	// from: only the snapshot on its way holds the log.
	for i := 0; i <= c.nodes[lead].node.r.cfg.ElectionTick; i++ {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.ready())
		require.NoError(t, c.burst())
	}
	require.Equal(t, lead, c.leader())
	require.Equal(t, StateSnapshot, pr().State)
	require.False(t, c.node(lead).CompactLog(more-1), "cut past the snapshot being sent")
	require.Equal(t, idx+1, c.node(lead).FirstIndex())
}

// A leader does not cut entries a follower it hears from still needs,
// however far behind it is (cut, it would need a snapshot, and behind a
// busy leader, one snapshot after another); a follower silent for an
// election timeout no longer holds the log back.
func TestNoCutPastAFollowerStillHeard(t *testing.T) {
	c, err := newCluster(3, 10, nil)
	require.NoError(t, err)
	lead, lag, idx := leaveBehind(t, c, nil)
	require.NoError(t, c.deliverAll(10000))
	require.Equal(t, idx, c.node(lead).Status().Applied)
	matched := c.nodes[lead].node.r.trk.progress.get(lag).Match
	require.Less(t, matched, idx-1)
	require.False(t, c.node(lead).CompactLog(idx-1), "cut past a follower heard an election timeout ago")
	require.True(t, c.node(lead).CompactLog(matched), "up to what it matched")
	for i := 0; i <= c.nodes[lead].node.r.cfg.ElectionTick; i++ {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(10000))
	}
	require.Equal(t, lead, c.leader())
	require.True(t, c.node(lead).CompactLog(idx-1), "the silent follower holds nothing back")
}

// CompactLog cuts only applied entries past the log's start, and a
// snapshot file may then be reported at exactly the cut.
func TestCompactLogBounds(t *testing.T) {
	c, err := newCluster(1, 1, nil)
	require.NoError(t, err)
	_, err = c.electLeader()
	require.NoError(t, err)
	n := c.node(1)
	var idx uint64
	for i := 0; i < 5; i++ {
		idx, _, err = c.propose(fmt.Sprintf("x%d", i))
		require.NoError(t, err)
	}
	require.NoError(t, c.stabilize(5, func() bool { return n.Status().Applied == idx }))
	require.False(t, n.CompactLog(idx+1), "beyond the applied index")
	require.True(t, n.CompactLog(idx-2))
	require.Equal(t, idx-1, n.FirstIndex())
	require.False(t, n.CompactLog(idx-2), "already cut there")
	_, err = n.Entries(idx-2, idx)
	require.ErrorIs(t, err, ErrCompacted)
	meta, err := n.SnapshotTaken(idx - 2)
	require.NoError(t, err, "a file at the cut")
	require.Equal(t, idx-2, meta.Index)
	_, err = n.SnapshotTaken(idx - 2)
	require.ErrorIs(t, err, ErrCompacted, "the same file twice")
	_, err = n.SnapshotTaken(idx - 3)
	require.ErrorIs(t, err, ErrCompacted)
}

// Installing a snapshot discards a conflicting log.
func TestSnapshotDiscardsConflictingLog(t *testing.T) {
	n := newTestNode(t, 2, peers(3), 3, 1, 2, 2, 2)
	require.NoError(t, n.Step(Message{Type: MsgSnap, From: 1, To: 2, Term: 3,
		Snapshot: &SnapshotMeta{Index: 3, Term: 3, Conf: ConfState{Voters: peers(3)}}}))
	s := n.Status()
	require.Equal(t, uint64(3), s.LastIndex)
	require.Equal(t, uint64(4), s.FirstIndex)
	require.Equal(t, uint64(3), s.HardState.Commit)
	rd := n.Ready()
	require.NotNil(t, rd.Snapshot)
	require.Equal(t, uint64(3), rd.Snapshot.Index)
	resp := only(t, rd.MessagesAfterPersist, MsgAppResp)
	require.Len(t, resp, 1)
	require.Equal(t, uint64(3), resp[0].Index)
}

// A snapshot whose last entry we already hold keeps the log after it.
func TestSnapshotMatchingLogKeepsSuffix(t *testing.T) {
	n := newTestNode(t, 2, peers(3), 3, 1, 2, 2, 2)
	require.NoError(t, n.Step(Message{Type: MsgSnap, From: 1, To: 2, Term: 3,
		Snapshot: &SnapshotMeta{Index: 2, Term: 2, Conf: ConfState{Voters: peers(3)}}}))
	s := n.Status()
	require.Equal(t, uint64(4), s.LastIndex)
	require.Equal(t, uint64(2), s.HardState.Commit)
	require.Nil(t, n.Ready().Snapshot)
}

// Fast backtracking: a follower whose log diverges for many entries of one
// term is brought in line in a few round trips, not one per entry.
func TestFastBacktracking(t *testing.T) {
	leaderTerms := []uint64{1, 1, 1}
	followerTerms := []uint64{1}
	for i := 0; i < 100; i++ {
		leaderTerms = append(leaderTerms, 5)
		followerTerms = append(followerTerms, 3)
	}
	l := newTestNode(t, 1, peers(3), 5, leaderTerms...)
	f := newTestNode(t, 2, peers(3), 5, followerTerms...)
	makeLeader(t, l)
	// The first probe went out with makeLeader; a heartbeat answer prompts
	// the next one.
	require.NoError(t, l.Step(Message{Type: MsgHeartbeatResp, From: 2, To: 1, Term: 6}))
	rejections := 0
	for round := 0; round < 20; round++ {
		msgs := drain(l)
		for _, m := range msgs {
			if m.To != 2 || (m.Type != MsgApp && m.Type != MsgHeartbeat) {
				continue
			}
			require.NoError(t, f.Step(m))
		}
		for _, m := range drain(f) {
			if m.Type == MsgAppResp && m.Reject {
				rejections++
			}
			require.NoError(t, l.Step(m))
		}
		if st := l.Status(); st.Progress[1].Match == st.LastIndex {
			break
		}
	}
	st := l.Status()
	require.Equal(t, st.LastIndex, st.Progress[1].Match)
	require.LessOrEqual(t, rejections, 3)
}

// Flow control: no more than MaxInflightMsgs appends are outstanding to a
// follower that does not answer, and no message exceeds MaxMsgBytes.
func TestFlowControl(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	n.r.cfg.MaxInflightMsgs = 4
	n.r.cfg.MaxMsgBytes = 100
	makeLeader(t, n)
	// Move follower 2 to replicate state.
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 2, Index: 2}))
	drain(n)
	for i := 0; i < 100; i++ {
		_, _, err := n.Propose(make([]byte, 40))
		require.NoError(t, err)
	}
	apps := 0
	for _, m := range only(t, drain(n), MsgApp) {
		if m.To != 2 {
			continue
		}
		apps++
		var size uint64
		for _, e := range m.Entries {
			size += entrySize(e)
		}
		require.LessOrEqual(t, size, uint64(100))
	}
	require.Equal(t, 4, apps)
	// An acknowledgement frees the window.
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 2, Index: 4}))
	require.NotEmpty(t, only(t, drain(n), MsgApp))
}

// A probing follower gets one append at a time until it answers.
func TestProbeSendsOneAppendAtATime(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	makeLeader(t, n)
	for i := 0; i < 5; i++ {
		_, _, err := n.Propose([]byte("p"))
		require.NoError(t, err)
		for _, m := range only(t, drain(n), MsgApp) {
			require.NotEqual(t, NodeID(2), m.To, "follower 2 was already probed once")
		}
	}
	require.NoError(t, n.Step(Message{Type: MsgHeartbeatResp, From: 2, To: 1, Term: 2}))
	var to2 int
	for _, m := range only(t, drain(n), MsgApp) {
		if m.To == 2 {
			to2++
		}
	}
	require.Equal(t, 1, to2)
}

func TestPersistenceContract(t *testing.T) {
	n := newTestNode(t, 2, peers(3), 1, 1)
	require.NoError(t, n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1,
		Entries: []Entry{{Index: 2, Term: 2}}}))
	rd := n.Ready()
	require.True(t, rd.MustSync)
	require.Len(t, rd.Entries, 1)
	require.Empty(t, only(t, rd.Messages, MsgAppResp), "acknowledgements wait for durability")
	require.Len(t, only(t, rd.MessagesAfterPersist, MsgAppResp), 1)
	n.Advance(rd)
	require.False(t, n.HasReady())
}

// A node that voted and restarted from its stable storage does not vote
// for someone else in the same term.
func TestRestartKeepsVote(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	require.NoError(t, n.Step(Message{Type: MsgVote, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1}))
	rd := n.Ready()
	var st stable
	st.snap = &SnapshotMeta{Conf: ConfState{Voters: peers(3)}}
	st.ents = ents(1)
	st.persist(rd)
	n2, err := NewNode(Config{ID: 1, Seed: 1}, st.state())
	require.NoError(t, err)
	require.NoError(t, n2.Step(Message{Type: MsgVote, From: 3, To: 1, Term: 2, Index: 1, LogTerm: 1}))
	resp := only(t, drain(n2), MsgVoteResp)
	require.Len(t, resp, 1)
	require.True(t, resp[0].Reject)
}

func TestMalformedMessagesAreRefused(t *testing.T) {
	n := newTestNode(t, 2, peers(3), 1, 1)
	for name, m := range map[string]Message{
		"wrong recipient":   {Type: MsgApp, From: 1, To: 3, Term: 1},
		"no sender":         {Type: MsgApp, To: 2, Term: 1},
		"unknown type":      {Type: 99, From: 1, To: 2, Term: 1},
		"zero term":         {Type: MsgApp, From: 1, To: 2},
		"snap without meta": {Type: MsgSnap, From: 1, To: 2, Term: 1},
		"gap in entries": {Type: MsgApp, From: 1, To: 2, Term: 1, Index: 1, LogTerm: 1,
			Entries: []Entry{{Index: 2, Term: 1}, {Index: 4, Term: 1}}},
		"entry term above message term": {Type: MsgApp, From: 1, To: 2, Term: 1, Index: 1, LogTerm: 1,
			Entries: []Entry{{Index: 2, Term: 7}}},
	} {
		before := n.Status()
		require.Error(t, n.Step(m), name)
		require.Equal(t, before, n.Status(), name)
	}
}

func TestConfigValidation(t *testing.T) {
	_, err := NewNode(Config{}, PersistentState{})
	require.Error(t, err)
	_, err = NewNode(Config{ID: 1}, PersistentState{})
	require.Error(t, err, "empty state needs peers")
	_, err = NewNode(Config{ID: 1, Peers: peers(3), ElectionTick: 2, HeartbeatTick: 2}, PersistentState{})
	require.Error(t, err)
	_, err = NewNode(Config{ID: 1, Peers: peers(3), LeaseRead: true, DisableCheckQuorum: true}, PersistentState{})
	require.Error(t, err)
	_, err = NewNode(Config{ID: 1}, PersistentState{HardState: HardState{Term: 1}})
	require.Error(t, err, "a hard state without a configuration")
	_, err = NewNode(Config{ID: 1}, PersistentState{Snapshot: &SnapshotMeta{Conf: ConfState{Voters: peers(1)}},
		Entries: []Entry{{Index: 2, Term: 1}}})
	require.Error(t, err, "entries must follow the snapshot")
}

func TestBootstrapReadyCarriesConfiguration(t *testing.T) {
	n, err := NewNode(Config{ID: 1, Peers: []NodeID{3, 1, 2, 2}}, PersistentState{})
	require.NoError(t, err)
	rd := n.Ready()
	require.NotNil(t, rd.Snapshot)
	require.Equal(t, uint64(0), rd.Snapshot.Index)
	require.Equal(t, peers(3), rd.Snapshot.Conf.Voters)
	require.True(t, rd.MustSync)
}

func TestSnapshotTakenBounds(t *testing.T) {
	c, err := newCluster(1, 1, nil)
	require.NoError(t, err)
	_, err = c.electLeader()
	require.NoError(t, err)
	n := c.node(1)
	idx, _, err := c.propose("x")
	require.NoError(t, err)
	require.NoError(t, c.stabilize(5, func() bool { return c.committedEverywhere(idx) }))
	_, err = n.SnapshotTaken(100)
	require.True(t, errors.Is(err, ErrUnavailable))
	applied := n.Status().Applied
	_, err = n.SnapshotTaken(applied)
	require.NoError(t, err)
	_, err = n.SnapshotTaken(applied)
	require.True(t, errors.Is(err, ErrCompacted))
	_, err = n.Entries(1, 2)
	require.ErrorIs(t, err, ErrCompacted)
}

// A sole voter wins on its own vote, but leads only once its new term and
// vote are durable: leading at once, it would append (and send to its
// learners) entries in a term that a crash could take back, then win the
// same term again after the restart and write other entries at the same
// indexes.
func TestSoleVoterLeadsOnlyOnceItsTermIsDurable(t *testing.T) {
	n, err := NewNode(Config{ID: 1, Peers: []NodeID{1}, ElectionTick: 10, HeartbeatTick: 1, Seed: 1}, PersistentState{})
	if err != nil {
		t.Fatal(err)
	}
	n.Advance(n.Ready()) // the bootstrap membership
	for i := 0; i < 100 && n.SoftState().Role == Follower; i++ {
		n.Tick()
	}
	if got := n.SoftState().Role; got != Candidate {
		t.Fatalf("role %v after the election timeout, want Candidate until the term is durable", got)
	}
	rd := n.Ready()
	if len(rd.Entries) > 0 || !rd.MustSync || rd.HardState.Vote != 1 {
		t.Fatalf("the first Ready must persist the term and vote and carry no entry: %+v", rd)
	}
	n.Tick() // more time passes while the Ready is being persisted
	if got := n.SoftState().Role; got == Leader {
		t.Fatal("led before its term was durable")
	}
	n.Advance(rd)
	if got := n.SoftState().Role; got != Leader {
		t.Fatalf("role %v once the term is durable, want Leader", got)
	}
	if rd := n.Ready(); len(rd.Entries) != 1 || rd.Entries[0].Term != n.HardState().Term {
		t.Fatalf("a new leader appends its empty entry in its durable term: %+v", rd)
	}
}

// A node repaired after its WAL lost entries (Config.VoteFloor: its log
// ended at term 3, index 4) votes as if it still held them, and does not
// campaign until its log is back at that position.
func TestVoteFloorAfterRepair(t *testing.T) {
	repaired := func(t *testing.T) *Node {
		// All it kept is entries 1-2 of term 1; it is at term 3.
		st := PersistentState{
			HardState: HardState{Term: 3},
			Snapshot:  &SnapshotMeta{Conf: ConfState{Voters: peers(3)}},
			Entries:   ents(1, 1),
		}
		n, err := NewNode(Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Seed: 1, VoteFloor: LogPosition{Term: 3, Index: 4}}, st)
		require.NoError(t, err)
		return n
	}
	for _, tc := range []struct {
		name         string
		index, lterm uint64
		grant        bool
	}{
		{"ahead of its log, behind the floor", 3, 2, false},
		{"the floor's term, shorter", 3, 3, false},
		{"at the floor", 4, 3, true},
		{"a later term", 1, 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, typ := range [][2]MessageType{{MsgPreVote, MsgPreVoteResp}, {MsgVote, MsgVoteResp}} {
				typ, resp := typ[0], typ[1]
				n := repaired(t)
				require.NoError(t, n.Step(Message{Type: typ, From: 2, To: 1, Term: 5, Index: tc.index, LogTerm: tc.lterm}))
				resps := only(t, drain(n), resp)
				require.Len(t, resps, 1)
				require.Equal(t, !tc.grant, resps[0].Reject, "%s", typ)
			}
		})
	}
	t.Run("a heartbeat below the floor commits only what an append matched", func(t *testing.T) {
		// The leader matched index 4 before the repair, so its heartbeat
		// may carry commit 4; the entries the node kept at 1-2 need not be
		// the leader's (the lost end may have overwritten them).
		n := repaired(t)
		commitAfter := func(m Message) uint64 {
			m.From, m.To, m.Term = 2, 1, 3
			require.NoError(t, n.Step(m))
			drain(n)
			return n.Status().HardState.Commit
		}
		heartbeat := Message{Type: MsgHeartbeat, Commit: 4}
		require.Equal(t, uint64(0), commitAfter(heartbeat))
		// An append checked against the leader's log: entry 3, committing
		// 2. Still below the floor, a heartbeat commits up to 3.
		require.Equal(t, uint64(2), commitAfter(Message{Type: MsgApp, Index: 2, LogTerm: 1, Entries: []Entry{{Index: 3, Term: 2}}, Commit: 2}))
		require.Equal(t, uint64(3), commitAfter(heartbeat))
		commitAfter(Message{Type: MsgApp, Index: 3, LogTerm: 2, Entries: []Entry{{Index: 4, Term: 3}}, Commit: 3})
		require.Equal(t, uint64(4), commitAfter(heartbeat), "at its floor, heartbeats commit again")
	})
	t.Run("no campaign below the floor", func(t *testing.T) {
		n := repaired(t)
		for range 100 {
			n.Tick()
		}
		require.Equal(t, Follower, n.Status().Role)
		require.Empty(t, only(t, drain(n), MsgPreVote))
		// The leader of term 3 gives it entries 3 and 4 back.
		require.NoError(t, n.Step(Message{Type: MsgApp, From: 2, To: 1, Term: 3, Index: 2, LogTerm: 1,
			Entries: []Entry{{Index: 3, Term: 2}, {Index: 4, Term: 3}}, Commit: 4}))
		drain(n)
		for i := 0; i < 100 && n.Status().Role == Follower; i++ {
			n.Tick()
		}
		require.Equal(t, PreCandidate, n.Status().Role, "back at the floor, it campaigns again")
	})
}

// A follower in its leader's lease refuses a pre-vote; once told the
// leader's process is gone it grants one at once. Reports about another
// node, and every report with LeaseRead, leave the lease alone.
func TestForgetLeaderEndsTheLease(t *testing.T) {
	preVote := Message{Type: MsgPreVote, From: 3, To: 1, Term: 3, Index: 1, LogTerm: 1}
	granted := func(t *testing.T, n *Node) bool {
		t.Helper()
		require.NoError(t, n.Step(preVote))
		resps := only(t, drain(n), MsgPreVoteResp)
		return len(resps) == 1 && !resps[0].Reject
	}
	follower := func(t *testing.T, leaseRead bool) *Node {
		n := newTestNode(t, 1, peers(3), 2, 1)
		n.r.cfg.LeaseRead = leaseRead
		require.NoError(t, n.Step(Message{Type: MsgHeartbeat, From: 2, To: 1, Term: 2}))
		drain(n)
		require.Equal(t, NodeID(2), n.Status().Lead)
		return n
	}

	n := follower(t, false)
	require.False(t, granted(t, n), "in the lease a pre-vote is refused")
	require.False(t, n.ForgetLeader(3), "not the leader")
	require.False(t, granted(t, n), "a report about another node must not end the lease")
	require.True(t, n.ForgetLeader(2))
	require.Equal(t, None, n.Status().Lead)
	require.True(t, granted(t, n), "with the leader forgotten a pre-vote is granted")

	n = follower(t, true)
	require.False(t, n.ForgetLeader(2))
	require.Equal(t, NodeID(2), n.Status().Lead, "LeaseRead relies on followers honouring the lease")
	require.False(t, granted(t, n))
}

// A follower that forgot its leader campaigns within one election timeout
// (the voters left a tick apart, in id order); one that did not waits more
// than a whole one. A leader ignores the report.
func TestForgetLeaderCampaignsWithinOneElectionTimeout(t *testing.T) {
	campaignsWithin := func(n *Node, ticks int) bool {
		for range ticks {
			n.Tick()
			if len(only(t, drain(n), MsgPreVote)) > 0 {
				return true
			}
		}
		return false
	}
	for seed := uint64(1); seed <= 20; seed++ {
		for _, forget := range []bool{false, true} {
			st := PersistentState{HardState: HardState{Term: 2}, Snapshot: &SnapshotMeta{Conf: ConfState{Voters: peers(3)}}, Entries: ents(1)}
			n, err := NewNode(Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Seed: seed}, st)
			require.NoError(t, err)
			require.NoError(t, n.Step(Message{Type: MsgHeartbeat, From: 2, To: 1, Term: 2}))
			drain(n)
			if forget {
				n.ForgetLeader(2)
			}
			require.Equal(t, forget, campaignsWithin(n, 10), "seed %d, forgot the leader: %v", seed, forget)
		}
	}

	lead := newTestNode(t, 1, peers(3), 1, 1)
	makeLeader(t, lead)
	require.False(t, lead.ForgetLeader(1))
	require.Equal(t, Leader, lead.Status().Role)
	require.Equal(t, NodeID(1), lead.Status().Lead)
}

// The voters left after a leader is forgotten campaign a tick apart, in id
// order, whatever their random timeouts: no two in the same tick.
func TestForgottenLeadersVotersCampaignATickApart(t *testing.T) {
	firstCampaign := func(id NodeID, seed uint64) int {
		st := PersistentState{HardState: HardState{Term: 2}, Snapshot: &SnapshotMeta{Conf: ConfState{Voters: peers(5)}}, Entries: ents(1)}
		n, err := NewNode(Config{ID: id, ElectionTick: 10, HeartbeatTick: 1, Seed: seed}, st)
		require.NoError(t, err)
		require.NoError(t, n.Step(Message{Type: MsgHeartbeat, From: 3, To: id, Term: 2}))
		drain(n)
		n.ForgetLeader(3)
		for tick := 1; tick <= 20; tick++ {
			n.Tick()
			if len(only(t, drain(n), MsgPreVote)) > 0 {
				return tick
			}
		}
		return 0
	}
	for seed := uint64(1); seed <= 10; seed++ {
		// Leader 3 gone: 1, 2, 4 and 5 are left, in that order.
		for rank, id := range []NodeID{1, 2, 4, 5} {
			require.Equal(t, rank+1, firstCampaign(id, seed), "node %d, seed %d", id, seed)
		}
	}
}

// A follower whose storage lost the entry it acknowledged at the leader's
// match index, and that holds an older term's entry there instead, rejects
// with LogCut and its hint at that very index. The leader must learn the
// match again and send the entry back, not keep probing past it (found by
// simulator seed 2879106076 -lost-writes: the follower never caught up).
func TestLogCutAtTheMatchIndexIsLearnedAgain(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 3, 1, 2, 3)
	makeLeader(t, n) // term 4, its empty entry at 4
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 4}))
	drain(n)
	match := func() uint64 {
		for _, pr := range n.Status().Progress {
			if pr.ID == 2 {
				return pr.Match
			}
		}
		t.Fatal("no progress for 2")
		return 0
	}
	require.Equal(t, uint64(4), match())

	// Node 2 restarted without 4@4; its log ends 4@3 (a stale entry of the
	// term-3 leader), below its vote floor: the append after 4 is refused.
	require.NoError(t, n.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 4, Index: 4,
		Reject: true, RejectHint: 4, LogTerm: 3, LogCut: true}))
	require.Equal(t, uint64(0), match(), "what node 2 matches must be learned again")
	for range 3 {
		n.Tick()
	}
	resent := slices.ContainsFunc(only(t, drain(n), MsgApp), func(m Message) bool {
		return m.To == 2 && m.Index <= 3 && m.Index+uint64(len(m.Entries)) >= 4
	})
	require.True(t, resent, "the leader sends entry 4 again")
}
