package linearizability

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func TestDebugBlowup(t *testing.T) {
	for _, n := range []int{4, 8, 12, 16, 20} {
		var worst time.Duration
		var worstAcc time.Duration
		for seed := uint64(0); seed < 5; seed++ {
			ops := generate(rand.New(rand.NewPCG(seed, 1)), genConfig{ops: 250, clients: 4, keys: 1, unknownPct: 15, phantomPct: 10, maxUnresolved: n})
			h := plainHistory(ops)
			st := time.Now()
			res := Check(h, 5*time.Second)
			if d := time.Since(st); d > worstAcc { worstAcc = d }
			if res.Verdict != Linearizable { t.Fatalf("%s", res.Summary()) }
			last := -1
			for i, op := range ops { if op.Input.Kind == OpGet && op.Status == Returned { last = i } }
			h.Ops[last].Output = GetFound("never", 3)
			st = time.Now()
			res = Check(h, 5*time.Second)
			d := time.Since(st)
			if d > worst { worst = d }
			println(fmt.Sprintf("n=%d seed=%d %v %s", n, seed, d, res.Summary()))
		}
		println(fmt.Sprintf("n=%d worst reject %v worst accept %v", n, worst, worstAcc))
	}
}
