package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// newWatchCluster is newTestCluster with extra's settings on every member.
func newWatchCluster(t *testing.T, n int, extra Config) *testCluster {
	c := newTestCluster(t, 0, 0)
	for i := 1; i <= n; i++ {
		c.members[core.NodeID(i)] = freeAddr(t)
		c.clients[core.NodeID(i)] = freeAddr(t)
	}
	for id := range c.members {
		cfg := extra
		cfg.InitialCluster = c.members
		c.startWith(id, cfg)
	}
	return c
}

// watchCtx is a context for a watch that outlives ctx(t)'s 3 s.
func watchCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// next is the watch channel's next response, failing the test after 10 s.
func next(t *testing.T, wch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case r, ok := <-wch:
		require.True(t, ok, "the watch channel closed")
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no watch response within 10s")
	}
	return clientv3.WatchResponse{}
}

// collect reads events until n have arrived, checking each response.
func collect(t *testing.T, wch clientv3.WatchChan, n int, check func(clientv3.WatchResponse)) []*clientv3.Event {
	t.Helper()
	var evs []*clientv3.Event
	for len(evs) < n {
		r := next(t, wch)
		require.NoError(t, r.Err())
		if check != nil {
			check(r)
		}
		evs = append(evs, r.Events...)
	}
	require.Len(t, evs, n)
	return evs
}

type seenEvent struct {
	typ   mvccpb.Event_EventType
	key   string
	value string
	rev   int64
	prev  string
}

func summarize(evs []*clientv3.Event) []seenEvent {
	out := make([]seenEvent, len(evs))
	for i, ev := range evs {
		out[i] = seenEvent{typ: ev.Type, key: string(ev.Kv.Key), value: string(ev.Kv.Value), rev: ev.Kv.ModRevision}
		if ev.PrevKv != nil {
			out[i].prev = string(ev.PrevKv.Value)
		}
	}
	return out
}

// TestEtcdWatch watches through a follower with clientv3: live events
// with previous values, a transaction's events in one response in key
// order, every event already applied by the follower, replay from an old
// revision, filters, a single key, and cancel.
func TestEtcdWatch(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	follower := c.leader()%3 + 1
	cli := etcdClient(t, c.clients[follower], "", "")
	var start int64
	eventually(t, func() error {
		r, err := cli.Put(ctx(t), "/before", "x")
		if err == nil {
			start = r.Header.Revision + 1
		}
		return err
	})
	wctx, cancel := context.WithCancel(watchCtx(t))
	defer cancel()
	live := cli.Watch(wctx, "/w/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	key := cli.Watch(wctx, "/w/a", clientv3.WithRev(start))

	_, err := cli.Put(ctx(t), "/w/a", "1")
	require.NoError(t, err)
	_, err = cli.Put(ctx(t), "/other", "no")
	require.NoError(t, err)
	_, err = cli.Put(ctx(t), "/w/a", "2")
	require.NoError(t, err)
	txn, err := cli.Txn(ctx(t)).Then(clientv3.OpPut("/w/d", "4"), clientv3.OpPut("/w/b", "3"), clientv3.OpDelete("/w/a")).Commit()
	require.NoError(t, err)
	trev := txn.Header.Revision

	var txnResponses int
	evs := collect(t, live, 5, func(r clientv3.WatchResponse) {
		for _, ev := range r.Events {
			require.LessOrEqual(t, uint64(ev.Kv.ModRevision), c.servers[follower].store.Revision(),
				"a follower's watcher sees only what the follower has applied")
		}
		atTxn := 0
		for _, ev := range r.Events {
			if ev.Kv.ModRevision == trev {
				atTxn++
			}
		}
		if atTxn > 0 {
			txnResponses++
			require.Equal(t, 3, atTxn, "a transaction's events come in one response")
		}
	})
	require.Equal(t, 1, txnResponses)
	want := []seenEvent{
		{typ: mvccpb.PUT, key: "/w/a", value: "1", rev: start},
		{typ: mvccpb.PUT, key: "/w/a", value: "2", rev: start + 2, prev: "1"},
		{typ: mvccpb.DELETE, key: "/w/a", rev: trev, prev: "2"}, // key order within a revision
		{typ: mvccpb.PUT, key: "/w/b", value: "3", rev: trev},
		{typ: mvccpb.PUT, key: "/w/d", value: "4", rev: trev},
	}
	require.Equal(t, want, summarize(evs))

	single := summarize(collect(t, key, 3, nil))
	require.Equal(t, []seenEvent{want[0], {typ: mvccpb.PUT, key: "/w/a", value: "2", rev: start + 2}, {typ: mvccpb.DELETE, key: "/w/a", rev: trev}}, single,
		"no prev_kv unless asked")

	replay := cli.Watch(wctx, "/w/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(start))
	require.Equal(t, want, summarize(collect(t, replay, 5, nil)), "a replay from the history gives the same events")
	deletes := cli.Watch(wctx, "/w/", clientv3.WithPrefix(), clientv3.WithRev(start), clientv3.WithFilterPut())
	require.Equal(t, []seenEvent{{typ: mvccpb.DELETE, key: "/w/a", rev: trev}}, summarize(collect(t, deletes, 1, nil)))

	// A range [key, end) and every key from a key on.
	between := cli.Watch(wctx, "/w/b", clientv3.WithRange("/w/c"), clientv3.WithRev(start))
	require.Equal(t, "/w/b", summarize(collect(t, between, 1, nil))[0].key)
	from := cli.Watch(wctx, "/w/c", clientv3.WithFromKey(), clientv3.WithRev(start))
	require.Equal(t, "/w/d", summarize(collect(t, from, 1, nil))[0].key)

	cancel()
	eventually(t, func() error {
		if n := c.servers[follower].watches.watchers.Load(); n != 0 {
			return fmt.Errorf("%d watchers left after cancel", n)
		}
		return nil
	})
}

// TestEtcdWatchCompacted checks a start revision below the compacted one
// gets clientv3's ErrCompacted with the compacted revision, the first one
// it may ask for, and that a watch from it gets every change from there,
// the deletion made at the compacted revision itself included.
func TestEtcdWatchCompacted(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	cli := etcdClient(t, c.clients[1], "", "")
	var rev int64
	eventually(t, func() error {
		r, err := cli.Put(ctx(t), "k", "1")
		if err == nil {
			rev = r.Header.Revision
		}
		return err
	})
	_, err := cli.Put(ctx(t), "k", "2")
	require.NoError(t, err)
	del, err := cli.Delete(ctx(t), "k")
	require.NoError(t, err)
	_, err = cli.Put(ctx(t), "k", "4")
	require.NoError(t, err)
	compactAt := del.Header.Revision
	_, err = cli.Compact(ctx(t), compactAt)
	require.NoError(t, err)

	r := next(t, cli.Watch(watchCtx(t), "k", clientv3.WithRev(rev)))
	require.ErrorIs(t, r.Err(), rpctypes.ErrCompacted)
	require.Equal(t, compactAt, r.CompactRevision)
	require.True(t, r.Canceled)

	evs := collect(t, cli.Watch(watchCtx(t), "k", clientv3.WithRev(r.CompactRevision)), 2, nil)
	require.Equal(t, clientv3.EventTypeDelete, evs[0].Type)
	require.Equal(t, compactAt, evs[0].Kv.ModRevision)
	require.Equal(t, "4", string(evs[1].Kv.Value))
}

// TestEtcdWatchProgress checks periodic progress notifications and one
// asked for: no events, and a revision every change up to which was sent.
func TestEtcdWatchProgress(t *testing.T) {
	c := newWatchCluster(t, 1, Config{WatchProgressNotifyInterval: 50 * time.Millisecond})
	cli := etcdClient(t, c.clients[1], "", "")
	var rev int64
	eventually(t, func() error {
		r, err := cli.Put(ctx(t), "k", "1")
		if err == nil {
			rev = r.Header.Revision
		}
		return err
	})
	wctx := watchCtx(t)
	periodic := cli.Watch(wctx, "k", clientv3.WithProgressNotify())
	r := next(t, periodic)
	require.True(t, r.IsProgressNotify())
	require.Equal(t, rev, r.Header.Revision)

	asked := cli.Watch(wctx, "other")
	require.NoError(t, cli.RequestProgress(wctx))
	r = next(t, asked)
	require.True(t, r.IsProgressNotify())
	require.Equal(t, rev, r.Header.Revision)
}

// rawWatch is a Watch stream without clientv3, to see every response as
// the server sends it.
func rawWatch(t *testing.T, addr string, opts ...grpc.DialOption) pb.Watch_WatchClient {
	opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	conn, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	stream, err := pb.NewWatchClient(conn).Watch(watchCtx(t))
	require.NoError(t, err)
	return stream
}

func createWatch(t *testing.T, stream pb.Watch_WatchClient, req *pb.WatchCreateRequest) {
	require.NoError(t, stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: req}}))
}

// TestEtcdWatchFragments checks that a revision larger than the message
// budget comes in fragments to a watcher that asked for them (clientv3
// joins them into one response), and whole to one that did not.
func TestEtcdWatchFragments(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	cli := etcdClient(t, c.clients[1], "", "")
	big := strings.Repeat("v", 1<<20)
	var start int64
	eventually(t, func() error {
		r, err := cli.Put(ctx(t), "/big/0", big)
		if err == nil {
			start = r.Header.Revision
		}
		return err
	})
	for _, k := range []string{"/big/1", "/big/2"} {
		_, err := cli.Put(ctx(t), k, big)
		require.NoError(t, err)
	}
	del, err := cli.Delete(ctx(t), "/big/", clientv3.WithPrefix())
	require.NoError(t, err)
	drev := del.Header.Revision

	stream := rawWatch(t, c.clients[1])
	createWatch(t, stream, &pb.WatchCreateRequest{Key: []byte("/big/"), RangeEnd: []byte("/big0"), StartRevision: drev, PrevKv: true, Fragment: true})
	created, err := stream.Recv()
	require.NoError(t, err)
	require.True(t, created.Created)
	var fragments []bool
	events := 0
	for events < 3 {
		r, err := stream.Recv()
		require.NoError(t, err)
		fragments = append(fragments, r.Fragment)
		events += len(r.Events)
	}
	require.Greater(t, len(fragments), 1, "3 MiB of previous values exceed the message budget")
	require.False(t, fragments[len(fragments)-1], "the last piece is not a fragment")
	for _, f := range fragments[:len(fragments)-1] {
		require.True(t, f)
	}

	for _, opts := range [][]clientv3.OpOption{{clientv3.WithFragment()}, nil} {
		opts = append(opts, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(start))
		wch := cli.Watch(watchCtx(t), "/big/", opts...)
		collect(t, wch, 3, nil)
		r := next(t, wch)
		require.NoError(t, r.Err())
		require.Len(t, r.Events, 3, "one revision, one response")
		require.Equal(t, big, string(r.Events[2].PrevKv.Value))
	}
}

// TestEtcdWatchSlowStream checks that a stream whose client does not read
// is buffered up to the bound, then its watcher is canceled with a reason,
// after events without gap.
func TestEtcdWatchSlowStream(t *testing.T) {
	c := newWatchCluster(t, 1, Config{WatchMaxQueuedBytes: 256 << 10})
	cli := etcdClient(t, c.clients[1], "", "")
	eventually(t, func() error { _, err := cli.Put(ctx(t), "warm", "up"); return err })
	value := strings.Repeat("x", 64<<10)

	// A revision larger than the bound still reaches a client that reads.
	keeps := cli.Watch(watchCtx(t), "big/", clientv3.WithPrefix())
	var ops []clientv3.Op
	for i := range 5 {
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("big/%d", i), value))
	}
	_, err := cli.Txn(ctx(t)).Then(ops...).Commit()
	require.NoError(t, err)
	require.Len(t, collect(t, keeps, 5, nil), 5)

	// Fixed flow control windows: gRPC would otherwise grow them with what
	// arrives, whether the client reads or not.
	stream := rawWatch(t, c.clients[1], grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	createWatch(t, stream, &pb.WatchCreateRequest{Key: []byte("slow")})
	created, err := stream.Recv()
	require.NoError(t, err)
	require.True(t, created.Created)
	const writes = 60 // 3.8 MiB: past the stream's flow control window and the bound
	var revs []int64
	for range writes {
		r, err := cli.Put(ctx(t), "slow", value)
		require.NoError(t, err)
		revs = append(revs, r.Header.Revision)
	}
	var got []int64
	for {
		r, err := stream.Recv()
		require.NoError(t, err)
		for _, ev := range r.Events {
			got = append(got, ev.Kv.ModRevision)
		}
		if r.Canceled {
			require.Contains(t, r.CancelReason, "did not take the events fast enough")
			require.Zero(t, r.CompactRevision)
			break
		}
	}
	require.Less(t, len(got), writes)
	require.Equal(t, revs[:len(got)], got, "the events before the cancel have no gap")
	eventually(t, func() error {
		if n := c.servers[1].watches.watchers.Load(); n != 1 {
			return fmt.Errorf("%d watchers left, not just the one that reads", n)
		}
		return nil
	})
}

// TestEtcdWatchResumeOnAnotherMember stops the member a clientv3 watch is
// on while writes go on: clientv3 watches again on another member from the
// revision after the last event it got, and the events are exactly those
// of the history, without gap or duplicate.
func TestEtcdWatchResumeOnAnotherMember(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	c.leader()
	var endpoints []string
	for _, a := range c.clients {
		endpoints = append(endpoints, a)
	}
	dial := func() *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		require.NoError(t, err)
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	watcher, writer := dial(), dial()
	var start int64
	eventually(t, func() error {
		r, err := writer.Put(ctx(t), "/r/start", "0")
		if err == nil {
			start = r.Header.Revision
		}
		return err
	})
	wch := watcher.Watch(watchCtx(t), "/r/", clientv3.WithPrefix(), clientv3.WithRev(start))
	put := func(i int) {
		eventually(t, func() error { _, err := writer.Put(ctx(t), fmt.Sprintf("/r/%03d", i), "v"); return err })
	}
	for i := range 20 {
		put(i)
	}
	got := collect(t, wch, 21, nil)
	var on core.NodeID
	for id, s := range c.servers {
		if s.watches.watchers.Load() > 0 {
			on = id
		}
	}
	require.NotZero(t, on, "some member serves the watch")
	c.stop(on)
	for i := 20; i < 40; i++ {
		put(i)
	}
	var last int64
	eventually(t, func() error {
		r, err := writer.Get(ctx(t), "/r/039")
		if err == nil && len(r.Kvs) == 1 {
			last = r.Kvs[0].ModRevision
			return nil
		}
		return fmt.Errorf("not written yet: %v", err)
	})
	for got[len(got)-1].Kv.ModRevision < last {
		r := next(t, wch)
		require.NoError(t, r.Err())
		got = append(got, r.Events...)
	}
	replay := collect(t, writer.Watch(watchCtx(t), "/r/", clientv3.WithPrefix(), clientv3.WithRev(start)), len(got), nil)
	require.Equal(t, summarize(replay), summarize(got))
}

// TestEtcdWatchAuth checks a watcher needs read permission on its range.
func TestEtcdWatchAuth(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	admin := etcdClient(t, c.clients[1], "", "")
	eventually(t, func() error { _, err := admin.UserAdd(ctx(t), "root", "rootpw"); return err })
	for _, step := range []func() error{
		func() error { _, err := admin.UserGrantRole(ctx(t), "root", "root"); return err },
		func() error { _, err := admin.UserAdd(ctx(t), "alice", "alicepw"); return err },
		func() error { _, err := admin.RoleAdd(ctx(t), "app"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx(t), "app", "app/", "app0", clientv3.PermissionType(authpb.READ))
			return err
		},
		func() error { _, err := admin.UserGrantRole(ctx(t), "alice", "app"); return err },
		func() error { _, err := admin.AuthEnable(ctx(t)); return err },
	} {
		require.NoError(t, step())
	}
	alice := etcdClient(t, c.clients[1], "alice", "alicepw")
	root := etcdClient(t, c.clients[1], "root", "rootpw")

	r := next(t, alice.Watch(watchCtx(t), "other"))
	require.ErrorIs(t, r.Err(), rpctypes.ErrPermissionDenied)
	wch := alice.Watch(watchCtx(t), "app/", clientv3.WithPrefix())
	_, err := root.Put(ctx(t), "app/x", "1")
	require.NoError(t, err)
	require.Equal(t, "app/x", string(collect(t, wch, 1, nil)[0].Kv.Key))
}

// TestEtcdWatchManyWatchers creates 10,000 watchers on one member, one
// stream, and reports the heap they take; one write reaches them all.
func TestEtcdWatchManyWatchers(t *testing.T) {
	const n = 10000
	c := newTestCluster(t, 1, 0)
	cli := etcdClient(t, c.clients[1], "", "")
	eventually(t, func() error { _, err := cli.Put(ctx(t), "warm", "up"); return err })
	stream := rawWatch(t, c.clients[1])
	before := heapInUse()
	for i := range n {
		req := &pb.WatchCreateRequest{Key: []byte("/fan/")}
		if i%2 == 0 {
			req.RangeEnd = []byte("/fan0")
		}
		createWatch(t, stream, req)
	}
	for range n {
		r, err := stream.Recv()
		require.NoError(t, err)
		require.True(t, r.Created)
	}
	require.EqualValues(t, n, c.servers[1].watches.watchers.Load())
	after := heapInUse()
	perWatcher := (int64(after) - int64(before)) / n
	t.Logf("%d watchers: heap %d -> %d bytes, %d per watcher (client and server)", n, before, after, perWatcher)
	require.Less(t, perWatcher, int64(16<<10), "a watcher costs a bounded, small amount of memory")

	_, err := cli.Put(ctx(t), "/fan/", "x")
	require.NoError(t, err)
	seen := map[int64]bool{}
	for len(seen) < n {
		r, err := stream.Recv()
		require.NoError(t, err)
		require.Len(t, r.Events, 1)
		require.False(t, seen[r.WatchId], "one event per watcher")
		seen[r.WatchId] = true
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestEtcdWatchRequireLeader checks clientv3's WithRequireLeader: a watch
// on a member that has lost its leader ends with ErrNoLeader.
func TestEtcdWatchRequireLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	follower := lead%3 + 1
	cli := etcdClient(t, c.clients[follower], "", "")
	eventually(t, func() error { _, err := cli.Put(ctx(t), "k", "1"); return err })
	r, err := cli.Put(ctx(t), "k", "2")
	require.NoError(t, err)
	wch := cli.Watch(clientv3.WithRequireLeader(watchCtx(t)), "k", clientv3.WithRev(r.Header.Revision))
	require.Equal(t, "2", string(collect(t, wch, 1, nil)[0].Kv.Value))
	for id := range c.members {
		if id != follower {
			c.stop(id)
		}
	}
	for {
		r := next(t, wch)
		if r.Err() != nil {
			require.ErrorIs(t, r.Err(), rpctypes.ErrNoLeader)
			return
		}
	}
}

// TestEtcdWatchCatchUpInPages replays more history than a page, with
// several changes per revision, while writes go on: watchers created one
// after another as the history grows catch up in pages and then go on
// live, and each gets every revision's changes whole, in order, without
// gap or duplicate.
func TestEtcdWatchCatchUpInPages(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	cli := etcdClient(t, c.clients[1], "", "")
	txn := func(i int) (int64, error) {
		r, err := cli.Txn(ctx(t)).Then(clientv3.OpPut("/p/a", fmt.Sprint(i)), clientv3.OpPut("/p/b", fmt.Sprint(i)),
			clientv3.OpPut("/p/c", fmt.Sprint(i))).Commit()
		if err != nil {
			return 0, err
		}
		return r.Header.Revision, nil
	}
	var first int64
	eventually(t, func() (err error) { first, err = txn(0); return err })
	const total = 600 // 1,800 changes: several pages of watchPageEvents
	revs := make(chan int64, total)
	errc := make(chan error, 1)
	go func() {
		defer close(revs)
		for i := 1; i < total; i++ {
			rev, err := txn(i)
			if err != nil {
				errc <- err
				return
			}
			revs <- rev
		}
	}()
	want := []int64{first, first, first}
	var watches []clientv3.WatchChan
	for rev := range revs {
		want = append(want, rev, rev, rev)
		if len(want)%150 == 0 { // every 50 transactions, one more watcher
			watches = append(watches, cli.Watch(watchCtx(t), "/p/", clientv3.WithPrefix(), clientv3.WithRev(first), clientv3.WithPrevKV()))
		}
	}
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	for _, wch := range watches {
		var got []int64
		for len(got) < len(want) {
			r := next(t, wch)
			require.NoError(t, r.Err())
			require.Zero(t, len(r.Events)%3, "a revision's 3 changes in one response")
			for _, ev := range r.Events {
				got = append(got, ev.Kv.ModRevision)
				if ev.Kv.ModRevision > first {
					require.NotNil(t, ev.PrevKv, "read from the history or handed over live, with its previous version")
				}
			}
		}
		require.Equal(t, want, got)
	}
}

// pagedEvents is an eventSource over a list of events, as the store
// answers Events.
type pagedEvents []*kvstore.Event

func (p pagedEvents) Events(_, _ []byte, from, to uint64, _ bool, limit int) ([]*kvstore.Event, bool, error) {
	var out []*kvstore.Event
	for _, ev := range p {
		if rev := uint64(ev.Kv.ModRevision); rev < from || rev > to {
			continue
		}
		if limit > 0 && len(out) == limit {
			return out, true, nil
		}
		out = append(out, ev)
	}
	return out, false, nil
}
func (p pagedEvents) Revision() uint64          { return uint64(p[len(p)-1].Kv.ModRevision) }
func (p pagedEvents) CompactedRevision() uint64 { return 0 }

// TestReadPageCutsAtRevisions checks a page ends after a whole revision,
// and that a revision larger than a page is read whole.
func TestReadPageCutsAtRevisions(t *testing.T) {
	var src pagedEvents
	add := func(rev int64, n int) {
		for i := range n {
			src = append(src, &kvstore.Event{Kv: &mvccpb.KeyValue{Key: []byte(fmt.Sprint(i)), ModRevision: rev}})
		}
	}
	add(1, watchPageEvents-1)
	add(2, 2)                   // straddles the first page's end
	add(3, 2*watchPageEvents+1) // larger than a page
	add(4, 1)
	var got []int64
	for from := uint64(1); from <= 4; {
		evs, through, err := readPage(src, nil, nil, from, 4, false)
		require.NoError(t, err)
		require.GreaterOrEqual(t, through, from)
		for _, ev := range evs {
			require.LessOrEqual(t, uint64(ev.Kv.ModRevision), through)
			got = append(got, ev.Kv.ModRevision)
		}
		from = through + 1
	}
	want := make([]int64, 0, len(src))
	for _, ev := range src {
		want = append(want, ev.Kv.ModRevision)
	}
	require.Equal(t, want, got)
}

// TestEtcdWatchGateway watches through etcd's JSON gateway: the stream's
// responses come as JSON objects, each under "result".
func TestEtcdWatchGateway(t *testing.T) {
	c := newWatchCluster(t, 1, Config{ClientHTTPAddr: freeAddr(t)})
	cli := etcdClient(t, c.clients[1], "", "")
	eventually(t, func() error { _, err := cli.Put(ctx(t), "warm", "up"); return err })
	body, err := json.Marshal(map[string]any{"create_request": map[string]any{"key": b64("k")}})
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(watchCtx(t), http.MethodPost, "http://"+c.servers[1].ClientHTTPAddr()+"/v3/watch", bytes.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	dec := json.NewDecoder(resp.Body)
	var created map[string]map[string]any
	require.NoError(t, dec.Decode(&created))
	require.Equal(t, true, created["result"]["created"])
	_, err = cli.Put(ctx(t), "k", "v")
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, dec.Decode(&got))
	require.Equal(t, b64("v"), field(t, got, "result", "events", 0, "kv", "value"))
}

// TestEtcdWatchIDs checks watch ids on one raw stream: one the client
// chose, assigned ones from 0 skipping those in use, one in use refused,
// cancel, and a progress request answered with id -1.
func TestEtcdWatchIDs(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	cli := etcdClient(t, c.clients[1], "", "")
	var rev int64
	eventually(t, func() error {
		r, err := cli.Put(ctx(t), "k", "1")
		if err == nil {
			rev = r.Header.Revision
		}
		return err
	})
	stream := rawWatch(t, c.clients[1])
	recv := func() *pb.WatchResponse {
		r, err := stream.Recv()
		require.NoError(t, err)
		return r
	}
	createWatch(t, stream, &pb.WatchCreateRequest{Key: []byte("w"), WatchId: 1})
	r := recv()
	require.True(t, r.Created && !r.Canceled)
	require.EqualValues(t, 1, r.WatchId)
	for _, want := range []int64{0, 2} {
		createWatch(t, stream, &pb.WatchCreateRequest{Key: []byte("w")})
		r = recv()
		require.True(t, r.Created && !r.Canceled)
		require.Equal(t, want, r.WatchId)
	}
	for _, id := range []int64{1, -5} {
		createWatch(t, stream, &pb.WatchCreateRequest{Key: []byte("w"), WatchId: id})
		r = recv()
		require.True(t, r.Created && r.Canceled, "id %d", id)
		require.NotEmpty(t, r.CancelReason)
		if id == 1 { // in use: etcd's answer
			require.EqualValues(t, -1, r.WatchId)
			require.Equal(t, "mvcc: duplicate watch ID provided on the WatchStream", r.CancelReason)
		}
	}
	require.NoError(t, stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 1}}}))
	r = recv()
	require.True(t, r.Canceled)
	require.EqualValues(t, 1, r.WatchId)
	require.NoError(t, stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}))
	r = recv()
	require.EqualValues(t, -1, r.WatchId)
	require.Equal(t, rev, r.Header.Revision)
	require.Empty(t, r.Events)
}

// TestLeaderStopKeepsWatchesThatRequireALeader: a leader that stops hands
// leadership over first, as etcd's does, so that a watch requiring a
// leader (as etcdctl's do), moved to another member when the stop ends
// its stream, finds a leader there and goes on, rather than meeting the
// election's gap and ending with "no leader".
func TestLeaderStopKeepsWatchesThatRequireALeader(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	cli := etcdClient(t, c.clients[lead], "", "")
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	defer cancel()
	w := cli.Watch(ctx, "k", clientv3.WithCreatedNotify())
	created := next(t, w)
	require.True(t, created.Created, "%+v", created)
	var others []string
	for id, addr := range c.clients {
		if id != lead {
			others = append(others, addr)
		}
	}
	cli.SetEndpoints(append([]string{c.clients[lead]}, others...)...)

	start := time.Now()
	c.stop(lead)
	t.Logf("the leader stopped in %v", time.Since(start))
	writer := etcdClient(t, others[0], "", "")
	eventually(t, func() error {
		_, err := writer.Put(ctx, "k", "after")
		return err
	})
	for {
		r := next(t, w)
		require.NoError(t, r.Err(), "the watch ended")
		if len(r.Events) > 0 {
			require.Equal(t, "after", string(r.Events[0].Kv.Value))
			return
		}
	}
}
