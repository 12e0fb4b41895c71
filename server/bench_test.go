package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client/pipeline"
)

var benchWriters = 64

// BenchmarkClusterPut runs a 3-node cluster in this process (real disk in a
// temp dir, fsync on) and 64 concurrent writers of 256-byte values, for
// profiling the whole write path in one place. The cluster benchmark of
// record is `make bench-cluster` with separate processes.
func BenchmarkClusterPut(b *testing.B) {
	c := newTestCluster(b, 3, DefaultSnapshotEvery)
	benchPuts(b, c.conns[c.leader()])
}

// benchPuts has benchWriters goroutines write b.N 256-byte values through
// kv, over 100,000 keys, and reports writes/s.
func benchPuts(b *testing.B, kv apipb.KVClient) {
	val := make([]byte, 256)
	var n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for range benchWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := n.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := kv.Put(context.Background(), &apipb.PutRequest{Key: []byte(fmt.Sprintf("%08d", i%100000)), Value: val}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// BenchmarkClusterPutPipelined is BenchmarkClusterPut with the writers'
// calls sharing one pipeline stream, as the Go client sends them.
func BenchmarkClusterPutPipelined(b *testing.B) {
	c := newTestCluster(b, 3, DefaultSnapshotEvery)
	p := pipeline.NewConn(c.conns[c.leader()])
	defer p.Close()
	benchPuts(b, pipelinedKV{KVClient: c.conns[c.leader()], p: p})
}

// pipelinedKV sends Put over a pipeline.
type pipelinedKV struct {
	apipb.KVClient
	p *pipeline.Conn
}

func (k pipelinedKV) Put(ctx context.Context, req *apipb.PutRequest, _ ...grpc.CallOption) (*apipb.PutResponse, error) {
	r, err := k.p.Call(ctx, &apipb.Call{Op: &apipb.Call_Put{Put: req}})
	if err != nil {
		return nil, err
	}
	return r.GetPut(), nil
}
