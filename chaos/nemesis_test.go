package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

func allKinds(t *testing.T) []Nemesis {
	kinds, skipped, err := SelectNemeses("all", true)
	require.NoError(t, err)
	require.Empty(t, skipped)
	return kinds
}

func TestScheduleIsDeterministic(t *testing.T) {
	cfg := ScheduleConfig{Seed: 42, Nodes: 5, Duration: 10 * time.Minute, Kinds: allKinds(t)}
	a, err := PlanSchedule(cfg)
	require.NoError(t, err)
	b, err := PlanSchedule(cfg)
	require.NoError(t, err)
	require.Equal(t, a, b, "the same seed must give the same schedule")
	require.Greater(t, len(a), 30)

	cfg.Seed = 43
	c, err := PlanSchedule(cfg)
	require.NoError(t, err)
	require.NotEqual(t, a, c, "another seed should give another schedule")
}

// Pins the start of one schedule, so that a change in how schedules are
// drawn (which changes what a printed seed reproduces) is noticed.
func TestSchedulePinned(t *testing.T) {
	steps, err := PlanSchedule(ScheduleConfig{Seed: 1, Nodes: 3, Duration: time.Minute, Kinds: allKinds(t)})
	require.NoError(t, err)
	var got []string
	for _, s := range steps {
		got = append(got, fmt.Sprintf("%v %v", s.At, s.Fault))
	}
	// (Adding the membership nemesis, then the corrupt one, then the
	// defrag one, changed every schedule drawn from all.)
	require.Equal(t, []string{
		"3s rolling-restart/graceful n3,n1,n2 hold 604ms",
		"13.767s corrupt/wal-leader leader hold 987ms",
		"19.65s pause/node n2 hold 2.878s",
		"25.447s membership/leader leader",
		"31.621s partition/bridge n3,n1,n2 hold 5.589s",
		"39.696s rolling-restart/crash n1,n3,n2 hold 435ms",
		"48.956s membership/node n1",
	}, got)
}

func TestEveryKindIsScheduled(t *testing.T) {
	for _, n := range []int{3, 5} {
		steps, err := PlanSchedule(ScheduleConfig{Seed: 7, Nodes: n, Duration: 30 * time.Minute, Kinds: allKinds(t)})
		require.NoError(t, err)
		seen := map[string]bool{}
		variants := map[string]bool{}
		for _, s := range steps {
			seen[s.Fault.Kind] = true
			variants[s.Fault.Kind+"/"+s.Fault.Variant] = true
		}
		for _, name := range NemesisNames() {
			require.True(t, seen[name], "%d nodes: %s never scheduled in 30 minutes", n, name)
		}
		for _, v := range []string{"kill/leader", "kill/node", "kill/majority", "pause/leader", "pause/node", "pause/leader-cut-off",
			"partition/isolate", "partition/split", "partition/one-way-out", "partition/one-way-in", "partition/bridge",
			"rolling-restart/graceful", "rolling-restart/crash", "membership/leader", "membership/node"} {
			require.True(t, variants[v], "%d nodes: %s never scheduled in 30 minutes", n, v)
		}
	}
}

// Every schedule, whatever the seed, size, length and kinds, is well formed.
func TestScheduleProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, MaxNetnsNodes).Draw(t, "nodes")
		duration := time.Duration(rapid.IntRange(10, 900).Draw(t, "seconds")) * time.Second
		names := rapid.SliceOfNDistinct(rapid.SampledFrom(NemesisNames()), 1, len(Nemeses), rapid.ID[string]).Draw(t, "kinds")
		kinds, _, err := SelectNemeses(strings.Join(names, ","), true)
		if err != nil {
			t.Fatal(err)
		}
		cfg := ScheduleConfig{Seed: rapid.Int64().Draw(t, "seed"), Nodes: n, Duration: duration, Kinds: kinds}
		steps, err := PlanSchedule(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var last time.Duration
		for i, s := range steps {
			f := s.Fault
			if s.At < 3*time.Second || s.At > duration-5*time.Second || (i > 0 && s.At <= last) {
				t.Fatalf("step %d at %v: outside warm-up/cool-down or not after %v", i, s.At, last)
			}
			last = s.At
			if !slices.Contains(names, f.Kind) {
				t.Fatalf("step %d: kind %s not enabled (%v)", i, f.Kind, names)
			}
			if len(f.Nodes) == 0 {
				t.Fatalf("step %d: no nodes: %v", i, f)
			}
			seen := map[int]bool{}
			for _, x := range f.Nodes {
				if x < 0 || x >= n || seen[x] {
					t.Fatalf("step %d: bad or repeated node %d in %v", i, x, f)
				}
				seen[x] = true
			}
			if f.Hold < 0 || f.Hold > maxPartitionMs*time.Millisecond {
				t.Fatalf("step %d: hold %v", i, f.Hold)
			}
			switch f.Kind + "/" + f.Variant {
			case "kill/majority":
				if len(f.Nodes) <= n/2 {
					t.Fatalf("step %d: majority kill of %d of %d nodes", i, len(f.Nodes), n)
				}
			case "partition/split":
				if 2*len(f.Nodes) >= n {
					t.Fatalf("step %d: split minority of %d of %d nodes", i, len(f.Nodes), n)
				}
			case "partition/bridge", "rolling-restart/graceful", "rolling-restart/crash":
				if len(f.Nodes) != n {
					t.Fatalf("step %d: %v should name every node", i, f)
				}
			}
			if f.Kind == "partition" {
				cuts, err := partitionCuts(f.Variant, f.Nodes, n)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if len(cuts) == 0 && n > 1 {
					t.Fatalf("step %d: partition %v cuts nothing", i, f)
				}
				for _, e := range cuts {
					if e.From == e.To || e.From < 0 || e.To < 0 || e.From >= n || e.To >= n {
						t.Fatalf("step %d: bad cut %v", i, e)
					}
				}
			}
		}
	})
}

func TestPartitionCuts(t *testing.T) {
	edges := func(variant string, nodes []int, n int) string {
		cuts, err := partitionCuts(variant, nodes, n)
		require.NoError(t, err)
		return describeCuts(cuts)
	}
	require.Equal(t, "n1->n2 n2->n1 n1->n3 n3->n1", edges(partIsolate, []int{0}, 3))
	require.Equal(t, "n2->n1 n1->n2 n2->n3 n3->n2 n2->n5 n5->n2 n4->n1 n1->n4 n4->n3 n3->n4 n4->n5 n5->n4",
		edges(partSplit, []int{1, 3}, 5))
	require.Equal(t, "n2->n1 n2->n3", edges(partOneWayOut, []int{1}, 3))
	require.Equal(t, "n1->n2 n3->n2", edges(partOneWayIn, []int{1}, 3))
	// Bridge: n1 | n3 | n2 — n3 in the middle talks to both.
	require.Equal(t, "n1->n2 n2->n1", edges(partBridge, []int{0, 2, 1}, 3))
	// n4,n1 | n5 | n2,n3
	require.Equal(t, "n4->n2 n2->n4 n4->n3 n3->n4 n1->n2 n2->n1 n1->n3 n3->n1", edges(partBridge, []int{3, 0, 4, 1, 2}, 5))

	_, err := partitionCuts("ring", []int{0}, 3)
	require.ErrorContains(t, err, "unknown partition shape")
	_, err = partitionCuts(partBridge, []int{0, 1}, 3)
	require.Error(t, err)
}

func TestSelectNemeses(t *testing.T) {
	kinds, skipped, err := SelectNemeses("all", false)
	require.NoError(t, err)
	require.Equal(t, []string{"partition"}, skipped)
	for _, k := range kinds {
		require.False(t, k.NeedsNetwork)
	}

	kinds, _, err = SelectNemeses(" pause, kill,pause ", true)
	require.NoError(t, err)
	require.Len(t, kinds, 2)
	require.Equal(t, "pause", kinds[0].Name)
	require.Equal(t, "kill", kinds[1].Name)

	_, _, err = SelectNemeses("kill,flood", true)
	require.ErrorContains(t, err, `unknown nemesis "flood"`)

	_, skipped, err = SelectNemeses("partition", false)
	require.Error(t, err, "nothing left to run must be an error, not a run without faults")
	require.Equal(t, []string{"partition"}, skipped)
}

// fakeEnv records what a nemesis does to it.
type fakeEnv struct {
	n      int
	leader int
	mu     sync.Mutex // a nemesis may call from two goroutines (defrag's kill-during)
	calls  []string
}

func (e *fakeEnv) Size() int { return e.n }
func (e *fakeEnv) Leader(context.Context) (int, error) {
	if e.leader < 0 {
		return -1, fmt.Errorf("no leader")
	}
	return e.leader, nil
}
func (e *fakeEnv) record(f string, args ...any) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, fmt.Sprintf(f, args...))
	return nil
}
func (e *fakeEnv) Kill(i int) error                        { return e.record("kill n%d", i+1) }
func (e *fakeEnv) Stop(_ context.Context, i int) error     { return e.record("stop n%d", i+1) }
func (e *fakeEnv) Start(_ context.Context, i int) error    { return e.record("start n%d", i+1) }
func (e *fakeEnv) WaitCaughtUp(context.Context, int) error { return nil }
func (e *fakeEnv) Pause(i int) error                       { return e.record("pause n%d", i+1) }
func (e *fakeEnv) Resume(i int) error                      { return e.record("resume n%d", i+1) }
func (e *fakeEnv) CanPartition() bool                      { return true }
func (e *fakeEnv) Cut(from, to int) error                  { return e.record("cut n%d->n%d", from+1, to+1) }
func (e *fakeEnv) HealNetwork() error                      { return e.record("heal") }
func (e *fakeEnv) Replace(_ context.Context, i int) error  { return e.record("replace n%d", i+1) }
func (e *fakeEnv) Note(string, ...any)                     {}
func (e *fakeEnv) Defragment(_ context.Context, i int) error {
	return e.record("defragment n%d", i+1)
}
func (e *fakeEnv) DamageWAL(i int, at float64) (string, error) {
	return "", e.record("damage n%d at %.2f", i+1, at)
}
func (e *fakeEnv) DamageSnapshots(i int) (string, error) {
	return "", e.record("damage snapshots n%d", i+1)
}

func inject(t *testing.T, env *fakeEnv, f Fault) []string {
	t.Helper()
	kind, ok := NemesisByName(f.Kind)
	require.True(t, ok)
	require.NoError(t, kind.Inject(context.Background(), env, f))
	return env.calls
}

// The corrupt nemesis damages the WAL only while the node is down, and
// restarts it after.
func TestInjectCorruptDamagesAStoppedNode(t *testing.T) {
	env := &fakeEnv{n: 3, leader: 1}
	require.Equal(t, []string{"kill n2", "damage n2 at 0.40", "start n2"},
		inject(t, env, Fault{Kind: "corrupt", Variant: "wal-leader", Nodes: []int{0}, Leader: true, Hold: time.Millisecond, At: 0.4}))
	env = &fakeEnv{n: 3, leader: 1}
	require.Equal(t, []string{"kill n3", "damage snapshots n3", "start n3"},
		inject(t, env, Fault{Kind: "corrupt", Variant: "snapshots-node", Nodes: []int{2}, Hold: time.Millisecond}))
}

// The defrag nemesis defragments the node planned or the leader; killed
// during it, the node is restarted after the kill.
func TestInjectDefrag(t *testing.T) {
	env := &fakeEnv{n: 3, leader: 1}
	require.Equal(t, []string{"defragment n2"},
		inject(t, env, Fault{Kind: "defrag", Variant: defragLeader, Nodes: []int{0}, Leader: true}))
	env = &fakeEnv{n: 3, leader: 1}
	calls := inject(t, env, Fault{Kind: "defrag", Variant: defragKillDuring, Nodes: []int{2}, Hold: time.Millisecond})
	require.ElementsMatch(t, []string{"defragment n3", "kill n3", "start n3"}, calls)
	require.Less(t, slices.Index(calls, "kill n3"), slices.Index(calls, "start n3"))
}

func TestInjectTargetsTheLeader(t *testing.T) {
	// Planned n1 with Leader: the leader at the time (n3) is killed.
	env := &fakeEnv{n: 3, leader: 2}
	require.Equal(t, []string{"kill n3", "start n3"},
		inject(t, env, Fault{Kind: "kill", Variant: "leader", Nodes: []int{0}, Leader: true, Hold: time.Millisecond}))

	// A split with the leader in the minority: the leader takes the first
	// place and the planned first node stays in if the leader was elsewhere.
	env = &fakeEnv{n: 5, leader: 4}
	calls := inject(t, env, Fault{Kind: "partition", Variant: partSplit, Nodes: []int{0, 1}, Leader: true, Hold: time.Millisecond})
	require.Contains(t, calls, "cut n5->n1")
	require.Contains(t, calls, "cut n2->n3")
	require.NotContains(t, calls, "cut n5->n2")
	require.Equal(t, "heal", calls[len(calls)-1])

	// The leader already among the planned nodes is swapped, not doubled.
	require.Equal(t, []int{1, 0}, resolve(context.Background(), &fakeEnv{n: 5, leader: 1}, Fault{Nodes: []int{0, 1}, Leader: true}))
	// No leader: the planned nodes.
	require.Equal(t, []int{0, 1}, resolve(context.Background(), &fakeEnv{n: 5, leader: -1}, Fault{Nodes: []int{0, 1}, Leader: true}))
}

func TestInjectLeavesTheClusterWhole(t *testing.T) {
	env := &fakeEnv{n: 3, leader: 0}
	require.Equal(t, []string{"pause n2", "resume n2"},
		inject(t, env, Fault{Kind: "pause", Variant: "node", Nodes: []int{1}, Hold: time.Millisecond}))

	env = &fakeEnv{n: 3, leader: 0}
	require.Equal(t, []string{"kill n1", "kill n3", "start n1", "start n3"},
		inject(t, env, Fault{Kind: "kill", Variant: "majority", Nodes: []int{0, 2}, Hold: time.Millisecond}))

	env = &fakeEnv{n: 3, leader: 0}
	require.Equal(t, []string{"stop n2", "start n2", "stop n3", "start n3", "stop n1", "start n1"},
		inject(t, env, Fault{Kind: "rolling-restart", Variant: "graceful", Nodes: []int{1, 2, 0}}))

	env = &fakeEnv{n: 3, leader: 0}
	require.Equal(t, []string{"kill n1", "start n1", "kill n2", "start n2", "kill n3", "start n3"},
		inject(t, env, Fault{Kind: "rolling-restart", Variant: "crash", Nodes: []int{0, 1, 2}}))

	env = &fakeEnv{n: 3, leader: 2}
	require.Equal(t, []string{"cut n3->n1", "cut n1->n3", "cut n3->n2", "cut n2->n3", "pause n3", "resume n3", "heal"},
		inject(t, env, Fault{Kind: "pause", Variant: pauseLeaderCutOff, Nodes: []int{0}, Leader: true, Hold: time.Millisecond}))

	env = &fakeEnv{n: 3, leader: 0}
	require.Equal(t, []string{"cut n3->n1", "cut n3->n2", "heal"},
		inject(t, env, Fault{Kind: "partition", Variant: partOneWayOut, Nodes: []int{2}, Hold: time.Millisecond}))
}

func TestInjectStopsWhenCancelled(t *testing.T) {
	env := &fakeEnv{n: 3, leader: 0}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	kind, _ := NemesisByName("pause")
	err := kind.Inject(ctx, env, Fault{Kind: "pause", Variant: "node", Nodes: []int{1}, Hold: time.Hour})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, []string{"pause n2"}, env.calls, "the run heals what a cancelled fault left")
}

func TestInjectMembership(t *testing.T) {
	// The leader variant replaces whoever leads when the fault starts.
	env := &fakeEnv{n: 3, leader: 2}
	require.Equal(t, []string{"replace n3"},
		inject(t, env, Fault{Kind: "membership", Variant: memberLeader, Nodes: []int{0}, Leader: true}))
	// No leader to be found: the planned node.
	env = &fakeEnv{n: 3, leader: -1}
	require.Equal(t, []string{"replace n1"},
		inject(t, env, Fault{Kind: "membership", Variant: memberLeader, Nodes: []int{0}, Leader: true}))
	// The node variant replaces the planned node, leader or not.
	env = &fakeEnv{n: 5, leader: 1}
	require.Equal(t, []string{"replace n2"},
		inject(t, env, Fault{Kind: "membership", Variant: memberNode, Nodes: []int{1}}))
	// A one-node cluster has nobody to keep the data while its only
	// member is replaced: nothing is done.
	env = &fakeEnv{n: 1, leader: 0}
	require.Empty(t, inject(t, env, Fault{Kind: "membership", Variant: memberNode, Nodes: []int{0}}))
}

func TestPlanMembership(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, MaxNetnsNodes).Draw(t, "nodes")
		seed := rapid.Uint64().Draw(t, "seed")
		f := planMembership(rand.New(rand.NewPCG(seed, 1)), n)
		if f.Kind != "membership" || len(f.Nodes) != 1 || f.Nodes[0] < 0 || f.Nodes[0] >= n {
			t.Fatalf("bad fault %+v for %d nodes", f, n)
		}
		if (f.Variant == memberLeader) != f.Leader || (f.Variant != memberLeader && f.Variant != memberNode) {
			t.Fatalf("variant %q with Leader %v", f.Variant, f.Leader)
		}
		if again := planMembership(rand.New(rand.NewPCG(seed, 1)), n); !reflect.DeepEqual(f, again) {
			t.Fatalf("the same seed planned %v, then %v", f, again)
		}
	})
}
