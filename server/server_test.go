package server

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/internal/freeport"
)

// testCluster runs real servers in this process, on loopback.
type testCluster struct {
	t       testing.TB
	dir     string
	members map[core.NodeID]string
	clients map[core.NodeID]string
	servers map[core.NodeID]*Server
	conns   map[core.NodeID]apipb.KVClient
	snap    uint64
	catchUp uint64        // Config.CatchUpEntries, if set
	hook    func(*Server) // run between New and Start, if set
}

func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Loopback()
	require.NoError(t, err)
	return addr
}

func newTestCluster(t testing.TB, n int, snapshotEvery uint64) *testCluster {
	return newTestClusterHooked(t, n, snapshotEvery, nil)
}

// newTestClusterHooked is newTestCluster with hook run on every server
// between New and Start (to replace what a test holds).
func newTestClusterHooked(t testing.TB, n int, snapshotEvery uint64, hook func(*Server)) *testCluster {
	return newTestClusterKeeping(t, n, snapshotEvery, 0, hook)
}

// newTestClusterKeeping is newTestClusterHooked with the members' logs
// kept to catchUp entries in memory (Config.CatchUpEntries; 0: the
// default).
func newTestClusterKeeping(t testing.TB, n int, snapshotEvery, catchUp uint64, hook func(*Server)) *testCluster {
	c := &testCluster{t: t, dir: t.TempDir(), members: map[core.NodeID]string{}, clients: map[core.NodeID]string{},
		servers: map[core.NodeID]*Server{}, conns: map[core.NodeID]apipb.KVClient{}, snap: snapshotEvery, catchUp: catchUp, hook: hook}
	for i := 1; i <= n; i++ {
		c.members[core.NodeID(i)] = freeAddr(t)
		c.clients[core.NodeID(i)] = freeAddr(t)
	}
	for id := range c.members {
		c.start(id)
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			s.Stop(context.Background())
		}
	})
	return c
}

func (c *testCluster) start(id core.NodeID) { c.startWith(id, Config{InitialCluster: c.members}) }

// startWith starts node id with extra's settings (InitialCluster, Join, …)
// and the test cluster's timing, addresses and data directory.
func (c *testCluster) startWith(id core.NodeID, extra Config) {
	cfg := extra
	cfg.ID, cfg.DataDir, cfg.ClientAddr, cfg.PeerAddr = id, filepath.Join(c.dir, fmt.Sprint(id)), c.clients[id], c.members[id]
	cfg.HeartbeatInterval, cfg.ElectionTimeout, cfg.SnapshotEvery = 20*time.Millisecond, 200*time.Millisecond, c.snap
	cfg.CatchUpEntries = cmp.Or(cfg.CatchUpEntries, c.catchUp)
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(cfg)
	require.NoError(c.t, err)
	if c.hook != nil {
		c.hook(s)
	}
	s.Start()
	c.servers[id] = s
	conn, err := grpc.NewClient(c.clients[id], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(c.t, err)
	c.t.Cleanup(func() { conn.Close() })
	c.conns[id] = apipb.NewKVClient(conn)
}

func (c *testCluster) stop(id core.NodeID) {
	c.servers[id].Stop(context.Background())
	delete(c.servers, id)
}

// leader polls until some node reports itself leader.
func (c *testCluster) leader() core.NodeID {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for id := range c.servers {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.conns[id].Status(ctx, &apipb.StatusRequest{})
			cancel()
			if err == nil && st.Role == "Leader" {
				return id
			}
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
	c.t.Fatal("no leader within 10s")
	return 0
}

// awaitKey waits until member id has applied key (read from its own
// state, as a serializable get).
func (c *testCluster) awaitKey(t *testing.T, id core.NodeID, key string) {
	t.Helper()
	eventually(t, func() error {
		g, err := c.conns[id].Get(ctx(t), &apipb.GetRequest{Key: []byte(key), Serializable: true})
		if err != nil {
			return err
		}
		if !g.Found {
			return fmt.Errorf("%s not yet on node %d", key, id)
		}
		return nil
	})
}

// eventually retries f until it succeeds or the deadline passes.
func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	t.Fatalf("not reached within 10s: %v", err)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestWriteThroughAnyMemberReadFromEvery(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	for id := range c.members {
		eventually(t, func() error {
			_, err := c.conns[id].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%d", id)), Value: []byte("v")})
			return err
		})
	}
	for id := range c.members {
		for w := range c.members {
			resp, err := c.conns[id].Get(ctx(t), &apipb.GetRequest{Key: []byte(fmt.Sprintf("k%d", w))})
			require.NoError(t, err)
			require.True(t, resp.Found, "node %d reading k%d (leader %d)", id, w, lead)
			require.Equal(t, []byte("v"), resp.Value)
		}
	}
}

func TestCompareAndSwapAndDelete(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	kv := c.conns[lead]
	cas, err := kv.CompareAndSwap(ctx(t), &apipb.CompareAndSwapRequest{Key: []byte("a"), ExpectedVersion: 0, Value: []byte("1")})
	require.NoError(t, err)
	require.True(t, cas.Succeeded)
	again, err := kv.CompareAndSwap(ctx(t), &apipb.CompareAndSwapRequest{Key: []byte("a"), ExpectedVersion: 0, Value: []byte("2")})
	require.NoError(t, err)
	require.False(t, again.Succeeded)
	require.Equal(t, cas.Version, again.Version)
	require.Equal(t, []byte("1"), again.CurrentValue)
	del, err := kv.Delete(ctx(t), &apipb.DeleteRequest{Key: []byte("a")})
	require.NoError(t, err)
	require.True(t, del.Existed)
	g, err := kv.Get(ctx(t), &apipb.GetRequest{Key: []byte("a")})
	require.NoError(t, err)
	require.False(t, g.Found)
}

func TestExactlyOnceRetry(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	kv := c.conns[c.leader()]
	reg, err := kv.Register(ctx(t), &apipb.RegisterRequest{})
	require.NoError(t, err)
	sess := &apipb.Session{ClientId: reg.ClientId, Seq: 1}
	first, err := kv.Put(ctx(t), &apipb.PutRequest{Key: []byte("x"), Value: []byte("1"), Session: sess})
	require.NoError(t, err)
	retry, err := kv.Put(ctx(t), &apipb.PutRequest{Key: []byte("x"), Value: []byte("1"), Session: sess})
	require.NoError(t, err)
	require.Equal(t, first.Version, retry.Version, "a retried write is applied once")
	require.Equal(t, first.Header.Revision, retry.Header.Revision)
}

func TestLimitsAndBadInput(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	kv := c.conns[c.leader()]
	_, err := kv.Put(ctx(t), &apipb.PutRequest{Key: nil, Value: []byte("v")})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	_, err = kv.Put(ctx(t), &apipb.PutRequest{Key: make([]byte, DefaultMaxKeyBytes+1), Value: []byte("v")})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "limit")
	_, err = kv.Put(ctx(t), &apipb.PutRequest{Key: []byte("k"), Value: make([]byte, DefaultMaxValueBytes+1)})
	require.Error(t, err)
	_, err = kv.Put(ctx(t), &apipb.PutRequest{Key: []byte("k"), Value: []byte("v"), Session: &apipb.Session{ClientId: 12345, Seq: 1}})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "an unknown session is refused")
	msg := status.Convert(err).Message()
	require.Equal(t, 1, strings.Count(msg, "session expired"), "the reason is said once: %s", msg)
	require.Equal(t, 1, strings.Count(msg, "register a new"), "the remedy is said once: %s", msg)
	// The server is still up.
	_, err = kv.Put(ctx(t), &apipb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	require.NoError(t, err)
}

func TestLeaderFailoverAndCatchUpBySnapshot(t *testing.T) {
	c := newTestCluster(t, 3, 20)
	lead := c.leader()
	c.stop(lead)
	var other core.NodeID
	for id := range c.servers {
		other = id
	}
	for i := 0; i < 100; i++ {
		eventually(t, func() error {
			_, err := c.conns[other].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte("v")})
			return err
		})
	}
	c.start(lead)
	c.awaitKey(t, lead, "k99")
}

// A follower that missed entries the leader's log no longer holds in
// memory (it was gone longer than an election timeout, so it held nothing
// back), with no snapshot file taken since (the interval is far off), is
// caught up by a snapshot taken for it.
func TestCatchUpBySnapshotTakenOnDemand(t *testing.T) {
	c := newTestClusterKeeping(t, 3, 1_000_000, 10, nil)
	lead := c.leader()
	var lag core.NodeID
	for id := range c.servers {
		if id != lead {
			lag = id
		}
	}
	st, err := c.conns[lag].Status(ctx(t), &apipb.StatusRequest{})
	require.NoError(t, err)
	c.stop(lag)
	// Write until the leader's log starts past the stopped follower's end.
	deadline := time.Now().Add(10 * time.Second)
	last := ""
	for i := 0; ; i++ {
		last = fmt.Sprintf("k%d", i)
		eventually(t, func() error {
			_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte(last), Value: []byte("v")})
			return err
		})
		ls, err := c.conns[lead].Status(ctx(t), &apipb.StatusRequest{})
		require.NoError(t, err)
		if ls.FirstIndex > st.LastIndex+1 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the leader's log was never cut past the stopped follower (first index %d, follower's last %d)", ls.FirstIndex, st.LastIndex)
	}
	snaps, err := filepath.Glob(filepath.Join(c.dir, fmt.Sprint(lead), "snap", "*"))
	require.NoError(t, err)
	require.Empty(t, snaps, "no snapshot before a follower needs one")
	c.start(lag)
	c.awaitKey(t, lag, last)
	snaps, err = filepath.Glob(filepath.Join(c.dir, fmt.Sprint(lead), "snap", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, snaps, "the leader took a snapshot for the follower")
}

// Opening a snapshot to send verifies the whole file, seconds for a large
// state. The leader must go on leading meanwhile: here the opening is held
// until the test lets it go, and a write through the leader must succeed,
// with no election, while it is held.
func TestLeaderKeepsLeadingWhileOpeningASnapshot(t *testing.T) {
	var armed atomic.Bool
	opening := make(chan struct{}, 1)
	release := make(chan struct{})
	c := newTestClusterHooked(t, 3, 20, func(s *Server) {
		open := s.openSnapshot
		s.openSnapshot = func(index uint64) (*disk.Snapshot, error) {
			if armed.Load() {
				select {
				case opening <- struct{}{}:
				default:
				}
				<-release
			}
			return open(index)
		}
	})
	var once sync.Once
	letGo := func() { once.Do(func() { close(release) }) }
	t.Cleanup(letGo) // before the servers stop: their transports wait for the send

	lead := c.leader()
	follower := lead%3 + 1
	c.stop(follower)
	for i := range 100 {
		_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte("v")})
		require.NoError(t, err)
	}
	termOf := func() uint64 {
		st, err := c.conns[lead].Status(ctx(t), &apipb.StatusRequest{})
		require.NoError(t, err)
		return st.Term
	}
	term := termOf()
	armed.Store(true)
	c.start(follower)
	select {
	case <-opening:
	case <-time.After(10 * time.Second):
		t.Fatal("the leader never opened a snapshot for the restarted follower")
	}

	// Several election timeouts while the snapshot is being opened.
	for i := range 5 {
		wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.conns[lead].Put(wctx, &apipb.PutRequest{Key: []byte(fmt.Sprintf("during%d", i)), Value: []byte("v")})
		cancel()
		require.NoError(t, err, "a write through the leader while it opens a snapshot")
	}
	require.Equal(t, term, termOf(), "an election while the leader opened a snapshot")

	letGo()
	c.awaitKey(t, follower, "during4")
}

// A stopped leader's followers see its stream break and its address
// refuse connections; each forgets it (the counter says so), and a new
// leader is elected.
func TestFollowersForgetAStoppedLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	require.NoError(t, err)
	// As a crash: a Stop whose context is done hands nothing over.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	c.servers[lead].Stop(done)
	delete(c.servers, lead)
	for id, s := range c.servers {
		eventually(t, func() error {
			if n := metricValue(t, s.obs.m.leadersGone); n != 1 {
				return fmt.Errorf("node %d forgot %v gone leaders", id, n)
			}
			return nil
		})
	}
	require.NotEqual(t, lead, c.leader())
}

func TestWholeClusterRestartKeepsData(t *testing.T) {
	c := newTestCluster(t, 3, 50)
	lead := c.leader()
	for i := 0; i < 120; i++ {
		_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprint(i))})
		require.NoError(t, err)
	}
	for id := range c.members {
		c.stop(id)
	}
	for id := range c.members {
		c.start(id)
	}
	lead = c.leader()
	for i := 0; i < 120; i++ {
		g, err := c.conns[lead].Get(ctx(t), &apipb.GetRequest{Key: []byte(fmt.Sprintf("k%d", i))})
		require.NoError(t, err)
		require.True(t, g.Found, "k%d lost", i)
		require.Equal(t, fmt.Sprint(i), string(g.Value))
	}
}

func TestDataDirOfAnotherNodeRefused(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	c.leader()
	c.stop(1)
	_, err := New(Config{ID: 2, DataDir: filepath.Join(c.dir, "1"), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t),
		InitialCluster: map[core.NodeID]string{2: "127.0.0.1:1"}})
	require.ErrorContains(t, err, "belongs to node 1")
}

// TestDamagedWALRepairedFromPeers: a follower whose WAL was damaged in the
// middle while it was down starts anyway. Its state machine (state.db) has
// applied past the lost entries, so it does not keep its log around them
// (docs/disk.md, "Keeping the log"): it starts its log over from its newest
// snapshot with a vote floor, gets the rest from the leader, and serves
// every write, old and new, again.
func TestDamagedWALRepairedFromPeers(t *testing.T) {
	c := newTestCluster(t, 3, 50)
	lead := putThroughLeader(t, c, 200)
	f := lead%3 + 1
	c.stop(f)
	walDir := filepath.Join(c.dir, fmt.Sprint(f), "wal")
	segs, err := filepath.Glob(filepath.Join(walDir, "*.wal"))
	require.NoError(t, err)
	damageEntry(t, walDir, 0.5)

	c.start(f)
	_, err = os.Stat(filepath.Join(c.dir, fmt.Sprint(f), "votefloor"))
	require.NoError(t, err, "the repair left its vote floor")
	aside, err := filepath.Glob(filepath.Join(c.dir, fmt.Sprint(f), "wal.damaged-*", "*.wal"))
	require.NoError(t, err)
	require.Len(t, aside, len(segs), "the old segments are kept aside")
	requireRepairedServes(t, c, f)
}

// TestDamagedWALAndStateDBKeepTheLog: a follower whose state.db and one
// entry of its WAL after its newest snapshot were damaged while it was
// down rebuilds state.db from that snapshot, so its state machine has not
// applied the lost entry: it keeps its log, the entry as a hole fetched
// from the others, with no vote floor and nothing moved aside, and serves
// every write again.
func TestDamagedWALAndStateDBKeepTheLog(t *testing.T) {
	c := newTestCluster(t, 3, 50)
	lead := putThroughLeader(t, c, 200)
	f := lead%3 + 1
	c.stop(f)
	dir := filepath.Join(c.dir, fmt.Sprint(f))
	zeroPages(t, filepath.Join(dir, "state.db"), 0, 1)
	damageEntry(t, filepath.Join(dir, "wal"), 1) // the one before the last: after the newest snapshot

	c.startWith(f, Config{InitialCluster: c.members, Observability: Observability{MetricsAddr: "127.0.0.1:0"}})
	require.Equal(t, 1.0, scrapeMetrics(t, c.servers[f]).value("keyval_wal_repairs_total"))
	d := c.servers[f].rep.KeptHoles() // set once, at start
	require.NotNil(t, d, "the log was kept")
	require.LessOrEqual(t, d.HoleFrom, d.HoleTo, "an entry was lost: %v", d)
	_, err := os.Stat(filepath.Join(dir, "votefloor"))
	require.True(t, os.IsNotExist(err), "a kept log needs no vote floor: %v", err)
	aside, err := filepath.Glob(filepath.Join(dir, "wal.damaged-*"))
	require.NoError(t, err)
	require.Empty(t, aside, "nothing moved aside")
	requireRepairedServes(t, c, f)
}

// TestLostLastWriteFoundOnRestart: a follower acknowledges and applies
// writes, then its disk loses the WAL's last records, as a lost write would
// (the segment cut where its last entry record began). On restart it finds
// out: by the WAL end mark (--wal-detect-lost-writes), the log short of
// it; without the mark, by state.db, which applied an entry the log no
// longer holds. Either way it says so, keeps the log it has below a vote
// floor, and serves every write again.
func TestLostLastWriteFoundOnRestart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		detect bool
		why    string
	}{
		{"by the end mark", true, "short of its end mark"},
		// The floor is the next term: serializable reads wait for it.
		{"by the state machine", false, "past the end of the WAL's log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 3, 50)
			f := c.leader()%3 + 1
			c.stop(f)
			cfg := Config{InitialCluster: c.members, DetectLostWrites: tc.detect, Observability: Observability{MetricsAddr: "127.0.0.1:0"}}
			c.startWith(f, cfg)
			putThroughLeader(t, c, 200)
			c.awaitKey(t, f, "k199")
			c.stop(f)
			dir := filepath.Join(c.dir, fmt.Sprint(f))
			recs, err := disk.EntryRecords(disk.OSFS{}, filepath.Join(dir, "wal"))
			require.NoError(t, err)
			require.NotEmpty(t, recs)
			last := recs[len(recs)-1]
			require.NoError(t, os.Truncate(last.File, last.Offset))

			c.startWith(f, cfg)
			require.ErrorContains(t, c.servers[f].rep.LostTail(), tc.why)
			require.Equal(t, 1.0, scrapeMetrics(t, c.servers[f]).value("keyval_wal_repairs_total"))
			_, err = os.Stat(filepath.Join(dir, "votefloor"))
			require.NoError(t, err, "the floor is durable")
			requireRepairedServesReads(t, c, f, tc.detect)
		})
	}
}

// damageEntry flips a bit in the payload of the entry record at fraction
// at of the WAL's entry records (not the last one).
func damageEntry(t *testing.T, walDir string, at float64) {
	t.Helper()
	recs, err := disk.EntryRecords(disk.OSFS{}, walDir)
	require.NoError(t, err)
	require.Greater(t, len(recs), 2)
	r := recs[min(int(float64(len(recs))*at), len(recs)-2)]
	b, err := os.ReadFile(r.File)
	require.NoError(t, err)
	b[r.Offset+disk.HeaderSize+1] ^= 0x08
	require.NoError(t, os.WriteFile(r.File, b, 0o600))
}

// putThroughLeader writes k0..k(n-1), value i for ki, through the leader, and
// returns the leader.
func putThroughLeader(t *testing.T, c *testCluster, n int) core.NodeID {
	t.Helper()
	lead := c.leader()
	for i := 0; i < n; i++ {
		_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprint(i))})
		require.NoError(t, err)
	}
	return lead
}

// requireRepairedServes writes k200..k249 through the leader and requires
// the repaired member f to serve them and k0..k199 (written before its
// repair, value i for ki) from its own state.
func requireRepairedServes(t *testing.T, c *testCluster, f core.NodeID) {
	t.Helper()
	requireRepairedServesReads(t, c, f, true)
}

// requireRepairedServesReads is requireRepairedServes with serializable
// reads or, for a member whose vote floor is the next term (it refuses
// serializable reads until then), linearizable ones, which it serves once
// it has applied the leader's read index.
func requireRepairedServesReads(t *testing.T, c *testCluster, f core.NodeID, serializable bool) {
	t.Helper()
	lead := c.leader()
	for i := 200; i < 250; i++ {
		eventually(t, func() error {
			_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprint(i))})
			return err
		})
	}
	for _, i := range []int{0, 120, 199, 249} {
		key := fmt.Sprintf("k%d", i)
		eventually(t, func() error {
			g, err := c.conns[f].Get(ctx(t), &apipb.GetRequest{Key: []byte(key), Serializable: serializable})
			if err != nil {
				return err
			}
			if !g.Found || string(g.Value) != fmt.Sprint(i) {
				return fmt.Errorf("%s on the repaired member: found %v value %q", key, g.Found, g.Value)
			}
			return nil
		})
	}
}
