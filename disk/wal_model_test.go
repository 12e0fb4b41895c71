package disk

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// A scripted WAL workload and a reference model of what recovery must
// return after any prefix of it. The model is deliberately naive (it keeps
// every entry and knows nothing of segments) so that it checks the WAL rather
// than repeating it.

type walOpKind uint8

const (
	wopAppend walOpKind = iota
	wopInstall
	wopCompact
	wopSync
	wopRelease
)

type walOp struct {
	kind    walOpKind
	hs      core.HardState
	ents    []core.Entry
	meta    core.SnapshotMeta
	release uint64
}

func (o walOp) String() string {
	switch o.kind {
	case wopAppend:
		first := uint64(0)
		if len(o.ents) > 0 {
			first = o.ents[0].Index
		}
		return fmt.Sprintf("append(%d entries from %d, hs %+v)", len(o.ents), first, o.hs)
	case wopInstall:
		return fmt.Sprintf("install(%d/%d)", o.meta.Index, o.meta.Term)
	case wopCompact:
		return fmt.Sprintf("compact(%d/%d)", o.meta.Index, o.meta.Term)
	case wopSync:
		return "sync"
	}
	return fmt.Sprintf("release(%d)", o.release)
}

// walState is what recovery returns, reduced to what must match.
type walState struct {
	hs   core.HardState
	snap core.SnapshotMeta
	log  []core.Entry // entries after snap.Index
}

func (s walState) equal(o walState) bool {
	if s.hs != o.hs || !sameMeta(s.snap, o.snap) || len(s.log) != len(o.log) {
		return false
	}
	for i := range s.log {
		a, b := s.log[i], o.log[i]
		if a.Index != b.Index || a.Term != b.Term || a.Type != b.Type || !bytes.Equal(a.Data, b.Data) {
			return false
		}
	}
	return true
}

func (s walState) String() string {
	last := s.snap.Index
	if len(s.log) > 0 {
		last = s.log[len(s.log)-1].Index
	}
	return fmt.Sprintf("hs=%+v snap=%d/%d log=(%d..%d]", s.hs, s.snap.Index, s.snap.Term, s.snap.Index, last)
}

func stateOf(r *Recovered) walState {
	return walState{hs: r.HardState, snap: r.Snapshot, log: r.Entries}
}

// walModel replays records the simple way.
type walModel struct {
	hs   core.HardState
	snap core.SnapshotMeta
	base uint64       // ents hold base+1, base+2, ...
	ents []core.Entry // never shared with an earlier state's view once cut
}

func (m *walModel) last() uint64 { return m.base + uint64(len(m.ents)) }

func (m *walModel) state() walState {
	return walState{hs: m.hs, snap: m.snap, log: m.ents[m.snap.Index-m.base:]}
}

func (m *walModel) entry(e core.Entry) {
	i := e.Index - m.base - 1
	if i < uint64(len(m.ents)) {
		m.ents = slices.Clone(m.ents[:i]) // earlier states keep their view
	}
	m.ents = append(m.ents, e)
}

// genWorkload makes a valid random workload of about n operations. It
// returns the operations and the model's state after each record: states[k]
// is the state after the first k records.
func genWorkload(rng *rand.Rand, n int) ([]walOp, []walState) {
	var (
		ops     []walOp
		model   walModel
		states  = []walState{model.state()}
		term    = uint64(1)
		durable uint64 // snapshot index as of the last sync
	)
	conf := func() core.ConfState {
		c := core.ConfState{Voters: []core.NodeID{1, 2, 3}}
		if rng.IntN(2) == 0 {
			c.Learners = []core.NodeID{4}
		}
		return c
	}
	for len(ops) < n {
		switch r := rng.IntN(100); {
		case r < 55:
			op := walOp{kind: wopAppend}
			low := max(model.snap.Index, model.hs.Commit) + 1
			first := model.last() + 1
			if rng.IntN(5) == 0 && first > low {
				first = low + rng.Uint64N(first-low) // overwrite a suffix
				term++
			}
			for i := range rng.IntN(9) {
				data := make([]byte, rng.IntN(300))
				for j := range data {
					data[j] = byte(rng.IntN(256))
				}
				typ := core.EntryNormal
				if rng.IntN(10) == 0 {
					typ = core.EntryConfChange
				}
				op.ents = append(op.ents, core.Entry{Term: term, Index: first + uint64(i), Type: typ, Data: data})
			}
			last := model.last()
			if len(op.ents) > 0 {
				last = op.ents[len(op.ents)-1].Index
			}
			if rng.IntN(2) == 0 {
				op.hs = core.HardState{Term: term, Vote: core.NodeID(rng.IntN(4)), Commit: model.hs.Commit}
				if last > op.hs.Commit {
					op.hs.Commit += rng.Uint64N(last - op.hs.Commit + 1)
				}
			}
			for _, e := range op.ents {
				model.entry(e)
				states = append(states, model.state())
			}
			if !op.hs.IsEmpty() && op.hs != model.hs {
				model.hs = op.hs
				states = append(states, model.state())
			}
			ops = append(ops, op)
		case r < 60:
			term++
			idx := max(model.snap.Index, model.hs.Commit) + rng.Uint64N(20)
			meta := core.SnapshotMeta{Index: idx, Term: term, Conf: conf()}
			model.snap, model.base, model.ents = meta, idx, nil
			states = append(states, model.state())
			ops = append(ops, walOp{kind: wopInstall, meta: meta})
		case r < 68:
			if model.last() == model.snap.Index {
				continue
			}
			idx := model.snap.Index + 1 + rng.Uint64N(model.last()-model.snap.Index)
			meta := core.SnapshotMeta{Index: idx, Term: term, Conf: conf()}
			model.snap = meta
			states = append(states, model.state())
			ops = append(ops, walOp{kind: wopCompact, meta: meta})
		case r < 92:
			durable = model.snap.Index
			ops = append(ops, walOp{kind: wopSync})
		default:
			if durable == 0 {
				continue
			}
			ops = append(ops, walOp{kind: wopRelease, release: rng.Uint64N(durable + 1)})
		}
	}
	return ops, states
}

// records is how many records op appends.
func (o walOp) records(cur core.HardState) int {
	switch o.kind {
	case wopAppend:
		n := len(o.ents)
		if !o.hs.IsEmpty() && o.hs != cur {
			n++
		}
		return n
	case wopInstall, wopCompact:
		return 1
	}
	return 0
}

// runResult is how far a workload got before it stopped.
type runResult struct {
	started int   // records appended by operations that were started
	synced  int   // records appended before the last successful Sync
	err     error // the error that stopped it, if any
}

// runWorkload applies ops to w until one fails.
func runWorkload(w *WAL, ops []walOp) runResult {
	var res runResult
	var hs core.HardState
	appended := 0
	for _, op := range ops {
		n := op.records(hs)
		res.started += n
		var err error
		switch op.kind {
		case wopAppend:
			err = w.Append(op.hs, op.ents)
			if !op.hs.IsEmpty() {
				hs = op.hs
			}
		case wopInstall:
			err = w.InstallSnapshot(op.meta)
		case wopCompact:
			err = w.MarkCompacted(op.meta)
		case wopSync:
			err = w.Sync()
			if err == nil {
				res.synced = appended
			}
		case wopRelease:
			err = w.ReleaseTo(op.release)
		}
		if err != nil {
			res.err = fmt.Errorf("%v: %w", op, err)
			return res
		}
		appended += n
	}
	return res
}

// matchPrefix returns the k in [lo, hi] such that states[k] equals got, or
// -1.
func matchPrefix(states []walState, got walState, lo, hi int) int {
	for k := hi; k >= lo; k-- {
		if states[k].equal(got) {
			return k
		}
	}
	return -1
}

var errInjectedCrash = errors.New("injected crash")
