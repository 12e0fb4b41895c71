// Package replica is one KeyVal node without threads or clocks: the Raft
// core, its write-ahead log and snapshot files, and the key-value state
// machine, wired together by the persistence contract of docs/core.md.
//
// A node's work is a pipeline of stages, and the stage functions are here.
// Both runtimes call exactly these functions and differ only in how they
// schedule them: the server runs each stage on a goroutine of its own (with
// the OS file system and bbolt), and the deterministic simulator runs each
// as a separate event at a seeded delay (with the fault-injecting in-memory
// file system and the in-memory store). Either way batches overlap: while
// one batch is being fsynced and another applied, the loop keeps stepping
// messages, taking proposals and reads, and taking further batches.
//
//	stage     function                   server runs it on     simulator
//	take      Ready                      the event loop        a loop event after any input
//	persist   RunWAL(WALJob...)          the WAL goroutine     a "wal" event, seeded prefix of its queue
//	apply     RunStore(StoreJob...)      the state machine's   an "apply" event, seeded prefix of its queue
//	finish    Finish                     the event loop        a loop event
//	snapshot  WriteSnapshot              its own goroutine     a "snapshot" event
//	          SnapshotDone               (as a StoreJob)       (as a StoreJob)
//	          SnapshotWritten            the event loop        a loop event
//	          compact                    (as a WALJob)         (as a WALJob)
//
// The rules the stages keep, whatever the schedule:
//
//   - Ready sends only messages that promise nothing durable; at most
//     Config.MaxInflight batches are between Ready and Finish.
//   - Every batch goes Ready → RunWAL → RunStore → Finish, each stage taking
//     batches in the order Ready made them; a stage handed a batch out of
//     order, or one that skipped a stage, fails with an error.
//   - RunWAL sends a batch's votes and acknowledgements only after the batch
//     and every batch before it is written and synced (one fsync per run of
//     batches: group commit), and, with Config.DetectLostWrites, after the
//     WAL end mark has been rewritten and synced too.
//   - RunStore applies only persisted batches; Finish answers a write only
//     once RunStore applied its entry, releases a read only once the store's
//     applied index reaches the read's index, and calls Advance (so a
//     leader counts its own entries towards a quorum only once they are
//     durable).
//   - A snapshot is captured by RunStore, written off the pipeline, and the
//     log is compacted (SnapshotWritten, then the WAL job) only after its
//     file is durable: SnapshotWritten refuses a snapshot WriteSnapshot has
//     not committed. Between snapshots Finish cuts the in-memory log alone
//     (Config.CatchUpEntries; the WAL keeps the entries), and a batch whose
//     Ready asks for a snapshot (a follower needs entries cut that way)
//     captures one whatever the interval.
//   - A snapshot received from the leader is written apart
//     (StoreSnapshot) and put in use, with older files pruned, only by the
//     RunStore that installs it: after the core accepted it and the WAL
//     made that durable. A refused one never costs a file the log needs.
//
// A Replica is not safe for concurrent use, except that the stages may run
// concurrently with each other as above: each touches only its own part
// (the loop: the core and the requests; the WAL stage: the WAL; the state
// machine stage: the store and the snapshot it captures), and that
// OpenSnapshot may be called from any goroutine.
package replica

import (
	"cmp"
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
	// SnapshotPhase, when set (below SnapshotEvery), takes snapshots at
	// the applied indexes that are SnapshotPhase past a multiple of
	// SnapshotEvery, instead of SnapshotEvery entries after the last one:
	// members given different phases then do not all spend a snapshot's
	// CPU at once (every member applies the same entries, so without a
	// phase they all reach the interval together). A phase point less
	// than half an interval after the last snapshot (one received from
	// the leader) is skipped.
	SnapshotPhase uint64
	// CatchUpEntries, when set, bounds the in-memory log between snapshots:
	// after each batch, once more than a quarter more than this many applied
	// entries are held, the log is cut to this many behind the applied
	// index (core.Node.CompactLog; the WAL keeps them until the next
	// snapshot), if no follower the leader still hears from needs them
	// (see core.Node.CompactLog). A follower that was silent meanwhile and
	// needs a cut entry is sent a snapshot, taken when the leader asks for
	// one. 0 keeps every entry since the last snapshot.
	CatchUpEntries uint64
	// KeepSnapshots is how many snapshot files to keep (at least 2, so a
	// damaged newest one can be skipped).
	KeepSnapshots int
	// WAL tunes the write-ahead log.
	WAL disk.Options
	// Send hands messages to the network. It must not block, must not
	// call back into the Replica, and must not keep msgs once it returns
	// (the array is reused; copy the messages out). A MsgSnap's data is fetched with
	// OpenSnapshot.
	Send func([]core.Message)
	// Done answers a request: a write's outcome, or that a linearizable
	// read may now be served from Store. It must not call back into the
	// Replica.
	Done func(id uint64, out Outcome)
	// MaxInflight bounds the batches between Ready and Finish (0:
	// DefaultMaxInflight).
	MaxInflight int
	// Observe, if set, times the stages' work, for metrics.
	Observe Observer
	// ConfChanged, if set, hears of every committed membership change, in
	// log order, with the membership it produced (loop side, from Finish).
	// It must not call back into the Replica.
	ConfChanged func(index uint64, cc core.ConfChange, conf core.ConfState)
	// SnapshotApplied, if set, hears that the state machine was replaced
	// by a snapshot from the leader (loop side, from Finish): whatever it
	// records, membership included, may have changed without an entry
	// that ConfChanged would report. It must not call back into the
	// Replica.
	SnapshotApplied func(index uint64)
	// RepairWAL lets Open repair a WAL whose damage it can repair safely
	// (see repairWAL), or a state machine its damaged snapshot files and
	// whole WAL can no longer rebuild (repairSnapshot), instead of
	// refusing to start: the log starts over from the newest snapshot
	// file that checks out, the node fetches the rest from the leader, and
	// votes meanwhile as if it still had its old log.
	RepairWAL bool
	// DistrustWALEnd: the disk may lose or misdirect writes, so a repair
	// trusts neither where the intact records say the log ended nor their
	// newest hard state. The vote floor is then the start of the term after
	// the one the vote copy (required) and the WAL promise (floorFor).
	DistrustWALEnd bool
	// DetectLostWrites keeps the WAL end mark (disk.EndMark): after each
	// WAL sync that moved the end of the log, a second small write, synced
	// before anything that depends on the first leaves. A disk that lost
	// the WAL's last synced records then shows it: Open finds the log short
	// of the mark and raises the vote floor to it. It costs a write and an
	// fsync per batch (docs/disk.md, "Lost writes at the end"). Open reads
	// a mark left by an earlier start either way; without this it removes
	// the mark, which would otherwise go stale.
	DetectLostWrites bool
}

// Observer lets a runtime time the pipeline's disk work. Either field may
// be nil.
type Observer struct {
	// Sync wraps the WAL stage's fsync (and the end mark's after it, with
	// Config.DetectLostWrites).
	Sync func(sync func() error) error
	// Apply wraps the state machine stage's work on one group of batches.
	Apply func(group []*Batch, apply func() error) error
}

// sync and apply make their closures only for an observer: they run for
// every batch, and an unobserved run should not allocate for them. sync
// takes syncWAL as a method value made once (r.walSync).
func (o Observer) sync(r *Replica) error {
	if o.Sync == nil {
		return r.syncWAL()
	}
	if r.walSync == nil {
		r.walSync = r.syncWAL
	}
	return o.Sync(r.walSync)
}

// syncWAL makes the WAL durable and then, if kept, the end mark: only
// after both may an acknowledgement of what the WAL holds leave.
func (r *Replica) syncWAL() error {
	if err := r.wal.Sync(); err != nil {
		return err
	}
	if r.endMark == nil {
		return nil
	}
	d := r.wal.Durable()
	return r.endMark.Write(core.LogPosition{Term: d.LastTerm, Index: d.LastIndex})
}

func (o Observer) apply(r *Replica, group []*Batch) error {
	if o.Apply == nil {
		return r.applyGroup(group)
	}
	return o.Apply(group, func() error { return r.applyGroup(group) })
}

// Outcome answers one request.
type Outcome struct {
	// Index is the log index of a write's entry, or a read's read index:
	// what the checkers compare with the applied index at release.
	Index uint64
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

	// The pipeline's progress: the seq of the last batch each stage
	// handled. taken and finished are the loop's, persisted the WAL
	// stage's, applied the state machine stage's.
	taken, persisted, applied, finished uint64
	maxInflight                         int
	groupBuf                            []*Batch
	// spareBatches are batches Release handed back, for Ready to reuse
	// (several finish in one loop turn, and as many are taken again).
	spareBatches []*Batch

	// lastSnapshot is the index of the newest snapshot the state machine
	// was saved or restored at, and appliedTerm the term of the last entry
	// applied (state machine side).
	lastSnapshot uint64
	appliedTerm  uint64
	// behindFloor: the state machine has not yet applied an entry at or
	// past the vote floor, so it may hold an older state than this node
	// once served (a repair went back to an older snapshot). Set by Open,
	// cleared by the state machine side.
	behindFloor bool
	// lastHoleAtOpen is the last hole the log was kept with (0: none).
	lastHoleAtOpen uint64
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
	appliedConf   core.ConfState
	recoveredTorn *disk.TornTail
	repaired      *disk.WALDamage
	// keptHoles is the damage Open kept the log around (keepHoles).
	keptHoles *disk.WALDamage
	// snapshotRepair says why the log was started over although the WAL
	// was whole (repairSnapshot), or is nil.
	snapshotRepair error
	// lostTailWhy says why Open found the WAL behind the vote copy
	// (lostTail) or the end mark (checkEndMark), or is nil.
	lostTailWhy error
	// floorRepaired is the damage found in the vote floor file (readFloor).
	floorRepaired error
	// repairPromised is the term and vote a repair in this Open found.
	repairPromised core.HardState
	voteFloor      core.LogPosition
	// voteCopy is the term and vote the copy file holds (keepVoteCopy).
	voteCopy core.HardState
	// endMark is the WAL end mark, with Config.DetectLostWrites.
	endMark *disk.EndMark
	// atOpen is what Open found of the end of the WAL (readEndMark).
	atOpen endAtOpen
	// walSync is r.syncWAL, made once for Observer.Sync.
	walSync        func() error
	skippedSnaps   []disk.SkippedSnapshot
	restoredAtOpen uint64
}

// Open recovers a node from its files (or creates them on first start) and
// returns it ready to run. A corrupted WAL is an error naming the file and
// offset (a *disk.CorruptionError): the node must not run on data it no
// longer has — unless Config.RepairWAL is set and the damage is one that
// repairWAL (or, for snapshot files, repairSnapshot) can repair safely.
func Open(cfg Config) (*Replica, error) {
	if cfg.Store == nil || cfg.FS == nil || cfg.Send == nil || cfg.Done == nil {
		return nil, errors.New("replica: Store, FS, Send and Done are required")
	}
	r := &Replica{cfg: cfg, store: cfg.Store, writes: make(map[uint64]pendingWrite), asked: make(map[uint64]core.NodeID),
		maxInflight: cmp.Or(cfg.MaxInflight, DefaultMaxInflight)}
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
	floorPath := filepath.Join(cfg.Dir, voteFloorFile)
	if exists {
		w, rec, err := disk.Open(cfg.FS, walDir, cfg.WAL)
		if err != nil && cfg.RepairWAL && !cfg.DistrustWALEnd {
			// Damage whose lost entries are known by index and term: keep
			// the log, the lost entries as holes to fetch.
			if kw, krec, kerr := r.keepHoles(walDir, err); kerr == nil {
				w, rec, err = kw, krec, nil
			}
		}
		// A repair's own segment can come out damaged too (the disk
		// corrupted that write): then it is repaired again, a few times.
		for tries := 0; err != nil && cfg.RepairWAL && tries < 3; tries++ {
			if err = r.repairWAL(walDir, floorPath, err); err != nil {
				break
			}
			w, rec, err = disk.Open(cfg.FS, walDir, cfg.WAL)
		}
		if err != nil {
			return nil, fmt.Errorf("replica: recover WAL: %w", err)
		}
		r.wal = w
		r.recoveredTorn = rec.TornTail
		if err := r.adoptReceived(rec.Snapshot); err != nil {
			return nil, err
		}
		if err := r.readEndMark(rec); err != nil {
			return nil, err
		}
		if st, err = r.recover(rec); err != nil {
			var gap *snapshotGapError
			if !cfg.RepairWAL || !errors.As(err, &gap) {
				return nil, err
			}
			// The WAL is whole, but the state machine cannot be rebuilt
			// from it and the snapshot files: start the log over too.
			if cerr := w.Close(); cerr != nil {
				return nil, fmt.Errorf("replica: %w", cerr)
			}
			if err := r.repairSnapshot(walDir, floorPath, rec, err); err != nil {
				return nil, err
			}
			if w, rec, err = disk.Open(cfg.FS, walDir, cfg.WAL); err != nil {
				return nil, fmt.Errorf("replica: recover repaired WAL: %w", err)
			}
			r.wal = w
			if st, err = r.recover(rec); err != nil {
				return nil, err
			}
		}
	} else {
		w, err := disk.Create(cfg.FS, walDir, cfg.WAL)
		if err != nil {
			return nil, fmt.Errorf("replica: create WAL: %w", err)
		}
		r.wal = w
		if err := r.readEndMark(nil); err != nil {
			return nil, err
		}
	}
	// The copy of term and vote, read once. A damaged copy is passed over
	// (and rewritten below: the WAL is the record); one that cannot be
	// read may hold a later term or vote than the WAL kept, so the start
	// fails and is tried again, rather than run on as if there were none.
	voteCopy, copyFound, err := disk.ReadVoteCopy(cfg.FS, r.voteCopyPath())
	if ce := (*disk.CorruptionError)(nil); errors.As(err, &ce) {
		copyFound, err = false, nil
	}
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	floor, err := r.readFloor(floorPath, func() uint64 {
		term := st.HardState.Term
		if copyFound {
			term = max(term, voteCopy.Term)
		}
		return term
	})
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	if floor.AtLeast(cfg.Core.VoteFloor) {
		cfg.Core.VoteFloor = floor
	}
	r.voteFloor = cfg.Core.VoteFloor
	if copyFound {
		r.voteCopy = voteCopy
		if later := laterVote(st.HardState, voteCopy); later != (core.HardState{Term: st.HardState.Term, Vote: st.HardState.Vote}) {
			// The copy is written after the WAL sync that made its term and
			// vote durable: a WAL behind it lost synced records at its end.
			if err := r.lostTail(floorPath, &st.HardState, later, &cfg.Core.VoteFloor); err != nil {
				return nil, err
			}
		}
	}
	if err := r.checkEndMark(floorPath, max(st.HardState.Term, r.voteCopy.Term), &cfg.Core.VoteFloor); err != nil {
		return nil, err
	}
	// The WAL is whole (or repaired): the copy must say what it says. (A
	// damaged copy is rewritten; the WAL is the record.)
	if err := r.keepVoteCopy(st.HardState); err != nil {
		return nil, err
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
	if h := st.Holes; len(h) > 0 {
		r.lastHoleAtOpen = h[len(h)-1]
	}
	r.behindFloor = r.voteFloor != core.LogPosition{} || r.lastHoleAtOpen > 0
	r.noteApplied()
	if conf, err := node.ConfAt(r.store.AppliedIndex()); err == nil {
		r.appliedConf = conf
	}
	return r, nil
}

// RequestSnapshot asks for a fresh snapshot at the next batch: the runtime
// calls it when the newest snapshot file cannot be read to send to a
// follower, so that one does not wait forever on a damaged file.
func (r *Replica) RequestSnapshot() { r.wantSnapshot = true }

// adoptReceived puts in use the received snapshot the WAL says was
// installed, if the node stopped before RunStore did so, and drops the
// received snapshots nothing refers to.
func (r *Replica) adoptReceived(marker core.SnapshotMeta) error {
	if marker.Index > 0 {
		if err := r.snaps.Promote(marker); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
	}
	if err := r.snaps.DropReceived(); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	return nil
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
	applied := r.store.AppliedIndex()
	if (r.repaired != nil || r.snapshotRepair != nil) && applied > snap.Index || r.atOpen.appliedPastEnd > 0 {
		// The state machine has applied entries the repaired log no
		// longer holds (or that the WAL lost at its end): start it over
		// from the snapshot the log starts from.
		if err := r.restoreForRepair(snap); err != nil {
			return core.PersistentState{}, err
		}
	} else if applied < snap.Index {
		// The state machine is behind the log's snapshot (an in-memory
		// store after a crash, or a store that lost unsynced work): load
		// the newest valid snapshot file the WAL knows of (a newer file
		// may exist if the node crashed before syncing its marker) and
		// replay the log after it.
		s, skipped, err := r.snaps.LoadAtMost(snap.Index)
		r.noteSkipped(skipped)
		if err != nil {
			return core.PersistentState{}, gapIfDamaged(skipped, fmt.Errorf("replica: state machine at %d needs the snapshot at %d: %w", applied, snap.Index, err))
		}
		defer s.Close()
		after, ok := rec.EntriesAfter(s.Meta.Index)
		if !ok {
			return core.PersistentState{}, gapIfDamaged(skipped, fmt.Errorf("replica: snapshot at %d is usable but the WAL no longer holds the entries after it", s.Meta.Index))
		}
		if err := r.store.Restore(s); err != nil {
			return core.PersistentState{}, fmt.Errorf("replica: restore snapshot %s: %w", s.File, err)
		}
		r.restoredAtOpen = s.Meta.Index
		if s.Meta.Index < snap.Index {
			snap, entries = s.Meta, after
		}
	}
	ps := core.PersistentState{HardState: rec.HardState, Snapshot: &snap, Entries: entries}
	for _, i := range rec.Holes {
		if i > snap.Index {
			ps.Holes = append(ps.Holes, i)
		}
	}
	return ps, nil
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
// snapshot's file (state machine side, where snapshot files are written),
// apart from the snapshots in use until a batch installs it. The runtime
// then Steps the message on the loop.
func (r *Replica) StoreSnapshot(m core.Message, data io.Reader) error {
	if m.Type != core.MsgSnap || m.Snapshot == nil {
		return errors.New("replica: a snapshot needs a MsgSnap with metadata")
	}
	w, err := r.snaps.CreateReceived(*m.Snapshot)
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
// It touches only the snapshot files, whose store is safe for concurrent
// use, so any goroutine may call it: opening verifies the whole file,
// which the loop must not wait for.
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

// restore installs a snapshot the core accepted (the batch carrying it is
// durable): its file is put in use, the store restored from it, and only
// then are older files pruned.
func (r *Replica) restore(meta core.SnapshotMeta) error {
	if err := r.snaps.Promote(meta); err != nil {
		return fmt.Errorf("replica: install snapshot at %d: %w", meta.Index, err)
	}
	s, err := r.OpenSnapshot(meta.Index)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := r.store.Restore(s); err != nil {
		return fmt.Errorf("replica: install snapshot at %d: %w", meta.Index, err)
	}
	r.lastSnapshot, r.appliedTerm, r.appliedConf = meta.Index, meta.Term, meta.Conf
	r.noteApplied()
	if err := r.snaps.Prune(meta.Index); err != nil {
		return fmt.Errorf("replica: install snapshot at %d: %w", meta.Index, err)
	}
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
			r.cfg.Done(p.id, Outcome{Index: p.index})
			continue
		}
		r.ready[n] = p
		n++
	}
	r.ready = r.ready[:n]
}

// Durable is what the WAL has made durable (WAL side): for checkers, which
// compare it with what the node promises.
func (r *Replica) Durable() disk.Durable { return r.wal.Durable() }

// Close syncs and closes the WAL. The store is the caller's to close.
func (r *Replica) Close() error {
	err := r.wal.Close()
	if r.endMark != nil {
		err = errors.Join(err, r.endMark.Close())
	}
	return err
}

// Recovery reports what Open had to repair or skip, for logging.
func (r *Replica) Recovery() (torn *disk.TornTail, skipped []disk.SkippedSnapshot, restoredFrom uint64) {
	return r.recoveredTorn, r.skippedSnaps, r.restoredAtOpen
}
