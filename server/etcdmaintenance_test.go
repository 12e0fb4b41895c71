package server

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/api/backup"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

func putKeys(t *testing.T, kv apipb.KVClient, n int) {
	t.Helper()
	for i := range n {
		eventually(t, func() error {
			_, err := kv.Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%03d", i)), Value: []byte(fmt.Sprint(i))})
			return err
		})
	}
}

// TestEtcdStatusAndAlarms: every member's Status as clientv3 reads it, and
// NOSPACE raised, seen, enforced and disarmed through etcd's Alarm.
func TestEtcdStatusAndAlarms(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	putKeys(t, c.conns[lead], 10)
	_, rev, err := dump(t, c.conns[lead])
	require.NoError(t, err)
	clis := map[core.NodeID]*clientv3.Client{}
	for id := range c.members {
		cli := etcdClient(t, c.clients[id], "", "")
		clis[id] = cli
		var st *clientv3.StatusResponse
		eventually(t, func() (err error) {
			if st, err = cli.Status(ctx(t), c.clients[id]); err == nil && st.Header.Revision != int64(rev) {
				err = fmt.Errorf("node %d is at revision %d, not %d", id, st.Header.Revision, rev)
			}
			return err
		})
		require.Equal(t, uint64(id), st.Header.MemberId)
		require.Equal(t, c.servers[id].clusterID, st.Header.ClusterId)
		require.Equal(t, uint64(lead), st.Leader)
		require.Equal(t, etcdVersion, st.Version)
		require.Positive(t, st.DbSize)
		require.Positive(t, st.DbSizeInUse)
		require.LessOrEqual(t, st.DbSizeInUse, st.DbSize)
		require.Positive(t, st.RaftTerm)
		require.GreaterOrEqual(t, st.RaftIndex, st.RaftAppliedIndex)
		require.Positive(t, st.RaftAppliedIndex)
		require.False(t, st.IsLearner)
		require.Empty(t, st.Errors)
	}

	cli := clis[lead]
	alarms, err := cli.AlarmList(ctx(t))
	require.NoError(t, err)
	require.Empty(t, alarms.Alarms)
	_, err = pb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx(t),
		&pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType_CORRUPT})
	require.Equal(t, codes.InvalidArgument, etcdCode(err), "%v", err)
	eventually(t, func() error { // at the leader, should it have changed
		lead = c.leader()
		cli = clis[lead]
		_, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx(t),
			&pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType_NOSPACE, MemberID: uint64(lead)})
		return err
	})
	alarms, err = cli.AlarmList(ctx(t))
	require.NoError(t, err)
	require.Equal(t, []*pb.AlarmMember{{MemberID: uint64(lead), Alarm: pb.AlarmType_NOSPACE}}, alarms.Alarms)
	st, err := cli.Status(ctx(t), c.clients[lead])
	require.NoError(t, err)
	require.Equal(t, []string{fmt.Sprintf("memberID:%d alarm:NOSPACE", lead)}, st.Errors)
	_, err = c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("refused"), Value: []byte("x")})
	require.Equal(t, codes.ResourceExhausted, etcdCode(err), "%v", err)
	_, err = cli.Put(ctx(t), "refused", "x")
	require.ErrorIs(t, err, rpctypes.ErrNoSpace, "etcd's clients know the quota by etcd's error")
	_, err = cli.Txn(ctx(t)).If(clientv3.Compare(clientv3.Version("absent"), ">", 0)).Then(clientv3.OpPut("refused", "x")).Commit()
	require.ErrorIs(t, err, rpctypes.ErrNoSpace, "a put in either branch, taken or not, is refused, as in etcd")

	_, err = cli.AlarmDisarm(ctx(t), &clientv3.AlarmMember{MemberID: uint64(lead), Alarm: pb.AlarmType_NOSPACE})
	require.NoError(t, err)
	alarms, err = cli.AlarmList(ctx(t))
	require.NoError(t, err)
	require.Empty(t, alarms.Alarms)
	_, err = c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("accepted"), Value: []byte("x")})
	require.NoError(t, err)

	follower := lead%3 + 1
	_, err = pb.NewMaintenanceClient(clis[follower].ActiveConnection()).Alarm(ctx(t),
		&pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType_NOSPACE})
	require.NoError(t, err, "a follower forwards the alarm to the leader")
	eventually(t, func() error {
		alarms, err := clis[follower].AlarmList(ctx(t))
		if err == nil && (len(alarms.Alarms) != 1 || alarms.Alarms[0].MemberID != uint64(follower)) {
			err = fmt.Errorf("alarms %v, want NOSPACE of member %d", alarms.Alarms, follower)
		}
		return err
	})
	_, err = clis[follower].AlarmDisarm(ctx(t), &clientv3.AlarmMember{MemberID: uint64(follower), Alarm: pb.AlarmType_NOSPACE})
	require.NoError(t, err)

	_, err = cli.Defragment(ctx(t), c.clients[lead])
	require.NoError(t, err)
	got, err := cli.Get(ctx(t), "accepted", clientv3.WithSerializable())
	require.NoError(t, err, "the defragmented member still serves")
	require.Len(t, got.Kvs, 1)
	require.Equal(t, "x", string(got.Kvs[0].Value), "what the member held is in the new file")
	_, err = cli.Put(ctx(t), "after-defragment", "y")
	require.NoError(t, err, "and applies what follows")
	_, err = pb.NewMaintenanceClient(cli.ActiveConnection()).Hash(ctx(t), &pb.HashRequest{})
	require.Equal(t, codes.Unimplemented, etcdCode(err), "%v", err)
}

// TestEtcdHashKV: after writes and a compaction, every member of a
// 3-member cluster gives the same hash at the same revision, each from its
// own state; different revisions give different hashes; revisions
// compacted or not reached get etcd's errors.
func TestEtcdHashKV(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	cli := etcdClient(t, c.clients[lead], "", "")
	var revs []int64
	for i := range 6 {
		eventually(t, func() error {
			r, err := cli.Put(ctx(t), fmt.Sprintf("k%d", i%4), fmt.Sprint(i))
			if err == nil {
				revs = append(revs, r.Header.Revision)
			}
			return err
		})
	}
	never, err := cli.HashKV(ctx(t), c.clients[lead], 0)
	require.NoError(t, err)
	require.EqualValues(t, -1, never.CompactRevision, "never compacted, as etcd says it")
	compactAt := revs[1]
	_, err = cli.Compact(ctx(t), compactAt)
	require.NoError(t, err)
	last := revs[len(revs)-1]

	hashes := map[int64]uint32{} // by revision, as the first member gave it
	for id, addr := range c.clients {
		m := etcdClient(t, addr, "", "")
		for _, rev := range []int64{compactAt, last - 1, last} {
			var h *clientv3.HashKVResponse
			eventually(t, func() (err error) { // once the member has applied the compaction
				if h, err = m.HashKV(ctx(t), addr, rev); err == nil && h.CompactRevision != compactAt {
					err = fmt.Errorf("member %d has compacted at %d, not yet at %d", id, h.CompactRevision, compactAt)
				}
				return err
			})
			require.Equal(t, rev, h.HashRevision)
			require.Equal(t, uint64(id), h.Header.MemberId)
			require.GreaterOrEqual(t, h.Header.Revision, last)
			if want, ok := hashes[rev]; ok {
				require.Equal(t, want, h.Hash, "member %d at revision %d", id, rev)
			}
			hashes[rev] = h.Hash
		}
		latest, err := m.HashKV(ctx(t), addr, 0)
		require.NoError(t, err)
		require.Equal(t, last, latest.HashRevision, "0 hashes the current revision")
		require.Equal(t, hashes[last], latest.Hash)
		_, err = m.HashKV(ctx(t), addr, compactAt-1)
		require.ErrorIs(t, err, rpctypes.ErrCompacted)
		_, err = m.HashKV(ctx(t), addr, last+1)
		require.ErrorIs(t, err, rpctypes.ErrFutureRev)
	}
	require.NotEqual(t, hashes[compactAt], hashes[last-1])
	require.NotEqual(t, hashes[last-1], hashes[last])
}

// TestEtcdSnapshotRestores saves a snapshot with clientv3 from a follower,
// as etcdctl does, checks what etcdctl checks of the file, and starts a
// new cluster from it with keyvald's restore.
func TestEtcdSnapshotRestores(t *testing.T) {
	src := newTestCluster(t, 3, 20)
	lead := src.leader()
	putKeys(t, src.conns[lead], 150) // past a few Raft snapshots
	want, wantRev, err := dump(t, src.conns[lead])
	require.NoError(t, err)

	cli := etcdClient(t, src.clients[lead%3+1], "", "")
	resp, err := cli.SnapshotWithVersion(ctx(t))
	require.NoError(t, err)
	require.Equal(t, etcdVersion, resp.Version)
	path := filepath.Join(t.TempDir(), "snapshot.db")
	f, err := os.Create(path)
	require.NoError(t, err)
	size, err := io.Copy(f, resp.Snapshot)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, int64(32), size%512, "etcdctl snapshot save refuses a file without this length")

	b, err := backup.Open(path)
	require.NoError(t, err)
	require.Equal(t, uint64(len(want)), b.Info.KeyCount)
	require.Equal(t, wantRev, b.Info.Revision)
	require.NoError(t, b.Close())

	c := startClusterWith(t, 3, func(_ core.NodeID, cfg *Config) {
		require.NoError(t, Restore(*cfg, path))
	}, plaintext())
	c.leader()
	for id := range c.members {
		eventually(t, func() error {
			got, rev, err := dump(t, c.conns[id])
			if err == nil && (len(got) != len(want) || rev != wantRev) {
				err = fmt.Errorf("node %d has %d keys at revision %d", id, len(got), rev)
			}
			return err
		})
	}
}

// TestStatusAppliedIsTheStoresApplied: the core takes a snapshot's index
// as applied as soon as it takes the snapshot in; until the store is
// restored from it, a status reports the store's applied index.
func TestStatusAppliedIsTheStoresApplied(t *testing.T) {
	store, err := kvstore.OpenBolt(filepath.Join(t.TempDir(), "state.db"), kvstore.Options{NoSync: true})
	require.NoError(t, err)
	defer store.Close()
	_, err = store.Apply([]kvstore.Entry{{Index: 1}, {Index: 2}})
	require.NoError(t, err)
	s := &Server{store: store}
	require.Equal(t, uint64(2), s.appliedIndex(core.Status{Applied: 9}), "a snapshot at 9 taken in, not yet restored")
	require.Equal(t, uint64(1), s.appliedIndex(core.Status{Applied: 1}), "the store a batch ahead of the core")
}

// TestEtcdStatusWithoutLeader: a member that knows no leader says so in
// Status's errors, as etcd's does (etcdctl endpoint status shows it).
func TestEtcdStatusWithoutLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	alone := lead%3 + 1
	st, err := etcdClient(t, c.clients[alone], "", "").Status(ctx(t), c.clients[alone])
	require.NoError(t, err)
	require.NotContains(t, st.Errors, "etcdserver: no leader")
	for id := range c.servers {
		if id != alone {
			c.stop(id)
		}
	}
	cli := etcdClient(t, c.clients[alone], "", "")
	eventually(t, func() error {
		st, err := cli.Status(ctx(t), c.clients[alone])
		if err != nil {
			return err
		}
		if st.Leader != 0 || !slices.Contains(st.Errors, "etcdserver: no leader") {
			return fmt.Errorf("leader %d, errors %v", st.Leader, st.Errors)
		}
		return nil
	})
}
