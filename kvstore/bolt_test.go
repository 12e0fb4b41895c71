package kvstore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestBoltReopenReplay is the runtime's restart: entries applied before a
// close are kept, and replaying the log from the start skips them and
// continues exactly where the store stopped.
func TestBoltReopenReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	var log []Entry
	for i := 1; i <= 20; i++ {
		var data []byte
		switch {
		case i == 1:
			data = registerCmd()
		case i%5 == 0:
			data = nil
		default:
			data = putCmd(1, uint64(i), string(rune('a'+i%4)), string(rune('A'+i)))
		}
		log = append(log, Entry{Index: uint64(i), Data: data})
	}
	ref := NewMemory(Options{})
	want, err := ref.Apply(log)
	require.NoError(t, err)

	b, err := OpenBolt(path, Options{})
	require.NoError(t, err)
	require.Equal(t, path, b.Path())
	_, err = b.Apply(log[:8])
	require.NoError(t, err)
	_, err = b.Apply(log[8:12])
	require.NoError(t, err)
	require.NoError(t, b.Close())

	b, err = OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, uint64(12), b.AppliedIndex())
	got, err := b.Apply(log) // the whole log again, as a restarted node would
	require.NoError(t, err)
	for i := range log {
		if i < 12 {
			require.Equal(t, StatusAlreadyApplied, got[i].Status, "entry %d", i+1)
			continue
		}
		require.Equal(t, want[i], got[i], "entry %d", i+1)
	}
	require.Equal(t, stateOf(t, ref), stateOf(t, b))
}

func TestBoltNoSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	b, err := OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	newApplier(t, b).apply(putCmd(0, 0, "k", "v"))
	require.NoError(t, b.Sync())
	require.NoError(t, b.Close())
	b, err = OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	got, err := b.Get([]byte("k"))
	require.NoError(t, err)
	require.True(t, got.Found)
	require.NoError(t, b.Sync())
}

func TestBoltOpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	require.NoError(t, os.WriteFile(garbage, bytes.Repeat([]byte("not a bbolt file "), 1000), 0o600))
	_, err := OpenBolt(garbage, Options{})
	require.Error(t, err)
	require.Contains(t, err.Error(), garbage)

	_, err = OpenBolt(filepath.Join(dir, "no", "such", "dir", "kv.db"), Options{})
	require.Error(t, err)

	// A second opener waits for the lock, then gives up.
	path := filepath.Join(dir, "locked.db")
	b, err := OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	_, err = OpenBolt(path, Options{LockTimeout: 50 * time.Millisecond})
	require.ErrorIs(t, err, bolterrors.ErrTimeout)
	require.ErrorContains(t, err, dir+" is in use by another process, most likely another keyvald", "the lock is named, not just a timeout")
}

// damage opens the store's file with bbolt directly and changes it.
func damage(t *testing.T, path string, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(fn))
	require.NoError(t, db.Close())
}

// seeded returns the path of a closed store holding a key and a session.
func seeded(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kv.db")
	b, err := OpenBolt(path, Options{MaxClients: 1})
	require.NoError(t, err)
	newApplier(t, b).apply(putCmd(0, 0, "k", "v"), registerCmd())
	require.NoError(t, b.Close())
	return path
}

func TestBoltCorruptLayoutRefused(t *testing.T) {
	cases := map[string]func(tx *bbolt.Tx) error{
		"future format": func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, u64(boltFormatVersion+1)) },
		"short meta":    func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyRevision, []byte{1}) },
		"no applied":    func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyApplied) },
		"no count":      func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyClientCount) },
		"lost bucket":   func(tx *bbolt.Tx) error { return tx.DeleteBucket(bucketLRU) },
	}
	for name, fn := range cases {
		t.Run(name, func(t *testing.T) {
			path := seeded(t)
			damage(t, path, fn)
			_, err := OpenBolt(path, Options{})
			require.ErrorIs(t, err, ErrCorrupt)
		})
	}
}

// openSeeded opens seeded's store.
func openSeeded(t *testing.T) *Bolt {
	t.Helper()
	b, err := OpenBolt(seeded(t), Options{MaxClients: 1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// damageLive changes an open store's file under it, its counters left as
// they were, as a disk fault would.
func damageLive(t *testing.T, b *Bolt, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	require.NoError(t, b.file.Load().db.Update(fn))
}

// requireReadsCorrupt: every read of key k, seeded's, reports ErrCorrupt.
func requireReadsCorrupt(t *testing.T, b *Bolt) {
	t.Helper()
	_, err := b.Get([]byte("k"))
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = b.Range(nil, nil, 0)
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = b.EtcdRange(&pb.RangeRequest{Key: []byte("k"), Revision: int64(b.Revision())}, 0)
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = b.Snapshot(&bytes.Buffer{})
	require.ErrorIs(t, err, ErrCorrupt)
}

// TestBoltCorruptDataReported: data the store could not have written is
// an error (the node must stop), never a panic or a wrong answer, and a
// failed Apply leaves the store as it was. Found while the store runs, it
// fails what reads it; found when the file is opened (where the key index
// is built from the history, and the bytes it holds are counted), the file
// is ErrDamaged, which the server rebuilds from its snapshot and log.
func TestBoltCorruptDataReported(t *testing.T) {
	// reopenDamaged: the closed store's file no longer opens.
	reopenDamaged := func(t *testing.T, b *Bolt) {
		t.Helper()
		require.NoError(t, b.Close())
		_, err := OpenBolt(b.Path(), Options{})
		require.ErrorIs(t, err, ErrDamaged)
	}
	t.Run("short value", func(t *testing.T) {
		b := openSeeded(t)
		damageLive(t, b, func(tx *bbolt.Tx) error {
			hist := tx.Bucket(bucketRevs)
			c := hist.Cursor()
			for hk, _ := c.First(); hk != nil; hk, _ = c.Next() {
				if err := hist.Put(hk, []byte{1, 2}); err != nil {
					return err
				}
			}
			return nil
		})
		requireReadsCorrupt(t, b)
		reopenDamaged(t, b)
	})
	t.Run("newest version missing from the history", func(t *testing.T) {
		b := openSeeded(t)
		damageLive(t, b, func(tx *bbolt.Tx) error {
			c := tx.Bucket(bucketRevs).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
			return nil
		})
		requireReadsCorrupt(t, b)
		reopenDamaged(t, b)
	})
	t.Run("one key's newest version missing, the rest there", func(t *testing.T) {
		// The snapshot matches the index's heads against the history
		// in one pass: a single head lost among versions and keys that
		// are all there must still be found, and named.
		b := openSeeded(t)
		a := newApplier(t, b)
		for round := range 3 {
			v := fmt.Sprint(round)
			a.apply(putCmd(0, 0, "a", v), putCmd(0, 0, "b", v))
			a.one(txnCmd(t, &pb.TxnRequest{Success: []*pb.RequestOp{
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("c"), Value: []byte(v)}}},
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("d"), Value: []byte(v)}}},
			}}))
		}
		_, err := b.Snapshot(&bytes.Buffer{})
		require.NoError(t, err)
		c := b.index.Load().get([]byte("c"))
		require.Equal(t, c.meta.modRev, b.index.Load().get([]byte("d")).meta.modRev, "c and d share a revision")
		damageLive(t, b, func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketRevs).Delete(revisionKey(nil, c.meta.modRev, []byte("c")))
		})
		_, err = b.Snapshot(&bytes.Buffer{})
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, `"c"`)
	})
	t.Run("bad session", func(t *testing.T) {
		b := openSeeded(t)
		damageLive(t, b, func(tx *bbolt.Tx) error { return tx.Bucket(bucketClients).Put(u64(2), []byte{0xff}) })
		_, err := b.Apply([]Entry{{Index: 3, Data: putCmd(2, 1, "k", "new")}})
		require.ErrorIs(t, err, ErrCorrupt)
		_, err = b.Snapshot(&bytes.Buffer{})
		require.ErrorIs(t, err, ErrCorrupt)
		got, err := b.Get([]byte("k"))
		require.NoError(t, err)
		require.Equal(t, "v", string(got.Value), "the failed batch changed nothing")
		reopenDamaged(t, b)
	})
	t.Run("session count too high", func(t *testing.T) {
		path := seeded(t)
		damage(t, path, func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyClientCount, u64(5)) })
		b, err := OpenBolt(path, Options{MaxClients: 1})
		require.NoError(t, err)
		defer b.Close()
		_, err = b.Apply([]Entry{{Index: 3, Data: registerCmd()}})
		require.ErrorIs(t, err, ErrCorrupt)
		require.Equal(t, uint64(2), b.AppliedIndex())
	})
}

// TestBoltSizes: what a compaction frees stays in the file but is no
// longer counted in use, as etcd's dbSizeInUse.
func TestBoltSizes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	b, err := OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	defer b.Close()
	a := newApplier(t, b)
	overwrite(a, 5)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	size, before, err := b.Sizes()
	require.NoError(t, err)
	require.LessOrEqual(t, size, fi.Size(), "the pages lie inside the file")
	require.LessOrEqual(t, before, size)
	require.Greater(t, before, int64(5*400*1000), "every version is in use before the compaction")

	require.Equal(t, StatusOK, a.one(EncodeCompact(b.Revision(), "")).Status)
	require.NoError(t, b.FinishCompaction(context.Background()))
	a.one(putCmd(0, 0, "one-more", "write")) // frees what the compaction's commit left pending
	sizeAfter, after, err := b.Sizes()
	require.NoError(t, err)
	require.Less(t, after, before/2, "four versions of five are free after the compaction")
	require.Greater(t, after, int64(400*1000), "the newest versions are still in use")
	require.Greater(t, sizeAfter-after, int64(3*400*1000), "the file keeps the free pages")
}
