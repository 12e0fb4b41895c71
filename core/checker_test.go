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
