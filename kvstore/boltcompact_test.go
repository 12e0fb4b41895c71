package kvstore

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"pgregory.net/rapid"
)

// finishCompaction prunes what s's compactions doomed, if s prunes
// after the command (the Bolt store), before a test reads every version.
func finishCompaction(t require.TestingT, s Store) {
	if b, ok := s.(*Bolt); ok {
		require.NoError(t, b.FinishCompaction(context.Background()))
	}
}

// historyEntries counts the versions b's history holds, pruned or not.
func historyEntries(t *testing.T, b *Bolt) int {
	t.Helper()
	n := 0
	require.NoError(t, b.view(func(st *boltState) error {
		n = st.revs.Stats().KeyN
		return nil
	}))
	return n
}

// TestBoltCompactionAnswersBeforePruning: the Compact command moves the
// compacted revision and deletes nothing; what it dooms is deleted after
// it, and FinishCompaction (etcd's physical compaction) waits for that.
func TestBoltCompactionAnswersBeforePruning(t *testing.T) {
	was := backgroundPruning
	t.Cleanup(func() { backgroundPruning = was })
	backgroundPruning = false
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{})
	require.NoError(t, err)
	defer b.Close()
	a := newApplier(t, b)
	for i := range 100 {
		a.one(etcdPut(t, "k", fmt.Sprint(i)))
	}
	require.Equal(t, StatusOK, a.one(EncodeCompact(100, "")).Status)
	require.EqualValues(t, 100, b.CompactedRevision())
	require.Equal(t, 100, historyEntries(t, b), "the command deleted nothing")
	_, err = b.EtcdRange(&pb.RangeRequest{Key: []byte("k"), Revision: 99}, 0)
	var re *RangeError
	require.ErrorAs(t, err, &re, "a read below the compacted revision is refused at once")
	require.Equal(t, StatusCompacted, re.Status)
	require.Equal(t, "99", string(get(t, b, "k", 0).Kvs[0].Value))
	require.NoError(t, b.FinishCompaction(context.Background()))
	require.Equal(t, 1, historyEntries(t, b), "the newest version is left")
}

// TestBoltPrunesInBackground: the store's goroutine prunes without being
// asked, and a restart resumes a pruning it interrupted.
func TestBoltPrunesInBackground(t *testing.T) {
	was, wasChunk := backgroundPruning, pruneChunk
	t.Cleanup(func() { backgroundPruning, pruneChunk = was, wasChunk })
	path := filepath.Join(t.TempDir(), "kv.db")
	backgroundPruning, pruneChunk = false, 10
	b, err := OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	a := newApplier(t, b)
	for i := range 200 {
		a.one(etcdPut(t, fmt.Sprint(i%20), "v"))
	}
	a.one(EncodeCompact(200, ""))
	more, err := b.pruneStep(pruneChunk)
	require.NoError(t, err)
	require.True(t, more)
	require.Equal(t, 190, historyEntries(t, b), "one chunk pruned before the restart")
	require.NoError(t, b.Close())

	backgroundPruning = true
	b, err = OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	defer b.Close()
	deadline := time.Now().Add(10 * time.Second)
	for historyEntries(t, b) > 20 {
		require.True(t, time.Now().Before(deadline), "pruning did not finish: %d entries left", historyEntries(t, b))
		time.Sleep(time.Millisecond)
	}
	require.Equal(t, 20, historyEntries(t, b), "each key's newest version is left")
	// And a compaction applied now is pruned without a restart.
	a = newApplier(t, b)
	for i := range 40 {
		a.one(etcdPut(t, fmt.Sprint(i%20), "w"))
	}
	a.one(EncodeCompact(b.Revision(), ""))
	for historyEntries(t, b) > 20 {
		require.True(t, time.Now().Before(deadline), "pruning did not finish: %d entries left", historyEntries(t, b))
		time.Sleep(time.Millisecond)
	}
}

// TestBoltPruningInterleaved: the Bolt store prunes a compaction's doomed
// versions after the command, a chunk at a time, between later batches
// (boltcompact.go); the memory store prunes inside the command. Driven
// side by side through writes, compactions (one asked for while another
// is still pruning included), pruning steps, reopens, defragmentations
// and reads, the two
// answer every read alike — ranges at every revision from the compacted
// one on, the events since it with their previous versions, a refusal
// below it — and give the same HashKV, which finishes the pruning, and
// then the same snapshot. A snapshot taken while pruning goes on, restored,
// is pruned by the store it is restored into.
func TestBoltPruningInterleaved(t *testing.T) {
	wasChunk, wasBackground := pruneChunk, backgroundPruning
	t.Cleanup(func() { pruneChunk, backgroundPruning = wasChunk, wasBackground })
	backgroundPruning = false
	rapid.Check(t, func(rt *rapid.T) {
		pruneChunk = rapid.IntRange(1, 4).Draw(rt, "chunk")
		path := filepath.Join(t.TempDir(), "kv.db")
		opts := Options{NoSync: rapid.Bool().Draw(rt, "nosync")}
		b, err := OpenBolt(path, opts)
		require.NoError(rt, err)
		defer func() { _ = b.Close() }()
		m := NewMemory(Options{})
		next := uint64(1)
		apply := func(cmd []byte) {
			entries := []Entry{{Index: next, Data: cmd}}
			next++
			want, err := m.Apply(entries)
			require.NoError(rt, err)
			got, err := b.Apply(entries)
			require.NoError(rt, err)
			require.Equal(rt, want, got)
		}
		keys := []string{"a", "b", "c", "d"}
		write := func() {
			k := rapid.SampledFrom(keys).Draw(rt, "key")
			if rapid.IntRange(0, 2).Draw(rt, "op") == 0 {
				apply(txnCmd(rt, &pb.TxnRequest{Success: []*pb.RequestOp{delOp(k, "")}}))
			} else {
				apply(etcdPut(rt, k, rapid.StringMatching(`[a-z]{0,2}`).Draw(rt, "value")))
			}
		}
		for range rapid.IntRange(1, 20).Draw(rt, "writes") {
			write()
		}
		reads := func(s Store) string {
			var out []string
			for at := max(s.CompactedRevision(), 1); at <= s.Revision(); at++ {
				resp, err := s.EtcdRange(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: int64(at)}, 0)
				require.NoError(rt, err)
				out = append(out, fmt.Sprint(at, resp.Kvs, resp.Count))
			}
			evs, _, err := s.Events([]byte{0}, []byte{0}, s.CompactedRevision(), s.Revision(), true, 0)
			require.NoError(rt, err)
			for _, ev := range evs {
				out = append(out, fmt.Sprintf("%+v", *ev))
			}
			if c := s.CompactedRevision(); c > 1 {
				_, err := s.EtcdRange(&pb.RangeRequest{Key: []byte("a"), Revision: int64(c - 1)}, 0)
				var re *RangeError
				require.ErrorAs(rt, err, &re)
				out = append(out, re.Msg)
			}
			return strings.Join(out, "\n")
		}
		snapshot := func(s Store) []byte {
			var buf bytes.Buffer
			_, err := s.Snapshot(&buf)
			require.NoError(rt, err)
			return buf.Bytes()
		}
		for range rapid.IntRange(1, 30).Draw(rt, "actions") {
			switch rapid.IntRange(0, 7).Draw(rt, "action") {
			case 0, 1:
				write()
			case 2:
				if c, r := m.CompactedRevision(), m.Revision(); c < r {
					apply(EncodeCompact(rapid.Uint64Range(c+1, r).Draw(rt, "compact at"), ""))
				}
			case 3:
				_, err := b.pruneStep(pruneChunk)
				require.NoError(rt, err)
			case 4:
				require.Equal(rt, reads(m), reads(b))
			case 5:
				require.NoError(rt, b.Close())
				b, err = OpenBolt(path, opts)
				require.NoError(rt, err)
			case 6:
				// A snapshot taken while pruning goes on holds what is left
				// to prune; the store it is restored into prunes it.
				r, err := OpenBolt(filepath.Join(t.TempDir(), "restored.db"), Options{})
				require.NoError(rt, err)
				require.NoError(rt, r.Restore(bytes.NewReader(snapshot(b))))
				require.Equal(rt, reads(m), reads(r))
				require.NoError(rt, r.FinishCompaction(context.Background()))
				require.Equal(rt, snapshot(m), snapshot(r), "restored and pruned")
				require.NoError(rt, r.Close())
			case 7:
				require.NoError(rt, b.Defragment())
				require.False(rt, b.Pruning(), "a defragmented file holds only what the state needs")
			}
		}
		require.Equal(rt, reads(m), reads(b))
		wantHash, err := m.HashKV(0)
		require.NoError(rt, err)
		gotHash, err := b.HashKV(0)
		require.NoError(rt, err)
		require.Equal(rt, wantHash, gotHash)
		require.False(rt, b.Pruning(), "HashKV finishes the pruning")
		require.Equal(rt, snapshot(m), snapshot(b))
	})
}

// TestBoltPairingSeesPruning: a chunk of pruning leaves the applied index
// and the revisions as they were, so a reader that loaded the key index
// before the chunk's commit and began its transaction after it must tell
// them apart by the pruning marker: the older index holds a tombstone
// whose version the chunk deleted.
func TestBoltPairingSeesPruning(t *testing.T) {
	was, wasChunk := backgroundPruning, pruneChunk
	t.Cleanup(func() { backgroundPruning, pruneChunk = was, wasChunk })
	backgroundPruning, pruneChunk = false, 1
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{})
	require.NoError(t, err)
	defer b.Close()
	a := newApplier(t, b)
	a.one(etcdPut(t, "gone", "x"))
	a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{delOp("gone", "")}}))
	a.one(etcdPut(t, "k", "v"))
	a.one(EncodeCompact(3, ""))
	for {
		before := b.index.Load()
		more, err := b.pruneStep(pruneChunk)
		require.NoError(t, err)
		after := b.index.Load()
		require.Equal(t, [3]uint64{before.applied, before.rev, before.compacted}, [3]uint64{after.applied, after.rev, after.compacted})
		b.index.Store(before) // as loaded by a reader before the commit
		tx, st, err := b.pair(b.file.Load())
		if err == nil {
			_ = b.endRead(tx, st.file)
		}
		require.ErrorIs(t, err, errNotPaired)
		b.index.Store(after)
		if !more {
			break
		}
	}
	_, found := b.index.Load().tree.Get(&indexEntry{key: "gone"})
	require.False(t, found, "the tombstone was pruned")
}

// TestBoltCompactionDuringPruning: a compaction applied while a pass of
// pruning is under way leaves the pass going on for its own revision,
// from where it was, and the next pass prunes for the new one: starting
// again from the beginning at every compaction would never finish a pass
// longer than the time between compactions.
func TestBoltCompactionDuringPruning(t *testing.T) {
	was, wasChunk := backgroundPruning, pruneChunk
	t.Cleanup(func() { backgroundPruning, pruneChunk = was, wasChunk })
	backgroundPruning, pruneChunk = false, 4
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{})
	require.NoError(t, err)
	defer b.Close()
	a := newApplier(t, b)
	for i := range 60 {
		a.one(etcdPut(t, fmt.Sprint(i%10), fmt.Sprint(i))) // revisions 1-60, six versions of ten keys
	}
	mark := func() (rev uint64, from string) {
		require.NoError(t, b.view(func(st *boltState) error {
			require.True(t, st.pruning())
			rev, from = st.pruneRev, string(st.pruneFrom)
			return nil
		}))
		return rev, from
	}
	step := func() bool {
		more, err := b.pruneStep(pruneChunk)
		require.NoError(t, err)
		return more
	}
	a.one(EncodeCompact(30, ""))
	require.True(t, step())
	rev, from := mark()
	require.EqualValues(t, 30, rev)
	a.one(EncodeCompact(50, ""))
	gotRev, gotFrom := mark()
	require.Equal(t, [2]any{rev, from}, [2]any{gotRev, gotFrom}, "the pass goes on for its revision, from where it was")
	for {
		require.True(t, step())
		if rev, _ := mark(); rev == 50 {
			break
		}
	}
	for step() {
	}
	require.Equal(t, 10+10, historyEntries(t, b), "each key's newest version at or below 50, and the ones after it")
}

// TestBoltHashKVPrunesFirst: HashKV hashes every version, so it prunes
// what is left first, and gives up, rather than hash a history whose
// pruning is not done, once its time is out.
func TestBoltHashKVPrunesFirst(t *testing.T) {
	was, wasTimeout := backgroundPruning, hashPruneTimeout
	t.Cleanup(func() { backgroundPruning, hashPruneTimeout = was, wasTimeout })
	backgroundPruning = false
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{})
	require.NoError(t, err)
	defer b.Close()
	m := NewMemory(Options{})
	for _, s := range []Store{b, m} {
		a := newApplier(t, s)
		for j := range 20 {
			a.one(etcdPut(t, fmt.Sprint(j%3), fmt.Sprint(j)))
		}
		a.one(EncodeCompact(15, ""))
	}
	require.True(t, b.Pruning())
	hashPruneTimeout = 0
	_, err = b.HashKV(0)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, b.Pruning(), "nothing hashed, nothing pruned")
	hashPruneTimeout = wasTimeout
	got, err := b.HashKV(0)
	require.NoError(t, err)
	want, err := m.HashKV(0)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.False(t, b.Pruning())
}
