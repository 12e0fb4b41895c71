package disk

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk/walpb"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// WALDamage says which part of the log a damaged WAL record may have held,
// so that repair (issue 19) can be aimed at a range of indexes instead of
// the whole node. Recovery still refuses the WAL: this is a description,
// worked out by reading past the damage to the records that still decode.
//
// What it can claim, and why:
//
//   - Entries up to SuspectFrom-1 are final. The records before the damage
//     committed them (SuspectFrom-1 is the commit index, or snapshot index,
//     they left), and committed entries are never rewritten.
//   - Entries SuspectFrom..SuspectTo may be lost, or stale: a lost record
//     may have overwritten an uncommitted suffix that the records before the
//     damage still show. SuspectTo is one below the first entry that an
//     intact record after the (last) damaged stretch holds; from there on
//     the intact records rebuild the log again. When no intact entry record
//     follows the damage, the range is OpenEnded: every entry from
//     SuspectFrom on is suspect, and the log may have gone on further than
//     any record shows.
//   - HardState is the newest hard state an intact record holds. Only when
//     HardStateCurrent is it known to be the last one written: it comes after
//     every damaged stretch, so no later one can have been lost.
type WALDamage struct {
	// LastBefore and CommitBefore are the log's last index and commit index
	// as the records before the damage left them.
	LastBefore, CommitBefore uint64
	// SuspectFrom..SuspectTo may be lost or stale; OpenEnded: SuspectFrom
	// and everything after it (SuspectTo is then 0).
	SuspectFrom, SuspectTo uint64
	OpenEnded              bool
	// MaxIndex is the highest index any intact record names: the log reached
	// at least this far.
	MaxIndex uint64
	// Last is the position of the log's last entry (or installed
	// snapshot) as the intact records after the damage rebuild it; known
	// only when the range is not OpenEnded.
	Last core.LogPosition
	// Snapshot is the snapshot marker the records before the damage left
	// (meaningful only if Replayed: some record before the damage was
	// read, so the state before it is known).
	Snapshot core.SnapshotMeta
	Replayed bool
	// HardState is the newest intact hard state; HardStateCurrent whether
	// it was written after every damaged stretch.
	HardState        core.HardState
	HardStateCurrent bool
	// ReadErr is why a segment after the damage could not be read: the
	// description then stops there, and its end of the log (Last,
	// MaxIndex) and hard state may be older than the WAL's. A repair must
	// not go by it.
	ReadErr error
	// Stretches counts the damaged stretches found (1 for a single bad
	// record). ResumeFile and ResumeOffset locate the first intact record
	// after the first one ("" if nothing intact follows).
	Stretches    int
	ResumeFile   string
	ResumeOffset int64
	// TornTail: the last segment ends in what a write cut short by a crash
	// leaves (see Open), taken as such. On a disk that may misdirect writes
	// a damaged last record can look the same.
	TornTail bool

	// Identified: the entries the damage may have held are known by index
	// and term, or known committed (identify). Entries through
	// IntactThrough are as the records before the damage left them;
	// HoleFrom..HoleTo (none if HoleFrom > HoleTo) are entries of term
	// HoleTerm whose data is lost here, and that any member holding an
	// entry of that index and term holds exactly — or, with HoleTerm 0,
	// committed entries whose terms are unknown, which any member that
	// knows them committed holds exactly; the intact records after the
	// damage rebuild the rest.
	Identified                                bool
	IntactThrough, HoleFrom, HoleTo, HoleTerm uint64
}

func (d *WALDamage) String() string {
	s := fmt.Sprintf("the log is final through index %d", d.SuspectFrom-1)
	if d.OpenEnded {
		s += fmt.Sprintf("; entries from %d on may be lost or stale (no intact entry follows the damage; intact records name indexes up to %d)", d.SuspectFrom, d.MaxIndex)
	} else if d.SuspectTo >= d.SuspectFrom {
		s += fmt.Sprintf("; entries %d to %d may be lost or stale, those after are intact (up to %d)", d.SuspectFrom, d.SuspectTo, d.MaxIndex)
	} else {
		s += fmt.Sprintf(" and every entry after it is intact (up to %d)", d.MaxIndex)
	}
	if d.Identified && d.HoleFrom <= d.HoleTo && d.HoleTerm == 0 {
		s += fmt.Sprintf("; identified: entries through %d are intact, entries %d to %d are committed (terms unknown) and lost here", d.IntactThrough, d.HoleFrom, d.HoleTo)
	} else if d.Identified && d.HoleFrom <= d.HoleTo {
		s += fmt.Sprintf("; identified: entries through %d are intact, entries %d to %d are of term %d and lost here", d.IntactThrough, d.HoleFrom, d.HoleTo, d.HoleTerm)
	} else if d.Identified {
		s += fmt.Sprintf("; identified: entries through %d are intact and no entry of the log is lost", d.IntactThrough)
	}
	if d.HardStateCurrent {
		s += fmt.Sprintf("; the hard state (term %d, vote %d, commit %d) is intact", d.HardState.Term, d.HardState.Vote, d.HardState.Commit)
	} else {
		s += fmt.Sprintf("; the newest intact hard state (term %d, vote %d, commit %d) precedes the damage: a later one may be lost", d.HardState.Term, d.HardState.Vote, d.HardState.Commit)
	}
	return s
}

// describeDamage reads on from the damaged record at offset off of the first
// of seqs, given st, the log as the records before it left it. It reads
// records only for what they say; it changes no file. A segment it cannot
// read ends the description there, with ReadErr set: what it says of the
// log's end is then not to be trusted.
func (w *WAL) describeDamage(st *logState, seqs []uint64, off int64) *WALDamage {
	replayed := st.first > 0 // false when the very first start record is bad
	d := &WALDamage{HardState: st.hs, Stretches: 1, Replayed: replayed, Snapshot: st.snap}
	if replayed {
		d.LastBefore, d.CommitBefore = st.last(), st.hs.Commit
		d.MaxIndex = d.LastBefore
		d.SuspectFrom = max(st.hs.Commit, st.snap.Index) + 1
	} else {
		d.SuspectFrom = 1
	}
	var (
		buf   []byte
		facts recordFacts
		first uint64           // index of the first entry after the latest damaged stretch
		last  core.LogPosition // the log's end as the records since then left it
		after suffix           // the log from its lowest index those records wrote
	)
	for k, seq := range seqs {
		name := w.path(seq)
		b, err := readSegment(w.fs, name, buf)
		if err != nil {
			d.ReadErr = err
			break
		}
		buf = b
		seed := seedFor(seq)
		pos := 0
		if k == 0 {
			pos = nextFrame(b, seed, int(off)+1)
		}
		for pos < len(b) {
			f := decodeFrame(b[pos:], seed, int64(pos))
			if f.status != frameOK {
				if pos > 0 && allZero(b[pos:]) {
					break // zeros written ahead: the segment's clean end
				}
				if k == len(seqs)-1 && isTornTail(b[pos:], f) {
					d.TornTail = true
					break
				}
				d.Stretches++
				d.HardStateCurrent, first, last, after = false, 0, core.LogPosition{}, suffix{}
				pos = nextFrame(b, seed, pos+1)
				continue
			}
			if d.ResumeFile == "" {
				d.ResumeFile, d.ResumeOffset = name, int64(pos)
			}
			if facts.read(f) {
				if facts.hasHS {
					d.HardState, d.HardStateCurrent = facts.hs, true
				}
				d.MaxIndex = max(d.MaxIndex, facts.lastIndex)
				if facts.isEntry && first == 0 {
					first = facts.lastIndex
				}
				if facts.isEntry || facts.installs {
					last = core.LogPosition{Term: facts.term, Index: facts.lastIndex}
				}
				after.add(&facts)
			}
			pos += f.size
		}
	}
	if first == 0 {
		d.OpenEnded = true
		return d
	}
	// An entry after the damage never lies at or below the final prefix
	// (the WAL refuses to rewrite committed entries): the range may be
	// empty, never negative.
	d.SuspectTo = max(first-1, d.SuspectFrom-1)
	d.Last = last
	if replayed {
		d.identify(st, after)
	}
	return d
}

// suffix follows what the intact records after the damage write: the
// lowest index they write an entry at and the terms from there on, which
// (barring more damage) is the log from that index on.
type suffix struct {
	from      uint64
	terms     []uint64
	installed bool   // a snapshot marker among them replaced the log
	commit    uint64 // the highest commit index their hard states name
}

func (s *suffix) add(f *recordFacts) {
	if f.hasHS {
		s.commit = max(s.commit, f.hs.Commit)
	}
	switch {
	case f.installs:
		s.installed = true
	case !f.isEntry:
	case s.from == 0 || f.lastIndex < s.from:
		s.from, s.terms = f.lastIndex, append(s.terms[:0], f.term)
	case f.lastIndex <= s.from+uint64(len(s.terms)):
		s.terms = append(s.terms[:f.lastIndex-s.from], f.term)
	}
}

// identify works out, where it can, which entries the damage may have held
// by index and term, from Raft's Log Matching property: an entry's index
// and term determine it and every entry before it, in every member's log.
// The log the records after the damage rebuild holds (b, t), b the lowest
// index they write. If the log before the damage held an entry of term t
// at some index j < b, then the final log below j is the log before the
// damage (both hold (j, t)), and every entry from j+1 to b-1 is of term t
// (terms never fall along a log): those are the entries lost here, known
// by index and term. Without such an entry (the damage spans a change of
// term), the terms in between are unknown; but if a hard state among the
// records after the damage names a commit index of at least b-1, every
// entry from the end of the final prefix to b-1 is committed, so the same
// at its index in every member that knows it committed: those are lost
// here with their terms unknown (HoleTerm 0), to be filled only from an
// entry known committed.
func (d *WALDamage) identify(st *logState, after suffix) {
	if after.from == 0 || after.installed || st.first == 0 || after.from <= st.first {
		return
	}
	if d.identifyByTerm(st, after) {
		return
	}
	if a := max(st.hs.Commit, st.snap.Index); after.commit+1 >= after.from && a+1 >= st.first && a < after.from && a <= st.last() {
		d.Identified, d.IntactThrough = true, a
		d.HoleFrom, d.HoleTo, d.HoleTerm = a+1, after.from-1, 0
	}
}

// identifyByTerm is identify's rule by Log Matching; it reports whether it
// identified the lost entries.
func (d *WALDamage) identifyByTerm(st *logState, after suffix) bool {
	t := after.terms[0]
	// Terms never fall along the log before the damage either: scan down
	// from below b until one is no later than t. (Snapshot terms are not
	// used: only entries are compared.)
	j := min(st.last(), after.from-1)
	for ; j >= st.first && j > st.snap.Index; j-- {
		jt := st.ents[j-st.first].Term
		if jt < t {
			return false
		}
		if jt == t {
			d.Identified, d.IntactThrough = true, j
			d.HoleFrom, d.HoleTo, d.HoleTerm = j+1, after.from-1, t
			return true
		}
	}
	if t == 1 && j == 0 {
		// Down to the start of a log bootstrapped at index 0 with nothing
		// of term 1: every entry is of term 1 at least, and none before b
		// of a later term than b's.
		d.Identified, d.IntactThrough = true, 0
		d.HoleFrom, d.HoleTo, d.HoleTerm = 1, after.from-1, t
		return true
	}
	return false
}

// keepAround keeps the log around the damaged record at offset off of
// segment seq (whose image is b), if the entries it lost can be identified: st, the log the
// records before it left, gets them as holes, and keepAround returns the
// offset to replay on from. It reads on from the damage in the same
// segment: damaged records before the first intact entry record count as
// one stretch with it (the intact records among them are skipped: a lost
// hard state comes back from the vote copy, a lost compaction marker
// leaves only more log), up to the next damage after an entry; the lowest
// index those records write and its term identify the lost entries
// (identify, against st). A snapshot installed among them replaces the
// log, damage and all: the replay goes on from it, with no hole. No entry
// record before the segment ends, and it does not keep.
func keepAround(st *logState, b []byte, seq uint64, off int64) (int64, bool) {
	if off == 0 {
		// A segment's start record: what it repeats (and, in the first,
		// where the log begins) is not known.
		return 0, false
	}
	seed := seedFor(seq)
	var (
		facts  recordFacts
		after  suffix
		resume = -1
	)
	for pos := nextFrame(b, seed, int(off)+1); pos < len(b); {
		f := decodeFrame(b[pos:], seed, int64(pos))
		if f.status != frameOK {
			if after.from != 0 {
				break // the next damage: the replay stops there again
			}
			resume = -1
			pos = nextFrame(b, seed, pos+1)
			continue
		}
		if resume < 0 {
			resume = pos
		}
		if facts.read(f) {
			if facts.installs {
				// A snapshot that replaced the log: nothing written
				// before it counts, the damage included. Replay on from
				// it, keeping no hole.
				st.afterHoles = true
				return int64(pos), true
			}
			after.add(&facts)
		}
		pos += f.size
	}
	if after.from == 0 || resume < 0 {
		return 0, false
	}
	d := &WALDamage{}
	d.identify(st, after)
	if !d.Identified {
		return 0, false
	}
	st.punch(d.IntactThrough, d.HoleFrom, d.HoleTo, d.HoleTerm)
	return int64(resume), true
}

// punch cuts the log back to index through and puts entries from..to of
// term t in as holes (entries with index and term and no data).
func (s *logState) punch(through, from, to, t uint64) {
	s.ents = s.ents[:through+1-s.first]
	s.cutHoles(through)
	for i := from; i <= to; i++ {
		s.ents = append(s.ents, core.Entry{Index: i, Term: t})
		s.holes = append(s.holes, i)
	}
	s.afterHoles = true
}

// readSegment reads a whole segment file.
func readSegment(fsys FS, name string, buf []byte) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readWhole(f, buf)
}

// nextFrame returns the offset of the first record at or after from that
// decodes, or len(b). A record names its own offset (and its segment, in
// the header checksum), so a match by chance needs a 32-bit checksum to
// agree as well as the offset.
func nextFrame(b []byte, seed segmentSeed, from int) int {
	for q := from; q+headerSize <= len(b); q++ {
		if int(binary.LittleEndian.Uint64(b[q+16:])) != q {
			continue
		}
		if decodeFrame(b[q:], seed, int64(q)).status == frameOK {
			return q
		}
	}
	return len(b)
}

// recordFacts decodes only what describeDamage needs from a record.
type recordFacts struct {
	entry     raftpb.Entry
	start     walpb.SegmentStart
	hard      raftpb.HardState
	marker    walpb.SnapshotMarker
	lastIndex uint64
	term      uint64
	isEntry   bool
	installs  bool // a snapshot marker that replaces the log
	hs        core.HardState
	hasHS     bool
}

// read fills the facts of one intact record; false if its payload does not
// decode (then it says nothing).
func (r *recordFacts) read(f frame) bool {
	r.lastIndex, r.term, r.isEntry, r.installs, r.hasHS = 0, 0, false, false, false
	switch f.typ {
	case recEntry:
		if proto.Unmarshal(f.payload, &r.entry) != nil {
			return false
		}
		r.lastIndex, r.term = r.entry.GetIndex(), r.entry.GetTerm()
		r.isEntry = r.lastIndex > 0
		return r.isEntry
	case recSegmentStart:
		if proto.Unmarshal(f.payload, &r.start) != nil {
			return false
		}
		r.lastIndex = r.start.GetLastIndex()
		r.hs, r.hasHS = raftpb.HardStateToCore(r.start.GetHardState()), true
	case recHardState:
		if proto.Unmarshal(f.payload, &r.hard) != nil {
			return false
		}
		r.hs, r.hasHS = raftpb.HardStateToCore(&r.hard), true
	case recSnapshot:
		if proto.Unmarshal(f.payload, &r.marker) != nil {
			return false
		}
		r.lastIndex, r.term = r.marker.GetMeta().GetIndex(), r.marker.GetMeta().GetTerm()
		r.installs = r.marker.GetReplacesLog()
	}
	return true
}

// EntryRecord locates one intact entry record of a WAL: for tools that aim
// damage at a chosen entry (the simulator, the chaos test).
type EntryRecord struct {
	File        string
	Offset      int64 // where the record starts
	PayloadSize int   // the bytes after the header that a flip may hit
	Index, Term uint64
}

// EntryRecords lists the intact entry records of the WAL in dir, in write
// order, reading until the first record that does not decode in each
// segment. It changes nothing.
func EntryRecords(fsys FS, dir string) ([]EntryRecord, error) {
	seqs, err := listSegments(fsys, dir)
	if err != nil {
		return nil, err
	}
	var (
		out   []EntryRecord
		buf   []byte
		facts recordFacts
	)
	for _, seq := range seqs {
		name := segmentPath(dir, seq)
		b, err := readSegment(fsys, name, buf)
		if err != nil {
			return nil, fmt.Errorf("wal: read %s: %w", name, err)
		}
		buf = b
		seed := seedFor(seq)
		for pos := 0; pos < len(b); {
			f := decodeFrame(b[pos:], seed, int64(pos))
			if f.status != frameOK {
				break
			}
			if f.typ == recEntry && facts.read(f) {
				out = append(out, EntryRecord{File: name, Offset: int64(pos), PayloadSize: len(f.payload), Index: facts.lastIndex, Term: facts.term})
			}
			pos += f.size
		}
	}
	return out, nil
}

// HeaderSize is the size of a WAL record's header: a record's payload
// starts at EntryRecord.Offset + HeaderSize.
const HeaderSize = headerSize
