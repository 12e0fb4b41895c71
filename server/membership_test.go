package server

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

func (c *testCluster) admin(id core.NodeID) apipb.ClusterClient {
	conn, err := grpc.NewClient(c.clients[id], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(c.t, err)
	c.t.Cleanup(func() { conn.Close() })
	return apipb.NewClusterClient(conn)
}

func TestJoinBySnapshotPromoteAndRemove(t *testing.T) {
	c := newTestCluster(t, 3, 20) // snapshots every 20 entries: the joiner needs one
	lead := c.leader()
	for k := range 60 {
		eventually(t, func() error {
			_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%d", k)), Value: []byte("v")})
			return err
		})
	}
	follower := lead%3 + 1
	admin := c.admin(follower) // a follower forwards changes to the leader

	// Joining before being added is refused with the command to run.
	c.members[4], c.clients[4] = freeAddr(t), freeAddr(t)
	_, err := New(Config{ID: 4, DataDir: filepath.Join(c.dir, "4"), ClientAddr: c.clients[4], PeerAddr: c.members[4],
		Join: []string{c.clients[lead]}})
	require.ErrorContains(t, err, "member add-learner --id 4")
	require.NoError(t, os.RemoveAll(filepath.Join(c.dir, "4")))

	_, err = admin.MemberAddLearner(ctx(t), &apipb.MemberAddLearnerRequest{Id: 4, PeerAddr: c.members[4]})
	require.NoError(t, err)
	// Promoting a learner that has not even started is refused.
	_, err = admin.MemberPromote(ctx(t), &apipb.MemberPromoteRequest{Id: 4})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)

	c.startWith(4, Config{Join: []string{c.clients[follower]}})
	eventually(t, func() error {
		resp, err := c.conns[4].Get(ctx(t), &apipb.GetRequest{Key: []byte("k59"), Serializable: true})
		if err == nil && !resp.Found {
			err = fmt.Errorf("not caught up")
		}
		return err
	})
	eventually(t, func() error {
		_, err := admin.MemberPromote(ctx(t), &apipb.MemberPromoteRequest{Id: 4})
		return err
	})

	// The address book is KeyVal's own: clients neither see nor write it.
	list, err := c.conns[4].Range(ctx(t), &apipb.RangeRequest{})
	require.NoError(t, err)
	require.Len(t, list.Kvs, 60)
	_, err = c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("\x00keyval/member/9"), Value: []byte("x")})
	require.Equal(t, codes.InvalidArgument, status.Code(err))

	// A joined node restarts from its own data directory.
	c.stop(4)
	c.startWith(4, Config{})
	eventually(t, func() error {
		_, err := c.conns[4].Put(ctx(t), &apipb.PutRequest{Key: []byte("after-restart"), Value: []byte("v")})
		return err
	})

	// Remove the leader: it hands over, stops, and says why.
	_, err = admin.MemberRemove(ctx(t), &apipb.MemberRemoveRequest{Id: uint64(lead)})
	require.NoError(t, err)
	select {
	case <-c.servers[lead].Done():
		require.ErrorIs(t, c.servers[lead].Err(), ErrRemoved)
	case <-time.After(10 * time.Second):
		t.Fatal("the removed leader did not stop")
	}
	delete(c.servers, lead)
	// Its data directory says so to tools that cannot read the state
	// database (make cluster-start).
	marker := filepath.Join(c.dir, fmt.Sprint(lead), RemovedMarker)
	text, err := os.ReadFile(marker)
	require.NoError(t, err)
	require.Contains(t, string(text), fmt.Sprintf("node %d was removed from the cluster (configuration change at log index", lead))
	list2, err := admin.MemberList(ctx(t), &apipb.MemberListRequest{})
	require.NoError(t, err)
	require.Len(t, list2.Members, 3)
	require.NotEqual(t, uint64(lead), list2.LeaderId)
	// Its id is never used again, and its data directory refuses to serve.
	_, err = admin.MemberAddLearner(ctx(t), &apipb.MemberAddLearnerRequest{Id: uint64(lead), PeerAddr: c.members[lead]})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	_, err = New(Config{ID: lead, DataDir: filepath.Join(c.dir, fmt.Sprint(lead)), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t),
		InitialCluster: map[core.NodeID]string{1: c.members[1], 2: c.members[2], 3: c.members[3]}})
	require.ErrorContains(t, err, "was removed from the cluster")
	// A directory removed before markers existed gets one when it is refused.
	require.NoError(t, os.Remove(marker))
	_, err = New(Config{ID: lead, DataDir: filepath.Join(c.dir, fmt.Sprint(lead)), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t),
		InitialCluster: map[core.NodeID]string{1: c.members[1], 2: c.members[2], 3: c.members[3]}})
	require.ErrorContains(t, err, "was removed from the cluster")
	require.FileExists(t, marker)
}

// A member that was down while the membership changed does not know the
// members added meanwhile. When one of them leads, the lagging member must
// still catch up from it — its members vouch for the newcomer and tell its
// address — rather than drop its messages as coming from outside its
// configuration.
func TestLaggingMemberCatchesUpFromANewLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	lagging := lead%3 + 1
	admin := c.admin(lead)
	c.stop(lagging)
	delete(c.conns, lagging)
	initial := maps.Clone(c.members)

	c.members[4], c.clients[4] = freeAddr(t), freeAddr(t)
	_, err := admin.MemberAddLearner(ctx(t), &apipb.MemberAddLearnerRequest{Id: 4, PeerAddr: c.members[4]})
	require.NoError(t, err)
	c.startWith(4, Config{Join: []string{c.clients[lead]}})
	eventually(t, func() error {
		_, err := admin.MemberPromote(ctx(t), &apipb.MemberPromoteRequest{Id: 4})
		return err
	})
	eventually(t, func() error {
		s := c.servers[c.leader()]
		if s.cfg.ID == 4 {
			return nil
		}
		var err error
		if derr := s.do(ctx(t), func() { err = s.rep.Node().TransferLeadership(4) }); derr != nil {
			return derr
		}
		if err == nil {
			err = fmt.Errorf("leadership is moving to 4")
		}
		return err
	})
	c.startWith(lagging, Config{InitialCluster: initial}) // its log still says {1, 2, 3}
	eventually(t, func() error {
		_, err := c.conns[4].Put(ctx(t), &apipb.PutRequest{Key: []byte("k"), Value: []byte("v")})
		return err
	})
	eventually(t, func() error {
		g, err := c.conns[lagging].Get(ctx(t), &apipb.GetRequest{Key: []byte("k"), Serializable: true})
		if err == nil && !g.Found {
			err = fmt.Errorf("node %d has not caught up", lagging)
		}
		return err
	})
}

// A member that was down while another was added, and that the leader then
// brought up to date with a snapshot (the configuration change compacted
// away), must learn the newcomer's address from the snapshot: once it
// leads, it has to replicate to the newcomer too. (Found by kvchaos: a
// member rebuilt from an old snapshot became leader and never sent to a
// replacement member again.)
func TestMemberBehindASnapshotLearnsMembersAddedMeanwhile(t *testing.T) {
	c := newTestCluster(t, 3, 10) // snapshots every 10 entries: the lagging member needs one
	lead := c.leader()
	lagging := lead%3 + 1
	c.stop(lagging)
	delete(c.conns, lagging)
	initial := maps.Clone(c.members)

	c.addVoter(t, 4)
	putThroughLeader(t, c, 40) // the leader compacts its log past the change

	c.startWith(lagging, Config{InitialCluster: initial}) // its log still says {1, 2, 3}
	requireLeadsAndReaches(t, c, lagging, 4)
}

// A member whose state.db was damaged while it was down rebuilds it at start
// from its snapshot and WAL, and must read the members recorded there
// again: the book it read before the rebuild lacks the member added by
// configuration change.
func TestMemberWithARebuiltStateDBKnowsEveryMember(t *testing.T) {
	c := newTestCluster(t, 3, 10)
	c.addVoter(t, 4)
	putThroughLeader(t, c, 30)
	f := c.leader()%3 + 1
	initial := map[core.NodeID]string{1: c.members[1], 2: c.members[2], 3: c.members[3]}
	c.stop(f)
	zeroPages(t, filepath.Join(c.dir, fmt.Sprint(f), "state.db"), 0, 1)
	c.startWith(f, Config{InitialCluster: initial})
	requireLeadsAndReaches(t, c, f, 4)
}

// requireLeadsAndReaches makes leader the leader, writes through it, and
// requires member to apply the write, and leader to know every member's
// peer address.
func requireLeadsAndReaches(t *testing.T, c *testCluster, leader, member core.NodeID) {
	t.Helper()
	eventually(t, func() error {
		s := c.servers[c.leader()]
		if s.cfg.ID == leader {
			return nil
		}
		var err error
		if derr := s.do(ctx(t), func() { err = s.rep.Node().TransferLeadership(leader) }); derr != nil {
			return derr
		}
		if err == nil {
			err = fmt.Errorf("leadership is moving to %d", leader)
		}
		return err
	})
	key := fmt.Appendf(nil, "written through %d", leader)
	eventually(t, func() error {
		_, err := c.conns[leader].Put(ctx(t), &apipb.PutRequest{Key: key, Value: []byte("v")})
		return err
	})
	eventually(t, func() error {
		g, err := c.conns[member].Get(ctx(t), &apipb.GetRequest{Key: key, Serializable: true})
		if err == nil && !g.Found {
			err = fmt.Errorf("node %d has not heard from leader %d", member, leader)
		}
		return err
	})
	list, err := c.admin(leader).MemberList(ctx(t), &apipb.MemberListRequest{})
	require.NoError(t, err)
	for _, m := range list.Members {
		require.Equal(t, c.members[core.NodeID(m.Id)], m.PeerAddress, "member %d's address as node %d knows it", m.Id, leader)
	}
}

// A joined member whose state.db and snapshot files were damaged starts its
// log over from its bootstrap state, which for a joined node holds no
// configuration. If the leader is then a member added after it joined, it
// knows neither that member's id nor its address; it must ask the members
// it was told of rather than refuse the leader's messages for ever. (Found
// by kvchaos.)
func TestJoinedMemberStartedOverAdmitsALeaderAddedAfterIt(t *testing.T) {
	c := newTestCluster(t, 3, 10)
	c.addVoter(t, 4)
	c.addVoter(t, 5)
	putThroughLeader(t, c, 30)
	c.stop(4)
	delete(c.conns, 4)
	damageStateAndSnapshots(t, filepath.Join(c.dir, "4"))
	requireLeadsAndReaches(t, c, 5, 1)

	c.startWith(4, Config{})
	eventually(t, func() error {
		_, err := c.conns[5].Put(ctx(t), &apipb.PutRequest{Key: []byte("after the start-over"), Value: []byte("v")})
		return err
	})
	eventually(t, func() error {
		g, err := c.conns[4].Get(ctx(t), &apipb.GetRequest{Key: []byte("after the start-over"), Serializable: true})
		if err == nil && !g.Found {
			err = fmt.Errorf("node 4 has not caught up from leader 5")
		}
		return err
	})
}

// addVoter adds node id as a learner through the leader, starts it with
// --join, and promotes it.
func (c *testCluster) addVoter(t *testing.T, id core.NodeID) {
	t.Helper()
	lead := c.leader()
	admin := c.admin(lead)
	c.members[id], c.clients[id] = freeAddr(t), freeAddr(t)
	_, err := admin.MemberAddLearner(ctx(t), &apipb.MemberAddLearnerRequest{Id: uint64(id), PeerAddr: c.members[id]})
	require.NoError(t, err)
	c.startWith(id, Config{Join: []string{c.clients[lead]}})
	eventually(t, func() error {
		_, err := admin.MemberPromote(ctx(t), &apipb.MemberPromoteRequest{Id: uint64(id)})
		return err
	})
}

// A member removed while it was down, and so far behind that the leader
// can tell it of its removal only with a snapshot, learns it from the
// snapshot's member records and stops, as it would on applying the
// removal entry.
func TestRemovedMemberBehindASnapshotStops(t *testing.T) {
	c := newTestCluster(t, 3, 10)
	lead := c.leader()
	gone := lead%3 + 1
	c.stop(gone)
	eventually(t, func() error {
		_, err := c.admin(c.leader()).MemberRemove(ctx(t), &apipb.MemberRemoveRequest{Id: uint64(gone)})
		return err
	})
	putThroughLeader(t, c, 40) // the leader compacts its log past the removal

	c.start(gone)
	select {
	case <-c.servers[gone].Done():
		require.ErrorIs(t, c.servers[gone].Err(), ErrRemoved)
		require.ErrorContains(t, c.servers[gone].Err(), "snapshot at log index")
	case <-time.After(10 * time.Second):
		t.Fatalf("node %d, removed while down, did not stop", gone)
	}
	delete(c.servers, gone)
}
