package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/net/transport"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// Observability configures what a node tells about itself. The zero value
// serves no HTTP and traces nothing; metrics are kept either way (a few
// atomic operations per batch and request).
type Observability struct {
	// MetricsAddr, if set, serves Prometheus metrics (/metrics) and health
	// (/healthz, /readyz) over HTTP.
	MetricsAddr string
	// MetricsTLS, if set, makes MetricsAddr serve HTTPS (MetricsTLS).
	MetricsTLS *tls.Config
	// EnablePprof adds Go's profiler (/debug/pprof/) to MetricsAddr. Off by
	// default: it shows the command line and can spend CPU on demand.
	EnablePprof bool
	// TracerProvider, if set, receives a span per client request with
	// child spans for the stages inside the server, and the trace context
	// travels with writes forwarded to the leader. Nil is tracing off at no
	// cost: no gRPC stats handler is installed and no span is made.
	TracerProvider trace.TracerProvider
}

// observer is the server's metrics, tracing, health and logging of state
// changes. Its loop* and batch* methods run on the event loop or the
// pipeline's goroutines and never block.
type observer struct {
	s   *Server
	log *slog.Logger
	m   *Metrics
	tr  *tracing // nil: tracing off

	health     *health.Server
	healthWake chan struct{}
	quit       chan struct{}
	bg         sync.WaitGroup

	httpLis net.Listener
	httpSrv *http.Server

	// Readiness: the node knows a leader and has applied everything that
	// was committed when it first knew one (readyAt).
	readyAt  atomic.Uint64
	caughtUp atomic.Bool
	stopping atomic.Bool

	// Loop only.
	targetSet  bool
	wasReady   bool
	lastLeader core.NodeID // last known leader, None never
	conf       core.ConfState
	confKnown  bool

	refusals limiter
}

func newObserver(s *Server) *observer {
	o := &observer{
		s: s, log: s.log, tr: newTracing(s.cfg.TracerProvider, s.cfg.ID),
		healthWake: make(chan struct{}, 1), quit: make(chan struct{}),
	}
	o.m = newMetrics(s.cfg.ID, func() uint64 {
		if s.store == nil {
			return 0
		}
		return s.store.AppliedIndex()
	}, func() *transport.Transport { return s.tr })
	o.m.reg.MustRegister(&etcdCollector{s: s, m: o.m})
	return o
}

// Metrics returns the node's metrics (its Prometheus registry, and a place
// to register more).
func (s *Server) Metrics() *Metrics { return s.obs.m }

// MetricsAddr is the bound address of the HTTP server ("" when off).
func (s *Server) MetricsAddr() string {
	if s.obs.httpLis == nil {
		return ""
	}
	return s.obs.httpLis.Addr().String()
}

// clientServerOptions instrument the client port.
func (o *observer) clientServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(o.m.unaryInterceptor("client"))}
	if o.tr != nil {
		opts = append(opts, o.tr.clientServerOption())
	}
	return opts
}

// peerServerOptions instrument the requests forwarded to the peer port.
func (o *observer) peerServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(o.m.unaryInterceptor("peer"))}
	if o.tr != nil {
		opts = append(opts, o.tr.peerServerOption())
	}
	return opts
}

// forwardDialOptions count (and trace) the writes forwarded to leader.
func (o *observer) forwardDialOptions(leader core.NodeID) []grpc.DialOption {
	interceptor := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		o.m.proposalsForwarded.Inc()
		if o.tr == nil {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		ctx, span := o.tr.forwardSpan(ctx, leader)
		err := invoker(ctx, method, req, reply, cc, opts...)
		endSpan(span, err)
		return err
	}
	opts := []grpc.DialOption{grpc.WithChainUnaryInterceptor(interceptor)}
	if o.tr != nil {
		opts = append(opts, o.tr.forwardDialOption())
	}
	return opts
}

// registerHealth serves the standard gRPC health service on srv. Both the
// whole server ("") and keyval.api.KV report SERVING exactly while the
// node is ready (see ready).
func (o *observer) registerHealth(srv *grpc.Server) {
	o.health = health.NewServer()
	o.setHealth(false)
	healthpb.RegisterHealthServer(srv, o.health)
}

func (o *observer) setHealth(ready bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ready {
		st = healthpb.HealthCheckResponse_SERVING
	}
	o.health.SetServingStatus("", st)
	o.health.SetServingStatus("keyval.api.KV", st)
}

// start serves HTTP (if configured) and follows readiness into the health
// service.
func (o *observer) start() {
	o.bg.Add(1)
	go func() {
		defer o.bg.Done()
		for {
			select {
			case <-o.quit:
				return
			case <-o.healthWake:
				r := o.ready()
				o.setHealth(r)
				o.m.ready.Set(b2f(r))
			}
		}
	}()
	if o.httpSrv != nil {
		o.bg.Add(1)
		go func() {
			defer o.bg.Done()
			if err := o.httpSrv.Serve(o.httpLis); err != nil && err != http.ErrServerClosed {
				o.log.Error("metrics HTTP server stopped", "addr", o.httpLis.Addr().String(), "err", err)
			}
		}()
	}
}

// shuttingDown makes the node unready at once, before it stops taking
// requests, so health checks move traffic away first.
func (o *observer) shuttingDown() {
	o.stopping.Store(true)
	o.health.Shutdown() // NOT_SERVING from now on, whatever comes later
	o.m.ready.Set(0)
}

// close stops the HTTP server and the health goroutine.
func (o *observer) close() {
	if o.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := o.httpSrv.Shutdown(ctx); err != nil {
			o.httpSrv.Close()
		}
		o.httpLis.Close() // in case it never served (Stop without Start)
	}
	close(o.quit)
	o.bg.Wait()
}

// ready reports whether the node should receive traffic: it is not
// stopping, knows a leader, and has applied what was committed when it
// first knew one (so a restarted node is not ready while it replays).
func (o *observer) ready() bool {
	return !o.stopping.Load() && o.s.leader.Load() != uint64(core.None) && o.caughtUp.Load()
}

// notReadyReason says why the node is not ready, for /readyz.
func (o *observer) notReadyReason() string {
	switch {
	case o.stopping.Load():
		return "shutting down"
	case o.s.leader.Load() == uint64(core.None):
		return "no leader known (an election is under way, or this node cannot reach a majority)"
	case !o.caughtUp.Load():
		return fmt.Sprintf("catching up: applied index %d of %d (the commit index when a leader became known)",
			o.s.store.AppliedIndex(), o.readyAt.Load())
	}
	return ""
}

// loopIteration runs at the end of each turn of the event loop: it
// publishes the Raft state, notices membership changes and readiness.
func (o *observer) loopIteration(n *core.Node) {
	hs := n.HardState()
	o.m.term.Set(float64(hs.Term))
	o.m.commit.Set(float64(hs.Commit))
	if conf := n.Conf(); !o.confKnown || !conf.Equal(o.conf) {
		o.membershipChanged(conf)
	}
	if !o.caughtUp.Load() && o.s.leader.Load() != uint64(core.None) {
		if !o.targetSet {
			// Commit never goes back, so this covers what the WAL had
			// committed at start too.
			o.readyAt.Store(hs.Commit)
			o.targetSet = true
		}
		if o.s.store.AppliedIndex() >= o.readyAt.Load() {
			o.caughtUp.Store(true)
			o.log.Info("caught up with the log", "applied", o.s.store.AppliedIndex(), "leader", o.s.leader.Load())
		}
	}
	if r := o.ready(); r != o.wasReady {
		o.wasReady = r
		select {
		case o.healthWake <- struct{}{}:
		default:
		}
	}
}

// membershipChanged counts a change of the configuration in use (loop);
// the first configuration seen is only recorded. (The change itself is
// logged where it is applied, once it commits.)
func (o *observer) membershipChanged(conf core.ConfState) {
	o.m.SetMembership(conf)
	if o.confKnown {
		o.m.confChgs.Inc()
	}
	o.conf = core.ConfState{Voters: slices.Clone(conf.Voters), Learners: slices.Clone(conf.Learners)}
	o.confKnown = true
}

// stateChanged logs and counts a change of role or leader, once per change
// (loop).
func (o *observer) stateChanged(prev, now core.SoftState, term uint64) {
	o.m.setRole(prev.Role, now.Role)
	o.m.leaderID.Set(float64(now.Lead))
	o.m.hasLeader.Set(b2f(now.Lead != core.None))
	if now.Lead != core.None && now.Lead != o.lastLeader {
		o.m.leaderChgs.Inc()
	}
	if now.Role == core.Candidate && prev.Role != core.Candidate {
		o.m.elections.Inc()
	}
	attrs := []any{"role", now.Role.String(), "leader", uint64(now.Lead), "term", term}
	switch {
	case now.Role == core.Leader && prev.Role != core.Leader:
		o.log.Info("became leader", attrs...)
	case now.Role == core.PreCandidate && prev.Role != core.PreCandidate:
		o.log.Info("election: asking for pre-votes", attrs...)
	case now.Role == core.Candidate && prev.Role != core.Candidate:
		o.log.Info("election: campaigning", attrs...)
	case now.Lead != core.None && now.Lead != prev.Lead:
		o.log.Info("leader changed", append(attrs, "previous_leader", uint64(o.lastLeader))...)
	case now.Lead == core.None && prev.Lead != core.None:
		o.log.Warn("lost the leader", append(attrs, "previous_leader", uint64(prev.Lead))...)
	default:
		o.log.Info("role changed", attrs...)
	}
	if now.Lead != core.None {
		o.lastLeader = now.Lead
	}
}

// walSync times one WAL fsync (WAL goroutine).
func (o *observer) walSync(sync func() error) error {
	start := time.Now()
	err := sync()
	o.m.walFsync.Observe(time.Since(start).Seconds())
	return err
}

// applyGroup times the state machine stage's work on a group of batches,
// if it applied anything (state machine goroutine). Most batches of an
// idle cluster carry only heartbeats; counting them would bury the real
// applies.
func (o *observer) applyGroup(group []*replica.Batch, apply func() error) error {
	start := time.Now()
	err := apply()
	d := time.Since(start)
	if slices.ContainsFunc(group, func(b *replica.Batch) bool { return len(b.CommittedEntries()) > 0 }) {
		o.m.apply.Observe(d.Seconds())
	}
	if o.tr != nil {
		o.tr.batchesApplied(group)
	}
	return err
}

// snapshotTaken records a snapshot the snapshot goroutine wrote: its index,
// data size and how long writing it took.
func (o *observer) snapshotTaken(index uint64, size int64, d time.Duration) {
	o.m.snapshots.Inc()
	o.m.snapshotDur.Observe(d.Seconds())
	o.m.snapshotSize.Set(float64(size))
	o.log.Info("snapshot taken", "index", index, "bytes", size, "duration", d.Round(time.Millisecond).String())
}

// batchReady and finishing bracket a batch's trip through the pipeline
// (loop); only tracing needs them.
func (o *observer) batchReady(b *replica.Batch) {
	if o.tr != nil {
		o.tr.batchReady(b)
	}
}

func (o *observer) finishing(b *replica.Batch) {
	if o.tr != nil {
		o.tr.finishing(b)
	}
}

// writeStarted begins following a write; nil when tracing is off.
func (o *observer) writeStarted(ctx context.Context) *writeTrace {
	if o.tr == nil {
		return nil
	}
	return &writeTrace{ctx: ctx, start: time.Now()}
}

// writeProposed: the loop proposed write id.
func (o *observer) writeProposed(wt *writeTrace, id uint64) {
	if wt != nil {
		o.tr.proposed(wt, id)
	}
}

// answered: the loop is about to answer request id.
func (o *observer) answered(id uint64) {
	if o.tr != nil {
		o.tr.answered(id)
	}
}

// writeAnswered: the request's goroutine has the loop's answer. refusal
// is set when the node did not propose the write (it was not the leader).
func (o *observer) writeAnswered(wt *writeTrace, refusal, outcome error) {
	if refusal == nil {
		if outcome == nil {
			o.m.proposalsCommitted.Inc()
		} else {
			o.m.proposalsFailed.Inc()
		}
	}
	if wt != nil {
		o.tr.writeAnswered(wt, refusal, outcome)
	}
}

// writeAbandoned: the request gave up on a proposed write (deadline or
// shutdown).
func (o *observer) writeAbandoned(wt *writeTrace, err error) {
	o.m.proposalsFailed.Inc()
	if wt != nil {
		o.tr.writeAbandoned(wt, err)
	}
}

// readIndexDone records a linearizable read's barrier that began at start;
// *err is its outcome.
func (o *observer) readIndexDone(ctx context.Context, start time.Time, err *error) {
	if *err != nil {
		o.m.readIndexFailed.Inc()
	} else {
		o.m.readIndex.Observe(time.Since(start).Seconds())
	}
	if o.tr != nil {
		o.tr.stage(ctx, "read_index", start, time.Now(), *err)
	}
}

// peerMessageRefused logs a refused peer message: the first from each
// peer, then at most one line every 10 s with the number left out.
func (o *observer) peerMessageRefused(m core.Message, err error) {
	if ok, skipped := o.refusals.allow(uint64(m.From), 10*time.Second); ok {
		o.log.Warn("refused a peer message", "from", uint64(m.From), "type", m.Type.String(), "err", err,
			"similar_not_logged", skipped)
	}
}

// peerRefused counts a peer or peer message kept from the core (the
// transport logs its own refusals; admit logs the rest).
func (o *observer) peerRefused(reason string, _ core.NodeID) {
	o.m.peerRefused.WithLabelValues(reason).Inc()
}

// limiter lets one event per key through every interval and counts the
// rest.
type limiter struct {
	mu   sync.Mutex
	keys map[uint64]*limited
}

type limited struct {
	last    time.Time
	skipped int
}

func (l *limiter) allow(key uint64, every time.Duration) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[uint64]*limited{}
	}
	e := l.keys[key]
	if e == nil {
		if len(l.keys) >= 1024 { // made-up sender ids cannot grow it without bound
			return false, 0
		}
		e = &limited{}
		l.keys[key] = e
	}
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < every {
		e.skipped++
		return false, 0
	}
	skipped := e.skipped
	e.last, e.skipped = now, 0
	return true, skipped
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
