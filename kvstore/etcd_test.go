package kvstore

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"pgregory.net/rapid"
)

func txnCmd(t require.TestingT, req *pb.TxnRequest) []byte {
	data, err := EncodeEtcdTxn(req, "")
	require.NoError(t, err)
	return data
}

func putOp(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value), PrevKv: true}}}
}

func delOp(key, end string) *pb.RequestOp {
	d := &pb.DeleteRangeRequest{Key: []byte(key), PrevKv: true}
	if end != "" {
		d.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
}

func rangeOp(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func etcdPut(t require.TestingT, key, value string) []byte {
	return txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{putOp(key, value)}})
}

func get(t *testing.T, s Store, key string, rev int64) *pb.RangeResponse {
	t.Helper()
	resp, err := s.EtcdRange(&pb.RangeRequest{Key: []byte(key), Revision: rev}, 0)
	require.NoError(t, err)
	return resp
}

// Every write advances the revision; a key keeps its create revision until
// deleted, counts its writes (etcd's version), and a read at an older
// revision sees the key as it was then.
func TestEtcdVersionsAndHistory(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		require.Equal(t, uint64(1), a.one(etcdPut(t, "k", "a")).Revision)
		require.Equal(t, uint64(2), a.one(putCmd(0, 0, "k", "b")).Revision, "native and etcd writes share the revision")
		r := a.one(etcdPut(t, "k", "c"))
		require.Equal(t, uint64(3), r.Revision)
		require.Equal(t, "b", string(r.Etcd.Responses[0].GetResponsePut().PrevKv.Value))

		kv := get(t, s, "k", 0).Kvs[0]
		require.Equal(t, []int64{1, 3, 3}, []int64{kv.CreateRevision, kv.ModRevision, kv.Version})
		require.Equal(t, "a", string(get(t, s, "k", 1).Kvs[0].Value))
		require.Equal(t, "b", string(get(t, s, "k", 2).Kvs[0].Value))

		a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{delOp("k", "")}})) // revision 4
		require.Empty(t, get(t, s, "k", 0).Kvs)
		require.Equal(t, "c", string(get(t, s, "k", 3).Kvs[0].Value))
		a.one(etcdPut(t, "k", "d")) // revision 5: created anew
		kv = get(t, s, "k", 0).Kvs[0]
		require.Equal(t, []int64{5, 5, 1}, []int64{kv.CreateRevision, kv.ModRevision, kv.Version})
		require.Equal(t, uint64(5), s.Revision())

		_, err := s.EtcdRange(&pb.RangeRequest{Key: []byte("k"), Revision: 6}, 0)
		var re *RangeError
		require.ErrorAs(t, err, &re)
		require.Equal(t, StatusFutureRevision, re.Status)
	})
}

// A transaction's compares pick the branch, all its writes share one
// revision, its reads see its earlier writes, and one that fails a check
// writes nothing.
func TestEtcdTxn(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		a.one(etcdPut(t, "x", "1")) // revision 1
		cmp := &pb.Compare{Key: []byte("x"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("1")}}
		r := a.one(txnCmd(t, &pb.TxnRequest{
			Compare: []*pb.Compare{cmp},
			Success: []*pb.RequestOp{putOp("a", "A"), putOp("b", "B"), rangeOp("a", "c"), delOp("x", "")},
			Failure: []*pb.RequestOp{putOp("f", "F")},
		}))
		require.Equal(t, StatusOK, r.Status, r.Err)
		require.True(t, r.Etcd.Succeeded)
		require.Equal(t, uint64(2), r.Revision, "one revision for the whole transaction")
		require.Len(t, r.Etcd.Responses[2].GetResponseRange().Kvs, 2, "the read sees the transaction's own writes")
		require.Equal(t, int64(1), r.Etcd.Responses[3].GetResponseDeleteRange().Deleted)
		all := get(t, s, "a", 0)
		require.Equal(t, int64(2), all.Kvs[0].ModRevision)

		r = a.one(txnCmd(t, &pb.TxnRequest{Compare: []*pb.Compare{cmp}, Success: []*pb.RequestOp{putOp("s", "S")}, Failure: []*pb.RequestOp{putOp("f", "F")}}))
		require.False(t, r.Etcd.Succeeded)
		require.Len(t, get(t, s, "f", 0).Kvs, 1)
		require.Empty(t, get(t, s, "s", 0).Kvs)

		// Nested: the inner compare is decided on the state before the
		// transaction, although the outer branch writes the key first.
		inner := &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("n"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 0}}},
			Success: []*pb.RequestOp{putOp("inner", "absent-before")},
			Failure: []*pb.RequestOp{putOp("inner", "present-before")},
		}
		r = a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("n", "1"), {Request: &pb.RequestOp_RequestTxn{RequestTxn: inner}}}}))
		require.Equal(t, StatusOK, r.Status, r.Err)
		require.Equal(t, "absent-before", string(get(t, s, "inner", 0).Kvs[0].Value))

		before := s.Revision()
		ignoreMissing := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("missing"), IgnoreValue: true}}}
		r = a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("w", "1"), ignoreMissing}}))
		require.Equal(t, StatusKeyNotFound, r.Status)
		require.Empty(t, get(t, s, "w", 0).Kvs, "a failed transaction writes nothing")
		require.Equal(t, before, s.Revision())

		for name, req := range map[string]*pb.TxnRequest{
			"duplicate put":   {Success: []*pb.RequestOp{putOp("d", "1"), putOp("d", "2")}},
			"put in deletion": {Success: []*pb.RequestOp{delOp("c", "e"), putOp("d", "2")}},
			"empty key":       {Success: []*pb.RequestOp{putOp("", "1")}},
			"reserved key":    {Success: []*pb.RequestOp{putOp("\x00keyval/x", "1")}},
		} {
			r = a.one(txnCmd(t, req))
			require.Equal(t, StatusInvalid, r.Status, name)
		}
		require.Equal(t, before, s.Revision())
		r = a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("d", "1")}, Failure: []*pb.RequestOp{putOp("d", "2")}}))
		require.Equal(t, StatusOK, r.Status, "the same key in both branches is allowed")
	})
}

func TestEtcdRangeOptions(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		for i, k := range []string{"b", "a", "d", "c"} {
			a.one(etcdPut(t, k, fmt.Sprint(9-i)))
		}
		a.one(etcdPut(t, "a", "again")) // a: version 2, mod revision 5
		rg := func(req *pb.RangeRequest, maxBytes int) *pb.RangeResponse {
			t.Helper()
			req.Key, req.RangeEnd = []byte("a"), []byte("z")
			resp, err := s.EtcdRange(req, maxBytes)
			require.NoError(t, err)
			return resp
		}
		keys := func(r *pb.RangeResponse) string {
			var out []byte
			for _, kv := range r.Kvs {
				out = append(out, kv.Key...)
			}
			return string(out)
		}
		r := rg(&pb.RangeRequest{Limit: 2}, 0)
		require.Equal(t, "ab", keys(r))
		require.True(t, r.More)
		require.Equal(t, int64(4), r.Count)
		require.Equal(t, "dcba", keys(rg(&pb.RangeRequest{SortOrder: pb.RangeRequest_DESCEND}, 0)))
		require.Equal(t, "acdb", keys(rg(&pb.RangeRequest{SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_DESCEND}, 0)))
		require.Equal(t, "cd", keys(rg(&pb.RangeRequest{SortTarget: pb.RangeRequest_VALUE, Limit: 2}, 0)))
		require.Equal(t, "a", keys(rg(&pb.RangeRequest{MinModRevision: 5}, 0)))
		require.Equal(t, "abd", keys(rg(&pb.RangeRequest{MaxCreateRevision: 3}, 0)))
		r = rg(&pb.RangeRequest{MinModRevision: 5}, 0)
		require.Equal(t, int64(4), r.Count, "filters leave the count alone, as in etcd")
		require.False(t, r.More, "nor do they set more")
		r = rg(&pb.RangeRequest{CountOnly: true}, 0)
		require.Empty(t, r.Kvs)
		require.Equal(t, int64(4), r.Count)
		r = rg(&pb.RangeRequest{KeysOnly: true}, 0)
		require.Nil(t, r.Kvs[0].Value)
		r = rg(&pb.RangeRequest{}, 3)
		require.Equal(t, "a", keys(r), "the byte budget stops the page, but never before one key")
		require.True(t, r.More)
		require.Equal(t, "abcd", keys(rg(&pb.RangeRequest{Revision: 4}, 0)))
		require.Equal(t, "9", string(rg(&pb.RangeRequest{Revision: 4}, 0).Kvs[1].Value))
		all, err := s.EtcdRange(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, 0)
		require.NoError(t, err)
		require.Equal(t, int64(4), all.Count, "the whole key space, KeyVal's own records left out")
	})
}

// Compacting drops what no later read can see: reads at or after the
// compacted revision still answer, earlier ones are refused, and a key
// deleted before it leaves no trace.
func TestEtcdCompact(t *testing.T) {
	was := backgroundPruning
	t.Cleanup(func() { backgroundPruning = was })
	backgroundPruning = false // bbolt's pruning waits for finishCompaction
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		a.one(etcdPut(t, "k", "1"))                                                   // 1
		a.one(etcdPut(t, "k", "2"))                                                   // 2
		a.one(etcdPut(t, "gone", "x"))                                                // 3
		a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{delOp("gone", "")}})) // 4
		a.one(etcdPut(t, "k", "5"))                                                   // 5
		require.Equal(t, StatusFutureRevision, a.one(EncodeCompact(6, "")).Status)
		require.Equal(t, StatusOK, a.one(EncodeCompact(4, "")).Status)
		require.Equal(t, StatusCompacted, a.one(EncodeCompact(4, "")).Status)
		require.Equal(t, uint64(4), s.CompactedRevision())

		// The event at the compacted revision comes without the version
		// before it, compacted, however far pruning has got (here, not
		// necessarily finished); one after it comes with its own.
		evs, _, err := s.Events([]byte("a"), []byte("z"), 4, 5, true, 0)
		require.NoError(t, err)
		require.Len(t, evs, 2)
		require.Nil(t, evs[0].PrevKv, "the deletion of gone at 4")
		require.NotNil(t, evs[1].PrevKv, "the put of k at 5")
		require.Equal(t, "2", string(evs[1].PrevKv.Value))

		require.Equal(t, "2", string(get(t, s, "k", 4).Kvs[0].Value))
		require.Equal(t, "5", string(get(t, s, "k", 0).Kvs[0].Value))
		_, err = s.EtcdRange(&pb.RangeRequest{Key: []byte("k"), Revision: 3}, 0)
		var re *RangeError
		require.ErrorAs(t, err, &re)
		require.Equal(t, StatusCompacted, re.Status)

		finishCompaction(t, s)
		var buf bytes.Buffer
		_, err = s.Snapshot(&buf)
		require.NoError(t, err)
		sum, err := SummarizeSnapshot(bytes.NewReader(buf.Bytes()))
		require.NoError(t, err)
		require.Equal(t, uint64(1), sum.Keys)
		require.Equal(t, uint64(3), sum.History, "k at revisions 2 and 5 and the deletion at 4, the compacted revision itself; older versions are gone")
		restored := NewMemory(Options{})
		require.NoError(t, restored.Restore(&buf))
		require.Equal(t, uint64(4), restored.CompactedRevision())
		require.Equal(t, "2", string(get(t, restored, "k", 4).Kvs[0].Value))

		// Watching from the compacted revision sees the change made at
		// it, a deletion too; from before it is refused.
		for _, st := range []Store{s, restored} {
			evs, _, err = st.Events([]byte("a"), []byte("z"), 4, 5, false, 0)
			require.NoError(t, err)
			require.Len(t, evs, 2)
			require.Equal(t, mvccpb.DELETE, evs[0].Type)
			require.Equal(t, "gone", string(evs[0].Kv.Key))
			require.EqualValues(t, 4, evs[0].Kv.ModRevision)
			require.Equal(t, "5", string(evs[1].Kv.Value))
			_, _, err = st.Events([]byte("a"), []byte("z"), 3, 5, false, 0)
			require.ErrorAs(t, err, &re)
			require.Equal(t, StatusCompacted, re.Status)
		}

		// The next compaction takes the deleted key out.
		require.Equal(t, StatusOK, a.one(EncodeCompact(5, "")).Status)
		finishCompaction(t, s)
		buf.Reset()
		_, err = s.Snapshot(&buf)
		require.NoError(t, err)
		sum, err = SummarizeSnapshot(bytes.NewReader(buf.Bytes()))
		require.NoError(t, err)
		require.Equal(t, uint64(1), sum.History, "k at revision 5")
	})
}

// A bbolt file of layout version 1 (before history) is upgraded when
// opened: its keys keep their values and versions and gain a history.
func TestBoltUpgradesFormat1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketKVV5, bucketClients, bucketLRU} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		for k, v := range map[string]uint64{"format": 1, "applied_index": 4, "revision": 3, "client_count": 0} {
			if err := meta.Put([]byte(k), u64(v)); err != nil {
				return err
			}
		}
		old := make([]byte, 8+1)
		binary.BigEndian.PutUint64(old, 2)
		old[8] = 'v'
		return tx.Bucket(bucketKVV5).Put([]byte("k"), old)
	}))
	require.NoError(t, db.Close())

	b, err := OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	g, err := b.Get([]byte("k"))
	require.NoError(t, err)
	require.Equal(t, GetResult{Value: []byte("v"), Version: 2, Found: true, Revision: 3}, g)
	kv := get(t, b, "k", 2).Kvs[0]
	require.Equal(t, []int64{2, 2, 1}, []int64{kv.CreateRevision, kv.ModRevision, kv.Version})
	r := newApplier(t, b).one(etcdPut(t, "k", "w"))
	require.Equal(t, uint64(4), r.Revision)
	require.Equal(t, "v", string(get(t, b, "k", 3).Kvs[0].Value))
}

// A bbolt file of layout version 3 (history ordered by key, in a bucket
// of its own) is upgraded when opened: testdata/layout3.db.gz was written
// by the last build of that layout (keys overwritten, deleted and put
// again, one with a 0x00 byte, two on a lease, a compaction, a session),
// layout3.snap is its snapshot then (snapshot format 2). The upgraded file
// holds the same state: the same snapshot, byte for byte, once the memory
// store has written that one again in the current format, and the same
// hash; and it goes on as a store restored from that snapshot does.
func TestBoltUpgradesFormat3(t *testing.T) { testBoltUpgrade(t, "layout3") }

// The same for layout version 4 (each key's newest value in kv as well as
// in the history): testdata/layout4.db.gz is layout3.db.gz as the last
// build of layout 4 upgraded it and then wrote to it (a key with a 0x00
// byte put twice, a key deleted and put again, a tombstone), layout4.snap
// its snapshot then.
func TestBoltUpgradesFormat4(t *testing.T) { testBoltUpgrade(t, "layout4") }

// The same for layout version 5 (each key's head in a bucket, kv, where
// now the index is in memory): testdata/layout5.db.gz is layout4.db.gz as
// the last build of layout 5 upgraded it and then wrote to it (a key with
// a 0x00 byte put twice and deleted, another key put), layout5.snap its
// snapshot then. Its file no longer has kv once opened.
func TestBoltUpgradesFormat5(t *testing.T) {
	testBoltUpgrade(t, "layout5")
	path := filepath.Join(t.TempDir(), "kv.db")
	gunzip(t, "testdata/layout5.db.gz", path)
	b, err := OpenBolt(path, Options{})
	require.NoError(t, err)
	require.NoError(t, b.file.Load().db.View(func(tx *bbolt.Tx) error {
		require.Nil(t, tx.Bucket(bucketKVV5))
		return nil
	}))
	require.NoError(t, b.Close())
}

func testBoltUpgrade(t *testing.T, fixture string) {
	snap, err := os.ReadFile("testdata/" + fixture + ".snap")
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "kv.db")
	gunzip(t, "testdata/"+fixture+".db.gz", path)

	b, err := OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	var got bytes.Buffer
	_, err = b.Snapshot(&got)
	require.NoError(t, err)
	// The fixture is in snapshot format 2: the memory store reads it and
	// writes it again in the current format, which the upgraded file's
	// snapshot must match byte for byte.
	mem := NewMemory(Options{})
	require.NoError(t, mem.Restore(bytes.NewReader(snap)))
	var want bytes.Buffer
	_, err = mem.Snapshot(&want)
	require.NoError(t, err)
	require.Equal(t, want.Bytes(), got.Bytes())
	same := func(from int64) {
		t.Helper()
		for rev := from; rev <= int64(b.Revision()); rev++ {
			hb, err := b.HashKV(rev)
			require.NoError(t, err)
			hm, err := mem.HashKV(rev)
			require.NoError(t, err)
			require.Equal(t, hm, hb, "hash at revision %d", rev)
			all := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev}
			rb, err := b.EtcdRange(all, 0)
			require.NoError(t, err)
			rm, err := mem.EtcdRange(all, 0)
			require.NoError(t, err)
			require.Equal(t, rm.Kvs, rb.Kvs, "keys at revision %d", rev)
		}
		evs, _, err := b.Events(nil, nil, uint64(from), b.Revision(), true, 0)
		require.NoError(t, err)
		want, _, err := mem.Events(nil, nil, uint64(from), b.Revision(), true, 0)
		require.NoError(t, err)
		require.Equal(t, want, evs)
	}
	require.Equal(t, uint64(4), b.CompactedRevision())
	same(5)
	for _, s := range []Store{b, mem} {
		a := newApplier(t, s)
		a.one(etcdPut(t, "gone", "again"))
		a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{delOp("k", "")}}))
		a.one(EncodeCompact(s.Revision()-1, ""))
	}
	same(int64(b.CompactedRevision()) + 1)
}

func gunzip(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	zr, err := gzip.NewReader(in)
	require.NoError(t, err)
	out, err := os.Create(to)
	require.NoError(t, err)
	_, err = io.Copy(out, zr)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}

// mvccModel is the reference: every revision's whole state.
type mvccModel struct {
	states    []map[string]string // states[r]: the keys at revision r
	compacted int
}

func (m *mvccModel) current() map[string]string { return m.states[len(m.states)-1] }

func (m *mvccModel) commit(next map[string]string) { m.states = append(m.states, next) }

func cloneMap(in map[string]string) map[string]string {
	out := make(map[string]string, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

// TestEtcdHistoryProperty: for any sequence of native and etcd writes,
// transactions and compactions, a range at any revision not compacted
// answers exactly the state the model had then, and both implementations
// write byte-identical snapshots, whatever the compactions' chunk size.
func TestEtcdHistoryProperty(t *testing.T) {
	was := compactChunk
	t.Cleanup(func() { compactChunk = was })
	rapid.Check(t, func(rt *rapid.T) {
		compactChunk = rapid.SampledFrom([]int{1, 2, 3, was}).Draw(rt, "compaction chunk")
		mem := NewMemory(Options{})
		bolt, err := OpenBolt(filepath.Join(t.TempDir(), fmt.Sprintf("kv-%d.db", rapid.Int().Draw(rt, "file"))), Options{NoSync: true})
		require.NoError(rt, err)
		defer bolt.Close()
		stores := []Store{mem, bolt}
		model := &mvccModel{states: []map[string]string{{}}}
		keyGen := rapid.SampledFrom([]string{"a", "a\x00", "a\x00b", "ab", "b", "c"})
		index := uint64(0)
		apply := func(data []byte) Result {
			index++
			var first Result
			for i, s := range stores {
				res, err := s.Apply([]Entry{{Index: index, Data: data}})
				require.NoError(rt, err)
				if i == 0 {
					first = res[0]
				} else {
					require.Equal(rt, first.Status, res[0].Status)
					require.Equal(rt, first.Revision, res[0].Revision)
				}
			}
			return first
		}
		steps := rapid.IntRange(1, 40).Draw(rt, "steps")
		for i := 0; i < steps; i++ {
			switch rapid.IntRange(0, 4).Draw(rt, "op") {
			case 0: // native put
				k, v := keyGen.Draw(rt, "key"), rapid.StringN(0, 3, -1).Draw(rt, "value")
				apply(putCmd(0, 0, k, v))
				next := cloneMap(model.current())
				next[k] = v
				model.commit(next)
			case 1: // etcd txn: a range delete, then a put outside it
				next := cloneMap(model.current())
				var ops []*pb.RequestOp
				from, to := keyGen.Draw(rt, "from"), keyGen.Draw(rt, "to")
				wrote := false
				if from < to {
					ops = append(ops, delOp(from, to))
					for k := range next {
						if k >= from && k < to {
							delete(next, k)
							wrote = true
						}
					}
				}
				if k := keyGen.Draw(rt, "put"); !(k >= from && k < to) {
					v := rapid.StringN(0, 3, -1).Draw(rt, "value")
					ops = append(ops, putOp(k, v))
					next[k] = v
					wrote = true
				}
				r := apply(txnCmd(rt, &pb.TxnRequest{Success: ops}))
				require.Equal(rt, StatusOK, r.Status, r.Err)
				if wrote {
					model.commit(next)
				}
			case 2: // compact
				rev := rapid.IntRange(0, len(model.states)-1).Draw(rt, "rev")
				r := apply(EncodeCompact(uint64(rev), ""))
				if rev > model.compacted {
					require.Equal(rt, StatusOK, r.Status, r.Err)
					model.compacted = rev
				} else {
					require.Equal(rt, StatusCompacted, r.Status)
				}
			default: // read at a revision
				rev := rapid.IntRange(0, len(model.states)-1).Draw(rt, "read")
				for _, s := range stores {
					resp, err := s.EtcdRange(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: int64(rev)}, 0)
					if rev != 0 && rev < model.compacted {
						var re *RangeError
						require.ErrorAs(rt, err, &re)
						continue
					}
					require.NoError(rt, err)
					want := model.states[rev]
					if rev == 0 {
						want = model.current()
					}
					require.Equal(rt, sortedPairs(want), rangePairs(resp))
				}
			}
			require.Equal(rt, uint64(len(model.states)-1), mem.Revision())
		}
		em, _, err := mem.Events([]byte{0}, []byte{0}, mem.CompactedRevision(), mem.Revision(), true, 0)
		require.NoError(rt, err)
		eb, _, err := bolt.Events([]byte{0}, []byte{0}, bolt.CompactedRevision(), bolt.Revision(), true, 0)
		require.NoError(rt, err)
		require.Equal(rt, fmt.Sprint(em), fmt.Sprint(eb), "both implementations replay the same events")
		hm, err := mem.HashKV(0)
		require.NoError(rt, err)
		hb, err := bolt.HashKV(0)
		require.NoError(rt, err)
		require.Equal(rt, hm, hb, "both implementations hash the same history alike")
		var a, b bytes.Buffer
		_, err = mem.Snapshot(&a)
		require.NoError(rt, err)
		_, err = bolt.Snapshot(&b)
		require.NoError(rt, err)
		require.Equal(rt, a.Bytes(), b.Bytes(), "both implementations hold the same history")
	})
}

func sortedPairs(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(m))
	for _, k := range keys {
		out = append(out, k+"="+m[k])
	}
	return out
}

func rangePairs(r *pb.RangeResponse) []string {
	out := make([]string, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		out = append(out, string(kv.Key)+"="+string(kv.Value))
	}
	return out
}

// HashKV at a revision does not change as later writes arrive, changes
// with the history it covers, and is refused where a read would be.
func TestHashKV(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		a.one(etcdPut(t, "a", "1"))
		a.one(etcdPut(t, "b", "2"))
		at2, err := s.HashKV(0)
		require.NoError(t, err)
		require.Equal(t, uint64(2), at2.Revision)
		at1, err := s.HashKV(1)
		require.NoError(t, err)
		require.NotEqual(t, at1.Hash, at2.Hash)
		a.one(etcdPut(t, "a", "3"))
		again, err := s.HashKV(2)
		require.NoError(t, err)
		require.Equal(t, at2, again, "later writes leave the hash at 2 alone")

		other := NewMemory(Options{})
		b := newApplier(t, other)
		b.one(etcdPut(t, "a", "1"))
		b.one(etcdPut(t, "b", "other"))
		diff, err := other.HashKV(2)
		require.NoError(t, err)
		require.NotEqual(t, at2.Hash, diff.Hash, "a different value at the same revision")

		_, err = s.HashKV(9)
		var re *RangeError
		require.ErrorAs(t, err, &re)
	})
}

func leasePut(key, value string, lease int64) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value), Lease: lease}}}
}

// A lease holds the keys put with it; revoking it deletes them all at one
// revision; a put without the lease detaches the key; the leases and what
// they hold survive a snapshot.
func TestLeases(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		require.Equal(t, StatusOK, a.one(EncodeLeaseGrant(7, 10, "")).Status)
		require.Equal(t, uint64(0), s.Revision(), "a grant writes no key")
		require.Equal(t, StatusLeaseExists, a.one(EncodeLeaseGrant(7, 10, "")).Status)
		require.Equal(t, StatusInvalid, a.one(EncodeLeaseGrant(0, 10, "")).Status)
		require.Equal(t, StatusLeaseNotFound, a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{leasePut("x", "1", 8)}})).Status)

		a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{leasePut("a", "1", 7), leasePut("b", "2", 7)}})) // 1
		a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{leasePut("c", "3", 7)}}))                        // 2
		a.one(etcdPut(t, "c", "detached"))                                                                       // 3
		require.Equal(t, int64(7), get(t, s, "a", 0).Kvs[0].Lease)
		require.Zero(t, get(t, s, "c", 0).Kvs[0].Lease)
		info, found, err := s.Lease(7)
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, LeaseInfo{ID: 7, TTL: 10, Keys: [][]byte{[]byte("a"), []byte("b")}}, info)

		var buf bytes.Buffer
		_, err = s.Snapshot(&buf)
		require.NoError(t, err)
		restored := NewMemory(Options{})
		require.NoError(t, restored.Restore(bytes.NewReader(buf.Bytes())))
		again, _, err := restored.Lease(7)
		require.NoError(t, err)
		require.Equal(t, info, again)

		r := a.one(EncodeLeaseRevoke(7, ""))
		require.Equal(t, StatusOK, r.Status)
		require.Equal(t, uint64(4), r.Revision, "both keys deleted at one revision")
		require.Empty(t, get(t, s, "a", 0).Kvs)
		require.Empty(t, get(t, s, "b", 0).Kvs)
		require.Len(t, get(t, s, "c", 0).Kvs, 1)
		leases, err := s.Leases()
		require.NoError(t, err)
		require.Empty(t, leases)
		require.Equal(t, StatusLeaseNotFound, a.one(EncodeLeaseRevoke(7, "")).Status)
	})
}

// TestKeysOnlyRangeHoldsNoValues: a keys-only Range copies the keys, not
// the values it passes over (unless they order the answer), so its memory
// is bounded by the keys, as its byte budget counts them.
func TestKeysOnlyRangeHoldsNoValues(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		value := strings.Repeat("v", 256<<10)
		for i := range 20 {
			a.one(etcdPut(t, fmt.Sprintf("big/%02d", i), value))
		}
		req := &pb.RangeRequest{Key: []byte("big/"), RangeEnd: []byte("big0"), KeysOnly: true}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		resp, err := s.EtcdRange(req, 1<<20)
		runtime.ReadMemStats(&after)
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 20)
		require.False(t, resp.More, "20 keys are far under the budget")
		require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "5 MiB of values passed over")

		req.SortTarget, req.SortOrder = pb.RangeRequest_VALUE, pb.RangeRequest_ASCEND
		resp, err = s.EtcdRange(req, 0)
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 20, "values that order the answer are kept to sort it")
		require.Empty(t, resp.Kvs[0].Value)

		// Sorted, with no limit (or a negative one, which is none), values
		// are copied only up to the budget: the answer is cut anyway.
		for _, limit := range []int64{0, -1} {
			sorted := &pb.RangeRequest{Key: []byte("big/"), RangeEnd: []byte("big0"), Limit: limit,
				SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_DESCEND}
			runtime.ReadMemStats(&before)
			resp, err = s.EtcdRange(sorted, 1<<20)
			runtime.ReadMemStats(&after)
			require.NoError(t, err)
			require.True(t, resp.More, "limit %d", limit)
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(3<<20), "limit %d: 5 MiB of values in the range", limit)
		}
	})
}

// TestHashKVLeavesOutTheDeletionAtTheCompactedRevision: builds before
// 2026-12-07 pruned a deletion made at the compacted revision, later ones
// keep it; HashKV gives the same hash either way, so members of both agree.
func TestHashKVLeavesOutTheDeletionAtTheCompactedRevision(t *testing.T) {
	s := NewMemory(Options{})
	a := newApplier(t, s)
	a.one(etcdPut(t, "k", "1"))                                                   // 1
	a.one(etcdPut(t, "gone", "x"))                                                // 2
	a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{delOp("gone", "")}})) // 3
	a.one(etcdPut(t, "k", "4"))                                                   // 4
	require.Equal(t, StatusOK, a.one(EncodeCompact(3, "")).Status)
	kept, err := s.HashKV(0)
	require.NoError(t, err)
	require.NoError(t, s.data.deleteHistory([]byte("gone"), 3, true)) // as an older build pruned
	pruned, err := s.HashKV(0)
	require.NoError(t, err)
	require.Equal(t, kept.Hash, pruned.Hash)
	require.NoError(t, s.data.deleteHistory([]byte("k"), 4, false))
	changed, err := s.HashKV(0)
	require.NoError(t, err)
	require.NotEqual(t, kept.Hash, changed.Hash, "the hash covers the other versions")
}
