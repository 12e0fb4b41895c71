package kvstore

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"pgregory.net/rapid"
)

// TestBoltReadersSeeOneCommit: reads running beside Apply each see the
// state of one commit, never the key index of one commit with the history
// of another. Every batch writes a and b the same value in one revision,
// deletes or puts c back, and now and then compacts, which drops c's
// tombstone from the index: a read pairing the index with a later or
// earlier history would miss a version (an error) or see a and b differ.
func TestBoltReadersSeeOneCommit(t *testing.T) {
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{NoSync: true})
	require.NoError(t, err)
	defer b.Close()
	a := newApplier(t, b)

	var (
		done  atomic.Bool
		wg    sync.WaitGroup
		reads atomic.Int64
	)
	fail := make(chan error, 4)
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				if err := readOneCommit(b); err != nil {
					fail <- err
					return
				}
				reads.Add(1)
			}
		}()
	}
	// At least 400 commits, and on until the readers have read a few
	// times beside them (a busy machine may not run them at first).
	for i := 1; (i <= 400 || reads.Load() < 20 && i <= 100_000) && len(fail) == 0; i++ {
		v := fmt.Sprint(i)
		ops := []*pb.RequestOp{putOp("a", v), putOp("b", v)}
		if i%2 == 0 {
			ops = append(ops, delOp("c", ""))
		} else {
			ops = append(ops, putOp("c", v))
		}
		a.one(txnCmd(t, &pb.TxnRequest{Success: ops}))
		if i%7 == 0 {
			require.Equal(t, StatusOK, a.one(EncodeCompact(b.Revision(), "")).Status)
		}
	}
	done.Store(true)
	wg.Wait()
	close(fail)
	for err := range fail {
		require.NoError(t, err)
	}
	require.Positive(t, reads.Load())
}

// readOneCommit reads the whole key space three ways and checks that each
// saw one commit.
func readOneCommit(b *Bolt) error {
	all, err := b.EtcdRange(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, 0)
	if err != nil {
		return err
	}
	vals := map[string]string{}
	for _, kv := range all.Kvs {
		if kv.ModRevision > all.Header.Revision {
			return fmt.Errorf("%q at revision %d in a read at revision %d", kv.Key, kv.ModRevision, all.Header.Revision)
		}
		vals[string(kv.Key)] = string(kv.Value)
	}
	if len(all.Kvs) > 0 && vals["a"] != vals["b"] {
		return fmt.Errorf("one read saw a=%q and b=%q", vals["a"], vals["b"])
	}
	r, err := b.Range(nil, nil, 0)
	if err != nil {
		return err
	}
	if len(r.Entries) >= 2 && string(r.Entries[0].Value) != string(r.Entries[1].Value) {
		return fmt.Errorf("one range saw a=%q and b=%q", r.Entries[0].Value, r.Entries[1].Value)
	}
	_, err = b.Get([]byte("c"))
	return err
}

// TestKeyIndexOrder: the index orders keys, finds them and scans ranges
// as plain byte-string comparison would, whatever the keys share: empty
// and short keys, keys that are prefixes of others, zero and 0xff bytes,
// and keys with a long head in common.
func TestKeyIndexOrder(t *testing.T) {
	key := rapid.Custom(func(t *rapid.T) string {
		// Few distinct bytes, 0 among them, so that keys share heads and
		// are prefixes of each other often.
		b := rapid.SliceOfN(rapid.SampledFrom([]byte{0, 1, 'a', 0xff}), 0, 12).Draw(t, "bytes")
		return rapid.SampledFrom([]string{"", "prefix/1"}).Draw(t, "head") + string(b)
	})
	rapid.Check(t, func(t *rapid.T) {
		ix := newKeyIndex()
		model := map[string]uint64{}
		for i, k := range rapid.SliceOfN(key, 1, 60).Draw(t, "keys") {
			rev := uint64(i + 1)
			if rapid.IntRange(0, 4).Draw(t, "op") == 0 {
				ix.remove([]byte(k))
				delete(model, k)
				continue
			}
			ix.set(ix.keyFor([]byte(k)), kvMeta{modRev: rev, createRev: rev}, 0, 0)
			model[k] = rev
		}
		want := slices.Sorted(maps.Keys(model))
		var got []string
		ix.ascend(nil, nil, func(e *indexEntry) bool {
			if e.meta.modRev != model[e.key] {
				t.Fatalf("key %q at revision %d, want %d", e.key, e.meta.modRev, model[e.key])
			}
			got = append(got, e.key)
			return true
		})
		require.Equal(t, want, got)

		probe := key.Draw(t, "probe")
		e := ix.get([]byte(probe))
		if rev, ok := model[probe]; ok != (e != nil) || ok && e.meta.modRev != rev {
			t.Fatalf("get(%q) = %v, model has %v (%d)", probe, e, ok, rev)
		}
		start, end := key.Draw(t, "start"), key.Draw(t, "end")
		got = nil
		ix.ascend([]byte(start), []byte(end), func(e *indexEntry) bool {
			got = append(got, e.key)
			return true
		})
		var inRange []string
		for _, k := range want {
			if k >= start && (end == "" || k < end) {
				inRange = append(inRange, k)
			}
		}
		require.Equal(t, inRange, got, "range [%q, %q)", start, end)
	})
}

// BenchmarkKeyIndexFind is an apply's lookup of the key it writes, in an
// index of 100,000 keys: kvbench's 8-byte keys, and keys that share a
// long head as etcd's users' do ("/registry/pods/…"), where every
// comparison reads well into the keys.
func BenchmarkKeyIndexFind(b *testing.B) {
	const keys = 100000
	for _, head := range []string{"", "/registry/pods/default/"} {
		b.Run(fmt.Sprintf("head=%q", head), func(b *testing.B) {
			ix := newKeyIndex()
			names := make([][]byte, keys)
			for i := range names {
				names[i] = []byte(fmt.Sprintf("%s%08d", head, i))
				ix.set(string(names[i]), kvMeta{modRev: uint64(i + 1)}, 0, 0)
			}
			// Overwrite every key about three times, a batch of 128 to a
			// clone as Apply does, so that entries and nodes lie scattered
			// over the heap as in a server that has run a while.
			rng := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < 3*keys; i += 128 {
				ix = ix.clone()
				for range 128 {
					k := names[rng.IntN(keys)]
					ix.set(ix.keyFor(k), kvMeta{modRev: uint64(keys + i)}, 0, 0)
				}
			}
			var probe indexEntry
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if ix.find(&probe, names[rng.IntN(keys)]) == nil {
					b.Fatal("key not found")
				}
			}
		})
	}
}

// BenchmarkKeyIndexPut is the index's share of an apply's overwrite: a
// clone for each batch of 32, then for each put the lookups a put makes
// and the new head, in an index of 100,000 8-byte keys.
func BenchmarkKeyIndexPut(b *testing.B) {
	const keys, batch = 100000, 32
	ix := newKeyIndex()
	names := make([][]byte, keys)
	for i := range names {
		names[i] = []byte(fmt.Sprintf("%08d", i))
		ix.set(string(names[i]), kvMeta{modRev: uint64(i + 1)}, 0, 0)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var probe indexEntry
	put := func(i int) {
		if i%batch == 0 {
			ix = ix.clone()
		}
		k := names[rng.IntN(keys)]
		e := ix.find(&probe, k)
		if e == nil || ix.find(&probe, k) != e {
			b.Fatal("key not found")
		}
		ix.set(e.key, kvMeta{modRev: uint64(keys + i)}, e.meta.modRev, 0)
	}
	for i := range 3 * keys {
		put(i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		put(i)
	}
}
