package linearizability

import (
	"math/rand/v2"
	"slices"
	"strconv"
)

// genConfig shapes a generated history.
type genConfig struct {
	ops     int // operations in the sequential execution
	clients int
	keys    int
	// unknownPct: percent of operations whose client never learns the
	// outcome. Writes among them still took effect; reads are left out.
	unknownPct int
	// phantomPct: percent chance, per operation, of an extra write that
	// never took effect, recorded as unknown (or left pending) or dropped.
	phantomPct int
	// resolvePct: percent of unknown outcomes the harness later resolves
	// (writes that took effect get their real output, phantoms are dropped).
	resolvePct int
	// maxUnresolved, if positive, caps the unknown writes left unresolved.
	maxUnresolved int
}

// genOp is one generated operation with the point at which it took effect
// (for operations that took effect) in the sequential execution.
type genOp struct {
	Op
	point int64
	// truth is what the operation really returned (for a write that took
	// effect); phantom marks a write that never took effect.
	truth   Output
	phantom bool
	// inChain: the client waited for this operation before its next
	// one. Operations whose outcome is unknown are not: the client gave up
	// and moved on while the request may still take effect later.
	inChain bool
}

type refEntry struct {
	value   string
	version uint64
}

// generate runs a random sequential execution against a reference map (so
// the result is linearizable by construction: each operation's effect is at
// its point), then gives every operation a call/return interval around its
// point, such that each client's known-outcome operations do not overlap
// each other but overlap other clients' freely. Every write writes a value
// no other write writes, which the mutation tests rely on.
func generate(rng *rand.Rand, cfg genConfig) []genOp {
	ref := make(map[string]refEntry)
	var revision uint64
	var ops []genOp
	for i := range cfg.ops {
		point := int64(i+1) * 10
		client := rng.IntN(cfg.clients)
		key := "k" + strconv.Itoa(rng.IntN(cfg.keys))
		value := "v" + strconv.Itoa(i)
		cur, exists := ref[key]

		var in Input
		var out Output
		switch r := rng.IntN(100); {
		case r < 30:
			in = Put(key, value)
			revision++
			ref[key] = refEntry{value, revision}
			out = PutOK(revision)
		case r < 65:
			in = Get(key)
			if exists {
				out = GetFound(cur.value, cur.version)
			}
		case r < 75:
			in = Delete(key)
			if exists {
				revision++
				delete(ref, key)
			}
			out = DeleteOK(exists)
		default:
			var expected uint64
			switch c := rng.IntN(10); {
			case c < 4 && exists:
				expected = cur.version
			case c < 6:
				expected = 0
			default:
				expected = 1 + rng.Uint64N(revision+1)
			}
			in = CAS(key, expected, value)
			if (expected == 0 && !exists) || (exists && expected == cur.version) {
				revision++
				ref[key] = refEntry{value, revision}
				out = CASSucceeded(revision)
			} else if exists {
				out = CASFailed(cur.value, cur.version)
			} else {
				out = CASFailedAbsent()
			}
		}

		op := genOp{Op: Op{ClientID: client, Input: in, Output: out, Status: Returned}, point: point, inChain: true, truth: out}
		if rng.IntN(100) < cfg.unknownPct {
			op.inChain = false
			op.Output = Output{}
			op.Status = Unknown
			if rng.IntN(4) == 0 {
				op.Status = Pending
			}
		}
		ops = append(ops, op)

		if rng.IntN(100) < cfg.phantomPct {
			// A write that never took effect: unknown to its client,
			// or known to have failed (dropped).
			ghost := genOp{Op: Op{
				ClientID: rng.IntN(cfg.clients),
				Input:    Put(key, "phantom"+strconv.Itoa(i)),
				Status:   Unknown,
			}, point: point, phantom: true}
			switch rng.IntN(3) {
			case 0:
				ghost.Input = CAS(key, rng.Uint64N(revision+2), "phantom"+strconv.Itoa(i))
			case 1:
				ghost.Status = Dropped
			}
			ops = append(ops, ghost)
		}
	}
	resolve(rng, ops, cfg)
	assignTimes(rng, ops, cfg.clients)
	return ops
}

// resolve plays the harness that learns, after the run, what some unknown
// operations did: phantoms are dropped, the rest get their real output and
// a time by which they took effect.
func resolve(rng *rand.Rand, ops []genOp, cfg genConfig) {
	var unresolved []int
	for i := range ops {
		op := &ops[i]
		if op.Status != Unknown && op.Status != Pending {
			continue
		}
		if rng.IntN(100) < cfg.resolvePct {
			resolveOne(op)
		} else if op.Input.Kind.isWrite() {
			unresolved = append(unresolved, i)
		}
	}
	if cfg.maxUnresolved > 0 && len(unresolved) > cfg.maxUnresolved {
		rng.Shuffle(len(unresolved), func(a, b int) { unresolved[a], unresolved[b] = unresolved[b], unresolved[a] })
		for _, i := range unresolved[cfg.maxUnresolved:] {
			resolveOne(&ops[i])
		}
	}
}

func resolveOne(op *genOp) {
	if op.phantom {
		op.Status = Dropped
		return
	}
	op.Status = Resolved
	op.Output = op.truth
}

// assignTimes gives each operation a [Call, Return] containing its point.
// For consecutive chained operations a, b of one client the gap between
// their points is split so that a returns before b is called.
func assignTimes(rng *rand.Rand, ops []genOp, clients int) {
	lastInChain := make([]int, clients)
	for c := range lastInChain {
		lastInChain[c] = -1
	}
	for i := range ops {
		op := &ops[i]
		if !op.inChain {
			// Called some time before its effect (or, for one that
			// never took effect, around its point).
			op.Call = op.point - rng.Int64N(200)
			if op.Status == Resolved {
				op.Return = op.point + rng.Int64N(300)
			}
			continue
		}
		prev := lastInChain[op.ClientID]
		if prev < 0 {
			op.Call = op.point - rng.Int64N(50)
		} else {
			half := (op.point - ops[prev].point) / 2
			ops[prev].Return = ops[prev].point + rng.Int64N(half)
			op.Call = op.point - rng.Int64N(half)
		}
		lastInChain[op.ClientID] = i
	}
	for _, last := range lastInChain {
		if last >= 0 {
			ops[last].Return = ops[last].point + rng.Int64N(50)
		}
	}
}

// record feeds ops into a Recorder the way a test harness would and returns
// what it recorded, checking the recorder accepts every step.
func record(ops []genOp) (History, error) {
	r := NewRecorder()
	order := make([]int, len(ops))
	for i := range order {
		order[i] = i
	}
	// Calls in time order, as a live harness would make them.
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case ops[a].Call < ops[b].Call:
			return -1
		case ops[a].Call > ops[b].Call:
			return 1
		}
		return 0
	})
	ids := make([]OpID, len(ops))
	for _, i := range order {
		ids[i] = r.Call(ops[i].ClientID, ops[i].Input, ops[i].Call)
	}
	for _, i := range order {
		op := ops[i]
		var err error
		// Resolved and dropped operations alternate between being
		// settled straight from pending and after first being marked
		// unknown, as a harness may do either.
		switch op.Status {
		case Pending:
		case Unknown:
			err = r.Unknown(ids[i])
		case Resolved:
			if i%2 == 0 {
				err = r.Unknown(ids[i])
			}
			if err == nil {
				err = r.Resolve(ids[i], op.Output, op.Return)
			}
		case Dropped:
			if i%2 == 0 {
				err = r.Return(ids[i], UnknownOutcome(), op.Call)
			}
			if err == nil {
				err = r.Drop(ids[i])
			}
		default:
			err = r.Return(ids[i], op.Output, op.Return)
		}
		if err != nil {
			return History{}, err
		}
	}
	return r.History(), nil
}

// plainHistory is ops as a History, without going through a Recorder.
func plainHistory(ops []genOp) History {
	h := History{Ops: make([]Op, len(ops))}
	for i, op := range ops {
		h.Ops[i] = op.Op
	}
	return h
}
