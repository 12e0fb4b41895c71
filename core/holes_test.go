package core

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// commitSome proposes n entries through the leader and waits until every
// live node has applied them.
func commitSome(t *testing.T, c *cluster, n int, tag string) {
	t.Helper()
	lead, err := c.electLeader()
	require.NoError(t, err)
	var last uint64
	for i := range n {
		last, _, err = c.node(lead).Propose([]byte(fmt.Sprintf("%s%d", tag, i)))
		require.NoError(t, err)
	}
	require.NoError(t, c.stabilize(300, func() bool {
		for _, id := range c.ids {
			if tn := c.nodes[id]; !tn.down && tn.node.Status().Applied < last {
				return false
			}
		}
		return true
	}))
}

// holedEverywhere crashes every node at once, restarts each with the holes
// restart gives it (k: its place in c.ids), and requires the cluster to
// commit again with every hole filled.
func holedEverywhere(t *testing.T, c *cluster, restart func(id NodeID, k int) error) {
	t.Helper()
	for _, id := range c.ids {
		c.crash(id)
	}
	for k, id := range c.ids {
		require.NoError(t, restart(id, k))
	}
	commitSome(t, c, 5, "b")
	for _, id := range c.ids {
		require.True(t, c.node(id).Holes().Empty(), "node %d", id)
	}
}

// A follower restarted with holes gets their data back from the leader
// (its rejections make the leader resend from the first hole), applies
// them, and campaigns again only once they are filled.
func TestHolesFilledFromTheLeader(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	commitSome(t, c, 20, "a")
	lead := c.leader()
	f := lead%3 + 1
	c.crash(f)
	require.NoError(t, c.restartWithHoles(f, 5, 12))
	require.Equal(t, Holes{5, 6, 7, 8, 9, 10, 11, 12}, c.node(f).Holes())
	require.False(t, c.node(f).r.promotable(), "a node with holes does not campaign")
	commitSome(t, c, 5, "b")
	require.True(t, c.node(f).Holes().Empty())
	require.True(t, c.node(f).r.promotable())
}

// Every member restarted at once, each with holes at different places: no
// one can campaign until it has its holes back, which it gets from the
// others by MsgFetch, with no leader. Then the cluster elects one and
// commits, every state machine alike (the cluster checks each applied
// entry's state against every other node's).
func TestHolesOnEveryMemberFilledFromEachOther(t *testing.T) {
	c, err := newCluster(3, 2, nil)
	require.NoError(t, err)
	commitSome(t, c, 30, "a")
	holedEverywhere(t, c, func(id NodeID, k int) error {
		from := uint64(3 + 8*k)
		return c.restartWithHoles(id, from, from+5)
	})
}

// Holes in several runs, on every member at once, each entry lost on one
// member only: filled run by run from the others.
func TestHolesInSeveralRuns(t *testing.T) {
	c, err := newCluster(3, 5, nil)
	require.NoError(t, err)
	commitSome(t, c, 30, "a")
	holes := [][]uint64{{2, 3, 17, 25}, {1, 12, 13, 26}, {4, 18, 30}}
	holedEverywhere(t, c, func(id NodeID, k int) error { return c.restartWithHoleList(id, holes[k]...) })
}

// The same hole on every member cannot be filled: nobody campaigns, and
// nothing is applied past it (safe, not available).
func TestHolesOnEveryMemberAtTheSamePlaceWait(t *testing.T) {
	c, err := newCluster(3, 3, nil)
	require.NoError(t, err)
	commitSome(t, c, 20, "a")
	for _, id := range c.ids {
		c.crash(id)
	}
	for _, id := range c.ids {
		require.NoError(t, c.restartWithHoles(id, 4, 6))
	}
	require.Error(t, c.stabilize(100, func() bool { return c.leader() != None }))
	for _, id := range c.ids {
		require.Equal(t, uint64(3), c.node(id).Status().Applied, "node %d applied past its hole", id)
	}
}

// A follower whose holes the leader has compacted away gets a snapshot that
// covers them, keeps its log after it, and is whole again.
func TestHolesCoveredByASnapshot(t *testing.T) {
	c, err := newCluster(3, 4, nil)
	require.NoError(t, err)
	commitSome(t, c, 20, "a")
	lead := c.leader()
	f := lead%3 + 1
	c.crash(f)
	for _, id := range c.ids {
		if id != f {
			require.NoError(t, c.snapshot(id))
		}
	}
	require.NoError(t, c.restartWithHoles(f, 8, 15))
	commitSome(t, c, 5, "b")
	require.True(t, c.node(f).Holes().Empty())
	require.Greater(t, c.nodes[f].store.snap.Index, uint64(15), "the follower took the leader's snapshot")
	// Its stable log kept what came after the snapshot: a restart without
	// holes finds it all.
	c.crash(f)
	require.NoError(t, c.restart(f))
	commitSome(t, c, 3, "c")
}

// A hole is filled only by an entry of its index and term: an entry of
// another term at that index is another entry (a stale copy).
func TestHoleFilledOnlyByTheSameEntry(t *testing.T) {
	l := newLog(SnapshotMeta{}, []Entry{{Index: 1, Term: 1, Data: []byte("a")}, {Index: 2, Term: 2}, {Index: 3, Term: 2}})
	l.holes = Holes{2, 3}
	require.False(t, l.fill(Entry{Index: 2, Term: 1, Data: []byte("stale")}, 3))
	require.False(t, l.fill(Entry{Index: 1, Term: 1, Data: []byte("not a hole")}, 3))
	require.True(t, l.fill(Entry{Index: 2, Term: 2, Data: []byte("b")}, 0))
	require.Equal(t, Holes{3}, l.holes)
	require.Empty(t, l.toApply(0), "nothing is committed yet")
	l.committed = 3
	require.Len(t, l.toApply(0), 2, "applying stops before the hole at 3")
	require.True(t, l.fill(Entry{Index: 3, Term: 2, Data: []byte("c")}, 0))
	require.True(t, l.holes.Empty())
	require.Len(t, l.toApply(0), 3)
}

// A committed hole whose term is unknown (0) takes the entry at its index
// from a source that knows it committed, and from no other.
func TestCommittedHoleFilledOnlyFromACommittedEntry(t *testing.T) {
	l := newLog(SnapshotMeta{}, []Entry{{Index: 1, Term: 1, Data: []byte("a")}, {Index: 2, Term: 0}, {Index: 3, Term: 2, Data: []byte("c")}})
	l.holes = Holes{2}
	l.committed = 3
	require.False(t, l.fill(Entry{Index: 2, Term: 2, Data: []byte("b")}, 1), "the source does not know 2 committed")
	require.True(t, l.fill(Entry{Index: 2, Term: 2, Data: []byte("b")}, 2))
	require.True(t, l.holes.Empty())
	require.True(t, l.matchTerm(2, 2), "the hole took the entry's term")
}

// Holes of unknown term at committed indexes, on every member at once at
// different places, are filled from members that know them committed.
func TestCommittedHolesOnEveryMemberFilled(t *testing.T) {
	c, err := newCluster(3, 6, nil)
	require.NoError(t, err)
	commitSome(t, c, 30, "a")
	holedEverywhere(t, c, func(id NodeID, k int) error {
		from := uint64(4 + 9*k)
		return c.restartWithCommittedHoles(id, from, from+3)
	})
}

// A snapshot that fills holes keeps the log; one after it, before the next
// Ready, that the log does not match replaces it: the Ready must say so,
// or the runtime would write the second as a compaction of a log it
// replaced.
func TestSnapshotAfterAKeptOneReplacesTheLog(t *testing.T) {
	ents := make([]Entry, 0, 40)
	for i := uint64(1); i <= 40; i++ {
		ents = append(ents, Entry{Index: i, Term: 2, Data: []byte("x")})
	}
	ents[9].Data = nil
	n, err := NewNode(Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Seed: 1},
		PersistentState{HardState: HardState{Term: 2, Vote: 2, Commit: 20}, Snapshot: &SnapshotMeta{Conf: ConfState{Voters: []NodeID{1, 2, 3}}},
			Entries: ents, Holes: Holes{10}})
	require.NoError(t, err)
	conf := ConfState{Voters: []NodeID{1, 2, 3}}
	require.NoError(t, n.Step(Message{Type: MsgSnap, From: 2, To: 1, Term: 2, Snapshot: &SnapshotMeta{Index: 15, Term: 2, Conf: conf}}))
	require.True(t, n.Holes().Empty())
	require.NoError(t, n.Step(Message{Type: MsgSnap, From: 3, To: 1, Term: 3, Snapshot: &SnapshotMeta{Index: 25, Term: 3, Conf: conf}}))
	rd := n.Ready()
	require.Equal(t, uint64(25), rd.Snapshot.Index)
	require.False(t, rd.SnapshotKeepsLog, "the second snapshot replaced the log")
	require.Equal(t, uint64(25), n.Status().LastIndex)
}
