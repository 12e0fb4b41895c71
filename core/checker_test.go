package core

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Leader Completeness binds the leaders of later terms only. A candidate
// whose votes reach it late may become leader of an older term after a
// newer one committed entries it lacks: legal (it can commit nothing, a
// majority has moved on). A leader of a later term that lacks them is not.
func TestCheckerLeaderCompletenessBindsLaterTermsOnly(t *testing.T) {
	c := NewChecker()
	lead := newTestNode(t, 1, peers(3), 1, 1)
	makeLeader(t, lead) // term 2, its entry at index 2
	require.NoError(t, lead.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: 2, Index: 2}))
	require.Equal(t, uint64(2), lead.HardState().Commit)
	require.NoError(t, c.Observe(lead))

	stale := newTestNode(t, 3, peers(3), 0, 1)
	makeLeader(t, stale) // term 1, without the entry committed in term 2
	require.NoError(t, c.Observe(stale))

	later := newTestNode(t, 2, peers(3), 2, 1)
	makeLeader(t, later) // term 3, without it either
	require.ErrorContains(t, c.Observe(later), "leader completeness violated")
}

// Log Matching: an entry at the same index and term must be the same entry
// with the same predecessor term, whether it is the first term seen at its
// index or a later one (an overwritten suffix elsewhere).
func TestCheckerLogMatching(t *testing.T) {
	node := func(id NodeID, log ...Entry) *Node {
		t.Helper()
		for i := range log {
			log[i].Index = uint64(i + 1)
		}
		n, err := NewNode(Config{ID: id, ElectionTick: 10, HeartbeatTick: 1, Seed: 1}, PersistentState{
			HardState: HardState{Term: 2},
			Snapshot:  &SnapshotMeta{Conf: ConfState{Voters: peers(3)}},
			Entries:   log,
		})
		require.NoError(t, err)
		return n
	}
	e := func(term uint64, data string) Entry { return Entry{Term: term, Data: []byte(data)} }
	observed := func() *Checker {
		c := NewChecker()
		require.NoError(t, c.Observe(node(1, e(1, "a"), e(1, "b"))))
		require.NoError(t, c.Observe(node(2, e(1, "a"), e(2, "x"))), "another term at index 2 is no violation")
		return c
	}
	require.NoError(t, observed().Observe(node(3, e(1, "a"), e(2, "x"))))
	require.ErrorContains(t, observed().Observe(node(3, e(1, "a"), e(1, "c"))), "Log Matching violated at index 2 term 1")
	require.ErrorContains(t, observed().Observe(node(3, e(1, "a"), e(2, "y"))), "Log Matching violated at index 2 term 2")
	require.ErrorContains(t, observed().Observe(node(3, e(2, "a"), e(2, "x"))), "Log Matching violated at index 2 term 2",
		"the same entry after a predecessor of another term")
}
