package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// newObservedCluster is newTestCluster with every node serving HTTP
// metrics on a port of its own and tracing to tp (nil: off). Nodes listed
// in hold are not started.
func newObservedCluster(t testing.TB, n int, snapshotEvery uint64, tp trace.TracerProvider, hold ...core.NodeID) *testCluster {
	c := &testCluster{t: t, dir: t.TempDir(), members: map[core.NodeID]string{}, clients: map[core.NodeID]string{},
		servers: map[core.NodeID]*Server{}, conns: map[core.NodeID]apipb.KVClient{}, snap: snapshotEvery}
	for i := 1; i <= n; i++ {
		c.members[core.NodeID(i)] = freeAddr(t)
		c.clients[core.NodeID(i)] = freeAddr(t)
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			s.Stop(context.Background())
		}
	})
	for id := range c.members {
		if !containsID(hold, id) {
			startObserved(c, id, tp)
		}
	}
	return c
}

func containsID(l []core.NodeID, id core.NodeID) bool {
	for _, x := range l {
		if x == id {
			return true
		}
	}
	return false
}

func startObserved(c *testCluster, id core.NodeID, tp trace.TracerProvider) {
	s, err := New(Config{
		ID: id, DataDir: filepath.Join(c.dir, fmt.Sprint(id)), ClientAddr: c.clients[id], PeerAddr: c.members[id],
		InitialCluster: c.members, HeartbeatInterval: 20 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		SnapshotEvery: c.snap, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Observability: Observability{MetricsAddr: "127.0.0.1:0", TracerProvider: tp},
	})
	require.NoError(c.t, err)
	s.Start()
	c.servers[id] = s
	conn, err := grpc.NewClient(c.clients[id], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(c.t, err)
	c.t.Cleanup(func() { conn.Close() })
	c.conns[id] = apipb.NewKVClient(conn)
}

// httpGet returns the status code and body of GET http://addr/path.
func httpGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// getHealth asks addr for etcd's /health with query.
func getHealth(t *testing.T, addr, query string) (int, etcdHealth) {
	t.Helper()
	code, body := httpGet(t, addr, "/health"+query)
	var h etcdHealth
	require.NoError(t, json.Unmarshal([]byte(body), &h), "%s", body)
	return code, h
}

// scrape is one parsed /metrics page.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, s *Server) scrape {
	t.Helper()
	code, body := httpGet(t, s.MetricsAddr(), "/metrics")
	require.Equal(t, http.StatusOK, code, body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return fams
}

// value is the value of the series of family name whose labels include
// want (counter, gauge, or a histogram's sample count); -1 if absent.
func (sc scrape) value(name string, want ...string) float64 {
	fam := sc[name]
	if fam == nil {
		return -1
	}
next:
	for _, m := range fam.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if have[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return -1
}

// TestMetricsMoveWithTraffic scrapes every node before and after writes
// (through the leader and a follower), linearizable reads and snapshots,
// and checks that the counters and histograms moved as they should.
func TestMetricsMoveWithTraffic(t *testing.T) {
	c := newObservedCluster(t, 3, 40, nil)
	lead := c.leader()
	var follower core.NodeID
	for id := range c.servers {
		if id != lead {
			follower = id
		}
	}
	before := map[core.NodeID]scrape{}
	for id, s := range c.servers {
		before[id] = scrapeMetrics(t, s)
	}
	const puts, forwarded, gets = 100, 10, 20
	for i := range puts {
		_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte("v")})
		require.NoError(t, err)
	}
	for i := range forwarded {
		_, err := c.conns[follower].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("f%d", i)), Value: []byte("v")})
		require.NoError(t, err)
	}
	for i := range gets {
		_, err := c.conns[follower].Get(ctx(t), &apipb.GetRequest{Key: []byte(fmt.Sprintf("k%d", i))})
		require.NoError(t, err)
	}
	// Snapshots are taken after the writes are answered; wait for them.
	eventually(t, func() error {
		if v := scrapeMetrics(t, c.servers[lead]).value("keyval_snapshots_total"); v < 2 {
			return fmt.Errorf("%v snapshots on the leader", v)
		}
		return nil
	})
	after := map[core.NodeID]scrape{}
	for id, s := range c.servers {
		after[id] = scrapeMetrics(t, s)
	}
	grew := func(id core.NodeID, by float64, name string, labels ...string) {
		t.Helper()
		b, a := before[id].value(name, labels...), after[id].value(name, labels...)
		require.GreaterOrEqual(t, a, 0.0, "node %d has no %s%v", id, name, labels)
		require.GreaterOrEqual(t, a-max(b, 0), by, "node %d: %s%v went from %v to %v", id, name, labels, b, a)
	}
	L, F := lead, follower
	grew(L, puts+forwarded, "keyval_proposals_committed_total")
	grew(F, forwarded, "keyval_proposals_forwarded_total")
	grew(L, puts, "keyval_request_duration_seconds", "port", "client", "method", "keyval.api.KV/Put", "code", "OK")
	grew(L, forwarded, "keyval_request_duration_seconds", "port", "peer", "method", "keyval.api.KV/Put", "code", "OK")
	grew(F, forwarded, "keyval_request_duration_seconds", "port", "client", "method", "keyval.api.KV/Put", "code", "OK")
	grew(F, gets, "keyval_request_duration_seconds", "port", "client", "method", "keyval.api.KV/Get", "code", "OK")
	grew(F, gets, "keyval_read_index_duration_seconds")
	for id := range c.servers {
		grew(id, 1, "keyval_wal_fsync_duration_seconds")
		grew(id, 1, "keyval_apply_duration_seconds")
		grew(id, puts+forwarded, "keyval_commit_index")
		grew(id, puts+forwarded, "keyval_applied_index")
		for peer := range c.servers {
			if peer == id || (id != lead && peer != lead) { // followers talk only to the leader
				continue
			}
			p := fmt.Sprint(peer)
			grew(id, 1, "keyval_peer_messages_sent_total", "peer", p)
			grew(id, 1, "keyval_peer_messages_received_total", "peer", p)
			grew(id, 1, "keyval_peer_bytes_sent_total", "peer", p)
			grew(id, 1, "keyval_peer_bytes_received_total", "peer", p)
			require.Equal(t, 1.0, after[id].value("keyval_peer_connected", "peer", p))
		}
		a := after[id]
		require.Equal(t, float64(lead), a.value("keyval_leader_id"), "node %d", id)
		require.Equal(t, 1.0, a.value("keyval_has_leader"))
		require.Equal(t, 1.0, a.value("keyval_ready"))
		require.GreaterOrEqual(t, a.value("keyval_leader_changes_total"), 1.0)
		require.Equal(t, 3.0, a.value("keyval_members", "kind", "voter"))
		require.Positive(t, a.value("keyval_term"))
		require.Positive(t, a.value("go_goroutines"), "Go runtime metrics, by their standard names")
		require.Positive(t, a.value("process_resident_memory_bytes"), "process metrics, by their standard names")
		// etcd's names for what etcd's alerts and dashboards read, the
		// same values.
		require.Equal(t, 1.0, a.value("etcd_server_has_leader"))
		require.Equal(t, b2f(id == lead), a.value("etcd_server_is_leader"), "node %d", id)
		require.Equal(t, a.value("keyval_leader_changes_total"), a.value("etcd_server_leader_changes_seen_total"))
		// (One scrape reads the two apart: a few fsyncs or applies may
		// fall between.)
		require.InDelta(t, a.value("keyval_wal_fsync_duration_seconds"), a.value("etcd_disk_wal_fsync_duration_seconds"), 3, "fsyncs counted")
		require.Positive(t, a.value("etcd_disk_wal_fsync_duration_seconds"))
		require.InDelta(t, a.value("keyval_apply_duration_seconds"), a.value("etcd_disk_backend_commit_duration_seconds"), 3)
		require.GreaterOrEqual(t, a.value("etcd_server_proposals_committed_total"), float64(puts+forwarded))
		require.GreaterOrEqual(t, a.value("etcd_server_proposals_applied_total"), float64(puts+forwarded))
		clientPuts := max(0, a.value("keyval_request_duration_seconds", "port", "client", "method", "keyval.api.KV/Put", "code", "OK"))
		if id == lead {
			require.Positive(t, clientPuts)
		}
		require.Equal(t, clientPuts, a.value("grpc_server_handled_total", "grpc_type", "unary", "grpc_service", "keyval.api.KV",
			"grpc_method", "Put", "grpc_code", "OK"), "node %d: the client port's calls under go-grpc-prometheus's names", id)
		require.Zero(t, a.value("grpc_server_handled_total", "grpc_type", "unary", "grpc_service", "etcdserverpb.KV",
			"grpc_method", "Range", "grpc_code", "Unavailable"), "every unary method and code is there from the start, at 0")
		require.Zero(t, a.value("grpc_server_handling_seconds", "grpc_service", "etcdserverpb.KV", "grpc_method", "Compact"))
		require.Equal(t, clientPuts, a.value("grpc_server_handling_seconds", "grpc_service", "keyval.api.KV", "grpc_method", "Put"))
		require.Positive(t, a.value("etcd_mvcc_db_total_size_in_bytes"))
		require.Positive(t, a.value("etcd_mvcc_db_total_size_in_use_in_bytes"))
		require.Equal(t, float64(c.servers[id].cfg.QuotaBackendBytes), a.value("etcd_server_quota_backend_bytes"))
		for peer := range c.servers {
			if peer == id || (id != lead && peer != lead) {
				continue
			}
			hex := strconv.FormatUint(uint64(peer), 16)
			require.InEpsilon(t, a.value("keyval_peer_bytes_sent_total", "peer", fmt.Sprint(peer)), a.value("etcd_network_peer_sent_bytes_total", "To", hex), 0.1)
			require.Positive(t, a.value("etcd_network_peer_received_bytes_total", "From", hex))
		}
		for name, fam := range a {
			require.True(t, strings.HasPrefix(name, "keyval_") || strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") ||
				strings.HasPrefix(name, "etcd_") || strings.HasPrefix(name, "grpc_server_"), "series %s", name)
			for _, m := range fam.Metric {
				if strings.HasPrefix(name, "etcd_") || strings.HasPrefix(name, "grpc_server_") {
					for _, l := range m.Label {
						require.NotEqual(t, "node", l.GetName(), "series %s: etcd's names carry etcd's labels only", name)
					}
				} else if strings.HasPrefix(name, "keyval_") {
					require.Contains(t, m.Label, &dto.LabelPair{Name: strPtr("node"), Value: strPtr(fmt.Sprint(id))}, "series %s", name)
				} else if name == "process_resident_memory_bytes" || name == "go_goroutines" {
					require.Empty(t, m.Label, "series %s: no labels, as any Go program's (etcdctl check datascale reads it so)", name)
				}
			}
		}
	}
	checkDashboard(t, after[L])
	grew(L, 2, "keyval_snapshots_total")
	grew(L, 2, "keyval_snapshot_duration_seconds")
	require.Positive(t, after[L].value("keyval_snapshot_size_bytes"))
	require.Equal(t, 1.0, after[L].value("keyval_role", "role", "Leader"))
	require.Equal(t, 0.0, after[L].value("keyval_role", "role", "Follower"))
	require.Equal(t, 1.0, after[F].value("keyval_role", "role", "Follower"))
}

func strPtr(s string) *string { return &s }

// TestApplySamplesOnlyGroupsThatApplied: most batches of an idle cluster
// carry heartbeats and nothing to apply; they are not apply samples. Each
// sample applied at least one entry, so no node has more samples than its
// applied index, however long the cluster idles.
func TestApplySamplesOnlyGroupsThatApplied(t *testing.T) {
	c := newObservedCluster(t, 3, 0, nil)
	lead := c.leader()
	_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	require.NoError(t, err)
	var follower core.NodeID
	for id := range c.servers {
		if id != lead {
			follower = id
		}
	}
	// Idle for 50 heartbeats to one follower: a batch each on the leader
	// and on that follower.
	sent := func() float64 {
		return scrapeMetrics(t, c.servers[lead]).value("keyval_peer_messages_sent_total", "peer", fmt.Sprint(follower))
	}
	from := sent()
	eventually(t, func() error {
		if n := sent() - from; n < 50 {
			return fmt.Errorf("%v heartbeats so far", n)
		}
		return nil
	})
	for id, s := range c.servers {
		sc := scrapeMetrics(t, s)
		samples, applied := sc.value("keyval_apply_duration_seconds"), sc.value("keyval_applied_index")
		require.GreaterOrEqual(t, samples, 1.0, "node %d: the put was applied", id)
		require.LessOrEqual(t, samples, applied, "node %d: %v apply samples for %v entries", id, samples, applied)
	}
}

// checkDashboard: every series the Grafana dashboard queries is one a node
// exports.
func checkDashboard(t *testing.T, sc scrape) {
	t.Helper()
	raw, err := os.ReadFile("../docs/grafana-keyval.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	names := regexp.MustCompile(`\b(?:keyval|go|process)_[a-z0-9_]+`)
	queried := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range names.FindAllString(tg.Expr, -1) {
				queried++
				base := name
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if b, ok := strings.CutSuffix(name, suffix); ok && sc[b] != nil {
						base = b
					}
				}
				require.NotNil(t, sc[base], "panel %q queries %s, which no node exports", p.Title, name)
			}
		}
	}
	require.Greater(t, queried, 30)
}

// TestPprofOnlyWhenEnabled: the profiler (whose /cmdline shows the
// command line) is not on the metrics address unless enabled; when it is,
// it answers.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	for _, enable := range []bool{false, true} {
		c := startClusterWith(t, 1, func(_ core.NodeID, cfg *Config) {
			cfg.MetricsAddr, cfg.EnablePprof = "127.0.0.1:0", enable
		}, grpc.WithTransportCredentials(insecure.NewCredentials()))
		addr := c.servers[1].MetricsAddr()
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
			code, body := httpGet(t, addr, path)
			if !enable {
				require.Equal(t, http.StatusNotFound, code, path)
				continue
			}
			require.Equal(t, http.StatusOK, code, path)
			if path == "/debug/pprof/goroutine?debug=1" {
				require.Contains(t, body, "goroutine profile")
			}
		}
		code, _ := httpGet(t, addr, "/nothing-here")
		require.Equal(t, http.StatusNotFound, code)
	}
}

// TestHealthAndReadiness: /healthz answers as soon as the node runs;
// /readyz and the gRPC health service say not ready (with the reason)
// while no leader is known, ready once one is and the node has caught up,
// and not ready again when the leader is lost.
func TestHealthAndReadiness(t *testing.T) {
	c := newObservedCluster(t, 3, 0, nil, 2, 3) // node 1 alone cannot elect a leader
	s1 := c.servers[1]
	code, body := httpGet(t, s1.MetricsAddr(), "/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	code, body = httpGet(t, s1.MetricsAddr(), "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "no leader known")

	conn, err := grpc.NewClient(c.clients[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "keyval.api.KV"} {
		st, err := hc.Check(ctx(t), &healthpb.HealthCheckRequest{Service: svc})
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, st.Status, "service %q", svc)
	}
	watchCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch, err := hc.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: "keyval.api.KV"})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, first.Status)

	startObserved(c, 2, nil)
	startObserved(c, 3, nil)
	next, err := watch.Recv() // the health service follows readiness by itself
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, next.Status)
	// (A second election right after the first could make it flap, so
	// these poll.)
	eventually(t, func() error {
		if code, body := httpGet(t, s1.MetricsAddr(), "/readyz"); code != http.StatusOK {
			return fmt.Errorf("/readyz: %d %s", code, body)
		}
		st, err := hc.Check(ctx(t), &healthpb.HealthCheckRequest{})
		if err != nil || st.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health check: %v %v", st, err)
		}
		return nil
	})

	// Without a majority the leader is lost (the leader steps down by
	// CheckQuorum), and node 1 is not ready again.
	c.stop(2)
	c.stop(3)
	for next.Status == healthpb.HealthCheckResponse_SERVING {
		next, err = watch.Recv()
		require.NoError(t, err)
	}
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next.Status)
	// (A leader among 2 and 3 handed leadership over as it stopped,
	// perhaps to node 1, which leads until CheckQuorum has it step down.)
	eventually(t, func() error {
		if code, body := httpGet(t, s1.MetricsAddr(), "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no leader known") {
			return fmt.Errorf("/readyz: %d %s", code, body)
		}
		return nil
	})
	code, _ = httpGet(t, s1.MetricsAddr(), "/healthz")
	require.Equal(t, http.StatusOK, code)
}

// TestReadinessWaitsForCatchUp: a node that knows a leader but has not yet
// applied what was committed then is not ready, and says how far it is.
func TestReadinessWaitsForCatchUp(t *testing.T) {
	c := newObservedCluster(t, 1, 0, nil)
	c.leader()
	s := c.servers[1]
	o := s.obs
	eventually(t, func() error {
		if !o.ready() {
			return fmt.Errorf("not ready: %s", o.notReadyReason())
		}
		return nil
	})
	// Pretend the node learned of a commit index beyond what it applied,
	// and let the event loop turn (a write) with that in place.
	target := s.store.AppliedIndex() + 1000
	o.readyAt.Store(target)
	o.caughtUp.Store(false)
	_, err := c.conns[1].Put(ctx(t), &apipb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	require.NoError(t, err)
	require.False(t, o.ready())
	require.Contains(t, o.notReadyReason(), fmt.Sprintf("catching up: applied index %d of %d", s.store.AppliedIndex(), target))
	code, body := httpGet(t, s.MetricsAddr(), "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "catching up")
}

// TestObservabilityOffByDefault: without a metrics address there is no
// HTTP server, and without a tracer provider no tracing state.
func TestObservabilityOffByDefault(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	s := c.servers[1]
	require.Empty(t, s.MetricsAddr())
	require.Nil(t, s.obs.tr)
	require.NotNil(t, s.Metrics().Registry())
}

// TestEtcdHealthProbes: /health answers as etcd's does, on the metrics
// port: unhealthy while no leader is known, healthy once one is (with or
// without a linearizable read), unhealthy while an alarm is raised unless
// the probe excludes it; /livez and /version answer too.
func TestEtcdHealthProbes(t *testing.T) {
	c := newObservedCluster(t, 3, 0, nil, 2, 3) // node 1 alone cannot elect a leader
	addr := c.servers[1].MetricsAddr()
	health := func(query string) (int, etcdHealth) { return getHealth(t, addr, query) }
	code, h := health("")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, etcdHealth{Health: "false", Reason: "RAFT NO LEADER"}, h)
	code, h = health("?serializable=true")
	require.Equal(t, http.StatusOK, code, "a serializable probe, as kubeadm's liveness probe, passes without a quorum: %+v", h)
	code, body := httpGet(t, addr, "/livez")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	// etcd's /readyz, on the client port: not ready without a leader,
	// with each check's line; ready without the linearizable read.
	client := c.servers[1].ClientAddr()
	code, body = httpGet(t, client, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "[-]linearizable_read failed: etcdserver: no leader\n")
	require.Contains(t, body, "[+]serializable_read ok\n")
	code, body = httpGet(t, client, "/readyz?exclude=linearizable_read")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "ok\n", body)
	code, body = httpGet(t, client, "/readyz/serializable_read?verbose")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "[+]serializable_read ok\nok\n", body)
	code, _ = httpGet(t, client, "/readyz/linearizable_read")
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, body = httpGet(t, addr, "/version")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"etcdserver":"3.6.0","etcdcluster":"3.6.0","storage":""}`, body)

	startObserved(c, 2, nil)
	startObserved(c, 3, nil)
	eventually(t, func() error {
		for _, q := range []string{"", "?serializable=true"} {
			if code, h := health(q); code != http.StatusOK || h != (etcdHealth{Health: "true"}) {
				return fmt.Errorf("/health%s: %d %+v", q, code, h)
			}
		}
		return nil
	})

	conn, err := grpc.NewClient(c.clients[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	_, err = pb.NewMaintenanceClient(conn).Alarm(ctx(t), &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType_NOSPACE})
	require.NoError(t, err)
	eventually(t, func() error {
		if code, h := health(""); code != http.StatusServiceUnavailable || h.Reason != "ALARM NOSPACE" {
			return fmt.Errorf("/health under NOSPACE: %d %+v", code, h)
		}
		return nil
	})
	code, h = health("?exclude=NOSPACE&serializable=true") // kubeadm's probe
	require.Equal(t, http.StatusOK, code, "%+v", h)
}
