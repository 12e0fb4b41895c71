package sim

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/lease"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

type nodeState uint8

const (
	nodeUp nodeState = iota
	nodeDown
	nodeHalted
	// nodeRemoved: the node applied its own removal from the cluster and
	// stopped for good, as the server does.
	nodeRemoved
)

// node is one simulated KeyVal process: the real replica (core, WAL,
// snapshots, state machine) over its own in-memory file system.
type node struct {
	w      *world
	id     core.NodeID
	fs     *disk.MemFS
	rep    *replica.Replica
	mem    *kvstore.Memory // the store under rep, read in place by checkers
	lessor lease.Lessor    // the etcd workload's lease deadlines (sim/lease.go)
	state  nodeState
	paused bool
	// pausedAt is when the current pause began, and frozen the disk work
	// whose end fell inside it (working): a stopped process does none.
	pausedAt int64
	frozen   []frozenWork
	halt     string
	tickStep int64 // µs between ticks (clock drift makes them differ)
	// sessionTicker paces the session clock entries the node proposes as
	// leader (client.go, propose).
	sessionTicker kvstore.ClockTicker
	// epoch changes at every crash, so events scheduled for an earlier
	// life of the node do nothing.
	epoch int
	// pipe is the node's pipeline (sim/pipeline.go), scheduled with
	// timing and pipeRng.
	pipe    pipeline
	timing  pipelineTiming
	pipeRng *rand.Rand
	// sendDelay is the disk time spent so far in the current stage's
	// event: a message sent after an fsync leaves after the fsync.
	sendDelay int64
	// requests waiting for the replica's answer, by request id.
	requests     map[uint64]*request
	storageFault bool
	// mayMisdirect and mayFlip are what the node's disk was made to do
	// when faults are on. They stay when the faults heal: an operator
	// configures a server for the disk it has (docs/disk.md), and a
	// restart after the heal still finds what that disk did before.
	mayMisdirect, mayFlip bool
	restarts              int
	// failedStarts counts the starts in a row that failed without damage
	// (a read error, a full disk): the third halts the node.
	failedStarts int
	lastApplied  uint64
	// durable is what the node's WAL had synced after its last
	// successful WAL stage: restarting with less, without a corruption
	// error, means storage lost what the node may have promised (a vote,
	// an append).
	durable durableState
	// durableEnd is, by term, the highest index the WAL's durable log
	// has ended at with an entry of that term, in this life of the node:
	// an entry i of term t was durable once if durableEnd[t] >= i (two
	// entries of one term come from the same leader's log).
	durableEnd map[uint64]uint64
	// groupEnds holds, for each group of batches the WAL stage is
	// persisting with one fsync, the entries they write: once that fsync
	// is done (syncWAL) each was durable at some point, as if each batch
	// had been synced by itself, and they join durableEnd.
	groupEnds [][]core.Entry
	synced    int // groups of groupEnds whose fsync is done
	// cleanCrash: the node died between stages, with nothing written and
	// not synced, so its whole synced log must come back.
	cleanCrash bool
	// join: the node was started empty after the cluster was bootstrapped,
	// to be added by a membership change (core.Config.Join); it restarts
	// that way too, from its own disk.
	join bool
	// removedAt is the entry of the node's own removal once it has applied
	// it; leaving is set once its stop is arranged.
	removedAt uint64
	leaving   bool
}

type durableState struct {
	term, lastIndex, lastTerm uint64
	vote                      core.NodeID
}

// checkDurable compares what a restarted node recovered with what it had
// synced before the crash.
func (n *node) checkDurable(got durableState) error {
	want := n.durable
	if got.term < want.term || (got.term == want.term && want.vote != core.None && got.vote != want.vote) {
		return fmt.Errorf("node %d restarted with term %d vote %d, but had synced term %d vote %d (durable state lost without a corruption error)",
			n.id, got.term, got.vote, want.term, want.vote)
	}
	if n.cleanCrash && (got.lastTerm < want.lastTerm || (got.lastTerm == want.lastTerm && got.lastIndex < want.lastIndex)) {
		return fmt.Errorf("node %d restarted with its log ending at %d (term %d), but had synced up to %d (term %d) (durable entries lost without a corruption error)",
			n.id, got.lastIndex, got.lastTerm, want.lastIndex, want.lastTerm)
	}
	return nil
}

func (w *world) newNode(id core.NodeID, rng *rand.Rand, storageFault bool) *node {
	n := &node{w: w, id: id, fs: disk.NewMemFS(rng), requests: map[uint64]*request{}, storageFault: storageFault}
	n.pipeRng = rand.New(rand.NewPCG(w.pipeRng.Uint64(), w.pipeRng.Uint64()))
	n.timing = drawPipelineTiming(n.pipeRng)
	n.tickStep = tickMicros
	if d := w.faults.ClockDrift; d > 0 {
		n.tickStep = int64(float64(tickMicros) * (1 + d*(2*rng.Float64()-1)))
	}
	n.fs.Faults.PartialFlush = true
	n.fs.Faults.TornWrites = true
	f := w.faults
	if storageFault {
		n.fs.Faults.BitFlipProb = f.BitFlipProb
		n.fs.Faults.MisdirectProb = f.MisdirectProb
		n.mayFlip, n.mayMisdirect = f.BitFlipProb > 0, f.MisdirectProb > 0
		n.fs.Faults.ReadErrorProb = f.ReadErrorProb
		n.fs.Faults.CapacityBytes = f.DiskCapacity
	}
	syncMax := f.SlowSyncMax
	if !storageFault {
		syncMax = 0
	}
	n.fs.Faults.Latency = func(op disk.Op, _ string, size int) time.Duration {
		// A disk like the one this project measured: a sync costs about
		// 0.2 ms, writes cost a little per byte.
		us := int64(size / 2000)
		if op == disk.OpSync || op == disk.OpSyncDir {
			us += 200
			if syncMax > 0 {
				us += rng.Int64N(syncMax)
			}
		}
		return time.Duration(us) * time.Microsecond
	}
	return n
}

func (n *node) alive() bool { return n.state == nodeUp && !n.paused }

// start opens the replica from the node's files. A corruption error halts
// the node for good: it must not vote or acknowledge on data it lost.
func (n *node) start() {
	w := n.w
	n.lessor = lease.Lessor{} // a restarted process remembers no deadline
	n.durableEnd = map[uint64]uint64{}
	store := kvstore.NewMemory(kvstore.Options{})
	peers := w.ids
	if n.join {
		peers = nil
	}
	misdirects := n.storageFault && n.mayMisdirect
	faultsBefore := n.fs.Injected()
	rep, err := replica.Open(replica.Config{
		Core: core.Config{
			ID: n.id, Peers: peers, Join: n.join, ElectionTick: n.w.electionTicks, HeartbeatTick: 1,
			Seed: w.seed ^ uint64(n.id)<<32 ^ uint64(n.restarts), MaxMsgBytes: cmp.Or(w.faults.MaxMsgBytes, 64<<10),
			MaxInflightMsgs: w.faults.MaxInflightMsgs, MaxLearnerLag: w.faults.MaxLearnerLag,
		},
		FS: n.fs, Dir: "/node", Store: recordingStore{Store: store, w: w},
		SnapshotEvery: w.snapshotEvery, CatchUpEntries: w.catchUpEntries, KeepSnapshots: 2,
		// Small segments, and zeros written 8 KiB at a time, so that a
		// run crosses many segment ends and writes into and past zeros.
		WAL:         disk.Options{SegmentSize: 64 << 10, ZeroAhead: 8 << 10},
		Send:        n.send,
		Done:        n.done,
		ConfChanged: n.confChanged,
		Observe:     replica.Observer{Sync: n.syncWAL},
		RepairWAL:   true,
		// A misdirected write can take the last records away without a
		// trace where they belonged: on such a disk a repair does not
		// trust the end of the log the intact records show.
		DistrustWALEnd: misdirects,
		// A disk that loses synced writes can lose the WAL's last one,
		// which only the end mark shows.
		DetectLostWrites: n.storageFault && n.fs.Faults.LostWriteProb > 0,
	})
	n.fs.TakeElapsed()
	refused := false // by the torn-tail rules below: a halt, not a retry
	if err == nil {
		// On a disk that may corrupt synced data, a damaged last record
		// cannot be told from a torn write: it may have been acknowledged.
		// Refuse to run rather than forget it (also when a repair took
		// the log's end from records that ended in one).
		mayCorrupt := n.storageFault && (n.mayFlip || n.mayMisdirect)
		if torn, _, _ := rep.Recovery(); torn != nil && mayCorrupt {
			err = fmt.Errorf("torn tail in %s at %d on a disk that may corrupt data", torn.File, torn.Offset)
		} else if dmg := rep.Repaired(); dmg != nil && dmg.TornTail && mayCorrupt && !misdirects {
			err = errors.New("repaired a WAL whose last segment ended in a torn write, on a disk that may corrupt data")
		}
		// (Open has already cut the tail off: a retry would find the WAL
		// clean and run without what the tail may have held.)
		refused = err != nil
	}
	if err != nil {
		var ce *disk.CorruptionError
		if errors.As(err, &ce) || refused || n.failedStarts >= 2 {
			n.state = nodeHalted
			n.halt = err.Error()
			w.counts.Halts++
			why := haltReason(err, ce != nil, refused, faultsBefore, n.fs.Injected())
			w.counts.HaltsBy[why]++
			w.logf("node %d HALTED (%s): %v", n.id, why, err)
			switch {
			case !n.storageFault:
				// docs/sim.md: a node that halts without storage faults
				// fails the run.
				w.fail(fmt.Errorf("node %d halted without storage faults: %v", n.id, err))
			case why == HaltUnexplained:
				// Nor may it halt on damage it could have repaired.
				w.fail(fmt.Errorf("node %d halted on damage it could have repaired: %v", n.id, err))
			}
			return
		}
		// A transient failure (a read error): try again later.
		n.restarts++
		n.failedStarts++
		w.logf("node %d failed to start (%v); retrying", n.id, err)
		n.state = nodeDown
		epoch := n.epoch
		w.clock.after(100_000, func() {
			if n.epoch == epoch && n.state == nodeDown {
				n.restart()
			}
		})
		return
	}
	n.rep, n.mem = rep, store
	n.state = nodeUp
	n.failedStarts = 0
	n.lastApplied = store.AppliedIndex()
	if dmg := rep.Repaired(); dmg != nil {
		w.counts.Repairs++
		w.logf("node %d REPAIRED its WAL: %v", n.id, dmg)
	}
	if dmg := rep.KeptHoles(); dmg != nil {
		w.counts.Repairs++
		w.counts.Kept++
		w.logf("node %d KEPT its log around damage, holes %+v: %v", n.id, rep.Node().Holes(), dmg)
	}
	if why := rep.LostTail(); why != nil {
		w.counts.LostEnds++
		w.logf("node %d found its WAL lost synced records at its end: %v", n.id, why)
	}
	if why := rep.SnapshotRepaired(); why != nil {
		w.counts.Repairs++
		w.logf("node %d REPAIRED its log from an older snapshot: %v", n.id, why)
	}
	if (rep.Repaired() != nil || rep.SnapshotRepaired() != nil || rep.KeptHoles() != nil) && !n.storageFault {
		// As for a halt: without storage faults only a bug damages files
		// (a repair would hide it).
		w.fail(fmt.Errorf("node %d repaired without storage faults", n.id))
	}
	d := rep.Durable()
	got := durableState{term: d.HardState.Term, vote: d.HardState.Vote, lastIndex: d.LastIndex, lastTerm: d.LastTerm}
	// A repaired node promises what it did through its vote floor: it
	// votes as if its log still ended there.
	if f := rep.VoteFloor(); f.AtLeast(core.LogPosition{Term: got.lastTerm, Index: got.lastIndex}) {
		got.lastTerm, got.lastIndex = f.Term, f.Index
	}
	if dmg := rep.Repaired(); dmg != nil && !dmg.HardStateCurrent && got.term <= n.durable.term {
		// Its term and vote came from the vote copy, which may be older
		// than what the WAL had synced, but only by what was never sent
		// on: the checker's record of every vote sent, across restarts,
		// holds it to what it promised.
		got.term, got.vote = n.durable.term, n.durable.vote
	}
	w.check(n.checkDurable(got))
	n.durable = got
	w.checker.Restarted(n.id)
	w.check(w.checker.Observe(rep.Node()))
	n.scheduleTick()
	n.schedule()
}

// HaltReason is why a node halted, as the simulator counts it.
type HaltReason int

// The reasons docs/disk.md and docs/sim.md give for a halt; a node with
// storage faults that halts on damage for none of them
// (HaltUnexplained) fails the run.
const (
	HaltVoteUnknown      HaltReason = iota // replica.ErrVoteUnknown
	HaltNoOtherVoter                       // replica.ErrNoOtherVoter
	HaltDiskFailedAgain                    // a read error, a full disk or a corrupted write during the start
	HaltTornTail                           // the simulator's torn-tail rules
	HaltRetriesExhausted                   // a failure to start that was not damage, three times in a row
	HaltUnexplained
	numHaltReasons
)

var haltReasonNames = [numHaltReasons]string{"vote unknown", "no other voter", "disk failing again", "torn tail", "retries exhausted", "unexplained"}

func (h HaltReason) String() string { return haltReasonNames[h] }

// haltReason classifies a halt on err: damage (a corruption error), the
// torn-tail rules (refused), or anything else. before and after count the
// faults the disk injected around the start.
func haltReason(err error, damage, refused bool, before, after disk.MemFaultCounts) HaltReason {
	switch {
	case refused:
		return HaltTornTail
	case !damage:
		return HaltRetriesExhausted
	case errors.Is(err, replica.ErrVoteUnknown):
		return HaltVoteUnknown
	case errors.Is(err, replica.ErrNoOtherVoter):
		return HaltNoOtherVoter
	case after.ReadErrors > before.ReadErrors || after.NoSpace > before.NoSpace ||
		after.FlippedWrites > before.FlippedWrites || after.MisdirectedWrites > before.MisdirectedWrites:
		return HaltDiskFailedAgain
	}
	return HaltUnexplained
}

func (n *node) crash() {
	if n.state != nodeUp {
		return
	}
	n.w.logf("node %d crashes", n.id)
	n.fs.Intercept = nil
	n.fs.Crash()
	n.cleanCrash = true
	n.rot()
	n.deepRot()
	n.state = nodeDown
	n.endLife()
	n.w.counts.Crashes++
}

func (n *node) restart() {
	if n.state != nodeDown {
		return
	}
	n.restarts++
	n.w.logf("node %d restarts", n.id)
	n.start()
}

func (n *node) scheduleTick() {
	n.w.clock.nodeEvent(n.w.clock.now+n.tickStep, evTick, n, 0)
}

// tick is the Raft clock's tick on the node's life epoch.
func (n *node) tick(epoch int) {
	if n.epoch != epoch || n.state != nodeUp {
		return
	}
	if !n.paused {
		n.rep.Node().Tick()
		n.w.check(n.w.checker.Observe(n.rep.Node()))
		n.schedule()
	}
	n.scheduleTick()
}

// endLife forgets everything of the node's process (a crash, or its stop
// after removal): the events scheduled for it, its pipeline, its requests.
func (n *node) endLife() {
	n.epoch++
	n.rep = nil
	n.paused = false
	n.frozen = nil
	n.pipe = pipeline{}
	n.requests = map[uint64]*request{}
}

func (n *node) scheduleRestart() {
	epoch := n.epoch
	n.w.clock.after(n.w.faults.DownFor+10_000, func() {
		if n.epoch == epoch {
			n.restart()
		}
	})
}

// checkState compares the state machine with every other node's at the
// same applied index.
func (n *node) checkState() {
	store := n.rep.Store()
	applied := store.AppliedIndex()
	if applied == n.lastApplied {
		return
	}
	n.lastApplied = applied
	digest, err := stateDigest(n.mem)
	if err != nil {
		n.w.fail(fmt.Errorf("node %d: read state: %w", n.id, err))
		return
	}
	if prev, ok := n.w.digests[applied]; ok && prev != digest {
		n.w.fail(fmt.Errorf("node %d: state at applied index %d differs from another node's", n.id, applied))
		return
	}
	n.w.digests[applied] = digest
}

// send is the replica's network: messages leave once the disk work done so
// far in this stage is finished.
func (n *node) send(msgs []core.Message) {
	n.sendDelay += int64(n.fs.TakeElapsed() / time.Microsecond)
	for _, m := range msgs {
		n.w.check(n.w.checker.ObserveSent(m))
		n.w.check(n.checkPromise(m))
		if m.Type == core.MsgSnap {
			n.sendSnapshot(m)
			continue
		}
		n.w.net.send(n.w.clock.now+n.sendDelay, m)
	}
}

func (n *node) sendSnapshot(m core.Message) {
	s, err := n.rep.OpenSnapshot(m.Snapshot.Index)
	var data []byte
	if err == nil {
		data, err = io.ReadAll(s)
		s.Close()
	}
	to := n.w.node(m.To)
	epoch := n.epoch
	report := func(ok bool) {
		if n.epoch == epoch && n.state == nodeUp {
			n.rep.Node().ReportSnapshot(m.To, ok)
			n.schedule()
		}
	}
	if err != nil {
		if !n.injectedFault(err) {
			// The core sends the snapshot its log starts from, whose file
			// the replica made durable before compacting; only the disk
			// model may take it away.
			n.w.fail(fmt.Errorf("node %d: reading its snapshot %d failed with no disk fault to blame: %w", n.id, m.Snapshot.Index, err))
			return
		}
		n.w.logf("node %d cannot read snapshot %d: %v", n.id, m.Snapshot.Index, err)
		n.rep.RequestSnapshot()
		n.w.clock.after(1000, func() { report(false) })
		return
	}
	delay := n.w.net.delay() + int64(len(data)/100) // ~100 MB/s
	n.w.clock.after(n.sendDelay+delay, func() {
		if to == nil || !n.w.net.connected(m.From, m.To) || !to.alive() {
			report(false)
			return
		}
		n.w.snapshotsSent++
		if err := to.rep.ReceiveSnapshot(m, bytes.NewReader(data)); err != nil {
			switch {
			case errors.Is(err, errPowerCut):
				// The power went while it wrote the file: it dies.
				to.storageFailure(err)
			case !to.injectedFault(err):
				n.w.fail(fmt.Errorf("node %d: receiving a snapshot failed with no disk fault to blame: %w", to.id, err))
				return
			default:
				n.w.logf("node %d: receive snapshot: %v", to.id, err)
			}
			report(false)
			return
		}
		to.fs.TakeElapsed()
		n.w.check(n.w.checker.Observe(to.rep.Node()))
		to.schedule()
		report(true)
	})
}

// deliver hands a peer message to the node.
func (n *node) deliver(m core.Message) {
	if !n.alive() {
		return
	}
	// Two moments worth a fault (see Faults.LeaderChurn): a node that has
	// just won an election, and a leader that has just learned of a commit
	// no one else knows of yet.
	nd := n.rep.Node()
	f := &n.w.faults // not a copy: Faults is large and this runs per message
	wasLeader := nd.SoftState().Role == core.Leader
	var commit uint64
	if wasLeader && f.CommitIsolate > 0 {
		commit = nd.HardState().Commit
	}
	if wasLeader && n.w.mem.removed[m.From] {
		nd.InformRemoved(m.From)
	}
	if err := n.rep.Step(m); err != nil {
		n.w.fail(fmt.Errorf("node %d refused %v: %w", n.id, m, err))
		return
	}
	n.w.check(n.w.checker.Observe(nd))
	if n.w.clock.now < n.w.faultsUntil && nd.SoftState().Role == core.Leader {
		switch {
		case !wasLeader && f.LeaderChurn > 0 && n.w.extraRng.Float64() < f.LeaderChurn:
			n.w.isolate(n, "right after winning an election")
		case wasLeader && f.CommitIsolate > 0 && nd.HardState().Commit > commit && n.w.extraRng.Float64() < f.CommitIsolate:
			n.w.isolate(n, "right after advancing its commit index")
		}
	}
	n.schedule()
}

// done receives the replica's answer to a client request.
func (n *node) done(id uint64, out replica.Outcome) {
	rq := n.requests[id]
	if rq == nil {
		return
	}
	delete(n.requests, id)
	n.w.check(n.checkRelease(rq, out))
	if rq.onDone != nil {
		rq.onDone(out)
		return
	}
	n.answer(rq, out)
}

// rot flips one bit near the end of a storage-faulty node's newest WAL
// segment while it is down (see Faults.RotProb).
func (n *node) rot() {
	f := n.w.faults
	if !n.storageFault || f.RotProb == 0 || n.w.extraRng.Float64() >= f.RotProb {
		return
	}
	segs := n.walSegments()
	if len(segs) == 0 {
		return
	}
	// The end of the records, not of the file: the zeros the WAL writes
	// ahead of its records follow them.
	path, size := segs[len(segs)-1].path, n.recordsEnd(segs[len(segs)-1])
	if size == 0 {
		return
	}
	off := size - 1 - n.w.extraRng.Int64N(min(f.RotSpan, size))
	if n.fs.FlipBit(path, off, n.w.extraRng.UintN(8)) == nil {
		n.w.counts.Rotted++
		n.w.logf("node %d: bit rot in %s at %d", n.id, path, off)
	}
}

// deepRot flips one bit anywhere in a storage-faulty node's WAL segments
// while it is down (see Faults.DeepRotProb).
func (n *node) deepRot() {
	rng := n.w.repairRng
	if !n.storageFault || n.w.faults.DeepRotProb == 0 || rng.Float64() >= n.w.faults.DeepRotProb {
		return
	}
	segs := n.walSegments()
	if len(segs) == 0 {
		return
	}
	seg := segs[rng.IntN(len(segs))]
	off := rng.Int64N(seg.size)
	if n.fs.FlipBit(seg.path, off, rng.UintN(8)) == nil {
		n.w.counts.Rotted++
		n.w.logf("node %d: bit rot deep in %s at %d", n.id, seg.path, off)
	}
}

type walSegment struct {
	path string
	size int64
}

// recordsEnd is where a WAL segment file's records end (disk.RecordsEnd).
func (n *node) recordsEnd(seg walSegment) int64 {
	file, err := n.fs.Open(seg.path)
	if err != nil {
		return 0
	}
	defer file.Close()
	b := make([]byte, seg.size)
	if _, err := file.ReadAt(b, 0); err != nil && err != io.EOF {
		return 0
	}
	return int64(disk.RecordsEnd(b))
}

// walSegments lists the node's non-empty WAL segments, oldest first.
func (n *node) walSegments() []walSegment {
	names, err := n.fs.ReadDir("/node/wal")
	if err != nil {
		return nil
	}
	var segs []walSegment
	for _, name := range names {
		if !strings.HasSuffix(name, ".wal") {
			continue
		}
		path := "/node/wal/" + name
		file, err := n.fs.Open(path)
		if err != nil {
			continue
		}
		size, err := file.Size()
		file.Close()
		if err == nil && size > 0 {
			segs = append(segs, walSegment{path, size})
		}
	}
	return segs
}
