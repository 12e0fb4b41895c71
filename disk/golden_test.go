package disk

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// testdata/golden is a data directory (wal/ and snap/, laid out as replica
// lays them out) written by the code of commit bd1d991, before the Raft
// protobuf messages of the WAL and of the transport became one package. A
// node's data directory outlives the binary that wrote it, so these files
// must keep opening to exactly the state below. They are never regenerated:
// if the format changes on purpose, the new reader must still read them.

const goldenDir = "testdata/golden"

// Conf change entries carry core's encoding of the change and the
// membership it yields; the WAL stores the bytes as they are.
var (
	goldenPromote3 = []byte{1, byte(core.ConfPromote), 3, 0, 3, 1, 2, 3, 0}
	goldenAdd4     = []byte{1, byte(core.ConfAddLearner), 4, 2, 'n', '4', 3, 1, 2, 3, 1, 4}
)

var (
	goldenInstalled = core.SnapshotMeta{Index: 5, Term: 2, Conf: core.ConfState{Voters: []core.NodeID{1, 2, 3}}}
	goldenCompacted = core.SnapshotMeta{Index: 7, Term: 3, Conf: core.ConfState{
		Voters: []core.NodeID{1, 2, 3}, Learners: []core.NodeID{4},
	}}
)

// writeGoldenHistory is the history the golden directory holds: a
// conflicting tail overwritten, a snapshot installed from a leader, a
// compaction, hard states along the way, over small segments.
func writeGoldenHistory(t *testing.T, fsys FS, dir string) {
	t.Helper()
	w, err := Create(fsys, filepath.Join(dir, "wal"), Options{SegmentSize: 200})
	must(t, err)
	snaps, err := NewSnapshotStore(fsys, filepath.Join(dir, "snap"), 2)
	must(t, err)
	must(t, w.Append(core.HardState{Term: 1, Vote: 1}, []core.Entry{
		{Term: 1, Index: 1, Type: core.EntryConfChange, Data: goldenPromote3},
		{Term: 1, Index: 2, Data: []byte("alpha")},
		{Term: 1, Index: 3, Data: []byte("beta")},
	}))
	must(t, w.Append(core.HardState{Term: 1, Vote: 1, Commit: 2}, nil))
	must(t, w.Append(core.HardState{Term: 2, Vote: 2, Commit: 2}, []core.Entry{{Term: 2, Index: 3, Data: []byte("gamma")}}))
	must(t, w.Sync())
	must(t, saveSnapshot(t, snaps, goldenInstalled, []byte("state at 5")))
	must(t, w.InstallSnapshot(goldenInstalled))
	must(t, w.Append(core.HardState{Term: 3, Vote: 3, Commit: 5}, []core.Entry{
		{Term: 3, Index: 6, Data: []byte("delta")},
		{Term: 3, Index: 7, Type: core.EntryConfChange, Data: goldenAdd4},
		{Term: 3, Index: 8},
	}))
	must(t, w.Append(core.HardState{Term: 3, Vote: 3, Commit: 8}, nil))
	must(t, w.Sync())
	must(t, saveSnapshot(t, snaps, goldenCompacted, []byte("state at 7")))
	must(t, w.MarkCompacted(goldenCompacted))
	must(t, w.Append(core.HardState{Term: 4, Commit: 8}, []core.Entry{{Term: 4, Index: 9, Data: []byte("epsilon")}}))
	must(t, w.Close())
}

func TestGoldenDataDirOpens(t *testing.T) {
	dir := t.TempDir()
	must(t, os.CopyFS(dir, os.DirFS(goldenDir)))
	w, rec, err := Open(OSFS{}, filepath.Join(dir, "wal"), Options{SegmentSize: 200})
	must(t, err)
	defer w.Close()
	want := &Recovered{
		HardState: core.HardState{Term: 4, Commit: 8},
		Snapshot:  goldenCompacted,
		Compacted: []core.Entry{
			{Term: 3, Index: 6, Data: []byte("delta")},
			{Term: 3, Index: 7, Type: core.EntryConfChange, Data: goldenAdd4},
		},
		Entries: []core.Entry{
			{Term: 3, Index: 8},
			{Term: 4, Index: 9, Data: []byte("epsilon")},
		},
	}
	if !reflect.DeepEqual(rec, want) {
		t.Fatalf("recovered\n%+v\nwant\n%+v", *rec, *want)
	}
	if len(w.Segments()) < 2 || w.LastIndex() != 9 {
		t.Fatalf("segments %v, last index %d: the fixture spans several segments up to 9", w.Segments(), w.LastIndex())
	}

	snaps, err := NewSnapshotStore(OSFS{}, filepath.Join(dir, "snap"), 2)
	must(t, err)
	for _, s := range []struct {
		meta core.SnapshotMeta
		data string
	}{{goldenInstalled, "state at 5"}, {goldenCompacted, "state at 7"}} {
		snap, err := snaps.Open(snapName(s.meta.Index, s.meta.Term))
		must(t, err)
		data, err := io.ReadAll(snap)
		must(t, err)
		must(t, snap.Close())
		if !reflect.DeepEqual(snap.Meta, s.meta) || string(data) != s.data {
			t.Errorf("snapshot %s: meta %+v data %q, want %+v %q", snap.File, snap.Meta, data, s.meta, s.data)
		}
	}
}

// TestGoldenWrittenAlike: today's code writes the golden history byte for
// byte as the old code did, so old and new binaries read each other's
// directories. A deliberate format change removes this test, never the
// fixture.
func TestGoldenWrittenAlike(t *testing.T) {
	fsys := newTestMemFS(1)
	writeGoldenHistory(t, fsys, "/d")
	for _, sub := range []string{"wal", "snap"} {
		names, err := fsys.ReadDir(filepath.Join("/d", sub))
		must(t, err)
		entries, err := os.ReadDir(filepath.Join(goldenDir, sub))
		must(t, err)
		var golden []string
		for _, e := range entries {
			golden = append(golden, e.Name())
		}
		if !slices.Equal(names, golden) {
			t.Fatalf("%s: wrote %v, the fixture has %v", sub, names, golden)
		}
		for _, n := range names {
			want, err := os.ReadFile(filepath.Join(goldenDir, sub, n))
			must(t, err)
			got := contents(t, fsys, filepath.Join("/d", sub, n))
			if sub == "wal" && n == names[len(names)-1] {
				// The fixture's segments were written before the WAL wrote
				// zeros ahead of its records: the newest segment's zeros
				// (closed ones are cut back to their records) are not part
				// of the format.
				got = recordsOf(got)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s/%s differs from the fixture:\ngot  %x\nwant %x", sub, n, got, want)
			}
		}
	}
}
