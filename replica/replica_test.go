package replica

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// single is a one-node replica on an in-memory disk, driven by hand.
type single struct {
	t     *testing.T
	fs    *disk.MemFS
	store *kvstore.Memory
	rep   *Replica
	done  map[uint64]Outcome
}

func openSingle(t *testing.T, fs *disk.MemFS, snapshotEvery uint64) (*single, error) {
	s := &single{t: t, fs: fs, store: kvstore.NewMemory(kvstore.Options{}), done: map[uint64]Outcome{}}
	rep, err := Open(Config{
		Core: core.Config{ID: 1, Peers: []core.NodeID{1}, Seed: 1},
		FS:   fs, Dir: "/n", Store: s.store, SnapshotEvery: snapshotEvery,
		Send: func([]core.Message) {},
		Done: func(id uint64, out Outcome) { s.done[id] = out },
	})
	s.rep = rep
	return s, err
}

func (s *single) settle() {
	for i := 0; i < 100; i++ {
		s.rep.Node().Tick()
		require.NoError(s.t, s.rep.Process())
	}
}

func put(t *testing.T, key, value string) []byte {
	b, err := proto.Marshal(&kvpb.Command{Op: &kvpb.Command_Put{Put: &kvpb.Put{Key: []byte(key), Value: []byte(value)}}})
	require.NoError(t, err)
	return b
}

func TestWritesSurviveCrashAndSnapshotRestore(t *testing.T) {
	fs := disk.NewMemFS(rand.New(rand.NewPCG(1, 2)))
	s, err := openSingle(t, fs, 10)
	require.NoError(t, err)
	s.settle()
	require.Equal(t, core.Leader, s.rep.Node().Status().Role)
	for i := 1; i <= 35; i++ {
		require.NoError(t, s.rep.Propose(uint64(i), put(t, fmt.Sprintf("k%d", i), "v")))
		require.NoError(t, s.rep.Process())
		require.NoError(t, s.rep.Process())
	}
	for i := 1; i <= 35; i++ {
		out, ok := s.done[uint64(i)]
		require.True(t, ok, "write %d answered", i)
		require.NoError(t, out.Err)
		require.True(t, out.Result.Succeeded())
	}
	require.Greater(t, s.rep.Node().Status().FirstIndex, uint64(10), "the log was compacted behind a snapshot")

	fs.Crash() // the in-memory store is gone too
	s2, err := openSingle(t, fs, 10)
	require.NoError(t, err)
	_, _, restored := s2.rep.Recovery()
	require.Greater(t, restored, uint64(0), "the state machine was restored from a snapshot")
	s2.settle()
	for i := 1; i <= 35; i++ {
		g, err := s2.store.Get([]byte(fmt.Sprintf("k%d", i)))
		require.NoError(t, err)
		require.True(t, g.Found, "k%d after restart", i)
	}
}

func TestCorruptWALRefusesToStart(t *testing.T) {
	fs := disk.NewMemFS(rand.New(rand.NewPCG(3, 4)))
	s, err := openSingle(t, fs, 0)
	require.NoError(t, err)
	s.settle()
	for i := 1; i <= 5; i++ {
		require.NoError(t, s.rep.Propose(uint64(i), put(t, "k", fmt.Sprint(i))))
		require.NoError(t, s.rep.Process())
	}
	require.NoError(t, s.rep.Close())
	names, err := fs.ReadDir("/n/wal")
	require.NoError(t, err)
	require.NotEmpty(t, names)
	// Rot a bit in the middle of the first segment.
	require.NoError(t, fs.FlipBit("/n/wal/"+names[0], 200, 3))
	_, err = openSingle(t, fs, 0)
	var ce *disk.CorruptionError
	require.True(t, errors.As(err, &ce), "want a corruption error naming the file, got %v", err)
	require.Contains(t, err.Error(), names[0])
}

func TestFollowerRefusesProposalsNamingNoLeader(t *testing.T) {
	fs := disk.NewMemFS(rand.New(rand.NewPCG(5, 6)))
	s := &single{t: t, fs: fs, store: kvstore.NewMemory(kvstore.Options{}), done: map[uint64]Outcome{}}
	rep, err := Open(Config{
		Core: core.Config{ID: 1, Peers: []core.NodeID{1, 2, 3}, Seed: 1},
		FS:   fs, Dir: "/n", Store: s.store,
		Send: func([]core.Message) {}, Done: func(uint64, Outcome) {},
	})
	require.NoError(t, err)
	var nl *core.ErrNotLeader
	require.ErrorAs(t, rep.Propose(1, put(t, "k", "v")), &nl)
	require.ErrorAs(t, rep.Read(2), &nl)
	require.Error(t, rep.Step(core.Message{Type: core.MsgSnap}), "a MsgSnap must come with its data")
}

// runBatch takes one batch through Persist, Apply and Finish, as the
// server's stages do, and returns it.
func (s *single) runBatch() *Batch {
	s.t.Helper()
	b, ok := s.rep.Ready()
	require.True(s.t, ok)
	require.NoError(s.t, s.rep.Persist(b))
	require.NoError(s.t, s.rep.Apply(b))
	require.NoError(s.t, s.rep.Finish(b))
	return b
}

// Apply only captures the state for a snapshot; batches go on
// being applied while the snapshot waits to be written, one snapshot is in
// flight at a time, and the file written holds the state at its index.
func TestBackgroundSnapshotHoldsTheStateAtItsIndex(t *testing.T) {
	fs := disk.NewMemFS(rand.New(rand.NewPCG(1, 2)))
	s, err := openSingle(t, fs, 10)
	require.NoError(t, err)
	s.settle()
	require.Equal(t, core.Leader, s.rep.Node().Status().Role)

	var pending *PendingSnapshot
	id := uint64(0)
	for pending == nil {
		id++
		require.NoError(t, s.rep.Propose(id, put(t, "k", fmt.Sprintf("v%d", id))))
		pending = s.runBatch().TakePendingSnapshot()
		if pending == nil {
			pending = s.runBatch().TakePendingSnapshot()
		}
		require.Less(t, id, uint64(30), "no snapshot was captured")
	}
	at := pending.Index()
	g, err := s.store.Get([]byte("k"))
	require.NoError(t, err)
	valueAtSnapshot := string(g.Value)

	// Twenty more writes, more than the interval: applied at once, and no
	// second snapshot is captured while the first is unwritten.
	for range 20 {
		id++
		require.NoError(t, s.rep.Propose(id, put(t, "k", fmt.Sprintf("v%d", id))))
		for range 2 {
			if b, ok := s.rep.Ready(); ok {
				require.NoError(t, s.rep.Persist(b))
				require.NoError(t, s.rep.Apply(b))
				require.NoError(t, s.rep.Finish(b))
				require.Nil(t, b.TakePendingSnapshot(), "a second snapshot while the first is unwritten")
			}
		}
	}
	require.Equal(t, at+20, s.store.AppliedIndex(), "applying went on")
	require.Less(t, s.rep.Node().Status().FirstIndex, at, "the log is not compacted before the file is written")

	_, err = s.rep.WriteSnapshot(pending)
	require.NoError(t, err)
	require.NoError(t, s.rep.SnapshotWritten(pending))
	require.NoError(t, s.rep.CompactTo(pending))
	s.rep.SnapshotDone()
	require.Equal(t, at+1, s.rep.Node().Status().FirstIndex, "the log is compacted behind the written snapshot")

	snap, err := s.rep.OpenSnapshot(at)
	require.NoError(t, err)
	restored := kvstore.NewMemory(kvstore.Options{})
	require.NoError(t, restored.Restore(snap))
	require.NoError(t, snap.Close())
	g, err = restored.Get([]byte("k"))
	require.NoError(t, err)
	require.Equal(t, valueAtSnapshot, string(g.Value), "the file holds the state at its own index")
	require.Equal(t, at, restored.AppliedIndex())

	// The next due snapshot is captured again once this one is written.
	var next *PendingSnapshot
	for i := 0; next == nil && i < 30; i++ {
		id++
		require.NoError(t, s.rep.Propose(id, put(t, "k", fmt.Sprintf("v%d", id))))
		next = s.runBatch().TakePendingSnapshot()
	}
	require.NotNil(t, next)
	s.rep.AbandonSnapshot()
	require.Greater(t, next.Index(), at)
}
