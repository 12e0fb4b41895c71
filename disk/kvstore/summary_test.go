package kvstore

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSummarizeSnapshotCountsAndChecks(t *testing.T) {
	snap := sampleSnapshot(t)
	sum, err := SummarizeSnapshot(bytes.NewReader(snap))
	require.NoError(t, err)
	// sampleSnapshot: "alpha" and "beta" written, two sessions registered,
	// seven entries applied.
	require.Equal(t, SnapshotSummary{SnapshotInfo: SnapshotInfo{AppliedIndex: 7, Revision: 2}, Keys: 2, Sessions: 2}, sum)

	_, err = SummarizeSnapshot(bytes.NewReader(snap[:len(snap)-1]))
	require.True(t, errors.Is(err, ErrBadSnapshot), "a truncated snapshot: %v", err)
	damaged := append([]byte(nil), snap...)
	damaged[len(damaged)/2] ^= 1
	_, err = SummarizeSnapshot(bytes.NewReader(damaged))
	require.True(t, errors.Is(err, ErrBadSnapshot), "a damaged snapshot: %v", err)
}
