package disk

import (
	"errors"
	"testing"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// damagedWAL builds a WAL and flips a bit in the middle of its second
// segment; it returns the WAL and what Open says about it.
func damagedWAL(t *testing.T, seed uint64) (builtWAL, *CorruptionError) {
	t.Helper()
	b := buildWALOps(t, seed, 80, MemFaults{}, false)
	if len(b.segs) < 3 {
		t.Fatalf("want at least 3 segments, got %d", len(b.segs))
	}
	seg := b.segs[1]
	must(t, b.fs.FlipBit(seg, fileSize(t, b.fs, seg)/2, 2))
	_, _, ce := b.open(t)
	if ce == nil || ce.WAL == nil {
		t.Fatalf("damage not described: %v", ce)
	}
	return b, ce
}

// TestWALRepairStartsOver: after Repair the WAL opens to exactly the state
// it was given, holds no segment from before, and appends and reopens as
// any other.
func TestWALRepairStartsOver(t *testing.T) {
	b, ce := damagedWAL(t, 2000)
	snap := ce.WAL.Snapshot
	hs := core.HardState{Term: ce.WAL.HardState.Term, Vote: ce.WAL.HardState.Vote, Commit: snap.Index}
	must(t, Repair(b.fs, corruptDir, corruptOpts, snap, hs))
	w, rec, err := Open(b.fs, corruptDir, corruptOpts)
	must(t, err)
	if rec.HardState != hs || !sameMeta(rec.Snapshot, snap) || len(rec.Entries) != 0 || len(rec.Compacted) != 0 {
		t.Fatalf("repaired WAL opened to %+v, want hs %+v snapshot %+v and no entries", rec, hs, snap)
	}
	if segs := w.Segments(); len(segs) != 1 {
		t.Fatalf("segments after repair: %v", segs)
	}
	// Every old segment is kept aside, untouched.
	aside, err := b.fs.ReadDir(RepairedAside(corruptDir, uint64(len(b.segs))+1))
	must(t, err)
	if len(aside) != len(b.segs) {
		t.Fatalf("kept aside: %v, want the %d old segments", aside, len(b.segs))
	}
	next := core.Entry{Index: snap.Index + 1, Term: hs.Term, Data: []byte("after the repair")}
	must(t, w.Append(core.HardState{Term: hs.Term, Vote: hs.Vote, Commit: next.Index}, []core.Entry{next}))
	must(t, w.Sync())
	must(t, w.Close())
	_, rec, err = Open(b.fs, corruptDir, corruptOpts)
	must(t, err)
	if len(rec.Entries) != 1 || string(rec.Entries[0].Data) != "after the repair" {
		t.Fatalf("after appending: %+v", rec.Entries)
	}
	if err := Repair(b.fs, corruptDir, corruptOpts, snap, core.HardState{Term: 9, Commit: snap.Index + 1}); err == nil {
		t.Fatal("a repair whose commit passes its snapshot was accepted")
	}
}

// TestWALRepairCrashAtEveryPoint crashes Repair before each of its
// mutating file operations: the WAL then opens either as before (still
// damaged: the repair can be made again) or as repaired.
func TestWALRepairCrashAtEveryPoint(t *testing.T) {
	configs := []MemFaults{{}, {PartialFlush: true}, {PartialFlush: true, TornWrites: true}}
	sawOld, sawNew := 0, 0
	for crashAt := 1; ; crashAt++ {
		finished := false
		for _, faults := range configs {
			b, ce := damagedWAL(t, 2001)
			snap := ce.WAL.Snapshot
			hs := core.HardState{Term: ce.WAL.HardState.Term, Vote: ce.WAL.HardState.Vote, Commit: snap.Index}
			b.fs.Faults = faults
			count, crashed := 0, false
			b.fs.Intercept = func(op Op, _ string) error {
				if op.Mutates() {
					if count++; count == crashAt {
						b.fs.Crash()
						crashed, b.fs.Intercept = true, nil
						return errInjectedCrash
					}
				}
				return nil
			}
			err := Repair(b.fs, corruptDir, corruptOpts, snap, hs)
			b.fs.Intercept = nil
			if err != nil && !crashed {
				t.Fatalf("crash at %d: repair failed without a crash: %v", crashAt, err)
			}
			if !crashed {
				finished = true
			}
			b.fs.Faults = MemFaults{}
			_, rec, err := Open(b.fs, corruptDir, corruptOpts)
			var oce *CorruptionError
			switch {
			case errors.As(err, &oce):
				if !crashed {
					t.Fatalf("repair returned, but the WAL is still the damaged one: %v", err)
				}
				sawOld++
			case err != nil:
				t.Fatalf("crash at %d: %v", crashAt, err)
			case rec.HardState != hs || !sameMeta(rec.Snapshot, snap) || len(rec.Entries) != 0:
				t.Fatalf("crash at %d: opened to %+v", crashAt, rec)
			default:
				sawNew++
			}
		}
		if finished {
			break
		}
	}
	if sawOld == 0 || sawNew == 0 {
		t.Fatalf("saw the old WAL %d times and the repaired one %d times", sawOld, sawNew)
	}
}

// TestVoteFloorFile: the floor survives a round trip, a missing file is no
// floor, and a damaged one is corruption, never a guess.
func TestVoteFloorFile(t *testing.T) {
	m := NewMemFS(nil)
	must(t, m.MkdirAll("/n"))
	if p, err := ReadVoteFloor(m, "/n/votefloor"); err != nil || p != (core.LogPosition{}) {
		t.Fatalf("no file: %v %v", p, err)
	}
	want := core.LogPosition{Term: 7, Index: 1234}
	must(t, WriteVoteFloor(m, "/n/votefloor", want))
	if p, err := ReadVoteFloor(m, "/n/votefloor"); err != nil || p != want {
		t.Fatalf("read back %v %v", p, err)
	}
	requireEveryFlipCorrupt(t, m, "/n/votefloor", func() error { _, err := ReadVoteFloor(m, "/n/votefloor"); return err })
}

// TestVoteCopyFile: the same for the copy of term and vote, whose absence
// is told apart from a zero term; and a floor file is not taken for one.
func TestVoteCopyFile(t *testing.T) {
	m := NewMemFS(nil)
	must(t, m.MkdirAll("/n"))
	if _, found, err := ReadVoteCopy(m, "/n/vote"); err != nil || found {
		t.Fatalf("no file: found %v, %v", found, err)
	}
	must(t, WriteVoteCopy(m, "/n/vote", 9, 3))
	if hs, found, err := ReadVoteCopy(m, "/n/vote"); err != nil || !found || hs != (core.HardState{Term: 9, Vote: 3}) {
		t.Fatalf("read back %v %v %v", hs, found, err)
	}
	requireEveryFlipCorrupt(t, m, "/n/vote", func() error { _, _, err := ReadVoteCopy(m, "/n/vote"); return err })
	must(t, WriteVoteFloor(m, "/n/votefloor", core.LogPosition{Term: 1, Index: 2}))
	if _, _, err := ReadVoteCopy(m, "/n/votefloor"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a vote floor read as a vote copy: %v", err)
	}
}

// requireEveryFlipCorrupt flips each bit of a small file in turn: read must
// report corruption every time.
func requireEveryFlipCorrupt(t *testing.T, m *MemFS, path string, read func() error) {
	t.Helper()
	for off := range int64(pairFileSize) {
		for bit := range uint(8) {
			must(t, m.FlipBit(path, off, bit))
			if err := read(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("bit %d of byte %d flipped: %v", bit, off, err)
			}
			must(t, m.FlipBit(path, off, bit))
		}
	}
	must(t, read())
}

// TestEndMarkFile: the end mark is created on open, overwritten in place by
// each Write that moves it (and only then), survives a crash once Write
// returned; one never written is none, a damaged one is corruption.
func TestEndMarkFile(t *testing.T) {
	m := NewMemFS(nil)
	must(t, m.MkdirAll("/n"))
	if _, found, err := ReadEndMark(m, "/n/walend"); err != nil || found {
		t.Fatalf("no file: found %v, %v", found, err)
	}
	_, err := OpenEndMark(m, "/n/walend", core.LogPosition{})
	must(t, err)
	m.Crash()
	if _, found, err := ReadEndMark(m, "/n/walend"); err != nil || found {
		t.Fatalf("a mark created but never written: found %v, %v; want none", found, err)
	}
	mark, err := OpenEndMark(m, "/n/walend", core.LogPosition{})
	must(t, err)
	writes := 0
	m.Intercept = func(op Op, name string) error {
		if op == OpWriteAt {
			writes++
		}
		return nil
	}
	for _, p := range []core.LogPosition{{Term: 2, Index: 10}, {Term: 2, Index: 10}, {Term: 3, Index: 9}} {
		must(t, mark.Write(p))
	}
	if writes != 2 {
		t.Fatalf("three writes of two positions did %d writes", writes)
	}
	m.Intercept = nil
	m.Crash()
	if p, found, err := ReadEndMark(m, "/n/walend"); err != nil || !found || p != (core.LogPosition{Term: 3, Index: 9}) {
		t.Fatalf("after a crash: %v %v %v", p, found, err)
	}
	requireEveryFlipCorrupt(t, m, "/n/walend", func() error { _, _, err := ReadEndMark(m, "/n/walend"); return err })
	// A write misdirected past the mark leaves the old one in place but
	// makes the file longer: damaged, not the old mark.
	f, err := m.Open("/n/walend")
	must(t, err)
	_, err = f.WriteAt([]byte("stray"), 300)
	must(t, err)
	must(t, f.Close())
	if _, _, err := ReadEndMark(m, "/n/walend"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a mark with a stray write past it reads as %v, want corruption", err)
	}
	// Opened again, it is replaced whole by the next write.
	mark, err = OpenEndMark(m, "/n/walend", core.LogPosition{Term: 3, Index: 9})
	must(t, err)
	must(t, mark.Write(core.LogPosition{Term: 3, Index: 9}))
	if p, found, err := ReadEndMark(m, "/n/walend"); err != nil || !found || p != (core.LogPosition{Term: 3, Index: 9}) {
		t.Fatalf("rewritten: %v %v %v", p, found, err)
	}
	if _, _, err := ReadEndMark(m, "/n/vote"); err != nil {
		t.Fatal(err)
	}
	must(t, WriteVoteCopy(m, "/n/vote", 9, 3))
	if _, _, err := ReadEndMark(m, "/n/vote"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a vote copy read as an end mark: %v", err)
	}
}
