package server

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/core"
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
