package linearizability

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Histories of etcd-style operations (multi-key transactions and reads at a
// revision) are checked by revision rather than by Porcupine's search: the
// store numbers its writes, and every answer says at which revision it was
// made or read, so the order to check is given. The history is
// linearizable exactly when these hold:
//
//   - writes: each revision was written by at most one transaction, whose
//     compares, evaluated on the state just before its revision, chose the
//     branch it reports;
//   - reads (and transactions that wrote nothing): what they returned, and
//     their compares, match the state at the revision they report; a read
//     at an older revision matches the state at that revision;
//   - real time: an operation placed at a revision (a write at its own, a
//     read after the write of the revision it reports) is not placed before
//     one that finished before it began, and a read does not see a write
//     that began after it finished.
//
// The state at a revision is the workload's writes up to it, replayed in
// revision order. Revisions the workload did not write (the store's own
// records) change none of its keys.

// RevKind is a kind of RevOp.
type RevKind uint8

const (
	// RevTxn is a transaction: compares, then one branch of writes.
	RevTxn RevKind = iota + 1
	// RevRange reads the keys in [Key, End), at the latest revision or at
	// At.
	RevRange
)

// RevCompare compares one key: its value (ByValue) or its mod revision.
// Every compare is an equality; an absent key has mod revision 0 and
// equals no value.
type RevCompare struct {
	Key         string
	ByValue     bool
	Value       string
	ModRevision int64
}

// RevWrite puts Value at Key, or deletes Key.
type RevWrite struct {
	Key    string
	Value  string
	Delete bool
}

// RevKV is one key a read returned.
type RevKV struct {
	Key         string
	Value       string
	ModRevision int64
}

// RevOp is one operation of a history checked by revision.
type RevOp struct {
	Client int
	Kind   RevKind
	// Call and Return are when it was invoked and answered. A write whose
	// answer was never learned but that the cluster applied has Return set
	// to the latest time it could have taken effect.
	Call, Return int64
	// Unknown: the outcome was never learned and nothing applied it; it is
	// left out.
	Unknown bool

	// RevTxn: the compares and both branches; every branch that writes
	// puts at least one key (so a transaction writes exactly when its
	// chosen branch is not empty).
	Compares   []RevCompare
	Then, Else []RevWrite
	Succeeded  bool

	// RevRange: the keys asked for, the revision asked for (0: latest),
	// and what came back (in key order).
	Key, End string
	At       int64
	KVs      []RevKV

	// Revision is the answer's revision: a writing transaction's own, or
	// the revision a read or a transaction that wrote nothing saw.
	Revision int64
}

func (o *RevOp) branch() []RevWrite {
	if o.Succeeded {
		return o.Then
	}
	return o.Else
}

func (o *RevOp) writes() bool { return o.Kind == RevTxn && len(o.branch()) > 0 }

func (o *RevOp) String() string {
	switch o.Kind {
	case RevTxn:
		return fmt.Sprintf("client %d txn if %v then %v else %v → succeeded=%v at revision %d [%d, %d]",
			o.Client, o.Compares, o.Then, o.Else, o.Succeeded, o.Revision, o.Call, o.Return)
	case RevRange:
		return fmt.Sprintf("client %d range [%q, %q) at %d → %v at revision %d [%d, %d]",
			o.Client, o.Key, o.End, o.At, o.KVs, o.Revision, o.Call, o.Return)
	}
	return fmt.Sprintf("client %d: unknown operation kind %d", o.Client, o.Kind)
}

type revValue struct {
	value string
	mod   int64
}

// revState is the workload's keys as of one revision.
type revState struct {
	rev  int64
	keys map[string]revValue
}

// CheckRevisions checks a history of RevOps; nil means linearizable, an
// error names the first operation that is not.
func CheckRevisions(ops []RevOp) error {
	var live []*RevOp
	for i := range ops {
		if !ops[i].Unknown {
			live = append(live, &ops[i])
		}
	}
	states, err := replayWrites(live)
	if err != nil {
		return err
	}
	at := func(rev int64) map[string]revValue {
		i, found := slices.BinarySearchFunc(states, rev, func(s revState, r int64) int { return cmp.Compare(s.rev, r) })
		if !found {
			i-- // the last write at or before rev
		}
		return states[i].keys
	}
	for _, o := range live {
		if err := checkAgainst(o, at); err != nil {
			return err
		}
	}
	return checkRealTime(live)
}

// replayWrites orders the writing transactions by revision and returns the
// state after each (states[0] is the empty state at revision 0), checking
// that each chose its branch on the state before it.
func replayWrites(live []*RevOp) ([]revState, error) {
	var writes []*RevOp
	for _, o := range live {
		if o.writes() {
			writes = append(writes, o)
		}
	}
	slices.SortFunc(writes, func(a, b *RevOp) int { return cmp.Compare(a.Revision, b.Revision) })
	states := []revState{{keys: map[string]revValue{}}}
	for i, w := range writes {
		if i > 0 && writes[i-1].Revision == w.Revision {
			return nil, fmt.Errorf("two writes claim revision %d: %v and %v", w.Revision, writes[i-1], w)
		}
		before := states[len(states)-1].keys
		if w.Revision <= 0 {
			return nil, fmt.Errorf("a write at revision %d: %v", w.Revision, w)
		}
		if comparesHold(w.Compares, before) != w.Succeeded {
			return nil, fmt.Errorf("its compares, on the state before revision %d, choose the other branch: %v (state: %v)", w.Revision, w, before)
		}
		next := maps.Clone(before)
		for _, wr := range w.branch() {
			if wr.Delete {
				delete(next, wr.Key)
			} else {
				next[wr.Key] = revValue{wr.Value, w.Revision}
			}
		}
		states = append(states, revState{rev: w.Revision, keys: next})
	}
	return states, nil
}

func comparesHold(cs []RevCompare, keys map[string]revValue) bool {
	for _, c := range cs {
		v, ok := keys[c.Key]
		switch {
		case c.ByValue && (!ok || v.value != c.Value):
			return false
		case !c.ByValue && v.mod != c.ModRevision: // absent: 0
			return false
		}
	}
	return true
}

// checkAgainst checks what a read, or a transaction that wrote nothing,
// saw against the state at the revision it reports.
func checkAgainst(o *RevOp, at func(int64) map[string]revValue) error {
	switch {
	case o.writes():
		return nil // checked by replayWrites
	case o.Kind == RevTxn:
		if comparesHold(o.Compares, at(o.Revision)) != o.Succeeded {
			return fmt.Errorf("its compares, on the state at revision %d, choose the other branch: %v", o.Revision, o)
		}
		return nil
	}
	rev := o.Revision
	if o.At > 0 {
		if o.At > o.Revision {
			return fmt.Errorf("a read at revision %d answered at revision %d: %v", o.At, o.Revision, o)
		}
		rev = o.At
	}
	want := rangeOf(at(rev), o.Key, o.End)
	if !slices.Equal(want, o.KVs) {
		return fmt.Errorf("the read returned %v, but at revision %d the keys were %v: %v", o.KVs, rev, want, o)
	}
	return nil
}

func rangeOf(keys map[string]revValue, from, to string) []RevKV {
	var out []RevKV
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if k >= from && k < to {
			out = append(out, RevKV{Key: k, Value: keys[k].value, ModRevision: keys[k].mod})
		}
	}
	return out
}

// checkRealTime checks the order revisions give against the order of real
// time: sweeping the operations by call time, each must be placed no
// earlier than every operation that returned before it was called (a
// write strictly after, since a read at its revision already saw it).
func checkRealTime(live []*RevOp) error {
	byCall := slices.Clone(live)
	slices.SortStableFunc(byCall, func(a, b *RevOp) int { return cmp.Compare(a.Call, b.Call) })
	byReturn := slices.Clone(live)
	slices.SortStableFunc(byReturn, func(a, b *RevOp) int { return cmp.Compare(a.Return, b.Return) })
	var (
		floor *RevOp // the returned operation placed latest (its Revision)
		next  int
	)
	for _, o := range byCall {
		for next < len(byReturn) && byReturn[next].Return < o.Call {
			if r := byReturn[next]; floor == nil || r.Revision > floor.Revision || (r.Revision == floor.Revision && r.writes()) {
				floor = r
			}
			next++
		}
		if floor == nil {
			continue
		}
		if o.Revision < floor.Revision || (o.writes() && o.Revision == floor.Revision) {
			return fmt.Errorf("real time broken: %v began after %v had finished, yet is ordered before it", o, floor)
		}
	}
	return nil
}

// RevSummary is a short account of a history checked by revision.
func RevSummary(ops []RevOp, err error) string {
	var txns, writes, reads, past, unknown int
	for i := range ops {
		o := &ops[i]
		switch {
		case o.Unknown:
			unknown++
		case o.writes():
			writes++
		case o.Kind == RevTxn:
			txns++
		case o.At > 0:
			past++
		default:
			reads++
		}
	}
	verdict := "linearizable"
	if err != nil {
		verdict = "NOT linearizable"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s by revision: %d ops (%d writing txns, %d txns writing nothing, %d reads, %d reads at a past revision, %d unknown left out)",
		verdict, len(ops), writes, txns, reads, past, unknown)
	return b.String()
}
