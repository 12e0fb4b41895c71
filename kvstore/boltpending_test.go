package kvstore

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// crash stops the store as a process crash would: what Apply left open is
// lost, and the file keeps its last commit.
func (b *Bolt) crash() {
	b.writeMu.Lock()
	if b.pending != nil {
		_ = b.pending.tx.Rollback()
		b.pending = nil
		b.hasPending.Store(false)
	}
	b.writeMu.Unlock()
	_ = b.Close()
}

// committedIndex reads the applied index of the file's last commit,
// without committing anything.
func committedIndex(t *testing.T, b *Bolt) uint64 {
	t.Helper()
	var applied uint64
	require.NoError(t, b.file.Load().db.View(func(tx *bbolt.Tx) error {
		st, err := loadState(tx)
		applied = st.applied
		return err
	}))
	return applied
}

func openNoSync(t *testing.T) (*Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kv.db")
	b, err := OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	return b, path
}

// TestBoltAnswersBeforeTheCommit: under NoSync, Apply answers from a
// transaction it leaves open; the store's applied index, revision and
// usage are Apply's at once, and a read commits it first, so it sees
// every batch applied before it.
func TestBoltAnswersBeforeTheCommit(t *testing.T) {
	b, _ := openNoSync(t)
	defer b.Close()
	a := newApplier(t, b)
	a.apply(putCmd(0, 0, "k", "v1"))
	a.apply(putCmd(0, 0, "k", "v2"), putCmd(0, 0, "j", "w"))
	b.commitTimer.Stop() // so that only the read below commits them
	require.Equal(t, uint64(3), b.AppliedIndex())
	require.Equal(t, uint64(3), b.Revision())
	require.Equal(t, KeyBytes(1, 2)+KeyBytes(1, 1), b.Usage().Bytes)
	require.Less(t, committedIndex(t, b), uint64(3), "the batches are not committed yet")

	got, err := b.Get([]byte("k"))
	require.NoError(t, err)
	require.Equal(t, GetResult{Value: []byte("v2"), Version: 2, Found: true, Revision: 3}, got)
	require.Equal(t, uint64(3), committedIndex(t, b), "the read committed them")

	a.apply(putCmd(0, 0, "k", "v3"))
	f, err := b.Freeze()
	require.NoError(t, err)
	require.Equal(t, uint64(4), f.Info().AppliedIndex, "a snapshot holds every batch applied")
	require.NoError(t, f.Close())
}

// TestBoltEventsAppliedLeavesItOpen: the watch dispatcher's read sees the
// batches Apply left open without committing them, and reads what Events
// (which commits them) reads.
func TestBoltEventsAppliedLeavesItOpen(t *testing.T) {
	b, _ := openNoSync(t)
	defer b.Close()
	a := newApplier(t, b)
	a.apply(putCmd(0, 0, "k", "v1"), putCmd(0, 0, "j", "w"))
	require.NoError(t, b.Sync())
	a.apply(putCmd(0, 0, "k", "v2"), delCmd(0, 0, "j"), putCmd(0, 0, "i", "x"))
	b.commitTimer.Stop() // so that only a read commits what is open
	all := []byte{0}
	got, more, err := b.EventsApplied(all, all, 2, b.Revision(), true, 2)
	require.NoError(t, err)
	require.True(t, more, "cut at the limit")
	require.Equal(t, uint64(2), committedIndex(t, b), "nothing committed")
	require.Len(t, got, 2)
	rest, _, err := b.EventsApplied(all, all, 4, b.Revision(), true, 10)
	require.NoError(t, err)
	require.Equal(t, uint64(2), committedIndex(t, b), "nothing committed")
	got = append(got, rest...)

	want, _, err := b.Events(all, all, 2, b.Revision(), true, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(5), committedIndex(t, b), "Events committed them")
	require.Len(t, want, 4)
	require.Equal(t, want, got)
	again, _, err := b.EventsApplied(all, all, 2, b.Revision(), true, 10)
	require.NoError(t, err)
	require.Equal(t, want, again, "with nothing open")

	// A read with no limit may be long: it does not hold Apply off, and
	// commits as Events does.
	a.apply(putCmd(0, 0, "k", "v3"))
	b.commitTimer.Stop()
	whole, _, err := b.EventsApplied(all, all, 2, b.Revision(), true, 0)
	require.NoError(t, err)
	require.Len(t, whole, 5)
	require.Equal(t, uint64(6), committedIndex(t, b), "read as Events")
}

// TestBoltCommitsWhenIdle: a transaction no read and no Apply commits is
// committed by the store's timer.
func TestBoltCommitsWhenIdle(t *testing.T) {
	b, _ := openNoSync(t)
	defer b.Close()
	newApplier(t, b).apply(putCmd(0, 0, "k", "v"))
	require.Eventually(t, func() bool { return committedIndex(t, b) == 1 }, 10*time.Second, 5*time.Millisecond)
}

// TestBoltSyncedCommitsEachApply: without NoSync every Apply is committed
// (and durable) when it returns.
func TestBoltSyncedCommitsEachApply(t *testing.T) {
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{})
	require.NoError(t, err)
	defer b.Close()
	newApplier(t, b).apply(putCmd(0, 0, "k", "v"))
	require.Equal(t, uint64(1), committedIndex(t, b))
}

// TestBoltCrashBeforeTheCommit: a crash loses from the file only the
// batches not committed; replaying the log answers them as they were
// answered before, and leaves the state they made.
func TestBoltCrashBeforeTheCommit(t *testing.T) {
	log := []Entry{{Index: 1, Data: registerCmd()}}
	for i := 2; i <= 12; i++ {
		log = append(log, Entry{Index: uint64(i), Data: putCmd(1, uint64(i-1), string(rune('a'+i%3)), string(rune('A'+i)))})
	}
	ref := NewMemory(Options{})
	_, err := ref.Apply(log)
	require.NoError(t, err)

	b, path := openNoSync(t)
	_, err = b.Apply(log[:5])
	require.NoError(t, err)
	require.NoError(t, b.Sync())
	answered, err := b.Apply(log[5:])
	require.NoError(t, err)
	b.crash()

	b, err = OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, uint64(5), b.AppliedIndex(), "the batch after the last commit is gone from the file")
	again, err := b.Apply(log)
	require.NoError(t, err)
	require.Equal(t, answered, again[5:])
	require.Equal(t, stateOf(t, ref), stateOf(t, b))
}

// TestBoltRefusedBatchKeepsTheOpenOne: a batch refused for its indexes
// leaves the batches applied before it in the open transaction.
func TestBoltRefusedBatchKeepsTheOpenOne(t *testing.T) {
	b, _ := openNoSync(t)
	defer b.Close()
	newApplier(t, b).apply(putCmd(0, 0, "k", "v"), putCmd(0, 0, "j", "w"))
	_, err := b.Apply([]Entry{{Index: 5, Data: putCmd(0, 0, "x", "y")}})
	require.ErrorIs(t, err, ErrNotContiguous)
	require.Equal(t, uint64(2), b.AppliedIndex())
	got, err := b.Get([]byte("j"))
	require.NoError(t, err)
	require.True(t, got.Found)
	require.NoError(t, b.failure())
}

// TestBoltReadsSeeAnsweredWrites: a read begun after Apply answered a
// batch sees it, while other readers and the timer commit the open
// transaction concurrently (a reader that went straight to the published
// index while another's commit was not yet published saw an older state).
func TestBoltReadsSeeAnsweredWrites(t *testing.T) {
	b, _ := openNoSync(t)
	defer b.Close()
	const writes = 3000
	var answered atomic.Uint64 // the revision of the last put Apply answered
	var applyErr error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for i := uint64(1); i <= writes; i++ {
			if _, applyErr = b.Apply([]Entry{{Index: i, Data: putCmd(0, 0, "k", fmt.Sprint(i))}}); applyErr != nil {
				return
			}
			answered.Store(i)
		}
	}()
	var wg sync.WaitGroup
	failed := make(chan string, 4)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-finished:
					return
				default:
				}
				want := answered.Load()
				got, err := b.Get([]byte("k"))
				if err != nil || got.Revision < want {
					failed <- fmt.Sprintf("a read after put %d was answered saw revision %d (err %v)", want, got.Revision, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(failed)
	for msg := range failed {
		t.Error(msg)
	}
	require.NoError(t, applyErr)
	require.Equal(t, uint64(writes), b.AppliedIndex())
}

// TestBoltLargeCompactionGivesMemoryBack: the commit that finishes the
// pruning of a compaction that deleted at least freeAfterDeleting history
// entries, over however many chunks, gives the memory pruning held back to
// the system; a smaller one, a chunk that does not finish, and a commit
// without pruning do not pay for a full collection.
func TestBoltLargeCompactionGivesMemoryBack(t *testing.T) {
	was, wasGive, wasChunk, wasBackground := freeAfterDeleting, giveMemoryBack, pruneChunk, backgroundPruning
	t.Cleanup(func() {
		freeAfterDeleting, giveMemoryBack, pruneChunk, backgroundPruning = was, wasGive, wasChunk, wasBackground
	})
	freeAfterDeleting, pruneChunk, backgroundPruning = 5, 2, false
	calls := 0
	giveMemoryBack = func() { calls++ }

	// Synced: every Apply commits before it returns.
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{})
	require.NoError(t, err)
	defer b.Close()
	a := newApplier(t, b)
	for i := range 10 {
		a.one(etcdPut(t, "k", fmt.Sprint(i))) // revisions 1-10
	}
	step := func() bool {
		more, err := b.pruneStep(pruneChunk)
		require.NoError(t, err)
		return more
	}
	require.Equal(t, StatusOK, a.one(EncodeCompact(4, "")).Status) // dooms revisions 1-3
	require.True(t, step(), "two of three entries deleted")
	require.False(t, step(), "the third deleted")
	require.Zero(t, calls, "three entries deleted, under the threshold")
	require.Equal(t, StatusOK, a.one(EncodeCompact(10, "")).Status) // dooms revisions 4-9
	for step() {
		require.Zero(t, calls, "the pruning goes on")
	}
	require.Equal(t, 1, calls, "six entries deleted in chunks of two")
	a.one(etcdPut(t, "k", "after"))
	require.False(t, step(), "nothing to prune")
	require.Equal(t, 1, calls, "the count starts again with each compaction")
}
