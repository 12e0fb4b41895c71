//go:build linux

package kvstore

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// mappedKiB is how much of the file at path this process has resident
// through its memory maps, from /proc/self/smaps.
func mappedKiB(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	require.NoError(t, err)
	defer f.Close()
	var total int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = strings.HasSuffix(line, " "+path)
			continue
		}
		if rest, ok := strings.CutPrefix(line, "Rss:"); ok && in {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			require.NoError(t, err)
			total += kib
		}
	}
	require.NoError(t, sc.Err())
	return total
}

// A snapshot's scan of the history leaves little of the file mapped into
// the process, and so do opening a store (which reads the whole history
// to build its key index), restoring a snapshot (dropping the old state
// reads every page of it) and a compaction (which reads the history to
// plan what to remove): without dropMapped, every page read would stay
// resident.
func TestScansLeaveTheFileUnmapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	s, err := OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	value := strings.Repeat("v", 1000)
	next := uint64(1)
	for round := range 4 {
		batch := make([]Entry, 0, 2000)
		for k := range 10000 {
			batch = append(batch, Entry{Index: next, Data: putCmd(0, 0, fmt.Sprintf("%05d-%d", k*7919%10000, round), value)})
			next++
			if len(batch) == cap(batch) {
				_, err := s.Apply(batch)
				require.NoError(t, err)
				batch = batch[:0]
			}
		}
	}
	st, err := os.Stat(path)
	require.NoError(t, err)
	fileKiB := st.Size() >> 10
	require.Greater(t, fileKiB, int64(40<<10), "the history should be about 40 MB")

	f, err := s.Freeze()
	require.NoError(t, err)
	require.NoError(t, f.WriteSnapshot(io.Discard))
	require.NoError(t, f.Close())
	after := mappedKiB(t, path)
	require.Less(t, after, fileKiB/10, "resident after a snapshot: %d KiB of a %d KiB file", after, fileKiB)

	require.NoError(t, s.Close())
	s, err = OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	defer s.Close()
	opened := mappedKiB(t, path)
	require.Less(t, opened, fileKiB/10, "resident after opening: %d KiB of a %d KiB file", opened, fileKiB)

	var snap bytes.Buffer
	f, err = s.Freeze()
	require.NoError(t, err)
	require.NoError(t, f.WriteSnapshot(&snap))
	require.NoError(t, f.Close())
	require.NoError(t, s.Restore(&snap))
	restored := mappedKiB(t, path)
	require.Less(t, restored, fileKiB/10, "resident after restoring a snapshot: %d KiB of a %d KiB file", restored, fileKiB)

	res, err := s.Apply([]Entry{{Index: next, Data: EncodeCompact(next-1, "")}})
	require.NoError(t, err)
	require.Equal(t, StatusOK, res[0].Status, "compaction: %+v", res[0])
	compacted := mappedKiB(t, path)
	require.Less(t, compacted, fileKiB/10, "resident after a compaction: %d KiB of a %d KiB file", compacted, fileKiB)
}

// Writes alone, with no snapshot or compaction to hand the pages back,
// leave no more than about handBackEvery of the file mapped, although
// each small transaction reads, through the map, the page of history it
// appends to (the one the one before it wrote).
func TestWritesLeaveTheFileUnmapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	s, err := OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	defer s.Close()
	value := strings.Repeat("v", 256)
	var most int64
	for next := uint64(1); next <= 120_000; {
		batch := make([]Entry, 0, 10)
		for range cap(batch) {
			batch = append(batch, Entry{Index: next, Data: putCmd(0, 0, fmt.Sprintf("%05d", next%5000), value)})
			next++
		}
		_, err := s.Apply(batch)
		require.NoError(t, err)
		if next%10_000 == 1 {
			most = max(most, mappedKiB(t, path))
		}
	}
	st, err := os.Stat(path)
	require.NoError(t, err)
	fileKiB := st.Size() >> 10
	require.Greater(t, fileKiB, int64(32<<10), "the history should be about 40 MB")
	require.Less(t, most, int64(2*handBackEvery>>10), "resident at most %d KiB of a %d KiB file", most, fileKiB)
}

// Small commits into a file whose history a compaction freed map little
// of it: each commit reads, through the map, the pages the one before it
// wrote, somewhere in the freed space, so that a hand-back counted in
// bytes of entries alone (a few hundred a commit here) would come many
// thousands of commits and thousands of mapped pages apart. With 4 MiB of
// entries as the only bound, 3.4 MiB of the file was mapped here.
func TestSmallCommitsAfterACompactionLeaveTheFileUnmapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	s, err := OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	defer s.Close()
	value := strings.Repeat("v", 256)
	next := uint64(1)
	for range 40 {
		batch := make([]Entry, 0, 2000)
		for range cap(batch) {
			batch = append(batch, Entry{Index: next, Data: putCmd(0, 0, fmt.Sprintf("%05d", next*7919%5000), value)})
			next++
		}
		_, err := s.Apply(batch)
		require.NoError(t, err)
	}
	res, err := s.Apply([]Entry{{Index: next, Data: EncodeCompact(next-1, "")}})
	require.NoError(t, err)
	require.Equal(t, StatusOK, res[0].Status, "compaction: %+v", res[0])
	require.NoError(t, s.FinishCompaction(context.Background()))
	next++
	var most int64
	for i := range 8000 {
		_, err := s.Apply([]Entry{{Index: next, Data: putCmd(0, 0, fmt.Sprintf("%05d", next*7919%5000), value)}})
		require.NoError(t, err)
		next++
		if i%100 == 99 {
			most = max(most, mappedKiB(t, path))
		}
	}
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Less(t, most, int64(2<<10), "resident at most %d KiB of a %d KiB file", most, st.Size()>>10)
}
