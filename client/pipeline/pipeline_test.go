package pipeline

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/server"
)

// kv is a KVServer whose answers the tests script: a put answers with the
// value's length as version, a get with the key as value; release gates
// gets so calls can be held in flight.
type kv struct {
	apipb.UnimplementedKVServer
	release  chan struct{} // nil: gets answer at once
	gets     atomic.Int32
	failPuts bool
}

func (k *kv) Put(_ context.Context, r *apipb.PutRequest) (*apipb.PutResponse, error) {
	if k.failPuts {
		return nil, status.Error(codes.InvalidArgument, "the value is too large")
	}
	return &apipb.PutResponse{Header: &apipb.Header{NodeId: 1}, Version: uint64(len(r.Value))}, nil
}

func (k *kv) Get(ctx context.Context, r *apipb.GetRequest) (*apipb.GetResponse, error) {
	k.gets.Add(1)
	if k.release != nil {
		select {
		case <-k.release:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return &apipb.GetResponse{Found: true, Value: r.Key}, nil
}

// fakeServer runs ServePipeline for kv on loopback and counts the messages it receives.
type fakeServer struct {
	kv       apipb.KVServer
	opt      server.PipelineOptions
	srv      *grpc.Server
	addr     string
	messages atomic.Int32
	calls    atomic.Int32
	streams  atomic.Int32
	unary    bool // Pipeline unimplemented
}

type pipeService struct {
	apipb.UnimplementedKVServer
	s *fakeServer
}

func (p *pipeService) Put(ctx context.Context, r *apipb.PutRequest) (*apipb.PutResponse, error) {
	return p.s.kv.Put(ctx, r)
}

func (p *pipeService) Pipeline(stream apipb.KV_PipelineServer) error {
	if p.s.unary {
		return status.Error(codes.Unimplemented, "no pipelines here")
	}
	p.s.streams.Add(1)
	return server.ServePipeline(&countingStream{KV_PipelineServer: stream, s: p.s}, p.s.kv, p.s.opt)
}

type countingStream struct {
	apipb.KV_PipelineServer
	s *fakeServer
}

func (c *countingStream) Recv() (*apipb.PipelineRequest, error) {
	req, err := c.KV_PipelineServer.Recv()
	if err == nil {
		c.s.messages.Add(1)
		c.s.calls.Add(int32(len(req.Calls)))
	}
	return req, err
}

func startServer(t *testing.T, s *fakeServer) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.srv = grpc.NewServer()
	apipb.RegisterKVServer(s.srv, &pipeService{s: s})
	s.addr = lis.Addr().String()
	go func() { _ = s.srv.Serve(lis) }()
	t.Cleanup(s.srv.Stop)
}

func dial(t *testing.T, addr string) *Conn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	c := NewConn(apipb.NewKVClient(cc))
	t.Cleanup(func() { c.Close(); cc.Close() })
	return c
}

func put(key, value string) *apipb.Call {
	return &apipb.Call{Op: &apipb.Call_Put{Put: &apipb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func get(key string) *apipb.Call {
	return &apipb.Call{Op: &apipb.Call_Get{Get: &apipb.GetRequest{Key: []byte(key)}}}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestCallsAreAnsweredAsTheUnaryMethodWould(t *testing.T) {
	s := &fakeServer{kv: &kv{}}
	startServer(t, s)
	c := dial(t, s.addr)
	ctx := ctxTimeout(t, 5*time.Second)

	r, err := c.Call(ctx, put("k", "12345"))
	require.NoError(t, err)
	assert.Equal(t, uint64(5), r.GetPut().GetVersion())
	r, err = c.Call(ctx, get("key"))
	require.NoError(t, err)
	assert.Equal(t, "key", string(r.GetGet().GetValue()))

	s.kv.(*kv).failPuts = true
	_, err = c.Call(ctx, put("k", "v"))
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "too large")
	assert.Equal(t, int32(1), s.streams.Load(), "one stream carries every call")
}

// Many callers at once share messages: fewer messages than calls arrive,
// and every caller gets its own answer.
func TestConcurrentCallsShareMessagesAndGetTheirOwnAnswers(t *testing.T) {
	k := &kv{release: make(chan struct{})}
	s := &fakeServer{kv: k}
	startServer(t, s)
	c := dial(t, s.addr)
	ctx := ctxTimeout(t, 10*time.Second)

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			key := fmt.Sprintf("key-%d", i)
			r, err := c.Call(ctx, get(key))
			if err == nil && string(r.GetGet().GetValue()) != key {
				err = fmt.Errorf("asked for %s, got %q", key, r.GetGet().GetValue())
			}
			errs <- err
		})
	}
	// Answer only once every call is in flight, so answers come back
	// batched and in an order of the goroutines' choosing.
	require.Eventually(t, func() bool { return k.gets.Load() == n }, 5*time.Second, time.Millisecond)
	close(k.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int32(n), s.calls.Load())
	assert.Less(t, s.messages.Load(), int32(n), "calls should share messages")
}

func TestABrokenStreamFailsItsCallsAsUnavailableAndTheNextCallReopens(t *testing.T) {
	k := &kv{release: make(chan struct{})}
	s := &fakeServer{kv: k}
	startServer(t, s)
	c := dial(t, s.addr)
	ctx := ctxTimeout(t, 10*time.Second)

	done := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, get("held"))
		done <- err
	}()
	require.Eventually(t, func() bool { return k.gets.Load() == 1 }, 5*time.Second, time.Millisecond)
	// Break the stream under the waiting call: stop the server.
	s.srv.Stop()
	err := <-done
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	// A new server on the same address: the next call opens a new stream.
	s2 := &fakeServer{kv: &kv{}}
	lis, err := net.Listen("tcp", s.addr)
	require.NoError(t, err)
	s2.srv = grpc.NewServer()
	apipb.RegisterKVServer(s2.srv, &pipeService{s: s2})
	go func() { _ = s2.srv.Serve(lis) }()
	t.Cleanup(s2.srv.Stop)
	require.Eventually(t, func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		r, err := c.Call(cctx, get("again"))
		return err == nil && string(r.GetGet().GetValue()) == "again"
	}, 5*time.Second, 10*time.Millisecond)
}

func TestAnAbandonedCallIsNotAnsweredToTheNextOne(t *testing.T) {
	k := &kv{release: make(chan struct{})}
	s := &fakeServer{kv: k}
	startServer(t, s)
	c := dial(t, s.addr)

	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Call(short, get("first"))
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err))

	close(k.release)
	r, err := c.Call(ctxTimeout(t, 5*time.Second), get("second"))
	require.NoError(t, err)
	assert.Equal(t, "second", string(r.GetGet().GetValue()))
}

// The client's deadline travels with the call and bounds the server's work.
func TestTheCallersDeadlineBoundsTheServerSide(t *testing.T) {
	k := &kv{release: make(chan struct{})} // never released
	s := &fakeServer{kv: k, opt: server.PipelineOptions{Timeout: time.Hour}}
	startServer(t, s)
	c := dial(t, s.addr)

	var serverErr atomic.Value
	s.opt.Observe = func(method string, code codes.Code, d time.Duration) { serverErr.Store(code) }
	_, err := c.Call(ctxTimeout(t, 200*time.Millisecond), get("k"))
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err))
	require.Eventually(t, func() bool { return serverErr.Load() == codes.DeadlineExceeded }, 5*time.Second, 5*time.Millisecond,
		"the server gave up on the call at the client's deadline, not after an hour")
}

func TestAServerWithoutPipelineIsReportedUnsupported(t *testing.T) {
	s := &fakeServer{kv: &kv{}, unary: true}
	startServer(t, s)
	c := dial(t, s.addr)
	ctx := ctxTimeout(t, 5*time.Second)
	_, err := c.Call(ctx, put("k", "v"))
	require.ErrorIs(t, err, ErrUnsupported)
	_, err = c.Call(ctx, put("k", "v"))
	require.ErrorIs(t, err, ErrUnsupported, "remembered, without another stream")
}

func TestDrainingAnswersRunningCallsThenEndsTheStream(t *testing.T) {
	k := &kv{release: make(chan struct{})}
	draining := make(chan struct{})
	s := &fakeServer{kv: k, opt: server.PipelineOptions{Draining: draining}}
	startServer(t, s)
	c := dial(t, s.addr)
	ctx := ctxTimeout(t, 10*time.Second)

	done := make(chan error, 1)
	go func() {
		r, err := c.Call(ctx, get("running"))
		if err == nil && string(r.GetGet().GetValue()) != "running" {
			err = fmt.Errorf("wrong answer %v", r)
		}
		done <- err
	}()
	require.Eventually(t, func() bool { return k.gets.Load() == 1 }, 5*time.Second, time.Millisecond)
	close(draining)
	close(k.release)
	require.NoError(t, <-done, "a call running when draining began is still answered")

	// The stream has ended as Unavailable; a new one is refused at once.
	_, err := c.Call(ctx, put("k", "v"))
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}

func TestMessagesStayUnderTheSizeBound(t *testing.T) {
	s := &fakeServer{kv: &kv{}}
	startServer(t, s)
	c := dial(t, s.addr)
	ctx := ctxTimeout(t, 10*time.Second)
	value := string(make([]byte, 300<<10)) // four of these exceed pipemsg.MaxBytes
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			_, err := c.Call(ctx, put("k", value))
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	assert.GreaterOrEqual(t, s.messages.Load(), int32(16*300/1024), "16 calls of 300 KiB need at least 5 messages")
}

func TestACallWithNoOperationIsRefusedAlone(t *testing.T) {
	s := &fakeServer{kv: &kv{}}
	startServer(t, s)
	c := dial(t, s.addr)
	ctx := ctxTimeout(t, 5*time.Second)
	_, err := c.Call(ctx, &apipb.Call{})
	assert.Equal(t, codes.Unimplemented, status.Code(err))
	_, err = c.Call(ctx, put("k", "v"))
	require.NoError(t, err, "the stream survives")
}
