package kvstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolterrors "go.etcd.io/bbolt/errors"
)

// smallRestoreSteps makes a restore commit every few hundred bytes, so
// that a test's small state spans many transactions.
func smallRestoreSteps(t *testing.T) {
	was := restoreCommitEvery
	restoreCommitEvery = 512
	t.Cleanup(func() { restoreCommitEvery = was })
}

// largerSnapshot is the snapshot of a state of a few hundred keys, each
// written more than once, and sessions: tens of kilobytes.
func largerSnapshot(t *testing.T) []byte {
	src := NewMemory(Options{})
	defer src.Close()
	a := newApplier(t, src)
	a.apply(registerCmd(), registerCmd())
	for round := 0; round < 3; round++ {
		var cmds [][]byte
		for k := 0; k < 300; k++ {
			cmds = append(cmds, putCmd(0, 0, fmt.Sprintf("key-%04d", k), fmt.Sprintf("value %d of key %d, long enough to fill pages", round, k)))
		}
		a.apply(cmds...)
	}
	return stateOf(t, src)
}

// overwrite writes 400 keys of 1,000-byte values rounds times over.
func overwrite(a *applier, rounds int) {
	value := string(bytes.Repeat([]byte("v"), 1000))
	for range rounds {
		var cmds [][]byte
		for k := 0; k < 400; k++ {
			cmds = append(cmds, putCmd(0, 0, fmt.Sprintf("key-%03d", k), value))
		}
		a.apply(cmds...)
	}
}

// TestBoltRestoreInSteps: a restore written in many transactions to a
// file of its own ends in exactly the snapshot's state, at the store's
// path and durable there; a reader begun before it keeps reading the old
// state to the end; no restore file is left behind.
func TestBoltRestoreInSteps(t *testing.T) {
	smallRestoreSteps(t)
	snap := largerSnapshot(t)
	path := filepath.Join(t.TempDir(), "kv.db")
	b, err := OpenBolt(path, Options{})
	require.NoError(t, err)
	newApplier(t, b).apply(putCmd(0, 0, "old", "state"), registerCmd())
	before := stateOf(t, b)
	frozen, err := b.Freeze()
	require.NoError(t, err)

	require.NoError(t, b.Restore(bytes.NewReader(snap)))
	require.Equal(t, snap, stateOf(t, b))
	require.NoFileExists(t, path+restoringSuffix)
	var old bytes.Buffer
	require.NoError(t, frozen.WriteSnapshot(&old), "a snapshot begun before the restore reads the file it replaced")
	require.NoError(t, frozen.Close())
	require.Equal(t, before, old.Bytes())

	res := newApplier(t, b).one(putCmd(0, 0, "after", "restore"))
	require.Equal(t, StatusOK, res.Status)
	after := stateOf(t, b)
	require.NoError(t, b.Close())

	b, err = OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, after, stateOf(t, b), "the restored file, and what followed it, is the store's after a reopen")
}

// TestBoltRestoreRefusedMidway: a stream that fails its checks after some
// of it was committed to the new file leaves the old state, served and on
// disk, and no restore file.
func TestBoltRestoreRefusedMidway(t *testing.T) {
	smallRestoreSteps(t)
	snap := largerSnapshot(t)
	path := filepath.Join(t.TempDir(), "kv.db")
	b, err := OpenBolt(path, Options{})
	require.NoError(t, err)
	newApplier(t, b).apply(putCmd(0, 0, "old", "state"))
	before := stateOf(t, b)
	for _, cut := range []int{len(snap) / 2, len(snap) - 1} {
		err := b.Restore(bytes.NewReader(snap[:cut]))
		require.ErrorIs(t, err, ErrBadSnapshot, "cut at %d of %d", cut, len(snap))
		require.Equal(t, before, stateOf(t, b))
		require.NoFileExists(t, path+restoringSuffix)
	}
	require.NoError(t, b.Close())
	b, err = OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, before, stateOf(t, b))
}

// TestBoltOpenRemovesInterruptedRestore: a crash during a restore leaves
// its file; opening the store keeps the state the restore was to replace
// and removes the file.
func TestBoltOpenRemovesInterruptedRestore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	b, err := OpenBolt(path, Options{})
	require.NoError(t, err)
	newApplier(t, b).apply(putCmd(0, 0, "kept", "yes"))
	before := stateOf(t, b)
	require.NoError(t, b.Close())
	require.NoError(t, os.WriteFile(path+restoringSuffix, []byte("half a restore"), 0o600))

	b, err = OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, before, stateOf(t, b))
	_, err = os.Stat(path + restoringSuffix)
	require.True(t, errors.Is(err, os.ErrNotExist), "the interrupted restore's file is removed: %v", err)
}

// TestBoltReadsDuringRestore reads while another goroutine restores one
// snapshot after another (run with -race): a read never fails because
// the file it began on was replaced, and sees one snapshot's state whole.
func TestBoltReadsDuringRestore(t *testing.T) {
	smallRestoreSteps(t)
	states := make([][]byte, 2)
	for i, v := range []string{"first", "second"} {
		m := NewMemory(Options{})
		a := newApplier(t, m)
		for j := 0; j <= i; j++ {
			a.apply(putCmd(0, 0, "x", v), putCmd(0, 0, "y", v))
		}
		states[i] = stateOf(t, m)
		require.NoError(t, m.Close())
	}
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{NoSync: true})
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, b.Restore(bytes.NewReader(states[0])))

	const restores = 40
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= restores; i++ {
			if err := b.Restore(bytes.NewReader(states[i%2])); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	readUntil(t, done, func() {
		r, err := b.Range(nil, nil, 0)
		require.NoError(t, err)
		require.Len(t, r.Entries, 2)
		require.Equal(t, r.Entries[0].Value, r.Entries[1].Value, "a read saw two states")
		snap := stateOf(t, b)
		require.True(t, bytes.Equal(snap, states[0]) || bytes.Equal(snap, states[1]), "a snapshot of neither state")
	})
	require.Equal(t, states[restores%2], stateOf(t, b))
}

// TestBoltDefragment: after a compaction freed most of the file,
// defragmenting leaves the same state in a file of about the pages in use,
// durable at the store's path; a snapshot begun before it still reads the
// old file.
func TestBoltDefragment(t *testing.T) {
	smallRestoreSteps(t)
	path := filepath.Join(t.TempDir(), "kv.db")
	b, err := OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	a := newApplier(t, b)
	overwrite(a, 5)
	// Committed before the compaction, so that the compaction frees the
	// pages they took (a transaction frees its own without a trace).
	require.NoError(t, b.Sync())
	a.one(EncodeCompact(b.Revision(), ""))
	require.NoError(t, b.FinishCompaction(context.Background()))
	a.one(registerCmd())
	fileSize := func() int64 {
		size, _, err := b.Sizes()
		require.NoError(t, err)
		return size
	}
	sizeBefore, inUse, err := b.Sizes()
	require.NoError(t, err)
	require.Less(t, inUse, sizeBefore/2, "the compaction freed most of the file")
	state := stateOf(t, b)
	frozen, err := b.Freeze()
	require.NoError(t, err)

	require.NoError(t, b.Defragment())
	require.Equal(t, state, stateOf(t, b))
	require.Less(t, fileSize(), sizeBefore/2, "the new file holds only what is in use")
	require.NoFileExists(t, path+restoringSuffix)
	var old bytes.Buffer
	require.NoError(t, frozen.WriteSnapshot(&old))
	require.NoError(t, frozen.Close())
	require.Equal(t, state, old.Bytes())

	a.one(putCmd(0, 0, "after", "defragment"))
	after := stateOf(t, b)
	require.NoError(t, b.Close())
	b, err = OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, after, stateOf(t, b))
}

// TestBoltRestoredHistoryIsPacked: a defragmented or restored store's
// file is no larger than the one Apply wrote with the same history. The
// history arrives in revision order, as Apply appends it; split half full
// (bbolt's default) its pages would take twice the room, and a
// defragmentation would double the file it was to shrink.
func TestBoltRestoredHistoryIsPacked(t *testing.T) {
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{NoSync: true})
	require.NoError(t, err)
	defer b.Close()
	a := newApplier(t, b)
	value := string(bytes.Repeat([]byte("v"), 100))
	for round := range 25 {
		var cmds [][]byte
		for k := range 400 {
			cmds = append(cmds, putCmd(0, 0, fmt.Sprintf("key-%03d-%d", k, round%3), value))
		}
		a.apply(cmds...)
	}
	require.NoError(t, b.Sync())
	_, written, err := b.Sizes()
	require.NoError(t, err)
	state := stateOf(t, b)

	require.NoError(t, b.Defragment())
	_, defragmented, err := b.Sizes()
	require.NoError(t, err)
	require.Equal(t, state, stateOf(t, b))
	require.LessOrEqual(t, defragmented, written*11/10, "defragmented %d bytes in use, Apply wrote %d", defragmented, written)

	r, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{NoSync: true})
	require.NoError(t, err)
	defer r.Close()
	require.NoError(t, r.Restore(bytes.NewReader(state)))
	_, restored, err := r.Sizes()
	require.NoError(t, err)
	require.Equal(t, state, stateOf(t, r))
	require.LessOrEqual(t, restored, written*11/10, "restored %d bytes in use, Apply wrote %d", restored, written)
}

// TestBoltReplacedFileReadersEndAlone: a short read begun on a file a
// restore then replaced ends at once, while a long one (a snapshot being
// written) is still open on that file; the file is closed when the long
// one ends, and Close waits for that.
func TestBoltReplacedFileReadersEndAlone(t *testing.T) {
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{NoSync: true})
	require.NoError(t, err)
	a := newApplier(t, b)
	a.one(putCmd(0, 0, "k", "old"))
	long, err := b.Freeze()
	require.NoError(t, err)
	shortTx, shortSt, err := b.begin()
	require.NoError(t, err)
	old := shortSt.file

	require.NoError(t, b.Restore(bytes.NewReader(largerSnapshot(t))))
	ended := make(chan error, 1)
	go func() { ended <- b.endRead(shortTx, shortSt.file) }()
	select {
	case err := <-ended:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("a short read of the replaced file did not end while a long one was open on it")
	}
	var snap bytes.Buffer
	require.NoError(t, long.WriteSnapshot(&snap), "the long read goes on, on the replaced file")
	require.NoError(t, long.Close())
	_, err = old.db.Begin(false)
	require.ErrorIs(t, err, bolterrors.ErrDatabaseNotOpen, "the replaced file is closed when its last reader ends")
	got, err := b.Get([]byte("k"))
	require.NoError(t, err)
	require.False(t, got.Found, "reads after the restore see the snapshot's state")
	require.NoError(t, b.Close())
}

// TestBoltSnapshotClosedTwice: a snapshot closed twice (the replica may)
// counts its file's reader out once, so the store still closes.
func TestBoltSnapshotClosedTwice(t *testing.T) {
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{NoSync: true})
	require.NoError(t, err)
	newApplier(t, b).one(putCmd(0, 0, "k", "v"))
	for _, restoreBetween := range []bool{false, true} {
		kept, err := b.Freeze() // open across the second's closes
		require.NoError(t, err)
		twice, err := b.Freeze()
		require.NoError(t, err)
		require.NoError(t, twice.Close())
		require.NoError(t, twice.Close())
		if restoreBetween {
			require.NoError(t, b.Restore(bytes.NewReader(largerSnapshot(t))))
		}
		require.NoError(t, kept.Close())
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the store did not close")
	}
}
