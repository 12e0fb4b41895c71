package replica

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"slices"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// Files in Config.Dir beside the WAL: the vote floor of a repaired node,
// and the copy of the term and vote (disk.WriteVoteCopy).
const (
	voteFloorFile = "votefloor"
	voteCopyFile  = "vote"
	endMarkFile   = "walend"
)

// Why a repair refuses, where the reason is not the disk failing again (a
// read or write error): the refusal wraps one of these.
var (
	// ErrVoteUnknown: the damage may hide a later term or vote than the
	// intact records show, and no intact copy says what they were.
	ErrVoteUnknown = errors.New("the term and vote this node last promised are unknown")
	// ErrNoOtherVoter: the configuration the log would start over from has
	// no other voter to fetch the dropped entries from.
	ErrNoOtherVoter = errors.New("no other voter to fetch the dropped entries from")
)

// repairWAL repairs the WAL that failed to open with openErr, if that is
// safe, and returns nil; otherwise it returns why not (wrapping openErr).
//
// It is safe when the term and vote the node last promised are known: the
// newest intact hard state was written after the damage, or the vote copy
// is intact (docs/disk.md, "Repair from peers", has the argument).
//
// The log then starts over from the newest snapshot file that checks out
// (or, if none does, the state the node was bootstrapped with), with the
// same term and vote, and the node gets a vote floor, made durable before
// the WAL forgets. When an intact entry follows the damage, the records
// from there on give where the old log ended, and that is the floor: the
// node votes as if it still held every entry it dropped, and campaigns
// only once the leader has given its log back that far. When none does
// (or Config.DistrustWALEnd), the floor is the start of the term after the
// promised one: the node votes only for a candidate holding an entry of a
// later term, and campaigns only once it holds one itself (floorFor).
func (r *Replica) repairWAL(walDir, floorPath string, openErr error) error {
	var ce *disk.CorruptionError
	if !errors.As(openErr, &ce) || ce.WAL == nil {
		return openErr
	}
	d := ce.WAL
	if d.ReadErr != nil {
		return unreadAfterDamage(openErr, d.ReadErr)
	}
	promised, err := r.promisedVote(d.HardState, d.HardStateCurrent)
	if err != nil {
		return fmt.Errorf("%w; not repaired: %w", openErr, err)
	}
	snapLimit := d.Last.Index
	if d.OpenEnded {
		snapLimit = math.MaxUint64
	}
	snap, err := r.repairBase(snapLimit)
	if err != nil {
		return fmt.Errorf("%w; not repaired: %w", openErr, err)
	}
	var known []core.ConfState
	if d.Replayed {
		known = append(known, d.Snapshot.Conf)
	}
	if err := r.startOver(walDir, floorPath, snap, promised, r.floorFor(d.Last, !d.OpenEnded, promised), known...); err != nil {
		return fmt.Errorf("%w; %w", openErr, err)
	}
	if r.repaired == nil { // the first damage, not that of a repair's own segment
		r.repaired = d
	}
	r.repairPromised = promised
	return nil
}

// keepHoles opens a WAL that failed to open with openErr keeping its log,
// if the damage lost only entries it can name by index and term
// (disk.OpenKeepingHoles) and the term and vote the node last promised are
// known; nil error means it did. The node then keeps its log exactly as it
// was — so votes and acknowledgements stand as they were, with no floor —
// except that the lost entries are holes the core fills from the others
// before it applies them or campaigns (docs/disk.md, "Keeping the log").
func (r *Replica) keepHoles(walDir string, openErr error) (*disk.WAL, *disk.Recovered, error) {
	var ce *disk.CorruptionError
	if !errors.As(openErr, &ce) || ce.WAL == nil {
		return nil, nil, openErr
	}
	if ce.WAL.ReadErr != nil {
		return nil, nil, unreadAfterDamage(openErr, ce.WAL.ReadErr)
	}
	promised, err := r.promisedVote(ce.WAL.HardState, ce.WAL.HardStateCurrent)
	if err != nil {
		return nil, nil, err
	}
	w, rec, err := disk.OpenKeepingHoles(r.cfg.FS, walDir, r.cfg.WAL)
	if err != nil {
		return nil, nil, err
	}
	if !r.hasOtherVoter(rec) {
		// No one could give the holes back, and with them it never
		// campaigns: it would wait forever.
		w.Close()
		return nil, nil, ErrNoOtherVoter
	}
	if len(rec.Holes) > 0 && r.store.AppliedIndex() >= rec.Holes[0] {
		// The state machine applied past a hole: the membership as of
		// its applied index (what its snapshots record) would be read
		// from a log that may hide a configuration change there. Start
		// over instead (found by review).
		w.Close()
		return nil, nil, errors.New("the state machine has applied past the lost entries")
	}
	if hs := rec.HardState; hs.Term != promised.Term || hs.Vote != promised.Vote {
		// The damage took the newest term and vote with it; the vote copy
		// has them. Write them back before anything depends on them.
		if err := keepPromise(w, &rec.HardState, promised); err != nil {
			w.Close()
			return nil, nil, fmt.Errorf("replica: keep the log: %w", err)
		}
	}
	r.keptHoles = rec.Damage
	return w, rec, nil
}

// unreadAfterDamage is the refusal of a repair whose description of the
// damage stopped at a segment it could not read: where the log ended, and
// its newest hard state, may lie in that segment, so a floor or a promise
// taken from the description could be too low (the simulator found it: a
// floor below what the node had synced). It is the read error's, not the
// corruption's: the start fails and may be tried again.
func unreadAfterDamage(openErr, readErr error) error {
	return fmt.Errorf("%v; not repaired: the WAL could not be read on after the damage: %w", openErr, readErr)
}

// hasOtherVoter reports whether the newest configuration rec's log names
// (its last configuration entry outside the holes, else its snapshot's)
// has a voter besides this node, or names none at all (a node that joined
// learns the membership from the leader).
func (r *Replica) hasOtherVoter(rec *disk.Recovered) bool {
	conf := rec.Snapshot.Conf
	for _, e := range slices.Backward(rec.Entries) {
		if e.Type != core.EntryConfChange || slices.Contains(rec.Holes, e.Index) {
			continue
		}
		if _, c, err := core.DecodeConfChange(e.Data); err == nil {
			conf = c
			break
		}
	}
	return r.otherVoter(conf)
}

// otherVoter reports whether conf has a voter besides this node, or no
// voters at all: a node that joined a running cluster and took no snapshot
// since learns the membership from the leader, as it did when it joined.
func (r *Replica) otherVoter(conf core.ConfState) bool {
	return len(conf.Voters) == 0 || slices.ContainsFunc(conf.Voters, func(id core.NodeID) bool { return id != r.cfg.Core.ID })
}

// keepPromise writes the promised term and vote into the hard state *hs
// and, durably, into w: the WAL lost the records that held them.
func keepPromise(w *disk.WAL, hs *core.HardState, promised core.HardState) error {
	hs.Term, hs.Vote = promised.Term, promised.Vote
	if err := w.Append(*hs, nil); err != nil {
		return err
	}
	return w.Sync()
}

// KeptHoles reports the damage Open kept the log around, its lost entries
// as holes to fetch from the others (nil if none).
func (r *Replica) KeptHoles() *disk.WALDamage { return r.keptHoles }

// repairSnapshot starts the log over when the WAL is whole but the state
// machine cannot be rebuilt (why): the newest snapshot file is damaged and
// the WAL no longer holds the entries after an older one that checks out.
// The same repair as for a damaged WAL, from that older snapshot (or the
// bootstrap state), with everything known: the WAL's term, vote and last
// entry are intact, and its last entry is the floor (floorFor).
func (r *Replica) repairSnapshot(walDir, floorPath string, rec *disk.Recovered, why error) error {
	base, err := r.repairBase(rec.Snapshot.Index)
	if err != nil {
		return fmt.Errorf("%w; not repaired: %w", why, err)
	}
	promised, err := r.promisedVote(rec.HardState, true)
	if err != nil {
		return fmt.Errorf("%w; not repaired: %w", why, err)
	}
	end := core.LogPosition{Term: rec.Snapshot.Term, Index: rec.Snapshot.Index}
	if n := len(rec.Entries); n > 0 {
		end = core.LogPosition{Term: rec.Entries[n-1].Term, Index: rec.Entries[n-1].Index}
	}
	if err := r.startOver(walDir, floorPath, base, promised, r.floorFor(end, true, promised), rec.Snapshot.Conf); err != nil {
		return fmt.Errorf("%w; %w", why, err)
	}
	r.snapshotRepair = why
	return nil
}

// startOver makes the repair: the floor at least end, durably, and then
// a WAL that starts over from snap with the promised term and vote. It
// refuses if no other voter could give the dropped entries back, by snap's
// configuration or any newer one the node knows of (known).
func (r *Replica) startOver(walDir, floorPath string, snap core.SnapshotMeta, promised core.HardState, end core.LogPosition, known ...core.ConfState) error {
	for _, conf := range append(known, snap.Conf) {
		if !r.otherVoter(conf) {
			// Nobody could give the dropped entries back, and below its
			// floor the node never campaigns: it would wait forever.
			return fmt.Errorf("not repaired: %w", ErrNoOtherVoter)
		}
	}
	floor, err := r.readFloor(floorPath, func() uint64 { return promised.Term })
	if err != nil {
		return fmt.Errorf("not repaired: %w", err)
	}
	if !floor.AtLeast(end) {
		floor = end
	}
	if err := disk.WriteVoteFloor(r.cfg.FS, floorPath, floor); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	hs := core.HardState{Term: promised.Term, Vote: promised.Vote, Commit: snap.Index}
	if err := disk.Repair(r.cfg.FS, walDir, r.cfg.WAL, snap, hs); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	return nil
}

// snapshotGapError is a recovery that needs state machine state the
// snapshot files and the WAL no longer give together, because snapshot
// files are damaged (gapIfDamaged).
type snapshotGapError struct{ err error }

// gapIfDamaged is err as a snapshotGapError if the snapshots skipped were
// all damaged (not merely unreadable for now: a read error is retried by
// starting again, not repaired).
func gapIfDamaged(skipped []disk.SkippedSnapshot, err error) error {
	if len(skipped) == 0 || !allDamaged(skipped) {
		return err
	}
	// The damage is part of the error (a *disk.CorruptionError), as it
	// is for a damaged WAL.
	return &snapshotGapError{fmt.Errorf("%w: %w", err, skipped[0].Err)}
}

// allDamaged reports whether every snapshot file skipped was damaged.
func allDamaged(skipped []disk.SkippedSnapshot) bool {
	for _, s := range skipped {
		var ce *disk.CorruptionError
		if !errors.As(s.Err, &ce) {
			return false
		}
	}
	return true
}

func (e *snapshotGapError) Error() string { return e.err.Error() }
func (e *snapshotGapError) Unwrap() error { return e.err }

// readFloor reads the vote floor. A damaged floor file, with repair on, is
// replaced by the start of the term after term(), the newest the node
// knows it was in: every floor it ever wrote was at most that (an old log's end,
// whose terms are at most the term then, or the start of the term after
// a promised one), so the floor only rises. The new floor is written
// durably before it is used.
func (r *Replica) readFloor(floorPath string, term func() uint64) (core.LogPosition, error) {
	floor, err := disk.ReadVoteFloor(r.cfg.FS, floorPath)
	var ce *disk.CorruptionError
	if err == nil || !r.cfg.RepairWAL || !errors.As(err, &ce) {
		return floor, err
	}
	floor = core.LogPosition{Term: term() + 1}
	if werr := disk.WriteVoteFloor(r.cfg.FS, floorPath, floor); werr != nil {
		return core.LogPosition{}, fmt.Errorf("%w; replacing it: %w", err, werr)
	}
	r.floorRepaired = err
	return floor, nil
}

// FloorRepaired reports the damage Open found in the vote floor file and
// replaced (readFloor), or nil.
func (r *Replica) FloorRepaired() error { return r.floorRepaired }

// lostTail handles a WAL whose newest hard state (*hs) is behind the vote
// copy (promised): records the WAL synced are gone from its end without a
// trace (a lost or misdirected write). Without Config.RepairWAL the node
// refuses to start. With it, the log it has is a true prefix of what it
// had, so it keeps it, raises its floor (held in *floor and durably) to
// the start of the term after the promised one, as floorFor does when the
// log's end is unknown, and keeps the promise: *hs takes the copy's term
// and vote, and the WAL is given them.
func (r *Replica) lostTail(floorPath string, hs *core.HardState, promised core.HardState, floor *core.LogPosition) error {
	why := fmt.Sprintf("the WAL's newest hard state (term %d, vote %d) is behind the copy of term and vote (term %d, vote %d), which is written only after the WAL has synced them: the WAL lost synced records at its end",
		hs.Term, hs.Vote, promised.Term, promised.Vote)
	if !r.cfg.RepairWAL {
		return fmt.Errorf("replica: %s", why)
	}
	next := core.LogPosition{Term: promised.Term + 1}
	if !floor.AtLeast(next) {
		if err := disk.WriteVoteFloor(r.cfg.FS, floorPath, next); err != nil {
			return fmt.Errorf("replica: %s; raising the vote floor: %w", why, err)
		}
		*floor = next
	}
	r.voteFloor = *floor
	if err := keepPromise(r.wal, hs, promised); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	r.lostTailWhy = errors.New(why)
	return nil
}

// readEndMark reads the WAL end mark, which says where the log ended at
// the newest WAL sync (disk.EndMark), and notes whether the log Open
// recovered is short of it: then the WAL lost synced records at its end,
// which the WAL alone cannot tell from records never written. A state
// machine that kept what it applied (state.db) and is past the log's end
// shows the same without a mark: it applies only synced entries. It runs
// before the state machine is brought in line with the log (recover),
// which then starts it over from a snapshot, if the node may repair: with
// repair on (Config.RepairWAL) and another voter to fetch the lost entries
// from (rec's configuration; nil rec: the bootstrap peers). Otherwise the
// state machine is left alone and Open refuses.
func (r *Replica) readEndMark(rec *disk.Recovered) error {
	mark, found, err := disk.ReadEndMark(r.cfg.FS, filepath.Join(r.cfg.Dir, endMarkFile))
	if err != nil && !errors.Is(err, disk.ErrCorrupt) {
		return fmt.Errorf("replica: %w", err)
	}
	d := r.wal.Durable()
	a := endAtOpen{mark: mark, damaged: err}
	a.short = found && !(core.LogPosition{Term: d.LastTerm, Index: d.LastIndex}).AtLeast(mark)
	if rec != nil {
		a.noVoter = !r.hasOtherVoter(rec)
	} else {
		a.noVoter = !r.otherVoter(core.ConfState{Voters: r.cfg.Core.Peers})
	}
	if r.cfg.RepairWAL && !a.noVoter && r.repaired == nil && r.store.AppliedIndex() > d.LastIndex {
		a.appliedPastEnd = r.store.AppliedIndex()
	}
	r.atOpen = a
	return nil
}

// endAtOpen is what readEndMark found of the end of the WAL.
type endAtOpen struct {
	mark    core.LogPosition // the end mark (zero if none or damaged)
	damaged error            // why the mark is damaged, or nil
	short   bool             // the recovered log is short of the mark
	noVoter bool             // the recovered configuration has no other voter
	// appliedPastEnd is the state machine's applied index if it is past
	// the end of a WAL that was not repaired and the node may repair,
	// else zero.
	appliedPastEnd uint64
}

// checkEndMark acts on a log short of the WAL end mark (readEndMark). The
// node keeps the log it has, a prefix of the one it had, and raises its
// vote floor to the mark: it votes as if it still held what it may have
// acknowledged, and campaigns only once a leader has given it that much
// again (docs/disk.md, "Lost writes at the end"). A repair that started
// the log over has a floor at or past the old log's end already, which
// covers the mark unless the end was lost too. A damaged mark (its write
// torn, flipped or misdirected) no longer says where the log ended, nor
// does a state machine past the log's end (readEndMark): the floor is then
// the start of the term after the one the node promised (term), which
// covers every entry it may have acknowledged (floorFor).
// Then it opens the mark for this run (Config.DetectLostWrites) or
// removes it.
func (r *Replica) checkEndMark(floorPath string, term uint64, floor *core.LogPosition) error {
	a := r.atOpen
	mark := a.mark
	d := r.wal.Durable()
	var why string
	switch {
	case a.appliedPastEnd > 0 && !a.short:
		mark = core.LogPosition{Term: term + 1}
		why = fmt.Sprintf("the state machine had applied index %d, past the end of the WAL's log (term %d index %d), and it applies only synced entries: the WAL lost synced records at its end",
			a.appliedPastEnd, d.LastTerm, d.LastIndex)
	case a.damaged != nil:
		mark = core.LogPosition{Term: term + 1}
		why = fmt.Sprintf("the WAL end mark is damaged (%v), so where the log ended at the newest WAL sync is unknown: the WAL may have lost synced records at its end", a.damaged)
	case a.short:
		why = fmt.Sprintf("the WAL's log ends at term %d index %d, short of its end mark (term %d index %d), which is written only after a WAL sync: the WAL lost synced records at its end",
			d.LastTerm, d.LastIndex, mark.Term, mark.Index)
	}
	if why != "" && !floor.AtLeast(mark) {
		if !r.cfg.RepairWAL {
			return fmt.Errorf("replica: %s", why)
		}
		if a.noVoter {
			// No one could give the entries back, and below the floor it
			// never campaigns: it would wait forever.
			return fmt.Errorf("replica: %s; not repaired: %w", why, ErrNoOtherVoter)
		}
		if err := disk.WriteVoteFloor(r.cfg.FS, floorPath, mark); err != nil {
			return fmt.Errorf("replica: %s; raising the vote floor: %w", why, err)
		}
		*floor = mark
		r.voteFloor = mark
		r.lostTailWhy = errors.Join(r.lostTailWhy, errors.New(why))
	}
	path := filepath.Join(r.cfg.Dir, endMarkFile)
	if !r.cfg.DetectLostWrites {
		if err := r.cfg.FS.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("replica: remove the WAL end mark: %w", err)
		}
		return nil
	}
	m, err := disk.OpenEndMark(r.cfg.FS, path, a.mark)
	if err == nil {
		if err = m.Write(core.LogPosition{Term: d.LastTerm, Index: d.LastIndex}); err != nil {
			m.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	r.endMark = m
	return nil
}

// floorFor is the vote floor of a repair whose old log ended at end, if
// endKnown. Where the log ended may be unknown (no intact entry follows
// the damage), or untrustworthy (Config.DistrustWALEnd: a lost or
// misdirected write can take the last records away without a trace); its
// last term is not: an entry is acknowledged only after the term it was
// written in is durable (and in the vote copy), so every entry the node may
// have acknowledged has a term at most promised.Term. A floor at the start
// of the next term holds the node out of elections until a leader of a
// later term has given it its log: such a leader holds every entry
// committed before its term.
func (r *Replica) floorFor(end core.LogPosition, endKnown bool, promised core.HardState) core.LogPosition {
	if endKnown && !r.cfg.DistrustWALEnd {
		return end
	}
	if next := (core.LogPosition{Term: promised.Term + 1}); next.AtLeast(end) || !endKnown {
		return next
	}
	return end
}

// promisedVote returns the term and vote the node last made durable before
// sending anything that depended on them: hs, the WAL's newest intact hard
// state, when it is current (written after any damage), and otherwise the
// later of it and the vote copy (which is rewritten after each WAL sync that
// changes term or vote and before the messages go; a WAL hard state newer
// than the copy was never sent on). With Config.DistrustWALEnd or
// Config.DetectLostWrites the copy is always needed: a lost or misdirected
// write may have taken a newer hard state away from the WAL's end, and a
// lost record followed only by the zeros the WAL writes ahead reads as
// the log's clean end (simulator seed 1519831 -lost-writes: the WAL's last
// record, a vote, lost and the copy's bit flipped in one crash, with older
// damage before it; the kept log took the older vote for the newest).
func (r *Replica) promisedVote(hs core.HardState, current bool) (core.HardState, error) {
	if r.repairPromised.Term > 0 {
		// A repair earlier in this start knew it (and wrote it into the
		// repair segment that is now damaged).
		return laterVote(r.repairPromised, hs), nil
	}
	if current && !r.cfg.DistrustWALEnd && !r.cfg.DetectLostWrites {
		return hs, nil
	}
	cp, found, err := disk.ReadVoteCopy(r.cfg.FS, r.voteCopyPath())
	switch {
	case err != nil:
		return core.HardState{}, fmt.Errorf("%w: the damage may hide a later term or vote, and the copy of them is unreadable: %w", ErrVoteUnknown, err)
	case !found:
		return core.HardState{}, fmt.Errorf("%w: the damage may hide a later term or vote than the intact records show, there is no copy of them, and this node must not vote twice in a term", ErrVoteUnknown)
	}
	return laterVote(hs, cp), nil
}

// laterVote is the later of two (term, vote) pairs: the higher term, and in
// one term the vote that was cast (a vote only goes from none to someone).
func laterVote(a, b core.HardState) core.HardState {
	switch {
	case a.Term > b.Term:
		return core.HardState{Term: a.Term, Vote: a.Vote}
	case b.Term > a.Term || a.Vote == core.None:
		return core.HardState{Term: b.Term, Vote: b.Vote}
	}
	return core.HardState{Term: a.Term, Vote: a.Vote}
}

// voteCopyPath is where the copy of term and vote is kept.
func (r *Replica) voteCopyPath() string { return filepath.Join(r.cfg.Dir, voteCopyFile) }

// keepVoteCopy rewrites the copy of term and vote if hs changed either.
// The WAL stage calls it after the WAL holds hs and before sending what
// depends on it; Open calls it with the recovered hard state.
func (r *Replica) keepVoteCopy(hs core.HardState) error {
	if hs.Term == 0 || (hs.Term == r.voteCopy.Term && hs.Vote == r.voteCopy.Vote) {
		return nil
	}
	if err := disk.WriteVoteCopy(r.cfg.FS, r.voteCopyPath(), hs.Term, hs.Vote); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	r.voteCopy = core.HardState{Term: hs.Term, Vote: hs.Vote}
	return nil
}

// repairBase picks the snapshot a repaired log starts from: the newest
// snapshot file at most limit that checks out (a snapshot is of committed
// entries only), or, if none does, the state the node started from
// (bootstrapBase).
func (r *Replica) repairBase(limit uint64) (core.SnapshotMeta, error) {
	s, skipped, err := r.snaps.LoadAtMost(limit)
	r.noteSkipped(skipped)
	if err == nil {
		meta := s.Meta
		if cerr := s.Close(); cerr != nil {
			return core.SnapshotMeta{}, cerr
		}
		return meta, nil
	}
	if !errors.Is(err, disk.ErrNoSnapshot) || !allDamaged(skipped) {
		// A snapshot file that could not be read now may be read at the
		// next start: do not start over from further back for that.
		return core.SnapshotMeta{}, err
	}
	return r.bootstrapBase(), nil
}

// bootstrapBase is the state the node started from: an empty state
// machine at index 0 and the configuration it was bootstrapped with (none
// for a node that joined a running cluster: it learns the membership from
// the leader, as it did when it joined). A follower can always start over
// from there; the leader sends it the rest, entries or a snapshot.
func (r *Replica) bootstrapBase() core.SnapshotMeta {
	if len(r.cfg.Core.Peers) == 0 {
		return core.SnapshotMeta{}
	}
	voters := slices.Clone(r.cfg.Core.Peers)
	slices.Sort(voters)
	return core.SnapshotMeta{Conf: core.ConfState{Voters: voters}}
}

// restoreForRepair starts the state machine over from the snapshot a
// repaired log starts from.
func (r *Replica) restoreForRepair(snap core.SnapshotMeta) error {
	if snap.Index == 0 {
		// The bootstrap configuration: an empty state machine.
		var empty bytes.Buffer
		if _, err := kvstore.NewMemory(kvstore.Options{}).Snapshot(&empty); err != nil {
			return fmt.Errorf("replica: repair: %w", err)
		}
		if err := r.store.Restore(&empty); err != nil {
			return fmt.Errorf("replica: repair: reset the state machine: %w", err)
		}
		return nil
	}
	s, skipped, err := r.snaps.LoadAtMost(snap.Index)
	r.noteSkipped(skipped)
	if err != nil {
		return fmt.Errorf("replica: repair: %w", err)
	}
	defer s.Close()
	if s.Meta.Index != snap.Index {
		return fmt.Errorf("replica: repair: the snapshot at %d no longer checks out", snap.Index)
	}
	if err := r.store.Restore(s); err != nil {
		return fmt.Errorf("replica: repair: restore snapshot %s: %w", s.File, err)
	}
	r.restoredAtOpen = s.Meta.Index
	return nil
}

// Repaired reports the damage Open repaired the WAL from (nil if it did
// not repair it).
func (r *Replica) Repaired() *disk.WALDamage { return r.repaired }

// LostTail reports why Open found that the WAL had lost synced records at
// its end (its hard state behind the vote copy, or its log short of the
// end mark), or nil. The node kept its log (and the copy's term and vote),
// with its vote floor raised.
func (r *Replica) LostTail() error { return r.lostTailWhy }

// SnapshotRepaired reports why Open started a whole WAL's log over (the
// state machine could not be rebuilt from the snapshot files), or nil.
func (r *Replica) SnapshotRepaired() error { return r.snapshotRepair }

// VoteFloor is the end of the log the node had before a repair (zero if it
// was never repaired): it votes as if its log reached at least that far.
func (r *Replica) VoteFloor() core.LogPosition { return r.voteFloor }

// BehindRepair reports whether the state machine may still be older than
// one this node served before a repair: it went back to an older snapshot
// (or the empty bootstrap state) and has not yet applied an entry at or
// past its vote floor, or the log was kept with holes, which the state
// machine cannot apply past until they are filled, and it has not yet
// applied the last of them. A floor is at least the end of the log the
// node had, or the start of a term after every entry it held, so an
// applied entry there comes after every entry it applied before. Until
// then it must not answer reads from its own state (serializable reads):
// they would go back in time. State machine side (after Open): the
// runtime reads it after RunStore.
func (r *Replica) BehindRepair() bool { return r.behindFloor }

// noteApplied clears behindFloor once the applied position reaches the
// vote floor and the last hole the log was kept with (state machine side).
func (r *Replica) noteApplied() {
	applied := r.store.AppliedIndex()
	if r.behindFloor && (core.LogPosition{Term: r.appliedTerm, Index: applied}).AtLeast(r.voteFloor) && applied >= r.lastHoleAtOpen {
		r.behindFloor = false
	}
}

// noteSkipped adds to the snapshots recovery skipped those not noted yet
// (a repair looks again at what recovery looked at).
func (r *Replica) noteSkipped(skipped []disk.SkippedSnapshot) {
	for _, s := range skipped {
		if !slices.ContainsFunc(r.skippedSnaps, func(n disk.SkippedSnapshot) bool { return n.File == s.File }) {
			r.skippedSnaps = append(r.skippedSnaps, s)
		}
	}
}
