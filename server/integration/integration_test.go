//go:build integration

// Package integration runs real keyvald processes on loopback and checks
// what a user would: any member serves, a killed leader is replaced and
// writes resume, a restarted node catches up (by snapshot too), a whole
// cluster restart keeps every acknowledged write, bad input is refused
// without harm, a client that reads no pipelined replies cannot grow a
// member's memory past its bound — and every client operation of the run
// is linearizable.
// Run it with `make integration-test`.
package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/internal/freeport"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

var keyvald string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keyval-integration-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	keyvald = filepath.Join(dir, "keyvald")
	build := exec.Command("go", "build", "-o", keyvald, "github.com/therealutkarshpriyadarshi/keyval/cmd/keyvald")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build keyvald:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type member struct {
	id         int
	client     string
	peer       string
	metrics    string
	dir        string
	log        string
	cmd        *exec.Cmd
	conn       *grpc.ClientConn
	kv         apipb.KVClient
	waitResult chan error
}

type cluster struct {
	t       *testing.T
	members []*member
	initial string
	snap    int
	// flags are more flags for every member.
	flags []string
}

func freePort(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Loopback()
	require.NoError(t, err)
	return addr
}

func newCluster(t *testing.T, n, snapshotEvery int, flags ...string) *cluster {
	c := &cluster{t: t, snap: snapshotEvery, flags: flags}
	base := t.TempDir()
	var parts []string
	for i := 1; i <= n; i++ {
		m := &member{id: i, client: freePort(t), peer: freePort(t), metrics: freePort(t), dir: filepath.Join(base, fmt.Sprint(i)),
			log: filepath.Join(base, fmt.Sprintf("%d.log", i))}
		c.members = append(c.members, m)
		parts = append(parts, fmt.Sprintf("%d=%s", i, m.peer))
	}
	c.initial = strings.Join(parts, ",")
	for _, m := range c.members {
		c.start(m)
		conn, err := grpc.NewClient(m.client, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		m.conn, m.kv = conn, apipb.NewKVClient(conn)
	}
	t.Cleanup(func() {
		for _, m := range c.members {
			if m.cmd != nil {
				_ = m.cmd.Process.Kill()
				<-m.waitResult
			}
			m.conn.Close()
		}
		if t.Failed() {
			for _, m := range c.members {
				b, _ := os.ReadFile(m.log)
				t.Logf("--- log of node %d (last 3000 bytes):\n%s", m.id, tail(b, 3000))
			}
		}
	})
	return c
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (c *cluster) start(m *member) { c.startWith(m, "--initial-cluster", c.initial) }

// startWith starts member m's keyvald with its own flags, the cluster's
// and extra.
func (c *cluster) startWith(m *member, extra ...string) {
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(c.t, err)
	args := []string{"--id", fmt.Sprint(m.id), "--data-dir", m.dir,
		"--listen-client", m.client, "--listen-peer", m.peer, "--listen-metrics", m.metrics,
		"--heartbeat-interval", "50ms", "--election-timeout", "500ms",
		"--snapshot-interval", fmt.Sprint(c.snap)}
	args = append(append(args, c.flags...), extra...)
	m.cmd = exec.Command(keyvald, args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	require.NoError(c.t, m.cmd.Start())
	m.waitResult = make(chan error, 1)
	go func(cmd *exec.Cmd, f *os.File) {
		m.waitResult <- cmd.Wait()
		f.Close()
	}(m.cmd, logf)
}

func (c *cluster) kill(m *member) {
	require.NoError(c.t, m.cmd.Process.Kill())
	<-m.waitResult
	m.cmd = nil
}

func (c *cluster) terminate(m *member) {
	require.NoError(c.t, m.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-m.waitResult:
		require.NoError(c.t, err, "node %d did not exit cleanly on SIGTERM", m.id)
	case <-time.After(15 * time.Second):
		c.t.Fatalf("node %d did not stop within 15s of SIGTERM", m.id)
	}
	m.cmd = nil
}

// leader polls the members until one says it leads.
func (c *cluster) leader() *member {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range c.members {
			if m.cmd == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			st, err := m.kv.Status(ctx, &apipb.StatusRequest{})
			cancel()
			if err == nil && st.Role == "Leader" {
				return m
			}
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	c.t.Fatal("no leader within 15s")
	return nil
}

// worker is one client: a session, sequential operations on a few keys,
// each recorded for the linearizability check.
type worker struct {
	id      int
	c       *cluster
	rec     *lin.Recorder
	session uint64
	seq     uint64
	rng     *rand.Rand
	acked   atomic.Int64
	// failed counts operations that gave up (every retry failed): the
	// cluster was unavailable to this client for the whole retry window.
	failed atomic.Int64
	target int
	// versions are the last versions this worker saw, for its CAS.
	versions map[string]uint64
}

func (w *worker) call(f func(kv apipb.KVClient) error, deadline time.Time) error {
	var err error
	for time.Now().Before(deadline) {
		m := w.c.members[w.target%len(w.c.members)]
		err = f(m.kv)
		if err == nil {
			return nil
		}
		if status.Code(err) == codes.InvalidArgument {
			return err
		}
		w.target++                                                     // try another member
		time.Sleep(time.Duration(5+w.rng.IntN(20)) * time.Millisecond) // backoff between retries
	}
	return err
}

func (w *worker) register() error {
	return w.call(func(kv apipb.KVClient) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := kv.Register(ctx, &apipb.RegisterRequest{})
		if err == nil {
			w.session = r.ClientId
		}
		return err
	}, time.Now().Add(20*time.Second))
}

func (w *worker) op(keys int) {
	key := fmt.Sprintf("k%d", w.rng.IntN(keys))
	now := func() int64 { return time.Now().UnixNano() }
	deadline := time.Now().Add(10 * time.Second)
	timeout := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), time.Second)
	}
	if w.rng.IntN(2) == 0 {
		id := w.rec.Call(w.id, lin.Get(key), now())
		var resp *apipb.GetResponse
		err := w.call(func(kv apipb.KVClient) error {
			ctx, cancel := timeout()
			defer cancel()
			var err error
			resp, err = kv.Get(ctx, &apipb.GetRequest{Key: []byte(key)})
			return err
		}, deadline)
		if err != nil {
			_ = w.rec.Drop(id)
			w.failed.Add(1)
			return
		}
		out := lin.GetNotFound()
		if resp.Found {
			out = lin.GetFound(string(resp.Value), resp.Version)
		}
		_ = w.rec.Return(id, out, now())
		return
	}
	w.seq++
	value := fmt.Sprintf("w%d-%d", w.id, w.seq)
	sess := &apipb.Session{ClientId: w.session, Seq: w.seq}
	var in lin.Input
	var send func(kv apipb.KVClient, ctx context.Context) (lin.Output, error)
	switch r := w.rng.IntN(4); {
	case r < 2:
		in = lin.Put(key, value)
		send = func(kv apipb.KVClient, ctx context.Context) (lin.Output, error) {
			resp, err := kv.Put(ctx, &apipb.PutRequest{Key: []byte(key), Value: []byte(value), Session: sess})
			if err != nil {
				return lin.Output{}, err
			}
			w.versions[key] = resp.Version
			return lin.PutOK(resp.Version), nil
		}
	case r < 3:
		in = lin.Delete(key)
		send = func(kv apipb.KVClient, ctx context.Context) (lin.Output, error) {
			resp, err := kv.Delete(ctx, &apipb.DeleteRequest{Key: []byte(key), Session: sess})
			if err != nil {
				return lin.Output{}, err
			}
			delete(w.versions, key)
			return lin.DeleteOK(resp.Existed), nil
		}
	default:
		expect := w.versions[key]
		in = lin.CAS(key, expect, value)
		send = func(kv apipb.KVClient, ctx context.Context) (lin.Output, error) {
			resp, err := kv.CompareAndSwap(ctx, &apipb.CompareAndSwapRequest{Key: []byte(key), ExpectedVersion: expect, Value: []byte(value), Session: sess})
			if err != nil {
				return lin.Output{}, err
			}
			if resp.Succeeded {
				w.versions[key] = resp.Version
				return lin.Output{Succeeded: true, Version: resp.Version}, nil
			}
			if resp.Exists {
				w.versions[key] = resp.Version
			}
			return lin.Output{Found: resp.Exists, Value: string(resp.CurrentValue), Version: resp.Version}, nil
		}
	}
	id := w.rec.Call(w.id, in, now())
	var out lin.Output
	err := w.call(func(kv apipb.KVClient) error {
		ctx, cancel := timeout()
		defer cancel()
		var err error
		out, err = send(kv, ctx)
		return err
	}, deadline)
	if err != nil {
		_ = w.rec.Unknown(id) // it may have been applied
		w.failed.Add(1)
		return
	}
	_ = w.rec.Return(id, out, now())
	w.acked.Add(1)
}

func runWorkers(t *testing.T, c *cluster, rec *lin.Recorder, n, keys int, stop <-chan struct{}) (*sync.WaitGroup, []*worker) {
	var wg sync.WaitGroup
	var workers []*worker
	for i := 0; i < n; i++ {
		w := &worker{id: i + 1, c: c, rec: rec, rng: rand.New(rand.NewPCG(uint64(i), 1)), target: i, versions: map[string]uint64{}}
		require.NoError(t, w.register())
		workers = append(workers, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					w.op(keys)
				}
			}
		}()
	}
	return &wg, workers
}

// readEveryKey reads each key once more, recording the reads in rec after
// every other operation: a lost acknowledged write then makes the history
// non-linearizable.
func readEveryKey(t *testing.T, c *cluster, rec *lin.Recorder, keys int) {
	t.Helper()
	for k := 0; k < keys; k++ {
		key := fmt.Sprintf("k%d", k)
		w := &worker{id: 100, c: c, rec: rec, rng: rand.New(rand.NewPCG(9, 9))}
		id := rec.Call(100, lin.Get(key), time.Now().UnixNano())
		var resp *apipb.GetResponse
		err := w.call(func(kv apipb.KVClient) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			var err error
			resp, err = kv.Get(ctx, &apipb.GetRequest{Key: []byte(key)})
			return err
		}, time.Now().Add(10*time.Second))
		require.NoError(t, err)
		out := lin.GetNotFound()
		if resp.Found {
			out = lin.GetFound(string(resp.Value), resp.Version)
		}
		require.NoError(t, rec.Return(id, out, time.Now().UnixNano()))
	}
}

// checkLinearizable fails the test if rec's history is not linearizable,
// leaving Porcupine's visualization in the temp directory.
func checkLinearizable(t *testing.T, rec *lin.Recorder, name string) {
	t.Helper()
	res := lin.Check(rec.History(), time.Minute)
	t.Log(res.Summary())
	if res.Verdict != lin.Linearizable {
		path := filepath.Join(os.TempDir(), name+".html")
		_ = res.WriteVisualization(path)
		t.Fatalf("not linearizable; visualization at %s", path)
	}
}

// scrape reads member m's /metrics and sums each metric over its labels
// (histograms as name_count).
func scrape(t *testing.T, m *member) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + m.metrics + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	out := map[string]float64{}
	for name, f := range families {
		for _, mt := range f.GetMetric() {
			switch {
			case mt.GetCounter() != nil:
				out[name] += mt.GetCounter().GetValue()
			case mt.GetGauge() != nil:
				out[name] += mt.GetGauge().GetValue()
			case mt.GetHistogram() != nil:
				out[name+"_count"] += float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func totalAcked(ws []*worker) int64 {
	var n int64
	for _, w := range ws {
		n += w.acked.Load()
	}
	return n
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	t.Fatalf("%s: not within %v", what, limit)
	return 0
}

func TestCluster(t *testing.T) {
	c := newCluster(t, 3, 50)
	lead := c.leader()
	rec := lin.NewRecorder()
	const keys = 8

	t.Run("write through one member, read from every member", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		follower := c.members[0]
		if follower == lead {
			follower = c.members[1]
		}
		_, err := follower.kv.Put(ctx, &apipb.PutRequest{Key: []byte("hello"), Value: []byte("world")})
		require.NoError(t, err)
		for _, m := range c.members {
			g, err := m.kv.Get(ctx, &apipb.GetRequest{Key: []byte("hello")})
			require.NoError(t, err, "node %d", m.id)
			require.True(t, g.Found)
			require.Equal(t, "world", string(g.Value))
		}
	})

	t.Run("metrics move with traffic", func(t *testing.T) {
		lead := c.leader()
		before := scrape(t, lead)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := range 20 {
			_, err := lead.kv.Put(ctx, &apipb.PutRequest{Key: []byte(fmt.Sprintf("m%d", i)), Value: []byte("v")})
			require.NoError(t, err)
		}
		after := scrape(t, lead)
		for _, name := range []string{"keyval_proposals_committed_total", "keyval_request_duration_seconds_count",
			"keyval_wal_fsync_duration_seconds_count", "keyval_apply_duration_seconds_count", "keyval_peer_messages_sent_total"} {
			require.Greater(t, after[name], before[name], "%s did not move", name)
		}
		require.GreaterOrEqual(t, after["keyval_request_duration_seconds_count"]-before["keyval_request_duration_seconds_count"], 20.0)
		require.Equal(t, 1.0, after["keyval_has_leader"])
		resp, err := http.Get("http://" + lead.metrics + "/readyz")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})

	stop := make(chan struct{})
	wg, workers := runWorkers(t, c, rec, 4, keys, stop)
	waitFor(t, "first writes", 10*time.Second, func() bool { return totalAcked(workers) > 50 })

	t.Run("kill -9 the leader while clients write; writes resume", func(t *testing.T) {
		lead := c.leader()
		c.kill(lead)
		before := totalAcked(workers)
		took := waitFor(t, "writes resume after the leader was killed", 10*time.Second,
			func() bool { return totalAcked(workers) > before+20 })
		t.Logf("writes resumed %v after kill -9 of node %d", took.Round(time.Millisecond), lead.id)
		// Enough writes while it is down that it must catch up by snapshot.
		waitFor(t, "writes while the node is down", 20*time.Second,
			func() bool { return totalAcked(workers) > before+200 })

		c.start(lead)
		waitFor(t, "the restarted node catches up", 20*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			st, err := lead.kv.Status(ctx, &apipb.StatusRequest{})
			if err != nil {
				return false
			}
			l := c.leader()
			lst, err := l.kv.Status(ctx, &apipb.StatusRequest{})
			return err == nil && st.Applied+20 >= lst.Commit && st.Applied > 0
		})
		b, err := os.ReadFile(lead.log)
		require.NoError(t, err)
		require.Contains(t, string(b), "received snapshot", "the restarted node should have been brought up by a snapshot")
	})

	close(stop)
	wg.Wait()

	t.Run("restart the whole cluster; every acknowledged write is still there", func(t *testing.T) {
		for _, m := range c.members {
			c.terminate(m)
		}
		for _, m := range c.members {
			c.start(m)
		}
		c.leader()
		// Read every key after the restart: recorded as operations after
		// all others, so a lost acknowledged write makes the history
		// non-linearizable.
		readEveryKey(t, c, rec, keys)
	})

	t.Run("history is linearizable", func(t *testing.T) {
		checkLinearizable(t, rec, "keyval-integration-history")
	})

	t.Run("bad input is refused and the servers stay up", func(t *testing.T) {
		m := c.members[0]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := m.kv.Put(ctx, &apipb.PutRequest{Key: make([]byte, 64<<10), Value: []byte("v")})
		require.Equal(t, codes.InvalidArgument, status.Code(err), "oversized key: %v", err)
		_, err = m.kv.Put(ctx, &apipb.PutRequest{Key: []byte("k"), Value: make([]byte, 2<<20)})
		require.Error(t, err, "oversized value")
		err = m.conn.Invoke(ctx, "/keyval.api.KV/NoSuchMethod", &apipb.StatusRequest{}, &apipb.StatusResponse{})
		require.Equal(t, codes.Unimplemented, status.Code(err))
		for _, mem := range c.members {
			for _, addr := range []string{mem.client, mem.peer} {
				conn, err := net.Dial("tcp", addr)
				require.NoError(t, err)
				junk := make([]byte, 4096)
				for i := range junk {
					junk[i] = byte(rand.IntN(256))
				}
				_, _ = conn.Write(junk)
				conn.Close()
			}
		}
		for _, mem := range c.members {
			_, err := mem.kv.Status(ctx, &apipb.StatusRequest{})
			require.NoError(t, err, "node %d after garbage", mem.id)
		}
		_, err = c.leader().kv.Put(ctx, &apipb.PutRequest{Key: []byte("still"), Value: []byte("up")})
		require.NoError(t, err)
	})
}
