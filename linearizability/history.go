package linearizability

import (
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/anishathalye/porcupine"
)

// Status is where a recorded operation stands.
type Status uint8

const (
	// Pending: called, no answer yet. Checked like Unknown.
	Pending Status = iota
	// Returned: the client got Output at Return.
	Returned
	// Unknown: the client will never learn the outcome (timeout, lost
	// connection). A write may have taken effect at any time after its
	// call, or never; a read is left out.
	Unknown
	// Resolved: the client never got an answer, but the harness learned
	// from other evidence the outcome, Output, and a time, Return, by
	// which it took effect (for example from the committed log and when
	// the entry was first applied). Checked like Returned.
	Resolved
	// Dropped: the operation certainly had no effect (for example it was
	// refused with "not leader" before being proposed, or the harness found
	// it was never committed). Left out.
	Dropped
)

// Op is one recorded client operation. Times are whatever clock the caller
// uses (virtual nanoseconds in the simulator, wall nanoseconds in real
// tests), as long as one history uses one clock.
type Op struct {
	ClientID int
	Input    Input
	Output   Output // meaningful when Status is Returned or Resolved
	Call     int64
	Return   int64 // meaningful when Status is Returned or Resolved
	Status   Status
}

// History is a set of recorded operations, in the order they were called.
type History struct {
	Ops []Op
}

// OpID names an operation recorded by a Recorder.
type OpID int

// Recorder collects a History. It is safe for concurrent use, so goroutines
// of a real-cluster test can share one; the simulator uses it from its one
// thread. The Recorder never reads a clock: every time is passed in.
type Recorder struct {
	mu  sync.Mutex
	ops []Op
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{}
}

// Call records that client invoked in at time at, and returns the handle to
// complete it with.
func (r *Recorder) Call(clientID int, in Input, at int64) OpID {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, Op{ClientID: clientID, Input: in, Call: at, Status: Pending})
	return OpID(len(r.ops) - 1)
}

// Return records that operation id returned out at time at. An out with
// Unknown set is the same as calling Unknown.
func (r *Recorder) Return(id OpID, out Output, at int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	op, err := r.find(id, Pending)
	if err != nil {
		return fmt.Errorf("record return: %w", err)
	}
	if out.Unknown {
		op.Status = Unknown
		return nil
	}
	if at < op.Call {
		return fmt.Errorf("record return of operation %d (%v) at %d: before its call at %d", id, op.Input, at, op.Call)
	}
	op.Output = out
	op.Return = at
	op.Status = Returned
	return nil
}

// Unknown records that the client will never learn operation id's outcome
// (it timed out or lost its connection). A write may have taken effect at
// any time after its call, or never; a read is left out.
func (r *Recorder) Unknown(id OpID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	op, err := r.find(id, Pending)
	if err != nil {
		return fmt.Errorf("record unknown outcome: %w", err)
	}
	op.Status = Unknown
	return nil
}

// Resolve records that operation id, pending or of unknown outcome, is
// known from other evidence (not the client, which never got an answer) to
// have had outcome out and to have taken effect no later than by. It is then
// checked like an operation that returned out at by. Resolving unknown
// writes is optional but makes checking a failing history much faster: each
// unknown write can take effect anywhere after its call or not at all, so
// each one doubles the worst-case search.
//
// The bound matters: an outcome known without a time would have to be
// placed anywhere after the call, which makes the search far slower than
// leaving the operation unknown. Without a bound, use Unknown.
func (r *Recorder) Resolve(id OpID, out Output, by int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if out.Unknown {
		return fmt.Errorf("resolve operation %d: the outcome given is unknown", id)
	}
	op, err := r.find(id, Pending, Unknown)
	if err != nil {
		return fmt.Errorf("resolve: %w", err)
	}
	if by < op.Call {
		return fmt.Errorf("resolve operation %d (%v): took effect by %d, before its call at %d", id, op.Input, by, op.Call)
	}
	op.Output = out
	op.Return = by
	op.Status = Resolved
	return nil
}

// Drop records that operation id, pending or of unknown outcome, certainly
// had no effect, so it is left out of the check. Use it only when that is
// proven: the request was refused before being proposed, or was never
// committed by the end of the run.
func (r *Recorder) Drop(id OpID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	op, err := r.find(id, Pending, Unknown)
	if err != nil {
		return fmt.Errorf("drop: %w", err)
	}
	op.Status = Dropped
	return nil
}

// History returns a copy of everything recorded so far. Operations still
// pending are included as pending (checked as unknown outcomes).
func (r *Recorder) History() History {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := make([]Op, len(r.ops))
	copy(ops, r.ops)
	return History{Ops: ops}
}

// find returns operation id if its status is one of allowed. The caller
// holds r.mu.
func (r *Recorder) find(id OpID, allowed ...Status) (*Op, error) {
	if id < 0 || int(id) >= len(r.ops) {
		return nil, fmt.Errorf("no operation %d recorded", id)
	}
	op := &r.ops[id]
	if !slices.Contains(allowed, op.Status) {
		return nil, fmt.Errorf("operation %d (%v) is already %v", id, op.Input, op.Status)
	}
	return op, nil
}

func (s Status) String() string {
	switch s {
	case Pending:
		return "pending"
	case Returned:
		return "returned"
	case Unknown:
		return "of unknown outcome"
	case Resolved:
		return "resolved"
	case Dropped:
		return "dropped"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Counts summarises a history.
type Counts struct {
	// ByKind counts checked operations of each kind.
	ByKind map[OpKind]int
	// Keys is the number of distinct keys among checked operations.
	Keys int
	// OK counts operations that returned an answer to their client.
	OK int
	// Unknown counts writes with an unknown outcome (including ones still
	// pending), checked as "may have taken effect any time after the call,
	// or never".
	Unknown int
	// Resolved counts operations whose outcome the harness established
	// although the client never saw it.
	Resolved int
	// Seen counts the unknown writes whose value an answered operation
	// later saw, so they certainly took effect before it.
	Seen int
	// UnknownReads counts reads with an unknown outcome, left out.
	UnknownReads int
	// Dropped counts operations that certainly had no effect, left out.
	Dropped int
}

// validate reports the first operation Porcupine could not check: an
// unknown kind or status, or a known outcome returned before its call.
// The Recorder never produces these; a History built by hand might.
func (h History) validate() error {
	for i, op := range h.Ops {
		if op.Input.Kind < OpPut || op.Input.Kind > OpRevoke {
			return fmt.Errorf("operation %d: unknown kind %v", i, op.Input.Kind)
		}
		if op.Status > Dropped {
			return fmt.Errorf("operation %d (%v): unknown status %v", i, op.Input, op.Status)
		}
		if as := op.checkedAs(); (as == Returned || as == Resolved) && op.Return < op.Call {
			return fmt.Errorf("operation %d (%v): returns at %d, before its call at %d", i, op.Input, op.Return, op.Call)
		}
	}
	return nil
}

// checkedAs tells how the checker treats op.
func (op Op) checkedAs() Status {
	switch {
	case op.Status == Dropped:
		return Dropped
	case op.Status == Pending || op.Output.Unknown:
		return Unknown
	}
	return op.Status
}

// operations converts h into what Porcupine checks. Dropped operations and
// reads with unknown outcomes are left out. Writes with unknown outcomes
// return after everything else in the history with an output the model
// accepts in any state, so the checker may place their effect anywhere after
// their call, including the very end, where it affects nothing observable:
// that stands for "never took effect".
//
// One refinement keeps the search smaller without changing the verdict:
// when an unknown write is the only write of its value to its key, and an
// answered operation saw that value there, the write certainly took effect
// before that operation returned, so it returns then instead. Every
// linearization that explains the sighting already places it there.
func (h History) operations() ([]porcupine.Operation, Counts) {
	counts := Counts{ByKind: make(map[OpKind]int)}
	var end int64
	for _, op := range h.Ops {
		end = max(end, op.Call)
		if as := op.checkedAs(); as == Returned || as == Resolved {
			end = max(end, op.Return)
		}
	}
	// Unknown outcomes return after every known time.
	if end < math.MaxInt64 {
		end++
	}
	sightings := firstSightings(h.Ops)

	keys := make(map[string]bool)
	ops := make([]porcupine.Operation, 0, len(h.Ops))
	for _, op := range h.Ops {
		pop := porcupine.Operation{
			ClientId: op.ClientID,
			Input:    op.Input,
			Call:     op.Call,
			Output:   op.Output,
			Return:   op.Return,
		}
		switch op.checkedAs() {
		case Dropped:
			counts.Dropped++
			continue
		case Returned:
			counts.OK++
		case Resolved:
			counts.Resolved++
			pop.Metadata = "resolved by the harness: the client never saw this outcome"
		case Unknown:
			if !op.Input.Kind.isWrite() {
				counts.UnknownReads++
				continue
			}
			counts.Unknown++
			pop.Output = UnknownOutcome()
			pop.Return = end
			pop.Metadata = "outcome unknown: took effect any time after its call, or never"
			seen, ok := sightings[keyValue{op.Input.Key, op.Input.Value}]
			if ok && seen.writers == 1 && seen.at < end {
				counts.Seen++
				pop.Return = max(op.Call, seen.at)
				pop.Metadata = fmt.Sprintf("outcome unknown, but its value was seen by an operation that returned at %d", seen.at)
			}
		}
		counts.ByKind[op.Input.Kind]++
		keys[op.Input.Key] = true
		ops = append(ops, pop)
	}
	counts.Keys = len(keys)
	return ops, counts
}

type keyValue struct {
	key, value string
}

type sighting struct {
	writers int   // operations that may have written the value to the key
	at      int64 // earliest return of a known-outcome operation that saw it there; math.MaxInt64 if none
}

// firstSightings finds, for each value written to each key, how many
// operations may have written it and when it was first seen there.
func firstSightings(ops []Op) map[keyValue]sighting {
	seen := make(map[keyValue]sighting)
	for _, op := range ops {
		as := op.checkedAs()
		failedCAS := op.Input.Kind == OpCAS && (as == Returned || as == Resolved) && !op.Output.Succeeded
		if as == Dropped || failedCAS || (op.Input.Kind != OpPut && op.Input.Kind != OpCAS) {
			continue
		}
		kv := keyValue{op.Input.Key, op.Input.Value}
		s, ok := seen[kv]
		if !ok {
			s.at = math.MaxInt64
		}
		s.writers++
		seen[kv] = s
	}
	for _, op := range ops {
		if as := op.checkedAs(); (as != Returned && as != Resolved) || !op.Output.Found {
			continue
		}
		if op.Input.Kind != OpGet && !(op.Input.Kind == OpCAS && !op.Output.Succeeded) {
			continue
		}
		kv := keyValue{op.Input.Key, op.Output.Value}
		if s, ok := seen[kv]; ok && op.Return < s.at {
			s.at = op.Return
			seen[kv] = s
		}
	}
	return seen
}
