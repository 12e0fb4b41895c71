package transport

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// TestDeliveryInOrder: every message arrives, whole and in the order it was
// sent, per sender, with several senders and peers at once.
func TestDeliveryInOrder(t *testing.T) {
	nodes := cluster(t, 3, nil)
	const n = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	var batch []core.Message
	for seq := uint64(0); seq < n; {
		batch = batch[:0]
		for k := rng.IntN(50) + 1; k > 0 && seq < n; k-- {
			for _, to := range []core.NodeID{2, 3} {
				m := app(1, to, seq, 64)
				m.Entries[0].Data[0] = byte(seq)
				m.Context = []byte{byte(to)}
				batch = append(batch, m)
			}
			seq++
		}
		nodes[0].tr.Send(batch)
	}
	// Meanwhile nodes 2 and 3 answer node 1 concurrently.
	var wg sync.WaitGroup
	for _, nd := range nodes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(0); seq < n; seq++ {
				nd.tr.Send([]core.Message{{Type: core.MsgAppResp, From: nd.tr.cfg.ID, To: 1, Term: 1, Index: seq}})
			}
		}()
	}
	for _, nd := range nodes[1:] {
		for seq := uint64(0); seq < n; seq++ {
			m := nd.h.next(t)
			if m.From != 1 || m.To != nd.tr.cfg.ID || m.Index != seq || len(m.Entries) != 1 ||
				m.Entries[0].Index != seq+1 || m.Entries[0].Data[0] != byte(seq) || len(m.Entries[0].Data) != 64 ||
				!bytes.Equal(m.Context, []byte{byte(nd.tr.cfg.ID)}) {
				t.Fatalf("node %d: message %d arrived as %v (ctx %x)", nd.tr.cfg.ID, seq, m, m.Context)
			}
		}
	}
	wg.Wait()
	next := map[core.NodeID]uint64{2: 0, 3: 0}
	for range 2 * n {
		m := nodes[0].h.next(t)
		if m.Type != core.MsgAppResp || m.Index != next[m.From] {
			t.Fatalf("node 1: from node %d expected index %d, got %v", m.From, next[m.From], m)
		}
		next[m.From]++
	}
	// Both ends count a batch after its messages went (the sender once its
	// Send returned, the receiver once it handed them over), so the counts
	// may trail the messages themselves.
	eventually(t, "node 1's stats to count every message", func() bool {
		st := nodes[0].tr.Stats()
		return st[2].Sent+st[2].Dropped == n && st[3].Sent+st[3].Dropped == n && st[2].Received == n && st[3].Received == n
	})
	st := nodes[0].tr.Stats()
	for _, id := range []core.NodeID{2, 3} {
		if st[id].Sent != n || st[id].Dropped != 0 || st[id].Received != n {
			t.Errorf("node 1's stats for peer %d: %+v", id, st[id])
		}
	}
}

// slowPeer starts node 2 on a server with the smallest HTTP/2 windows and a
// handler that blocks until hold is closed, and node 1 sending to it.
func slowPeer(t *testing.T, tweak func(*Config)) (sender, slow *node, hold chan struct{}) {
	t.Helper()
	lis1, lis2 := listen(t), listen(t)
	peers := map[core.NodeID]string{1: lis1.Addr().String(), 2: lis2.Addr().String()}

	hold = make(chan struct{})
	h2 := newRecorder()
	h2.hold = hold
	tr2, err := New(testConfig(2, peers), h2)
	if err != nil {
		t.Fatal(err)
	}
	// A server the test owns, through Register: fixed 64 KiB windows, so a
	// stalled receiver stalls the sender after a few messages.
	srv := grpc.NewServer(append(tr2.ServerOptions(),
		grpc.InitialWindowSize(1<<16), grpc.InitialConnWindowSize(1<<16))...)
	tr2.Register(srv)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis2) }()
	t.Cleanup(func() {
		select {
		case <-hold:
		default:
			close(hold)
		}
		srv.Stop()
		<-served
		tr2.Close()
	})
	slow = &node{tr: tr2, h: h2, addr: lis2.Addr().String()}

	cfg := testConfig(1, peers)
	if tweak != nil {
		tweak(&cfg)
	}
	return startNode(t, cfg, newRecorder(), lis1), slow, hold
}

// TestBatching: messages queued while the peer is slow leave in a few large
// batches, not one by one, and still arrive in order.
func TestBatching(t *testing.T) {
	sender, slow, hold := slowPeer(t, nil)
	const n = 200
	for seq := uint64(0); seq < n; seq++ {
		sender.tr.Send([]core.Message{app(1, 2, seq, 8<<10)})
	}
	close(hold)
	for seq := uint64(0); seq < n; seq++ {
		if m := slow.h.next(t); m.Index != seq {
			t.Fatalf("message %d arrived as %d", seq, m.Index)
		}
	}
	// The receiver counts a batch after handing its last message over, and
	// the sender after its Send returned, which may be later still (a
	// clean-clone CI run read Sent 125 with all 200 received).
	eventually(t, "both ends to count every message", func() bool {
		sent := sender.tr.Stats()[2]
		return slow.tr.Stats()[1].Received == n && sent.Sent+sent.Dropped == n
	})
	sent, got := sender.tr.Stats()[2], slow.tr.Stats()[1]
	if sent.Sent != n || sent.Dropped != 0 || got.Received != n {
		t.Fatalf("sender %+v, receiver %+v", sent, got)
	}
	// The 64 KiB windows let through at most ~16 messages of 8 KiB before
	// the sender stalls; everything queued behind them must share batches.
	if got.ReceivedBatches > n/4 || sent.SentBatches != got.ReceivedBatches {
		t.Fatalf("%d messages in %d batches (sender counted %d); want at most %d batches",
			n, got.ReceivedBatches, sent.SentBatches, n/4)
	}
	t.Logf("%d messages in %d batches", n, got.ReceivedBatches)
}

// TestQueueFullDropsAndReportsUnreachable: Send never blocks; when a slow
// peer's queue is full the overflow is dropped and the peer reported
// unreachable, and what was queued still arrives in order.
func TestQueueFullDropsAndReportsUnreachable(t *testing.T) {
	sender, slow, hold := slowPeer(t, func(c *Config) { c.QueueSize = 8 })
	const n = 100
	for seq := uint64(0); seq < n; seq++ {
		sender.tr.Send([]core.Message{app(1, 2, seq, 32<<10)})
	}
	dropped := sender.tr.Stats()[2].Dropped
	if dropped == 0 {
		t.Fatalf("no message dropped: %+v", sender.tr.Stats()[2])
	}
	sender.h.waitUnreachable(t, 2)
	close(hold)
	want := n - int(dropped)
	last := int64(-1)
	for range want {
		m := slow.h.next(t)
		if int64(m.Index) <= last {
			t.Fatalf("message %d arrived after %d", m.Index, last)
		}
		last = int64(m.Index)
	}
	eventually(t, "sender stats to settle", func() bool { return sender.tr.Stats()[2].Sent == uint64(want) })
	if st := slow.tr.Stats()[1]; st.Received != uint64(want) {
		t.Fatalf("received %d, want %d (%d dropped)", st.Received, want, dropped)
	}
	t.Logf("%d sent, %d dropped", want, dropped)
}

// TestReconnectAfterPeerRestart: when the peer's server goes away the
// sender reports it unreachable, and once a server is back at the address
// the stream is re-established and messages flow again, in order.
func TestReconnectAfterPeerRestart(t *testing.T) {
	nodes := cluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	a.tr.Send([]core.Message{app(1, 2, 0, 16)})
	if m := b.h.next(t); m.Index != 0 {
		t.Fatalf("got %v", m)
	}
	b.stop()
	a.h.waitUnreachable(t, 2)

	lis, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatalf("re-listen on %s: %v", b.addr, err)
	}
	b2 := startNode(t, testConfig(2, map[core.NodeID]string{1: a.addr}), newRecorder(), lis)
	eventually(t, "stream to restarted peer", func() bool { return a.tr.Stats()[2].Connected })
	for seq := uint64(1); seq <= 100; seq++ {
		a.tr.Send([]core.Message{app(1, 2, seq, 16)})
	}
	for seq := uint64(1); seq <= 100; seq++ {
		if m := b2.h.next(t); m.Index != seq {
			t.Fatalf("after restart: message %d arrived as %d", seq, m.Index)
		}
	}
}

// A peer whose process stopped (its listener closed) is reported gone once
// its stream breaks, and only it.
func TestStoppedPeerReportedGone(t *testing.T) {
	nodes := cluster(t, 3, nil)
	a, b := nodes[0], nodes[1]
	a.tr.Send([]core.Message{app(1, 2, 0, 16), app(1, 3, 0, 16)})
	b.h.next(t)
	nodes[2].h.next(t)
	b.stop()
	select {
	case id := <-a.h.gone:
		if id != 2 {
			t.Fatalf("peer %d reported gone; only 2 stopped", id)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("stopped peer 2 never reported gone")
	}
	a.tr.Send([]core.Message{app(1, 3, 1, 16)})
	nodes[2].h.next(t)
	select {
	case id := <-a.h.gone:
		t.Fatalf("peer %d reported gone again, or a live peer reported", id)
	default:
	}
}

// A peer that restarts and opens its stream to us is streamed to again at
// once, however long the wait before our next attempt had grown (an hour
// here): it could otherwise hear nothing from us, votes included, while
// we hear it.
func TestRestartedPeerIsStreamedToAtOnce(t *testing.T) {
	hour := func(c *Config) { c.BackoffMin, c.BackoffMax = time.Hour, time.Hour }
	nodes := cluster(t, 2, hour)
	a, b := nodes[0], nodes[1]
	a.tr.Send([]core.Message{app(1, 2, 0, 16)})
	b.h.next(t)
	b.stop()
	a.h.waitUnreachable(t, 2)

	lis, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatalf("re-listen on %s: %v", b.addr, err)
	}
	cfg := testConfig(2, map[core.NodeID]string{1: a.addr})
	hour(&cfg)
	b2 := startNode(t, cfg, newRecorder(), lis)
	b2.tr.Send([]core.Message{app(2, 1, 0, 16)})
	a.h.next(t)
	eventually(t, "stream to the restarted peer", func() bool { return a.tr.Stats()[2].Connected })
	a.tr.Send([]core.Message{app(1, 2, 1, 16)})
	if m := b2.h.next(t); m.Index != 1 {
		t.Fatalf("after restart: got %v", m)
	}
}

// TestPeerMembership: a peer at a dead address is reported unreachable and
// its messages dropped; UpdatePeer moves it to a live address.
func TestPeerMembership(t *testing.T) {
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	lis1, lis2 := listen(t), listen(t)
	a := startNode(t, testConfig(1, map[core.NodeID]string{1: lis1.Addr().String(), 2: deadAddr}), newRecorder(), lis1)
	b := startNode(t, testConfig(2, map[core.NodeID]string{1: lis1.Addr().String()}), newRecorder(), lis2)

	for seq := uint64(0); seq < 10; seq++ {
		a.tr.Send([]core.Message{app(1, 2, seq, 16)})
	}
	a.h.waitUnreachable(t, 2)
	eventually(t, "messages to the dead address dropped", func() bool { return a.tr.Stats()[2].Dropped == 10 })

	if err := a.tr.UpdatePeer(2, b.addr); err != nil {
		t.Fatal(err)
	}
	eventually(t, "stream to the new address", func() bool { return a.tr.Stats()[2].Connected })
	a.tr.Send([]core.Message{app(1, 2, 10, 16)})
	if m := b.h.next(t); m.Index != 10 {
		t.Fatalf("got %v", m)
	}

	if err := a.tr.AddPeer(2, b.addr); err == nil {
		t.Error("AddPeer of a known peer succeeded")
	}
	if err := a.tr.AddPeer(1, b.addr); err == nil {
		t.Error("AddPeer of itself succeeded")
	}
	if err := a.tr.RemovePeer(2); err != nil {
		t.Fatal(err)
	}
	if err := a.tr.RemovePeer(2); err == nil {
		t.Error("RemovePeer twice succeeded")
	}
	if err := a.tr.UpdatePeer(9, b.addr); err == nil {
		t.Error("UpdatePeer of an unknown peer succeeded")
	}
	a.tr.Send([]core.Message{app(1, 2, 11, 16)}) // to a removed peer: dropped, no panic
}

// TestSendRefusesBadMessages: MsgSnap given to Send is reported as a failed
// snapshot; messages of unknown type or not from this node do not leave.
func TestSendRefusesBadMessages(t *testing.T) {
	nodes := cluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	a.tr.Send([]core.Message{
		{Type: core.MsgSnap, From: 1, To: 2, Snapshot: &core.SnapshotMeta{Index: 5}},
		{Type: 0, From: 1, To: 2},
		{Type: core.MsgHeartbeat, From: 3, To: 2},
		{Type: core.MsgHeartbeat, From: 1, To: 2, Commit: 42},
	})
	if rep := a.h.waitSnapshotReport(t); rep != (snapReport{2, false}) {
		t.Fatalf("report %+v", rep)
	}
	if m := b.h.next(t); m.Type != core.MsgHeartbeat || m.Commit != 42 {
		t.Fatalf("first delivered message is %v; the invalid ones should not have left", m)
	}
}

func TestConfigValidation(t *testing.T) {
	h := newRecorder()
	bad := []Config{
		{},
		{ID: 1, QueueSize: -1},
		{ID: 1, BackoffMin: time.Second, BackoffMax: time.Millisecond},
		{ID: 1, SnapshotChunkBytes: 1 << 20, MaxMessageBytes: 1 << 20},
		{ID: 1, Peers: map[core.NodeID]string{2: "bad address\x00"}},
	}
	for i, cfg := range bad {
		if tr, err := New(cfg, h); err == nil {
			tr.Close()
			t.Errorf("config %d accepted: %+v", i, cfg)
		}
	}
	if _, err := New(Config{ID: 1}, nil); err == nil {
		t.Error("nil handler accepted")
	}
}

func TestBackoff(t *testing.T) {
	b := backoffState{min: 10 * time.Millisecond, max: 80 * time.Millisecond}
	ceilings := []time.Duration{10, 20, 40, 80, 80, 80}
	for i, c := range ceilings {
		c *= time.Millisecond
		if d := b.next(); d < c/2 || d > c {
			t.Fatalf("wait %d: %v outside [%v, %v]", i, d, c/2, c)
		}
	}
	b.reset()
	if d := b.next(); d > 10*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}

// TestCloseLeavesNoGoroutines: a cluster that exchanged messages and a
// snapshot, and a sender stuck reconnecting, all end on Close.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		nodes := cluster(t, 3, nil)
		for seq := uint64(0); seq < 100; seq++ {
			nodes[0].tr.Send([]core.Message{app(1, 2, seq, 16), app(1, 3, seq, 16)})
		}
		for range 100 {
			nodes[1].h.next(t)
			nodes[2].h.next(t)
		}
		nodes[0].tr.SendSnapshot(snapMsg(1, 2), readCloser(strings.NewReader("snapshot")))
		nodes[0].h.waitSnapshotReport(t)
		// Node 3 goes first, so node 1's sender to it is reconnecting.
		nodes[2].stop()
		nodes[0].h.waitUnreachable(t, 3)
		for _, nd := range nodes {
			nd.stop()
		}
		// Using a closed transport is harmless.
		nodes[0].tr.Send([]core.Message{app(1, 2, 0, 1)})
		closed := &closeRecorder{Reader: strings.NewReader("x")}
		nodes[0].tr.SendSnapshot(snapMsg(1, 2), closed)
		if !closed.closed {
			t.Error("SendSnapshot after Close did not close the data")
		}
		if err := nodes[0].tr.Serve(listen(t)); err == nil {
			t.Error("Serve after Close succeeded")
		}
	}()
	checkNoLeak(t, base)
}

// addrGone tells an address nobody listens at, or whose listener drops a
// new connection at once (a process caught exiting), from a live one.
func TestAddrGone(t *testing.T) {
	ctx := context.Background()

	closed := listen(t)
	addr := closed.Addr().String()
	closed.Close()
	if !addrGone(ctx, addr) {
		t.Errorf("an address nobody listens at is not gone")
	}

	for _, reset := range []bool{false, true} {
		// Closed, and reset: the kernel resets the connections waiting
		// on a listener that closes.
		l := dropEveryConnection(t, reset)
		if !addrGone(ctx, l.Addr().String()) {
			t.Errorf("an address whose listener drops new connections at once (reset: %v) is not gone", reset)
		}
	}

	live := cluster(t, 1, nil)[0]
	if addrGone(ctx, live.addr) {
		t.Errorf("a live transport's address is gone")
	}
}

// dropEveryConnection listens and closes (or, with reset, resets) every
// connection as soon as it is accepted.
func dropEveryConnection(t *testing.T, reset bool) net.Listener {
	l := listen(t)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if reset {
				_ = c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
		}
	}()
	return l
}
