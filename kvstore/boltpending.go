package kvstore

import (
	"fmt"
	"runtime/debug"
	"time"

	"go.etcd.io/bbolt"
)

// Under NoSync a bbolt commit buys no durability (the WAL is the durable
// record, and a crash replays what the file lacks), only visibility, and
// it costs the same whatever it holds: the dirtied pages of the small
// buckets and the branches above the history's end are written again by
// every commit, and the key index is cloned for every transaction. So
// Apply leaves its transaction open for the next batch and answers from
// it, as etcd's backend does, and the transaction is committed when
//
//   - anything reads the state (begin: every read, Freeze, Sizes), so a
//     read sees every batch applied before it began, and a write's
//     answer is never ahead of what a read on the same member sees;
//   - Restore, Defragment, Sync or Close needs the file;
//   - it holds commitEntries entries or commitBytes bytes of them, or
//     was begun commitInterval ago (checked by Apply, and by commitTimer
//     when no Apply comes);
//   - a chunk of a compaction's pruning ran in it (boltcompact.go): a
//     transaction holds every page it deletes from until its commit.
//
// What Apply answered from an open transaction is lost from the file if
// the process dies before the commit, and found again in the WAL when the
// replica replays it, as for any batch a crash caught between the WAL and
// the store. The AppliedIndex, Revision, CompactedRevision and Usage a
// caller sees are Apply's, committed or not.
const (
	commitInterval = 100 * time.Millisecond
	commitEntries  = 10_000
	commitBytes    = 4 << 20
)

// pendingTx is the write transaction Apply left open.
type pendingTx struct {
	tx    *bbolt.Tx
	st    *boltState
	began time.Time
	// entries and bytes count what was applied into it; passEnded says
	// the last chunk of a pass of pruning ran in it (which read the
	// history through the map, handed back after the commit); returned
	// says Apply has answered from it (so losing it would lose answered
	// batches from the store).
	entries, bytes      int
	passEnded, returned bool
}

// appliedMark is where the state stands: its applied index, revision and
// compacted revision.
type appliedMark struct {
	index, rev, compacted uint64
	// pruning: a compaction's pruning is not done (boltcompact.go).
	pruning bool
}

// markOf is where st stands.
func markOf(st *boltState) *appliedMark {
	return &appliedMark{index: st.applied, rev: st.rev, compacted: st.compactRev, pruning: st.pruning()}
}

func (p *pendingTx) commitDue() bool {
	return p.entries >= commitEntries || p.bytes >= commitBytes || time.Since(p.began) >= commitInterval
}

// openPending returns the open write transaction, beginning one if there
// is none. Under writeMu.
func (b *Bolt) openPending() (*pendingTx, error) {
	if b.pending != nil {
		return b.pending, nil
	}
	tx, err := b.file.Load().db.Begin(true)
	if err != nil {
		return nil, fmt.Errorf("begin a write transaction: %w", err)
	}
	st, err := loadState(tx)
	if err != nil {
		_ = tx.Rollback()
		return nil, err
	}
	st.index = b.index.Load().clone()
	b.pending = &pendingTx{tx: tx, st: st, began: time.Now()}
	b.hasPending.Store(true)
	return b.pending, nil
}

// commitLocked commits the open write transaction and publishes its
// state. Under writeMu, with one open. hasPending is cleared only once the
// commit is published: a reader that finds it clear goes straight to the
// published index, which must then hold every batch answered.
func (b *Bolt) commitLocked() error {
	p := b.pending
	b.pending = nil
	defer b.hasPending.Store(false)
	err := p.st.flush()
	if err == nil {
		err = p.tx.Commit()
	}
	if err != nil {
		_ = p.tx.Rollback() // bbolt has rolled a failed commit back already; this only makes sure
		err = fmt.Errorf("commit entries up to %d: %w", p.st.applied, err)
		b.lose(p, err)
		return err
	}
	b.publish(p.st)
	b.commits.Add(1)
	b.sinceHandBack += p.bytes
	b.commitsSince++
	// A compaction read the whole history through the map; and every
	// commit maps the pages the one before it wrote (handBackCommits).
	if p.passEnded || b.sinceHandBack >= handBackEvery || b.commitsSince >= handBackCommits {
		b.handBackMapped()
		b.sinceHandBack, b.commitsSince = 0, 0
	}
	b.prunedSince += p.st.historyDeleted
	if p.passEnded {
		// Pruning held every leaf it touched, a chunk at a time, and the
		// key index's map of heads: some hundred MB after a million
		// entries, which the collector would give back to the system only
		// over minutes.
		if b.prunedSince >= freeAfterDeleting {
			giveMemoryBack()
		}
		b.prunedSince = 0
	}
	return nil
}

// freeAfterDeleting is how many history entries a commit must have
// deleted (compacted) for the memory its transaction held to be given back
// to the system at once: below it, what a full collection costs is not
// worth the memory. Variables, so that a test can see the call.
var (
	freeAfterDeleting = 100_000
	// Not on the committing goroutine: the next batch need not wait
	// for a full collection.
	giveMemoryBack = func() { go debug.FreeOSMemory() }
)

// abandon rolls back the open transaction after a batch failed in it.
// Under writeMu.
func (b *Bolt) abandon(p *pendingTx, why error) {
	b.pending = nil
	defer b.hasPending.Store(false)
	_ = p.tx.Rollback()
	b.lose(p, fmt.Errorf("a batch failed after entries up to %d were applied: %w", b.applied.Load().index, why))
}

// lose puts the store back at its last commit after p was rolled back,
// and fails it for good if Apply had answered from p: those answers may
// have reached clients, so the state must not be read or written without
// them until a reopen replays them from the WAL. Under writeMu.
func (b *Bolt) lose(p *pendingTx, err error) {
	ix := b.index.Load() // stamped with the last commit (publish)
	b.applied.Store(&appliedMark{index: ix.applied, rev: ix.rev, compacted: ix.compacted, pruning: ix.pruneRev != 0})
	b.pruner = nil // it may have seen heads p held
	if p.returned {
		failed := fmt.Errorf("the store lost batches it had answered, which were not committed (reopen it to replay them from the log): %w", err)
		b.failed.CompareAndSwap(nil, &failed)
	}
}

// failure is the error that failed the store (lose), or nil.
func (b *Bolt) failure() error {
	if err := b.failed.Load(); err != nil {
		return *err
	}
	return nil
}

// commitPending commits what Apply left open, for a reader that must see
// it.
func (b *Bolt) commitPending() error {
	if b.hasPending.Load() {
		b.writeMu.Lock()
		err := b.commitHeld()
		b.writeMu.Unlock()
		if err != nil {
			return err
		}
	}
	return b.failure()
}

// commitHeld commits the open transaction if there is one. Under writeMu.
func (b *Bolt) commitHeld() error {
	if b.pending == nil {
		return b.failure()
	}
	return b.commitLocked()
}

// commitIdle is commitTimer's: it commits a transaction that no Apply
// and no reader has committed within commitInterval. An error is kept
// for the next call (lose) and told to Options.OnFailure at once: on an
// idle member the next call may be a read, or nothing for a long time,
// while the member looked healthy.
func (b *Bolt) commitIdle() {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if b.pending != nil && !b.closed.Load() {
		if err := b.commitLocked(); err != nil && b.opts.OnFailure != nil {
			b.opts.OnFailure(err)
		}
	}
}
