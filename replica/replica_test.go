package replica

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
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
	return openSingleWith(t, fs, func(c *Config) { c.SnapshotEvery = snapshotEvery })
}

// openSingleWith opens the node with a configuration tune changes.
func openSingleWith(t *testing.T, fs *disk.MemFS, tune func(*Config)) (*single, error) {
	s := &single{t: t, fs: fs, store: kvstore.NewMemory(kvstore.Options{}), done: map[uint64]Outcome{}}
	cfg := Config{
		Core: core.Config{ID: 1, Peers: []core.NodeID{1}, Seed: 1},
		FS:   fs, Dir: "/n", Store: s.store,
		Send: func([]core.Message) {},
		Done: func(id uint64, out Outcome) { s.done[id] = out },
	}
	tune(&cfg)
	rep, err := Open(cfg)
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

// writeKeys puts k1..kn through the node, one batch each way.
func (s *single) writeKeys(n int) {
	s.t.Helper()
	for i := 1; i <= n; i++ {
		require.NoError(s.t, s.rep.Propose(uint64(i), put(s.t, fmt.Sprintf("k%d", i), "v")))
		require.NoError(s.t, s.rep.Process())
		require.NoError(s.t, s.rep.Process())
	}
}

// requireKeys requires k1..kn in the node's store.
func (s *single) requireKeys(n int) {
	s.t.Helper()
	for i := 1; i <= n; i++ {
		g, err := s.store.Get([]byte(fmt.Sprintf("k%d", i)))
		require.NoError(s.t, err)
		require.True(s.t, g.Found, "k%d after restart", i)
	}
}

func TestWritesSurviveCrashAndSnapshotRestore(t *testing.T) {
	fs := disk.NewMemFS(rand.New(rand.NewPCG(1, 2)))
	s, err := openSingle(t, fs, 10)
	require.NoError(t, err)
	s.settle()
	require.Equal(t, core.Leader, s.rep.Node().Status().Role)
	s.writeKeys(35)
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
	s2.requireKeys(35)
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

// runBatch takes one batch through the WAL and state machine stages and
// Finish, and returns the snapshot Finish handed back, if any.
func (s *single) runBatch() *PendingSnapshot {
	s.t.Helper()
	b, ok := s.rep.Ready()
	require.True(s.t, ok)
	return s.finishBatch(b)
}

func (s *single) finishBatch(b *Batch) *PendingSnapshot {
	s.t.Helper()
	persisted, err := s.rep.RunWAL(nil, []WALJob{{Batch: b}})
	require.NoError(s.t, err)
	applied, err := s.rep.RunStore(nil, []StoreJob{{Batch: persisted[0]}})
	require.NoError(s.t, err)
	p, err := s.rep.Finish(applied[0])
	require.NoError(s.t, err)
	return p
}

// captureSnapshot proposes writes, with ids from *id on, until one
// captures a snapshot.
func (s *single) captureSnapshot(id *uint64) *PendingSnapshot {
	s.t.Helper()
	for {
		*id++
		require.NoError(s.t, s.rep.Propose(*id, put(s.t, "k", fmt.Sprint(*id))))
		if p := s.runBatch(); p != nil {
			return p
		}
		require.Less(s.t, *id, uint64(200), "no snapshot was captured")
	}
}

// compactBehind writes p's file and compacts the log and the WAL behind
// it, as the runtime's snapshot stage does.
func (s *single) compactBehind(p *PendingSnapshot) {
	s.t.Helper()
	_, err := s.rep.WriteSnapshot(p)
	require.NoError(s.t, err)
	job, err := s.rep.SnapshotWritten(p)
	require.NoError(s.t, err)
	_, err = s.rep.RunWAL(nil, []WALJob{job})
	require.NoError(s.t, err)
	s.rep.SnapshotDone()
}

// lead ticks the node until it leads, finishing the batches on the way,
// and returns a snapshot one of them captured, if any.
func (s *single) lead() *PendingSnapshot {
	s.t.Helper()
	var captured *PendingSnapshot
	for i := 0; s.rep.Node().Status().Role != core.Leader; i++ {
		require.Less(s.t, i, 200, "no leader")
		s.rep.Node().Tick()
		if b, ok := s.rep.Ready(); ok {
			if p := s.finishBatch(b); p != nil {
				captured = p
			}
		}
	}
	return captured
}

// storeSnapshot is the snapshot data of a store that applied puts of
// k1..kn with value.
func storeSnapshot(t *testing.T, n int, value string) []byte {
	st := kvstore.NewMemory(kvstore.Options{})
	var batch []kvstore.Entry
	for i := 1; i <= n; i++ {
		batch = append(batch, kvstore.Entry{Index: uint64(i), Data: put(t, fmt.Sprintf("k%d", i), value)})
	}
	_, err := st.Apply(batch)
	require.NoError(t, err)
	var data bytes.Buffer
	_, err = st.Snapshot(&data)
	require.NoError(t, err)
	return data.Bytes()
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
		pending = s.runBatch()
		if pending == nil {
			pending = s.runBatch()
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
				require.Nil(t, s.finishBatch(b), "a second snapshot while the first is unwritten")
			}
		}
	}
	require.Equal(t, at+20, s.store.AppliedIndex(), "applying went on")
	require.Less(t, s.rep.Node().Status().FirstIndex, at, "the log is not compacted before the file is written")

	s.compactBehind(pending)
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
		next = s.runBatch()
	}
	require.NotNil(t, next)
	s.rep.AbandonSnapshot()
	require.Greater(t, next.Index(), at)
}

// With a phase, a member takes its snapshots at the indexes that are the
// phase past a multiple of the interval, so members with different phases
// never take theirs together.
func TestSnapshotsAtTheirPhase(t *testing.T) {
	fs := disk.NewMemFS(rand.New(rand.NewPCG(1, 2)))
	s, err := openSingleWith(t, fs, func(c *Config) { c.SnapshotEvery, c.SnapshotPhase = 10, 4 })
	require.NoError(t, err)
	if p := s.lead(); p != nil {
		s.compactBehind(p)
	}
	var at []uint64
	for id := uint64(1); id <= 40; id++ {
		require.NoError(t, s.rep.Propose(id, put(t, "k", fmt.Sprint(id))))
		for {
			b, ok := s.rep.Ready()
			if !ok {
				break
			}
			if p := s.finishBatch(b); p != nil {
				at = append(at, p.Index())
				s.compactBehind(p)
			}
		}
	}
	// Index 4 is too soon after the start (less than half an interval).
	require.Equal(t, []uint64{14, 24, 34}, at)
}

// snapshotDue: every interval after the last snapshot without a phase;
// with one, at the next index at the phase at least half an interval on.
func TestSnapshotDue(t *testing.T) {
	for _, c := range []struct {
		applied, last, every, phase uint64
		due                         bool
	}{
		{applied: 99, last: 0, every: 100, due: false},
		{applied: 100, last: 0, every: 100, due: true},
		{applied: 150, last: 60, every: 100, due: false},
		{applied: 160, last: 60, every: 100, due: true},
		{applied: 500, last: 60, every: 0, due: false},
		{applied: 32, last: 0, every: 100, phase: 33, due: false},
		{applied: 33, last: 0, every: 100, phase: 33, due: false}, // under half an interval
		{applied: 133, last: 0, every: 100, phase: 33, due: true},
		{applied: 132, last: 33, every: 100, phase: 33, due: false},
		{applied: 133, last: 33, every: 100, phase: 33, due: true},
		{applied: 140, last: 33, every: 100, phase: 33, due: true}, // passed while a snapshot was written
		// A snapshot received from the leader at 120: 133 is too soon, 233 is next.
		{applied: 133, last: 120, every: 100, phase: 33, due: false},
		{applied: 232, last: 120, every: 100, phase: 33, due: false},
		{applied: 233, last: 120, every: 100, phase: 33, due: true},
		// A phase point passed more than half an interval after 60.
		{applied: 133, last: 60, every: 100, phase: 33, due: true},
		// A phase as large as the interval is no phase.
		{applied: 160, last: 60, every: 100, phase: 100, due: true},
	} {
		require.Equal(t, c.due, snapshotDue(c.applied, c.last, c.every, c.phase), "%+v", c)
	}
}

// Batches overlap: a second batch is taken while the first is still
// between the stages, both are persisted by one WAL run, and each is
// applied and finished in order; every answer names its entry.
func TestBatchesOverlapThroughTheStages(t *testing.T) {
	s, err := openSingle(t, disk.NewMemFS(rand.New(rand.NewPCG(1, 2))), 0)
	require.NoError(t, err)
	s.settle()
	require.NoError(t, s.rep.Propose(1, put(t, "a", "1")))
	b1, ok := s.rep.Ready()
	require.True(t, ok)
	require.NoError(t, s.rep.Propose(2, put(t, "b", "2")))
	b2, ok := s.rep.Ready()
	require.True(t, ok)
	require.Equal(t, 2, s.rep.Inflight())

	persisted, err := s.rep.RunWAL(nil, []WALJob{{Batch: b1}, {Batch: b2}})
	require.NoError(t, err)
	require.Equal(t, []*Batch{b1, b2}, persisted)
	applied, err := s.rep.RunStore(nil, []StoreJob{{Batch: b1}})
	require.NoError(t, err)
	_, err = s.rep.Finish(applied[0])
	require.NoError(t, err)
	require.Empty(t, s.done, "the entries are durable only now; nothing is committed before the leader counts them")

	// The leader counts its entries once their batches finish; the commit
	// comes in later batches.
	for s.rep.Inflight() > 0 || s.rep.Node().HasReady() {
		if s.rep.Inflight() > 0 {
			applied, err = s.rep.RunStore(nil, []StoreJob{{Batch: b2}})
			require.NoError(t, err)
			_, err = s.rep.Finish(applied[0])
			require.NoError(t, err)
			continue
		}
		require.NoError(t, s.rep.Process())
	}
	for id, key := range map[uint64]string{1: "a", 2: "b"} {
		out, ok := s.done[id]
		require.True(t, ok, "write %d answered", id)
		require.NoError(t, out.Err)
		require.LessOrEqual(t, out.Index, s.store.AppliedIndex())
		g, err := s.store.Get([]byte(key))
		require.NoError(t, err)
		require.True(t, g.Found)
	}
	require.Less(t, s.done[1].Index, s.done[2].Index)
}

// A stage handed a batch out of order, or one that skipped the stage
// before it, refuses it.
func TestStagesRefuseBatchesOutOfOrder(t *testing.T) {
	s, err := openSingle(t, disk.NewMemFS(rand.New(rand.NewPCG(1, 2))), 0)
	require.NoError(t, err)
	s.settle()
	require.NoError(t, s.rep.Propose(1, put(t, "a", "1")))
	b1, ok := s.rep.Ready()
	require.True(t, ok)
	require.NoError(t, s.rep.Propose(2, put(t, "b", "2")))
	b2, ok := s.rep.Ready()
	require.True(t, ok)

	_, err = s.rep.RunStore(nil, []StoreJob{{Batch: b1}})
	require.ErrorContains(t, err, "pipeline order broken", "applied before persisted")
	_, err = s.rep.Finish(b1)
	require.ErrorContains(t, err, "pipeline order broken", "finished before applied")
	_, err = s.rep.RunWAL(nil, []WALJob{{Batch: b2}})
	require.ErrorContains(t, err, "pipeline order broken", "persisted before the batch taken first")
}

// At most MaxInflight batches are between Ready and Finish.
func TestReadyStopsAtMaxInflight(t *testing.T) {
	s, err := openSingleWith(t, disk.NewMemFS(rand.New(rand.NewPCG(1, 2))), func(c *Config) { c.MaxInflight = 2 })
	require.NoError(t, err)
	rep := s.rep
	s.settle()
	var taken []*Batch
	for id := uint64(1); id <= 3; id++ {
		require.NoError(t, rep.Propose(id, put(t, "k", "v")))
		if b, ok := rep.Ready(); ok {
			taken = append(taken, b)
		}
	}
	require.Len(t, taken, 2)
	require.True(t, rep.Node().HasReady(), "work is waiting")
	_, ok := rep.Ready()
	require.False(t, ok, "a third batch while two are in flight")
	require.Nil(t, s.finishBatch(taken[0]))
	_, ok = rep.Ready()
	require.True(t, ok, "room again once one finished")
}

// snapFiles lists the snapshot directory.
func snapFiles(t *testing.T, fs *disk.MemFS) []string {
	t.Helper()
	names, err := fs.ReadDir("/n/snap")
	require.NoError(t, err)
	return names
}

// TestRefusedSnapshotsPruneNothing: snapshots the core refuses (from a
// stale term, or older than what the node has committed) are written apart
// and cost no file the log needs: after a crash the node still recovers
// from its own newest snapshot, and the refused ones are gone.
func TestRefusedSnapshotsPruneNothing(t *testing.T) {
	fs := disk.NewMemFS(rand.New(rand.NewPCG(7, 8)))
	s, err := openSingle(t, fs, 10)
	require.NoError(t, err)
	s.settle()
	s.writeKeys(35)
	ownSnaps := snapFiles(t, fs)
	require.Len(t, ownSnaps, 2, "the newest two of the node's own snapshots")
	fs.Crash() // a new election moves the term on, so that term 1 is stale
	s, err = openSingle(t, fs, 10)
	require.NoError(t, err)
	s.settle()
	term := s.rep.Node().HardState().Term
	require.Greater(t, term, uint64(1))

	refused := []core.Message{
		{Type: core.MsgSnap, From: 2, To: 1, Term: term - 1, Snapshot: &core.SnapshotMeta{Index: 40, Term: 1, Conf: core.ConfState{Voters: []core.NodeID{1, 2}}}},
		{Type: core.MsgSnap, From: 2, To: 1, Term: term - 1, Snapshot: &core.SnapshotMeta{Index: 50, Term: 1, Conf: core.ConfState{Voters: []core.NodeID{1, 2}}}},
		{Type: core.MsgSnap, From: 2, To: 1, Term: term + 1, Snapshot: &core.SnapshotMeta{Index: 5, Term: 1, Conf: core.ConfState{Voters: []core.NodeID{1, 2}}}},
	}
	for _, m := range refused {
		require.NoError(t, s.rep.ReceiveSnapshot(m, strings.NewReader("not a state the store could restore")))
		for s.rep.Node().HasReady() {
			b, ok := s.rep.Ready()
			require.True(t, ok)
			require.Nil(t, b.rd.Snapshot, "the core refused the snapshot at %d", m.Snapshot.Index)
			s.finishBatch(b)
		}
	}
	require.Subset(t, snapFiles(t, fs), ownSnaps, "a refused snapshot pruned a file in use")

	fs.Crash()
	s, err = openSingle(t, fs, 10)
	require.NoError(t, err, "recovery finds the snapshot the WAL needs")
	_, _, restored := s.rep.Recovery()
	require.Equal(t, uint64(30), restored)
	require.Equal(t, ownSnaps, snapFiles(t, fs), "the refused snapshots are dropped at start")
	s.settle() // replays the log after the snapshot
	s.requireKeys(35)
}

// TestAcceptedSnapshotSurvivesCrashBeforeInstall: the node crashes after
// the WAL recorded a received snapshot as installed but before the state
// machine stage put its file in use; recovery does that, and restores it.
func TestAcceptedSnapshotSurvivesCrashBeforeInstall(t *testing.T) {
	data := storeSnapshot(t, 50, "v")

	fs := disk.NewMemFS(rand.New(rand.NewPCG(9, 10)))
	open := func() *single {
		s := &single{t: t, fs: fs, store: kvstore.NewMemory(kvstore.Options{}), done: map[uint64]Outcome{}}
		rep, err := Open(Config{
			Core: core.Config{ID: 1, Peers: []core.NodeID{1, 2, 3}, Seed: 1},
			FS:   fs, Dir: "/n", Store: s.store,
			Send: func([]core.Message) {}, Done: func(uint64, Outcome) {},
		})
		require.NoError(t, err)
		s.rep = rep
		return s
	}
	s := open()
	m := core.Message{Type: core.MsgSnap, From: 2, To: 1, Term: 3,
		Snapshot: &core.SnapshotMeta{Index: 50, Term: 2, Conf: core.ConfState{Voters: []core.NodeID{1, 2, 3}}}}
	require.NoError(t, s.rep.ReceiveSnapshot(m, bytes.NewReader(data)))
	inUse, err := s.rep.snaps.List()
	require.NoError(t, err)
	require.Empty(t, inUse, "not in use before the core accepts it")
	b, ok := s.rep.Ready()
	require.True(t, ok)
	require.NotNil(t, b.rd.Snapshot, "the core accepted the snapshot")
	_, err = s.rep.RunWAL(nil, []WALJob{{Batch: b}})
	require.NoError(t, err)

	fs.Crash() // before RunStore installed it
	s = open()
	_, _, restored := s.rep.Recovery()
	require.Equal(t, uint64(50), restored)
	s.requireKeys(50)
}

// Nothing is compacted behind a snapshot whose file is not yet durable,
// whatever order a runtime calls the stages in.
func TestNoCompactionBeforeTheSnapshotFileIsDurable(t *testing.T) {
	s, err := openSingle(t, disk.NewMemFS(rand.New(rand.NewPCG(1, 2))), 5)
	require.NoError(t, err)
	s.settle()
	var pending *PendingSnapshot
	for id := uint64(1); pending == nil && id < 30; id++ {
		require.NoError(t, s.rep.Propose(id, put(t, "k", "v")))
		pending = s.runBatch()
	}
	require.NotNil(t, pending, "no snapshot was captured")
	_, err = s.rep.SnapshotWritten(pending)
	require.ErrorContains(t, err, "before its file is durable")
	_, err = s.rep.WriteSnapshot(pending)
	require.NoError(t, err)
	_, err = s.rep.SnapshotWritten(pending)
	require.NoError(t, err)
}

// A snapshot of the node's own, captured but not yet written, is overtaken
// by a newer one from a leader, installed meanwhile: compacting behind the
// older one afterwards has nothing left to compact and must not fail (it
// stopped a keyvald in kvchaos: "compact to 20244: outside the log (20702,
// 20702]"), and the node restarts from the leader's snapshot.
func TestOwnSnapshotOvertakenByTheLeaders(t *testing.T) {
	fs := disk.NewMemFS(rand.New(rand.NewPCG(3, 4)))
	s, err := openSingle(t, fs, 10)
	require.NoError(t, err)
	s.settle()
	id := uint64(0)
	pending := s.captureSnapshot(&id)

	term := s.rep.Node().HardState().Term
	m := core.Message{Type: core.MsgSnap, From: 2, To: 1, Term: term + 1,
		Snapshot: &core.SnapshotMeta{Index: 100, Term: term + 1, Conf: core.ConfState{Voters: []core.NodeID{1, 2}}}}
	require.NoError(t, s.rep.ReceiveSnapshot(m, bytes.NewReader(storeSnapshot(t, 100, "leader"))))
	installed := false
	for s.rep.Node().HasReady() {
		b, ok := s.rep.Ready()
		require.True(t, ok)
		installed = installed || b.rd.Snapshot != nil
		require.Nil(t, s.finishBatch(b))
	}
	require.True(t, installed, "the core accepted the leader's snapshot")

	_, err = s.rep.WriteSnapshot(pending)
	require.NoError(t, err)
	job, err := s.rep.SnapshotWritten(pending)
	require.NoError(t, err)
	_, err = s.rep.RunWAL(nil, []WALJob{job})
	require.NoError(t, err, "compacting behind the overtaken snapshot")
	s.rep.SnapshotDone()

	fs.Crash()
	s, err = openSingle(t, fs, 10)
	require.NoError(t, err)
	require.Equal(t, uint64(101), s.rep.Node().Status().FirstIndex, "the log starts after the leader's snapshot")
	g, err := s.store.Get([]byte("k100"))
	require.NoError(t, err)
	require.True(t, g.Found)
}

// A snapshot file written just before a crash, whose marker never reached
// the WAL, is not what the log starts from: it must not count among the
// files kept, or the next snapshot's pruning removes the one the WAL still
// needs, and a second crash before that one's marker is synced leaves the
// node unable to start ("needs the snapshot at 10: no valid snapshot").
// Found by the simulator with slow snapshot writes.
func TestSnapshotAheadOfItsMarkerDoesNotCountAmongTheKept(t *testing.T) {
	fs := disk.NewMemFS(rand.New(rand.NewPCG(5, 6)))
	s, err := openSingle(t, fs, 10)
	require.NoError(t, err)
	s.settle()
	id := uint64(0)
	first := s.captureSnapshot(&id) // written and compacted behind: the WAL's marker
	s.compactBehind(first)

	for range 2 { // each life writes a snapshot file and crashes before its marker
		p := s.lead() // after a restart, replaying the log may capture one
		if p == nil {
			p = s.captureSnapshot(&id)
		}
		_, err = s.rep.WriteSnapshot(p)
		require.NoError(t, err)
		// A few entries more, so that the next life's snapshot falls at
		// another index than this one's file.
		for range 3 {
			id++
			require.NoError(t, s.rep.Propose(id, put(t, "k", fmt.Sprint(id))))
			require.Nil(t, s.runBatch())
		}
		fs.Crash()
		s, err = openSingle(t, fs, 10)
		require.NoError(t, err, "the node starts from the snapshot its WAL's marker names")
		_, _, restored := s.rep.Recovery()
		require.Equal(t, first.Index(), restored)
	}
}

// CatchUpEntries bounds the log in memory, not the WAL: with no snapshot
// at all, a restart still finds every write in the log.
func TestCatchUpEntriesCutTheLogInMemoryOnly(t *testing.T) {
	fs := disk.NewMemFS(rand.New(rand.NewPCG(5, 6)))
	tune := func(c *Config) { c.CatchUpEntries = 8 }
	s, err := openSingleWith(t, fs, tune)
	require.NoError(t, err)
	s.settle()
	s.writeKeys(50)
	st := s.rep.Node().Status()
	require.Equal(t, st.LastIndex, st.Applied)
	held := st.LastIndex - st.FirstIndex + 1
	require.GreaterOrEqual(t, held, uint64(8))
	require.LessOrEqual(t, held, uint64(8+8/4), "the log in memory holds about CatchUpEntries entries")
	require.Empty(t, snapFiles(t, fs), "no snapshot was taken")

	fs.Crash()
	s2, err := openSingleWith(t, fs, tune)
	require.NoError(t, err)
	require.Equal(t, uint64(1), s2.rep.Node().Status().FirstIndex, "the WAL kept every entry")
	s2.settle()
	s2.requireKeys(50)
}
