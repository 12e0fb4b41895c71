package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// TestEtcdLease drives etcd's Lease through clientv3 on a follower (grants
// and revokes are forwarded to the leader, TimeToLive asks it): grant with
// and without an id, the minimum TTL, put with a lease, TimeToLive with
// keys, Leases, revoke deleting the keys at one revision, and the errors.
func TestEtcdLease(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	follower := c.leader()%3 + 1
	cli := etcdClient(t, c.clients[follower], "", "")
	raw := pb.NewLeaseClient(cli.ActiveConnection())

	var g *clientv3.LeaseGrantResponse
	eventually(t, func() (err error) { g, err = cli.Grant(ctx(t), 60); return err })
	require.Positive(t, int64(g.ID))
	require.Equal(t, int64(60), g.TTL)

	short, err := cli.Grant(ctx(t), 0)
	require.NoError(t, err)
	require.Equal(t, c.servers[follower].minLeaseTTL(), short.TTL, "a TTL under the minimum is raised to it, as etcd does")
	require.NotEqual(t, g.ID, short.ID)

	named, err := raw.LeaseGrant(ctx(t), &pb.LeaseGrantRequest{ID: 42, TTL: 60})
	require.NoError(t, err)
	require.Equal(t, int64(42), named.ID)
	_, err = raw.LeaseGrant(ctx(t), &pb.LeaseGrantRequest{ID: 42, TTL: 60})
	require.ErrorIs(t, err, rpctypes.ErrGRPCLeaseExist)
	_, err = cli.Grant(ctx(t), maxLeaseTTL+1)
	require.ErrorIs(t, err, rpctypes.ErrLeaseTTLTooLarge)

	_, err = cli.Put(ctx(t), "/l/a", "1", clientv3.WithLease(g.ID))
	require.NoError(t, err)
	p, err := cli.Put(ctx(t), "/l/b", "2", clientv3.WithLease(g.ID))
	require.NoError(t, err)
	_, err = cli.Put(ctx(t), "/l/c", "3", clientv3.WithLease(42))
	require.NoError(t, err)
	_, err = cli.Put(ctx(t), "/l/d", "4", clientv3.WithLease(12345))
	require.ErrorIs(t, err, rpctypes.ErrLeaseNotFound)
	get, err := cli.Get(ctx(t), "/l/a")
	require.NoError(t, err)
	require.Equal(t, int64(g.ID), get.Kvs[0].Lease)
	cmp, err := cli.Txn(ctx(t)).If(clientv3.Compare(clientv3.LeaseValue("/l/a"), "=", g.ID)).Commit()
	require.NoError(t, err)
	require.True(t, cmp.Succeeded, "a transaction compares a key's lease")

	ttl, err := cli.TimeToLive(ctx(t), g.ID, clientv3.WithAttachedKeys())
	require.NoError(t, err)
	require.Equal(t, int64(60), ttl.GrantedTTL)
	require.True(t, ttl.TTL > 0 && ttl.TTL <= 60, "remaining TTL %d", ttl.TTL)
	require.ElementsMatch(t, [][]byte{[]byte("/l/a"), []byte("/l/b")}, ttl.Keys)
	ttl, err = cli.TimeToLive(ctx(t), g.ID)
	require.NoError(t, err)
	require.Empty(t, ttl.Keys, "keys only when asked for")

	leases, err := cli.Leases(ctx(t))
	require.NoError(t, err)
	var ids []int64
	for _, l := range leases.Leases {
		ids = append(ids, int64(l.ID))
	}
	require.ElementsMatch(t, []int64{int64(g.ID), int64(short.ID), 42}, ids)

	rev, err := cli.Revoke(ctx(t), g.ID)
	require.NoError(t, err)
	require.Equal(t, p.Header.Revision+2, rev.Header.Revision, "both keys deleted at one revision, after /l/c's put")
	gone, err := cli.Get(ctx(t), "/l/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, gone.Kvs, 1)
	require.Equal(t, "/l/c", string(gone.Kvs[0].Key))
	_, err = cli.Revoke(ctx(t), g.ID)
	require.ErrorIs(t, err, rpctypes.ErrLeaseNotFound)
	ttl, err = cli.TimeToLive(ctx(t), g.ID)
	require.NoError(t, err)
	require.Equal(t, int64(-1), ttl.TTL, "a lease that does not exist, as etcd answers")
}

// TestEtcdLeaseExpires: a lease nobody keeps alive expires, and its keys
// are deleted on every member at one revision.
func TestEtcdLeaseExpires(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	cli := etcdClient(t, c.clients[lead%3+1], "", "")
	var g *clientv3.LeaseGrantResponse
	eventually(t, func() (err error) { g, err = cli.Grant(ctx(t), 1); return err })
	_, err := cli.Put(ctx(t), "/e/a", "1", clientv3.WithLease(g.ID))
	require.NoError(t, err)
	p, err := cli.Put(ctx(t), "/e/b", "2", clientv3.WithLease(g.ID))
	require.NoError(t, err)

	for id := range c.servers {
		member := etcdClient(t, c.clients[id], "", "")
		eventually(t, func() error {
			r, err := member.Get(ctx(t), "/e/", clientv3.WithPrefix(), clientv3.WithRev(p.Header.Revision+1), clientv3.WithSerializable())
			if err != nil {
				return err
			}
			if len(r.Kvs) != 0 {
				return fmt.Errorf("member %d still has %d keys at revision %d", id, len(r.Kvs), p.Header.Revision+1)
			}
			return nil
		})
		before, err := member.Get(ctx(t), "/e/", clientv3.WithPrefix(), clientv3.WithRev(p.Header.Revision), clientv3.WithSerializable())
		require.NoError(t, err)
		require.Len(t, before.Kvs, 2, "member %d: both keys until the revision that deleted both", id)
	}
	ttl, err := cli.TimeToLive(ctx(t), g.ID)
	require.NoError(t, err)
	require.Equal(t, int64(-1), ttl.TTL)
}

// TestEtcdLeaseKeepAlive: leases kept alive by clientv3, one through the
// leader and one through a follower (which forwards each keepalive),
// outlive several TTLs.
func TestEtcdLeaseKeepAlive(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	for _, id := range []core.NodeID{lead, lead%3 + 1} {
		cli := etcdClient(t, c.clients[id], "", "")
		var g *clientv3.LeaseGrantResponse
		eventually(t, func() (err error) { g, err = cli.Grant(ctx(t), 2); return err })
		key := fmt.Sprintf("/k/%d", id)
		_, err := cli.Put(ctx(t), key, "v", clientv3.WithLease(g.ID))
		require.NoError(t, err)
		kctx, cancel := context.WithCancel(context.Background())
		ch, err := cli.KeepAlive(kctx, g.ID)
		require.NoError(t, err)
		until := time.Now().Add(3 * 2 * time.Second)
		var answers int
		for time.Now().Before(until) {
			r := nextKeepAlive(t, ch)
			require.Equal(t, int64(2), r.TTL, "through member %d", id)
			answers++
		}
		cancel()
		require.Greater(t, answers, 4, "keepalives through member %d", id)
		r, err := cli.Get(ctx(t), key)
		require.NoError(t, err)
		require.Len(t, r.Kvs, 1, "a lease kept alive keeps its key")
		ka, err := cli.KeepAliveOnce(ctx(t), g.ID)
		require.NoError(t, err)
		require.Equal(t, g.ID, ka.ID)
	}
	_, err := etcdClient(t, c.clients[lead], "", "").KeepAliveOnce(ctx(t), 12345)
	require.ErrorIs(t, err, rpctypes.ErrLeaseNotFound, "a lease that does not exist answers TTL 0")
}

// TestEtcdLeaseNewLeaderRestartsTTL is the rule of docs/etcd.md: a new
// leader gives every lease a full TTL from when it took over, so a lease
// kept alive until just before its leader died is not expired before a
// full TTL after that; then, not kept alive, it expires.
func TestEtcdLeaseNewLeaderRestartsTTL(t *testing.T) {
	const ttl = 3
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	survivor := lead%3 + 1
	cli := etcdClient(t, c.clients[survivor], "", "")
	var g *clientv3.LeaseGrantResponse
	eventually(t, func() (err error) { g, err = cli.Grant(ctx(t), ttl); return err })
	_, err := cli.Put(ctx(t), "/n/a", "1", clientv3.WithLease(g.ID))
	require.NoError(t, err)

	// Kept alive for two TTLs, so the lease is older than its TTL: a leader
	// that counted from the grant would expire it at once.
	kctx, cancel := context.WithCancel(context.Background())
	ch, err := cli.KeepAlive(kctx, g.ID)
	require.NoError(t, err)
	for until := time.Now().Add(2 * ttl * time.Second); time.Now().Before(until); {
		nextKeepAlive(t, ch)
	}
	cancel()
	killed := time.Now()
	c.stop(lead)

	kept := killed.Add(ttl * time.Second)
	var sawAfter bool
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r, err := cli.Get(ctx(t), "/n/a", clientv3.WithSerializable())
		answered := time.Now()
		if err == nil && len(r.Kvs) == 0 { // (an error: an election under way)
			require.False(t, answered.Before(kept), "the lease expired %v after its leader was stopped, before a full TTL (%ds)", answered.Sub(killed), ttl)
			sawAfter = true
			break
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	require.True(t, sawAfter, "the lease, no longer kept alive, never expired")
}

// nextKeepAlive is clientv3's next keepalive answer; the channel closing
// means the lease was lost.
func nextKeepAlive(t *testing.T, ch <-chan *clientv3.LeaseKeepAliveResponse) *clientv3.LeaseKeepAliveResponse {
	t.Helper()
	select {
	case r, ok := <-ch:
		require.True(t, ok, "the keepalive channel closed: the lease was lost")
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no keepalive answer within 10s")
		return nil
	}
}

// TestEtcdLeaseAuth: etcd's rules once auth is on, through a follower
// (keepalives forwarded with the caller's credentials): any user may grant;
// keeping a lease alive needs write on every key it holds, TimeToLive with
// keys and Leases need read, revoking needs write (root may do all).
func TestEtcdLeaseAuth(t *testing.T) {
	a := newAuthCluster(t)
	a.setUp(t)
	endpoint := a.clients[a.follower()]
	root := etcdClient(t, endpoint, "root", "rootpw")
	alice := etcdClient(t, endpoint, "alice", "alicepw")
	for _, step := range []func() error{
		func() error { _, err := root.UserAdd(ctx(t), "bob", "bobpw"); return err },
		func() error { _, err := root.RoleAdd(ctx(t), "reader"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx(t), "reader", "app/", "app0", clientv3.PermissionType(authpb.READ))
			return err
		},
		func() error { _, err := root.UserGrantRole(ctx(t), "bob", "reader"); return err },
	} {
		require.NoError(t, step())
	}
	bob := etcdClient(t, endpoint, "bob", "bobpw")
	anonymous := etcdClient(t, endpoint, "", "")

	_, err := anonymous.Grant(ctx(t), 60)
	require.ErrorIs(t, err, rpctypes.ErrUserEmpty, "a grant needs a user once auth is on")
	mine, err := alice.Grant(ctx(t), 60)
	require.NoError(t, err)
	_, err = alice.Put(ctx(t), "app/a", "1", clientv3.WithLease(mine.ID))
	require.NoError(t, err)
	_, err = alice.KeepAliveOnce(ctx(t), mine.ID)
	require.NoError(t, err, "alice may write every key her lease holds")
	_, err = bob.KeepAliveOnce(ctx(t), mine.ID)
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied, "bob may only read app/a")
	r, err := bob.TimeToLive(ctx(t), mine.ID, clientv3.WithAttachedKeys())
	require.NoError(t, err)
	require.Len(t, r.Keys, 1)

	_, err = root.Put(ctx(t), "secret", "x", clientv3.WithLease(mine.ID))
	require.NoError(t, err)
	_, err = alice.KeepAliveOnce(ctx(t), mine.ID)
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied, "the lease now holds a key alice may not write")
	_, err = alice.TimeToLive(ctx(t), mine.ID)
	require.NoError(t, err, "without keys, any user")
	_, err = alice.TimeToLive(ctx(t), mine.ID, clientv3.WithAttachedKeys())
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied)
	_, err = alice.Leases(ctx(t))
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied)
	_, err = alice.Revoke(ctx(t), mine.ID)
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied)
	_, err = root.KeepAliveOnce(ctx(t), mine.ID)
	require.NoError(t, err)
	l, err := root.Leases(ctx(t))
	require.NoError(t, err)
	require.Len(t, l.Leases, 1)
	_, err = root.Revoke(ctx(t), mine.ID)
	require.NoError(t, err)
}

// TestEtcdLeaseSurvivesRestart: leases and the keys they hold are in the
// store, so a cluster restarted whole still has them, each with a full TTL
// from its new leader.
func TestEtcdLeaseSurvivesRestart(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	cli := etcdClient(t, c.clients[c.leader()], "", "")
	var g *clientv3.LeaseGrantResponse
	eventually(t, func() (err error) { g, err = cli.Grant(ctx(t), 60); return err })
	_, err := cli.Put(ctx(t), "/r/a", "1", clientv3.WithLease(g.ID))
	require.NoError(t, err)
	for id := range c.members {
		c.stop(id)
	}
	for id := range c.members {
		c.start(id)
	}
	cli = etcdClient(t, c.clients[c.leader()], "", "")
	eventually(t, func() error {
		r, err := cli.TimeToLive(ctx(t), g.ID, clientv3.WithAttachedKeys())
		if err != nil {
			return err
		}
		if r.GrantedTTL != 60 || r.TTL <= 0 || len(r.Keys) != 1 {
			return fmt.Errorf("after the restart: %+v", r)
		}
		return nil
	})
}

// TestEtcdLeaseKeepAliveEndsOnStop: a member that stops ends its keepalive
// streams at once (clientv3 then keeps the lease alive through another
// member) rather than holding its shutdown for --request-timeout.
func TestEtcdLeaseKeepAliveEndsOnStop(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	cli := etcdClient(t, c.clients[1], "", "")
	var g *clientv3.LeaseGrantResponse
	eventually(t, func() (err error) { g, err = cli.Grant(ctx(t), 60); return err })
	ch, err := cli.KeepAlive(context.Background(), g.ID)
	require.NoError(t, err)
	nextKeepAlive(t, ch)
	timeout := c.servers[1].cfg.RequestTimeout
	began := time.Now()
	c.stop(1)
	require.Less(t, time.Since(began), timeout, "the open keepalive stream held the shutdown")
}
