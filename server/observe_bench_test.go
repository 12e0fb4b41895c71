package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/therealutkarshpriyadarshi/keyval/client/apipb"
)

// discardExporter takes spans and forgets them.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkClusterPutTraced is BenchmarkClusterPut with every request
// traced (batching span processor, spans discarded) and metrics served: the
// cost of tracing when it is on. BenchmarkClusterPut itself runs with
// tracing off.
func BenchmarkClusterPutTraced(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	c := newObservedCluster(b, 3, DefaultSnapshotEvery, tp)
	kv := c.conns[c.leader()]
	val := make([]byte, 256)
	var n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := 0; w < benchWriters; w++ {
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
