package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// DefaultMaxInflight bounds the batches between Ready and Finish when
// Config.MaxInflight is 0. It is large so that the loop keeps answering
// heartbeats and votes (which leave with every Ready) while the state
// machine is busy, e.g. restoring a snapshot from the leader; a batch holds
// only references to entries already in the log.
const DefaultMaxInflight = 256

// stage is how far a batch has come through the pipeline.
type stage uint8

const (
	stageTaken stage = iota
	stagePersisted
	stageApplied
	stageFinished
)

var stageNames = [...]string{"taken", "persisted", "applied", "finished"}

func (s stage) String() string { return stageNames[s] }

// Batch is one Ready on its way through the pipeline (see the package
// comment). Only the stage that holds a batch touches it; the runtime hands
// it on through its queues.
type Batch struct {
	rd core.Ready
	// seq numbers batches in the order Ready took them, from 1; stage is
	// the last stage done. Together they let every stage check that it
	// gets batches in order and from the stage before it.
	seq     uint64
	stage   stage
	results []kvstore.Result
	// forceSnapshot: take a snapshot after this batch in any case.
	forceSnapshot bool
	// pending is a snapshot captured after this batch, still to be
	// written (see PendingSnapshot).
	pending *PendingSnapshot
}

// CommittedEntries is what the batch applies (for metrics).
func (b *Batch) CommittedEntries() []core.Entry { return b.rd.CommittedEntries }

// Entries is what the batch appends to the log (for the simulator's
// checks of what the WAL has made durable).
func (b *Batch) Entries() []core.Entry { return b.rd.Entries }

// SnapshotAsked reports whether the core asked for a fresh snapshot in this
// batch (core.Ready.WantSnapshot): it had cut entries a follower needs.
func (b *Batch) SnapshotAsked() bool { return b.rd.WantSnapshot }

// WALJob is one item of the WAL stage's queue: a batch to persist, or a
// written snapshot whose WAL segments may be released.
type WALJob struct {
	Batch   *Batch
	Compact *PendingSnapshot
}

// StoreJob is one item of the state machine stage's queue: a batch to
// apply, or Do, work that must run in order with applying (writing a
// received snapshot's file, SnapshotDone).
type StoreJob struct {
	Batch *Batch
	Do    func()
}

// PendingSnapshot is the state captured for a snapshot after a batch (a
// due one: every SnapshotEvery entries), not yet written to its file.
// Capturing is cheap, so applying never waits on a large state being
// written. Finish returns it; the runtime writes it (WriteSnapshot, on any
// goroutine), then queues SnapshotDone for the state machine stage,
// calls SnapshotWritten on the loop, and queues it as a WALJob.
type PendingSnapshot struct {
	meta      core.SnapshotMeta
	releaseTo uint64
	frozen    kvstore.Frozen
	// written is set once WriteSnapshot made the file durable: nothing
	// may be compacted behind the snapshot before (SnapshotWritten checks).
	written bool
}

// Index is the log index the snapshot is taken at.
func (p *PendingSnapshot) Index() uint64 { return p.meta.Index }

// Ready takes the node's next batch of work, if any and if fewer than
// MaxInflight batches are in the pipeline, and sends the messages that may
// leave before anything is persisted. Loop side.
func (r *Replica) Ready() (*Batch, bool) {
	if r.taken-r.finished >= uint64(r.maxInflight) || !r.node.HasReady() {
		return nil, false
	}
	r.taken++
	var b *Batch
	if k := len(r.spareBatches); k > 0 {
		b = r.spareBatches[k-1]
		r.spareBatches = r.spareBatches[:k-1]
	} else {
		b = new(Batch)
	}
	// b is zero (new, or cleared by Release): only what Ready sets is written.
	b.rd, b.seq = r.node.Ready(), r.taken
	b.forceSnapshot = r.wantSnapshot || b.rd.WantSnapshot
	r.wantSnapshot = false
	if msgs := b.rd.Messages; len(msgs) > 0 {
		r.cfg.Send(msgs)
		// Send keeps nothing (see Config.Send), so the array can carry a
		// later batch's messages.
		b.rd.Messages = nil
		r.node.RecycleMessages(msgs)
	}
	return b, true
}

// Release hands back a batch Finish is done with, for Ready to reuse. The
// runtime must hold no reference to it afterwards. Optional: a runtime
// that keeps batches around (to trace them) need not call it.
func (r *Replica) Release(b *Batch) {
	*b = Batch{}
	if len(r.spareBatches) < r.maxInflight {
		r.spareBatches = append(r.spareBatches, b)
	}
}

// Inflight is the number of batches between Ready and Finish. Loop side.
func (r *Replica) Inflight() int { return int(r.taken - r.finished) }

// checkOrder refuses a batch out of order or one that skipped a stage:
// the stage after from last handled batch last.
func checkOrder(b *Batch, from stage, last uint64) error {
	if b.stage != from || b.seq != last+1 {
		return fmt.Errorf("replica: pipeline order broken: batch %d (%v) handed to the stage after %v, which last handled batch %d", b.seq, b.stage, from, last)
	}
	return nil
}

// checkGroupOrder checks a group of batches for the stage after from
// before any of them is touched.
func checkGroupOrder[T any](group []T, batch func(T) *Batch, from stage, last uint64) error {
	for i, j := range group {
		if err := checkOrder(batch(j), from, last+uint64(i)); err != nil {
			return err
		}
	}
	return nil
}

// advanceStage moves b, already checked, past the stage after from.
func advanceStage(b *Batch, last *uint64) {
	b.stage++
	*last = b.seq
}

// RunWAL is the WAL stage. It works through jobs in order: each run of
// consecutive batches is written, made durable with one fsync (group
// commit), and only then are their acknowledgements and votes sent; a
// compaction job releases the WAL behind a written snapshot, after every
// batch queued before it. It appends the persisted batches to dst, in
// order, for the state machine stage.
func (r *Replica) RunWAL(dst []*Batch, jobs []WALJob) ([]*Batch, error) {
	for len(jobs) > 0 {
		n := 0
		for n < len(jobs) && jobs[n].Compact == nil {
			n++
		}
		if n > 0 {
			if err := r.persist(jobs[:n]); err != nil {
				return dst, err
			}
			for _, j := range jobs[:n] {
				dst = append(dst, j.Batch)
			}
		}
		if n < len(jobs) {
			if err := r.compactTo(jobs[n].Compact); err != nil {
				return dst, err
			}
			n++
		}
		jobs = jobs[n:]
	}
	return dst, nil
}

// persist writes a group of batches, syncs once, and acknowledges them.
func (r *Replica) persist(group []WALJob) error {
	if err := checkGroupOrder(group, func(j WALJob) *Batch { return j.Batch }, stageTaken, r.persisted); err != nil {
		return err
	}
	mustSync := false
	for _, j := range group {
		if err := r.write(j.Batch); err != nil {
			return err
		}
		mustSync = mustSync || j.Batch.rd.MustSync
	}
	if mustSync {
		if err := r.cfg.Observe.sync(r); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
		// A second copy of term and vote, before anything that depends on
		// them leaves: the WAL's record of them could be the one damaged.
		for _, j := range slices.Backward(group) {
			if hs := j.Batch.rd.HardState; !hs.IsEmpty() {
				if err := r.keepVoteCopy(hs); err != nil {
					return err
				}
				break
			}
		}
	}
	for _, j := range group {
		advanceStage(j.Batch, &r.persisted)
		if msgs := j.Batch.rd.MessagesAfterPersist; len(msgs) > 0 {
			r.cfg.Send(msgs)
		}
	}
	return nil
}

// write appends the batch to the WAL without making it durable.
func (r *Replica) write(b *Batch) error {
	rd := &b.rd
	if snap := rd.Snapshot; snap != nil {
		var err error
		switch {
		case !rd.SnapshotKeepsLog:
			err = r.wal.InstallSnapshot(*snap)
		case snap.Index > r.wal.Snapshot().Index:
			// It filled holes in a log that goes on after it.
			err = r.wal.MarkCompacted(*snap)
		default:
			// It filled holes below the WAL's compaction marker: the node
			// started from an older snapshot file because its newest was
			// damaged, and its log's holes lie between the two. The
			// marker stays; the file received is the one a restart falls
			// back to now.
		}
		if err != nil {
			return fmt.Errorf("replica: %w", err)
		}
	}
	if len(rd.Filled) > 0 {
		// Before the entries: an append in the same Ready may cut the log
		// below a filled entry, and the fill must not outlive that.
		if err := r.wal.Fill(rd.Filled); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
	}
	if err := r.wal.Append(rd.HardState, rd.Entries); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	return nil
}

// compactTo records in the WAL that the snapshot is durable, prunes the
// snapshot files the log no longer needs, and releases the segments behind
// the snapshot before it (so a damaged newest file can be replaced by the
// older one plus the log).
func (r *Replica) compactTo(p *PendingSnapshot) error {
	// A snapshot from the leader, installed while this one was being
	// written, may already have replaced the log past it: then there is
	// nothing left to compact behind it.
	if p.meta.Index > r.wal.Snapshot().Index {
		if err := r.wal.MarkCompacted(p.meta); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
		if err := r.wal.Sync(); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
		// Only now: until the marker is synced, a crash brings back a log
		// that needs the older files.
		if err := r.snaps.Prune(p.meta.Index); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
	}
	if err := r.wal.ReleaseTo(p.releaseTo); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	return nil
}

// RunStore is the state machine stage. It works through jobs in order:
// each run of consecutive batches is applied with one state machine
// transaction (a snapshot to install splits it), capturing a snapshot when
// one is due; a Do job runs between them. It appends the applied batches to
// dst, in order, for Finish.
func (r *Replica) RunStore(dst []*Batch, jobs []StoreJob) ([]*Batch, error) {
	for len(jobs) > 0 {
		n := 0
		for n < len(jobs) && jobs[n].Batch != nil {
			n++
		}
		if n > 0 {
			group := r.groupBuf[:0]
			for _, j := range jobs[:n] {
				group = append(group, j.Batch)
			}
			err := r.cfg.Observe.apply(r, group)
			clear(group) // do not pin finished batches (and their log arrays)
			r.groupBuf = group
			if err != nil {
				return dst, err
			}
			for _, j := range jobs[:n] {
				dst = append(dst, j.Batch)
			}
		}
		if n < len(jobs) {
			jobs[n].Do()
			n++
		}
		jobs = jobs[n:]
	}
	return dst, nil
}

// applyGroup applies batches in order with one state machine transaction
// for all of their entries (a snapshot to install splits the group), then
// captures a snapshot if one is due.
func (r *Replica) applyGroup(bs []*Batch) error {
	if err := checkGroupOrder(bs, func(b *Batch) *Batch { return b }, stagePersisted, r.applied); err != nil {
		return err
	}
	for _, b := range bs {
		advanceStage(b, &r.applied)
	}
	for len(bs) > 0 {
		// Up to (not including) the next batch that installs a snapshot.
		n := 1
		for n < len(bs) && bs[n].rd.Snapshot == nil {
			n++
		}
		if s := bs[0].rd.Snapshot; s != nil && s.Index > 0 {
			if err := r.restore(*s); err != nil {
				return err
			}
		}
		if err := r.applyEntries(bs[:n]); err != nil {
			return err
		}
		bs = bs[n:]
	}
	return nil
}

func (r *Replica) applyEntries(bs []*Batch) error {
	batch := r.applyBuf[:0]
	for _, b := range bs {
		for _, e := range b.rd.CommittedEntries {
			data := e.Data
			if e.Type == core.EntryConfChange {
				data = memberCommand(e.Data)
			}
			batch = append(batch, kvstore.Entry{Index: e.Index, Data: data})
		}
	}
	r.applyBuf = batch
	last := bs[len(bs)-1]
	if len(batch) > 0 {
		results, err := r.store.Apply(batch)
		if err != nil {
			return fmt.Errorf("replica: apply: %w", err)
		}
		for _, b := range bs {
			k := len(b.rd.CommittedEntries)
			b.results, results = results[:k:k], results[k:]
			if k > 0 {
				r.appliedTerm = b.rd.CommittedEntries[k-1].Term
			}
			for _, e := range b.rd.CommittedEntries {
				r.appliedConfAfter(e)
			}
		}
		r.noteApplied()
	}
	force := false
	for _, b := range bs {
		force = force || b.forceSnapshot
	}
	applied := r.store.AppliedIndex()
	due := r.snapshotDue(applied)
	if (due || force) && applied > 0 && r.appliedTerm > 0 {
		meta := core.SnapshotMeta{Index: applied, Term: r.appliedTerm, Conf: r.appliedConf}
		return r.freeze(last, meta)
	}
	return nil
}

// snapshotDue reports whether a snapshot is due at applied (see
// Config.SnapshotPhase).
func (r *Replica) snapshotDue(applied uint64) bool {
	return snapshotDue(applied, r.lastSnapshot, r.cfg.SnapshotEvery, r.cfg.SnapshotPhase)
}

func snapshotDue(applied, last, every, phase uint64) bool {
	switch {
	case every == 0 || applied <= last:
		return false
	case phase == 0 || phase >= every:
		return applied-last >= every
	}
	// The first index at the phase at least half an interval on.
	soonest := last + every/2
	return applied >= soonest+(phase+every-soonest%every)%every
}

// freeze captures the state for a snapshot at meta, unless one is still
// being written (the next batch asks again: snapshotDue measures from the
// last snapshot taken).
func (r *Replica) freeze(last *Batch, meta core.SnapshotMeta) error {
	if r.inflight != nil {
		return nil
	}
	f, err := r.store.Freeze()
	if err != nil {
		return fmt.Errorf("replica: snapshot at %d: %w", meta.Index, err)
	}
	if got := f.Info().AppliedIndex; got != meta.Index {
		_ = f.Close()
		return fmt.Errorf("replica: snapshot at %d: the store froze its state at %d", meta.Index, got)
	}
	last.pending = &PendingSnapshot{meta: meta, releaseTo: r.lastSnapshot, frozen: f}
	r.inflight = last.pending
	r.lastSnapshot = meta.Index
	return nil
}

// SnapshotDone tells the state machine side that the snapshot in flight
// has been written (or given up), so the next due one may be captured.
// Run it as a StoreJob.
func (r *Replica) SnapshotDone() { r.inflight = nil }

// AbandonSnapshot releases a captured snapshot that will not be written
// (the runtime is stopping). Call it only when no other stage is running.
func (r *Replica) AbandonSnapshot() {
	if r.inflight != nil {
		_ = r.inflight.frozen.Close() // closing twice is harmless
		r.inflight = nil
	}
}

// WriteSnapshot writes a pending snapshot's file and returns its data size.
// It may run on any goroutine, concurrently with the other stages: it
// touches only the snapshot and the snapshot files.
func (r *Replica) WriteSnapshot(p *PendingSnapshot) (int64, error) {
	defer p.frozen.Close()
	w, err := r.snaps.Create(p.meta)
	if err != nil {
		return 0, fmt.Errorf("replica: snapshot: %w", err)
	}
	if err := p.frozen.WriteSnapshot(w); err != nil {
		_ = w.Abort()
		return 0, fmt.Errorf("replica: snapshot at %d: %w", p.meta.Index, err)
	}
	if err := w.Commit(); err != nil {
		return 0, fmt.Errorf("replica: snapshot at %d: %w", p.meta.Index, err)
	}
	p.written = true
	return w.Size(), nil
}

// SnapshotWritten compacts the in-memory log behind a snapshot whose file
// WriteSnapshot wrote, and returns the job that compacts the WAL behind it
// (queue it for the WAL stage). Loop side.
func (r *Replica) SnapshotWritten(p *PendingSnapshot) (WALJob, error) {
	if !p.written {
		return WALJob{}, fmt.Errorf("replica: pipeline order broken: compacting behind the snapshot at %d before its file is durable", p.meta.Index)
	}
	// A snapshot installed from the leader meanwhile may already have
	// compacted past this one; that is fine.
	if _, err := r.node.SnapshotTaken(p.meta.Index); err != nil && !errors.Is(err, core.ErrCompacted) {
		return WALJob{}, fmt.Errorf("replica: compact log: %w", err)
	}
	return WALJob{Compact: p}, nil
}

// Finish answers the batch's requests and advances the node, and returns
// the snapshot captured after the batch, if any, for the runtime to write.
// Loop side, in order.
func (r *Replica) Finish(b *Batch) (*PendingSnapshot, error) {
	if err := checkOrder(b, stageApplied, r.finished); err != nil {
		return nil, err
	}
	advanceStage(b, &r.finished)
	rd := &b.rd
	if rd.Snapshot != nil && rd.Snapshot.Index > 0 {
		r.failCovered(rd.Snapshot.Index)
		if r.cfg.SnapshotApplied != nil {
			r.cfg.SnapshotApplied(rd.Snapshot.Index)
		}
	}
	r.answerWrites(b)
	if rd.SoftState != nil && rd.SoftState.Lead != r.lead {
		r.lead = rd.SoftState.Lead
		r.abortReads(rd.SoftState.Lead, rd.ReadStates)
	}
	for _, rs := range rd.ReadStates {
		if len(rs.Context) != 8 {
			continue
		}
		id := binary.BigEndian.Uint64(rs.Context)
		if _, ok := r.asked[id]; ok {
			delete(r.asked, id)
			r.ready = append(r.ready, pendingRead{id: id, index: rs.Index})
		}
	}
	r.node.Advance(*rd)
	r.cutLog(rd.CommittedEntries)
	if msgs := rd.MessagesAfterPersist; len(msgs) > 0 {
		// RunWAL sent them before the batch reached this stage.
		rd.MessagesAfterPersist = nil
		r.node.RecycleMessages(msgs)
	}
	r.releaseReads()
	p := b.pending
	b.pending = nil
	return p, nil
}

// cutLog keeps the in-memory log to about Config.CatchUpEntries behind the
// applied index, cutting a quarter of that at a time (so that the copy of
// the rest a cut makes is paid once per many entries).
func (r *Replica) cutLog(applied []core.Entry) {
	keep := r.cfg.CatchUpEntries
	if keep == 0 || len(applied) == 0 {
		return
	}
	last := applied[len(applied)-1].Index
	if last >= r.node.FirstIndex()+keep+keep/4 {
		r.node.CompactLog(last - keep)
	}
}

// answerWrites answers the writes whose entries the batch applied, and
// reports committed membership changes.
func (r *Replica) answerWrites(b *Batch) {
	for i, e := range b.rd.CommittedEntries {
		if e.Type == core.EntryConfChange && r.cfg.ConfChanged != nil {
			if cc, conf, err := core.DecodeConfChange(e.Data); err == nil {
				r.cfg.ConfChanged(e.Index, cc, conf)
			}
		}
		w, ok := r.writes[e.Index]
		if !ok {
			continue
		}
		delete(r.writes, e.Index)
		if w.term != e.Term {
			r.cfg.Done(w.id, Outcome{Index: e.Index, Err: ErrLost})
			continue
		}
		r.cfg.Done(w.id, Outcome{Index: e.Index, Result: b.results[i]})
	}
}

// abortReads fails the reads asked of a leader other than lead: a ReadIndex
// request travels to the leader of the moment, and when the leader changes
// it is lost (or dropped by a leader stepping down). Failing them now
// spares the client its deadline. Reads answered in this same batch are
// still served.
func (r *Replica) abortReads(lead core.NodeID, answeredNow []core.ReadState) {
	answered := map[uint64]bool{}
	for _, rs := range answeredNow {
		if len(rs.Context) == 8 {
			answered[binary.BigEndian.Uint64(rs.Context)] = true
		}
	}
	for _, id := range slices.Sorted(maps.Keys(r.asked)) {
		// A read asked once the core already knew the new leader went
		// there, and is still on its way.
		if !answered[id] && r.asked[id] != lead {
			delete(r.asked, id)
			r.cfg.Done(id, Outcome{Err: ErrReadAborted})
		}
	}
}

// Process runs one batch through every stage, one after the other, with no
// other input in between: a convenience for tests and for a runtime that
// needs no pipelining. The simulator and the server run the stages
// separately, with batches overlapping.
func (r *Replica) Process() error {
	b, ok := r.Ready()
	if !ok {
		return nil
	}
	persisted, err := r.RunWAL(nil, []WALJob{{Batch: b}})
	if err != nil {
		return err
	}
	applied, err := r.RunStore(nil, []StoreJob{{Batch: persisted[0]}})
	if err != nil {
		return err
	}
	p, err := r.Finish(applied[0])
	if err != nil || p == nil {
		return err
	}
	if _, err := r.WriteSnapshot(p); err != nil {
		return err
	}
	r.SnapshotDone()
	job, err := r.SnapshotWritten(p)
	if err != nil {
		return err
	}
	_, err = r.RunWAL(nil, []WALJob{job})
	return err
}
