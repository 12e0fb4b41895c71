package server

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// spanTree indexes exported spans.
type spanTree struct {
	spans tracetest.SpanStubs
}

func (st spanTree) node(s tracetest.SpanStub) core.NodeID {
	for _, a := range s.Attributes {
		if a.Key == "keyval.node" {
			return core.NodeID(a.Value.AsInt64())
		}
	}
	return core.None
}

// find returns the one span named name on node whose parent is parent
// (any parent if parent is invalid).
func (st spanTree) find(t *testing.T, name string, node core.NodeID, parent trace.SpanContext) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range st.spans {
		if s.Name == name && st.node(s) == node && (!parent.IsValid() || s.Parent.SpanID() == parent.SpanID()) {
			found = append(found, s)
		}
	}
	require.Len(t, found, 1, "spans named %q on node %d under %v; have:\n%s", name, node, parent.SpanID(), st)
	return found[0]
}

func (st spanTree) String() string {
	out := ""
	for _, s := range st.spans {
		out += fmt.Sprintf("  %s node=%d kind=%v trace=%s span=%s parent=%s status=%v\n", s.Name, st.node(s), s.SpanKind,
			s.SpanContext.TraceID(), s.SpanContext.SpanID(), s.Parent.SpanID(), s.Status.Code)
	}
	return out
}

// waitSpans polls the exporter until the server span named name on node
// has ended.
func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, name string, node core.NodeID) spanTree {
	t.Helper()
	var st spanTree
	eventually(t, func() error {
		st = spanTree{exp.GetSpans()}
		for _, s := range st.spans {
			if s.Name == name && st.node(s) == node && s.SpanKind == trace.SpanKindServer {
				return nil
			}
		}
		return fmt.Errorf("no server span %q on node %d yet", name, node)
	})
	return st
}

// checkWriteStages checks the stage spans of a write under the server span
// srv on node: propose → commit → apply → reply, in order, in srv's trace.
func checkWriteStages(t *testing.T, st spanTree, srv tracetest.SpanStub, node core.NodeID) {
	t.Helper()
	prev := srv.StartTime
	for _, name := range []string{"propose", "commit", "apply", "reply"} {
		s := st.find(t, name, node, srv.SpanContext)
		require.Equal(t, srv.SpanContext.TraceID(), s.SpanContext.TraceID(), name)
		require.Equal(t, otelcodes.Unset, s.Status.Code, name)
		require.False(t, s.StartTime.Before(prev), "%s starts before the previous stage ends", name)
		require.False(t, s.EndTime.Before(s.StartTime), name)
		require.False(t, s.EndTime.After(srv.EndTime), "%s ends after the request", name)
		prev = s.EndTime
	}
}

// TestTracingPutSpanTree: a put to the leader makes a server span with
// the stages as children; a put to a follower makes a trace that goes
// follower → forward → gRPC client → leader's server span → stages, all
// under one trace id.
func TestTracingPutSpanTree(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	c := newObservedCluster(t, 3, 0, tp)
	lead := c.leader()
	var follower core.NodeID
	for id := range c.servers {
		if id != lead {
			follower = id
		}
	}
	eventually(t, func() error { // the leader's first entry of its term is committed
		_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("warm"), Value: []byte("v")})
		return err
	})

	const put = "keyval.api.KV/Put"
	exp.Reset()
	_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("a"), Value: []byte("1")})
	require.NoError(t, err)
	st := waitSpans(t, exp, put, lead)
	srv := st.find(t, put, lead, trace.SpanContext{})
	require.Equal(t, trace.SpanKindServer, srv.SpanKind)
	require.False(t, srv.Parent.IsValid(), "the client sent no trace context: the server span is the root")
	checkWriteStages(t, st, srv, lead)

	exp.Reset()
	_, err = c.conns[follower].Put(ctx(t), &apipb.PutRequest{Key: []byte("b"), Value: []byte("2")})
	require.NoError(t, err)
	// The follower's server span ends last, after the leader answered.
	st = waitSpans(t, exp, "keyval.api.KV/Put", follower)
	var root tracetest.SpanStub
	for _, s := range st.spans {
		if s.Name == put && st.node(s) == follower && s.SpanKind == trace.SpanKindServer {
			root = s
		}
	}
	require.True(t, root.SpanContext.IsValid(), "no server span on the follower:\n%s", st)
	for _, s := range st.spans {
		require.Equal(t, root.SpanContext.TraceID(), s.SpanContext.TraceID(), "span %s on node %d is in another trace", s.Name, st.node(s))
	}
	refused := st.find(t, "propose", follower, root.SpanContext)
	require.Equal(t, otelcodes.Error, refused.Status.Code, "the follower's own proposal is refused")
	fwd := st.find(t, "forward", follower, root.SpanContext)
	require.Contains(t, fwd.Attributes, attribute.Int64("keyval.leader", int64(lead)))
	call := st.find(t, put, follower, fwd.SpanContext)
	require.Equal(t, trace.SpanKindClient, call.SpanKind)
	leaderSrv := st.find(t, put, lead, call.SpanContext)
	require.Equal(t, trace.SpanKindServer, leaderSrv.SpanKind)
	require.True(t, leaderSrv.Parent.IsRemote(), "the leader continued the follower's trace")
	checkWriteStages(t, st, leaderSrv, lead)
}

// TestTracingRead: a linearizable read has a read_index stage.
func TestTracingRead(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	c := newObservedCluster(t, 1, 0, tp)
	c.leader()
	eventually(t, func() error { // reads wait for the leader's first commit of its term
		_, err := c.conns[1].Get(ctx(t), &apipb.GetRequest{Key: []byte("x")})
		return err
	})
	exp.Reset()
	_, err := c.conns[1].Get(ctx(t), &apipb.GetRequest{Key: []byte("x")})
	require.NoError(t, err)
	st := waitSpans(t, exp, "keyval.api.KV/Get", 1)
	srv := st.find(t, "keyval.api.KV/Get", 1, trace.SpanContext{})
	ri := st.find(t, "read_index", 1, srv.SpanContext)
	require.Equal(t, srv.SpanContext.TraceID(), ri.SpanContext.TraceID())
}
