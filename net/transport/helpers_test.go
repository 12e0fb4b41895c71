package transport

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/net/peerpb"
)

// waitTimeout bounds every wait in these tests; reaching it is a failure.
const waitTimeout = 10 * time.Second

// recorder is a Handler that records what it is given on channels.
type recorder struct {
	msgs        chan core.Message
	unreachable chan core.NodeID
	snapReports chan snapReport
	gone        chan core.NodeID

	// hold, if set, blocks every Step until it is closed: a slow peer.
	hold chan struct{}
	// onSnapshot, if set, handles ReceiveSnapshot.
	onSnapshot func(m core.Message, data io.Reader) error
}

type snapReport struct {
	id core.NodeID
	ok bool
}

func newRecorder() *recorder {
	return &recorder{
		msgs:        make(chan core.Message, 1<<16),
		unreachable: make(chan core.NodeID, 1<<10),
		snapReports: make(chan snapReport, 1<<6),
		gone:        make(chan core.NodeID, 1<<6),
	}
}

func (r *recorder) Step(m core.Message) {
	if r.hold != nil {
		<-r.hold
	}
	r.msgs <- m
}

func (r *recorder) ReceiveSnapshot(m core.Message, data io.Reader) error {
	if r.onSnapshot != nil {
		return r.onSnapshot(m, data)
	}
	_, err := io.Copy(io.Discard, data)
	return err
}

func (r *recorder) ReportUnreachable(id core.NodeID) {
	select {
	case r.unreachable <- id:
	default: // the test has seen enough
	}
}

func (r *recorder) ReportSnapshot(id core.NodeID, ok bool) { r.snapReports <- snapReport{id, ok} }

func (r *recorder) ReportGone(id core.NodeID) {
	select {
	case r.gone <- id:
	default: // the test has seen enough
	}
}

// next returns the next delivered message or fails the test.
func (r *recorder) next(t testing.TB) core.Message {
	t.Helper()
	select {
	case m := <-r.msgs:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no message delivered within %v", waitTimeout)
		return core.Message{}
	}
}

func (r *recorder) waitUnreachable(t testing.TB, id core.NodeID) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case got := <-r.unreachable:
			if got == id {
				return
			}
		case <-deadline:
			t.Fatalf("peer %d never reported unreachable", id)
		}
	}
}

func (r *recorder) waitSnapshotReport(t testing.TB) snapReport {
	t.Helper()
	select {
	case rep := <-r.snapReports:
		return rep
	case <-time.After(waitTimeout):
		t.Fatalf("no ReportSnapshot within %v", waitTimeout)
		return snapReport{}
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("KEYVAL_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a config with quick retries, for tests.
func testConfig(id core.NodeID, peers map[core.NodeID]string) Config {
	return Config{
		ID:                  id,
		ClusterID:           7,
		Peers:               peers,
		DialTimeout:         2 * time.Second,
		BackoffMin:          5 * time.Millisecond,
		BackoffMax:          50 * time.Millisecond,
		UnreachableInterval: 10 * time.Millisecond,
		Logger:              testLogger(),
	}
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// node is one transport serving on its own listener.
type node struct {
	tr   *Transport
	h    *recorder
	addr string
	done chan error
}

// startNode builds a transport for cfg and serves it on lis with Serve.
func startNode(t testing.TB, cfg Config, h *recorder, lis net.Listener) *node {
	t.Helper()
	tr, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{tr: tr, h: h, addr: lis.Addr().String(), done: make(chan error, 1)}
	go func() { n.done <- tr.Serve(lis) }()
	t.Cleanup(n.stop)
	return n
}

// stop closes the transport and waits for Serve to return. Idempotent.
func (n *node) stop() {
	n.tr.Close()
	if n.done != nil {
		<-n.done
		n.done = nil
	}
}

// cluster starts n nodes (ids 1..n) that know each other.
func cluster(t testing.TB, n int, tweak func(*Config)) []*node {
	t.Helper()
	lis := make([]net.Listener, n)
	peers := make(map[core.NodeID]string)
	for i := range lis {
		lis[i] = listen(t)
		peers[core.NodeID(i+1)] = lis[i].Addr().String()
	}
	nodes := make([]*node, n)
	for i := range nodes {
		cfg := testConfig(core.NodeID(i+1), peers)
		if tweak != nil {
			tweak(&cfg)
		}
		nodes[i] = startNode(t, cfg, newRecorder(), lis[i])
	}
	return nodes
}

// app is an append from → to whose Index is a sequence number.
func app(from, to core.NodeID, seq uint64, dataLen int) core.Message {
	return core.Message{Type: core.MsgApp, From: from, To: to, Term: 1, Index: seq, LogTerm: 1,
		Entries: []core.Entry{{Term: 1, Index: seq + 1, Data: make([]byte, dataLen)}}}
}

// rawConn dials addr without the transport, to play a misbehaving peer.
func rawConn(t testing.TB, addr string) peerpb.PeerClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return peerpb.NewPeerClient(conn)
}

// streamCtx is a context carrying stream metadata as a peer would send it.
func streamCtx(t testing.TB, cluster uint64, from, to core.NodeID) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx,
		mdClusterID, strconv.FormatUint(cluster, 10),
		mdFrom, strconv.FormatUint(uint64(from), 10),
		mdTo, strconv.FormatUint(uint64(to), 10))
}

// checkNoLeak fails if the goroutine count does not come back to base.
func checkNoLeak(t testing.TB, base int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), base, buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer collects bytes written concurrently (log output).
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
