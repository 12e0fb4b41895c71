package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// The simulator's schedule of the replica's pipeline: the same stage
// functions the server runs on its goroutines (see the replica package
// comment), each run here as an event of its own at a seeded delay, so
// that batches overlap and any input (a message, a proposal, a read, a
// tick, a crash) can fall between any two stages. Each stage has its own
// queue and is busy for the disk time its work took, as a goroutine would
// be.

// pipeline is one node's stage queues and schedule. It lives and dies with
// the node's process: a crash throws it away.
type pipeline struct {
	walQ    fifo[replica.WALJob]
	storeQ  fifo[replica.StoreJob]
	finishQ fifo[*replica.Batch]
	snapQ   []*replica.PendingSnapshot
	// spare are batch lists that finished moving between stages, reused
	// for the next stage's output.
	spare [][]*replica.Batch
	// A stage's event is scheduled (at most one per stage), and when
	// the stage is free again (its last run's disk time).
	sched                        [numStages]bool
	walBusy, storeBusy, snapBusy int64
}

// fifo is a stage's queue. Its backing array is reused once the queue has
// been drained, so a steady pipeline allocates nothing for its queues.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }

func (q *fifo[T]) push(v T) {
	q.reuse()
	q.items = append(q.items, v)
}

func (q *fifo[T]) pushAll(vs []T) {
	q.reuse()
	q.items = append(q.items, vs...)
}

// reuse starts the array over once everything in it was taken.
func (q *fifo[T]) reuse() {
	if q.head > 0 && q.head == len(q.items) {
		clear(q.items) // do not pin what was taken
		q.items, q.head = q.items[:0], 0
	}
}

// take removes the first k items and returns them; the slice is valid
// until the next push, so it is for the stage's own turn only.
func (q *fifo[T]) take(k int) []T {
	out := q.items[q.head : q.head+k : q.head+k]
	q.head += k
	return out
}

// spareList is an empty batch list to collect a stage's output in.
func (p *pipeline) spareList() []*replica.Batch {
	k := len(p.spare)
	if k == 0 {
		return nil
	}
	l := p.spare[k-1]
	p.spare = p.spare[:k-1]
	return l
}

// recycle takes back a batch list whose batches have moved on.
func (p *pipeline) recycle(l []*replica.Batch) {
	clear(l)
	p.spare = append(p.spare, l[:0])
}

// stage names one of a node's pipeline stages.
type stage uint8

const (
	stageLoop stage = iota
	stageWAL
	stageStore
	stageSnapshot
	numStages
)

// pipelineTiming is how a node's stages are scheduled, drawn per node from
// the seed: the delay before a stage takes its queue (goroutine wake-up),
// and how often it takes only part of what is waiting.
type pipelineTiming struct {
	maxDelay    int64   // µs
	partialProb float64 // chance a stage takes a random prefix of its queue
}

func drawPipelineTiming(rng *rand.Rand) pipelineTiming {
	delays := [...]int64{1, 50, 300, 2000}
	return pipelineTiming{maxDelay: delays[rng.IntN(len(delays))], partialProb: rng.Float64()}
}

// stageDelay is the wait before a stage runs.
func (n *node) stageDelay() int64 { return n.pipeRng.Int64N(n.timing.maxDelay) }

// takeCount is how many of queued jobs a stage takes now.
func (n *node) takeCount(queued int) int {
	if queued > 1 && n.pipeRng.Float64() < n.timing.partialProb {
		return 1 + n.pipeRng.IntN(queued)
	}
	return queued
}

// stageEvent schedules stage s's turn on the node's current life at time
// at; nothing runs while the node is paused (resume kicks every stage
// again).
func (n *node) stageEvent(at int64, s stage) {
	if n.pipe.sched[s] {
		return
	}
	n.pipe.sched[s] = true
	n.w.clock.nodeEvent(at, evStage, n, s)
}

// runStage is stage s's turn, scheduled on the node's life epoch.
func (n *node) runStage(epoch int, s stage) {
	if n.epoch != epoch {
		return
	}
	n.pipe.sched[s] = false
	if !n.alive() {
		return
	}
	n.sendDelay = 0
	switch s {
	case stageLoop:
		n.runLoop()
	case stageWAL:
		n.runWAL()
	case stageStore:
		n.runStore()
	case stageSnapshot:
		n.runSnapshot()
	}
}

// schedule asks the loop to take the replica's next batches.
func (n *node) schedule() {
	if n.alive() {
		n.stageEvent(n.w.clock.now+n.stageDelay(), stageLoop)
	}
}

// kickAll schedules every stage with work waiting (after a pause).
func (n *node) kickAll() {
	n.schedule()
	n.kickWAL()
	n.kickStore()
	n.kickSnapshots()
}

func (n *node) kickWAL() {
	if p := &n.pipe; p.walQ.len() > 0 {
		n.stageEvent(max(n.w.clock.now, p.walBusy)+n.stageDelay(), stageWAL)
	}
}

func (n *node) kickStore() {
	if p := &n.pipe; p.storeQ.len() > 0 {
		n.stageEvent(max(n.w.clock.now, p.storeBusy)+n.stageDelay(), stageStore)
	}
}

func (n *node) kickSnapshots() {
	if p := &n.pipe; len(p.snapQ) > 0 {
		n.stageEvent(max(n.w.clock.now, p.snapBusy)+n.stageDelay(), stageSnapshot)
	}
}

// later runs fn on the node's current life d µs from now, unless the node
// crashed or stopped meanwhile.
func (n *node) later(d int64, fn func()) {
	epoch := n.epoch
	n.w.clock.after(d, func() {
		if n.epoch == epoch && n.state == nodeUp {
			fn()
		}
	})
}

// frozenWork is the end of disk work a pause stopped: left µs of it
// remain after the resume.
type frozenWork struct {
	left int64
	fn   func()
}

// working runs fn, the end of work the node's process is doing, d µs from
// now, as later does; but a pause stops the process and its work with it
// (SIGSTOP stops every goroutine), so work that would end during a pause
// ends as long after the resume as it still had to go when the pause
// began. A snapshot being written when its node is paused is then still
// being written after the resume, when a leader's snapshot may arrive.
func (n *node) working(d int64, fn func()) {
	n.later(d, func() {
		if n.paused {
			n.frozen = append(n.frozen, frozenWork{left: n.w.clock.now - n.pausedAt, fn: fn})
			return
		}
		fn()
	})
}

// runLoop is the event loop's turn: finish the batches the state machine
// stage handed back, then take every batch the replica has ready.
func (n *node) runLoop() {
	p := &n.pipe
	for p.finishQ.len() > 0 && n.state == nodeUp {
		b := p.finishQ.take(1)[0]
		snap, err := n.rep.Finish(b)
		if err != nil {
			n.w.fail(fmt.Errorf("node %d: finish: %w", n.id, err))
			return
		}
		n.rep.Release(b)
		if snap != nil {
			p.snapQ = append(p.snapQ, snap)
			n.kickSnapshots()
		}
		n.afterStep()
	}
	if n.state != nodeUp {
		return
	}
	for {
		b, ok := n.rep.Ready()
		if !ok {
			break
		}
		if b.SnapshotAsked() {
			n.w.snapshotsAsked++
		}
		p.walQ.push(replica.WALJob{Batch: b})
		n.w.pipeStats.noteInflight(n.rep.Inflight())
	}
	n.w.check(n.w.checker.Observe(n.rep.Node()))
	n.kickWAL()
}

// runWAL is the WAL stage's turn: persist (write, one fsync, acknowledge)
// what it takes from its queue, and hand the batches to the state machine
// stage once the fsync is done.
func (n *node) runWAL() {
	p := &n.pipe
	jobs := p.walQ.take(n.takeCount(p.walQ.len()))
	// RunWAL persists each run of batches between compactions with one
	// fsync: the entries of each run, in order, for syncWAL.
	n.groupEnds = n.groupEnds[:0]
	for k, j := range jobs {
		if j.Batch == nil {
			continue
		}
		if k == 0 || jobs[k-1].Batch == nil {
			// A new group; the slices of earlier runs are reused.
			g := len(n.groupEnds)
			if g < cap(n.groupEnds) {
				n.groupEnds = n.groupEnds[:g+1]
				n.groupEnds[g] = n.groupEnds[g][:0]
			} else {
				n.groupEnds = append(n.groupEnds, nil)
			}
		}
		last := &n.groupEnds[len(n.groupEnds)-1]
		*last = append(*last, j.Batch.Entries()...)
	}
	n.synced = 0
	persisted, err := n.rep.RunWAL(p.spareList(), jobs)
	elapsed := n.diskTime()
	p.walBusy = n.w.clock.now + elapsed
	if err != nil {
		n.storageFailure(err)
		return
	}
	n.noteDurable()
	n.w.clock.batchesEvent(n.w.clock.now+elapsed, evWALDone, n, persisted)
	n.kickWAL()
}

// persisted hands batches whose fsync is over to the state machine stage.
func (n *node) persisted(batches []*replica.Batch) {
	p := &n.pipe
	for _, b := range batches {
		p.storeQ.push(replica.StoreJob{Batch: b})
	}
	p.recycle(batches)
	n.kickStore()
}

// runStore is the state machine stage's turn: apply what it takes from its
// queue and hand the batches back to the loop.
func (n *node) runStore() {
	p := &n.pipe
	jobs := p.storeQ.take(n.takeCount(p.storeQ.len()))
	applied, err := n.rep.RunStore(p.spareList(), jobs)
	elapsed := n.diskTime()
	p.storeBusy = n.w.clock.now + elapsed
	if err != nil {
		n.storageFailure(err)
		return
	}
	n.checkState()
	n.w.clock.batchesEvent(n.w.clock.now+elapsed, evStoreDone, n, applied)
	n.kickStore()
}

// applied hands batches whose state machine work is over back to the loop.
func (n *node) applied(batches []*replica.Batch) {
	n.pipe.finishQ.pushAll(batches)
	n.pipe.recycle(batches)
	n.schedule()
}

// runSnapshot is the snapshot writer's turn: write the captured snapshot,
// then let the state machine capture the next, and have the loop compact
// the log and queue the WAL's compaction.
func (n *node) runSnapshot() {
	p := &n.pipe
	snap := p.snapQ[0]
	p.snapQ = p.snapQ[1:]
	_, err := n.rep.WriteSnapshot(snap)
	elapsed := n.diskTime() + n.w.faults.SnapshotWriteTime
	p.snapBusy = n.w.clock.now + elapsed
	if err != nil {
		n.storageFailure(err)
		return
	}
	n.working(elapsed, func() {
		p.storeQ.push(replica.StoreJob{Do: n.rep.SnapshotDone})
		n.kickStore()
		n.working(n.stageDelay(), func() {
			job, err := n.rep.SnapshotWritten(snap)
			if err != nil {
				n.w.fail(fmt.Errorf("node %d: %w", n.id, err))
				return
			}
			p.walQ.push(job)
			n.kickWAL()
		})
	})
	n.kickSnapshots()
}

// diskTime is the simulated disk time the stage's work took, µs.
func (n *node) diskTime() int64 {
	n.sendDelay += int64(n.fs.TakeElapsed() / time.Microsecond)
	return n.sendDelay
}

// storageFailure: the disk failed under the node (or the power went); it
// dies, as a real process does on a failed fsync. A stage may fail only
// because the disk model failed it: any other error is the replica's
// (a WAL refusing what the pipeline asked of it, say), which stops a
// keyvald for good, so it fails the run.
func (n *node) storageFailure(err error) {
	if !n.injectedFault(err) {
		n.w.fail(fmt.Errorf("node %d: a pipeline stage failed with no disk fault to blame: %w", n.id, err))
		return
	}
	n.w.logf("node %d storage failure: %v", n.id, err)
	n.crash()
	n.cleanCrash = false
	n.scheduleRestart()
}

// injectedFault reports whether err comes from a fault the simulator put
// into the node's disk: a read error, a full disk, a power cut, or, on a
// storage-faulty node, data the disk damaged.
func (n *node) injectedFault(err error) bool {
	if disk.IsInjectedError(err) || errors.Is(err, errPowerCut) {
		return true
	}
	return n.storageFault && (errors.Is(err, disk.ErrCorrupt) || errors.Is(err, kvstore.ErrCorrupt))
}

// syncWAL is the WAL stage's fsync (replica.Observer.Sync): once it is
// done, every entry the batches being persisted wrote has been durable,
// even one a later batch of the same group replaced before the fsync. An
// acknowledgement of it that leaves after the fsync is then as true as a
// late one after two fsyncs would be.
func (n *node) syncWAL(sync func() error) error {
	if err := sync(); err != nil {
		return err
	}
	if n.synced < len(n.groupEnds) {
		for _, e := range n.groupEnds[n.synced] {
			n.durableEnd[e.Term] = max(n.durableEnd[e.Term], e.Index)
		}
		n.synced++
	}
	return nil
}

// noteDurable records what the node's WAL has made durable, and checks the
// leader's own match index against it.
func (n *node) noteDurable() {
	d := n.rep.Durable()
	n.durable = durableState{term: d.HardState.Term, vote: d.HardState.Vote, lastIndex: d.LastIndex, lastTerm: d.LastTerm}
	n.durableEnd[d.LastTerm] = max(n.durableEnd[d.LastTerm], d.LastIndex)
	n.checkSelfMatch()
}

// afterStep runs the checks due after any change to the node.
func (n *node) afterStep() {
	n.w.check(n.w.checker.Observe(n.rep.Node()))
	n.checkSelfMatch()
	if n.removedAt > 0 && !n.leaving {
		n.arrangeLeave()
	}
}

// PipeStats counts how much the simulated pipelines overlapped.
type PipeStats struct {
	Batches     int // batches taken
	Overlapped  int // batches taken while an earlier one was still in flight
	MaxInflight int
}

func (s *PipeStats) noteInflight(inflight int) {
	s.Batches++
	if inflight > 1 {
		s.Overlapped++
	}
	s.MaxInflight = max(s.MaxInflight, inflight)
}

// checkSelfMatch: a leader counts its own log towards a quorum only as far
// as it is durable (the release point of Advance).
func (n *node) checkSelfMatch() {
	nd := n.rep.Node()
	if nd.SoftState().Role != core.Leader {
		return
	}
	match := nd.Match(n.id)
	t, err := nd.Term(match)
	if err != nil {
		return // compacted: applied, so durable long ago
	}
	// A leader never overwrites its own log, so the entry it holds at
	// match is the one it counted.
	if err := n.checkDurableUpTo(match, t, "counts its own log as matched"); err != nil {
		n.w.fail(err)
	}
}

// checkDurableUpTo fails unless the node's durable log holds the entry at
// index i of term t: the last durable entry must be at or past i, and of a
// term no lower than t (a durable log that still ends in an overwritten
// suffix of a lower term does not hold it). t == 0 checks the index only.
func (n *node) checkDurableUpTo(i, t uint64, what string) error {
	if i == 0 {
		return nil
	}
	d := n.rep.Durable()
	if d.LastIndex < i || d.LastTerm < t {
		return fmt.Errorf("node %d %s up to %d (term %d), but its WAL has made durable only up to %d (term %d)",
			n.id, what, i, t, d.LastIndex, d.LastTerm)
	}
	return nil
}

// checkPromise fails a message that promises what the node has not made
// durable: an acknowledgement of entries, a vote, a candidate's own vote.
func (n *node) checkPromise(m core.Message) error {
	hs := n.rep.Durable().HardState
	// The vote durable in the message's term (a later term may already be
	// durable too: then the node has moved on, which is fine).
	votedFor := func(id core.NodeID) bool { return hs.Term > m.Term || (hs.Term == m.Term && hs.Vote == id) }
	switch {
	case m.Type == core.MsgAppResp && !m.Reject:
		// The acknowledgement names the entry's term as it was when the
		// node acknowledged it. The entry may have been replaced since,
		// and the replacement made durable before this acknowledgement
		// leaves: a late acknowledgement is then still true of when it
		// was made (a delayed message, no more), if the entry was durable
		// then.
		if m.LogTerm != 0 && n.durableEnd[m.LogTerm] >= m.Index {
			return nil
		}
		// Or the entry was never durable: a later leader's append
		// replaced it in memory after the node acknowledged it, before
		// the loop took the batch, so the acknowledgement leaves with the
		// replacement's batch (etcd's raft does the same). That is no
		// broken promise if the durable log is later than the entry in
		// Raft's order (a higher last term): after a crash the node
		// refuses every candidate it refused when it acknowledged, and
		// until a crash the acknowledgement was true of its log.
		if m.LogTerm != 0 && n.rep.Durable().LastTerm > m.LogTerm {
			return nil
		}
		return n.checkDurableUpTo(m.Index, m.LogTerm, "acknowledged entries")
	case m.Type == core.MsgVoteResp && !m.Reject && !votedFor(m.To):
		return fmt.Errorf("node %d granted its vote in term %d to %d, but its WAL has made durable term %d vote %d", n.id, m.Term, m.To, hs.Term, hs.Vote)
	case m.Type == core.MsgVote && !votedFor(n.id):
		return fmt.Errorf("node %d asked for votes in term %d, but its WAL has made durable term %d vote %d", n.id, m.Term, hs.Term, hs.Vote)
	}
	return nil
}

// checkRelease fails an answer released before the state machine reflects
// it: a write before its entry is applied; a read at an index not yet
// applied, or below the commit index the node knew when asked.
func (n *node) checkRelease(rq *request, out replica.Outcome) error {
	if out.Err != nil {
		return nil
	}
	applied := n.rep.Store().AppliedIndex()
	switch {
	case out.Index > applied:
		return fmt.Errorf("node %d answered request %d at index %d with only %d applied", n.id, rq.id, out.Index, applied)
	case rq.read && out.Index < rq.commitAtAsk:
		return fmt.Errorf("node %d released read %d at index %d, below the commit index %d it had when asked", n.id, rq.id, out.Index, rq.commitAtAsk)
	}
	return nil
}
