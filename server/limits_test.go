package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// newLimitCluster starts n members with the limits in extra.
func newLimitCluster(t *testing.T, n int, extra Config) *testCluster {
	c := newTestCluster(t, 0, 0)
	for i := 1; i <= n; i++ {
		c.members[core.NodeID(i)], c.clients[core.NodeID(i)] = freeAddr(t), freeAddr(t)
	}
	for i := 1; i <= n; i++ {
		cfg := extra
		cfg.InitialCluster = c.members
		c.startWith(core.NodeID(i), cfg)
	}
	return c
}

func (c *testCluster) maintenance(t *testing.T, id core.NodeID) apipb.MaintenanceClient {
	conn, err := grpc.NewClient(c.clients[id], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return apipb.NewMaintenanceClient(conn)
}

// A flood of Register calls beyond --max-sessions is refused with
// ResourceExhausted, on every member, and leaves an existing session's
// exactly-once intact: a retry of its last write is answered as a
// duplicate, not applied a second time.
func TestRegisterFloodLeavesExistingSessionExactlyOnce(t *testing.T) {
	const maxSessions = 5
	c := newLimitCluster(t, 3, Config{MaxSessions: maxSessions})
	leader := c.leader()
	kv := c.conns[leader]
	reg, err := kv.Register(ctx(t), &apipb.RegisterRequest{})
	require.NoError(t, err)
	sess := &apipb.Session{ClientId: reg.ClientId, Seq: 1}
	put := &apipb.PutRequest{Key: []byte("account"), Value: []byte("credited once"), Session: sess}
	first, err := kv.Put(ctx(t), put)
	require.NoError(t, err)

	opened, refused := 0, 0
	for i := range 40 {
		id := core.NodeID(i%3 + 1) // followers forward to the leader
		_, err := c.conns[id].Register(ctx(t), &apipb.RegisterRequest{})
		for deadline := time.Now().Add(10 * time.Second); status.Code(err) == codes.Unavailable && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond) // polling interval: a follower yet to hear of the leader
			_, err = c.conns[id].Register(ctx(t), &apipb.RegisterRequest{})
		}
		switch status.Code(err) {
		case codes.OK:
			opened++
		case codes.ResourceExhausted:
			refused++
			require.Contains(t, status.Convert(err).Message(), "session cap reached")
			require.Contains(t, status.Convert(err).Message(), "retry later")
		default:
			t.Fatalf("register %d at member %d: %v", i, id, err)
		}
	}
	require.Equal(t, maxSessions-1, opened, "the cap counts the existing session")
	require.Equal(t, 40-opened, refused)

	again, err := kv.Put(ctx(t), put)
	require.NoError(t, err, "the session survived the flood")
	require.Equal(t, first.Version, again.Version, "answered with the first write's result")
	require.Equal(t, first.Header.Revision, again.Header.Revision, "answered with the first write's result")
	got, err := kv.Get(ctx(t), &apipb.GetRequest{Key: []byte("account")})
	require.NoError(t, err)
	require.Equal(t, first.Version, got.Version, "not applied a second time")
	require.Equal(t, first.Header.Revision, got.Header.Revision, "nothing else was written")

	var counted float64
	for _, s := range c.servers {
		counted += metricValue(t, s.limits.sessRefus)
	}
	require.EqualValues(t, refused, counted)
}

// The Go client retries a Register refused for the session cap with
// backoff until its deadline, then says why.
func TestClientRetriesSessionCapUntilDeadline(t *testing.T) {
	c := newLimitCluster(t, 1, Config{MaxSessions: 1})
	kv := c.conns[c.leader()]
	_, err := kv.Register(ctx(t), &apipb.RegisterRequest{})
	require.NoError(t, err)

	kc, err := client.New(client.Config{Endpoints: c.endpoints(), BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	require.NoError(t, err)
	defer kc.Close()
	cctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = kc.Put(cctx, []byte("k"), []byte("v"))
	require.ErrorIs(t, err, client.ErrSessionLimit)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Greater(t, metricValue(t, c.servers[1].limits.sessRefus), 1.0, "retried")
}

// A full quota refuses puts (and raises NOSPACE on every member) but not
// deletes; disarming while still over the quota is undone by the next
// write that would pass it; after deleting enough and disarming, writes
// succeed again.
// putPastElections puts, retrying while the member knows no leader (just
// after the cluster starts, the follower may not have heard of it yet), and
// returns any other outcome.
func putPastElections(t *testing.T, kv apipb.KVClient, key string, value []byte) error {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := kv.Put(ctx(t), &apipb.PutRequest{Key: []byte(key), Value: value})
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

func TestQuotaRefusesWritesButNotDeletes(t *testing.T) {
	const quota = 8 << 10
	c := newLimitCluster(t, 3, Config{QuotaBackendBytes: quota})
	leader := c.leader()
	follower := core.NodeID(leader%3 + 1)
	kv := c.conns[follower] // writes are forwarded to the leader, which judges them
	value := []byte(strings.Repeat("v", 1000))
	var stored []string
	var refusal error
	for i := range 20 {
		key := fmt.Sprintf("big/%02d", i)
		err := putPastElections(t, kv, key, value)
		if err != nil {
			refusal = err
			break
		}
		stored = append(stored, key)
	}
	require.Error(t, refusal, "20 KB of values must not fit in an 8 KiB quota")
	require.Equal(t, codes.ResourceExhausted, status.Code(refusal), "%v", refusal)
	msg := status.Convert(refusal).Message()
	require.Contains(t, msg, "no space")
	require.Contains(t, msg, "--quota-backend-bytes")
	require.Contains(t, msg, "kvctl alarm disarm")
	require.Len(t, stored, 8, "8 keys of 1,022 bytes (kvstore.KeyBytes) fit in 8,192")

	waitAlarm(t, c, true)
	_, err := kv.Put(ctx(t), &apipb.PutRequest{Key: []byte("small"), Value: []byte("x")})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "refused while the alarm is raised, even when it would fit: %v", err)
	_, err = kv.CompareAndSwap(ctx(t), &apipb.CompareAndSwapRequest{Key: []byte("small"), Value: []byte("x")})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	_, err = etcdClient(t, c.clients[follower], "", "").Grant(ctx(t), 60)
	require.ErrorIs(t, err, rpctypes.ErrNoSpace, "nor a lease, as etcd")
	for _, s := range c.servers {
		require.EqualValues(t, 1, gaugeValue(t, s, "keyval_alarm_active"))
	}

	// One delete: still over once a big value is written again.
	_, err = kv.Delete(ctx(t), &apipb.DeleteRequest{Key: []byte(stored[0])})
	require.NoError(t, err, "deletes go on under NOSPACE")
	m := c.maintenance(t, follower)
	dis, err := m.AlarmDisarm(ctx(t), &apipb.AlarmDisarmRequest{Type: apipb.AlarmType_ALARM_TYPE_NOSPACE})
	require.NoError(t, err)
	require.NotNil(t, dis.Disarmed)
	require.Equal(t, apipb.AlarmType_ALARM_TYPE_NOSPACE, dis.Disarmed.Type)
	waitAlarm(t, c, false)
	_, err = kv.Put(ctx(t), &apipb.PutRequest{Key: []byte("big/again"), Value: value})
	require.NoError(t, err, "room for one value after one delete")
	_, err = kv.Put(ctx(t), &apipb.PutRequest{Key: []byte("big/more"), Value: value})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "over the quota again: %v", err)
	waitAlarm(t, c, true)

	// Delete enough, disarm: writes succeed again.
	for _, key := range append(stored[1:], "big/again") {
		_, err := kv.Delete(ctx(t), &apipb.DeleteRequest{Key: []byte(key)})
		require.NoError(t, err)
	}
	_, err = m.AlarmDisarm(ctx(t), &apipb.AlarmDisarmRequest{Type: apipb.AlarmType_ALARM_TYPE_NOSPACE})
	require.NoError(t, err)
	waitAlarm(t, c, false)
	for i := range 3 {
		_, err := kv.Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("after/%d", i)), Value: value})
		require.NoError(t, err)
	}
	list, err := m.AlarmList(ctx(t), &apipb.AlarmListRequest{})
	require.NoError(t, err)
	require.Empty(t, list.Alarms)
	require.EqualValues(t, quota, list.QuotaBytes)
	require.EqualValues(t, 3*kvstore.KeyBytes(len("after/0"), len(value)), list.StoreBytes)

	_, err = m.AlarmDisarm(ctx(t), &apipb.AlarmDisarmRequest{})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
}

// waitAlarm polls every member until NOSPACE is raised (or not) in its
// applied state, as AlarmList reports it.
func waitAlarm(t *testing.T, c *testCluster, raised bool) {
	t.Helper()
	for id := range c.servers {
		m := c.maintenance(t, id)
		eventually(t, func() error {
			l, err := m.AlarmList(ctx(t), &apipb.AlarmListRequest{})
			if err != nil {
				return err
			}
			if got := len(l.Alarms) == 1 && l.Alarms[0].Type == apipb.AlarmType_ALARM_TYPE_NOSPACE; got != raised {
				return fmt.Errorf("member %d: alarms %v, want NOSPACE raised=%v", id, l.Alarms, raised)
			}
			return nil
		})
	}
}

// gaugeValue reads one of a member's metrics by name.
func gaugeValue(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	return scraped(t, s, name).GetGauge().GetValue()
}

// counterValue is the node's counter name, as a scrape reads it.
func counterValue(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	return scraped(t, s, name).GetCounter().GetValue()
}

// scraped is the node's metric name (its first series), as a scrape
// reads it.
func scraped(t *testing.T, s *Server, name string) *dto.Metric {
	t.Helper()
	mfs, err := s.obs.m.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0]
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// TestOversizedRequestGetsEtcdsError: a request a little past the request
// limit is refused by KeyVal's check, not by gRPC's: etcd's clients get
// etcd's ErrRequestTooLarge (a put of too large a value, a transaction
// whose values add up past it), KeyVal's own API RESOURCE_EXHAUSTED naming
// the limit; and the member goes on.
func TestOversizedRequestGetsEtcdsError(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	lead := c.leader()
	cli := etcdClient(t, c.clients[lead], "", "")
	big := strings.Repeat("v", DefaultMaxRequestBytes+100<<10)
	_, err := cli.Put(ctx(t), "k", big)
	require.ErrorIs(t, err, rpctypes.ErrRequestTooLarge)
	third := strings.Repeat("v", DefaultMaxRequestBytes/3+1)
	_, err = cli.Txn(ctx(t)).Then(clientv3.OpPut("a", third), clientv3.OpPut("b", third), clientv3.OpPut("c", third)).Commit()
	require.ErrorIs(t, err, rpctypes.ErrRequestTooLarge, "each value fits, the three do not")

	_, err = c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("k"), Value: []byte(big)})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "the limit is")

	_, err = cli.Put(ctx(t), "k", "v")
	require.NoError(t, err)
}
