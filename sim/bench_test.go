package sim

import (
	"testing"
	"time"
)

// BenchmarkSim measures simulated seconds per wall second (×real time) and
// seeds per minute for the default swarm, per cluster size.
func BenchmarkSim(b *testing.B) {
	for _, size := range []int{3, 5} {
		b.Run(map[int]string{3: "nodes=3", 5: "nodes=5"}[size], func(b *testing.B) {
			var simulated time.Duration
			for i := 0; i < b.N; i++ {
				res := Run(Options{Seed: uint64(1000 + i), Nodes: size})
				simulated += res.SimTime
			}
			b.ReportMetric(float64(simulated)/float64(b.Elapsed()), "x-realtime")
			b.ReportMetric(float64(b.N)/b.Elapsed().Minutes(), "seeds/min")
		})
	}
}
