package disk

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

func ents(term uint64, from, to uint64) []core.Entry {
	var out []core.Entry
	for i := from; i <= to; i++ {
		out = append(out, core.Entry{Term: term, Index: i, Data: []byte{byte(i), byte(term)}})
	}
	return out
}

func indexes(es []core.Entry) (first, last uint64, terms []uint64) {
	if len(es) == 0 {
		return 0, 0, nil
	}
	for _, e := range es {
		terms = append(terms, e.Term)
	}
	return es[0].Index, es[len(es)-1].Index, terms
}

func reopen(t *testing.T, fsys FS, dir string, opts Options) (*WAL, *Recovered) {
	t.Helper()
	w, rec, err := Open(fsys, dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return w, rec
}

// walFS runs a test against both FS implementations.
func walFS(t *testing.T, test func(t *testing.T, fsys FS, dir string)) {
	t.Run("Mem", func(t *testing.T) { test(t, newTestMemFS(1), "/d/wal") })
	t.Run("OS", func(t *testing.T) { test(t, OSFS{}, filepath.Join(t.TempDir(), "wal")) })
}

func TestWALRoundTrip(t *testing.T) {
	walFS(t, func(t *testing.T, fsys FS, dir string) {
		if ok, err := Exists(fsys, dir); ok || err != nil {
			t.Fatalf("Exists before Create = %v, %v", ok, err)
		}
		if _, _, err := Open(fsys, dir, Options{}); !errors.Is(err, ErrNoWAL) {
			t.Fatalf("Open before Create: %v", err)
		}
		w, err := Create(fsys, dir, Options{})
		must(t, err)
		if _, err := Create(fsys, dir, Options{}); err == nil {
			t.Fatal("second Create succeeded")
		}
		if ok, err := Exists(fsys, dir); !ok || err != nil {
			t.Fatalf("Exists after Create = %v, %v", ok, err)
		}
		boot := core.SnapshotMeta{Conf: core.ConfState{Voters: []core.NodeID{1, 2, 3}, Learners: []core.NodeID{4}}}
		must(t, w.InstallSnapshot(boot))
		in := ents(1, 1, 5)
		in[2].Type = core.EntryConfChange
		in[3].Data = nil
		must(t, w.Append(core.HardState{Term: 1, Vote: 2, Commit: 3}, in))
		must(t, w.Sync())
		must(t, w.Sync()) // nothing new: no I/O, no error
		must(t, w.Close())
		if err := w.Append(core.HardState{}, ents(1, 6, 6)); err == nil {
			t.Fatal("Append after Close succeeded")
		}
		_, rec := reopen(t, fsys, dir, Options{})
		got := stateOf(rec)
		want := walState{hs: core.HardState{Term: 1, Vote: 2, Commit: 3}, snap: boot, log: in}
		if !got.equal(want) {
			t.Fatalf("recovered %v, want %v", got, want)
		}
		if !rec.Snapshot.Conf.Equal(boot.Conf) || rec.Entries[2].Type != core.EntryConfChange {
			t.Fatalf("recovered snapshot %+v, entry %+v", rec.Snapshot, rec.Entries[2])
		}
		if rec.TornTail != nil || len(rec.Compacted) != 0 {
			t.Fatalf("clean log reported torn tail %v, compacted %d", rec.TornTail, len(rec.Compacted))
		}
	})
}

func TestWALOverwriteSuffix(t *testing.T) {
	fsys := newTestMemFS(1)
	w, err := Create(fsys, "/d/wal", Options{})
	must(t, err)
	must(t, w.Append(core.HardState{Term: 1, Commit: 2}, ents(1, 1, 10)))
	must(t, w.Append(core.HardState{Term: 2}, ents(2, 6, 8))) // conflicting suffix from 6
	must(t, w.Append(core.HardState{}, ents(3, 8, 9)))
	if w.LastIndex() != 9 {
		t.Fatalf("LastIndex %d", w.LastIndex())
	}
	must(t, w.Sync())
	_, rec := reopen(t, fsys, "/d/wal", Options{})
	first, last, terms := indexes(rec.Entries)
	if first != 1 || last != 9 || terms[4] != 1 || terms[5] != 2 || terms[6] != 2 || terms[7] != 3 || terms[8] != 3 {
		t.Fatalf("log %d..%d terms %v", first, last, terms)
	}
	if rec.HardState != (core.HardState{Term: 2}) {
		t.Fatalf("hard state %+v", rec.HardState)
	}
}

func TestWALSnapshotMarkers(t *testing.T) {
	fsys := newTestMemFS(1)
	w, err := Create(fsys, "/d/wal", Options{})
	must(t, err)
	must(t, w.Append(core.HardState{Term: 1, Commit: 8}, ents(1, 1, 10)))
	// Compaction keeps the entries after the snapshot.
	must(t, w.MarkCompacted(core.SnapshotMeta{Index: 7, Term: 1}))
	must(t, w.Sync())
	_, rec := reopen(t, fsys, "/d/wal", Options{})
	if first, last, _ := indexes(rec.Entries); first != 8 || last != 10 || rec.Snapshot.Index != 7 {
		t.Fatalf("after compaction: snap %d, log %d..%d", rec.Snapshot.Index, first, last)
	}
	if first, last, _ := indexes(rec.Compacted); first != 1 || last != 7 {
		t.Fatalf("compacted %d..%d", first, last)
	}
	if es, ok := rec.EntriesAfter(3); !ok || es[0].Index != 4 || len(es) != 7 {
		t.Fatalf("EntriesAfter(3) = %d entries, %v", len(es), ok)
	}
	if es, ok := rec.EntriesAfter(10); !ok || len(es) != 0 {
		t.Fatalf("EntriesAfter(10) = %v, %v", es, ok)
	}
	if _, ok := rec.EntriesAfter(11); ok {
		t.Fatal("EntriesAfter beyond the log succeeded")
	}

	// Installing a snapshot replaces the whole log, even entries above it.
	w, _ = reopen(t, fsys, "/d/wal", Options{})
	must(t, w.InstallSnapshot(core.SnapshotMeta{Index: 9, Term: 4}))
	must(t, w.Append(core.HardState{Term: 4, Commit: 9}, ents(4, 10, 11)))
	must(t, w.Sync())
	_, rec = reopen(t, fsys, "/d/wal", Options{})
	if first, last, terms := indexes(rec.Entries); first != 10 || last != 11 || terms[0] != 4 || rec.Snapshot.Index != 9 {
		t.Fatalf("after install: snap %d, log %d..%d %v", rec.Snapshot.Index, first, last, terms)
	}
	if len(rec.Compacted) != 0 {
		t.Fatalf("install left %d compacted entries", len(rec.Compacted))
	}
	if _, ok := rec.EntriesAfter(5); ok {
		t.Fatal("EntriesAfter below an installed snapshot succeeded")
	}
}

func TestWALAppendValidation(t *testing.T) {
	fsys := newTestMemFS(1)
	w, err := Create(fsys, "/d/wal", Options{})
	must(t, err)
	must(t, w.Append(core.HardState{Term: 1, Commit: 3}, ents(1, 1, 5)))
	must(t, w.MarkCompacted(core.SnapshotMeta{Index: 2, Term: 1}))
	bad := []struct {
		name string
		err  error
	}{
		{"gap", w.Append(core.HardState{}, ents(1, 7, 7))},
		{"not consecutive", w.Append(core.HardState{}, []core.Entry{{Index: 6}, {Index: 8}})},
		{"below snapshot", w.Append(core.HardState{}, ents(2, 2, 2))},
		{"rewrites committed", w.Append(core.HardState{}, ents(2, 3, 3))},
		{"commit beyond last", w.Append(core.HardState{Term: 1, Commit: 9}, ents(1, 6, 6))},
		{"install older", w.InstallSnapshot(core.SnapshotMeta{Index: 1})},
		{"install below commit", w.InstallSnapshot(core.SnapshotMeta{Index: 2})},
		{"compact beyond last", w.MarkCompacted(core.SnapshotMeta{Index: 6})},
		{"compact older", w.MarkCompacted(core.SnapshotMeta{Index: 1})},
		{"release beyond durable snapshot", w.ReleaseTo(2)},
	}
	for _, b := range bad {
		if b.err == nil {
			t.Errorf("%s: accepted", b.name)
		}
	}
	// None of the rejected calls changed anything.
	must(t, w.Sync())
	_, rec := reopen(t, fsys, "/d/wal", Options{})
	if first, last, _ := indexes(rec.Entries); first != 3 || last != 5 || rec.HardState.Commit != 3 {
		t.Fatalf("after rejected calls: log %d..%d, %+v", first, last, rec.HardState)
	}
}

// TestWALSegmentsAndRelease fills many small segments, compacts and
// releases, and checks that recovery from the remaining segments returns the
// same log, including when compaction markers fall inside released ranges.
func TestWALSegmentsAndRelease(t *testing.T) {
	fsys := newTestMemFS(1)
	opts := Options{SegmentSize: 512}
	w, err := Create(fsys, "/d/wal", opts)
	must(t, err)
	var commit uint64
	for i := uint64(1); i <= 200; i += 4 {
		commit = i
		must(t, w.Append(core.HardState{Term: 1, Commit: commit}, ents(1, i, i+3)))
		if i%40 == 1 {
			must(t, w.MarkCompacted(core.SnapshotMeta{Index: i, Term: 1}))
		}
	}
	must(t, w.Sync())
	before := len(w.Segments())
	if before < 10 {
		t.Fatalf("only %d segments", before)
	}
	must(t, w.ReleaseTo(161))
	after := w.Segments()
	if len(after) >= before || len(after) < 2 {
		t.Fatalf("release left %d of %d segments", len(after), before)
	}
	names, err := fsys.ReadDir("/d/wal")
	must(t, err)
	if len(names) != len(after) || names[0] != after[0] {
		t.Fatalf("directory %v, WAL says %v", names, after)
	}
	_, rec := reopen(t, fsys, "/d/wal", opts)
	if first, last, _ := indexes(rec.Entries); rec.Snapshot.Index != 161 || first != 162 || last != 200 {
		t.Fatalf("after release: snap %d log %d..%d", rec.Snapshot.Index, first, last)
	}
	if first, last, _ := indexes(rec.Compacted); last != 161 || first > 161 {
		t.Fatalf("compacted %d..%d", first, last)
	}
	// Releasing everything below the durable snapshot never takes the
	// active segment.
	w, _ = reopen(t, fsys, "/d/wal", opts)
	must(t, w.ReleaseTo(161))
	if len(w.Segments()) < 1 {
		t.Fatal("released the active segment")
	}
	// A segment missing in the middle is corruption.
	must(t, fsys.Remove(filepath.Join("/d/wal", after[1])))
	_, _, err = Open(fsys, "/d/wal", opts)
	var ce *CorruptionError
	if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "missing") {
		t.Fatalf("missing segment: %v", err)
	}
}

// TestWALReleasedEntriesMustBeCovered deletes old segments by hand (as a
// buggy release would) and expects recovery to notice the missing entries.
func TestWALReleasedEntriesMustBeCovered(t *testing.T) {
	fsys := newTestMemFS(1)
	opts := Options{SegmentSize: 256}
	w, err := Create(fsys, "/d/wal", opts)
	must(t, err)
	must(t, w.Append(core.HardState{}, ents(1, 1, 40)))
	must(t, w.Sync())
	segs := w.Segments()
	must(t, fsys.Remove(filepath.Join("/d/wal", segs[0])))
	_, _, err = Open(fsys, "/d/wal", opts)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("uncovered released entries: %v", err)
	}
}

func TestWALHardStateDeduplicated(t *testing.T) {
	fsys := newTestMemFS(1)
	w, err := Create(fsys, "/d/wal", Options{})
	must(t, err)
	hs := core.HardState{Term: 1, Vote: 1}
	must(t, w.Append(hs, nil))
	must(t, w.Sync())
	size := w.off
	must(t, w.Append(hs, nil)) // unchanged: no record
	must(t, w.Sync())
	if w.off != size {
		t.Fatalf("unchanged hard state grew the log from %d to %d", size, w.off)
	}
}

func TestWALStickyFailure(t *testing.T) {
	fsys := newTestMemFS(1)
	w, err := Create(fsys, "/d/wal", Options{})
	must(t, err)
	must(t, w.Append(core.HardState{}, ents(1, 1, 3)))
	must(t, w.Sync())
	fsys.Intercept = func(op Op, _ string) error {
		if op == OpSync {
			return syscall.EIO
		}
		return nil
	}
	must(t, w.Append(core.HardState{}, ents(1, 4, 4)))
	if err := w.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync with a failing fsync: %v", err)
	}
	fsys.Intercept = nil
	// The WAL stays failed: the kernel may have dropped the dirty pages.
	if err := w.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync after a failed fsync: %v", err)
	}
	for _, err := range []error{
		w.Append(core.HardState{}, ents(1, 5, 5)),
		w.InstallSnapshot(core.SnapshotMeta{Index: 9}),
		w.MarkCompacted(core.SnapshotMeta{Index: 1}),
		w.ReleaseTo(0),
	} {
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("after failure: %v", err)
		}
	}
	if err := w.Close(); !errors.Is(err, syscall.EIO) {
		t.Errorf("Close after failure: %v", err)
	}
	_, rec := reopen(t, fsys, "/d/wal", Options{})
	if _, last, _ := indexes(rec.Entries); last < 3 {
		t.Fatalf("recovered up to %d", last)
	}
}

func TestWALFullDisk(t *testing.T) {
	fsys := newTestMemFS(1)
	opts := Options{SegmentSize: 4096}
	w, err := Create(fsys, "/d/wal", opts)
	must(t, err)
	fsys.Faults.CapacityBytes = 10_000
	var synced uint64
	var failure error
	for i := uint64(1); i < 1000; i++ {
		if err := w.Append(core.HardState{}, ents(1, i, i)); err != nil {
			failure = err
			break
		}
		if err := w.Sync(); err != nil {
			failure = err
			break
		}
		synced = i
	}
	if !errors.Is(failure, syscall.ENOSPC) {
		t.Fatalf("filling the disk: %v", failure)
	}
	fsys.Faults.CapacityBytes = 0
	for _, crash := range []bool{false, true} {
		if crash {
			fsys.Crash()
		}
		w, rec := reopen(t, fsys, "/d/wal", opts)
		if _, last, _ := indexes(rec.Entries); last < synced {
			t.Fatalf("crash=%v: recovered up to %d, synced %d", crash, last, synced)
		}
		must(t, w.Close())
	}
}

func TestWALReadErrorIsNotCorruption(t *testing.T) {
	fsys := newTestMemFS(1)
	w, err := Create(fsys, "/d/wal", Options{})
	must(t, err)
	must(t, w.Append(core.HardState{}, ents(1, 1, 3)))
	must(t, w.Close())
	seg := filepath.Join("/d/wal", w.Segments()[0])
	must(t, fsys.SetReadError(seg, 30, 1))
	_, _, err = Open(fsys, "/d/wal", Options{})
	if !errors.Is(err, syscall.EIO) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("read error: %v", err)
	}
	must(t, fsys.ClearReadErrors(seg))
	reopen(t, fsys, "/d/wal", Options{})
}

func TestWALLeftoverTempAndForeignFiles(t *testing.T) {
	fsys := newTestMemFS(1)
	w, err := Create(fsys, "/d/wal", Options{})
	must(t, err)
	must(t, w.Append(core.HardState{}, ents(1, 1, 1)))
	must(t, w.Close())
	writeFile(t, fsys, "/d/wal/0000000000000002.wal.tmp", []byte("half a segment"), true)
	writeFile(t, fsys, "/d/wal/README", []byte("not a segment"), true)
	reopen(t, fsys, "/d/wal", Options{})
	if _, err := fsys.Open("/d/wal/0000000000000002.wal.tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("leftover temp file still there: %v", err)
	}
	if _, err := fsys.Open("/d/wal/README"); err != nil {
		t.Fatalf("foreign file removed: %v", err)
	}
}

func TestSegmentNames(t *testing.T) {
	if segmentName(0x1f) != "000000000000001f.wal" {
		t.Fatal(segmentName(0x1f))
	}
	for _, bad := range []string{"1f.wal", "000000000000001f.log", "00000000000000zz.wal"} {
		if _, ok := parseSegmentName(bad); ok {
			t.Errorf("parsed %q", bad)
		}
	}
	if seq, ok := parseSegmentName("000000000000001f.wal"); !ok || seq != 0x1f {
		t.Fatal("parse")
	}
}

// TestWALWritesIntoZerosAhead: the WAL grows a segment only a ZeroAhead
// at a time and writes its records into those zeros; reopened, it takes
// the zeros for the log's clean end (no torn tail, nothing cut) and goes
// on writing into them. A flipped bit in the zeros is damage after the
// last record, not a clean end.
func TestWALWritesIntoZerosAhead(t *testing.T) {
	walFS(t, func(t *testing.T, fsys FS, dir string) {
		opts := Options{ZeroAhead: 4096}
		w, err := Create(fsys, dir, opts)
		must(t, err)
		seg := filepath.Join(dir, w.Segments()[0])
		size := func() int64 { return fileSize(t, fsys, seg) }
		grew, syncs := 0, 0
		last := size()
		for i := uint64(1); i <= 200; i++ {
			must(t, w.Append(core.HardState{Term: 1, Commit: i - 1}, ents(1, i, i)))
			must(t, w.Sync())
			syncs++
			if s := size(); s != last {
				grew, last = grew+1, s
			}
			if last < w.off {
				t.Fatalf("file of %d bytes holds records to %d", last, w.off)
			}
		}
		// 200 records of about 50 bytes each: about 10 KiB, so the file
		// grew three or four times, not at every sync.
		if grew == 0 || grew > 4 {
			t.Fatalf("the file grew at %d of %d syncs", grew, syncs)
		}
		must(t, w.Close())

		w, rec := reopen(t, fsys, dir, opts)
		if rec.TornTail != nil || size() != last {
			t.Fatalf("reopened: torn tail %+v, file %d bytes (was %d)", rec.TornTail, size(), last)
		}
		if first, lastIdx, _ := indexes(rec.Entries); first != 1 || lastIdx != 200 {
			t.Fatalf("recovered entries %d..%d", first, lastIdx)
		}
		end := w.off
		must(t, w.Append(core.HardState{Term: 1, Commit: 200}, ents(1, 201, 210)))
		must(t, w.Sync())
		must(t, w.Close())
		if size() != last {
			t.Fatalf("appending after a reopen grew the file from %d to %d bytes", last, size())
		}
		_, rec = reopen(t, fsys, dir, opts)
		if _, lastIdx, _ := indexes(rec.Entries); lastIdx != 210 || rec.TornTail != nil {
			t.Fatalf("after appending into the zeros: last entry %d, torn tail %+v", lastIdx, rec.TornTail)
		}

		// Damage in the zeros, past the last record.
		f, err := fsys.Open(seg)
		must(t, err)
		_, err = f.WriteAt([]byte{0x40}, last-100)
		must(t, err)
		must(t, f.Sync())
		must(t, f.Close())
		_, _, err = Open(fsys, dir, opts)
		var ce *CorruptionError
		if !errors.As(err, &ce) || ce.Offset <= end || ce.Offset >= last-100 {
			t.Fatalf("a byte set in the zeros at %d (records end past %d): %v", last-100, end, err)
		}
	})
}

// TestWALClosedSegmentsEndInZeros: a segment closed for the next one is
// cut back to its records (so that an older keyvald reads it); one whose
// cut a crash undid, ending in zeros, is read past them into the next.
func TestWALClosedSegmentsEndInZeros(t *testing.T) {
	walFS(t, func(t *testing.T, fsys FS, dir string) {
		opts := Options{SegmentSize: 1024, ZeroAhead: 4096}
		w, err := Create(fsys, dir, opts)
		must(t, err)
		for i := uint64(1); i <= 100; i++ {
			must(t, w.Append(core.HardState{Term: 1, Commit: i - 1}, ents(1, i, i)))
			must(t, w.Sync())
		}
		segs := w.Segments()
		must(t, w.Close())
		if len(segs) < 3 {
			t.Fatalf("%d segments, want several", len(segs))
		}
		for _, name := range segs[:len(segs)-1] {
			b := contents(t, fsys, filepath.Join(dir, name))
			if len(b) == 0 || b[len(b)-1] != trailerByte {
				t.Fatalf("closed segment %s does not end at its last record", name)
			}
		}
		// Zeros after every closed segment's records, as if no cut had
		// reached the disk.
		for _, name := range segs[:len(segs)-1] {
			f, err := fsys.Open(filepath.Join(dir, name))
			must(t, err)
			size, err := f.Size()
			must(t, err)
			must(t, f.Truncate(size+4096))
			must(t, f.Sync())
			must(t, f.Close())
		}
		_, rec := reopen(t, fsys, dir, opts)
		if first, last, _ := indexes(rec.Entries); first != 1 || last != 100 || rec.TornTail != nil {
			t.Fatalf("recovered entries %d..%d, torn tail %+v", first, last, rec.TornTail)
		}
	})
}
