package sim

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The simulator runs the server's pipeline, not a sequential copy of it:
// batches overlap (a batch is taken while earlier ones are still being
// persisted or applied), in most seeds.
func TestPipelinesOverlap(t *testing.T) {
	overlapping := 0
	const seeds = 20
	for seed := uint64(1); seed <= seeds; seed++ {
		res := Run(Options{Seed: seed, Duration: 2_000_000})
		if !res.Passed() {
			t.Fatalf("seed %d: %v", seed, res.Err)
		}
		if res.Pipeline.Overlapped > 0 && res.Pipeline.MaxInflight > 1 {
			overlapping++
		}
	}
	if overlapping < seeds*3/4 {
		t.Fatalf("batches overlapped in only %d of %d seeds", overlapping, seeds)
	}
}

// stageFunctions are the replica's pipeline stages (see its package
// comment): both runtimes must call each of them.
var stageFunctions = []string{"Ready", "RunWAL", "RunStore", "Finish", "WriteSnapshot", "SnapshotDone", "SnapshotWritten"}

// The server and the simulator drive the same stage functions of the
// replica package.
func TestServerAndSimulatorRunTheSameStages(t *testing.T) {
	for _, dir := range []string{".", "../server"} {
		used := replicaCalls(t, dir)
		for _, f := range stageFunctions {
			if !used[f] {
				t.Errorf("%s never calls the replica's %s", dir, f)
			}
		}
		if used["Process"] {
			t.Errorf("%s calls Replica.Process, the sequential convenience, instead of the stages", dir)
		}
	}
}

// replicaCalls is the set of method names the non-test Go files of dir call
// or take as values on a field or variable named rep (how both runtimes
// name their *replica.Replica).
func replicaCalls(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.SelectorExpr); ok && x.Sel.Name == "rep" {
				used[sel.Sel.Name] = true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "rep" {
				used[sel.Sel.Name] = true
			}
			return true
		})
	}
	return used
}

// A pause stops the node's work in flight with the rest of its process:
// work paused 400 µs into 1 ms ends 600 µs after the resume, and work a
// pause did not touch ends on time.
func TestPauseStopsTheWorkInFlight(t *testing.T) {
	w, _ := newWorld(Options{Seed: 1, Nodes: 3, Faults: &Faults{MinDelay: 100, MaxDelay: 1000}})
	n := w.nodes[0]
	n.start()
	start := w.clock.now
	paused, untouched := int64(-1), int64(-1)
	n.working(1000, func() { paused = w.clock.now })
	w.clock.after(400, func() { n.paused, n.pausedAt = true, w.clock.now })
	w.clock.after(5400, n.resume)
	w.clock.after(6000, func() { n.working(1000, func() { untouched = w.clock.now }) })
	for w.clock.step(start + 20_000) {
	}
	require.NoError(t, w.err)
	require.Equal(t, start+5400+600, paused)
	require.Equal(t, start+7000, untouched)
}
