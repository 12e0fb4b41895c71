package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/internal/fakekv"
)

// startCluster starts n fake members sharing one store, ids 1..n; node 1
// leads.
func startCluster(t testing.TB, n int) (*fakekv.Store, []*fakekv.Node) {
	t.Helper()
	store := fakekv.NewStore()
	t.Cleanup(store.Close)
	var nodes []*fakekv.Node
	for i := 1; i <= n; i++ {
		node, err := store.StartNode(uint64(i))
		require.NoError(t, err)
		nodes = append(nodes, node)
	}
	return store, nodes
}

func addrs(nodes ...*fakekv.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Addr())
	}
	return out
}

// newClient makes a client with quick backoff so that retry tests run fast;
// cfg.Endpoints must be set.
// unaryTests runs every client test with Config.Unary (make test runs the
// package both ways): the retry and session rules must hold on both paths.
var unaryTests = os.Getenv("KEYVAL_CLIENT_UNARY") == "1"

func newClient(t testing.TB, cfg Config) *Client {
	t.Helper()
	if unaryTests {
		cfg.Unary = true
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase, cfg.BackoffMax = time.Millisecond, 5*time.Millisecond
	}
	c, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// checkSessionRules fails the test if the client broke the exactly-once
// protocol (no session, a skipped or repeated-then-advanced seq).
func checkSessionRules(t testing.TB, store *fakekv.Store) {
	t.Helper()
	assert.Empty(t, store.Violations(), "session rule violations")
}

func TestNewRefusesNoEndpoints(t *testing.T) {
	_, err := New(Config{Endpoints: []string{" ", ""}})
	require.Error(t, err)
	c, err := New(Config{Endpoints: []string{"a:1", " a:1 ", "b:2"}})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, []string{"a:1", "b:2"}, c.Endpoints())
}

// Endpoints written as URLs, as etcd's tools take them, are accepted when
// the scheme agrees with the TLS setting.
func TestEndpointsMayBeURLs(t *testing.T) {
	c, err := New(Config{Endpoints: []string{"http://a:1", "b:2", "http://b:2/"}})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, []string{"a:1", "b:2"}, c.Endpoints())

	c, err = New(Config{Endpoints: []string{"https://a:1"}, TLS: &tls.Config{}})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, []string{"a:1"}, c.Endpoints())

	_, err = New(Config{Endpoints: []string{"https://a:1"}})
	require.ErrorContains(t, err, "https:// but no TLS configuration")
	_, err = New(Config{Endpoints: []string{"http://a:1"}, TLS: &tls.Config{}})
	require.ErrorContains(t, err, "http:// (plaintext) but a TLS configuration")
}

func TestPutGetDeleteRoundTrip(t *testing.T) {
	store, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()

	got, err := c.Get(ctx, []byte("k"))
	require.NoError(t, err)
	assert.False(t, got.Found, "a missing key is found=false, not an error")

	put, err := c.Put(ctx, []byte("k"), []byte("v1"))
	require.NoError(t, err)
	assert.False(t, put.Existed)
	assert.Equal(t, uint64(1), put.Version)
	assert.Equal(t, uint64(1), put.NodeID)
	assert.Equal(t, uint64(1), put.LeaderID)

	put, err = c.Put(ctx, []byte("k"), []byte("v2"))
	require.NoError(t, err)
	assert.True(t, put.Existed)
	assert.Equal(t, uint64(2), put.Version)

	for _, opts := range [][]ReadOption{nil, {Serializable}} {
		got, err = c.Get(ctx, []byte("k"), opts...)
		require.NoError(t, err)
		assert.True(t, got.Found)
		assert.Equal(t, "v2", string(got.Value))
		assert.Equal(t, uint64(2), got.Version)
		assert.Equal(t, uint64(2), got.Revision)
	}

	del, err := c.Delete(ctx, []byte("k"))
	require.NoError(t, err)
	assert.True(t, del.Existed)
	del, err = c.Delete(ctx, []byte("k"))
	require.NoError(t, err)
	assert.False(t, del.Existed)

	assert.Equal(t, 4, store.Applied())
	assert.Equal(t, 1, store.Registered(), "sequential writes reuse one session")
	checkSessionRules(t, store)
}

func TestCompareAndSwap(t *testing.T) {
	store, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()

	res, err := c.CompareAndSwap(ctx, []byte("k"), 0, []byte("a"))
	require.NoError(t, err)
	require.True(t, res.Succeeded, "version 0 means 'must be absent'")
	v1 := res.Version

	res, err = c.CompareAndSwap(ctx, []byte("k"), 0, []byte("b"))
	require.NoError(t, err)
	assert.False(t, res.Succeeded)
	assert.True(t, res.Exists)
	assert.Equal(t, v1, res.Version)
	assert.Equal(t, "a", string(res.CurrentValue))

	res, err = c.CompareAndSwap(ctx, []byte("k"), v1, []byte("c"))
	require.NoError(t, err)
	assert.True(t, res.Succeeded)
	val, _ := store.Value("k")
	assert.Equal(t, "c", string(val))
	checkSessionRules(t, store)
}

func TestUnavailableIsRetriedWithSameSeq(t *testing.T) {
	store, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	nodes[0].Fail("Put", codes.Unavailable, "no leader known", 3)

	_, err := c.Put(context.Background(), []byte("k"), []byte("v"))
	require.NoError(t, err)
	assert.Equal(t, 4, nodes[0].Calls("Put"))
	assert.Equal(t, 1, store.Applied())
	checkSessionRules(t, store)
}

// A write applied whose reply is lost must be retried with the same
// (client id, seq) and answered from the session's memory: applied once,
// and the caller sees the original result.
func TestLostReplyIsDeduplicated(t *testing.T) {
	store, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()

	nodes[0].LoseReplies("Put", 1)
	put, err := c.Put(ctx, []byte("k"), []byte("v"))
	require.NoError(t, err)
	assert.False(t, put.Existed, "the retry must return the first application's answer")
	_, version := store.Value("k")
	assert.Equal(t, version, put.Version)

	// CAS "must be absent": re-applying it would fail; the dedup answer
	// reports the original success.
	nodes[0].LoseReplies("CompareAndSwap", 1)
	cas, err := c.CompareAndSwap(ctx, []byte("new"), 0, []byte("x"))
	require.NoError(t, err)
	assert.True(t, cas.Succeeded)

	nodes[0].LoseReplies("Delete", 1)
	del, err := c.Delete(ctx, []byte("k"))
	require.NoError(t, err)
	assert.True(t, del.Existed)

	assert.Equal(t, 3, store.Applied(), "each write applied exactly once")
	assert.Equal(t, 3, store.Duplicates(), "each retry answered from the session's memory")
	checkSessionRules(t, store)
}

func TestLostReplyRetriedOnAnotherMember(t *testing.T) {
	store, nodes := startCluster(t, 2)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})

	nodes[0].LoseReplies("Put", 1)
	_, err := c.Put(context.Background(), []byte("k"), []byte("v"))
	require.NoError(t, err)
	assert.Equal(t, 1, nodes[0].Calls("Put"))
	assert.Equal(t, 1, nodes[1].Calls("Put"), "the retry moves to the next endpoint")
	assert.Equal(t, 1, store.Applied())
	assert.Equal(t, 1, store.Duplicates())
	checkSessionRules(t, store)
}

func TestExpiredSessionIsReplaced(t *testing.T) {
	store, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()

	_, err := c.Put(ctx, []byte("a"), []byte("1"))
	require.NoError(t, err)
	store.ExpireSessions()
	_, err = c.Put(ctx, []byte("b"), []byte("2"))
	require.NoError(t, err)

	assert.Equal(t, 2, store.Registered())
	assert.Equal(t, 2, store.Applied())
	assert.Equal(t, 3, nodes[0].Calls("Put"), "the second put was refused once, then applied on the new session")
	checkSessionRules(t, store)
}

// If the session expired long after an attempt that may have been applied,
// a new session could apply the write a second time: the client must say
// the outcome is unknown instead.
func TestSessionExpiredAfterAmbiguousAttempt(t *testing.T) {
	store, nodes := startCluster(t, 2)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	// Each reading of the clock is a minute after the previous one.
	clock := time.Unix(0, 0)
	c.now = func() time.Time {
		clock = clock.Add(time.Minute)
		return clock
	}

	nodes[0].LoseReplies("Put", 1)
	nodes[1].Fail("Put", codes.FailedPrecondition, "session expired: client id 1 is unknown", 1)
	_, err := c.Put(context.Background(), []byte("k"), []byte("v"))
	require.ErrorIs(t, err, ErrOutcomeUnknown)
	assert.Equal(t, 1, store.Applied())
	assert.Equal(t, 1, store.Registered(), "no new session was opened to re-apply the write")
}

// A session that expired while idle in the pool, met after a transient
// failure, is replaced: the write is applied once.
func TestSessionExpiredAfterTransientFailure(t *testing.T) {
	store, nodes := startCluster(t, 2)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()
	_, err := c.Put(ctx, []byte("a"), []byte("1"))
	require.NoError(t, err)

	store.ExpireSessions()
	nodes[0].Fail("Put", codes.Unavailable, "no leader known", 1)
	_, err = c.Put(ctx, []byte("b"), []byte("2"))
	require.NoError(t, err)
	assert.Equal(t, 2, store.Applied())
	assert.Equal(t, 2, store.Registered())
	checkSessionRules(t, store)
}

// A write that fails keeps its session: the next write goes out on it with
// a higher seq, so the calls after a failover need no Register (itself a
// replicated write, and one more thing to time out while a leader is
// being elected).
func TestFailedWriteKeepsItsSession(t *testing.T) {
	store, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...), MaxRetries: 1})
	ctx := context.Background()
	_, err := c.Put(ctx, []byte("a"), []byte("1"))
	require.NoError(t, err)

	nodes[0].Stop()
	_, err = c.Put(ctx, []byte("b"), []byte("2"))
	require.ErrorIs(t, err, ErrUnavailable)
	require.NoError(t, nodes[0].Restart())

	// The connection may still be backing off from the refused dials:
	// each write that fails meanwhile is one more seq skipped.
	deadline := time.Now().Add(10 * time.Second)
	for _, err = c.Put(ctx, []byte("c"), []byte("3")); err != nil; _, err = c.Put(ctx, []byte("c"), []byte("3")) {
		require.ErrorIs(t, err, ErrUnavailable)
		require.True(t, time.Now().Before(deadline), "the restarted member never answered: %v", err)
	}
	assert.Equal(t, 1, store.Registered(), "the failed writes' session was used again")
	assert.Equal(t, 2, store.Applied())
	assert.Equal(t, 1, store.Skipped(), "the last write skipped the failed writes' seqs")
	checkSessionRules(t, store)
}

// A session the server has forgotten is not used again after the call
// that found out, even when that call failed.
func TestForgottenSessionIsDroppedAfterFailure(t *testing.T) {
	store, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()
	_, err := c.Put(ctx, []byte("a"), []byte("1"))
	require.NoError(t, err)

	store.ExpireSessions()
	nodes[0].Fail("Register", codes.PermissionDenied, "no registering today", 1)
	_, err = c.Put(ctx, []byte("b"), []byte("2"))
	require.Error(t, err)
	assert.Equal(t, 0, c.sessions.idle(), "the forgotten session went back to the pool")

	_, err = c.Put(ctx, []byte("b"), []byte("2"))
	require.NoError(t, err)
	assert.Equal(t, 2, store.Registered())
	checkSessionRules(t, store)
}

func TestFailsOverWhenMemberDown(t *testing.T) {
	store, nodes := startCluster(t, 3)
	nodes[0].Stop()
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()

	_, err := c.Put(ctx, []byte("k"), []byte("v"))
	require.NoError(t, err)
	assert.Equal(t, nodes[1].Addr(), c.preferredEndpoint(), "the endpoint that answered is remembered")

	got, err := c.Get(ctx, []byte("k"))
	require.NoError(t, err)
	assert.True(t, got.Found)
	assert.Equal(t, 1, nodes[1].Calls("Get"))
	assert.Equal(t, 0, nodes[2].Calls(""), "member 3 was never needed")
	checkSessionRules(t, store)
}

func TestNoMemberAnswers(t *testing.T) {
	_, nodes := startCluster(t, 2)
	for _, n := range nodes {
		n.Stop()
	}
	c := newClient(t, Config{Endpoints: addrs(nodes...), MaxRetries: 3})

	_, err := c.Get(context.Background(), []byte("k"))
	require.ErrorIs(t, err, ErrUnavailable)
	var ue *UnavailableError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, 4, ue.Attempts)
	assert.Empty(t, ue.Answered)
	assert.Contains(t, err.Error(), "no member answered at "+strings.Join(addrs(nodes...), ", "))
	assert.Equal(t, codes.Unavailable, status.Code(ue.Last))
}

// Members that answer but know no leader, beside members that cannot be
// reached, are a lost quorum, not a cluster that is down: the error names
// the members that answered.
func TestLostQuorumIsToldFromNoMemberAnswering(t *testing.T) {
	_, nodes := startCluster(t, 3)
	nodes[0].Stop()
	nodes[1].Stop()
	nodes[2].Fail("", codes.Unavailable, "no leader is known right now (an election may be under way); retry shortly", 1000)
	c := newClient(t, Config{Endpoints: addrs(nodes...), MaxRetries: 3})

	_, err := c.Put(context.Background(), []byte("q"), []byte("1"))
	require.ErrorIs(t, err, ErrUnavailable)
	var ue *UnavailableError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, []string{nodes[2].Addr()}, ue.Answered)
	assert.Contains(t, err.Error(), "no leader: a quorum of members is not reachable (1 of 3 answered: "+nodes[2].Addr()+")")
	assert.NotContains(t, err.Error(), "no member answered")
}

// "No leader known" comes from a member that answered: it passes within an
// election, so it is retried until the deadline, not counted against
// MaxRetries (which bounds attempts that reach no member).
func TestNoLeaderIsRetriedUntilDeadline(t *testing.T) {
	store, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...), MaxRetries: 2})
	nodes[0].Fail("", codes.Unavailable, "no leader is known right now", 20)

	_, err := c.Put(context.Background(), []byte("k"), []byte("v"))
	require.NoError(t, err)
	assert.Equal(t, 1, store.Applied())
	assert.Equal(t, 22, nodes[0].Calls(""), "20 refusals, then register and put")
}

func TestNoRetriesWhenDisabled(t *testing.T) {
	_, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...), MaxRetries: -1})
	nodes[0].Fail("Get", codes.Unavailable, "no leader", 1)
	_, err := c.Get(context.Background(), []byte("k"))
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Equal(t, 1, nodes[0].Calls("Get"))
}

func TestRestartedMemberIsUsedAgain(t *testing.T) {
	_, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...), MaxRetries: 1000})
	_, err := c.Get(context.Background(), []byte("k"))
	require.NoError(t, err)

	nodes[0].Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Get(ctx, []byte("k"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "last error", "the timeout says what the retries saw")

	// The connection is in gRPC's reconnect backoff; retries (bounded by
	// the deadline) must find the member once it is back.
	require.NoError(t, nodes[0].Restart())
	_, err = c.Get(context.Background(), []byte("k"))
	require.NoError(t, err)
}

func TestInvalidIsNotRetried(t *testing.T) {
	store, nodes := startCluster(t, 2)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()

	_, err := c.Put(ctx, nil, []byte("v"))
	require.ErrorIs(t, err, ErrInvalid)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, codes.InvalidArgument, se.Code)
	assert.Equal(t, "key is empty", se.Message)
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "the gRPC status survives for status.Code")
	assert.Equal(t, 1, nodes[0].Calls("Put")+nodes[1].Calls("Put"))

	_, err = c.Get(ctx, make([]byte, fakekv.MaxKeySize+1))
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "over the limit")

	// Other refusals are returned as they are, not as ErrInvalid.
	nodes[0].Fail("Get", codes.PermissionDenied, "not allowed", 1)
	_, err = c.Get(ctx, []byte("k"))
	require.ErrorAs(t, err, &se)
	assert.Equal(t, codes.PermissionDenied, se.Code)
	assert.NotErrorIs(t, err, ErrInvalid)

	// A refused write does not poison later writes.
	_, err = c.Put(ctx, []byte("k"), []byte("v"))
	require.NoError(t, err)
	checkSessionRules(t, store)
}

// arrived waits for a held call to reach the member, failing the test
// (rather than hanging it) if none comes.
func arrived(t *testing.T, h *fakekv.Hold) string {
	t.Helper()
	select {
	case m := <-h.Arrived():
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no call reached the held member")
		return ""
	}
}

// connect makes the client's connection to endpoint, so a short deadline
// afterwards is spent on the call, not on connecting.
func connect(t *testing.T, c *Client, endpoint string) {
	t.Helper()
	_, err := c.Status(context.Background(), endpoint)
	require.NoError(t, err)
}

func TestCallerDeadlineIsHonoured(t *testing.T) {
	_, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	connect(t, c, nodes[0].Addr())
	hold := nodes[0].Hold()
	defer hold.Release()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Get(ctx, []byte("k"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, "Get", arrived(t, hold), "the call reached the member before timing out")
}

func TestRequestTimeoutAppliesWithoutDeadline(t *testing.T) {
	_, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...), RequestTimeout: 50 * time.Millisecond})
	hold := nodes[0].Hold()
	defer hold.Release()

	_, err := c.Get(context.Background(), []byte("k"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestCancelStopsCall(t *testing.T) {
	_, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	hold := nodes[0].Hold()
	defer hold.Release()

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, []byte("k"))
		errc <- err
	}()
	arrived(t, hold)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
}

func TestDeadlineWhileRetryingReportsLastError(t *testing.T) {
	_, nodes := startCluster(t, 1)
	c := newClient(t, Config{
		Endpoints: addrs(nodes...), MaxRetries: 1 << 20,
		BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond,
	})
	// Connect first, so that the deadline cannot run out in the first
	// attempt (which would leave no earlier error to report).
	_, err := c.Get(context.Background(), []byte("warm-up"))
	require.NoError(t, err)
	nodes[0].Fail("", codes.Unavailable, "no leader known", 1<<30)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Put(ctx, []byte("k"), []byte("v"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "no leader known")
}

func TestAttemptTimeoutMovesToNextMember(t *testing.T) {
	store, nodes := startCluster(t, 2)
	c := newClient(t, Config{Endpoints: addrs(nodes...), AttemptTimeout: 50 * time.Millisecond})
	connect(t, c, nodes[0].Addr())
	hold := nodes[0].Hold()
	defer hold.Release()

	_, err := c.Put(context.Background(), []byte("k"), []byte("v"))
	require.NoError(t, err)
	arrived(t, hold)
	assert.Equal(t, nodes[1].Addr(), c.preferredEndpoint())
	assert.Equal(t, 1, store.Applied())
}

func TestPrefersLeaderOnceKnown(t *testing.T) {
	store, nodes := startCluster(t, 3)
	store.SetLeader(3)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()

	// Status teaches the client every member's id; the answers name the
	// leader.
	for _, st := range c.StatusAll(ctx) {
		require.NoError(t, st.Err)
	}
	assert.Equal(t, nodes[2].Addr(), c.preferredEndpoint())
	for range 3 {
		_, err := c.Put(ctx, []byte("k"), []byte("v"))
		require.NoError(t, err)
	}
	assert.Equal(t, 3, nodes[2].Calls("Put"))

	// The leader fails: the client moves on and does not insist on it.
	nodes[2].Stop()
	_, err := c.Put(ctx, []byte("k"), []byte("v"))
	require.NoError(t, err)
	assert.NotEqual(t, nodes[2].Addr(), c.preferredEndpoint())
	_, err = c.Put(ctx, []byte("k"), []byte("v"))
	require.NoError(t, err)
	checkSessionRules(t, store)
}

func TestConcurrentWritesUseSessionPool(t *testing.T) {
	store, nodes := startCluster(t, 3)
	// Faults are injected per member, not per write: with 16 writers one
	// write may meet many in a row, so allow many retries.
	c := newClient(t, Config{Endpoints: addrs(nodes...), MaxRetries: 1000})
	for _, n := range nodes {
		n.LoseReplies("", 10)
		n.Fail("Put", codes.Unavailable, "leader changed", 10)
	}

	const workers, perWorker = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				key := []byte(fmt.Sprintf("w%d/%d", w, i))
				var err error
				switch i % 3 {
				case 0:
					_, err = c.Put(context.Background(), key, []byte("v"))
				case 1:
					var res DeleteResult
					prev := []byte(fmt.Sprintf("w%d/%d", w, i-1))
					res, err = c.Delete(context.Background(), prev)
					if err == nil && !res.Existed {
						err = fmt.Errorf("delete of %s found nothing: it was applied twice", prev)
					}
				case 2:
					var res CASResult
					res, err = c.CompareAndSwap(context.Background(), key, 0, []byte("v"))
					if err == nil && !res.Succeeded {
						err = fmt.Errorf("cas on fresh key %s failed: it was applied twice", key)
					}
				}
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, workers*perWorker, store.Applied(), "every write applied exactly once")
	require.Positive(t, store.Lost())
	assert.Equal(t, store.Lost(), store.Duplicates(), "every lost reply was retried with its seq")
	assert.LessOrEqual(t, store.Registered(), workers, "sessions are reused, at most one per concurrent writer")
	assert.LessOrEqual(t, c.sessions.idle(), workers)
	checkSessionRules(t, store)
}

func TestRangeAndList(t *testing.T) {
	store, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()

	const n = ListPageSize*2 + 7
	for i := range n {
		_, err := c.Put(ctx, []byte(fmt.Sprintf("p/%04d", i)), []byte("v"))
		require.NoError(t, err)
	}
	for _, k := range []string{"o", "q", "p"} {
		_, err := c.Put(ctx, []byte(k), []byte("x"))
		require.NoError(t, err)
	}

	page, err := c.Range(ctx, []byte("p/"), nil, 3)
	require.NoError(t, err)
	require.Len(t, page.KVs, 3)
	assert.True(t, page.More)
	assert.Equal(t, "p/0000", string(page.KVs[0].Key))
	page, err = c.Range(ctx, []byte("p/"), page.KVs[2].Key, 3, Serializable)
	require.NoError(t, err)
	assert.Equal(t, "p/0003", string(page.KVs[0].Key))

	all, err := c.List(ctx, []byte("p/"), 0)
	require.NoError(t, err)
	require.Len(t, all.KVs, n)
	assert.False(t, all.More)
	for i, kv := range all.KVs {
		assert.Equal(t, fmt.Sprintf("p/%04d", i), string(kv.Key))
	}
	assert.Equal(t, 2+3, nodes[0].Calls("Range"), "the listing took three pages of at most 500")

	limited, err := c.List(ctx, []byte("p/"), 10)
	require.NoError(t, err)
	assert.Len(t, limited.KVs, 10)
	assert.True(t, limited.More)

	exact, err := c.List(ctx, []byte("p/"), n)
	require.NoError(t, err)
	assert.Len(t, exact.KVs, n)
	assert.False(t, exact.More)

	everything, err := c.List(ctx, nil, 0)
	require.NoError(t, err)
	assert.Len(t, everything.KVs, n+3)
	checkSessionRules(t, store)
}

func TestStatus(t *testing.T) {
	_, nodes := startCluster(t, 3)
	nodes[1].Stop()
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()

	all := c.StatusAll(ctx)
	require.Len(t, all, 3)
	assert.NoError(t, all[0].Err)
	assert.Equal(t, uint64(1), all[0].ID)
	assert.Equal(t, "leader", all[0].Role)
	assert.Len(t, all[0].Members, 3)
	assert.ErrorIs(t, all[1].Err, ErrUnavailable)
	assert.Equal(t, nodes[1].Addr(), all[1].Endpoint)
	assert.Equal(t, "follower", all[2].Role)
	assert.Equal(t, uint64(1), all[2].LeaderID)

	// A member that is not configured can be asked too.
	extraStore, extra := startCluster(t, 1)
	_ = extraStore
	st, err := c.Status(ctx, extra[0].Addr())
	require.NoError(t, err)
	assert.Equal(t, uint64(1), st.ID)
}

func TestClosedClient(t *testing.T) {
	_, nodes := startCluster(t, 1)
	c, err := New(Config{Endpoints: addrs(nodes...)})
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "closing twice is harmless")
	_, err = c.Get(context.Background(), []byte("k"))
	require.ErrorIs(t, err, ErrClosed)
	_, err = c.Status(context.Background(), nodes[0].Addr())
	require.ErrorIs(t, err, ErrClosed)
}

func TestErrorMessagesNameTheOperation(t *testing.T) {
	_, nodes := startCluster(t, 1)
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	_, err := c.Put(context.Background(), nil, nil)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "put: "), err.Error())
	assert.False(t, errors.Is(err, ErrUnavailable))
}
