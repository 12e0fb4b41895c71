package server

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// etcdCollector exports, under etcd's names and labels (no node label),
// the series that etcd's own alerting rules and dashboards (etcd's
// Prometheus mixin) read, so that an operator's etcd monitoring works
// against KeyVal unchanged. Each is made at scrape time from the same
// source as a keyval_ series, so the event loop does nothing more; where
// the two systems measure a different thing under a name, docs/operations.md
// says what KeyVal's is.
type etcdCollector struct {
	s *Server
	m *Metrics
}

var etcdDescs = struct {
	hasLeader, isLeader, leaderChanges, committed, applied, failed *prometheus.Desc
	walFsync, backendCommit                                        *prometheus.Desc
	dbSize, dbInUse, quota                                         *prometheus.Desc
	peerSentBytes, peerRecvBytes, peerSentFailures                 *prometheus.Desc
	grpcHandled, grpcHandling                                      *prometheus.Desc
}{
	hasLeader:        etcdDesc("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not."),
	isLeader:         etcdDesc("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise."),
	leaderChanges:    etcdDesc("etcd_server_leader_changes_seen_total", "The number of leader changes seen."),
	committed:        etcdDesc("etcd_server_proposals_committed_total", "The total number of consensus proposals committed (KeyVal: the commit index)."),
	applied:          etcdDesc("etcd_server_proposals_applied_total", "The total number of consensus proposals applied (KeyVal: the applied index)."),
	failed:           etcdDesc("etcd_server_proposals_failed_total", "The total number of failed proposals seen."),
	walFsync:         etcdDesc("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL."),
	backendCommit:    etcdDesc("etcd_disk_backend_commit_duration_seconds", "The latency distributions of commit called by backend (KeyVal: applying a group of batches, with bbolt's commit when one is due)."),
	dbSize:           etcdDesc("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes."),
	dbInUse:          etcdDesc("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes."),
	quota:            etcdDesc("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes."),
	peerSentBytes:    prometheus.NewDesc("etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.", []string{"To"}, nil),
	peerRecvBytes:    prometheus.NewDesc("etcd_network_peer_received_bytes_total", "The total number of bytes received from peers.", []string{"From"}, nil),
	peerSentFailures: prometheus.NewDesc("etcd_network_peer_sent_failures_total", "The total number of send failures to peers (KeyVal: messages dropped).", []string{"To"}, nil),
	// The names go-grpc-prometheus gives, as etcd serves them, for the
	// client port's unary calls.
	grpcHandled: prometheus.NewDesc("grpc_server_handled_total", "Total number of RPCs completed on the server, regardless of success or failure.",
		grpcLabels, nil),
	grpcHandling: prometheus.NewDesc("grpc_server_handling_seconds", "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
		grpcLabels[:3], nil),
}

var grpcLabels = []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}

func etcdDesc(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }

func (c *etcdCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{etcdDescs.hasLeader, etcdDescs.isLeader, etcdDescs.leaderChanges, etcdDescs.committed,
		etcdDescs.applied, etcdDescs.failed, etcdDescs.walFsync, etcdDescs.backendCommit, etcdDescs.dbSize, etcdDescs.dbInUse,
		etcdDescs.quota, etcdDescs.peerSentBytes, etcdDescs.peerRecvBytes, etcdDescs.peerSentFailures,
		etcdDescs.grpcHandled, etcdDescs.grpcHandling} {
		ch <- d
	}
}

func (c *etcdCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(etcdDescs.hasLeader, read(m.hasLeader).GetGauge().GetValue())
	gauge(etcdDescs.isLeader, read(m.role.WithLabelValues(core.Leader.String())).GetGauge().GetValue())
	counter(etcdDescs.leaderChanges, read(m.leaderChgs).GetCounter().GetValue())
	gauge(etcdDescs.committed, read(m.commit).GetGauge().GetValue())
	gauge(etcdDescs.applied, float64(m.applied()))
	counter(etcdDescs.failed, read(m.proposalsFailed).GetCounter().GetValue())
	histogram(ch, etcdDescs.walFsync, read(m.walFsync).GetHistogram())
	histogram(ch, etcdDescs.backendCommit, read(m.apply).GetHistogram())
	if st := c.s.store; st != nil {
		if size, inUse, err := st.Sizes(); err == nil {
			gauge(etcdDescs.dbSize, float64(size))
			gauge(etcdDescs.dbInUse, float64(inUse))
		}
	}
	gauge(etcdDescs.quota, float64(c.s.cfg.QuotaBackendBytes))
	if tr := m.transport(); tr != nil {
		for id, st := range tr.Stats() {
			peer := strconv.FormatUint(uint64(id), 16) // etcd names members in hex
			ch <- prometheus.MustNewConstMetric(etcdDescs.peerSentBytes, prometheus.CounterValue, float64(st.SentBytes), peer)
			ch <- prometheus.MustNewConstMetric(etcdDescs.peerRecvBytes, prometheus.CounterValue, float64(st.ReceivedBytes), peer)
			ch <- prometheus.MustNewConstMetric(etcdDescs.peerSentFailures, prometheus.CounterValue, float64(st.Dropped), peer)
		}
	}
	c.collectRequests(ch)
}

// collectRequests re-exports keyval_request_duration_seconds of the
// client port as go-grpc-prometheus's series: a count per method and code,
// and a latency histogram per method (its codes merged). As etcd's, every
// unary method of the port has a count for every code, 0 until one ends
// so, and a histogram: an alert on a rate of failures sees the first one.
func (c *etcdCollector) collectRequests(ch chan<- prometheus.Metric) {
	if c.s.clientSrv == nil {
		return
	}
	for service, info := range c.s.clientSrv.GetServiceInfo() {
		for _, mi := range info.Methods {
			if mi.IsClientStream || mi.IsServerStream {
				continue
			}
			// Every code from OK to Unauthenticated, as grpc-prometheus
			// counts them; all is the method's, every code's merged.
			var all *dto.Histogram
			for code := range codes.Code(17) {
				var n uint64
				if h := c.m.requestHistogram("client", service+"/"+mi.Name, code); h != nil {
					n = h.GetSampleCount()
					if all == nil {
						all = h
					} else {
						addHistogram(all, h)
					}
				}
				ch <- prometheus.MustNewConstMetric(etcdDescs.grpcHandled, prometheus.CounterValue, float64(n),
					"unary", service, mi.Name, code.String())
			}
			if all == nil {
				ch <- prometheus.MustNewConstHistogram(etcdDescs.grpcHandling, 0, 0, emptyBuckets, "unary", service, mi.Name)
			} else {
				histogram(ch, etcdDescs.grpcHandling, all, "unary", service, mi.Name)
			}
		}
	}
}

// emptyBuckets are a histogram of requests with none observed.
var emptyBuckets = func() map[float64]uint64 {
	b := make(map[float64]uint64, len(fastBuckets))
	for _, upper := range fastBuckets {
		b[upper] = 0
	}
	return b
}()

// addHistogram adds b's counts and sum into a (the same buckets).
func addHistogram(a, b *dto.Histogram) {
	count, sum := a.GetSampleCount()+b.GetSampleCount(), a.GetSampleSum()+b.GetSampleSum()
	a.SampleCount, a.SampleSum = &count, &sum
	for i, bb := range b.GetBucket() {
		if i < len(a.Bucket) {
			n := a.Bucket[i].GetCumulativeCount() + bb.GetCumulativeCount()
			a.Bucket[i].CumulativeCount = &n
		}
	}
}

// read is one series' current value.
func read(m prometheus.Metric) *dto.Metric {
	var out dto.Metric
	_ = m.Write(&out) // a plain gauge, counter or histogram's Write does not fail
	return &out
}

// histogram re-exports h under d, with labels.
func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h *dto.Histogram, labels ...string) {
	buckets := make(map[float64]uint64, len(h.GetBucket()))
	for _, b := range h.GetBucket() {
		buckets[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	ch <- prometheus.MustNewConstHistogram(d, h.GetSampleCount(), h.GetSampleSum(), buckets, labels...)
}
