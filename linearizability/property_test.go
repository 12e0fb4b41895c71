package linearizability

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// propertyTimeout bounds each check in the property tests so a pathological
// history fails the test (as TimedOut) instead of hanging it.
const propertyTimeout = 20 * time.Second

// drawHistory draws a generated history. maxUnresolved caps the unknown
// writes left unresolved (0: no cap).
func drawHistory(t *rapid.T, maxUnresolved int) []genOp {
	cfg := genConfig{
		ops:           rapid.IntRange(1, 250).Draw(t, "ops"),
		clients:       rapid.IntRange(1, 6).Draw(t, "clients"),
		keys:          rapid.IntRange(1, 5).Draw(t, "keys"),
		unknownPct:    rapid.IntRange(0, 20).Draw(t, "unknownPct"),
		phantomPct:    rapid.IntRange(0, 10).Draw(t, "phantomPct"),
		resolvePct:    rapid.IntRange(0, 100).Draw(t, "resolvePct"),
		maxUnresolved: maxUnresolved,
	}
	seed := rapid.Uint64().Draw(t, "seed")
	return generate(rand.New(rand.NewPCG(seed, 0x6b657976616c)), cfg)
}

// A random sequential execution, stretched into overlapping intervals around
// its points and with some outcomes hidden, is linearizable by construction:
// the checker must accept it.
func TestGeneratedHistoriesAccepted(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ops := drawHistory(t, 0)
		h, err := record(ops)
		if err != nil {
			t.Fatalf("recorder refused a valid history: %v", err)
		}
		if res := mustCheck(t, h, propertyTimeout); res.Verdict != Linearizable {
			t.Fatalf("%s", res.Summary())
		}
	})
}

const maxUnresolvedRejected = 6

// staleReads counts how often the stale-read mutation was applied, so the
// test can tell it actually exercised it.
var staleReads atomic.Int64

// Changing one read's result to something no linearization can explain
// must make the checker reject the history.
//
// Rejecting takes a search that grows exponentially with the unknown writes
// on one key (see docs/linearizability.md), so these histories leave at most
// maxUnresolvedRejected of them unresolved.
func TestMutatedReadRejected(t *testing.T) {
	staleReads.Store(0)
	rapid.Check(t, func(t *rapid.T) {
		ops := drawHistory(t, maxUnresolvedRejected)
		var gets []int
		for i, op := range ops {
			if op.Input.Kind == OpGet && op.Status == Returned {
				gets = append(gets, i)
			}
		}
		if len(gets) == 0 {
			t.Skip("no read with a known outcome to mutate")
		}

		h := plainHistory(ops)
		stale := staleReadCandidates(ops)
		if len(stale) > 0 && rapid.Bool().Draw(t, "stale") {
			c := stale[rapid.IntRange(0, len(stale)-1).Draw(t, "candidate")]
			w := ops[c.overwritten].Op
			h.Ops[c.get].Output = GetFound(w.Input.Value, w.Output.Version)
			staleReads.Add(1)
		} else {
			g := gets[rapid.IntRange(0, len(gets)-1).Draw(t, "get")]
			version := rapid.Uint64Range(0, uint64(len(ops))+2).Draw(t, "version")
			h.Ops[g].Output = GetFound("never-written", version)
		}
		if res := mustCheck(t, h, propertyTimeout); res.Verdict != NotLinearizable {
			t.Fatalf("mutated history not rejected: %s", res.Summary())
		}
	})
	if staleReads.Load() == 0 {
		t.Errorf("the stale-read mutation never ran; the generator needs more reads after overwrites")
	}
}

type staleCandidate struct {
	get         int // a read with a known outcome
	overwritten int // a write whose value the read cannot see
}

// staleReadCandidates finds reads G and writes W1 (a put or a successful CAS,
// known outcome) on the same key such that some known-outcome write W2 that
// changed the key ran entirely after W1 and entirely before G. Since every
// write's value is unique, W1's value cannot be current at any point G may
// take effect, so a G that returns it is unexplainable.
func staleReadCandidates(ops []genOp) []staleCandidate {
	known := func(op genOp) bool { return op.Status == Returned }
	writesValue := func(op genOp) bool {
		return known(op) && (op.Input.Kind == OpPut || (op.Input.Kind == OpCAS && op.Output.Succeeded))
	}
	changesKey := func(op genOp) bool {
		return writesValue(op) || (known(op) && op.Input.Kind == OpDelete && op.Output.Found)
	}
	// overwrittenBy[w1]: the earliest return of a write that changed the
	// key and was called after w1 returned (-1 if none).
	overwrittenBy := make([]int64, len(ops))
	for w1, first := range ops {
		overwrittenBy[w1] = -1
		if !writesValue(first) {
			continue
		}
		for _, second := range ops {
			if second.Input.Key == first.Input.Key && changesKey(second) && first.Return < second.Call &&
				(overwrittenBy[w1] < 0 || second.Return < overwrittenBy[w1]) {
				overwrittenBy[w1] = second.Return
			}
		}
	}
	var out []staleCandidate
	for g, get := range ops {
		if get.Input.Kind != OpGet || !known(get) {
			continue
		}
		for w1, first := range ops {
			if first.Input.Key == get.Input.Key && overwrittenBy[w1] >= 0 && overwrittenBy[w1] < get.Call {
				out = append(out, staleCandidate{get: g, overwritten: w1})
			}
		}
	}
	return out
}
