package kvstore

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSummarizeSnapshotCountsAndChecks(t *testing.T) {
	snap := sampleSnapshot(t)
	sum, err := SummarizeSnapshot(bytes.NewReader(snap))
	require.NoError(t, err)
	// sampleSnapshot: "alpha" and "beta" written, two sessions registered,
	// seven entries applied.
	require.Equal(t, SnapshotSummary{SnapshotInfo: SnapshotInfo{AppliedIndex: 7, Revision: 2}, Keys: 2, History: 2, Sessions: 2}, sum)

	_, err = SummarizeSnapshot(bytes.NewReader(snap[:len(snap)-1]))
	require.True(t, errors.Is(err, ErrBadSnapshot), "a truncated snapshot: %v", err)
	damaged := append([]byte(nil), snap...)
	damaged[len(damaged)/2] ^= 1
	_, err = SummarizeSnapshot(bytes.NewReader(damaged))
	require.True(t, errors.Is(err, ErrBadSnapshot), "a damaged snapshot: %v", err)
}

func TestCopySnapshotDropsKeys(t *testing.T) {
	snap := sampleSnapshot(t) // keys "alpha" and "beta"
	var out bytes.Buffer
	sum, err := CopySnapshot(bytes.NewReader(snap), &out, func(k []byte) bool { return string(k) == "alpha" })
	require.NoError(t, err)
	require.Equal(t, SnapshotSummary{SnapshotInfo: SnapshotInfo{AppliedIndex: 7, Revision: 2}, Keys: 1, History: 1, Sessions: 2}, sum)

	// The copy is a valid snapshot of the same state without the key.
	s := NewMemory(Options{})
	require.NoError(t, s.Restore(bytes.NewReader(out.Bytes())))
	g, err := s.Get([]byte("alpha"))
	require.NoError(t, err)
	require.False(t, g.Found)
	g, err = s.Get([]byte("beta"))
	require.NoError(t, err)
	require.True(t, g.Found)
	require.Equal(t, uint64(7), s.AppliedIndex())

	// Damage in the source is reported, as Restore would.
	damaged := append([]byte(nil), snap...)
	damaged[len(damaged)/2] ^= 1
	_, err = CopySnapshot(bytes.NewReader(damaged), io.Discard, func([]byte) bool { return false })
	require.ErrorIs(t, err, ErrBadSnapshot)
}

// A copy keeps its source's history order: a format-2 snapshot (an older
// build's backup, testdata/layout5.snap) is copied in format 2, which
// reads back as the same state; a current one is copied in format 3.
func TestCopySnapshotKeepsTheFormat(t *testing.T) {
	old, err := os.ReadFile("testdata/layout5.snap")
	require.NoError(t, err)
	cur := sampleSnapshot(t)
	for _, c := range []struct {
		name   string
		snap   []byte
		format byte
	}{{"format 2", old, snapshotFormatKeyOrder}, {"format 3", cur, snapshotFormatVersion}} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.format, c.snap[len(snapshotMagic)+3], "the source's format")
			var out bytes.Buffer
			sum, err := CopySnapshot(bytes.NewReader(c.snap), &out, func([]byte) bool { return false })
			require.NoError(t, err)
			require.Equal(t, c.format, out.Bytes()[len(snapshotMagic)+3])
			want, err := SummarizeSnapshot(bytes.NewReader(c.snap))
			require.NoError(t, err)
			require.Equal(t, want, sum)

			from, copied := NewMemory(Options{}), NewMemory(Options{})
			require.NoError(t, from.Restore(bytes.NewReader(c.snap)))
			require.NoError(t, copied.Restore(bytes.NewReader(out.Bytes())))
			require.Equal(t, stateOf(t, from), stateOf(t, copied))
		})
	}
}
