package disk

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"pgregory.net/rapid"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

const testWALDir = "/data/wal"

// crashOutcome summarises one crash run, for coverage of the test itself.
type crashOutcome struct {
	torn      bool // recovery cut a torn tail
	unsynced  bool // recovery returned records whose Sync never returned
	noWAL     bool // the crash came before Create finished
	corrupt   bool // recovery reported corruption (allowed only with write faults)
	crashedAt int
}

// crashRun runs ops on a fresh MemFS, pulls the plug just before the
// crashAt-th mutating file operation (never, if crashAt is 0 or beyond the
// end, in which case it crashes after the last operation), recovers, and
// checks the recovered state against the model. Then it appends a little
// more to the recovered WAL and checks that a clean reopen sees it, which
// proves the torn tail was cut cleanly.
func crashRun(t failer, ops []walOp, states []walState, crashAt int, faults MemFaults, seed uint64) crashOutcome {
	m := NewMemFS(rand.New(rand.NewPCG(seed, 77)))
	m.Faults = faults
	opts := Options{SegmentSize: 2048}
	count := 0
	crashed := false
	m.Intercept = func(op Op, name string) error {
		if !op.Mutates() {
			return nil
		}
		count++
		if count == crashAt {
			m.Crash()
			crashed = true
			m.Intercept = nil
			return errInjectedCrash
		}
		return nil
	}
	out := crashOutcome{crashedAt: crashAt}
	var res runResult
	w, err := Create(m, testWALDir, opts)
	if err == nil {
		res = runWorkload(w, ops)
		if res.err != nil && !crashed {
			t.Fatalf("workload failed without a crash: %v", res.err)
		}
	} else if !crashed {
		t.Fatalf("Create: %v", err)
	}
	if !crashed {
		m.Intercept = nil
		m.Crash()
	}

	w2, rec, err := Open(m, testWALDir, opts)
	if errors.Is(err, ErrNoWAL) && w == nil {
		out.noWAL = true // Create never returned: nothing was promised
		return out
	}
	// Crashes alone never produce corruption; misdirected or bit-flipped
	// writes may.
	writeFaults := faults.MisdirectProb > 0 || faults.BitFlipProb > 0
	if err != nil && writeFaults && errors.Is(err, ErrCorrupt) {
		out.corrupt = true
		return out
	}
	if err != nil {
		t.Fatalf("crash at op %d (faults %+v): recovery failed: %v", crashAt, faults, err)
	}
	m.Faults = MemFaults{}
	got := stateOf(rec)
	k := matchPrefix(states, got, res.synced, min(res.started, len(states)-1))
	if k < 0 {
		t.Fatalf("crash at op %d (faults %+v): recovered %v, which is not the state after any of records %d..%d (synced %d); last synced state %v",
			crashAt, faults, got, res.synced, res.started, res.synced, states[res.synced])
	}
	out.torn = rec.TornTail != nil
	out.unsynced = k > res.synced

	// The recovered WAL accepts appends, and a clean reopen returns them.
	last := w2.LastIndex()
	term := rec.HardState.Term
	if len(rec.Entries) > 0 {
		term = max(term, rec.Entries[len(rec.Entries)-1].Term)
	}
	more := []core.Entry{{Term: term, Index: last + 1, Data: []byte("after")}, {Term: term, Index: last + 2}}
	must(t, w2.Append(core.HardState{Term: term, Commit: rec.HardState.Commit, Vote: 9}, more))
	must(t, w2.Sync())
	must(t, w2.Close())
	_, rec2, err := Open(m, testWALDir, opts)
	if err != nil {
		t.Fatalf("crash at op %d: reopen after appending: %v", crashAt, err)
	}
	want := got
	want.log = append(append([]core.Entry(nil), got.log...), more...)
	want.hs = core.HardState{Term: term, Commit: rec.HardState.Commit, Vote: 9}
	if g := stateOf(rec2); !g.equal(want) {
		t.Fatalf("crash at op %d: after appending to the recovered WAL got %v, want %v", crashAt, g, want)
	}
	return out
}

// countMutations returns how many mutating file operations a clean run of
// ops performs.
func countMutations(t failer, ops []walOp) int {
	m := NewMemFS(nil)
	n := 0
	m.Intercept = func(op Op, _ string) error {
		if op.Mutates() {
			n++
		}
		return nil
	}
	w, err := Create(m, testWALDir, Options{SegmentSize: 2048})
	must(t, err)
	if res := runWorkload(w, ops); res.err != nil {
		t.Fatal(res.err)
	}
	return n
}

// TestWALCrashAtEveryPoint crashes scripted workloads before every single
// mutating file operation (write, sync, create, rename, remove, directory
// sync), with the crash losing all unsynced data, keeping a random part of
// it, or tearing it.
func TestWALCrashAtEveryPoint(t *testing.T) {
	configs := []MemFaults{
		{},
		{PartialFlush: true},
		{PartialFlush: true, TornWrites: true},
		{TornWrites: true},
	}
	seeds := 4
	if testing.Short() {
		seeds = 1
	}
	var runs, torn, unsynced, noWAL int
	for seed := range uint64(seeds) {
		ops, states := genWorkload(rand.New(rand.NewPCG(seed, 1)), 80)
		total := countMutations(t, ops)
		for crashAt := 1; crashAt <= total+1; crashAt++ {
			for ci, faults := range configs {
				out := crashRun(t, ops, states, crashAt, faults, seed*1000+uint64(crashAt*len(configs)+ci))
				runs++
				if out.torn {
					torn++
				}
				if out.unsynced {
					unsynced++
				}
				if out.noWAL {
					noWAL++
				}
			}
		}
	}
	t.Logf("%d crash runs: %d cut a torn tail, %d recovered unsynced records, %d crashed inside Create", runs, torn, unsynced, noWAL)
	// The test must exercise what it claims to.
	if torn == 0 || unsynced == 0 || noWAL == 0 {
		t.Errorf("crash runs did not cover torn tails (%d), unsynced survivors (%d) and crashes in Create (%d)", torn, unsynced, noWAL)
	}
}

// TestWALCrashRapid crashes random workloads at random points with random
// crash behaviour.
func TestWALCrashRapid(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		seed := rapid.Uint64().Draw(rt, "seed")
		n := rapid.IntRange(1, 60).Draw(rt, "ops")
		ops, states := genWorkload(rand.New(rand.NewPCG(seed, 2)), n)
		faults := MemFaults{
			PartialFlush: rapid.Bool().Draw(rt, "partialFlush"),
			TornWrites:   rapid.Bool().Draw(rt, "tornWrites"),
		}
		crashAt := rapid.IntRange(1, 400).Draw(rt, "crashAt")
		crashRun(rt, ops, states, crashAt, faults, seed)
	})
}

// TestWALCrashWithWriteFaultsRapid adds misdirected and bit-flipped writes
// to random crashes: recovery may now report corruption, but whenever it
// returns a log, that log is one the workload wrote, at least as long as
// what was synced.
func TestWALCrashWithWriteFaultsRapid(t *testing.T) {
	corrupt, clean := 0, 0
	rapid.Check(t, func(rt *rapid.T) {
		seed := rapid.Uint64().Draw(rt, "seed")
		ops, states := genWorkload(rand.New(rand.NewPCG(seed, 4)), rapid.IntRange(1, 60).Draw(rt, "ops"))
		faults := MemFaults{
			PartialFlush:  rapid.Bool().Draw(rt, "partialFlush"),
			TornWrites:    rapid.Bool().Draw(rt, "tornWrites"),
			MisdirectProb: rapid.SampledFrom([]float64{0, 0.01, 0.05}).Draw(rt, "misdirect"),
			BitFlipProb:   rapid.SampledFrom([]float64{0, 0.01, 0.05}).Draw(rt, "bitflip"),
		}
		out := crashRun(rt, ops, states, rapid.IntRange(1, 400).Draw(rt, "crashAt"), faults, seed)
		if out.corrupt {
			corrupt++
		} else {
			clean++
		}
	})
	t.Logf("%d runs reported corruption, %d recovered a valid prefix", corrupt, clean)
}

// TestWALHardStateSurvivesCrash is the vote-twice scenario: a vote made
// durable by Sync is still there after a crash, so the node cannot vote
// for someone else in the same term.
func TestWALHardStateSurvivesCrash(t *testing.T) {
	for seed := range uint64(50) {
		m := NewMemFS(rand.New(rand.NewPCG(seed, 3)))
		m.Faults = MemFaults{PartialFlush: true, TornWrites: true}
		w, err := Create(m, testWALDir, Options{})
		must(t, err)
		must(t, w.Append(core.HardState{Term: 5, Vote: 2}, nil))
		must(t, w.Sync())
		// A later vote in a later term, appended but never synced: the
		// runtime has not sent it, so either outcome is fine.
		must(t, w.Append(core.HardState{Term: 6, Vote: 3}, nil))
		must(t, w.Append(core.HardState{}, []core.Entry{{Term: 6, Index: 1}}))
		m.Crash()
		_, rec, err := Open(m, testWALDir, Options{})
		must(t, err)
		if hs := rec.HardState; hs != (core.HardState{Term: 5, Vote: 2}) && hs != (core.HardState{Term: 6, Vote: 3}) {
			t.Fatalf("seed %d: recovered hard state %+v", seed, hs)
		}
	}
}

func ExampleWAL() {
	fsys := NewMemFS(nil)
	w, _ := Create(fsys, "/node1/wal", Options{})
	// One Ready batch: entries, then the hard state, then one fsync.
	_ = w.Append(core.HardState{Term: 1, Vote: 1, Commit: 1}, []core.Entry{
		{Term: 1, Index: 1, Data: []byte("x=1")},
		{Term: 1, Index: 2, Data: []byte("y=2")},
	})
	_ = w.Sync() // only now may votes and acknowledgements leave the node
	_ = w.Close()

	_, rec, err := Open(fsys, "/node1/wal", Options{})
	fmt.Println(err, rec.HardState, len(rec.Entries))
	// Output: <nil> {1 1 1} 2
}
