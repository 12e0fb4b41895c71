package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// implementations runs fn once per Store implementation, on a fresh store.
func implementations(t *testing.T, opts Options, fn func(t *testing.T, s Store)) {
	t.Run("memory", func(t *testing.T) {
		s := NewMemory(opts)
		defer s.Close()
		fn(t, s)
	})
	t.Run("bolt", func(t *testing.T) {
		s, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), opts)
		require.NoError(t, err)
		defer s.Close()
		fn(t, s)
	})
}

// applier feeds entries one index after another.
type applier struct {
	t    *testing.T
	s    Store
	next uint64
}

func newApplier(t *testing.T, s Store) *applier {
	return &applier{t: t, s: s, next: s.AppliedIndex() + 1}
}

func (a *applier) apply(data ...[]byte) []Result {
	a.t.Helper()
	entries := make([]Entry, len(data))
	for i, d := range data {
		entries[i] = Entry{Index: a.next, Data: d}
		a.next++
	}
	res, err := a.s.Apply(entries)
	require.NoError(a.t, err)
	require.Len(a.t, res, len(entries))
	return res
}

func (a *applier) one(data []byte) Result {
	a.t.Helper()
	return a.apply(data)[0]
}

func TestPutGetVersions(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		r := a.one(putCmd(0, 0, "k", "v1"))
		require.Equal(t, Result{Index: 1, Status: StatusOK, Revision: 1, Exists: true, Version: 1}, r)
		require.True(t, r.Succeeded())
		r = a.one(putCmd(0, 0, "other", "x"))
		require.Equal(t, uint64(2), r.Version)
		r = a.one(putCmd(0, 0, "k", "v2"))
		require.Equal(t, Result{Index: 3, Status: StatusOK, Revision: 3, Existed: true, Exists: true, Version: 3}, r)

		got, err := s.Get([]byte("k"))
		require.NoError(t, err)
		require.Equal(t, GetResult{Value: []byte("v2"), Version: 3, Found: true, Revision: 3}, got)
		got, err = s.Get([]byte("missing"))
		require.NoError(t, err)
		require.Equal(t, GetResult{Revision: 3}, got)
		require.Equal(t, uint64(3), s.Revision())
		require.Equal(t, uint64(3), s.AppliedIndex())

		// An empty value is a value: the key exists.
		r = a.one(putCmd(0, 0, "empty", ""))
		require.Equal(t, StatusOK, r.Status)
		got, err = s.Get([]byte("empty"))
		require.NoError(t, err)
		require.True(t, got.Found)
		require.Empty(t, got.Value)
	})
}

func TestDelete(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		a.one(putCmd(0, 0, "k", "v"))
		// Deleting an absent key succeeds and changes nothing.
		r := a.one(delCmd(0, 0, "absent"))
		require.Equal(t, Result{Index: 2, Status: StatusOK, Revision: 1}, r)
		r = a.one(delCmd(0, 0, "k"))
		require.Equal(t, Result{Index: 3, Status: StatusOK, Revision: 2, Existed: true}, r)
		got, err := s.Get([]byte("k"))
		require.NoError(t, err)
		require.False(t, got.Found)
		// Re-creating gets a fresh, higher version.
		r = a.one(putCmd(0, 0, "k", "v"))
		require.Equal(t, uint64(3), r.Version)
		require.False(t, r.Existed)
	})
}

func TestCompareAndSwap(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		// Expected version 0: create only if absent.
		r := a.one(casCmd(0, 0, "k", 0, "a"))
		require.Equal(t, Result{Index: 1, Status: StatusOK, Revision: 1, Exists: true, Version: 1}, r)
		r = a.one(casCmd(0, 0, "k", 0, "b"))
		require.Equal(t, Result{Index: 2, Status: StatusCASFailed, Revision: 1, Existed: true, Exists: true, Version: 1, CurrentValue: []byte("a")}, r)
		require.False(t, r.Succeeded())
		// Matching version swaps.
		r = a.one(casCmd(0, 0, "k", 1, "b"))
		require.Equal(t, Result{Index: 3, Status: StatusOK, Revision: 2, Existed: true, Exists: true, Version: 2}, r)
		// ABA: the value returns to "a" but the version does not.
		a.one(putCmd(0, 0, "k", "a"))
		r = a.one(casCmd(0, 0, "k", 1, "c"))
		require.Equal(t, StatusCASFailed, r.Status)
		require.Equal(t, uint64(3), r.Version)
		require.Equal(t, []byte("a"), r.CurrentValue)
		// A non-zero expectation on an absent key fails with version 0.
		r = a.one(casCmd(0, 0, "nokey", 7, "x"))
		require.Equal(t, Result{Index: 6, Status: StatusCASFailed, Revision: 3}, r)
		// A failed CAS on a key holding an empty value reports nil.
		a.one(putCmd(0, 0, "e", ""))
		r = a.one(casCmd(0, 0, "e", 1, "x"))
		require.Equal(t, StatusCASFailed, r.Status)
		require.True(t, r.Exists)
		require.Nil(t, r.CurrentValue)
	})
}

func TestInvalidCommands(t *testing.T) {
	longKey := strings.Repeat("k", MaxKeySize+1)
	cases := []struct {
		name string
		data []byte
		err  string
	}{
		{"empty key put", putCmd(0, 0, "", "v"), errEmptyKey},
		{"empty key delete", delCmd(0, 0, ""), errEmptyKey},
		{"empty key cas", casCmd(0, 0, "", 0, "v"), errEmptyKey},
		{"key too long", putCmd(0, 0, longKey, "v"), fmt.Sprintf(errKeyTooLong, MaxKeySize+1, MaxKeySize)},
		{"no operation", encode(&kvpb.Command{Seq: 3}), errNoOp},
		{"seq zero with client", putCmd(5, 0, "k", "v"), errSeqZero},
		{"register with client id", encode(&kvpb.Command{ClientId: 2, Op: &kvpb.Command_Register{Register: &kvpb.Register{}}}), errRegisterIDs},
	}
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		for _, c := range cases {
			r := a.one(c.data)
			require.Equal(t, StatusInvalid, r.Status, c.name)
			require.Equal(t, c.err, r.Err, c.name)
			require.Equal(t, uint64(0), r.Revision, c.name)
		}
		require.Equal(t, uint64(len(cases)), s.AppliedIndex())
		require.Equal(t, uint64(0), s.Revision())
		// A key at the limit is fine.
		require.Equal(t, StatusOK, a.one(putCmd(0, 0, longKey[1:], "v")).Status)
	})
}

func TestValueTooLong(t *testing.T) {
	// One implementation is enough: the check is in the shared apply
	// code, and the bolt file would grow by the value.
	s := NewMemory(Options{})
	a := newApplier(t, s)
	big := string(make([]byte, MaxValueSize+1))
	r := a.one(putCmd(0, 0, "k", big))
	require.Equal(t, StatusInvalid, r.Status)
	require.Equal(t, fmt.Sprintf(errValueTooLong, MaxValueSize+1, MaxValueSize), r.Err)
}

func TestMalformedAndNoop(t *testing.T) {
	garbage := [][]byte{
		{0xff},                   // an invalid tag
		{0x0a},                   // field 1 length-delimited with no length
		{0x1a, 0x05, 0x0a},       // a put message cut short
		{0x08, 0x80, 0x80, 0x80}, // an unterminated varint
	}
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		for _, g := range garbage {
			r := a.one(g)
			require.Equal(t, Result{Index: r.Index, Status: StatusMalformed, Err: errMalformed}, r)
		}
		a.one(putCmd(0, 0, "k", "v"))
		r := a.one(nil)
		require.Equal(t, Result{Index: 6, Status: StatusNoop, Revision: 1}, r)
		r = a.one([]byte{})
		require.Equal(t, StatusNoop, r.Status)
		require.Equal(t, uint64(7), s.AppliedIndex())
		require.Equal(t, uint64(1), s.Revision())
	})
}

func TestExactlyOnce(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		reg := a.one(registerCmd())
		require.Equal(t, Result{Index: 1, Status: StatusOK, ClientID: 1}, reg)
		id := reg.ClientID

		first := a.one(putCmd(id, 1, "k", "v1"))
		require.Equal(t, uint64(1), first.Revision)
		// The same seq again: not applied, the remembered result.
		dup := a.one(putCmd(id, 1, "k", "v1"))
		want := first
		want.Index, want.Duplicate = 3, true
		require.Equal(t, want, dup)
		require.Equal(t, uint64(1), s.Revision())

		a.one(putCmd(id, 2, "k", "v2"))
		// An older seq: a stale duplicate, not applied.
		stale := a.one(putCmd(id, 1, "k", "v1"))
		require.Equal(t, StatusStaleDuplicate, stale.Status)
		require.Equal(t, fmt.Sprintf(errStale, 1, id, 2), stale.Err)
		got, err := s.Get([]byte("k"))
		require.NoError(t, err)
		require.Equal(t, "v2", string(got.Value))

		// Failed CAS results are remembered with the value they saw.
		failed := a.one(casCmd(id, 3, "k", 99, "x"))
		require.Equal(t, StatusCASFailed, failed.Status)
		a.one(putCmd(0, 0, "k", "changed"))
		again := a.one(casCmd(id, 3, "k", 99, "x"))
		require.True(t, again.Duplicate)
		require.Equal(t, []byte("v2"), again.CurrentValue)

		// So are invalid commands.
		bad := a.one(putCmd(id, 4, "", "x"))
		require.Equal(t, StatusInvalid, bad.Status)
		bad2 := a.one(putCmd(id, 4, "", "x"))
		require.True(t, bad2.Duplicate)
		require.Equal(t, errEmptyKey, bad2.Err)

		// Gaps in seq are allowed.
		require.Equal(t, StatusOK, a.one(putCmd(id, 10, "k", "v10")).Status)

		// An id that was never registered.
		r := a.one(putCmd(12345, 1, "k", "x"))
		require.Equal(t, StatusSessionExpired, r.Status)
		require.Equal(t, fmt.Sprintf(errNoSession, 12345), r.Err)

		// Without a client id there is no deduplication.
		a.one(putCmd(0, 0, "n", "1"))
		r = a.one(putCmd(0, 0, "n", "1"))
		require.Equal(t, StatusOK, r.Status)
		require.False(t, r.Duplicate)
		require.True(t, r.Existed)
	})
}

func TestSessionEviction(t *testing.T) {
	implementations(t, Options{MaxClients: 2}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		c1 := a.one(registerCmd()).ClientID // index 1
		c2 := a.one(registerCmd()).ClientID // index 2
		// c1 is used again, so c2 is now the least recently used.
		a.one(putCmd(c1, 1, "k", "v"))
		c3 := a.one(registerCmd()).ClientID // evicts c2
		r := a.one(putCmd(c2, 1, "k", "x"))
		require.Equal(t, StatusSessionExpired, r.Status, "c2 should have been evicted")
		// A retry that is not applied still refreshes its session: c1's
		// duplicate keeps it alive, so registering evicts c3.
		a.one(putCmd(c1, 1, "k", "v"))
		a.one(registerCmd())
		require.Equal(t, StatusSessionExpired, a.one(putCmd(c3, 1, "k", "x")).Status)
		require.Equal(t, StatusOK, a.one(putCmd(c1, 2, "k", "v2")).Status)
	})
}

func TestApplyIndexRules(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		_, err := s.Apply([]Entry{{Index: 2, Data: putCmd(0, 0, "k", "v")}})
		require.ErrorIs(t, err, ErrNotContiguous, "first index must be 1")
		_, err = s.Apply([]Entry{{Index: 0}})
		require.ErrorIs(t, err, ErrNotContiguous)
		_, err = s.Apply([]Entry{{Index: 1, Data: putCmd(0, 0, "k", "v")}, {Index: 3}})
		require.ErrorIs(t, err, ErrNotContiguous, "hole inside the batch")
		require.Equal(t, uint64(0), s.AppliedIndex(), "a refused batch applies nothing")
		got, err := s.Get([]byte("k"))
		require.NoError(t, err)
		require.False(t, got.Found)

		res, err := s.Apply(nil)
		require.NoError(t, err)
		require.Empty(t, res)

		a := newApplier(t, s)
		a.apply(putCmd(0, 0, "a", "1"), putCmd(0, 0, "b", "2"), putCmd(0, 0, "c", "3"))
		// Replaying applied entries with new ones after them.
		res, err = s.Apply([]Entry{{Index: 2, Data: putCmd(0, 0, "b", "2")}, {Index: 3, Data: putCmd(0, 0, "c", "3")}, {Index: 4, Data: putCmd(0, 0, "d", "4")}})
		require.NoError(t, err)
		require.Equal(t, []Result{
			{Index: 2, Status: StatusAlreadyApplied, Revision: 3},
			{Index: 3, Status: StatusAlreadyApplied, Revision: 3},
			{Index: 4, Status: StatusOK, Revision: 4, Exists: true, Version: 4},
		}, res)
		// Only replays: answered without applying anything.
		res, err = s.Apply([]Entry{{Index: 1}, {Index: 2}})
		require.NoError(t, err)
		require.Equal(t, StatusAlreadyApplied, res[1].Status)
		_, err = s.Apply([]Entry{{Index: 6}})
		require.ErrorIs(t, err, ErrNotContiguous)
		require.Equal(t, uint64(4), s.AppliedIndex())
	})
}

func TestRange(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		for _, k := range []string{"a", "b/1", "b/2", "b/3", "b0", "c", "b/\xff", "b"} {
			a.one(putCmd(0, 0, k, "v-"+k))
		}
		keys := func(r RangeResult) []string {
			var out []string
			for _, kv := range r.Entries {
				out = append(out, string(kv.Key))
				require.Equal(t, "v-"+string(kv.Key), string(kv.Value))
			}
			return out
		}
		r, err := s.Range([]byte("b/"), nil, 0)
		require.NoError(t, err)
		require.Equal(t, []string{"b/1", "b/2", "b/3", "b/\xff"}, keys(r))
		require.False(t, r.More)
		require.Equal(t, uint64(8), r.Revision)

		r, err = s.Range([]byte("b/"), nil, 2)
		require.NoError(t, err)
		require.Equal(t, []string{"b/1", "b/2"}, keys(r))
		require.True(t, r.More)
		r, err = s.Range([]byte("b/"), []byte("b/2"), 2)
		require.NoError(t, err)
		require.Equal(t, []string{"b/3", "b/\xff"}, keys(r))
		require.False(t, r.More, "exactly limit keys left is not more")

		// after before the prefix starts at the prefix; after past it is empty.
		r, err = s.Range([]byte("b/"), []byte("a"), 1)
		require.NoError(t, err)
		require.Equal(t, []string{"b/1"}, keys(r))
		r, err = s.Range([]byte("b/"), []byte("c"), 0)
		require.NoError(t, err)
		require.Empty(t, r.Entries)
		// after need not be a stored key.
		r, err = s.Range([]byte("b"), []byte("b/15"), 0)
		require.NoError(t, err)
		require.Equal(t, []string{"b/2", "b/3", "b/\xff", "b0"}, keys(r))

		r, err = s.Range(nil, nil, 0)
		require.NoError(t, err)
		require.Len(t, r.Entries, 8)
		r, err = s.Range([]byte("zzz"), nil, 5)
		require.NoError(t, err)
		require.Empty(t, r.Entries)
		require.False(t, r.More)
	})
}

func TestRangeByteBudget(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		const n, valueSize, budget = 10, 1000, 3500 // 3 keys of 1,004 bytes fit
		for i := range n {
			a.one(putCmd(0, 0, fmt.Sprintf("k/%02d", i), strings.Repeat("v", valueSize)))
		}
		a.one(putCmd(0, 0, "z", strings.Repeat("z", 2*budget)))

		var after []byte
		var got []string
		for pages := 1; ; pages++ {
			r, err := s.RangeBytes([]byte("k/"), after, 0, budget)
			require.NoError(t, err)
			size := 0
			for _, kv := range r.Entries {
				size += len(kv.Key) + len(kv.Value)
				got = append(got, string(kv.Key))
			}
			require.LessOrEqual(t, size, budget)
			require.NotEmpty(t, r.Entries)
			if !r.More {
				require.False(t, r.ByteLimited)
				require.Equal(t, 4, pages, "three full pages of three, then one")
				break
			}
			require.Len(t, r.Entries, 3)
			require.True(t, r.ByteLimited)
			after = r.Entries[len(r.Entries)-1].Key
		}
		require.Len(t, got, n)
		for i, k := range got {
			require.Equal(t, fmt.Sprintf("k/%02d", i), k)
		}

		// A key larger than the budget still comes, alone, so paging advances.
		r, err := s.RangeBytes(nil, []byte("k/09"), 0, budget)
		require.NoError(t, err)
		require.Len(t, r.Entries, 1)
		require.Equal(t, "z", string(r.Entries[0].Key))
		require.False(t, r.More)
		r, err = s.RangeBytes(nil, []byte("k/08"), 0, budget)
		require.NoError(t, err)
		require.Len(t, r.Entries, 1, "k/09 fits, z does not join it")
		require.True(t, r.More)
		require.True(t, r.ByteLimited)

		// The key limit still applies, and wins when it ends the page first.
		r, err = s.RangeBytes([]byte("k/"), nil, 2, budget)
		require.NoError(t, err)
		require.Len(t, r.Entries, 2)
		require.True(t, r.More)
		require.False(t, r.ByteLimited)
	})
}

func TestReadsReturnCopies(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		a.one(putCmd(0, 0, "k", "value"))
		got, err := s.Get([]byte("k"))
		require.NoError(t, err)
		got.Value[0] = 'X'
		r, err := s.Range(nil, nil, 0)
		require.NoError(t, err)
		r.Entries[0].Key[0], r.Entries[0].Value[0] = 'X', 'X'
		got, err = s.Get([]byte("k"))
		require.NoError(t, err)
		require.Equal(t, "value", string(got.Value))
	})
}

func TestSnapshotRoundTripAcrossImplementations(t *testing.T) {
	mem := NewMemory(Options{MaxClients: 3})
	a := newApplier(t, mem)
	id := a.one(registerCmd()).ClientID
	a.apply(putCmd(id, 1, "x", "1"), putCmd(0, 0, "y", ""), casCmd(id, 2, "x", 9, "no"), registerCmd(), delCmd(0, 0, "gone"))
	var snap bytes.Buffer
	info, err := mem.Snapshot(&snap)
	require.NoError(t, err)
	require.Equal(t, SnapshotInfo{AppliedIndex: 6, Revision: 2}, info)
	vinfo, err := VerifySnapshot(bytes.NewReader(snap.Bytes()))
	require.NoError(t, err)
	require.Equal(t, info, vinfo)

	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{MaxClients: 3})
	require.NoError(t, err)
	defer b.Close()
	// Restoring over existing state replaces it entirely.
	newApplier(t, b).apply(putCmd(0, 0, "old", "1"), putCmd(0, 0, "old2", "1"), registerCmd())
	require.NoError(t, b.Restore(bytes.NewReader(snap.Bytes())))
	require.Equal(t, uint64(6), b.AppliedIndex())
	require.Equal(t, uint64(2), b.Revision())
	got, err := b.Get([]byte("old"))
	require.NoError(t, err)
	require.False(t, got.Found)

	var again bytes.Buffer
	_, err = b.Snapshot(&again)
	require.NoError(t, err)
	require.Equal(t, snap.Bytes(), again.Bytes(), "same state, same bytes")

	// The sessions came across: a retry is still deduplicated in both.
	for _, s := range []Store{mem, b} {
		res, err := s.Apply([]Entry{{Index: 7, Data: casCmd(id, 2, "x", 9, "no")}})
		require.NoError(t, err)
		require.True(t, res[0].Duplicate)
		require.Equal(t, StatusCASFailed, res[0].Status)
		require.Equal(t, []byte("1"), res[0].CurrentValue)
	}
	// And the LRU order too: registering evicts the same session (the one
	// registered at index 5, untouched since) in both.
	for _, s := range []Store{mem, b} {
		res, err := s.Apply([]Entry{{Index: 8, Data: registerCmd()}, {Index: 9, Data: registerCmd()}, {Index: 10, Data: putCmd(5, 1, "x", "2")}, {Index: 11, Data: putCmd(id, 3, "x", "2")}})
		require.NoError(t, err)
		require.Equal(t, StatusSessionExpired, res[2].Status)
		require.Equal(t, StatusOK, res[3].Status)
	}
}

func TestClosed(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		newApplier(t, s).one(putCmd(0, 0, "k", "v"))
		require.NoError(t, s.Close())
		require.ErrorIs(t, s.Close(), ErrClosed)
		_, err := s.Apply([]Entry{{Index: 2}})
		require.ErrorIs(t, err, ErrClosed)
		_, err = s.Get([]byte("k"))
		require.ErrorIs(t, err, ErrClosed)
		_, err = s.Range(nil, nil, 0)
		require.ErrorIs(t, err, ErrClosed)
		_, err = s.Snapshot(&bytes.Buffer{})
		require.ErrorIs(t, err, ErrClosed)
		require.ErrorIs(t, s.Restore(&bytes.Buffer{}), ErrClosed)
		require.ErrorIs(t, s.Sync(), ErrClosed)
		require.True(t, errors.Is(s.Sync(), ErrClosed))
	})
}

// TestDeterministicSnapshots applies the same entries to two fresh memory
// stores and to a bolt store and expects byte-identical snapshots: the
// state cannot depend on map order or anything but the entries.
func TestDeterministicSnapshots(t *testing.T) {
	var entries []Entry
	var data [][]byte
	for i := 0; i < 300; i++ {
		switch i % 7 {
		case 0:
			data = append(data, registerCmd())
		case 3:
			data = append(data, delCmd(0, 0, fmt.Sprintf("k%03d", i/2)))
		default:
			data = append(data, putCmd(uint64(i/7*7+1), uint64(i%7), fmt.Sprintf("k%03d", i*31%101), fmt.Sprint(i)))
		}
	}
	for i, d := range data {
		entries = append(entries, Entry{Index: uint64(i + 1), Data: d})
	}
	var snaps [][]byte
	implementations(t, Options{MaxClients: 5}, func(t *testing.T, s Store) {
		for i := 0; i < 2; i++ {
			if m, ok := s.(*Memory); ok && i == 1 {
				s = NewMemory(m.opts)
			}
			for j := 0; j < len(entries); j += 17 {
				_, err := s.Apply(entries[j:min(j+17, len(entries))])
				require.NoError(t, err)
			}
			var buf bytes.Buffer
			_, err := s.Snapshot(&buf)
			require.NoError(t, err)
			snaps = append(snaps, buf.Bytes())
			if _, ok := s.(*Bolt); ok {
				break
			}
		}
	})
	require.Len(t, snaps, 3)
	require.Equal(t, snaps[0], snaps[1])
	require.Equal(t, snaps[0], snaps[2])
}

// readUntil runs read over and over until the writer sends its result on
// done (once more after it), which must be no error.
func readUntil(t *testing.T, done <-chan error, read func()) {
	t.Helper()
	for finished := false; !finished; {
		select {
		case err := <-done:
			require.NoError(t, err)
			finished = true
		default:
		}
		read()
	}
}

// TestConcurrentReadsDuringApply reads while another goroutine applies
// (run with -race): every read sees a whole batch, never half of one.
func TestConcurrentReadsDuringApply(t *testing.T) {
	implementations(t, Options{NoSync: true}, func(t *testing.T, s Store) {
		const batches = 200
		done := make(chan error, 1)
		go func() {
			for i := 0; i < batches; i++ {
				// Each batch writes "x" and "y" with the same value.
				v := fmt.Sprint(i)
				base := uint64(2*i + 1)
				if _, err := s.Apply([]Entry{{Index: base, Data: putCmd(0, 0, "x", v)}, {Index: base + 1, Data: putCmd(0, 0, "y", v)}}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		readUntil(t, done, func() {
			r, err := s.Range(nil, nil, 0)
			require.NoError(t, err)
			if len(r.Entries) == 2 {
				require.Equal(t, r.Entries[0].Value, r.Entries[1].Value, "a read saw half a batch")
				require.Equal(t, r.Revision, r.Entries[1].Version)
			}
			var buf bytes.Buffer
			info, err := s.Snapshot(&buf)
			require.NoError(t, err)
			require.Equal(t, uint64(0), info.AppliedIndex%2, "a snapshot saw half a batch")
		})
		require.Equal(t, uint64(2*batches), s.AppliedIndex())
	})
}
