package main

import (
	"context"
	"testing"
	"time"
)

// BenchmarkWorkerPut measures one worker's loop against the in-process
// fake: the allocations per operation are the client's and gRPC's plus
// whatever kvbench adds (compare go test -bench Put ./client/, whose Put
// makes a deadline context per call that kvbench avoids).
func BenchmarkWorkerPut(b *testing.B) { benchmarkWorker(b, opPut) }

// BenchmarkWorkerGet is the same for linearizable gets.
func BenchmarkWorkerGet(b *testing.B) { benchmarkWorker(b, opGet) }

func benchmarkWorker(b *testing.B, op string) {
	_, nodes, _ := fakeCluster(b, 1)
	cfg := config{
		endpoints: []string{nodes[0].Addr()}, target: targetLeader, clients: 1, conns: 1, total: b.N,
		keySize: 8, valSize: 256, keySpace: 100000, op: op, requestTimeout: 5 * time.Second, seed: 1, buckets: 10,
	}
	bn := &bench{cfg: cfg, value: makeValue(cfg.valSize)}
	defer bn.close()
	ctx := context.Background()
	if err := bn.connect(ctx, cfg.endpoints, cfg.endpoints); err != nil {
		b.Fatal(err)
	}
	bn.makeWorkers()
	dl := newDeadlines(ctx, cfg.requestTimeout)
	defer dl.close()
	bn.warmUp(ctx, dl)
	w := bn.workers[0]
	b.ReportAllocs()
	b.ResetTimer()
	bn.loop(ctx, dl, w)
	b.StopTimer()
	if n := w.errs.Load(); n > 0 {
		b.Fatalf("%d operations failed", n)
	}
}
