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
	"github.com/therealutkarshpriyadarshi/keyval/disk/kvstore"
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
	asked map[uint64]bool
	ready []pendingRead

	lastSnapshot   uint64 // index of the newest snapshot file
	prevSnapshot   uint64 // index of the one before (kept as a fallback)
	applyBuf       []kvstore.Entry
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
	r := &Replica{cfg: cfg, store: cfg.Store, writes: make(map[uint64]pendingWrite), asked: make(map[uint64]bool)}
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
	return r, nil
}

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
		// the newest valid snapshot file and replay the log after it.
		s, skipped, err := r.snaps.Load()
		r.skippedSnaps = skipped
		if err != nil {
			return core.PersistentState{}, fmt.Errorf("replica: state machine at %d needs the snapshot at %d: %w", applied, snap.Index, err)
		}
		defer s.Close()
		if s.Meta.Index > snap.Index {
			return core.PersistentState{}, fmt.Errorf("replica: snapshot file at %d is newer than the WAL's snapshot at %d", s.Meta.Index, snap.Index)
		}
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
	if m.Type != core.MsgSnap || m.Snapshot == nil {
		return errors.New("replica: ReceiveSnapshot needs a MsgSnap with metadata")
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
	return r.node.Step(m)
}

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
	r.asked[id] = true
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

// Process does one Ready's work, in the order of the persistence contract:
// send what may go at once, persist (one fsync), send what waited for it,
// restore a snapshot, apply, answer requests, Advance. An error means the
// node's storage failed: the node must stop.
func (r *Replica) Process() error {
	if !r.node.HasReady() {
		return nil
	}
	rd := r.node.Ready()
	if len(rd.Messages) > 0 {
		r.cfg.Send(rd.Messages)
	}
	if rd.Snapshot != nil {
		if err := r.wal.InstallSnapshot(*rd.Snapshot); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
	}
	if err := r.wal.Append(rd.HardState, rd.Entries); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	if rd.MustSync {
		if err := r.wal.Sync(); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
	}
	if len(rd.MessagesAfterPersist) > 0 {
		r.cfg.Send(rd.MessagesAfterPersist)
	}
	if rd.Snapshot != nil && rd.Snapshot.Index > 0 {
		if err := r.installSnapshot(*rd.Snapshot); err != nil {
			return err
		}
	}
	if err := r.apply(rd.CommittedEntries); err != nil {
		return err
	}
	for _, rs := range rd.ReadStates {
		if len(rs.Context) != 8 {
			continue
		}
		id := binary.BigEndian.Uint64(rs.Context)
		if r.asked[id] {
			delete(r.asked, id)
			r.ready = append(r.ready, pendingRead{id: id, index: rs.Index})
		}
	}
	r.releaseReads()
	r.node.Advance(rd)
	return r.maybeSnapshot()
}

func (r *Replica) installSnapshot(meta core.SnapshotMeta) error {
	s, err := r.OpenSnapshot(meta.Index)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := r.store.Restore(s); err != nil {
		return fmt.Errorf("replica: install snapshot at %d: %w", meta.Index, err)
	}
	r.prevSnapshot, r.lastSnapshot = r.lastSnapshot, meta.Index
	// Writes waiting at positions the snapshot covers can no longer be
	// matched to their entries. Answer them in index order: map order is
	// random, and the simulator must replay exactly.
	for _, index := range slices.Sorted(maps.Keys(r.writes)) {
		if index > meta.Index {
			break
		}
		w := r.writes[index]
		delete(r.writes, index)
		r.cfg.Done(w.id, Outcome{Err: ErrUnknown})
	}
	return nil
}

func (r *Replica) apply(ents []core.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	batch := r.applyBuf[:0]
	for _, e := range ents {
		data := e.Data
		if e.Type != core.EntryNormal {
			data = nil // configuration changes carry no command
		}
		batch = append(batch, kvstore.Entry{Index: e.Index, Data: data})
	}
	r.applyBuf = batch
	results, err := r.store.Apply(batch)
	if err != nil {
		return fmt.Errorf("replica: apply: %w", err)
	}
	for i, e := range ents {
		w, ok := r.writes[e.Index]
		if !ok {
			continue
		}
		delete(r.writes, e.Index)
		if w.term != e.Term {
			r.cfg.Done(w.id, Outcome{Err: ErrLost})
			continue
		}
		r.cfg.Done(w.id, Outcome{Result: results[i]})
	}
	return nil
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

func (r *Replica) maybeSnapshot() error {
	applied := r.store.AppliedIndex()
	if r.cfg.SnapshotEvery == 0 || applied < r.lastSnapshot+r.cfg.SnapshotEvery {
		return nil
	}
	return r.TakeSnapshot()
}

// TakeSnapshot writes the state machine to a snapshot file, compacts the
// core's log and releases WAL segments the older snapshot no longer needs.
func (r *Replica) TakeSnapshot() error {
	applied := r.store.AppliedIndex()
	if applied <= r.lastSnapshot {
		return nil
	}
	meta, err := r.node.SnapshotTaken(applied)
	if err != nil {
		return fmt.Errorf("replica: snapshot: %w", err)
	}
	w, err := r.snaps.Create(meta)
	if err != nil {
		return fmt.Errorf("replica: snapshot: %w", err)
	}
	if _, err := r.store.Snapshot(w); err != nil {
		_ = w.Abort()
		return fmt.Errorf("replica: snapshot at %d: %w", meta.Index, err)
	}
	if err := w.Commit(); err != nil {
		return fmt.Errorf("replica: snapshot at %d: %w", meta.Index, err)
	}
	if err := r.wal.MarkCompacted(meta); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	if err := r.wal.Sync(); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	r.prevSnapshot, r.lastSnapshot = r.lastSnapshot, meta.Index
	// The state machine may apply without syncing (the WAL is the durable
	// record); it must be durable before the log it was built from goes.
	if err := r.store.Sync(); err != nil {
		return fmt.Errorf("replica: sync state machine: %w", err)
	}
	// Keep the log back to the previous snapshot, so a damaged newest
	// snapshot file can be replaced by the older one plus the log.
	if err := r.wal.ReleaseTo(r.prevSnapshot); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	return nil
}

// Close syncs and closes the WAL. The store is the caller's to close.
func (r *Replica) Close() error {
	return r.wal.Close()
}

// Recovery reports what Open had to repair or skip, for logging.
func (r *Replica) Recovery() (torn *disk.TornTail, skipped []disk.SkippedSnapshot, restoredFrom uint64) {
	return r.recoveredTorn, r.skippedSnaps, r.restoredAtOpen
}
