package core

import "slices"

// raftLog is the node's whole view of the replicated log, kept in memory.
//
// Everything up to snap.Index has been folded into a snapshot and is gone;
// entries[i] holds index snap.Index+1+i. Of the rest, entries up to stable are
// on the runtime's stable storage and the ones after it still have to be
// handed out in a Ready and persisted. The runtime keeps memory bounded by
// taking snapshots (Node.SnapshotTaken), which drop the prefix, and by
// cutting applied entries in memory alone (Node.CompactLog), with no
// snapshot file at the cut.
type raftLog struct {
	snap    SnapshotMeta
	entries []Entry
	// snapFile is the index of the newest snapshot the runtime holds a file
	// of (at most snap.Index): only that one can be sent to a follower, and
	// only while it is snap itself does a follower it is sent to find the
	// entries after it here.
	snapFile uint64

	// committed is the highest index known to be on a quorum's stable storage.
	committed uint64
	// applied is the highest index the runtime has applied (confirmed by
	// Advance); applying is the highest index handed out for applying.
	applied  uint64
	applying uint64
	// stable is the highest index known durable on this node; persisting is
	// the highest index handed out for persisting and not yet confirmed.
	stable     uint64
	persisting uint64

	// rewrites counts the times existing entries were replaced (a conflicting
	// suffix truncated, or the log reset by a snapshot), and rewriteFrom is
	// the lowest index the latest one touched. Checkers use them to re-verify
	// only what changed.
	rewrites    uint64
	rewriteFrom uint64

	// holes are entries known by index and term only, their data lost to
	// disk damage (PersistentState.Holes). Their data comes back from
	// another member holding the same entry (fill). Nothing is applied,
	// sent or persisted from a hole.
	holes Holes
	// filled are the entries fill gave data since the last Ready, for the
	// runtime to write down (Ready.Filled).
	filled []Entry
}

// Holes are the indexes, ascending, of entries of a log known by index and
// term but not their data: a repair kept the log around damaged WAL
// records (docs/disk.md, "Keeping the log").
type Holes []uint64

// Empty reports whether there are no holes.
func (h Holes) Empty() bool { return len(h) == 0 }

// Has reports whether index i is a hole.
func (h Holes) Has(i uint64) bool {
	_, ok := slices.BinarySearch(h, i)
	return ok
}

// First is the lowest hole (0 if none).
func (h Holes) First() uint64 {
	if len(h) == 0 {
		return 0
	}
	return h[0]
}

// cutFrom drops the holes at or above i.
func (h *Holes) cutFrom(i uint64) {
	k, _ := slices.BinarySearch(*h, i)
	*h = (*h)[:k]
}

// cutTo drops the holes at or below i.
func (h *Holes) cutTo(i uint64) {
	k, found := slices.BinarySearch(*h, i)
	if found {
		k++
	}
	*h = (*h)[k:]
}

// remove drops hole i.
func (h *Holes) remove(i uint64) {
	if k, found := slices.BinarySearch(*h, i); found {
		*h = slices.Delete(*h, k, k+1)
	}
}

func newLog(snap SnapshotMeta, entries []Entry) *raftLog {
	l := &raftLog{snap: snap, entries: entries, snapFile: snap.Index}
	l.stable = l.lastIndex()
	l.persisting = l.stable
	l.committed = snap.Index
	l.applied = snap.Index
	l.applying = snap.Index
	return l
}

func (l *raftLog) firstIndex() uint64 { return l.snap.Index + 1 }

func (l *raftLog) lastIndex() uint64 { return l.snap.Index + uint64(len(l.entries)) }

func (l *raftLog) lastTerm() uint64 {
	t, _ := l.term(l.lastIndex())
	return t
}

// term returns the term of the entry at i. ok is false when i is compacted
// away (below the snapshot) or beyond the end of the log.
func (l *raftLog) term(i uint64) (t uint64, ok bool) {
	switch {
	case i == l.snap.Index:
		return l.snap.Term, true
	case i < l.snap.Index || i > l.lastIndex():
		return 0, false
	}
	return l.entries[i-l.snap.Index-1].Term, true
}

func (l *raftLog) matchTerm(i, t uint64) bool {
	lt, ok := l.term(i)
	return ok && lt == t
}

// slice returns entries [lo, hi) without copying. Callers must not modify the
// result; the backing array is shared with the log.
func (l *raftLog) slice(lo, hi uint64) []Entry {
	if lo >= hi {
		return nil
	}
	off := l.snap.Index + 1
	return l.entries[lo-off : hi-off : hi-off]
}

// isUpToDate is the voting restriction of §5.4.1: a log ending at (i, t) is
// at least as up to date as ours.
func (l *raftLog) isUpToDate(i, t uint64) bool {
	lt := l.lastTerm()
	return t > lt || (t == lt && i >= l.lastIndex())
}

// findConflict returns the index of the first entry in ents that is not
// already in the log with the same term, or 0 when all of them are.
func (l *raftLog) findConflict(ents []Entry) uint64 {
	for _, e := range ents {
		if !l.matchTerm(e.Index, e.Term) {
			return e.Index
		}
	}
	return 0
}

// findConflictByTerm returns the largest index ≤ index whose term is ≤ term,
// together with that term. It lets a leader skip every entry of a term the
// follower does not have in one round trip (the "fast backtracking" hint).
func (l *raftLog) findConflictByTerm(index, term uint64) (uint64, uint64) {
	if index > l.lastIndex() {
		index = l.lastIndex()
	}
	for ; index > l.snap.Index; index-- {
		t, _ := l.term(index)
		if t <= term {
			return index, t
		}
	}
	return l.snap.Index, l.snap.Term
}

// appendAfterMatch writes ents (contiguous, starting right after a matched
// position at or beyond the commit index) into the log, truncating any
// conflicting suffix.
func (l *raftLog) appendAfterMatch(ents []Entry) {
	if ci := l.findConflict(ents); ci != 0 {
		l.truncateAndAppend(ents[ci-ents[0].Index:])
	}
}

// fill gives a hole its data from e, if e is that entry: the same index
// and term (by Log Matching, the same entry), or, for a committed hole of
// unknown term (term 0), an entry its source knows committed (committed:
// the highest index it vouches for). It counts as a rewrite from there,
// for checkers.
func (l *raftLog) fill(e Entry, committed uint64) bool {
	if !l.holes.Has(e.Index) {
		return false
	}
	if t, _ := l.term(e.Index); t != e.Term && (t != 0 || e.Index > committed) {
		return false
	}
	l.entries[e.Index-l.snap.Index-1] = e
	l.holes.remove(e.Index)
	l.filled = append(l.filled, e)
	l.rewrites++
	l.rewriteFrom = e.Index
	return true
}

// truncateAndAppend replaces everything from ents[0].Index on with ents.
func (l *raftLog) truncateAndAppend(ents []Entry) {
	first := ents[0].Index
	l.holes.cutFrom(first)
	keep := first - l.snap.Index - 1
	// Copy on truncation so that a slice handed out earlier (in a Ready or a
	// message) never sees its entries overwritten in place.
	if keep < uint64(len(l.entries)) {
		l.rewrites++
		l.rewriteFrom = first
		fresh := make([]Entry, keep, keep+uint64(len(ents)))
		copy(fresh, l.entries[:keep])
		l.entries = fresh
	}
	l.entries = append(l.entries, ents...)
	if l.stable >= first {
		l.stable = first - 1
	}
	if l.persisting >= first {
		l.persisting = first - 1
	}
}

func (l *raftLog) commitTo(i uint64) bool {
	if i > l.lastIndex() {
		i = l.lastIndex()
	}
	if i <= l.committed {
		return false
	}
	l.committed = i
	return true
}

// unstable returns the entries that have not been handed out for persisting.
func (l *raftLog) unstable() []Entry {
	return l.slice(l.persisting+1, l.lastIndex()+1)
}

// toApply returns committed entries not yet handed out for applying, at most
// maxBytes of data (but always at least one entry when any is ready).
func (l *raftLog) toApply(maxBytes uint64) []Entry {
	lo, hi := l.applying+1, l.committed+1
	if !l.holes.Empty() {
		// Never past a hole: its data is not here yet.
		hi = min(hi, l.holes.First())
	}
	if lo < l.firstIndex() || lo >= hi {
		return nil
	}
	ents := l.slice(lo, hi)
	if maxBytes == 0 {
		return ents
	}
	var size uint64
	for i, e := range ents {
		size += uint64(len(e.Data))
		if size > maxBytes && i > 0 {
			return ents[:i]
		}
	}
	return ents
}

// restore replaces the log with a snapshot's position, keeping nothing.
func (l *raftLog) restore(s SnapshotMeta) {
	l.rewrites++
	l.rewriteFrom = 0
	l.snap, l.snapFile = s, s.Index
	l.entries = nil
	l.holes = nil
	l.committed = s.Index
	l.applied = s.Index
	l.applying = s.Index
	l.stable = s.Index
	l.persisting = s.Index
}

// restoreKeeping puts a snapshot at s in place of the log up to s, which
// holds s's last entry (so, by Log Matching, every entry before it) and
// keeps the entries after it: a node whose holes the snapshot covers.
func (l *raftLog) restoreKeeping(s SnapshotMeta) {
	rest := make([]Entry, l.lastIndex()-s.Index)
	copy(rest, l.entries[s.Index-l.snap.Index:])
	l.rewrites++
	l.rewriteFrom = 0
	l.snap, l.entries, l.snapFile = s, rest, s.Index
	l.holes.cutTo(s.Index)
	l.committed = max(l.committed, s.Index)
	l.applied, l.applying = s.Index, s.Index
	l.stable = max(l.stable, s.Index)
	l.persisting = max(l.persisting, s.Index)
}

// compact drops entries up to and including i, which must be applied.
func (l *raftLog) compact(i uint64, conf ConfState) {
	l.holes.cutTo(i)
	t, _ := l.term(i)
	drop := i - l.snap.Index
	rest := make([]Entry, len(l.entries)-int(drop))
	copy(rest, l.entries[drop:])
	l.entries = rest
	l.snap = SnapshotMeta{Index: i, Term: t, Conf: conf}
}

// entrySize is the number of bytes an entry adds to a message, roughly.
func entrySize(e Entry) uint64 { return uint64(len(e.Data)) + 24 }
