package sim

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// The nemesis never removes a voter below three, nor so that the voters
// whose disks may halt them are half of the rest.
func TestSafeMinimum(t *testing.T) {
	w, _ := newWorld(Options{Seed: 1, Nodes: 5, Faults: &Faults{MinDelay: 100, MaxDelay: 1000, StorageNodes: 2}})
	require.True(t, w.nodes[0].storageFault && w.nodes[1].storageFault && !w.nodes[2].storageFault)
	five := core.ConfState{Voters: []core.NodeID{1, 2, 3, 4, 5}, Learners: []core.NodeID{6}}
	require.True(t, w.canRemove(five, 1), "4 voters left, 3 of them healthy")
	require.False(t, w.canRemove(five, 3), "4 voters left, only 2 of them healthy")
	require.True(t, w.canRemove(five, 6), "a learner can always go")
	require.False(t, w.canRemove(five, 9), "not a member")
	require.False(t, w.canRemove(core.ConfState{Voters: []core.NodeID{3, 4, 5}}, 5), "3 voters is the minimum")

	four := core.ConfState{Voters: []core.NodeID{1, 3, 4, 5}}
	require.True(t, w.canRemove(four, 1))
	w.nodes[3].state = nodeHalted // node 4
	require.True(t, w.canRemove(four, 1), "3 left, one halted: 2 of 3 healthy")
	require.False(t, w.canRemove(four, 3), "3 left, one halted and one storage-faulty: 1 of 3 healthy")
	require.True(t, w.canRemove(four, 4), "removing the halted one is fine")
}

// With no other fault, a run changes the membership many times, removes
// leaders, replaces nodes, stops the removed ones and still converges.
func TestMembershipChangesAlone(t *testing.T) {
	res := Run(Options{Seed: 11, Nodes: 3, Faults: &Faults{MinDelay: 100, MaxDelay: 2000, Membership: true, MemberEvery: 150_000}})
	require.NoError(t, res.Err, strings.Join(res.Log[max(0, len(res.Log)-30):], "\n"))
	m := res.Membership
	t.Log(m)
	require.GreaterOrEqual(t, m.Committed(), 20)
	require.Positive(t, m.Adds)
	require.Positive(t, m.Promotions)
	require.Positive(t, m.LeaderRemovals)
	require.Positive(t, m.Replacements)
	require.Positive(t, m.Stopped)
	require.Equal(t, m.Joined, res.Joined)
}

// A node that applies its own removal stops for good; nodes that stopped
// are not members, and every member converged.
func TestRemovedNodesStop(t *testing.T) {
	opts := Options{Seed: 12, Nodes: 3, Faults: &Faults{MinDelay: 100, MaxDelay: 2000, Membership: true, MemberEvery: 150_000}}
	w, _ := newWorld(opts)
	w.run(opts)
	require.NoError(t, w.err)
	members := w.members()
	stopped := 0
	for _, n := range w.nodes {
		if n.state == nodeRemoved {
			stopped++
			require.NotContains(t, members, n.id, "node %d stopped but is a member", n.id)
			require.NotZero(t, n.removedAt)
			require.Contains(t, n.halt, "removed from the cluster")
		}
	}
	require.Positive(t, stopped)
	require.True(t, w.converged())
}
