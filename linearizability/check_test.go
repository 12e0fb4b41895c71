package linearizability

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSummaryCountsAndVerdict(t *testing.T) {
	h := History{Ops: []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(1, 5, 15, Get("x"), GetFound("a", 1)),
		done(1, 20, 30, Delete("y"), DeleteOK(false)),
		done(0, 20, 30, CAS("x", 1, "b"), CASSucceeded(2)),
		lost(2, 25, Put("x", "c")),
		lost(2, 26, Get("x")),
		{ClientID: 3, Input: Put("x", "d"), Call: 27, Status: Dropped},
	}}
	res := mustCheck(t, h, 0)
	want := "linearizable: 5 ops on 2 keys (put 2, get 1, delete 1, cas 1); " +
		"4 answered, 0 resolved, 1 unknown writes (0 seen to take effect); 1 unknown reads and 1 failed ops left out"
	if got := res.Summary(); got != want {
		t.Errorf("summary\n got: %s\nwant: %s", got, want)
	}

	h.Ops = append(h.Ops, done(3, 40, 50, Get("x"), GetFound("a", 1)))
	res = mustCheck(t, h, 0)
	if !strings.HasPrefix(res.Summary(), "NOT linearizable: ") ||
		!strings.HasSuffix(res.Summary(), "; illegal keys: x") {
		t.Errorf("summary of a failing check: %s", res.Summary())
	}
}

// An unknown write whose value is later seen is pinned before the sighting,
// which keeps the search small; the verdict must not change.
func TestSightingsPinUnknownWrites(t *testing.T) {
	h := History{Ops: []Op{
		lost(0, 0, Put("x", "b")),
		done(1, 10, 20, Get("x"), GetFound("b", 4)),
	}}
	ops, counts := h.operations()
	if counts.Seen != 1 || ops[0].Return != 20 {
		t.Errorf("unknown write seen at 20 returns at %d (seen count %d)", ops[0].Return, counts.Seen)
	}

	// When two writes share a value, a sighting proves nothing about the
	// unknown one: here it must take effect after the sighting.
	shared := History{Ops: []Op{
		lost(0, 0, Put("x", "b")),
		done(1, 50, 60, Put("x", "b"), PutOK(3)),
		done(2, 70, 80, Get("x"), GetFound("b", 3)),
		done(2, 85, 88, Put("x", "c"), PutOK(4)),
		done(2, 90, 100, Get("x"), GetFound("b", 7)),
	}}
	res := mustCheck(t, shared, 0)
	if res.Verdict != Linearizable || res.Counts.Seen != 0 {
		t.Errorf("%s", res.Summary())
	}
}

func TestWriteVisualization(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		ops  []Op
		want Verdict
	}{
		{"ok", linearizableHistories[len(linearizableHistories)/2].ops, Linearizable},
		{"illegal", nonLinearizableHistories[0].ops, NotLinearizable},
	} {
		res := mustCheck(t, History{Ops: c.ops}, 0)
		if res.Verdict != c.want {
			t.Fatalf("%s: %s", c.name, res.Summary())
		}
		path := filepath.Join(dir, c.name+".html")
		if err := res.WriteVisualization(path); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: read visualization: %v", c.name, err)
		}
		// Porcupine embeds the history as JSON, with our descriptions.
		if !strings.Contains(string(data), "<html") || !strings.Contains(string(data), "put(x") {
			t.Errorf("%s: visualization (%d bytes) lacks the page or the operations", c.name, len(data))
		}
	}

	res := mustCheck(t, History{Ops: nonLinearizableHistories[0].ops}, 0)
	if err := res.WriteVisualization(filepath.Join(dir, "missing", "dir", "v.html")); err == nil {
		t.Errorf("writing into a missing directory succeeded")
	}
}

// A check that runs out of time says so rather than passing or failing.
// Rejecting a violation behind many unresolved unknown writes on one key
// takes seconds (see docs/linearizability.md); a millisecond is not enough.
func TestTimeoutGivesTimedOut(t *testing.T) {
	ops := generate(rand.New(rand.NewPCG(1, 1)), genConfig{
		ops: 250, clients: 4, keys: 1, unknownPct: 15, phantomPct: 10,
	})
	h := plainHistory(ops)
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].Input.Kind == OpGet && ops[i].Status == Returned {
			h.Ops[i].Output = GetFound("never-written", 3)
			break
		}
	}
	res := mustCheck(t, h, time.Millisecond)
	if res.Verdict != TimedOut {
		t.Errorf("%s", res.Summary())
	}
	if !strings.Contains(res.Summary(), "timed out") {
		t.Errorf("summary does not say the check timed out: %s", res.Summary())
	}
}

// Same history, same verdict, same summary: the simulator relies on it.
func TestCheckIsRepeatable(t *testing.T) {
	ops := generate(rand.New(rand.NewPCG(7, 7)), genConfig{
		ops: 400, clients: 5, keys: 6, unknownPct: 5, phantomPct: 5, resolvePct: 50,
	})
	h := plainHistory(ops)
	h.Ops = append(h.Ops, done(9, 0, 1, Get("k3"), GetFound("never-written", 1)))
	first := mustCheck(t, h, 0)
	if first.Verdict != NotLinearizable {
		t.Fatalf("%s", first.Summary())
	}
	for range 3 {
		if again := mustCheck(t, h, 0); again.Summary() != first.Summary() {
			t.Fatalf("summaries differ:\n%s\n%s", first.Summary(), again.Summary())
		}
	}
}
