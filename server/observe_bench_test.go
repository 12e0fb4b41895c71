package server

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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
	benchPuts(b, c.conns[c.leader()])
}
