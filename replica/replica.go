// Package replica is one KeyVal node without threads or clocks: the Raft
// core, its write-ahead log and snapshot files, and the key-value state
// machine, wired together by the persistence contract of docs/core.md.
//
// Both runtimes drive it: the real server from its event-loop goroutine
// (with the OS file system and bbolt), and the deterministic simulator from
// its single thread (with the fault-injecting in-memory file system and the
// in-memory store). Whatever the simulator proves about a Replica holds for
// the server, because it is the same code.
//
// A Replica is not safe for concurrent use.
package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// Config sets up a Replica.
type Config struct {
	// Core configures the Raft node. Core.Applied is filled in by Open.
	Core core.Config
	// FS and Dir locate the node's files: the WAL in Dir/wal, snapshots in
	// Dir/snap.
	FS  disk.FS
	Dir string
	// Store is the state machine, already open. The Replica restores it
	// from a snapshot when it is behind the log's snapshot.
	Store kvstore.Store
	// SnapshotEvery is how many applied entries trigger a snapshot and log
	// compaction; 0 disables automatic snapshots.
	SnapshotEvery uint64
	// KeepSnapshots is how many snapshot files to keep (at least 2, so a
	// damaged newest one can be skipped).
	KeepSnapshots int
	// WAL tunes the write-ahead log.
	WAL disk.Options
	// Send hands messages to the network. It must not block and must not
	// call back into the Replica. A MsgSnap's data is fetched with
	// OpenSnapshot.
	Send func([]core.Message)
	// Done answers a request: a write's outcome, or that a linearizable
	// read may now be served from Store. It must not call back into the
	// Replica.
	Done func(id uint64, out Outcome)
	// ConfChanged, if set, hears of every committed membership change, in
	// log order, with the membership it produced (loop side, from Finish).
	// It must not call back into the Replica.
	ConfChanged func(index uint64, cc core.ConfChange, conf core.ConfState)
}

// Outcome answers one request.
type Outcome struct {
	// Result is the state machine's answer to a write.
	Result kvstore.Result
	// Err is set when the request failed. ErrLost means the write was
	// definitely not applied; ErrUnknown means it may or may not have been.
	Err error
}

var (
	// ErrLost: the entry carrying the write was replaced by another at its
	// log index, so it was never applied. Retrying is safe.
	ErrLost = errors.New("write lost in a leader change; it was not applied")
	// ErrUnknown: the node jumped past the write's log index by installing
	// a snapshot and cannot tell whether it was applied.
	ErrUnknown = errors.New("outcome unknown: the log position was replaced by a snapshot")
	// ErrReadAborted: the leader changed before it confirmed a read; the
	// request is lost with it. Retrying is safe.
	ErrReadAborted = errors.New("the leader changed before the read was confirmed; retry")
)

type pendingWrite struct {
	id   uint64
	term uint64
}

type pendingRead struct {
	id    uint64
	index uint64
}

// Replica is one node. See the package comment.
type Replica struct {
	cfg   Config
	node  *core.Node
	wal   *disk.WAL
	snaps *disk.SnapshotStore
	store kvstore.Store

	writes map[uint64]pendingWrite // by log index
	// reads waiting for their ReadIndex answer (by request id) and, once
	// answered, for the state machine to reach the index (in order).
	// asked maps each read to the leader it went to (as the core knew it
	// when asked), so a leader change aborts only the reads sent before it.
	asked map[uint64]core.NodeID
	ready []pendingRead
	// lead is the leader as of the last batch Finish saw.
	lead core.NodeID
	// scratch is the Batch Process reuses.
	scratch Batch

	// lastSnapshot is the index of the newest snapshot the state machine
	// was saved or restored at, and appliedTerm the term of the last entry
	// applied (state machine side).
	lastSnapshot uint64
	appliedTerm  uint64
	// inflight is the snapshot captured and not yet done with
	// (one at a time). State machine side: SnapshotDone clears it.
	inflight *PendingSnapshot
	// wantSnapshot asks for a snapshot with the next batch, whatever the
	// interval: the newest snapshot file could not be read to send it
	// (loop side; it travels to Apply in the Batch).
	wantSnapshot bool
	applyBuf     []kvstore.Entry
	// appliedConf is the membership as of the store's applied index
	// (state machine side), recorded in the snapshots Apply takes.
	appliedConf    core.ConfState
	recoveredTorn  *disk.TornTail
	skippedSnaps   []disk.SkippedSnapshot
	restoredAtOpen uint64
}

// Open recovers a node from its files (or creates them on first start) and
// returns it ready to run. A corrupted WAL is an error naming the file and
// offset (a *disk.CorruptionError): the node must not run on data it no
// longer has.
func Open(cfg Config) (*Replica, error) {
	if cfg.Store == nil || cfg.FS == nil || cfg.Send == nil || cfg.Done == nil {
		return nil, errors.New("replica: Store, FS, Send and Done are required")
	}
	r := &Replica{cfg: cfg, store: cfg.Store, writes: make(map[uint64]pendingWrite), asked: make(map[uint64]core.NodeID)}
	snaps, err := disk.NewSnapshotStore(cfg.FS, filepath.Join(cfg.Dir, "snap"), max(cfg.KeepSnapshots, 2))
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	r.snaps = snaps
	walDir := filepath.Join(cfg.Dir, "wal")
	exists, err := disk.Exists(cfg.FS, walDir)
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	var st core.PersistentState
	if exists {
		w, rec, err := disk.Open(cfg.FS, walDir, cfg.WAL)
		if err != nil {
			return nil, fmt.Errorf("replica: recover WAL: %w", err)
		}
		r.wal = w
		r.recoveredTorn = rec.TornTail
		if st, err = r.recover(rec); err != nil {
			return nil, err
		}
	} else {
		w, err := disk.Create(cfg.FS, walDir, cfg.WAL)
		if err != nil {
			return nil, fmt.Errorf("replica: create WAL: %w", err)
		}
		r.wal = w
	}
	cfg.Core.Applied = r.store.AppliedIndex()
	node, err := core.NewNode(cfg.Core, st)
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	r.node = node
	if t, err := node.Term(r.store.AppliedIndex()); err == nil {
		r.appliedTerm = t
	}
	if conf, err := node.ConfAt(r.store.AppliedIndex()); err == nil {
		r.appliedConf = conf
	}
	return r, nil
}

// RequestSnapshot asks for a fresh snapshot at the next batch: the runtime
// calls it when the newest snapshot file cannot be read to send to a
// follower, so that one does not wait forever on a damaged file.
func (r *Replica) RequestSnapshot() { r.wantSnapshot = true }

// recover brings the store in line with the recovered log and returns what
// the Raft core restarts from.
func (r *Replica) recover(rec *disk.Recovered) (core.PersistentState, error) {
	if rec.HardState.IsEmpty() && len(rec.Entries) == 0 && len(rec.Snapshot.Conf.Voters) == 0 {
		// Created but never synced anything: start as new.
		return core.PersistentState{}, nil
	}
	snap := rec.Snapshot
	r.lastSnapshot = snap.Index
	entries := rec.Entries
	if applied := r.store.AppliedIndex(); applied < snap.Index {
		// The state machine is behind the log's snapshot (an in-memory
		// store after a crash, or a store that lost unsynced work): load
		// the newest valid snapshot file the WAL knows of (a newer file
		// may exist if the node crashed before syncing its marker) and
		// replay the log after it.
		s, skipped, err := r.snaps.LoadAtMost(snap.Index)
		r.skippedSnaps = skipped
		if err != nil {
			return core.PersistentState{}, fmt.Errorf("replica: state machine at %d needs the snapshot at %d: %w", applied, snap.Index, err)
		}
		defer s.Close()
		after, ok := rec.EntriesAfter(s.Meta.Index)
		if !ok {
			return core.PersistentState{}, fmt.Errorf("replica: snapshot at %d is usable but the WAL no longer holds the entries after it", s.Meta.Index)
		}
		if err := r.store.Restore(s); err != nil {
			return core.PersistentState{}, fmt.Errorf("replica: restore snapshot %s: %w", s.File, err)
		}
		r.restoredAtOpen = s.Meta.Index
		if s.Meta.Index < snap.Index {
			snap, entries = s.Meta, after
		}
	}
	return core.PersistentState{HardState: rec.HardState, Snapshot: &snap, Entries: entries}, nil
}

// Node is the Raft core, for inputs that need no bookkeeping here (Tick,
// TransferLeadership, ReportUnreachable, ReportSnapshot, Status).
func (r *Replica) Node() *core.Node { return r.node }

// Store is the state machine, for reads.
func (r *Replica) Store() kvstore.Store { return r.store }

// Step hands the Raft core a message from a peer (not a MsgSnap: use
// ReceiveSnapshot).
func (r *Replica) Step(m core.Message) error {
	if m.Type == core.MsgSnap {
		return errors.New("replica: MsgSnap must come with its data through ReceiveSnapshot")
	}
	return r.node.Step(m)
}

// ReceiveSnapshot stores a snapshot sent by the leader, durably, and then
// hands its message to the core, which decides whether to install it.
func (r *Replica) ReceiveSnapshot(m core.Message, data io.Reader) error {
	if err := r.StoreSnapshot(m, data); err != nil {
		return err
	}
	return r.node.Step(m)
}

// StoreSnapshot is the first half of ReceiveSnapshot: it writes the
// snapshot's file (state machine side, where snapshot files are written).
// The runtime then Steps the message on the loop.
func (r *Replica) StoreSnapshot(m core.Message, data io.Reader) error {
	if m.Type != core.MsgSnap || m.Snapshot == nil {
		return errors.New("replica: a snapshot needs a MsgSnap with metadata")
	}
	w, err := r.snaps.Create(*m.Snapshot)
	if err != nil {
		return fmt.Errorf("replica: receive snapshot: %w", err)
	}
	if _, err := io.Copy(w, data); err != nil {
		_ = w.Abort()
		return fmt.Errorf("replica: receive snapshot at %d: %w", m.Snapshot.Index, err)
	}
	if err := w.Commit(); err != nil {
		return fmt.Errorf("replica: receive snapshot at %d: %w", m.Snapshot.Index, err)
	}
	return nil
}

// StepSnapshot hands a MsgSnap whose data StoreSnapshot saved to the core.
func (r *Replica) StepSnapshot(m core.Message) error { return r.node.Step(m) }

// OpenSnapshot opens the snapshot file at index, to send to a follower.
func (r *Replica) OpenSnapshot(index uint64) (*disk.Snapshot, error) {
	names, err := r.snaps.List()
	if err != nil {
		return nil, err
	}
	prefix := fmt.Sprintf("%016x-", index)
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			return r.snaps.Open(n)
		}
	}
	return nil, fmt.Errorf("replica: no snapshot file at index %d", index)
}

// Propose submits an encoded kvstore command as request id. Done(id, …)
// answers it once the entry is applied (or known lost). A follower refuses
// with *core.ErrNotLeader.
func (r *Replica) Propose(id uint64, cmd []byte) error {
	index, term, err := r.node.Propose(cmd)
	if err != nil {
		return err
	}
	r.writes[index] = pendingWrite{id: id, term: term}
	return nil
}

// Read asks for a linearizable read as request id. Done(id, Outcome{})
// says when Store reflects every write acknowledged before the call.
func (r *Replica) Read(id uint64) error {
	var ctx [8]byte
	binary.BigEndian.PutUint64(ctx[:], id)
	if err := r.node.ReadIndex(ctx[:]); err != nil {
		return err
	}
	r.asked[id] = r.node.SoftState().Lead
	return nil
}

// Cancel forgets a request the runtime gave up on.
func (r *Replica) Cancel(id uint64) {
	delete(r.asked, id)
	for i, p := range r.ready {
		if p.id == id {
			r.ready = append(r.ready[:i], r.ready[i+1:]...)
			break
		}
	}
	// Writes are keyed by index; a cancelled write's answer is simply
	// dropped by the runtime when it comes.
}

// Batch is one Ready on its way through the three stages of the pipeline:
// Ready (on the loop), Persist (the WAL's goroutine), Apply (the state
// machine's goroutine), and back to Finish (on the loop). The server runs
// the stages concurrently, so the loop keeps stepping messages and taking
// proposals while a batch is being fsynced or applied; the simulator runs
// them one after the other (Process).
type Batch struct {
	rd      core.Ready
	results []kvstore.Result
	// forceSnapshot: take a snapshot after this batch in any case.
	forceSnapshot bool
	// pending is a snapshot captured after this batch, still to be
	// written (see PendingSnapshot).
	pending *PendingSnapshot
}

// PendingSnapshot is the state captured for a snapshot after a batch (a
// due one: every SnapshotEvery entries), not yet written to its file.
// Capturing is cheap, so applying never waits on a large state being
// written. The runtime takes it from the batch once the batch is finished
// (TakePendingSnapshot), writes it (WriteSnapshot: the server on a
// goroutine of its own, Process at once), then hands it to SnapshotWritten
// on the loop and to CompactTo on the WAL side, in that order, and tells
// the state machine side with SnapshotDone.
type PendingSnapshot struct {
	meta      core.SnapshotMeta
	releaseTo uint64
	frozen    kvstore.Frozen
}

// Index is the log index the snapshot is taken at.
func (p *PendingSnapshot) Index() uint64 { return p.meta.Index }

// TakePendingSnapshot returns the snapshot captured after this batch, if
// any, and forgets it. Call it after Finish.
func (b *Batch) TakePendingSnapshot() *PendingSnapshot {
	p := b.pending
	b.pending = nil
	return p
}

// Ready takes the node's next batch of work, if any, and sends the messages
// that may leave before anything is persisted. Loop side.
func (r *Replica) Ready() (*Batch, bool) {
	b := new(Batch)
	return b, r.fill(b)
}

// fill puts the next batch into b (Process reuses one Batch).
func (r *Replica) fill(b *Batch) bool {
	if !r.node.HasReady() {
		return false
	}
	*b = Batch{rd: r.node.Ready(), forceSnapshot: r.wantSnapshot}
	r.wantSnapshot = false
	if len(b.rd.Messages) > 0 {
		r.cfg.Send(b.rd.Messages)
	}
	return true
}

// Persist makes the batch durable with one fsync and then sends the
// messages that promised it (votes, acknowledgements). WAL side; batches
// must be persisted in the order Ready returned them. It is Write, Sync and
// Acknowledge in one; a runtime with several batches waiting can Write them
// all and Sync once (group commit across batches).
func (r *Replica) Persist(b *Batch) error {
	if err := r.Write(b); err != nil {
		return err
	}
	if b.rd.MustSync {
		if err := r.Sync(); err != nil {
			return err
		}
	}
	r.Acknowledge(b)
	return nil
}

// Write appends the batch to the WAL without making it durable.
func (r *Replica) Write(b *Batch) error {
	rd := &b.rd
	if rd.Snapshot != nil {
		if err := r.wal.InstallSnapshot(*rd.Snapshot); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
	}
	if err := r.wal.Append(rd.HardState, rd.Entries); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	return nil
}

// Sync makes everything written so far durable with one fsync.
func (r *Replica) Sync() error {
	if err := r.wal.Sync(); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	return nil
}

// Acknowledge sends the batch's messages that had to wait for durability.
// Only after the batch was written and synced.
func (r *Replica) Acknowledge(b *Batch) {
	if len(b.rd.MessagesAfterPersist) > 0 {
		r.cfg.Send(b.rd.MessagesAfterPersist)
	}
}

// MustSync reports whether the batch needs an fsync before Acknowledge.
func (b *Batch) MustSync() bool { return b.rd.MustSync }

// Apply restores a snapshot the batch installs, applies its committed
// entries to the state machine, and captures a snapshot when one is due
// (see PendingSnapshot).
// State machine side; batches must be applied in order, after Persist.
func (r *Replica) Apply(b *Batch) error { return r.ApplyGroup([]*Batch{b}) }

// ApplyGroup applies several batches in order with one state machine
// transaction for all of their entries (a snapshot to install splits the
// group), then captures a snapshot if one is due.
func (r *Replica) ApplyGroup(bs []*Batch) error {
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
	}
	force := false
	for _, b := range bs {
		force = force || b.forceSnapshot
	}
	applied := r.store.AppliedIndex()
	due := r.cfg.SnapshotEvery > 0 && applied >= r.lastSnapshot+r.cfg.SnapshotEvery
	if (due || force) && applied > 0 && r.appliedTerm > 0 {
		meta := core.SnapshotMeta{Index: applied, Term: r.appliedTerm, Conf: r.appliedConf}
		return r.freeze(last, meta)
	}
	return nil
}

// freeze captures the state for a snapshot at meta, unless one
// is still being written (the next batch asks again: the interval is
// measured from the last snapshot taken).
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
	return w.Size(), nil
}

// SnapshotWritten compacts the in-memory log behind a snapshot whose file
// WriteSnapshot wrote. Loop side.
func (r *Replica) SnapshotWritten(p *PendingSnapshot) error {
	// A snapshot installed from the leader meanwhile may already have
	// compacted past this one; that is fine.
	if _, err := r.node.SnapshotTaken(p.meta.Index); err != nil && !errors.Is(err, core.ErrCompacted) {
		return fmt.Errorf("replica: compact log: %w", err)
	}
	return nil
}

// CompactTo records in the WAL that the snapshot is durable and releases
// the segments behind the snapshot before it (so a damaged newest file can
// be replaced by the older one plus the log). WAL side, after
// SnapshotWritten.
func (r *Replica) CompactTo(p *PendingSnapshot) error {
	if err := r.wal.MarkCompacted(p.meta); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	if err := r.wal.Sync(); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	if err := r.wal.ReleaseTo(p.releaseTo); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	return nil
}

// Finish answers the batch's requests and advances the node. Loop side, in
// order.
func (r *Replica) Finish(b *Batch) error {
	rd := &b.rd
	if rd.Snapshot != nil && rd.Snapshot.Index > 0 {
		r.failCovered(rd.Snapshot.Index)
	}
	for i, e := range rd.CommittedEntries {
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
			r.cfg.Done(w.id, Outcome{Err: ErrLost})
			continue
		}
		r.cfg.Done(w.id, Outcome{Result: b.results[i]})
	}
	if rd.SoftState != nil && rd.SoftState.Lead != r.lead {
		r.lead = rd.SoftState.Lead
		// A ReadIndex request travels to the leader of the moment; when the
		// leader changes it is lost (or dropped by a leader stepping down).
		// Fail such reads now rather than at the client's deadline. Reads
		// answered in this same batch are still served below.
		answered := map[uint64]bool{}
		for _, rs := range rd.ReadStates {
			if len(rs.Context) == 8 {
				answered[binary.BigEndian.Uint64(rs.Context)] = true
			}
		}
		for _, id := range slices.Sorted(maps.Keys(r.asked)) {
			// A read asked once the core already knew the new leader went
			// there, and is still on its way.
			if !answered[id] && r.asked[id] != rd.SoftState.Lead {
				delete(r.asked, id)
				r.cfg.Done(id, Outcome{Err: ErrReadAborted})
			}
		}
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
	r.releaseReads()
	return nil
}

// Process runs one batch through every stage, one after the other: what
// the simulator does, and a runtime that needs no pipelining.
func (r *Replica) Process() error {
	b := &r.scratch
	if !r.fill(b) {
		return nil
	}
	if err := r.Persist(b); err != nil {
		return err
	}
	if err := r.Apply(b); err != nil {
		return err
	}
	if err := r.Finish(b); err != nil {
		return err
	}
	if p := b.TakePendingSnapshot(); p != nil {
		if _, err := r.WriteSnapshot(p); err != nil {
			return err
		}
		if err := r.SnapshotWritten(p); err != nil {
			return err
		}
		r.SnapshotDone()
		return r.CompactTo(p)
	}
	return nil
}

func (r *Replica) restore(meta core.SnapshotMeta) error {
	s, err := r.OpenSnapshot(meta.Index)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := r.store.Restore(s); err != nil {
		return fmt.Errorf("replica: install snapshot at %d: %w", meta.Index, err)
	}
	r.lastSnapshot, r.appliedTerm, r.appliedConf = meta.Index, meta.Term, meta.Conf
	return nil
}

// failCovered answers the writes waiting at positions a snapshot covers:
// they can no longer be matched to their entries. In index order, since map
// order is random and the simulator must replay exactly.
func (r *Replica) failCovered(index uint64) {
	for _, i := range slices.Sorted(maps.Keys(r.writes)) {
		if i > index {
			break
		}
		w := r.writes[i]
		delete(r.writes, i)
		r.cfg.Done(w.id, Outcome{Err: ErrUnknown})
	}
}

func (r *Replica) releaseReads() {
	applied := r.store.AppliedIndex()
	n := 0
	for _, p := range r.ready {
		if p.index <= applied {
			r.cfg.Done(p.id, Outcome{})
			continue
		}
		r.ready[n] = p
		n++
	}
	r.ready = r.ready[:n]
}

// Close syncs and closes the WAL. The store is the caller's to close.
func (r *Replica) Close() error {
	return r.wal.Close()
}

// Recovery reports what Open had to repair or skip, for logging.
func (r *Replica) Recovery() (torn *disk.TornTail, skipped []disk.SkippedSnapshot, restoredFrom uint64) {
	return r.recoveredTorn, r.skippedSnaps, r.restoredAtOpen
}
