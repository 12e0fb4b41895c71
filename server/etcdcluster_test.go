package server

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// etcdClient is etcd's own Go client on one member's client port, logged
// in as user if one is given.
func etcdClient(t *testing.T, endpoint, user, password string) *clientv3.Client {
	t.Helper()
	cli, err := etcdDial(endpoint, user, password)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

func etcdDial(endpoint, user, password string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second,
		Username: user, Password: password, Logger: zap.NewNop()})
}

// etcdCode is the gRPC code of an error clientv3 returned.
func etcdCode(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	return status.Code(err)
}

// TestEtcdMembership drives KeyVal's membership with clientv3 through a
// follower: list, add a learner, the refusals etcd's clients know, start
// the learner, promote it once it has caught up, remove it.
func TestEtcdMembership(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	follower := lead%3 + 1
	cli := etcdClient(t, c.clients[follower], "", "")

	var list *clientv3.MemberListResponse
	eventually(t, func() (err error) {
		if list, err = cli.MemberList(ctx(t)); err != nil {
			return err
		}
		for _, m := range list.Members {
			if len(m.ClientURLs) == 0 {
				return fmt.Errorf("member %d has no client URL yet", m.ID)
			}
		}
		return nil
	})
	require.Equal(t, c.servers[1].clusterID, list.Header.ClusterId)
	require.Equal(t, uint64(follower), list.Header.MemberId)
	require.Len(t, list.Members, 3)
	for _, m := range list.Members {
		id := core.NodeID(m.ID)
		require.Equal(t, []string{"http://" + c.members[id]}, m.PeerURLs)
		require.Equal(t, []string{"http://" + c.clients[id]}, m.ClientURLs)
		require.Equal(t, fmt.Sprint(m.ID), m.Name)
		require.False(t, m.IsLearner)
	}

	c.members[4], c.clients[4] = freeAddr(t), freeAddr(t)
	_, err := cli.MemberAddAsLearner(ctx(t), []string{"http://" + c.members[1]})
	require.ErrorIs(t, err, rpctypes.ErrPeerURLExist)
	// clientv3 checks URLs itself; KeyVal too, for other clients.
	_, err = pb.NewClusterClient(cli.ActiveConnection()).MemberAdd(ctx(t), &pb.MemberAddRequest{PeerURLs: []string{"127.0.0.1:1"}, IsLearner: true})
	require.Equal(t, codes.InvalidArgument, etcdCode(err), "%v", err)

	added, err := cli.MemberAddAsLearner(ctx(t), []string{"http://" + c.members[4]})
	require.NoError(t, err)
	require.Equal(t, uint64(4), added.Member.ID, "the next id above every member's")
	require.True(t, added.Member.IsLearner)
	require.Len(t, added.Members, 4)
	// etcd's --max-learners, 1 by default.
	c.members[6] = freeAddr(t)
	_, err = cli.MemberAddAsLearner(ctx(t), []string{"http://" + c.members[6]})
	require.ErrorIs(t, err, rpctypes.ErrTooManyLearners)
	delete(c.members, 6)
	list, err = cli.MemberList(ctx(t))
	require.NoError(t, err)
	require.Empty(t, memberByID(list.Members, 4).Name, "etcd's clients show a member without a name as unstarted")

	_, err = cli.MemberPromote(ctx(t), 4)
	require.ErrorIs(t, err, rpctypes.ErrMemberLearnerNotReady, "a learner that has not started is not in sync")
	_, err = cli.MemberPromote(ctx(t), uint64(lead))
	require.ErrorIs(t, err, rpctypes.ErrMemberNotLearner)
	_, err = cli.MemberRemove(ctx(t), 99)
	require.ErrorIs(t, err, rpctypes.ErrMemberNotFound)
	_, err = cli.MemberUpdate(ctx(t), 4, []string{"http://127.0.0.1:1"})
	require.Equal(t, codes.Unimplemented, etcdCode(err), "%v", err)
	_, err = cli.MemberUpdate(ctx(t), 4, []string{"http://" + c.members[4]})
	require.NoError(t, err, "an update that changes nothing succeeds")

	c.startWith(4, Config{Join: []string{c.clients[follower]}})
	eventually(t, func() error {
		_, err := cli.MemberPromote(ctx(t), 4)
		return err
	})
	list, err = cli.MemberList(ctx(t))
	require.NoError(t, err)
	require.False(t, memberByID(list.Members, 4).IsLearner)
	require.Equal(t, "4", memberByID(list.Members, 4).Name)

	removed, err := cli.MemberRemove(ctx(t), 4)
	require.NoError(t, err)
	require.Len(t, removed.Members, 3)
	select {
	case <-c.servers[4].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the removed member did not stop")
	}
	delete(c.servers, 4)
	// Ids are never reused: the next member gets 5. Added as a voter, it
	// is a learner until it has caught up, then promoted without a call.
	c.members[5], c.clients[5] = freeAddr(t), freeAddr(t)
	added, err = cli.MemberAdd(ctx(t), []string{"http://" + c.members[5]})
	require.NoError(t, err)
	require.Equal(t, uint64(5), added.Member.ID)
	require.False(t, added.Member.IsLearner)
	list, err = cli.MemberList(ctx(t))
	require.NoError(t, err)
	require.True(t, memberByID(list.Members, 5).IsLearner, "not in the quorum before it has started")
	c.startWith(5, Config{Join: []string{c.clients[follower]}})
	eventually(t, func() error {
		list, err := cli.MemberList(ctx(t))
		if err != nil {
			return err
		}
		if m := memberByID(list.Members, 5); m == nil || m.IsLearner {
			return fmt.Errorf("member 5 is not a voter yet: %v", m)
		}
		return nil
	})
}

// TestEtcdMoveLeader hands leadership over with clientv3, and gets etcd's
// refusals for a call at a follower and for a learner or unknown target.
func TestEtcdMoveLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	target := lead%3 + 1
	atLeader := etcdClient(t, c.clients[lead], "", "")
	atFollower := etcdClient(t, c.clients[target], "", "")

	_, err := atFollower.MoveLeader(ctx(t), uint64(lead))
	require.ErrorIs(t, err, rpctypes.ErrNotLeader)
	_, err = atLeader.MoveLeader(ctx(t), 99)
	require.ErrorIs(t, err, rpctypes.ErrBadLeaderTransferee)

	_, err = atLeader.MoveLeader(ctx(t), uint64(target))
	require.NoError(t, err)
	st, err := atFollower.Status(ctx(t), c.clients[target])
	require.NoError(t, err)
	require.Equal(t, uint64(target), st.Leader)
	require.Equal(t, uint64(target), st.Header.MemberId)
}

func memberByID(ms []*pb.Member, id uint64) *pb.Member {
	for _, m := range ms {
		if m.ID == id {
			return m
		}
	}
	return &pb.Member{}
}
