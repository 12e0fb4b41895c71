package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/api/backup"
	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

func plaintext() grpc.DialOption { return grpc.WithTransportCredentials(insecure.NewCredentials()) }

func (c *testCluster) endpoints() []string {
	var out []string
	for id := range c.servers {
		out = append(out, c.clients[id])
	}
	return out
}

// dump is every key of a member, with its value and version, read
// linearizably, and the revision the read saw.
func dump(t *testing.T, kv apipb.KVClient) (map[string]string, uint64, error) {
	out := map[string]string{}
	var after []byte
	for {
		resp, err := kv.Range(ctx(t), &apipb.RangeRequest{StartAfter: after, Limit: 100})
		if err != nil {
			return nil, 0, err
		}
		for _, e := range resp.Kvs {
			out[string(e.Key)] = fmt.Sprintf("%s@%d", e.Value, e.Version)
			after = e.Key
		}
		if !resp.More {
			return out, resp.Header.Revision, nil
		}
	}
}

// saveBackup writes some history into a fresh 3-member cluster (with log
// compaction, overwrites, deletes and sessions), saves a backup through a
// follower, and returns the file and the state it must hold.
func saveBackup(t *testing.T, dir string) (path string, want map[string]string, wantRev uint64) {
	t.Helper()
	src := newTestCluster(t, 3, 50)
	lead := src.leader()
	kc, err := client.New(client.Config{Endpoints: src.endpoints()})
	require.NoError(t, err)
	defer kc.Close()
	for i := range 200 {
		_, err := kc.Put(ctx(t), []byte(fmt.Sprintf("key/%03d", i)), []byte(fmt.Sprintf("value-%d", i)))
		require.NoError(t, err)
	}
	for i := 0; i < 200; i += 7 {
		_, err := kc.Put(ctx(t), []byte(fmt.Sprintf("key/%03d", i)), []byte("overwritten"))
		require.NoError(t, err)
	}
	for i := 3; i < 200; i += 11 {
		_, err := kc.Delete(ctx(t), []byte(fmt.Sprintf("key/%03d", i)))
		require.NoError(t, err)
	}
	_, err = kc.Put(ctx(t), []byte{0, 0xff, 'b'}, []byte{1, 2, 3}) // any bytes
	require.NoError(t, err)
	// A member added and removed: the source cluster's own records (an
	// address, a tombstone for id 4) must not travel with the backup.
	admin := src.admin(lead)
	_, err = admin.MemberAddLearner(ctx(t), &apipb.MemberAddLearnerRequest{Id: 4, PeerAddr: "127.0.0.1:1"})
	require.NoError(t, err)
	_, err = admin.MemberRemove(ctx(t), &apipb.MemberRemoveRequest{Id: 4})
	require.NoError(t, err)
	eventually(t, func() (err error) {
		want, wantRev, err = dump(t, src.conns[lead])
		return err
	})

	// From a follower: the backup must still hold every acknowledged write.
	var follower core.NodeID
	for id := range src.servers {
		if id != lead {
			follower = id
		}
	}
	fc, err := client.New(client.Config{Endpoints: []string{src.clients[follower]}})
	require.NoError(t, err)
	defer fc.Close()
	path = filepath.Join(dir, "backup.kvb")
	info, err := fc.SaveSnapshot(ctx(t), path)
	require.NoError(t, err)
	require.Equal(t, uint64(len(want)), info.Keys)
	require.Equal(t, wantRev, info.Revision)
	require.Equal(t, uint64(follower), info.NodeID)
	require.NotZero(t, info.Sessions, "the client's sessions are in the state")

	// Written after the backup: must not be in it.
	_, err = kc.Put(ctx(t), []byte("after-backup"), []byte("x"))
	require.NoError(t, err)
	return path, want, wantRev
}

// TestBackupRestoreIntoNewCluster: a backup saved from one cluster starts a
// new 4-member cluster (id 4 was removed in the old one) (other addresses, every member restored from the
// same file) in which every member holds exactly the saved keys, values,
// versions and revision, and which then takes writes.
func TestBackupRestoreIntoNewCluster(t *testing.T) {
	path, want, wantRev := saveBackup(t, t.TempDir())

	c := startClusterWith(t, 4, func(_ core.NodeID, cfg *Config) {
		require.NoError(t, Restore(*cfg, path))
	}, plaintext())
	lead := c.leader()
	for id := range c.members {
		var got map[string]string
		var rev uint64
		eventually(t, func() (err error) {
			if got, rev, err = dump(t, c.conns[id]); err != nil {
				return err
			}
			if len(got) != len(want) {
				return fmt.Errorf("node %d has %d keys, want %d", id, len(got), len(want))
			}
			return nil
		})
		require.Equal(t, want, got, "node %d (leader %d)", id, lead)
		require.Equal(t, wantRev, rev, "node %d keeps the revision", id)
	}
	kc, err := client.New(client.Config{Endpoints: c.endpoints()})
	require.NoError(t, err)
	defer kc.Close()
	put, err := kc.Put(ctx(t), []byte("new"), []byte("1"))
	require.NoError(t, err)
	require.Equal(t, wantRev+1, put.Version, "revisions continue from the backup's")
	g, err := kc.Get(ctx(t), []byte("after-backup"))
	require.NoError(t, err)
	require.False(t, g.Found, "a write made after the backup is not in it")

	// A restarted member resumes from its own data, without the file.
	c.stop(1)
	s, err := New(Config{ID: 1, DataDir: filepath.Join(c.dir, "1"), ClientAddr: c.clients[1], PeerAddr: c.members[1],
		InitialCluster: c.members, Logger: c.servers[2].cfg.Logger})
	require.NoError(t, err)
	s.Start()
	c.servers[1] = s
	eventually(t, func() error {
		g, err := c.conns[1].Get(ctx(t), &apipb.GetRequest{Key: []byte("new")})
		if err == nil && !g.Found {
			return fmt.Errorf("not yet")
		}
		return err
	})

	// Restoring over a member's data is refused, and changes nothing.
	err = Restore(c.servers[2].cfg, path)
	require.ErrorContains(t, err, "is not empty")
	// A restore starts a new cluster: it needs the members, not --join.
	fresh := Config{ID: 9, DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", Join: []string{c.clients[1]}}
	require.ErrorContains(t, Restore(fresh, path), "not --join")
	fresh.Join, fresh.InitialCluster = nil, c.members
	require.ErrorContains(t, Restore(fresh, path), "node 9 is not in the new cluster")
}

// TestRestoreRefusesDamagedBackup: a backup with one flipped byte, or cut
// short, is refused before anything is written, with a message that says
// the file is damaged.
func TestRestoreRefusesDamagedBackup(t *testing.T) {
	dir := t.TempDir()
	path, _, _ := saveBackup(t, dir)
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	cfg := Config{ID: 1, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", InitialCluster: map[core.NodeID]string{1: "127.0.0.1:1"}}

	for name, damaged := range map[string][]byte{
		"flipped": flip(good, len(good)/2),
		"cut":     good[:len(good)-100],
		"header":  flip(good, 3),
	} {
		t.Run(name, func(t *testing.T) {
			bad := filepath.Join(dir, name+".kvb")
			require.NoError(t, os.WriteFile(bad, damaged, 0o600))
			cfg.DataDir = filepath.Join(t.TempDir(), "data")
			err := Restore(cfg, bad)
			require.ErrorIs(t, err, backup.ErrCorrupt)
			require.ErrorContains(t, err, bad)
			_, statErr := os.Stat(cfg.DataDir)
			require.True(t, os.IsNotExist(statErr), "nothing is written for a damaged backup")
		})
	}
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	require.NoError(t, Restore(cfg, path), "the undamaged file restores")
}

func flip(b []byte, at int) []byte {
	out := append([]byte(nil), b...)
	out[at] ^= 0x10
	return out
}

// BenchmarkBackupSave measures SaveSnapshot end to end (ReadIndex, the
// state encoded from a read transaction once to count and once onto the
// stream over loopback, SHA-256 on both sides, fsync and rename) of a
// 1-member cluster holding 16 MiB of values.
func BenchmarkBackupSave(b *testing.B) {
	const keys, valueBytes = 4096, 4096
	c := newTestCluster(b, 1, 0)
	c.leader()
	kc, err := client.New(client.Config{Endpoints: c.endpoints()})
	require.NoError(b, err)
	defer kc.Close()
	value := make([]byte, valueBytes)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < keys; i += 8 {
				if _, err := kc.Put(context.Background(), []byte(fmt.Sprintf("key/%06d", i)), value); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	require.NoError(b, <-errs)
	path := filepath.Join(b.TempDir(), "b.kvb")
	b.ResetTimer()
	var info client.SnapshotInfo
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		info, err = kc.SaveSnapshot(ctx, path)
		cancel()
		require.NoError(b, err)
	}
	b.SetBytes(int64(info.DataBytes))
}
