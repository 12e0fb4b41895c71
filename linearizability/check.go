package linearizability

import (
	"fmt"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Verdict is the outcome of a check.
type Verdict uint8

const (
	// Linearizable: a linearization exists for every key.
	Linearizable Verdict = iota + 1
	// NotLinearizable: for at least one key, no linearization exists.
	NotLinearizable
	// TimedOut: the checker gave up before deciding. Nothing illegal was
	// found, but nothing was proven either.
	TimedOut
	// Malformed: the history could not be checked at all; Result.Err says
	// why. The Recorder never produces such a history.
	Malformed
)

func (v Verdict) String() string {
	switch v {
	case Linearizable:
		return "linearizable"
	case NotLinearizable:
		return "NOT linearizable"
	case TimedOut:
		return "unknown (checker timed out)"
	case Malformed:
		return "malformed history"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// Result is the outcome of Check.
type Result struct {
	Verdict Verdict
	Counts  Counts
	// IllegalKeys lists, sorted, the keys whose operations have no
	// linearization. Set only when Verdict is NotLinearizable. If the
	// diagnostic pass hits the timeout it may be empty, or also name keys
	// whose search was cut short.
	IllegalKeys []string
	// Err says what is wrong with a Malformed history.
	Err error

	ops     []porcupine.Operation
	timeout time.Duration
	info    *porcupine.LinearizationInfo
}

// Check decides whether h is linearizable against KeyVal's client API, one
// key at a time. timeout bounds Porcupine's search (0: no bound); only when
// it expires is the verdict TimedOut, so with no timeout, or one that is not
// reached, the same history always gets the same verdict.
//
// When the history is not linearizable, Check runs a second, slower pass to
// find which keys are at fault and keeps what the visualization needs.
//
// A history the checker cannot interpret (an operation that returns before
// its call, or of an unknown kind or status; the Recorder never produces
// one) gets the verdict Malformed, with Err saying why.
func Check(h History, timeout time.Duration) Result {
	if err := h.validate(); err != nil {
		return Result{Verdict: Malformed, Err: fmt.Errorf("check linearizability: %w", err)}
	}
	ops, counts := h.operations()
	res := Result{Counts: counts, ops: ops, timeout: timeout}
	switch porcupine.CheckOperationsTimeout(Model(), ops, timeout) {
	case porcupine.Ok:
		res.Verdict = Linearizable
	case porcupine.Illegal:
		res.Verdict = NotLinearizable
		res.explain()
	default:
		res.Verdict = TimedOut
	}
	return res
}

// explain reruns the check keeping partial linearizations, which the
// visualization draws, and names every key for which none of them covers
// all of the key's operations.
func (r *Result) explain() {
	verdict, info := porcupine.CheckOperationsVerbose(Model(), r.ops, r.timeout)
	r.info = &info
	r.IllegalKeys = nil
	if verdict != porcupine.Illegal {
		return // timed out: which keys failed is not known
	}
	partials := info.PartialLinearizations()
	for i, partition := range partitionOperations(r.ops) {
		if i >= len(partials) {
			break
		}
		complete := false
		for _, lin := range partials[i] {
			if len(lin) == len(partition) {
				complete = true
				break
			}
		}
		if !complete {
			r.IllegalKeys = append(r.IllegalKeys, partition[0].Input.(Input).Key)
		}
	}
}

// WriteVisualization writes Porcupine's HTML visualization of the checked
// history to path: one row per client, operations grouped by key, and for
// each key the longest linearizations found with the model's state after
// every step. For a linearizable history it first reruns the check to
// collect that information.
func (r *Result) WriteVisualization(path string) error {
	if r.Verdict == Malformed {
		return fmt.Errorf("write linearizability visualization: %w", r.Err)
	}
	if r.info == nil {
		_, info := porcupine.CheckOperationsVerbose(Model(), r.ops, r.timeout)
		r.info = &info
	}
	if err := porcupine.VisualizePath(Model(), *r.info, path); err != nil {
		return fmt.Errorf("write linearizability visualization to %s: %w", path, err)
	}
	return nil
}

// Summary is a one-line account of the check, for logs and the simulator's
// report, e.g. (wrapped here)
//
//	NOT linearizable: 1000 ops on 8 keys (put 250,
//	get 400, delete 100, cas 250); 970 answered, 10 resolved, 20 unknown
//	writes (4 seen to take effect); 3 unknown reads and 5 failed ops left
//	out; illegal keys: k3
func (r Result) Summary() string {
	if r.Verdict == Malformed {
		return fmt.Sprintf("%v: %v", r.Verdict, r.Err)
	}
	var b strings.Builder
	c := r.Counts
	fmt.Fprintf(&b, "%v: %d ops on %d keys (", r.Verdict, c.OK+c.Unknown+c.Resolved, c.Keys)
	sep := ""
	for _, kind := range opKinds {
		// Permission changes are listed only in histories that have them.
		if n := c.ByKind[kind]; n > 0 || kind.isData() {
			fmt.Fprintf(&b, "%s%v %d", sep, kind, n)
			sep = ", "
		}
	}
	fmt.Fprintf(&b, "); %d answered, %d resolved, %d unknown writes (%d seen to take effect); %d unknown reads and %d failed ops left out",
		c.OK, c.Resolved, c.Unknown, c.Seen, c.UnknownReads, c.Dropped)
	if len(r.IllegalKeys) > 0 {
		fmt.Fprintf(&b, "; illegal keys: %s", strings.Join(r.IllegalKeys, ", "))
	}
	return b.String()
}
