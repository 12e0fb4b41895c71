package disk

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk/walpb"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// Recovered is what Open read back from the WAL.
type Recovered struct {
	// HardState is the last hard state appended (zero if none).
	HardState core.HardState
	// Snapshot is the last snapshot marker (zero if none, or the bootstrap
	// configuration at index 0).
	Snapshot core.SnapshotMeta
	// Entries is the log after the snapshot: Entries[0].Index is
	// Snapshot.Index+1, and the indexes are consecutive.
	Entries []core.Entry
	// Compacted holds the entries at or below Snapshot.Index that are still
	// on disk: consecutive, ending at Snapshot.Index. A node whose newest
	// snapshot file is damaged can use them to start from an older one.
	Compacted []core.Entry
	// TornTail, if not nil, describes the torn write Open cut off the end of
	// the last segment.
	TornTail *TornTail
	// Holes, after OpenKeepingHoles, are the indexes (ascending) of the
	// entries whose records were damaged, known by index and term only:
	// Entries (or Compacted) holds them with no data. Damage describes the
	// first damage (nil if none).
	Holes  []uint64
	Damage *WALDamage
}

// TornTail describes bytes cut off the end of the log after a crash.
type TornTail struct {
	File   string
	Offset int64 // where the file now ends
	Bytes  int64 // how many bytes were cut
}

// EntriesAfter returns the entries from index+1 to the end of the log, if
// the WAL still holds all of them (index may be below Snapshot.Index when
// Compacted reaches back far enough).
func (r *Recovered) EntriesAfter(index uint64) ([]core.Entry, bool) {
	all := append(r.Compacted[:len(r.Compacted):len(r.Compacted)], r.Entries...)
	first := r.Snapshot.Index + 1
	if len(all) > 0 {
		first = all[0].Index
	}
	if index+1 < first || index > first-1+uint64(len(all)) {
		return nil, false
	}
	return all[index+1-first:], true
}

// Open recovers the WAL in dir and readies it for appending. It reads every
// segment in order and replays the records (see docs/disk.md for the rules).
// A torn write at the very end of the last segment is cut off, so that later
// appends start clean. Any other damage returns a *CorruptionError naming the
// file and offset, and no WAL: Open never skips a bad record and never
// returns data it cannot vouch for. If dir holds no segment, the error wraps
// ErrNoWAL.
func Open(fsys FS, dir string, opts Options) (*WAL, *Recovered, error) {
	return open(fsys, dir, opts, false)
}

// OpenKeepingHoles is Open for a WAL whose damaged stretches each lost
// only entries it can identify by index and term (WALDamage.Identified,
// worked out for each stretch from the records before it and those after
// it up to the next one, in the same segment): instead of refusing, it
// returns the log the records give, the lost entries as holes
// (Recovered.Holes; Recovered.Damage describes the first stretch), and the
// WAL ready for appending. The damaged records stay where they are; every
// open finds them again, until their segment is released. Any other
// damage is refused as by Open. docs/disk.md, "Keeping the log", says why
// this is safe and what the caller must do about the holes.
func OpenKeepingHoles(fsys FS, dir string, opts Options) (*WAL, *Recovered, error) {
	return open(fsys, dir, opts, true)
}

func open(fsys FS, dir string, opts Options, keepHoles bool) (*WAL, *Recovered, error) {
	seqs, err := listSegments(fsys, dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(seqs) == 0) {
		return nil, nil, fmt.Errorf("wal: open %s: %w", dir, ErrNoWAL)
	}
	if err != nil {
		return nil, nil, err
	}
	w := &WAL{fs: fsys, dir: dir, opts: opts}
	// A repair that crashed before it removed the segments before its own.
	if k, err := repairStart(fsys, dir, seqs); err != nil {
		return nil, nil, err
	} else if k > 0 {
		if err := moveAside(fsys, dir, seqs[k], seqs[:k]); err != nil {
			return nil, nil, err
		}
		seqs = seqs[k:]
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			return nil, nil, corruptf(w.path(seqs[i-1]+1), 0,
				"segment missing between %s and %s", segmentName(seqs[i-1]), segmentName(seqs[i]))
		}
	}
	var (
		st     logState
		buf    []byte
		torn   *TornTail
		damage *WALDamage
	)
	for i, seq := range seqs {
		last := i == len(seqs)-1
		f, scan, err := w.recoverSegment(&st, &buf, seq, 0, i == 0, last)
		var ce *CorruptionError
		for keepHoles && err != nil && errors.As(err, &ce) && ce.File == w.path(seq) {
			if damage == nil {
				damage = w.describeDamage(&st, seqs[i:], ce.Offset)
			}
			before := st.last()
			// The failed replay left the segment's image in buf.
			resume, ok := keepAround(&st, buf, seq, ce.Offset)
			if !ok {
				break
			}
			var more segmentScan
			f, more, err = w.recoverSegment(&st, &buf, seq, resume, i == 0, last)
			scan = segmentScan{end: more.end, size: more.size, startSize: max(scan.startSize, more.startSize),
				maxIndex: max(scan.maxIndex, more.maxIndex, before, st.last()), torn: more.torn}
		}
		if err != nil {
			if w.f != nil {
				w.f.Close()
			}
			if keepHoles && damage != nil {
				// Damage it cannot keep around: refused with the
				// description Open gives.
				return open(fsys, dir, opts, false)
			}
			if errors.As(err, &ce) && ce.File == w.path(seq) {
				ce.WAL = w.describeDamage(&st, seqs[i:], ce.Offset)
			}
			return nil, nil, err
		}
		w.segs = append(w.segs, segment{seq: seq, maxIndex: scan.maxIndex})
		if last {
			w.f, w.off, w.size, w.startSize, w.seed = f, scan.end, scan.size, scan.startSize, seedFor(seq)
			torn = scan.torn
		}
	}
	if st.first > st.snap.Index+1 {
		return nil, nil, corruptf(w.path(seqs[0]), 0,
			"entries %d to %d are missing: their segments are gone and no snapshot covers them", st.snap.Index+1, st.first-1)
	}
	w.hs, w.snap, w.durableSnap, w.lastIndex = st.hs, st.snap, st.snap, st.last()
	w.lastTerm = st.snap.Term
	if n := len(st.ents); n > 0 && st.last() > st.snap.Index {
		w.lastTerm = st.ents[n-1].Term
	}
	w.durable = Durable{HardState: w.hs, LastIndex: w.lastIndex, LastTerm: w.lastTerm}
	rec := &Recovered{HardState: st.hs, Snapshot: st.snap, TornTail: torn, Damage: damage}
	// Holes among the entries still on disk, compacted or not (a node may
	// restart from an older snapshot and need those too).
	for _, i := range st.holes {
		if i >= st.first {
			rec.Holes = append(rec.Holes, i)
		}
	}
	k := st.snap.Index + 1 - st.first
	if k > 0 {
		rec.Compacted = st.ents[:k:k]
	}
	if uint64(len(st.ents)) > k {
		rec.Entries = st.ents[k:]
	}
	return w, rec, nil
}

// recoverSegment replays one segment into st from offset from on (0: the
// whole segment; more after damage kept around). The last segment's torn
// tail, if any, is cut off and its file returned open; other files are
// closed.
func (w *WAL) recoverSegment(st *logState, buf *[]byte, seq uint64, from int64, first, last bool) (File, segmentScan, error) {
	name := w.path(seq)
	f, err := w.fs.Open(name)
	if err != nil {
		return nil, segmentScan{}, fmt.Errorf("wal: open segment: %w", err)
	}
	scan, err := w.replayFile(st, f, buf, name, seq, from, first, last)
	if err != nil || !last {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("wal: close %s: %w", name, cerr)
		}
		return nil, scan, err
	}
	return f, scan, nil
}

func (w *WAL) replayFile(st *logState, f File, buf *[]byte, name string, seq uint64, from int64, first, last bool) (segmentScan, error) {
	b, err := readWhole(f, *buf)
	if err != nil {
		return segmentScan{}, fmt.Errorf("wal: read %s: %w", name, err)
	}
	*buf = b
	scan, err := st.replaySegment(name, b, seq, int(from), first, last)
	if err != nil {
		return scan, err
	}
	if scan.size < int64(len(b)) {
		scan.torn = &TornTail{File: name, Offset: scan.end, Bytes: int64(len(b)) - scan.end}
		if err := f.Truncate(scan.end); err != nil {
			return scan, fmt.Errorf("wal: cut torn tail of %s: %w", name, err)
		}
		if err := f.Sync(); err != nil {
			return scan, fmt.Errorf("wal: cut torn tail of %s: %w", name, err)
		}
	}
	return scan, nil
}

// readWhole reads a file into buf (reusing its memory).
func readWhole(f File, buf []byte) ([]byte, error) {
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	if int64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	for off := 0; off < len(buf); {
		n, err := f.ReadAt(buf[off:], int64(off))
		off += n
		if err == io.EOF && off < len(buf) {
			return nil, fmt.Errorf("file shrank to %d bytes while reading", off)
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
	}
	return buf, nil
}

// logState is the log as replayed so far. Its entries start at first; the
// indexes from snap.Index+1 to first-1, if any, belong to segments that were
// released (a snapshot marker read later must cover them).
type logState struct {
	hs    core.HardState
	snap  core.SnapshotMeta
	first uint64
	ents  []core.Entry

	// holes are the entries kept without data (OpenKeepingHoles), and
	// afterHoles says damage was kept and no segment start read since.
	holes      []uint64
	afterHoles bool

	pbEntry  raftpb.Entry
	pbStart  walpb.SegmentStart
	pbHard   raftpb.HardState
	pbMarker walpb.SnapshotMarker
}

func (s *logState) last() uint64 { return s.first + uint64(len(s.ents)) - 1 }

// segmentScan is what replaySegment learned about a segment.
type segmentScan struct {
	end       int64  // where the last good record ends
	size      int64  // the file's size once a torn tail is cut (zeros ahead may follow end)
	startSize int64  // size of the start record
	maxIndex  uint64 // highest entry index in the segment
	torn      *TornTail
}

// replaySegment applies the records of one segment image b to s. Zeros
// after the last record end the scan (scan.end < len(b), scan.size ==
// len(b)); so does, in the last segment, a torn tail (scan.size ==
// scan.end: the file is to be cut there). Any other failure is a
// *CorruptionError.
func (s *logState) replaySegment(name string, b []byte, seq uint64, from int, first, last bool) (segmentScan, error) {
	scan := segmentScan{size: int64(len(b))}
	seed := seedFor(seq)
	off := from
	for off < len(b) {
		f := decodeFrame(b[off:], seed, int64(off))
		if f.status != frameOK {
			// Zeros written ahead of the records (Options.ZeroAhead) and
			// not yet written over: the segment's clean end. In a segment
			// that is not the last, the next one's start record says
			// whether anything is missing.
			if off > 0 && allZero(b[off:]) {
				break
			}
			// The start record was synced before the file got its name, so
			// a segment is never torn inside it.
			if last && off > 0 && isTornTail(b[off:], f) {
				scan.size = int64(off)
				break
			}
			return scan, corruptf(name, int64(off), "%s", f.reason)
		}
		if (off == 0) != (f.typ == recSegmentStart) {
			if off == 0 {
				return scan, corruptf(name, 0, "segment begins with a %s record, not a segment start", f.typ)
			}
			return scan, corruptf(name, int64(off), "segment start record in the middle of a segment")
		}
		idx, reason := s.apply(f.typ, f.payload, seq, first)
		if reason != "" {
			return scan, corruptf(name, int64(off), "%s record: %s", f.typ, reason)
		}
		scan.maxIndex = max(scan.maxIndex, idx)
		off += f.size
		if f.typ == recSegmentStart {
			scan.startSize = int64(f.size)
		}
	}
	if off == 0 {
		return scan, corruptf(name, 0, "segment is empty")
	}
	scan.end = int64(off)
	return scan, nil
}

// apply replays one record. It returns the entry's index for an entry record,
// and a reason if the record is impossible here.
func (s *logState) apply(typ recordType, payload []byte, seq uint64, firstSegment bool) (uint64, string) {
	switch typ {
	case recSegmentStart:
		if err := proto.Unmarshal(payload, &s.pbStart); err != nil {
			return 0, "undecodable: " + err.Error()
		}
		return 0, s.applyStart(&s.pbStart, seq, firstSegment)
	case recEntry:
		if err := proto.Unmarshal(payload, &s.pbEntry); err != nil {
			return 0, "undecodable: " + err.Error()
		}
		e, err := raftpb.EntryToCore(&s.pbEntry)
		if err != nil {
			return 0, err.Error()
		}
		return e.Index, s.applyEntry(e)
	case recFill:
		if err := proto.Unmarshal(payload, &s.pbEntry); err != nil {
			return 0, "undecodable: " + err.Error()
		}
		e, err := raftpb.EntryToCore(&s.pbEntry)
		if err != nil {
			return 0, err.Error()
		}
		s.fill(e)
		return 0, ""
	case recHardState:
		if err := proto.Unmarshal(payload, &s.pbHard); err != nil {
			return 0, "undecodable: " + err.Error()
		}
		hs := raftpb.HardStateToCore(&s.pbHard)
		if hs.Commit > s.last() {
			return 0, fmt.Sprintf("commit index %d beyond the last entry %d", hs.Commit, s.last())
		}
		s.hs = hs
		return 0, ""
	case recSnapshot:
		if err := proto.Unmarshal(payload, &s.pbMarker); err != nil {
			return 0, "undecodable: " + err.Error()
		}
		return 0, s.applyMarker(raftpb.SnapshotMetaToCore(s.pbMarker.GetMeta()), s.pbMarker.GetReplacesLog())
	}
	return 0, fmt.Sprintf("unknown record type %d", uint8(typ))
}

func (s *logState) applyStart(pb *walpb.SegmentStart, seq uint64, firstSegment bool) string {
	if pb.FormatVersion != walFormatVersion {
		return fmt.Sprintf("format version %d, this code reads version %d", pb.FormatVersion, walFormatVersion)
	}
	if pb.Sequence != seq {
		return fmt.Sprintf("start record of segment %d in the file of segment %d", pb.Sequence, seq)
	}
	hs, snap := raftpb.HardStateToCore(pb.GetHardState()), raftpb.SnapshotMetaToCore(pb.GetSnapshot())
	if snap.Index > pb.LastIndex || hs.Commit > pb.LastIndex {
		return fmt.Sprintf("last index %d below the snapshot (%d) or commit index (%d)", pb.LastIndex, snap.Index, hs.Commit)
	}
	if firstSegment {
		s.hs, s.snap, s.first, s.ents = hs, snap, pb.LastIndex+1, nil
		return ""
	}
	if s.afterHoles && pb.LastIndex == s.last() && snap.Index >= s.snap.Index && snap.Index <= s.last() && hs.Commit <= s.last() {
		// The first start record after damage kept as holes: the damaged
		// records may have held the hard state or compaction it repeats.
		s.hs, s.snap, s.afterHoles = hs, snap, false
		return ""
	}
	if hs != s.hs || !sameMeta(snap, s.snap) || pb.LastIndex != s.last() {
		return "the state it repeats disagrees with the segments before it"
	}
	return ""
}

// sameMeta compares snapshot metadata, treating nil and empty lists alike.
func sameMeta(a, b core.SnapshotMeta) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Conf.Equal(b.Conf)
}

func (s *logState) applyEntry(e core.Entry) string {
	switch last := s.last(); {
	case e.Index > last+1:
		return fmt.Sprintf("entry %d leaves a gap after %d", e.Index, last)
	case e.Index <= s.snap.Index:
		return fmt.Sprintf("entry %d is covered by the snapshot at %d", e.Index, s.snap.Index)
	case e.Index <= s.hs.Commit:
		return fmt.Sprintf("entry %d rewrites the committed log (commit %d)", e.Index, s.hs.Commit)
	}
	if e.Index < s.first {
		// Overwriting from inside the released range: everything after goes.
		s.ents, s.first = s.ents[:0], e.Index
	} else {
		s.ents = s.ents[:e.Index-s.first]
	}
	s.ents = append(s.ents, e)
	s.cutHoles(e.Index - 1)
	return ""
}

// fill gives a hole its data, if the log holds e's index with e's term as
// a hole; anything else (an entry since compacted or cut, or never a hole
// in this replay) changes nothing.
func (s *logState) fill(e core.Entry) {
	k, found := slices.BinarySearch(s.holes, e.Index)
	if !found || e.Index < s.first || e.Index > s.last() {
		return
	}
	if t := s.ents[e.Index-s.first].Term; t != 0 && t != e.Term {
		return // (a committed hole, term 0, takes the entry its fill names)
	}
	s.ents[e.Index-s.first] = e
	s.holes = slices.Delete(s.holes, k, k+1)
}

// cutHoles drops the holes above index i (the log was cut there).
func (s *logState) cutHoles(i uint64) {
	k, found := slices.BinarySearch(s.holes, i)
	if found {
		k++
	}
	s.holes = s.holes[:k]
}

func (s *logState) applyMarker(m core.SnapshotMeta, replacesLog bool) string {
	if replacesLog {
		if m.Index < s.snap.Index || m.Index < s.hs.Commit {
			return fmt.Sprintf("installed snapshot at %d is older than the snapshot (%d) or commit index (%d)", m.Index, s.snap.Index, s.hs.Commit)
		}
		s.snap, s.ents, s.first = m, s.ents[:0], m.Index+1
		s.holes = nil
		return ""
	}
	if m.Index < s.snap.Index || m.Index > s.last() {
		return fmt.Sprintf("compaction to %d outside the log (%d, %d]", m.Index, s.snap.Index, s.last())
	}
	s.snap = m
	return ""
}
