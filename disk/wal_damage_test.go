package disk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk/walpb"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// lastIndex is the index of a state's last entry (its snapshot's if none).
func (s walState) lastIndex() uint64 {
	if n := len(s.log); n > 0 {
		return s.log[n-1].Index
	}
	return s.snap.Index
}

// entryAt returns the state's entry at index i, if its log holds one.
func (s walState) entryAt(i uint64) (core.Entry, bool) {
	if i <= s.snap.Index || i > s.lastIndex() {
		return core.Entry{}, false
	}
	return s.log[i-s.snap.Index-1], true
}

// damagedRecord locates the record of a clean segment image that holds byte
// off: its number among the records the model counts (start records are
// not counted: for one, the number is that of the record before it) and
// the record itself.
type damagedRecord struct {
	start   int64 // offset of the record in its segment
	before  int   // records (as the model counts them) before it
	isStart bool
	frame   frame
}

func locateRecord(t *testing.T, b builtWAL, images map[string][]byte, seg string, off int64) damagedRecord {
	t.Helper()
	// Records the model counted in this segment and every later one.
	later := 0
	si := -1
	for i, name := range b.segs {
		if name == seg {
			si = i
		}
		if si >= 0 {
			later += len(recordBounds(t, images[name], name)) - 1
		}
	}
	first := len(b.states) - 1 - later // records before this segment
	seq, _ := parseSegmentName(filepath.Base(seg))
	bounds := recordBounds(t, images[seg], seg)
	start := int64(0)
	for j, end := range bounds {
		if off < end {
			f := decodeFrame(images[seg][start:], seedFor(seq), start)
			return damagedRecord{start: start, before: first + max(j-1, 0), isStart: j == 0, frame: f}
		}
		start = end
	}
	t.Fatalf("offset %d beyond %s", off, seg)
	return damagedRecord{}
}

// TestWALDamageDescribed flips one bit in a synced WAL and checks what the
// CorruptionError says about the log against the reference model: the log
// before the damage, the final prefix, the suspect range holding the damaged
// entry, and the hard state only when it is claimed current.
func TestWALDamageDescribed(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 19))
	cases, bounded, currentHS, identified, holes, keptCases := 0, 0, 0, 0, 0, 0
	for seed := range uint64(12) {
		b := buildWAL(t, 1900+seed, 80, MemFaults{})
		images := map[string][]byte{}
		for _, name := range b.segs {
			images[name] = recordsOf(readFile(t, b.fs, name))
		}
		final := b.final()
		for range 150 {
			seg := b.segs[rng.IntN(len(b.segs))]
			off := rng.Int64N(int64(len(images[seg])))
			bit := rng.UintN(8)
			must(t, b.fs.FlipBit(seg, off, bit))
			_, _, ce := b.open(t)
			var kept *Recovered
			if ce != nil && ce.WAL != nil && ce.WAL.Identified {
				w, rec, err := OpenKeepingHoles(b.fs, corruptDir, corruptOpts)
				var again *CorruptionError
				switch {
				case err == nil:
					must(t, w.Close())
					kept = rec
				case !errors.As(err, &again) || again.Offset != ce.Offset:
					t.Fatalf("seed %d: %v\nnot kept, and not refused as Open does: %v", seed, ce, err)
				}
			}
			must(t, b.fs.FlipBit(seg, off, bit))
			if ce == nil {
				t.Fatalf("seed %d: flip at %s:%d not detected", seed, seg, off)
			}
			rec := locateRecord(t, b, images, seg, off)
			d := ce.WAL
			if ce.Offset != rec.start || d == nil {
				t.Fatalf("seed %d: flip at %s:%d (record at %d): %v", seed, seg, off, rec.start, ce)
			}
			before := b.states[rec.before]
			replayed := !(rec.isStart && seg == b.segs[0])
			if replayed && (d.LastBefore != before.lastIndex() || d.CommitBefore != before.hs.Commit) {
				t.Fatalf("seed %d: %v\nbefore the damage the model had last %d commit %d", seed, ce, before.lastIndex(), before.hs.Commit)
			}
			// Every entry of the final log below SuspectFrom is as the
			// records before the damage left it.
			for _, e := range final.log {
				if e.Index >= d.SuspectFrom {
					break
				}
				got, ok := before.entryAt(e.Index)
				if !ok || got.Term != e.Term || !bytes.Equal(got.Data, e.Data) {
					t.Fatalf("seed %d: %v\nentry %d (term %d) of the final log is not as the records before the damage left it", seed, ce, e.Index, e.Term)
				}
			}
			// Outside the suspect range the damaged record changed nothing:
			// the model's log with that record left out is the same there.
			// (Below either log's snapshot there is nothing to compare.)
			without, altSnap := replaySkipping(b.ops, rec.before, rec.isStart)
			for i := max(final.snap.Index, altSnap) + 1; i <= final.lastIndex(); i++ {
				inRange := i >= d.SuspectFrom && (d.OpenEnded || i <= d.SuspectTo)
				if inRange {
					continue
				}
				got, has := final.entryAt(i)
				alt, altHas := without[i]
				if has != altHas || (has && (alt.Term != got.Term || !bytes.Equal(alt.Data, got.Data))) {
					t.Fatalf("seed %d: %v\nentry %d outside the suspect range depends on the damaged record", seed, ce, i)
				}
			}
			if !d.OpenEnded {
				bounded++
				if d.MaxIndex < final.lastIndex() {
					t.Fatalf("seed %d: %v\nthe final log reaches %d", seed, ce, final.lastIndex())
				}
				// The log's end as the records after the damage rebuild it.
				if d.Last.Index != final.lastIndex() || (len(final.log) > 0 && d.Last.Term != final.log[len(final.log)-1].Term) {
					t.Fatalf("seed %d: %v\nclaims the log ends at %+v; the final log is %v", seed, ce, d.Last, final)
				}
			}
			if d.Identified {
				identified++
				if d.HoleFrom <= d.HoleTo {
					holes++
				}
				// Below the holes the final log is the log before the
				// damage; in them, every entry is of the term claimed.
				for i := final.snap.Index + 1; i <= min(d.HoleTo, final.lastIndex()); i++ {
					got, _ := final.entryAt(i)
					if i <= d.IntactThrough {
						had, ok := before.entryAt(i)
						if !ok || had.Term != got.Term || !bytes.Equal(had.Data, got.Data) {
							t.Fatalf("seed %d: %v\nentry %d of the final log is not as the records before the damage left it", seed, ce, i)
						}
					} else if d.HoleTerm == 0 && i > final.hs.Commit {
						t.Fatalf("seed %d: %v\nentry %d of the final log is not committed (commit %d)", seed, ce, i, final.hs.Commit)
					} else if d.HoleTerm != 0 && got.Term != d.HoleTerm {
						t.Fatalf("seed %d: %v\nentry %d of the final log has term %d", seed, ce, i, got.Term)
					}
				}
				if d.HoleTo > final.lastIndex() {
					t.Fatalf("seed %d: %v\nthe final log ends at %d", seed, ce, final.lastIndex())
				}
			}
			if kept != nil {
				keptCases++
				// The log kept is the final one, the holes without data.
				got := stateOf(kept)
				if got.lastIndex() != final.lastIndex() {
					t.Fatalf("seed %d: %v\nkept a log ending at %d, the final one ends at %d", seed, ce, got.lastIndex(), final.lastIndex())
				}
				for i := max(got.snap.Index, final.snap.Index) + 1; i <= final.lastIndex(); i++ {
					want, _ := final.entryAt(i)
					e, _ := got.entryAt(i)
					hole := slices.Contains(kept.Holes, i)
					if (e.Term != want.Term && !(hole && e.Term == 0)) || (!hole && !bytes.Equal(e.Data, want.Data)) || (hole && len(e.Data) > 0) {
						t.Fatalf("seed %d: %v\nkept entry %d (term %d, hole %v), the final log's has term %d", seed, ce, i, e.Term, hole, want.Term)
					}
				}
				if d.HardStateCurrent && kept.HardState != final.hs {
					t.Fatalf("seed %d: %v\nkept hard state %+v, the final one is %+v", seed, ce, kept.HardState, final.hs)
				}
			}
			if d.HardStateCurrent {
				currentHS++
				if d.HardState != final.hs {
					t.Fatalf("seed %d: %v\nclaims the hard state is current; the final one is %+v", seed, ce, final.hs)
				}
			}
			if !strings.Contains(ce.Error(), "the log is final through index") {
				t.Fatalf("the error does not describe the damage: %v", ce)
			}
			cases++
		}
	}
	// The checks above must have had something to check.
	if bounded < cases/4 || currentHS < cases/4 || identified < cases/10 || holes < cases/20 || keptCases < cases/20 {
		t.Fatalf("%d flips: only %d bounded ranges, %d current hard states, %d identified (%d with holes)", cases, bounded, currentHS, identified, holes)
	}
	t.Logf("%d single-bit flips described: %d with a bounded suspect range, %d with the hard state current, %d identified (%d with holes), %d kept",
		cases, bounded, currentHS, identified, holes, keptCases)
}

// TestWALDamageSeveralStretches damages two entry records far apart: the
// description counts two stretches, resumes after the first, and its
// suspect range holds both entries.
func TestWALDamageSeveralStretches(t *testing.T) {
	b := buildWALOps(t, 1950, 120, MemFaults{}, false)
	if len(b.segs) < 3 {
		t.Fatalf("want at least 3 segments, got %d", len(b.segs))
	}
	var damaged []uint64
	for _, seg := range []string{b.segs[0], b.segs[len(b.segs)-2]} {
		image := readFile(t, b.fs, seg)
		seq, _ := parseSegmentName(filepath.Base(seg))
		bounds := recordBounds(t, image, seg)
		hit := false
		for j := len(bounds) - 2; j >= 1 && !hit; j-- { // the last entry record of the segment
			f := decodeFrame(image[bounds[j-1]:], seedFor(seq), bounds[j-1])
			if f.typ != recEntry {
				continue
			}
			var e raftpb.Entry
			must(t, proto.Unmarshal(f.payload, &e))
			damaged = append(damaged, e.Index)
			must(t, b.fs.FlipBit(seg, bounds[j-1]+headerSize, 0))
			hit = true
		}
		if !hit {
			t.Fatalf("no entry record in %s", seg)
		}
	}
	_, _, ce := b.open(t)
	if ce == nil || ce.WAL == nil {
		t.Fatalf("not described: %v", ce)
	}
	d := ce.WAL
	if d.Stretches != 2 || d.ResumeFile != b.segs[0] {
		t.Fatalf("want 2 stretches resuming in %s: %+v", b.segs[0], d)
	}
	for _, i := range damaged {
		if i < d.SuspectFrom || (!d.OpenEnded && i > d.SuspectTo) {
			t.Fatalf("damaged entries %v, suspect range %+v", damaged, d)
		}
	}
}

// TestWALDamageNothingAfter damages the last record of the last segment
// (its trailer intact, so not a torn write): nothing intact follows, the
// range is open-ended and the hard state is not claimed current.
func TestWALDamageNothingAfter(t *testing.T) {
	b := buildWALOps(t, 1960, 60, MemFaults{}, false)
	seg := b.segs[len(b.segs)-1]
	image := readFile(t, b.fs, seg)
	bounds := recordBounds(t, image, seg)
	must(t, b.fs.FlipBit(seg, bounds[len(bounds)-2]+headerSize, 3)) // payload of the last record
	_, _, ce := b.open(t)
	if ce == nil || ce.WAL == nil {
		t.Fatalf("not described: %v", ce)
	}
	if !ce.WAL.OpenEnded || ce.WAL.HardStateCurrent || ce.WAL.ResumeFile != "" || ce.WAL.Stretches != 1 {
		t.Fatalf("want an open-ended range and no current hard state: %+v", ce.WAL)
	}
}

// replaySkipping replays the records of ops as the model does, leaving out
// record number skip (counted from 0 as the model's states are; a start
// record leaves out nothing), and returns the entries of the log after the
// last snapshot, by index, and that snapshot's index.
func replaySkipping(ops []walOp, skip int, isStart bool) (map[uint64]core.Entry, uint64) {
	log := map[uint64]core.Entry{}
	var hs core.HardState
	var snap uint64
	n := 0
	take := func() bool {
		keep := isStart || n != skip
		n++
		return keep
	}
	for _, op := range ops {
		switch op.kind {
		case wopAppend:
			for _, e := range op.ents {
				if !take() {
					continue
				}
				for i := range log {
					if i >= e.Index {
						delete(log, i)
					}
				}
				log[e.Index] = e
			}
			if !op.hs.IsEmpty() && op.hs != hs {
				take()
				hs = op.hs
			}
		case wopInstall:
			if take() {
				clear(log)
				snap = op.meta.Index
			}
		case wopCompact:
			if take() {
				snap = max(snap, op.meta.Index)
			}
		}
	}
	return log, snap
}

func readFile(t *testing.T, fsys FS, name string) []byte {
	t.Helper()
	b, err := readSegment(fsys, name, nil)
	must(t, err)
	return b
}

// TestWALDamageIdentified damages one entry record of hand-made WALs and
// checks what the description claims about the lost entries' identity,
// including a follower's log where a new leader overwrote an entry with one
// of an older term, which the model's workload never writes.
func TestWALDamageIdentified(t *testing.T) {
	hs := func(term, commit uint64) craftRecord {
		return craftRecord{typ: recHardState, msg: &raftpb.HardState{Term: term, Commit: commit}}
	}
	entries := func(term, from, to uint64) []craftRecord {
		var out []craftRecord
		for i := from; i <= to; i++ {
			out = append(out, entryRec(term, i))
		}
		return out
	}
	cat := func(parts ...[]craftRecord) []craftRecord { return slices.Concat(parts...) }
	start := []craftRecord{startRec(1, 0, core.HardState{}, core.SnapshotMeta{})}
	cases := []struct {
		name    string
		recs    []craftRecord
		damage  int // which record
		want    bool
		through uint64
		holes   [3]uint64 // from, to, term
	}{
		{"one term", cat(start, entries(2, 1, 4), []craftRecord{hs(2, 3)}, entries(2, 5, 10)), 8, true, 6, [3]uint64{7, 7, 2}},
		{"overwritten after the damage", cat(start, entries(2, 1, 4), []craftRecord{hs(2, 3)}, entries(2, 5, 10), entries(3, 9, 11)), 7, true, 5, [3]uint64{6, 6, 2}},
		{"overwritten below the damage after it", cat(start, entries(2, 1, 4), []craftRecord{hs(2, 3)}, entries(2, 5, 10), entries(3, 7, 8)), 9, false, 0, [3]uint64{}},
		{"across a change of term", cat(start, entries(1, 1, 5), []craftRecord{hs(1, 3)}, entries(2, 6, 8)), 7, false, 0, [3]uint64{}},
		// A follower held (5, 3) from a leader of term 3 that never
		// committed it; the leader of term 4 overwrote it with its own
		// (5, 2) and went on. The record of (5, 2) is damaged: the entry
		// before the damage at 5 is of a later term than the one after,
		// so it says nothing about what replaced it.
		{"older term overwrote", cat(start, entries(1, 1, 4), []craftRecord{hs(3, 2)}, entries(3, 5, 5), []craftRecord{hs(4, 2)}, entries(2, 5, 6), entries(4, 7, 7)), 8, false, 0, [3]uint64{}},
		{"nothing lost", cat(start, entries(2, 1, 4), []craftRecord{hs(2, 3), hs(2, 4)}, entries(2, 5, 6)), 6, true, 4, [3]uint64{5, 4, 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newTestMemFS(1)
			must(t, m.MkdirAll("/w"))
			image := craftSegment(t, 1, c.recs...)
			off := int64(len(craftSegment(t, 1, c.recs[:c.damage]...)))
			image[off+headerSize] ^= 0x04 // the damaged record's payload
			writeFile(t, m, "/w/"+segmentName(1), image, true)
			_, _, err := Open(m, "/w", Options{})
			var ce *CorruptionError
			if !errors.As(err, &ce) || ce.WAL == nil {
				t.Fatalf("got %v, want a described corruption", err)
			}
			d := ce.WAL
			got := [3]uint64{d.HoleFrom, d.HoleTo, d.HoleTerm}
			if d.Identified != c.want || (c.want && (d.IntactThrough != c.through || got != c.holes)) {
				t.Fatalf("%v\nidentified %v through %d holes %v; want %v through %d holes %v", d, d.Identified, d.IntactThrough, got, c.want, c.through, c.holes)
			}
			w, rec, err := OpenKeepingHoles(m, "/w", Options{})
			if !c.want {
				if !errors.As(err, &ce) {
					t.Fatalf("kept what was not identified: %v", err)
				}
				return
			}
			must(t, err)
			// The WAL goes on after the holes, and the next open finds the
			// same holes and what was appended.
			// A fill of the first hole is written down; one of another
			// term, and one of an index that is no hole, change nothing.
			last := w.LastIndex()
			var filled []uint64
			if len(rec.Holes) > 0 {
				i := rec.Holes[0]
				must(t, w.Fill([]core.Entry{{Index: i, Term: c.holes[2] + 1, Data: []byte("stale")}, {Index: i, Term: c.holes[2], Data: []byte("f")}, {Index: 1, Term: 2, Data: []byte("not a hole")}}))
				filled = rec.Holes[:1]
			}
			must(t, w.Append(core.HardState{Term: 5, Vote: 1, Commit: 4}, []core.Entry{{Index: last + 1, Term: 5, Data: []byte("x")}}))
			must(t, w.Sync())
			must(t, w.Close())
			w, again, err := OpenKeepingHoles(m, "/w", Options{})
			must(t, err)
			must(t, w.Close())
			if !slices.Equal(again.Holes, rec.Holes[len(filled):]) || again.HardState.Term != 5 || len(again.Entries) == 0 || again.Entries[len(again.Entries)-1].Index != last+1 {
				t.Fatalf("reopened: holes %+v (before %+v, filled %v), hard state %+v, entries %v", again.Holes, rec.Holes, filled, again.HardState, again.Entries)
			}
			for _, i := range filled {
				if e, _ := stateOf(again).entryAt(i); string(e.Data) != "f" {
					t.Fatalf("filled entry %d reads back as %+v", i, e)
				}
			}
			if e, _ := stateOf(again).entryAt(1); len(e.Data) > 0 {
				t.Fatalf("a fill of no hole changed entry 1: %+v", e)
			}
			for _, e := range again.Entries {
				if hole := slices.Contains(again.Holes, e.Index); hole && (len(e.Data) > 0 || e.Term != c.holes[2]) {
					t.Fatalf("entry %+v, holes %+v", e, again.Holes)
				}
			}
		})
	}
}

// TestKeptLogAroundDamageAnInstallReplaced: a snapshot installed after the
// damage replaced the log, damage and all: the log is kept, with no hole,
// as the records from the snapshot on give it.
func TestKeptLogAroundDamageAnInstallReplaced(t *testing.T) {
	entries := func(term, from, to uint64) []craftRecord {
		var out []craftRecord
		for i := from; i <= to; i++ {
			out = append(out, entryRec(term, i))
		}
		return out
	}
	install := craftRecord{typ: recSnapshot, msg: &walpb.SnapshotMarker{Meta: &raftpb.SnapshotMeta{Index: 20, Term: 3}, ReplacesLog: true}}
	recs := slices.Concat([]craftRecord{startRec(1, 0, core.HardState{}, core.SnapshotMeta{})}, entries(1, 1, 5),
		[]craftRecord{{typ: recHardState, msg: &raftpb.HardState{Term: 2, Commit: 3}}}, entries(2, 6, 10), []craftRecord{install}, entries(3, 21, 22))
	m := newTestMemFS(1)
	must(t, m.MkdirAll("/w"))
	image := craftSegment(t, 1, recs...)
	off := int64(len(craftSegment(t, 1, recs[:8]...))) // entry 7
	image[off+headerSize] ^= 0x04
	writeFile(t, m, "/w/"+segmentName(1), image, true)
	_, _, err := Open(m, "/w", Options{})
	var ce *CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want corruption", err)
	}
	w, rec, err := OpenKeepingHoles(m, "/w", Options{})
	must(t, err)
	must(t, w.Close())
	if len(rec.Holes) != 0 || rec.Snapshot.Index != 20 || len(rec.Entries) != 2 || rec.Entries[1].Index != 22 {
		t.Fatalf("kept: holes %v, snapshot %+v, entries %v", rec.Holes, rec.Snapshot, rec.Entries)
	}
}
