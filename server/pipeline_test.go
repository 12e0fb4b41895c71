package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client/pipeline"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// Pipelined calls to every member (followers forward the writes) are
// answered like unary ones and counted like them in the metrics.
func TestPipelinedCallsOnEveryMember(t *testing.T) {
	c := newObservedCluster(t, 3, 0, nil)
	lead := c.leader()
	before := scrapeMetrics(t, c.servers[lead])
	const writers, each = 16, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for id := range c.servers {
		p := pipeline.NewConn(c.conns[id])
		t.Cleanup(p.Close)
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					key := []byte(fmt.Sprintf("n%d-w%d-%d", id, w, i))
					r, err := p.Call(ctx(t), &apipb.Call{Op: &apipb.Call_Put{Put: &apipb.PutRequest{Key: key, Value: key}}})
					if err != nil {
						errs <- fmt.Errorf("put %s via node %d: %w", key, id, err)
						continue
					}
					if r.GetPut().GetVersion() == 0 {
						errs <- fmt.Errorf("put %s via node %d: no version in %v", key, id, r)
					}
					// A linearizable read on the same member sees the write.
					r, err = p.Call(ctx(t), &apipb.Call{Op: &apipb.Call_Get{Get: &apipb.GetRequest{Key: key}}})
					if err != nil || string(r.GetGet().GetValue()) != string(key) {
						errs <- fmt.Errorf("get %s via node %d: %v %v", key, id, r, err)
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	// Refusals come back per call, with the unary method's code.
	p := pipeline.NewConn(c.conns[lead])
	t.Cleanup(p.Close)
	_, err := p.Call(ctx(t), &apipb.Call{Op: &apipb.Call_Put{Put: &apipb.PutRequest{Value: []byte("v")}}})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)

	after := scrapeMetrics(t, c.servers[lead])
	series := []string{"port", "client", "method", "keyval.api.KV/Put", "code", "OK"}
	require.GreaterOrEqual(t, after.value("keyval_request_duration_seconds", series...)-max(0, before.value("keyval_request_duration_seconds", series...)),
		float64(writers*each), "the leader's pipelined puts are counted as puts")
}

// Stop does not wait on an open pipeline stream: it stops taking calls and
// ends the stream, so a graceful stop takes as long as the calls running,
// not the (here very long) request timeout.
func TestStopEndsOpenPipelines(t *testing.T) {
	c := startClusterWith(t, 1, func(_ core.NodeID, cfg *Config) { cfg.RequestTimeout = time.Hour }, plaintext())
	p := pipeline.NewConn(c.conns[1])
	t.Cleanup(p.Close)
	eventually(t, func() error {
		_, err := p.Call(ctx(t), &apipb.Call{Op: &apipb.Call_Put{Put: &apipb.PutRequest{Key: []byte("k"), Value: []byte("v")}}})
		return err
	})
	stopped := make(chan struct{})
	go func() {
		c.servers[1].Stop(context.Background())
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("Stop still waiting on the open pipeline after a minute")
	}
	_, err := p.Call(ctx(t), &apipb.Call{Op: &apipb.Call_Get{Get: &apipb.GetRequest{Key: []byte("k")}}})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}
