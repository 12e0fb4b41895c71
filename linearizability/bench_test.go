package linearizability

import (
	"math/rand/v2"
	"testing"
)

// benchHistory is a 10,000-operation history from 8 concurrent clients over
// 32 keys (about 310 operations a key, each overlapping several others),
// with unknownPct of operations' outcomes unknown to their clients and
// phantomPct extra writes that never took effect.
func benchHistory(unknownPct, phantomPct, resolvePct int) History {
	ops := generate(rand.New(rand.NewPCG(2024, 4)), genConfig{
		ops:        10_000,
		clients:    8,
		keys:       32,
		unknownPct: unknownPct,
		phantomPct: phantomPct,
		resolvePct: resolvePct,
	})
	return plainHistory(ops)
}

// withStaleRead returns h plus one read, late in the history, of a value
// overwritten before the read began, so the history is not linearizable.
// A late violation is the expensive kind: everything before it is searched.
func withStaleRead(h History) History {
	var puts []Op
	for _, op := range h.Ops {
		if op.Input.Key == "k0" && op.Input.Kind == OpPut && op.Status == Returned {
			puts = append(puts, op)
		}
	}
	second := puts[len(puts)-1]
	for i := len(puts) - 2; i >= 0; i-- {
		if first := puts[i]; first.Return < second.Call {
			stale := done(99, second.Return+1, second.Return+2, Get("k0"),
				GetFound(first.Input.Value, first.Output.Version))
			return History{Ops: append(append([]Op(nil), h.Ops...), stale)}
		}
	}
	panic("no overwritten put on k0 in the benchmark history")
}

func benchCheck(b *testing.B, h History, want Verdict) {
	b.ReportAllocs()
	for b.Loop() {
		if res := mustCheck(b, h, 0); res.Verdict != want {
			b.Fatalf("%s", res.Summary())
		}
	}
	b.ReportMetric(float64(len(h.Ops)), "ops/history")
}

// BenchmarkCheck10k measures checking 10,000-operation histories. The
// target is under a second each.
//
//	go test ./linearizability/ -run '^$' -bench Check10k -benchtime 10x
func BenchmarkCheck10k(b *testing.B) {
	b.Run("all-answered", func(b *testing.B) {
		benchCheck(b, benchHistory(0, 0, 0), Linearizable)
	})
	b.Run("2pct-unknown", func(b *testing.B) {
		benchCheck(b, benchHistory(2, 1, 0), Linearizable)
	})
	b.Run("10pct-unknown-half-resolved", func(b *testing.B) {
		benchCheck(b, benchHistory(10, 2, 50), Linearizable)
	})
	b.Run("stale-read-all-answered", func(b *testing.B) {
		benchCheck(b, withStaleRead(benchHistory(0, 0, 0)), NotLinearizable)
	})
	b.Run("stale-read-2pct-unknown", func(b *testing.B) {
		benchCheck(b, withStaleRead(benchHistory(2, 1, 0)), NotLinearizable)
	})
	// About 14 unresolved unknown writes a key: near where rejecting
	// starts to grow steeply (see docs/linearizability.md).
	b.Run("stale-read-6pct-unknown", func(b *testing.B) {
		benchCheck(b, withStaleRead(benchHistory(6, 1, 0)), NotLinearizable)
	})
}
