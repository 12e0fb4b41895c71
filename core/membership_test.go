package core

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// grow elects a leader of a 3-node cluster, starts node 4 empty and adds it
// as a learner, and waits until it has the whole log.
func grow(t *testing.T) (*cluster, NodeID) {
	t.Helper()
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	require.NoError(t, c.join(4))
	i, err := c.changeConf(ConfAddLearner, 4)
	require.NoError(t, err)
	require.NoError(t, c.stabilize(50, func() bool { return c.nodes[4].sm.index >= i }))
	return c, lead
}

func TestLearnerReceivesLogButDoesNotVoteOrCount(t *testing.T) {
	c, lead := grow(t)
	require.Equal(t, ConfState{Voters: []NodeID{1, 2, 3}, Learners: []NodeID{4}}, c.node(4).Conf())

	// With two voters down, the learner does not make a majority.
	for _, id := range []NodeID{1, 2, 3} {
		if id != lead {
			c.crash(id)
		}
	}
	i, _, err := c.node(lead).Propose([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, c.deliverAll(1000))
	require.Equal(t, i, c.nodes[4].node.r.log.lastIndex(), "the learner stores the entry")
	require.Less(t, c.node(lead).HardState().Commit, i, "a learner must not count towards commit")

	// A learner never campaigns, however long it hears nothing.
	c.isolate(4)
	for range 100 {
		require.NoError(t, c.tick(4))
	}
	require.Equal(t, Follower, c.node(4).Status().Role)
}

func TestPromoteCaughtUpLearner(t *testing.T) {
	c, lead := grow(t)
	i, err := c.changeConf(ConfPromote, 4)
	require.NoError(t, err)
	require.NoError(t, c.stabilize(50, func() bool { return c.committedEverywhere(i) }))
	require.Equal(t, []NodeID{1, 2, 3, 4}, c.node(4).Conf().Voters)

	// Now 4 counts: with two of the old voters down there is no majority of
	// four, with one down there is.
	others := slices.DeleteFunc([]NodeID{1, 2, 3}, func(id NodeID) bool { return id == lead })
	c.crash(others[0])
	j, _, err := c.node(lead).Propose([]byte("y"))
	require.NoError(t, err)
	require.NoError(t, c.stabilize(20, func() bool { return c.node(lead).HardState().Commit >= j }))

	// And it can lead.
	require.NoError(t, c.node(lead).TransferLeadership(4))
	require.NoError(t, c.stabilize(50, func() bool { return c.leader() == 4 }))
}

func TestPromoteLaggingLearnerRefused(t *testing.T) {
	c, err := newCluster(3, 1, func(cfg *Config) { cfg.MaxLearnerLag = 5 })
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	require.NoError(t, c.join(4))
	c.isolate(4) // it never catches up
	_, err = c.changeConf(ConfAddLearner, 4)
	require.NoError(t, err)
	require.NoError(t, c.deliverAll(10000))
	// The log is shorter than the allowed lag, but a learner that has not
	// answered is not caught up.
	_, _, err = c.node(lead).ProposeConfChange(ConfChange{Type: ConfPromote, Node: 4})
	require.ErrorIs(t, err, ErrLearnerBehind)
	for k := range 20 {
		_, _, err := c.node(lead).Propose([]byte{byte(k)})
		require.NoError(t, err)
	}
	require.NoError(t, c.deliverAll(10000))
	_, err = c.changeConf(ConfPromote, 4)
	require.ErrorIs(t, err, ErrLearnerBehind)
	require.Equal(t, []NodeID{4}, c.node(lead).Conf().Learners, "a refused change changes nothing")

	c.heal()
	require.NoError(t, c.stabilize(50, func() bool { return c.nodes[4].sm.index == c.node(lead).LastIndex() }))
	_, err = c.changeConf(ConfPromote, 4)
	require.NoError(t, err)
}

func TestConfChangesGoOneAtATime(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	_, err = c.electLeader()
	require.NoError(t, err)
	require.NoError(t, c.join(4))
	require.NoError(t, c.join(5))
	i, err := c.changeConf(ConfAddLearner, 4)
	require.NoError(t, err)
	// Back to back: the second waits for the first to commit.
	_, err = c.changeConf(ConfAddLearner, 5)
	require.ErrorIs(t, err, ErrConfChangePending)
	require.NoError(t, c.stabilize(20, func() bool { return c.committedEverywhere(i) }))
	_, err = c.changeConf(ConfAddLearner, 5)
	require.NoError(t, err)

	// Invalid changes are refused with a reason.
	require.NoError(t, c.stabilize(20, func() bool { return c.node(c.leader()).HardState().Commit == c.node(c.leader()).LastIndex() }))
	_, err = c.changeConf(ConfAddLearner, 5)
	require.ErrorIs(t, err, ErrInvalidConfChange)
	_, err = c.changeConf(ConfPromote, 1)
	require.ErrorIs(t, err, ErrInvalidConfChange)
	_, err = c.changeConf(ConfRemove, 9)
	require.ErrorIs(t, err, ErrInvalidConfChange)
	// Followers refuse and name the leader.
	follower := c.leader()%3 + 1
	var nl *ErrNotLeader
	_, _, err = c.node(follower).ProposeConfChange(ConfChange{Type: ConfRemove, Node: 5})
	require.ErrorAs(t, err, &nl)
	require.Equal(t, c.leader(), nl.Leader)
}

func TestNewLeaderMustCommitInTermBeforeChange(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	// Make node 1 leader by hand, and ask before its empty entry commits.
	c.node(1).r.campaign(false, false)
	for c.node(1).Status().Role != Leader {
		require.NoError(t, c.ready())
		require.NotEmpty(t, c.queue)
		require.NoError(t, c.deliver(0))
	}
	require.False(t, c.node(1).r.committedInTerm())
	_, _, err = c.node(1).ProposeConfChange(ConfChange{Type: ConfRemove, Node: 3})
	require.ErrorIs(t, err, ErrNoTermCommit)
	require.NoError(t, c.stabilize(20, func() bool { return c.node(1).r.committedInTerm() }))
	_, _, err = c.node(1).ProposeConfChange(ConfChange{Type: ConfRemove, Node: 3})
	require.NoError(t, err)
}

func TestUncommittedChangeUndoneWhenTruncated(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	old, err := c.electLeader()
	require.NoError(t, err)
	require.NoError(t, c.join(4))
	// The leader is cut off with its change: it takes effect there at once…
	c.isolate(old)
	_, err = c.changeConf(ConfAddLearner, 4)
	require.NoError(t, err)
	require.Equal(t, []NodeID{4}, c.node(old).Conf().Learners)
	// …the majority moves on without it…
	require.NoError(t, c.stabilize(100, func() bool { l := c.leader(); return l != None && l != old }))
	fresh := c.leader()
	i, _, err := c.node(fresh).Propose([]byte("new term"))
	require.NoError(t, err)
	// …and after healing the old leader's change is overwritten and undone.
	c.heal()
	require.NoError(t, c.stabilize(100, func() bool { return c.committedEverywhere(i) }))
	require.Empty(t, c.node(old).Conf().Learners)
	require.Equal(t, []NodeID{1, 2, 3}, c.node(old).Conf().Voters)
}

// A node takes its membership from the latest configuration entry in its
// log, committed or not — also when it restarts from stable storage, where
// the snapshot still holds an older membership.
func TestRestartTakesMembershipFromLatestConfEntry(t *testing.T) {
	confEnt := func(i uint64, cc ConfChange, conf ConfState) Entry {
		return Entry{Index: i, Term: 1, Type: EntryConfChange, Data: confEntry{Change: cc, Result: conf}.encode()}
	}
	withLearner := ConfState{Voters: peers(3), Learners: []NodeID{4}}
	log := []Entry{
		{Index: 1, Term: 1, Data: []byte("a")},
		confEnt(2, ConfChange{Type: ConfAddLearner, Node: 4}, withLearner),
		{Index: 3, Term: 1, Data: []byte("b")},
		confEnt(4, ConfChange{Type: ConfPromote, Node: 4}, ConfState{Voters: peers(4)}),
	}
	for _, tc := range []struct {
		name       string
		last       int
		commit     uint64
		want       ConfState
		candidates []NodeID // whom it asks for votes when it campaigns
	}{
		{"learner added, uncommitted", 3, 1, withLearner, []NodeID{2, 3}},
		{"learner added, committed", 3, 3, withLearner, []NodeID{2, 3}},
		{"promoted, uncommitted", 4, 3, ConfState{Voters: peers(4)}, []NodeID{2, 3, 4}},
		{"promoted, committed", 4, 4, ConfState{Voters: peers(4)}, []NodeID{2, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := PersistentState{
				HardState: HardState{Term: 1, Commit: tc.commit},
				Snapshot:  &SnapshotMeta{Conf: ConfState{Voters: peers(3)}},
				Entries:   slices.Clone(log[:tc.last]),
			}
			n, err := NewNode(Config{ID: 1, Seed: 1}, st)
			require.NoError(t, err)
			require.Equal(t, tc.want, n.Conf())
			for i := 0; i < 100 && n.Status().Role == Follower; i++ {
				n.Tick()
			}
			var asked []NodeID
			for _, m := range only(t, drain(n), MsgPreVote) {
				asked = append(asked, m.To)
			}
			slices.Sort(asked)
			require.Equal(t, tc.candidates, asked)
		})
	}
}

// The same through a crash: a follower that stored a removal its leader
// proposed, and crashed before learning that it committed, comes back
// from its stable storage with the removal in force.
func TestRestartedFollowerKeepsUncommittedRemoval(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	f := c.ids[slices.IndexFunc(c.ids, func(id NodeID) bool { return id != lead })]
	gone := c.ids[slices.IndexFunc(c.ids, func(id NodeID) bool { return id != lead && id != f })]
	i, err := c.changeConf(ConfRemove, gone)
	require.NoError(t, err)
	require.NoError(t, c.readyNode(lead))
	for k := 0; k < len(c.queue); {
		if m := c.queue[k]; m.To != f || m.Type != MsgApp {
			k++
			continue
		}
		require.NoError(t, c.deliver(k))
	}
	require.NoError(t, c.readyNode(f))
	require.Less(t, c.node(f).HardState().Commit, i, "the removal must still be uncommitted on the follower")
	c.crash(f)
	require.NoError(t, c.restart(f))
	require.Equal(t, ConfState{Voters: sortedIDs([]NodeID{lead, f})}, c.node(f).Conf())
}

func TestRemoveLeaderHandsOver(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	old, err := c.electLeader()
	require.NoError(t, err)
	i, err := c.changeConf(ConfRemove, old)
	require.NoError(t, err)
	// The old leader commits its own removal, then another voter leads
	// without waiting for an election timeout.
	require.NoError(t, c.stabilize(5, func() bool { l := c.leader(); return l != None && l != old }))
	fresh := c.leader()
	require.NotContains(t, c.node(fresh).Conf().Voters, old)
	require.GreaterOrEqual(t, c.node(fresh).HardState().Commit, i)
	j, _, err := c.node(fresh).Propose([]byte("after"))
	require.NoError(t, err)
	require.NoError(t, c.stabilize(20, func() bool { return c.committedEverywhere(j) }))
	// The removed node knows, and never campaigns again.
	require.NotContains(t, c.node(old).Conf().Voters, old)
	term := c.node(fresh).HardState().Term
	for range 100 {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(1000))
	}
	require.Equal(t, fresh, c.leader())
	require.Equal(t, term, c.node(fresh).HardState().Term)
	require.NotEqual(t, Leader, c.node(old).Status().Role)
}

func TestLeaderRemovedWhileChangePending(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	old, err := c.electLeader()
	require.NoError(t, err)
	require.NoError(t, c.join(4))
	// A change is pending on a leader that is then cut off; the others
	// elect a new leader, which must commit in its term and then removes
	// the old leader.
	c.isolate(old)
	_, err = c.changeConf(ConfAddLearner, 4)
	require.NoError(t, err)
	require.NoError(t, c.stabilize(100, func() bool { l := c.leader(); return l != None && l != old }))
	fresh := c.leader()
	var i uint64
	require.NoError(t, c.stabilize(50, func() bool {
		var err error
		i, _, err = c.node(fresh).ProposeConfChange(ConfChange{Type: ConfRemove, Node: old})
		return err == nil
	}))
	require.NoError(t, c.stabilize(20, func() bool { return c.node(fresh).HardState().Commit >= i }))
	c.heal()
	require.NoError(t, c.stabilize(100, func() bool {
		return !slices.Contains(c.node(old).Conf().Voters, old) && c.nodes[old].sm.index >= i
	}))
	require.Equal(t, ConfState{Voters: sortedIDs(slices.DeleteFunc([]NodeID{1, 2, 3}, func(id NodeID) bool { return id == old }))},
		c.node(fresh).Conf())
}

func TestRemovedNodeDoesNotDisrupt(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	victim := NodeID(1)
	if victim == lead {
		victim = 2
	}
	// The victim is removed while it cannot hear about it, and campaigns
	// the whole time (it still believes it is a voter).
	c.isolate(victim)
	i, err := c.changeConf(ConfRemove, victim)
	require.NoError(t, err)
	require.NoError(t, c.stabilize(20, func() bool { return c.node(lead).HardState().Commit >= i }))
	for range 60 {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(1000))
	}
	c.heal()
	term := c.node(lead).HardState().Term
	require.NoError(t, c.stabilize(100, func() bool { return !slices.Contains(c.node(victim).Conf().Voters, victim) }))
	for range 100 {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(1000))
	}
	require.Equal(t, lead, c.leader(), "the removed node disrupted the leader")
	require.Equal(t, term, c.node(lead).HardState().Term)
}

func TestJoiningNodeGetsSnapshot(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	for k := range 10 {
		_, _, err := c.node(lead).Propose([]byte{byte(k)})
		require.NoError(t, err)
	}
	require.NoError(t, c.deliverAll(10000))
	require.NoError(t, c.snapshot(lead))
	require.NoError(t, c.join(4))
	i, err := c.changeConf(ConfAddLearner, 4)
	require.NoError(t, err)
	require.NoError(t, c.stabilize(50, func() bool { return c.nodes[4].sm.index >= i }))
	require.Equal(t, c.nodes[lead].sm.hash, c.nodes[4].sm.hash)
	require.Equal(t, []NodeID{4}, c.node(4).Conf().Learners)

	// A snapshot taken past a configuration entry records it.
	require.NoError(t, c.snapshot(4))
	require.Equal(t, []NodeID{4}, c.nodes[4].store.snap.Conf.Learners)
	// Restarting the joined node keeps its membership.
	c.crash(4)
	require.NoError(t, c.restart(4))
	require.Equal(t, []NodeID{4}, c.node(4).Conf().Learners)
}

func TestJoinConfigValidation(t *testing.T) {
	_, err := NewNode(Config{ID: 4, Join: true, Peers: []NodeID{1}}, PersistentState{})
	require.Error(t, err)
	n, err := NewNode(Config{ID: 4, Join: true}, PersistentState{})
	require.NoError(t, err)
	for range 100 {
		n.Tick()
	}
	require.Equal(t, Follower, n.Status().Role, "a node with no membership never campaigns")
}

func TestConfEntryRoundTrip(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ids := func(label string) []NodeID {
			raw := rapid.SliceOfDistinct(rapid.Uint64Range(1, 1<<40), func(v uint64) uint64 { return v }).Draw(rt, label)
			out := make([]NodeID, len(raw))
			for i, v := range raw {
				out[i] = NodeID(v)
			}
			return sortedIDs(out)
		}
		c := confEntry{
			Change: ConfChange{Type: ConfChangeType(rapid.IntRange(1, 3).Draw(rt, "type")),
				Node: NodeID(rapid.Uint64Range(1, 1<<40).Draw(rt, "node")), Context: rapid.SliceOf(rapid.Byte()).Draw(rt, "ctx")},
			Result: ConfState{Voters: ids("voters"), Learners: ids("learners")},
		}
		cc, conf, err := DecodeConfChange(c.encode())
		require.NoError(rt, err)
		if len(c.Change.Context) == 0 {
			c.Change.Context = nil
		}
		require.Equal(rt, c.Change, cc)
		require.True(rt, c.Result.Equal(conf))
	})
}

func TestDecodeConfChangeGarbage(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		data := rapid.SliceOf(rapid.Byte()).Draw(rt, "data")
		_, _, _ = DecodeConfChange(data) // must not panic
	})
	for _, bad := range [][]byte{nil, {1}, {2, 1, 1, 0, 0, 0}, {1, 9, 1, 0, 0, 0}, {1, 1, 0, 0, 0, 0}, {1, 1, 1, 5}, {1, 1, 1, 0, 2, 2, 1, 0}, {1, 1, 1, 0, 0, 0, 7}} {
		_, _, err := DecodeConfChange(bad)
		require.Error(t, err, "%v", bad)
	}
}

func TestMalformedConfEntryRefused(t *testing.T) {
	n, err := NewNode(Config{ID: 2, Peers: []NodeID{1, 2, 3}}, PersistentState{})
	require.NoError(t, err)
	err = n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 1, Entries: []Entry{{Term: 1, Index: 1, Type: EntryConfChange, Data: []byte{1, 1}}}})
	require.Error(t, err)
	err = n.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 1, Entries: []Entry{{Term: 1, Index: 1, Type: 7}}})
	require.Error(t, err)
	require.Zero(t, n.LastIndex())
}

func TestRemovedLeaderLearnsCommitFromNextLeader(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	old, err := c.electLeader()
	require.NoError(t, err)
	// The leader proposes its own removal, but no acknowledgement reaches
	// it (a slow disk, a one-way cut): it cannot commit, loses its quorum
	// and steps down; another voter, which has the entry, commits it.
	for _, id := range c.ids {
		if id != old {
			c.setCut(id, old, true)
		}
	}
	i, err := c.changeConf(ConfRemove, old)
	require.NoError(t, err)
	require.NoError(t, c.stabilize(100, func() bool { l := c.leader(); return l != None && l != old }))
	c.heal()
	// The new leader replicates to the removed node until it has the
	// commit, so it learns it is out (and its runtime stops it).
	require.NoError(t, c.stabilize(100, func() bool { return c.node(old).HardState().Commit >= i }))
	require.NotContains(t, c.node(old).Conf().Voters, old)
	require.NotEqual(t, Leader, c.node(old).Status().Role)
}

func TestInformRemovedReachesNodeCutOffDuringRemoval(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	victim := lead%3 + 1
	other := victim%3 + 1
	if other == lead {
		other = other%3 + 1
	}
	c.isolate(victim)
	i, err := c.changeConf(ConfRemove, victim)
	require.NoError(t, err)
	require.NoError(t, c.stabilize(20, func() bool { return c.committedEverywhere(i) }))
	// Leadership moves on before the victim is back: the new leader has
	// no reason to talk to it, so it never hears of its removal…
	require.NoError(t, c.node(lead).TransferLeadership(other))
	require.NoError(t, c.stabilize(50, func() bool { return c.leader() == other }))
	c.heal()
	for range 50 {
		require.NoError(t, c.tickAll())
		require.NoError(t, c.deliverAll(1000))
	}
	require.Contains(t, c.node(victim).Conf().Voters, victim)
	// …until the runtime, which has the tombstone, tells the leader.
	c.node(other).InformRemoved(victim)
	require.NoError(t, c.stabilize(50, func() bool { return !slices.Contains(c.node(victim).Conf().Voters, victim) }))
	require.GreaterOrEqual(t, c.node(victim).HardState().Commit, i)
	require.Equal(t, other, c.leader())
}

// Status reports a change as committed only once it is: until then it is
// in force (Conf) but a leader change may still undo it (CommittedConf).
func TestStatusCommittedConfLeavesOutAPendingChange(t *testing.T) {
	c, err := newCluster(3, 1, nil)
	require.NoError(t, err)
	lead, err := c.electLeader()
	require.NoError(t, err)
	require.NoError(t, c.join(4))
	for k := range 5 {
		_, _, err := c.node(lead).Propose([]byte{byte(k)})
		require.NoError(t, err)
	}
	require.NoError(t, c.deliverAll(10000))
	before := c.node(lead).Status()
	require.Equal(t, before.Conf, before.CommittedConf)

	i, err := c.changeConf(ConfAddLearner, 4)
	require.NoError(t, err)
	st := c.node(lead).Status()
	require.Equal(t, []NodeID{4}, st.Conf.Learners, "in force once appended")
	require.Empty(t, st.CommittedConf.Learners, "not committed yet")
	require.Equal(t, before.Conf.Voters, st.CommittedConf.Voters)

	require.NoError(t, c.stabilize(20, func() bool { return c.committedEverywhere(i) }))
	st = c.node(lead).Status()
	require.Equal(t, []NodeID{4}, st.CommittedConf.Learners)
	require.Equal(t, st.Conf, st.CommittedConf)
}
