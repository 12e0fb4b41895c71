package kvstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// The Bolt store compacts in two steps, as etcd does. The Compact command
// only moves the compacted revision (reads below it are refused from then
// on) and marks the history below it as to be pruned (meta/compacting_from:
// the revision a pass prunes for, and the history key it has reached).
// The versions the compaction dooms
// are deleted afterwards by a goroutine of the store's, a chunk at a time
// with a pause between chunks; each chunk's transaction is committed at
// once, with whatever batches Apply had left open in it. Deleting them
// inside the command's apply held every write behind it for as long as
// the deletion took (docs/bench.md, "Pruning after the compaction").
//
// Nothing a client reads depends on how far pruning has got: a doomed
// version is older than its key's newest at or below the compacted
// revision, or is that newest and a tombstone below it, so a read at or
// after the compacted revision never returns one, and reads below it are
// refused.
// A snapshot holds what its state still had to prune, so its bytes differ
// from member to member with their progress (the store it is restored
// into prunes it: Restore sets the marker); HashKV, which hashes every
// version, and Defragment finish the pruning first. A restart resumes
// from the marker; what a chunk dooms depends only on the history and the
// pass's revision, so a chunk redone after a crash deletes the same
// entries.
//
// The memory store still prunes inside the command: it has no writer to
// hold up but the simulator's, whose schedules stay as they were.

// pruneChunk is how many history entries one pruning transaction deletes
// at most (boltPruner.plan also bounds what it scans): what a write
// arriving meanwhile waits for (writeMu), with, for a pass's first chunk,
// the map of every key's head.
var pruneChunk = 1024

// prunePause is how long the pruning goroutine rests between chunks, as
// etcd's compaction does between its batches (its compaction sleep
// interval, 10 ms by default, after batches of 1,000 keys): without
// it, pruning took the store's lock and a core back to back, and the p99
// of writes beside it was 32–40 ms where it had been 16–19 (docs/bench.md,
// "Pruning after the compaction").
var prunePause = 10 * time.Millisecond

// backgroundPruning says whether the store's goroutine prunes; a test
// that steps pruning itself turns it off.
var backgroundPruning = true

// schedulePrune implements laterPruner: the history below rev is to be
// pruned, by a pass from its start. A pass under way for an earlier compaction goes
// on for its own revision and the next pass prunes for the latest one
// (pruneStepLocked): an earlier revision dooms no version a later one
// keeps. Starting again from the start instead would never finish a pass
// over a history longer than what pruning covers between two
// compactions (etcd's revision mode compacts every 5 s); and a pass that
// went on from where it was with the new revision, wrapping round to
// where it began, would take a key out of the index (its tombstone
// deleted) while older versions of it, before that point, were still to
// be deleted: versions no pass reaches again.
func (st *boltState) schedulePrune(rev uint64) error {
	if !st.pruning() {
		st.pruneRev, st.pruneFrom, st.pruneDirty = rev, nil, true
	}
	return nil
}

// pruneStep deletes the next chunk of at most limit doomed versions in a
// transaction of its own (with whatever Apply left open) and says whether
// more remain.
func (b *Bolt) pruneStep(limit int) (more bool, err error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if b.closed.Load() {
		return false, ErrClosed
	}
	if err := b.failure(); err != nil {
		return false, err
	}
	return b.pruneStepLocked(limit)
}

// pruneStepLocked is pruneStep, under writeMu.
func (b *Bolt) pruneStepLocked(limit int) (bool, error) {
	if !b.applied.Load().pruning {
		return false, nil
	}
	p, err := b.openPending()
	if err != nil {
		return false, err
	}
	st := p.st
	if st.pruning() {
		if b.pruner == nil || b.pruner.rev != st.pruneRev {
			b.pruner = newBoltPruner(st.pruneRev)
		}
		doomed, next, err := b.pruner.plan(st, st.pruneFrom, limit)
		for i := 0; err == nil && i < len(doomed); i++ {
			err = st.deleteHistory(doomed[i].key, doomed[i].rev, doomed[i].newest)
		}
		if err != nil {
			b.pruner = nil
			b.abandon(p, err)
			return false, fmt.Errorf("prune the history below revision %d: %w", st.pruneRev, err)
		}
		st.pruneFrom, st.pruneDirty = next, true
		if next == nil {
			b.pruner, p.passEnded = nil, true
			if st.pruneRev == st.compactRev {
				st.pruneRev = 0 // done
			} else {
				st.pruneRev = st.compactRev // compacted again meanwhile: a pass for the latest
			}
		}
	}
	// Committed at once, even with batches in it that Apply left open: a
	// transaction holds every page it deletes from until its commit.
	return st.pruning(), b.commitLocked()
}

// FinishCompaction waits until this member has deleted what its last
// compaction dooms (etcd's Compact with physical set), pruning on the
// caller's goroutine rather than waiting for the store's.
func (b *Bolt) FinishCompaction(ctx context.Context) error {
	for b.applied.Load().pruning {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("finish a compaction: %w", err)
		}
		if _, err := b.pruneStep(pruneChunk); err != nil {
			return fmt.Errorf("finish a compaction: %w", err)
		}
	}
	return nil
}

// Pruning says whether this member has yet to delete some of what its
// last compaction doomed.
func (b *Bolt) Pruning() bool { return b.applied.Load().pruning }

// startPruning starts the store's pruning goroutine, and has it resume a
// compaction a restart interrupted.
func (b *Bolt) startPruning() {
	b.pruneKick = make(chan struct{}, 1)
	b.pruneQuit = make(chan struct{})
	b.pruneDone = make(chan struct{})
	go b.pruneInBackground()
	b.kickPruning()
}

// kickPruning wakes the pruning goroutine if there is pruning to do.
func (b *Bolt) kickPruning() {
	if backgroundPruning && b.applied.Load().pruning {
		select {
		case b.pruneKick <- struct{}{}:
		default: // already woken
		}
	}
}

// stopPruning stops the pruning goroutine and waits for it: it takes
// writeMu for each chunk, so the caller must not hold it.
func (b *Bolt) stopPruning() {
	b.pruneStop.Do(func() { close(b.pruneQuit) })
	<-b.pruneDone
}

// pruneInBackground prunes a chunk at a time when woken, until the
// compaction is done or the store closes. An error is told to
// Options.OnFailure; the marker stays, and the next Apply, compaction or
// restart tries again.
func (b *Bolt) pruneInBackground() {
	defer close(b.pruneDone)
	pause := time.NewTimer(prunePause)
	defer pause.Stop()
	for {
		select {
		case <-b.pruneQuit:
			return
		case <-b.pruneKick:
		}
		for more := true; more; {
			select {
			case <-b.pruneQuit:
				return
			default:
			}
			var err error
			if more, err = b.pruneStep(pruneChunk); err != nil {
				if !errors.Is(err, ErrClosed) && b.opts.OnFailure != nil {
					b.opts.OnFailure(err)
				}
				break
			}
			if more {
				pause.Reset(prunePause)
				select {
				case <-b.pruneQuit:
					return
				case <-pause.C:
				}
			}
		}
	}
}

// boltPruner plans the pruning of a compaction at rev in revision order:
// one pass over the history bucket, whose keys begin with their revision,
// up to rev, where compactPlan walks every key's versions back through
// their links, looking each one up in the tree and reading its value. It
// dooms what compactPlan does: for each key the index holds, the versions
// older than its newest at or below rev, and that one too if it is a
// tombstone. A chunk's start and next are history keys; a chunk holds at
// most limit entries, and ends after scanning 8×limit: a history whose
// versions are mostly kept would otherwise be scanned whole for one chunk.
//
// It is kept from one chunk to the next, across transactions and the
// batches applied between them: those only add versions above rev, which
// leave every key's newest at or below rev as it was, and keys new since
// have none at or below it.
type boltPruner struct {
	rev uint64
	// heads is every key's head when pruning began, looked up by hash: a
	// lookup in the index's tree for every entry of the history was half
	// of a large compaction's time. A published index's entries are never
	// modified, and only pruning takes keys out of it.
	heads map[string]*indexEntry
	// walked holds, for the keys whose head was above rev, their newest
	// version at or below it, found once by walking back from the head.
	walked map[string]keptVersion
}

// keptVersion is a key's newest version at or below a compaction's
// revision (rev 0: it has none).
type keptVersion struct {
	rev       uint64
	tombstone bool
}

func newBoltPruner(rev uint64) *boltPruner {
	return &boltPruner{rev: rev, walked: map[string]keptVersion{}}
}

// kept is key's newest version at or below p.rev, e being its head.
func (p *boltPruner) kept(st *boltState, key []byte, e *indexEntry) (keptVersion, error) {
	if e.meta.modRev <= p.rev {
		return keptVersion{e.meta.modRev, e.meta.tombstone()}, nil
	}
	if k, ok := p.walked[string(key)]; ok {
		return k, nil
	}
	meta, prev := e.meta, e.prev
	var k keptVersion
	for {
		v, err := st.previous(key, meta.modRev, prev)
		if err != nil {
			return keptVersion{}, err
		}
		if v == nil {
			break
		}
		if meta, prev, _, err = splitVersion(key, v); err != nil {
			return keptVersion{}, err
		}
		if meta.modRev <= p.rev {
			k = keptVersion{meta.modRev, meta.tombstone()}
			break
		}
	}
	p.walked[string(key)] = k
	return k, nil
}

// plan is the chunk from history key start (nil: the beginning) in st,
// and the history key the next chunk starts at (nil: done).
func (p *boltPruner) plan(st *boltState, start []byte, limit int) (doomed []doomedVersion, next []byte, err error) {
	limit = max(limit, 1)
	if p.heads == nil {
		p.heads = make(map[string]*indexEntry, st.index.tree.Len())
		st.index.ascend(nil, nil, func(e *indexEntry) bool {
			p.heads[e.key] = e
			return true
		})
	}
	c := st.revs.Cursor()
	k, _ := c.First()
	if start != nil {
		k, _ = c.Seek(start)
	}
	for scanned := 0; k != nil; k, _ = c.Next() {
		if len(k) < 8 {
			return nil, nil, fmt.Errorf("%w: history key %x is shorter than a revision", ErrCorrupt, k)
		}
		r := binary.BigEndian.Uint64(k)
		if r > p.rev {
			return doomed, nil, nil
		}
		if len(doomed) >= limit || scanned >= 8*limit {
			return doomed, clone(k), nil
		}
		scanned++
		key := k[8:]
		e := p.heads[string(key)]
		if e == nil {
			continue // no key's versions: compactPlan would not reach it either
		}
		kv, err := p.kept(st, key, e)
		if err != nil {
			return nil, nil, err
		}
		if r < kv.rev || r == kv.rev && kv.tombstone && r < p.rev {
			doomed = append(doomed, doomedVersion{clone(key), r, r == kv.rev})
		}
	}
	return doomed, nil, nil
}
