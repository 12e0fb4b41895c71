package server

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// tracerName names the spans this package makes.
const tracerName = "github.com/therealutkarshpriyadarshi/keyval/server"

// tracing follows client requests through the node. It exists only when a
// TracerProvider is configured; with tracing off the server holds a nil
// *tracing and pays one nil check per hook.
//
// A write's stages are timed where they happen and turned into spans by the
// request's own goroutine afterwards (spans with explicit timestamps), so
// the event loop only reads the clock and touches two small maps:
//
//	propose  request arrives → the loop has proposed it
//	commit   proposed → the loop took the Ready that commits it (replicated
//	         to a quorum, fsynced on the leader)
//	apply    that Ready → its batch applied to the state machine
//	reply    applied → the request's goroutine has the outcome
//
// A write sent to a follower adds a "forward" span around the call to the
// leader; gRPC carries the trace context there (W3C traceparent), so the
// leader's spans belong to the same trace.
type tracing struct {
	tp     trace.TracerProvider
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	node   attribute.KeyValue

	// batches holds when each batch in the pipeline was taken (loop) and
	// applied (state machine goroutine).
	mu      sync.Mutex
	batches map[*replica.Batch]*batchTimes

	// Loop only: the batch being finished, and the traced writes waiting
	// for an answer, by request id.
	current *batchTimes
	writes  map[uint64]*writeTrace
}

type batchTimes struct {
	ready, applied time.Time
}

// writeTrace is one traced write. start is set by the request's goroutine;
// proposed and batch by the loop, before it hands over the outcome (so the
// request's goroutine reads them only after receiving it).
type writeTrace struct {
	ctx      context.Context
	start    time.Time
	proposed time.Time
	batch    batchTimes
}

func newTracing(tp trace.TracerProvider, id core.NodeID) *tracing {
	if tp == nil {
		return nil
	}
	return &tracing{
		tp: tp, tracer: tp.Tracer(tracerName), prop: propagation.TraceContext{},
		node:    attribute.Int64("keyval.node", int64(id)),
		batches: map[*replica.Batch]*batchTimes{}, writes: map[uint64]*writeTrace{},
	}
}

func (t *tracing) otelOptions(extra ...otelgrpc.Option) []otelgrpc.Option {
	return append([]otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()), // metrics are Prometheus's job here
		otelgrpc.WithSpanAttributes(t.node),
	}, extra...)
}

// clientServerOption traces client requests (health checks excepted).
func (t *tracing) clientServerOption() grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(t.otelOptions(otelgrpc.WithFilter(filters.Not(filters.HealthCheck())))...))
}

// peerServerOption traces the requests forwarded to this node, not the
// long-lived Raft streams that share the port.
func (t *tracing) peerServerOption() grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(t.otelOptions(otelgrpc.WithFilter(filters.ServiceName("keyval.api.KV")))...))
}

// forwardDialOption carries the trace context on forwarded requests.
func (t *tracing) forwardDialOption() grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(t.otelOptions()...))
}

// batchReady notes when the loop took batch b (loop).
func (t *tracing) batchReady(b *replica.Batch) {
	bt := &batchTimes{ready: time.Now()}
	t.mu.Lock()
	t.batches[b] = bt
	t.mu.Unlock()
}

// batchesApplied notes when bs were applied (state machine goroutine).
func (t *tracing) batchesApplied(bs []*replica.Batch) {
	now := time.Now()
	t.mu.Lock()
	for _, b := range bs {
		if bt := t.batches[b]; bt != nil {
			bt.applied = now
		}
	}
	t.mu.Unlock()
}

// finishing makes b the batch whose answers go out next (loop).
func (t *tracing) finishing(b *replica.Batch) {
	t.mu.Lock()
	t.current = t.batches[b]
	delete(t.batches, b)
	t.mu.Unlock()
}

// proposed registers a traced write the loop has just proposed (loop).
func (t *tracing) proposed(wt *writeTrace, id uint64) {
	wt.proposed = time.Now()
	t.writes[id] = wt
}

// answered hands the current batch's times to write id, if traced (loop,
// before the outcome is sent to the request).
func (t *tracing) answered(id uint64) {
	wt, ok := t.writes[id]
	if !ok {
		return
	}
	delete(t.writes, id)
	if t.current != nil {
		wt.batch = *t.current
	}
}

// stage records a finished stage as a child span of ctx.
func (t *tracing) stage(ctx context.Context, name string, from, to time.Time, err error) {
	_, span := t.tracer.Start(ctx, name, trace.WithTimestamp(from), trace.WithAttributes(t.node))
	if err != nil {
		span.SetStatus(otelcodes.Error, status.Convert(err).Message())
	}
	span.End(trace.WithTimestamp(to))
}

// writeAnswered turns an answered write's times into spans (the request's
// goroutine). refusal is set when the node did not propose it.
func (t *tracing) writeAnswered(wt *writeTrace, refusal, outcome error) {
	now := time.Now()
	if refusal != nil {
		t.stage(wt.ctx, "propose", wt.start, now, refusal)
		return
	}
	t.stage(wt.ctx, "propose", wt.start, wt.proposed, nil)
	b := wt.batch
	if outcome != nil || b.ready.IsZero() || b.applied.IsZero() {
		t.stage(wt.ctx, "commit", wt.proposed, now, outcome)
		return
	}
	t.stage(wt.ctx, "commit", wt.proposed, b.ready, nil)
	t.stage(wt.ctx, "apply", b.ready, b.applied, nil)
	t.stage(wt.ctx, "reply", b.applied, now, nil)
}

// writeAbandoned records a write given up without an answer: the stages
// the loop may still be timing are not read.
func (t *tracing) writeAbandoned(wt *writeTrace, err error) {
	t.stage(wt.ctx, "propose", wt.start, time.Now(), err)
}

// forwardSpan wraps a request forwarded to the leader.
func (t *tracing) forwardSpan(ctx context.Context, leader core.NodeID) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, "forward", trace.WithAttributes(t.node, attribute.Int64("keyval.leader", int64(leader))))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(otelcodes.Error, status.Convert(err).Message())
	}
	span.End()
}
