package server

import (
	"context"
	"io"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/api/pipemsg"
)

// The server half of KV.Pipeline (the client half is client/pipeline): many
// Put, Get, Delete and CompareAndSwap calls over one stream, each answered
// exactly as its unary method would answer it.

// stoppingMessage is what a call hears when this node is stopping, unary
// or pipelined.
const stoppingMessage = "this node is shutting down; use another member"

// PipelineOptions shape how ServePipeline runs calls.
type PipelineOptions struct {
	// Timeout bounds a call that brings no timeout of its own, and caps
	// one that does.
	Timeout time.Duration
	// MaxInFlight bounds the calls one stream holds: running, or answered
	// and waiting to be sent. MaxReplyBytes bounds their bytes: the replies
	// waiting to be sent, and for each running call the largest reply it
	// could produce (replyReserve). Past either, ServePipeline stops
	// reading the stream, so gRPC flow control holds the client back
	// instead of replies piling up for a client that does not read them.
	MaxInFlight   int
	MaxReplyBytes int
	// MaxValueBytes is the largest value a reply can carry (the server's
	// --max-value-bytes): what a CompareAndSwap reserves from the start,
	// and a Get once its read barrier has passed.
	MaxValueBytes int
	// Held, if set, is told when the stream starts (true) and stops
	// (false) being held back by those bounds: its loop or a call waits
	// for replies to be sent.
	Held func(held bool)
	// Draining, when closed, makes ServePipeline stop taking calls, finish
	// the ones running and end the stream as Unavailable (the server is
	// stopping).
	Draining <-chan struct{}
	// Observe, if set, is told of every call as the unary interceptor
	// would be: method, outcome and duration.
	Observe func(method string, code codes.Code, d time.Duration)
}

// ServePipeline answers the calls arriving on stream with kv's unary
// methods, each call in its own goroutine, and sends the answers as they
// complete, as many to a message as are ready. It returns when the client
// ends the stream (nil), the stream breaks, or opt.Draining closes. kv is
// any implementation of the unary methods: the server's own, or a test's
// fake.
func ServePipeline(stream apipb.KV_PipelineServer, kv apipb.KVServer, opt PipelineOptions) error {
	opt.setDefaults()
	return servePipeline(stream, kv, opt, newReplyBudget(opt.MaxReplyBytes, opt.MaxInFlight, opt.MaxValueBytes, opt.Held))
}

// servePipeline is ServePipeline with the stream's budget given, so tests
// can watch what the stream holds.
func servePipeline(stream apipb.KV_PipelineServer, kv apipb.KVServer, opt PipelineOptions, budget *replyBudget) error {
	ctx := stream.Context()
	out := &pipelineOutbox{wake: make(chan struct{}, 1), budget: budget}
	var running sync.WaitGroup

	sendDone := make(chan error, 1)
	senderCtx, stopSender := context.WithCancel(ctx)
	defer stopSender()
	go func() { sendDone <- out.sendLoop(senderCtx, stream) }()

	reqs := make(chan *apipb.PipelineRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	var result error
loop:
	for {
		if isClosed(opt.Draining) {
			result = status.Error(codes.Unavailable, stoppingMessage)
			break
		}
		select {
		case req := <-reqs:
			for _, call := range req.Calls {
				reserve := replyReserve(call, opt.MaxValueBytes)
				switch admitCall(ctx, out.budget, reserve, opt.Draining) {
				case callDraining:
					out.add(&apipb.Reply{Id: call.Id, Code: uint32(codes.Unavailable), Message: stoppingMessage}, 0)
					continue
				case callCanceled:
					break loop
				}
				running.Add(1)
				go func() {
					defer running.Done()
					share := &callShare{b: out.budget, reserved: reserve, maxValue: opt.MaxValueBytes}
					r := servePipelineCall(context.WithValue(ctx, callShareKey{}, share), kv, call, opt)
					out.add(r, share.reserved)
				}()
			}
		case err := <-recvErr:
			if err != io.EOF {
				result = err
			}
			break loop
		case err := <-sendDone:
			running.Wait()
			return err
		case <-opt.Draining:
			result = status.Error(codes.Unavailable, stoppingMessage)
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	// Answer what is running before ending the stream.
	running.Wait()
	stopSender()
	if err := <-sendDone; err != nil && result == nil && ctx.Err() == nil {
		result = err
	}
	return result
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// servePipelineCall runs one call through the unary method it names.
func servePipelineCall(ctx context.Context, kv apipb.KVServer, call *apipb.Call, opt PipelineOptions) *apipb.Reply {
	timeout := opt.Timeout
	if t := time.Duration(call.TimeoutMs) * time.Millisecond; t > 0 && (timeout <= 0 || t < timeout) {
		timeout = t
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	r := &apipb.Reply{Id: call.Id}
	var method string
	var err error
	switch op := call.Op.(type) {
	case *apipb.Call_Put:
		method = apipb.KV_Put_FullMethodName
		var resp *apipb.PutResponse
		if resp, err = kv.Put(ctx, op.Put); err == nil {
			r.Result = &apipb.Reply_Put{Put: resp}
		}
	case *apipb.Call_Get:
		method = apipb.KV_Get_FullMethodName
		var resp *apipb.GetResponse
		if resp, err = kv.Get(ctx, op.Get); err == nil {
			r.Result = &apipb.Reply_Get{Get: resp}
		}
	case *apipb.Call_Delete:
		method = apipb.KV_Delete_FullMethodName
		var resp *apipb.DeleteResponse
		if resp, err = kv.Delete(ctx, op.Delete); err == nil {
			r.Result = &apipb.Reply_Delete{Delete: resp}
		}
	case *apipb.Call_CompareAndSwap:
		method = apipb.KV_CompareAndSwap_FullMethodName
		var resp *apipb.CompareAndSwapResponse
		if resp, err = kv.CompareAndSwap(ctx, op.CompareAndSwap); err == nil {
			r.Result = &apipb.Reply_CompareAndSwap{CompareAndSwap: resp}
		}
	default:
		// A newer client's call this server does not know: refuse it
		// alone, not the stream.
		r.Code, r.Message = uint32(codes.Unimplemented), "pipeline: call with no operation this server knows"
		return r
	}
	if err != nil {
		st := status.Convert(err)
		r.Code, r.Message = uint32(st.Code()), st.Message()
	}
	if opt.Observe != nil {
		opt.Observe(method, codes.Code(r.Code), time.Since(start))
	}
	return r
}

// pipelineOutbox gathers replies for the sender.
type pipelineOutbox struct {
	mu      sync.Mutex
	replies []*apipb.Reply
	wake    chan struct{}
	budget  *replyBudget
}

// add queues r, whose call reserved reserved bytes of the budget (0: a
// reply the loop makes itself, for a call never admitted).
func (o *pipelineOutbox) add(r *apipb.Reply, reserved int) {
	if reserved == 0 {
		o.budget.charge(replySize(r))
	} else {
		o.budget.settle(reserved, replySize(r))
	}
	o.mu.Lock()
	o.replies = append(o.replies, r)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// sendLoop sends gathered replies until ctx ends, then sends what is left.
func (o *pipelineOutbox) sendLoop(ctx context.Context, stream apipb.KV_PipelineServer) error {
	var batch []*apipb.Reply
	for {
		stopping := false
		select {
		case <-o.wake:
			// Let the calls finishing alongside this one add their
			// replies first (see the sender in client/pipeline).
			runtime.Gosched()
		case <-ctx.Done():
			stopping = true
		}
		for {
			batch = o.take(batch[:0])
			if len(batch) == 0 {
				break
			}
			if err := stream.Send(&apipb.PipelineResponse{Replies: batch}); err != nil {
				return err
			}
			o.budget.releaseSent(batch)
			clear(batch)
		}
		if stopping {
			return nil
		}
	}
}

// take moves gathered replies into batch, a message's worth.
func (o *pipelineOutbox) take(batch []*apipb.Reply) []*apipb.Reply {
	o.mu.Lock()
	defer o.mu.Unlock()
	return pipemsg.Take(&o.replies, batch, replySize)
}

// replySize is exact only where it matters: replies with values.
func replySize(r *apipb.Reply) int {
	switch res := r.Result.(type) {
	case *apipb.Reply_Get:
		return 48 + len(res.Get.Value)
	case *apipb.Reply_CompareAndSwap:
		return 48 + len(res.CompareAndSwap.CurrentValue)
	case nil:
		return 48 + len(r.Message)
	}
	return 48
}
