package core

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// The pipelined driver really overlaps batches, as the server does: nodes
// hold several Readys in flight (here behind a slow disk: persisting lags)
// and take messages and ticks between their stages, and the cluster still
// elects a leader and commits.
func TestPipelinedDriverOverlapsBatches(t *testing.T) {
	c, err := newCluster(3, 11, func(cfg *Config) { cfg.ElectionTick = 20 })
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(11, 7))
	for step := 0; step < 3000; step++ {
		switch a := rng.IntN(10); {
		case a < 4:
			if len(c.queue) > 0 {
				err = c.deliver(rng.IntN(len(c.queue)))
			}
		case a < 5:
			err = c.tickAll()
		case a < 6:
			if lead := c.leader(); lead != None {
				_, _, _ = c.node(lead).Propose([]byte(fmt.Sprintf("p%d", step)))
			}
		default:
			err = pipelineStep(c, rng, 1)
		}
		require.NoError(t, err, "step %d", step)
		require.NoError(t, c.checkDurableMatches(), "step %d", step)
	}
	require.GreaterOrEqual(t, c.overlap.maxInflight, 8, "most batches one node had in flight")
	require.Greater(t, c.overlap.steps, 300, "inputs given to nodes with batches in flight")
	lead := c.leader()
	require.NotEqual(t, None, lead)
	require.Greater(t, c.node(lead).HardState().Commit, uint64(100))
}

// The release-point checks can fail: a vote or an acknowledgement that
// leaves before its promise is durable, a leader whose own match runs ahead
// of its stable log.
func TestReleasePointChecksCatchEarlyReleases(t *testing.T) {
	st := &stable{hs: HardState{Term: 2, Vote: 3}, snap: &SnapshotMeta{}, ents: ents(1, 2)}
	require.NoError(t, checkPromise(st, Message{Type: MsgVoteResp, To: 3, Term: 2}))
	require.Error(t, checkPromise(st, Message{Type: MsgVoteResp, To: 1, Term: 2}), "vote not durable")
	require.Error(t, checkPromise(st, Message{Type: MsgVoteResp, To: 1, Term: 3}), "term not durable")
	require.NoError(t, checkPromise(st, Message{Type: MsgAppResp, Term: 2, Index: 2}))
	require.Error(t, checkPromise(st, Message{Type: MsgAppResp, Term: 2, Index: 3}), "entry not durable")
	require.NoError(t, checkPromise(st, Message{Type: MsgAppResp, Term: 1, Index: 3}), "replaced in a later term")
	require.NoError(t, checkPromise(st, Message{Type: MsgAppResp, Term: 3}), "a stale leader told of a newer term")

	tn := &testNode{node: newTestNode(t, 1, peers(3), 1, 1)}
	makeLeader(t, tn.node) // the leader's Ready is advanced, but nothing is stored
	tn.store = stable{snap: &SnapshotMeta{}, ents: ents(1)}
	require.Error(t, checkDurableMatch(tn))
	tn.store.ents = append(tn.store.ents, Entry{Index: 2, Term: 1})
	require.Error(t, checkDurableMatch(tn), "a different entry at the match index")
	tn.store.ents[1].Term = 2
	require.NoError(t, checkDurableMatch(tn))
}

// A message array handed back with RecycleMessages carries the next
// Ready's messages, emptied first: nothing of the old batch shows through.
func TestRecycledMessageArraysCarryOnlyNewMessages(t *testing.T) {
	n := newTestNode(t, 1, peers(3), 1, 1)
	makeLeader(t, n)
	n.Tick() // a heartbeat round
	rd := n.Ready()
	require.Len(t, rd.Messages, 2, "a heartbeat to each follower")
	first := &rd.Messages[:1][0]
	n.RecycleMessages(rd.Messages)
	require.Equal(t, Message{}, rd.Messages[0], "the old messages were cleared")
	n.Advance(rd)

	n.Tick()
	rd = n.Ready()
	require.Len(t, rd.Messages, 2)
	require.Same(t, first, &rd.Messages[:1][0], "the recycled array is reused")
	for i, m := range rd.Messages {
		require.Equal(t, Message{Type: MsgHeartbeat, From: 1, To: NodeID(i + 2), Term: m.Term, Commit: m.Commit, Context: m.Context}, m)
	}
}
