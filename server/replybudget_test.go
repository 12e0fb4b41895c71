package server

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// bigValues answers every Get with the same large value and counts them.
type bigValues struct {
	apipb.UnimplementedKVServer
	value []byte
	gets  atomic.Int64
}

// Get reserves its value as the server's Get does, before reading it.
func (b *bigValues) Get(ctx context.Context, _ *apipb.GetRequest) (*apipb.GetResponse, error) {
	if err := reserveValue(ctx); err != nil {
		return nil, err
	}
	b.gets.Add(1)
	return &apipb.GetResponse{Found: true, Value: b.value}, nil
}

// budgetedPipeline serves Pipeline with a budget the test can watch.
type budgetedPipeline struct {
	apipb.UnimplementedKVServer
	kv     apipb.KVServer
	opt    PipelineOptions
	budget *replyBudget
}

func (p *budgetedPipeline) Pipeline(stream apipb.KV_PipelineServer) error {
	return servePipeline(stream, p.kv, p.opt, p.budget)
}

// A client that sends many Gets of large values and reads none of the
// replies cannot make the stream hold more than MaxReplyBytes: the server
// stops reading its calls instead. Once it reads, every call is answered.
func TestPipelineHoldsBackAClientThatDoesNotRead(t *testing.T) {
	const valueBytes, calls, perMessage = 1 << 20, 300, 50
	const maxReply = 8 << 20
	kv := &bigValues{value: make([]byte, valueBytes)}
	held := make(chan struct{}, 1)
	opt := PipelineOptions{MaxReplyBytes: maxReply, MaxValueBytes: valueBytes, Held: func(h bool) {
		if h {
			select {
			case held <- struct{}{}:
			default:
			}
		}
	}}
	opt.setDefaults()
	p := &budgetedPipeline{kv: kv, opt: opt, budget: newReplyBudget(opt.MaxReplyBytes, opt.MaxInFlight, opt.MaxValueBytes, opt.Held)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	apipb.RegisterKVServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), plaintext())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })

	streamCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := apipb.NewKVClient(conn).Pipeline(streamCtx)
	require.NoError(t, err)
	go func() {
		for m := range calls / perMessage {
			req := &apipb.PipelineRequest{}
			for i := range perMessage {
				req.Calls = append(req.Calls, &apipb.Call{Id: uint64(m*perMessage + i + 1),
					Op: &apipb.Call_Get{Get: &apipb.GetRequest{Key: []byte("k")}}})
			}
			if stream.Send(req) != nil {
				return
			}
		}
	}()

	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatalf("the stream was never held back; %d Gets answered and queued", kv.gets.Load())
	}
	bytes, inStream := p.budget.held()
	require.LessOrEqual(t, bytes, maxReply, "bytes held for replies (%d calls)", inStream)
	// What left the queue sits in gRPC's and the kernel's buffers, which
	// flow control bounds (a window of at most 16 MiB on the stream).
	require.Less(t, kv.gets.Load(), int64(64), "Gets run for a client that reads no replies")

	for answered := 0; answered < calls; {
		resp, err := stream.Recv()
		require.NoError(t, err, "reading the replies once the client reads (%d of %d)", answered, calls)
		for _, r := range resp.Replies {
			require.Len(t, r.GetGet().GetValue(), valueBytes, "reply %d: %v", r.Id, r.Message)
		}
		answered += len(resp.Replies)
	}
	require.Equal(t, int64(calls), kv.gets.Load())
	bytes, inStream = p.budget.held()
	require.Zero(t, bytes, "bytes still held after every reply was sent (%d calls)", inStream)
}

// The same against a member: its Gets reserve their values, the stream is
// held back (and counted) while the client reads nothing, and every Get is
// answered once it reads.
func TestMemberHoldsBackAPipelineThatIsNotRead(t *testing.T) {
	const valueBytes, calls = 1 << 20, 200
	c := startClusterWith(t, 1, func(_ core.NodeID, cfg *Config) {
		cfg.MaxPipelineReplyBytes, cfg.RequestTimeout = 8<<20, time.Minute
	}, plaintext())
	eventually(t, func() error {
		_, err := c.conns[1].Put(ctx(t), &apipb.PutRequest{Key: []byte("big"), Value: make([]byte, valueBytes)})
		return err
	})
	m := c.servers[1].obs.m
	streamCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := c.conns[1].Pipeline(streamCtx)
	require.NoError(t, err)
	req := &apipb.PipelineRequest{}
	for i := range calls {
		req.Calls = append(req.Calls, &apipb.Call{Id: uint64(i + 1), Op: &apipb.Call_Get{Get: &apipb.GetRequest{Key: []byte("big")}}})
	}
	require.NoError(t, stream.Send(req))
	eventually(t, func() error {
		if held := metricValue(t, m.pipelinesHeld); held != 1 {
			return fmt.Errorf("%v streams held", held)
		}
		return nil
	})
	// At least one hold: a stream may be let go and held again as gRPC's
	// buffers take some replies (CI saw two).
	require.GreaterOrEqual(t, metricValue(t, m.pipelineHolds), 1.0)
	for answered := 0; answered < calls; {
		resp, err := stream.Recv()
		require.NoError(t, err)
		for _, r := range resp.Replies {
			require.Len(t, r.GetGet().GetValue(), valueBytes, "reply %d: %v", r.Id, r.Message)
		}
		answered += len(resp.Replies)
	}
	require.Zero(t, metricValue(t, m.pipelinesHeld))
}

// metricValue reads a gauge or counter in process.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	require.NoError(t, m.Write(&d))
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}
