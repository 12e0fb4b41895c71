package kvstore

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
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
	for i := 1; i <= 400 && len(fail) == 0; i++ {
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
