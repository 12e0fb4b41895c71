package server

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// The members of a cluster take their snapshots at phases far apart: for
// ids 1 to 3, no two within a fifth of the interval of each other (on the
// circle of the interval), and every phase inside it.
func TestSnapshotPhasesSpreadTheMembers(t *testing.T) {
	const every = 100000
	var phases []uint64
	for id := core.NodeID(1); id <= 3; id++ {
		p := snapshotPhase(id, every)
		require.Less(t, p, uint64(every))
		phases = append(phases, p)
	}
	slices.Sort(phases)
	for i, p := range phases {
		next := phases[(i+1)%len(phases)]
		gap := (next + every - p) % every
		require.GreaterOrEqual(t, gap, uint64(every/5), "phases %v", phases)
	}
	require.Zero(t, snapshotPhase(7, 0), "no interval, no phase")
}
