package server

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/net/transport"
)

// Metrics are one node's Prometheus metrics, in a registry of its own (so
// several nodes in one process do not collide). Every series carries the
// label node="<id>" and is named keyval_…, except the Go runtime's and the
// process's, which keep their standard go_… and process_… names so that
// ready-made dashboards for Go programs work as they are, and the etcd_…
// ones etcd's monitoring reads (etcdCollector).
//
// The event loop only sets gauges and bumps counters (atomic operations);
// what can be read at scrape time instead (the applied index, the
// transport's per-peer counters) is.
type Metrics struct {
	reg *prometheus.Registry
	// wrapped registers with the node label.
	wrapped prometheus.Registerer

	role       *prometheus.GaugeVec
	term       prometheus.Gauge
	leaderID   prometheus.Gauge
	hasLeader  prometheus.Gauge
	commit     prometheus.Gauge
	ready      prometheus.Gauge
	members    *prometheus.GaugeVec
	leaderChgs prometheus.Counter
	elections  prometheus.Counter
	// leadersGone counts leaders forgotten on the transport's word that
	// their process was gone (ReportGone).
	leadersGone prometheus.Counter
	confChgs    prometheus.Counter

	proposalsCommitted prometheus.Counter
	proposalsFailed    prometheus.Counter
	proposalsForwarded prometheus.Counter
	readIndex          prometheus.Histogram
	readIndexFailed    prometheus.Counter

	walFsync     prometheus.Histogram
	apply        prometheus.Histogram
	snapshots    prometheus.Counter
	snapshotDur  prometheus.Histogram
	snapshotSize prometheus.Gauge

	// Limits on what one client can make a node hold.
	pipelinesHeld prometheus.Gauge
	pipelineHolds prometheus.Counter
	rangesCut     prometheus.Counter
	rangesRefused prometheus.Counter
	// Limits on what clients and peers can make a node write to disk.
	backupsRunning   prometheus.Gauge
	backupsRefused   prometheus.Counter
	peerSnapsRefused *prometheus.CounterVec

	requests *prometheus.HistogramVec
	// peerRefused counts peers and peer messages kept from the core.
	peerRefused *prometheus.CounterVec
	// reqObs caches requests' observers by label values: WithLabelValues
	// allocates on every call, a map lookup does not.
	reqMu  sync.RWMutex
	reqObs map[requestLabels]prometheus.Observer

	// Read at scrape time: the applied index, and the transport (nil
	// while the node is being built).
	applied   func() uint64
	transport func() *transport.Transport
}

type requestLabels struct {
	port, method string
	code         codes.Code
}

// Histogram buckets: 100 µs doubling to about 3.3 s (fsync, apply, reads,
// requests) and 10 ms doubling to about 41 s (snapshots).
var (
	fastBuckets     = prometheus.ExponentialBuckets(0.0001, 2, 16)
	snapshotBuckets = prometheus.ExponentialBuckets(0.01, 2, 13)
)

// newMetrics builds the registry of node id. applied and tr are read at
// scrape time; tr may return nil while the node is being built.
func newMetrics(id core.NodeID, applied func() uint64, tr func() *transport.Transport) *Metrics {
	reg := prometheus.NewRegistry()
	r := prometheus.WrapRegistererWith(prometheus.Labels{"node": strconv.FormatUint(uint64(id), 10)}, reg)
	m := &Metrics{reg: reg, wrapped: r, reqObs: map[requestLabels]prometheus.Observer{}, applied: applied, transport: tr}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		r.MustRegister(g)
		return g
	}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		r.MustRegister(c)
		return c
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
		r.MustRegister(h)
		return h
	}

	m.role = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keyval_role",
		Help: "1 for the node's current Raft role, 0 for the others."}, []string{"role"})
	r.MustRegister(m.role)
	for _, role := range []core.Role{core.Follower, core.PreCandidate, core.Candidate, core.Leader} {
		m.role.WithLabelValues(role.String())
	}
	m.role.WithLabelValues(core.Follower.String()).Set(1)
	m.term = gauge("keyval_term", "The node's current Raft term.")
	m.leaderID = gauge("keyval_leader_id", "The leader this node knows (0: none).")
	m.hasLeader = gauge("keyval_has_leader", "1 if the node knows a leader.")
	m.commit = gauge("keyval_commit_index", "The highest log index the node knows committed.")
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyval_applied_index",
		Help: "The highest log index applied to the state machine."}, func() float64 { return float64(applied()) }))
	m.ready = gauge("keyval_ready", "1 when the node is ready to serve (see /readyz).")
	m.members = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keyval_members",
		Help: "Members of the configuration this node is using, by kind."}, []string{"kind"})
	r.MustRegister(m.members)
	m.leaderChgs = counter("keyval_leader_changes_total", "Times this node saw a new leader (the first one included).")
	m.elections = counter("keyval_elections_total", "Elections this node started as a candidate (pre-votes not counted).")
	m.leadersGone = counter("keyval_leaders_gone_total",
		"Leaders this follower forgot because their process was seen to go (its stream broke and nothing listened at its address), so that it could vote for a new one at once.")
	m.confChgs = counter("keyval_membership_changes_total", "Times the configuration this node uses changed.")

	m.proposalsCommitted = counter("keyval_proposals_committed_total", "Writes proposed by this node that committed and were applied.")
	m.proposalsFailed = counter("keyval_proposals_failed_total",
		"Writes proposed by this node without a known outcome: lost or unknown after a leader change, deadline passed, or shutdown.")
	m.proposalsForwarded = counter("keyval_proposals_forwarded_total", "Writes this node forwarded to the leader.")
	m.readIndex = histogram("keyval_read_index_duration_seconds",
		"How long a linearizable read waited for its ReadIndex barrier (successful reads).", fastBuckets)
	m.readIndexFailed = counter("keyval_read_index_failed_total", "Linearizable reads whose ReadIndex barrier failed or timed out.")

	m.walFsync = histogram("keyval_wal_fsync_duration_seconds", "Duration of one WAL fsync (one per group of Ready batches; with --wal-detect-lost-writes, the end mark's write and fsync after it too).", fastBuckets)
	m.apply = histogram("keyval_apply_duration_seconds",
		"Duration of applying one group of batches that carried committed entries to the state machine (into the open bbolt transaction, and its commit when one is due).", fastBuckets)
	m.snapshots = counter("keyval_snapshots_total", "Snapshots this node took of its state machine.")
	m.snapshotDur = histogram("keyval_snapshot_duration_seconds",
		"Duration of writing one snapshot file (data and fsync), on its own goroutine.", snapshotBuckets)
	m.snapshotSize = gauge("keyval_snapshot_size_bytes", "Data bytes of the newest snapshot this node took.")

	m.pipelinesHeld = gauge("keyval_pipeline_streams_held",
		"Pipeline streams held back (not read further, or their Gets waiting to read values) because the replies their clients have not read reached --max-pipeline-reply-bytes (or 4096 calls).")
	m.pipelineHolds = counter("keyval_pipeline_holds_total", "Times a pipeline stream was held back by --max-pipeline-reply-bytes (or 4096 calls).")
	m.rangesCut = counter("keyval_range_truncated_total", "Range answers that stopped at --max-range-bytes, with more set, before their key limit.")
	m.rangesRefused = counter("keyval_range_refused_total", "etcd Range requests with no limit refused because their answer would pass --max-range-bytes.")

	m.backupsRunning = gauge("keyval_backups_running", "Snapshot (backup) calls this node is serving now, at most --max-concurrent-backups.")
	m.backupsRefused = counter("keyval_backups_refused_total", "Snapshot (backup) calls refused because --max-concurrent-backups were running.")
	m.peerSnapsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyval_peer_snapshots_refused_total",
		Help: "Snapshots from peers refused before install, by reason: busy (another was being received), " +
			"too_large (over --max-snapshot-bytes)."}, []string{"reason"})
	r.MustRegister(m.peerSnapsRefused)
	for _, reason := range []string{refusedSnapBusy, refusedSnapTooLarge} {
		m.peerSnapsRefused.WithLabelValues(reason)
	}

	m.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keyval_request_duration_seconds",
		Help: "Duration of gRPC requests, by port (client, or peer for forwarded requests), method and status code.", Buckets: fastBuckets},
		[]string{"port", "method", "code"})
	r.MustRegister(m.requests)

	r.MustRegister(&peerCollector{tr: tr})
	m.peerRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyval_peer_refused_total",
		Help: "Peers and peer messages refused before reaching Raft, by reason: handshake (peer TLS handshake failed), " +
			"certificate (no member id of this cluster in it), impersonation (it names another member than the sender claims), " +
			"not_member (sender not in the configuration), removed (sender was removed)."}, []string{"reason"})
	r.MustRegister(m.peerRefused)
	for _, reason := range []string{transport.RefusedHandshake, transport.RefusedCertificate, transport.RefusedImpersonation,
		refusedNotMember, refusedRemoved} {
		m.peerRefused.WithLabelValues(reason)
	}

	// The process's own series carry no node label, as any Go program's:
	// tools that read them by name and labels (etcdctl check datascale
	// reads process_resident_memory_bytes) find them as they expect.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// pipelineHeld records a pipeline stream held back or let go.
func (m *Metrics) pipelineHeld(held bool) {
	if held {
		m.pipelineHolds.Inc()
		m.pipelinesHeld.Inc()
		return
	}
	m.pipelinesHeld.Dec()
}

// Registry is the registry /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Register adds collectors (named keyval_…) to the node's registry with the
// node label, e.g. metrics of a subsystem added later.
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.wrapped.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// SetMembership records the configuration the node uses.
func (m *Metrics) SetMembership(conf core.ConfState) {
	m.members.WithLabelValues("voter").Set(float64(len(conf.Voters)))
	m.members.WithLabelValues("learner").Set(float64(len(conf.Learners)))
}

func (m *Metrics) setRole(from, to core.Role) {
	if from != to {
		m.role.WithLabelValues(from.String()).Set(0)
	}
	m.role.WithLabelValues(to.String()).Set(1)
}

func (m *Metrics) observeRequest(port, fullMethod string, code codes.Code, d time.Duration) {
	method := fullMethod
	if len(method) > 0 && method[0] == '/' {
		method = method[1:]
	}
	key := requestLabels{port: port, method: method, code: code}
	m.reqMu.RLock()
	o, ok := m.reqObs[key]
	m.reqMu.RUnlock()
	if !ok {
		o = m.requests.WithLabelValues(port, method, code.String())
		m.reqMu.Lock()
		m.reqObs[key] = o
		m.reqMu.Unlock()
	}
	o.Observe(d.Seconds())
}

// requestHistogram is the current state of the request histogram of
// port, method (service/Method) and code; nil if no such request has
// been timed.
func (m *Metrics) requestHistogram(port, method string, code codes.Code) *dto.Histogram {
	m.reqMu.RLock()
	o, ok := m.reqObs[requestLabels{port: port, method: method, code: code}]
	m.reqMu.RUnlock()
	if !ok {
		return nil
	}
	return read(o.(prometheus.Metric)).GetHistogram()
}

// unaryInterceptor times every unary request served on port ("client" or
// "peer"). Only registered methods reach interceptors, so the method label
// cannot grow without bound.
func (m *Metrics) unaryInterceptor(port string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.observeRequest(port, info.FullMethod, status.Code(err), time.Since(start))
		return resp, err
	}
}

// peerCollector exports the transport's per-peer counters at scrape time.
type peerCollector struct {
	tr func() *transport.Transport
}

var peerDescs = struct {
	sent, sentBytes, dropped, received, recvBytes, connected, snapsSent, snapsFailed, snapsRecvd *prometheus.Desc
}{
	sent:        peerDesc("keyval_peer_messages_sent_total", "Raft messages sent to the peer."),
	sentBytes:   peerDesc("keyval_peer_bytes_sent_total", "Encoded bytes of Raft messages and snapshot data sent to the peer."),
	dropped:     peerDesc("keyval_peer_messages_dropped_total", "Raft messages for the peer dropped (queue full, stream down, or too large)."),
	received:    peerDesc("keyval_peer_messages_received_total", "Raft messages received from the peer."),
	recvBytes:   peerDesc("keyval_peer_bytes_received_total", "Encoded bytes of Raft messages and snapshot data received from the peer."),
	connected:   peerDesc("keyval_peer_connected", "1 while the stream to the peer is established."),
	snapsSent:   peerDesc("keyval_peer_snapshots_sent_total", "Snapshots sent to the peer in full."),
	snapsFailed: peerDesc("keyval_peer_snapshots_failed_total", "Snapshots to the peer that failed."),
	snapsRecvd:  peerDesc("keyval_peer_snapshots_received_total", "Snapshots received from the peer."),
}

func peerDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, []string{"peer"}, nil)
}

func (c *peerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{peerDescs.sent, peerDescs.sentBytes, peerDescs.dropped, peerDescs.received,
		peerDescs.recvBytes, peerDescs.connected, peerDescs.snapsSent, peerDescs.snapsFailed, peerDescs.snapsRecvd} {
		ch <- d
	}
}

func (c *peerCollector) Collect(ch chan<- prometheus.Metric) {
	tr := c.tr()
	if tr == nil {
		return
	}
	for id, st := range tr.Stats() {
		peer := strconv.FormatUint(uint64(id), 10)
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), peer)
		}
		counter(peerDescs.sent, st.Sent)
		counter(peerDescs.sentBytes, st.SentBytes)
		counter(peerDescs.dropped, st.Dropped)
		counter(peerDescs.received, st.Received)
		counter(peerDescs.recvBytes, st.ReceivedBytes)
		counter(peerDescs.snapsSent, st.SnapshotsSent)
		counter(peerDescs.snapsFailed, st.SnapshotsFailed)
		counter(peerDescs.snapsRecvd, st.SnapshotsReceived)
		connected := 0.0
		if st.Connected {
			connected = 1
		}
		ch <- prometheus.MustNewConstMetric(peerDescs.connected, prometheus.GaugeValue, connected, peer)
	}
}
