package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Env is what a nemesis acts on: the running cluster. Nodes are indexes
// 0..Size()-1: hosts, each with its own addresses. Node i starts with Raft
// id i+1; Replace gives it a new one, and every method follows the node's
// current id.
type Env interface {
	Size() int
	// Leader returns the node that leads now, waiting a few seconds for
	// one if there is none.
	Leader(ctx context.Context) (int, error)
	// Kill sends SIGKILL and waits for the process to be gone.
	Kill(i int) error
	// Stop sends SIGTERM and waits for a clean exit.
	Stop(ctx context.Context, i int) error
	// Start starts a stopped node and waits until it answers.
	Start(ctx context.Context, i int) error
	// WaitCaughtUp waits until node i has applied what the leader had
	// committed when the wait began.
	WaitCaughtUp(ctx context.Context, i int) error
	// Pause and Resume send SIGSTOP and SIGCONT.
	Pause(i int) error
	Resume(i int) error
	// CanPartition says whether Cut works here (members in their own
	// network namespaces).
	CanPartition() bool
	// Cut drops every packet node from sends to node to (one direction).
	Cut(from, to int) error
	// HealNetwork removes every cut.
	HealNetwork() error
	// Replace swaps node i's member for a new one on the same host: its
	// Raft id is removed (the process must exit by itself), its data wiped,
	// a new id added as a learner at the same address, started with --join,
	// caught up and promoted. It returns when the cluster has as many
	// voters as before.
	Replace(ctx context.Context, i int) error
	// DamageWAL flips one bit of stopped node i's oldest WAL segment, at
	// fraction at of its length, and says where.
	DamageWAL(i int, at float64) (string, error)
	// DamageSnapshots zeroes both meta pages of stopped node i's state.db
	// and flips one bit in the middle of each of its snapshot files, and
	// says how many it damaged.
	DamageSnapshots(i int) (string, error)
	// Defragment asks node i, through etcd's Maintenance API, to rewrite
	// its state database into a new file.
	Defragment(ctx context.Context, i int) error
	// Note records an event for the log and the report.
	Note(format string, args ...any)
}

// Fault is one planned fault: what to break, where and for how long. It is
// plain data, drawn from the seed before the run starts, so a schedule can
// be printed, compared and tested. Nodes are indexes; when Leader is set,
// Nodes[0] stands for whichever node leads when the fault starts (the
// planned index is used if no leader can be found).
type Fault struct {
	Kind    string        `json:"kind"`
	Variant string        `json:"variant"`
	Nodes   []int         `json:"nodes"`
	Leader  bool          `json:"leader,omitempty"`
	Hold    time.Duration `json:"hold"`
	// At is, for corrupt, where in the WAL segment the bit is flipped, as a
	// fraction of its length.
	At float64 `json:"at,omitempty"`
}

func (f Fault) String() string {
	who := nodeNames(f.Nodes)
	if f.Leader && len(f.Nodes) > 0 {
		// The leader is only known when the fault starts.
		who = strings.Join(append([]string{"leader"}, strings.Split(nodeNames(f.Nodes[1:]), ",")...), ",")
		who = strings.TrimSuffix(who, ",")
	}
	if f.Hold == 0 {
		return fmt.Sprintf("%s/%s %s", f.Kind, f.Variant, who)
	}
	return fmt.Sprintf("%s/%s %s hold %v", f.Kind, f.Variant, who, f.Hold.Round(time.Millisecond))
}

// Step is one fault of a schedule and the earliest time, from the start of
// the run, at which it begins. Faults run one after another: if the one
// before overran, a step starts late.
type Step struct {
	At    time.Duration `json:"at"`
	Fault Fault         `json:"fault"`
}

// Nemesis is one kind of fault. Adding a kind is adding one entry to
// Nemeses: its name, whether it needs the network control of namespaces,
// how a seed plans one, and how it is carried out.
type Nemesis struct {
	Name string
	// Doc is one line for --help and the report.
	Doc string
	// NeedsNetwork: only where members have their own network namespaces.
	NeedsNetwork bool
	// Plan draws one fault for a cluster of n nodes. It may use nothing but
	// rng, so that a seed always gives the same schedule.
	Plan func(rng *rand.Rand, n int) Fault
	// Takes estimates how long f keeps the cluster busy, for spacing the
	// schedule; nil means f.Hold.
	Takes func(f Fault, n int) time.Duration
	// Inject carries f out on env and, when it returns without error,
	// leaves the cluster whole again (every node running, network healed).
	// If ctx ends first it returns ctx's error and may leave the fault in
	// place; the run heals or tears down afterwards.
	Inject func(ctx context.Context, env Env, f Fault) error
}

// Nemeses lists every kind of fault, in the order --nemeses=all names them.
var Nemeses = []Nemesis{
	{
		Name: "kill",
		Doc:  "kill -9 one node, the leader, or a majority at once; restart after 0.5-5s",
		Plan: planKill, Inject: injectKill,
	},
	{
		Name: "pause",
		Doc:  "SIGSTOP the leader or another node for 50-200ms or 1-5s, then SIGCONT; or cut the leader off, pause it, wake it still cut off (it believes it leads: the stale-read trap), then heal",
		Plan: planPause, Inject: injectPause,
	},
	{
		Name: "partition", NeedsNetwork: true,
		Doc:  "cut the network for 1-8s: one node or the leader isolated, majority/minority, one-way, or a bridge",
		Plan: planPartition, Inject: injectPartition,
	},
	{
		Name:   "rolling-restart",
		Doc:    "restart every node in turn (SIGTERM or kill -9), each caught up before the next",
		Plan:   planRollingRestart,
		Takes:  func(f Fault, n int) time.Duration { return time.Duration(n) * (2*time.Second + f.Hold) },
		Inject: injectRollingRestart,
	},
	{
		Name: "membership",
		Doc:  "replace the leader or another node by a new member on the same host: remove its id (it must exit by itself), wipe its data, add a new id as a learner, start it with --join, promote it once caught up",
		Plan: planMembership,
		// Removal, the removed member's exit (a second after the removal),
		// the join and the catch-up.
		Takes:  func(Fault, int) time.Duration { return 5 * time.Second },
		Inject: injectMembership,
	},
	{
		Name: "corrupt",
		Doc:  "kill -9 the leader or another node, flip one bit in the middle of its WAL, restart it after 0.5-3s: it must repair the damage from the others and catch up",
		Plan: planCorrupt,
		// The restart, the repair and fetching the log again.
		Takes:  func(f Fault, _ int) time.Duration { return 3*time.Second + f.Hold },
		Inject: injectCorrupt,
	},
	{
		Name:   "defrag",
		Doc:    "defragment the leader or another node while the clients write (etcd's Defragment: its state database rewritten into a new file that replaces the old one); or kill -9 it 0-15ms into the defragmentation (a small state takes about 10ms), restart it and wait until it has caught up",
		Plan:   planDefrag,
		Takes:  func(f Fault, _ int) time.Duration { return 2*time.Second + f.Hold },
		Inject: injectDefrag,
	},
}

// NemesisNames lists the names of every kind.
func NemesisNames() []string {
	names := make([]string, len(Nemeses))
	for i, k := range Nemeses {
		names[i] = k.Name
	}
	return names
}

// SelectNemeses parses a --nemeses value: "all" or a comma-separated list
// of names. Kinds that need network control are left out when canPartition
// is false and returned in skipped, so the caller can say so.
func SelectNemeses(spec string, canPartition bool) (chosen []Nemesis, skipped []string, err error) {
	spec = strings.TrimSpace(spec)
	var names []string
	if spec == "" || spec == "all" {
		names = NemesisNames()
	} else {
		for _, name := range strings.Split(spec, ",") {
			if name = strings.TrimSpace(name); name != "" && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	for _, name := range names {
		i := slices.IndexFunc(Nemeses, func(k Nemesis) bool { return k.Name == name })
		if i < 0 {
			return nil, nil, fmt.Errorf("unknown nemesis %q: want all or a comma-separated list of %s", name, strings.Join(NemesisNames(), ", "))
		}
		if Nemeses[i].NeedsNetwork && !canPartition {
			skipped = append(skipped, name)
			continue
		}
		chosen = append(chosen, Nemeses[i])
	}
	if len(chosen) == 0 {
		return nil, skipped, fmt.Errorf("no nemesis left to run from %q (skipped for lack of network namespaces: %s)", spec, strings.Join(skipped, ", "))
	}
	return chosen, skipped, nil
}

// ScheduleConfig says what a schedule is drawn from. The same values always
// give the same schedule.
type ScheduleConfig struct {
	Seed     int64
	Nodes    int
	Duration time.Duration
	Kinds    []Nemesis
	// Warmup: no fault before this (clients get going first). Default 3s.
	Warmup time.Duration
	// Cooldown: no fault starts later than Duration-Cooldown. Default 5s.
	Cooldown time.Duration
	// MinGap, MaxGap bound the quiet time after each fault. Default 1-3s.
	MinGap, MaxGap time.Duration
}

// PlanSchedule draws the faults of a run from cfg.Seed: a kind at random
// among cfg.Kinds, its parameters from the kind's Plan, then a quiet gap,
// until the cooldown before the end.
func PlanSchedule(cfg ScheduleConfig) ([]Step, error) {
	if cfg.Nodes < 1 {
		return nil, fmt.Errorf("plan schedule: %d nodes", cfg.Nodes)
	}
	if len(cfg.Kinds) == 0 {
		return nil, fmt.Errorf("plan schedule: no nemesis kinds")
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = 3 * time.Second
	}
	if cfg.Cooldown == 0 {
		cfg.Cooldown = 5 * time.Second
	}
	if cfg.MinGap == 0 {
		cfg.MinGap = time.Second
	}
	if cfg.MaxGap < cfg.MinGap {
		cfg.MaxGap = max(3*time.Second, cfg.MinGap)
	}
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6e656d65736973)) // "nemesis"
	var steps []Step
	for at := cfg.Warmup; at <= cfg.Duration-cfg.Cooldown; {
		kind := cfg.Kinds[rng.IntN(len(cfg.Kinds))]
		f := kind.Plan(rng, cfg.Nodes)
		steps = append(steps, Step{At: at, Fault: f})
		takes := f.Hold
		if kind.Takes != nil {
			takes = kind.Takes(f, cfg.Nodes)
		}
		at += takes + between(rng, cfg.MinGap, cfg.MaxGap)
	}
	return steps, nil
}

// NemesisByName finds a kind.
func NemesisByName(name string) (Nemesis, bool) {
	i := slices.IndexFunc(Nemeses, func(k Nemesis) bool { return k.Name == name })
	if i < 0 {
		return Nemesis{}, false
	}
	return Nemeses[i], true
}

// between draws a duration in [lo, hi], in whole milliseconds.
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	ms := int64((hi - lo) / time.Millisecond)
	return lo + time.Duration(rng.Int64N(ms+1))*time.Millisecond
}

// someNodes draws k distinct nodes of n, in random order.
func someNodes(rng *rand.Rand, n, k int) []int {
	return rng.Perm(n)[:k]
}

func planKill(rng *rand.Rand, n int) Fault {
	f := Fault{Kind: "kill", Hold: between(rng, 500*time.Millisecond, 5*time.Second)}
	switch r := rng.IntN(10); {
	case r < 4:
		f.Variant, f.Leader, f.Nodes = "leader", true, someNodes(rng, n, 1)
	case r < 8:
		f.Variant, f.Nodes = "node", someNodes(rng, n, 1)
	default:
		f.Variant, f.Nodes = "majority", someNodes(rng, n, n/2+1)
	}
	return f
}

func injectKill(ctx context.Context, env Env, f Fault) error {
	nodes := resolve(ctx, env, f)
	for _, i := range nodes {
		if err := env.Kill(i); err != nil {
			return err
		}
	}
	env.Note("kill -9 %s; restart in %v", nodeNames(nodes), f.Hold.Round(time.Millisecond))
	if err := hold(ctx, f.Hold); err != nil {
		return err
	}
	for _, i := range nodes {
		if err := env.Start(ctx, i); err != nil {
			return err
		}
	}
	env.Note("restarted %s", nodeNames(nodes))
	return nil
}

// Corrupt variants.
const (
	corruptWALNode    = "wal-node"
	corruptWALLeader  = "wal-leader"
	corruptSnapshotDB = "snapshots-node"
)

func planCorrupt(rng *rand.Rand, n int) Fault {
	f := Fault{Kind: "corrupt", Variant: corruptWALNode, Nodes: someNodes(rng, n, 1),
		Hold: between(rng, 500*time.Millisecond, 3*time.Second), At: 0.25 + rng.Float64()/2}
	switch rng.IntN(3) {
	case 0:
		f.Variant, f.Leader = corruptWALLeader, true
	case 1:
		f.Variant, f.At = corruptSnapshotDB, 0
	}
	return f
}

// injectCorrupt damages a node's files while it is down: a record in the
// middle of its log (the records after it are intact), or its state.db and
// every snapshot file (its WAL is whole, but its state machine cannot be
// rebuilt from its own files once snapshots have compacted the log). Either
// way the node must repair itself from the others (docs/disk.md, "Repair
// from peers"): if it refuses to start instead, the start fails and so
// does the run.
func injectCorrupt(ctx context.Context, env Env, f Fault) error {
	i := resolve(ctx, env, f)[0]
	if err := env.Kill(i); err != nil {
		return err
	}
	what, damage := "its WAL", func() (string, error) { return env.DamageWAL(i, f.At) }
	if f.Variant == corruptSnapshotDB {
		what, damage = "its state.db and snapshot files", func() (string, error) { return env.DamageSnapshots(i) }
	}
	where, err := damage()
	if err != nil {
		return err
	}
	env.Note("kill -9 %s, damaged %s (%s); restart in %v", nodeName(i), what, where, f.Hold.Round(time.Millisecond))
	if err := hold(ctx, f.Hold); err != nil {
		return err
	}
	if err := env.Start(ctx, i); err != nil {
		return fmt.Errorf("restart %s after damaging %s: %w", nodeName(i), what, err)
	}
	if err := env.WaitCaughtUp(ctx, i); err != nil {
		return err
	}
	env.Note("%s started with damaged %s, repaired and caught up", nodeName(i), what)
	return nil
}

// Defrag variants.
const (
	defragNode       = "node"
	defragLeader     = "leader"
	defragKillDuring = "kill-during"
)

func planDefrag(rng *rand.Rand, n int) Fault {
	f := Fault{Kind: "defrag", Variant: defragNode, Nodes: someNodes(rng, n, 1)}
	switch rng.IntN(3) {
	case 0:
		f.Variant, f.Leader = defragLeader, true
	case 1:
		f.Variant, f.Hold = defragKillDuring, between(rng, 0, 15*time.Millisecond)
	}
	return f
}

// injectDefrag defragments a node while the clients go on: the member
// applies nothing meanwhile and swaps its state database for a new file,
// which must lose nothing and serve on. kill-during kills the node f.Hold
// into the defragmentation (it may or may not have finished): whichever
// file the restart finds must be whole, the other's leftovers removed.
func injectDefrag(ctx context.Context, env Env, f Fault) error {
	i := resolve(ctx, env, f)[0]
	if f.Variant != defragKillDuring {
		if err := env.Defragment(ctx, i); err != nil {
			return err
		}
		env.Note("defragmented %s", nodeName(i))
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- env.Defragment(ctx, i) }()
	if err := hold(ctx, f.Hold); err != nil {
		return err
	}
	if err := env.Kill(i); err != nil {
		return err
	}
	outcome := "it had finished"
	if err := <-done; err != nil {
		outcome = "it had not finished: " + err.Error()
	}
	env.Note("kill -9 %s %v into its defragmentation (%s)", nodeName(i), f.Hold.Round(time.Millisecond), outcome)
	if err := env.Start(ctx, i); err != nil {
		return fmt.Errorf("restart %s killed while defragmenting: %w", nodeName(i), err)
	}
	if err := env.WaitCaughtUp(ctx, i); err != nil {
		return err
	}
	env.Note("%s restarted and caught up", nodeName(i))
	return nil
}

// Pause variants.
const (
	pauseNode   = "node"
	pauseLeader = "leader"
	// pauseLeaderCutOff: the leader is cut off from the others, paused
	// while the others elect a new leader and commit, then woken while
	// still cut off. It has heard of no new term, and its clock stood
	// still, so for up to an election timeout it believes it leads: a
	// read it answers without confirming leadership with a majority is
	// stale. Where the network cannot be cut this is a plain leader pause.
	pauseLeaderCutOff = "leader-cut-off"
)

func planPause(rng *rand.Rand, n int) Fault {
	f := Fault{Kind: "pause", Nodes: someNodes(rng, n, 1), Variant: pauseNode}
	switch rng.IntN(3) {
	case 1:
		f.Variant, f.Leader = pauseLeader, true
	case 2:
		f.Variant, f.Leader = pauseLeaderCutOff, true
		f.Hold = between(rng, 1500*time.Millisecond, 5*time.Second)
		return f
	}
	// Mostly long enough for the others to elect a new leader (the paused
	// node then wakes up believing it still leads), sometimes shorter than
	// an election timeout (a GC-like stall nobody should notice).
	if rng.IntN(4) == 0 {
		f.Hold = between(rng, 50*time.Millisecond, 200*time.Millisecond)
	} else {
		f.Hold = between(rng, time.Second, 5*time.Second)
	}
	return f
}

func injectPause(ctx context.Context, env Env, f Fault) error {
	i := resolve(ctx, env, f)[0]
	if f.Variant == pauseLeaderCutOff && env.CanPartition() {
		return pauseCutOff(ctx, env, i, f.Hold)
	}
	if err := env.Pause(i); err != nil {
		return err
	}
	env.Note("SIGSTOP %s for %v", nodeName(i), f.Hold.Round(time.Millisecond))
	if err := hold(ctx, f.Hold); err != nil {
		return err
	}
	if err := env.Resume(i); err != nil {
		return err
	}
	env.Note("SIGCONT %s", nodeName(i))
	return nil
}

// pauseCutOff isolates node i, keeps it paused for two thirds of d and
// awake but still isolated for the last third, then heals.
func pauseCutOff(ctx context.Context, env Env, i int, d time.Duration) error {
	cuts, err := partitionCuts(partIsolate, []int{i}, env.Size())
	if err != nil {
		return err
	}
	for _, e := range cuts {
		if err := env.Cut(e.From, e.To); err != nil {
			return err
		}
	}
	if err := env.Pause(i); err != nil {
		return err
	}
	asleep := d * 2 / 3
	env.Note("cut %s off and SIGSTOP it for %v", nodeName(i), asleep.Round(time.Millisecond))
	if err := hold(ctx, asleep); err != nil {
		return err
	}
	if err := env.Resume(i); err != nil {
		return err
	}
	env.Note("SIGCONT %s, still cut off for %v", nodeName(i), (d - asleep).Round(time.Millisecond))
	if err := hold(ctx, d-asleep); err != nil {
		return err
	}
	if err := env.HealNetwork(); err != nil {
		return err
	}
	env.Note("network healed")
	return nil
}

// Partition shapes (Fault.Variant of a partition).
const (
	partIsolate    = "isolate"     // Nodes[0] cut off from all others, both ways
	partSplit      = "split"       // Nodes (a minority) cut off from the rest, both ways
	partOneWayOut  = "one-way-out" // Nodes[0] can receive from the others but not send to them
	partOneWayIn   = "one-way-in"  // Nodes[0] can send to the others but not receive from them
	partBridge     = "bridge"      // Nodes is every node: two halves that cannot talk, except through the middle one
	maxPartitionMs = 8000
)

func planPartition(rng *rand.Rand, n int) Fault {
	f := Fault{Kind: "partition", Hold: between(rng, time.Second, maxPartitionMs*time.Millisecond)}
	if n < 3 {
		f.Variant, f.Nodes, f.Leader = partIsolate, someNodes(rng, n, 1), rng.IntN(2) == 0
		return f
	}
	switch r := rng.IntN(6); r {
	case 0, 1:
		f.Variant, f.Nodes, f.Leader = partIsolate, someNodes(rng, n, 1), r == 1
	case 2:
		f.Variant, f.Nodes, f.Leader = partSplit, someNodes(rng, n, (n-1)/2), rng.IntN(2) == 0
	case 3:
		f.Variant, f.Nodes, f.Leader = partOneWayOut, someNodes(rng, n, 1), rng.IntN(2) == 0
	case 4:
		f.Variant, f.Nodes, f.Leader = partOneWayIn, someNodes(rng, n, 1), rng.IntN(2) == 0
	default:
		f.Variant, f.Nodes = partBridge, rng.Perm(n)
	}
	return f
}

// Edge is one direction of traffic between two nodes.
type Edge struct{ From, To int }

// partitionCuts lists the directed edges a partition shape cuts, given the
// resolved nodes of the fault, in a fixed order.
func partitionCuts(variant string, nodes []int, n int) ([]Edge, error) {
	in := func(set []int, x int) bool { return slices.Contains(set, x) }
	var cuts []Edge
	both := func(a, b int) { cuts = append(cuts, Edge{a, b}, Edge{b, a}) }
	switch variant {
	case partIsolate, partSplit:
		for _, a := range nodes {
			for b := 0; b < n; b++ {
				if !in(nodes, b) {
					both(a, b)
				}
			}
		}
	case partOneWayOut, partOneWayIn:
		for b := 0; b < n; b++ {
			if b == nodes[0] {
				continue
			}
			if variant == partOneWayOut {
				cuts = append(cuts, Edge{nodes[0], b})
			} else {
				cuts = append(cuts, Edge{b, nodes[0]})
			}
		}
	case partBridge:
		if len(nodes) != n || n < 3 {
			return nil, fmt.Errorf("bridge partition needs every node of at least 3, got %v of %d", nodes, n)
		}
		mid := n / 2
		for _, a := range nodes[:mid] {
			for _, b := range nodes[mid+1:] {
				both(a, b)
			}
		}
	default:
		return nil, fmt.Errorf("unknown partition shape %q", variant)
	}
	return cuts, nil
}

func injectPartition(ctx context.Context, env Env, f Fault) error {
	nodes := resolve(ctx, env, f)
	cuts, err := partitionCuts(f.Variant, nodes, env.Size())
	if err != nil {
		return err
	}
	for _, e := range cuts {
		if err := env.Cut(e.From, e.To); err != nil {
			return err
		}
	}
	env.Note("partition %s %s: cut %s for %v", f.Variant, nodeNames(nodes), describeCuts(cuts), f.Hold.Round(time.Millisecond))
	if err := hold(ctx, f.Hold); err != nil {
		return err
	}
	if err := env.HealNetwork(); err != nil {
		return err
	}
	env.Note("network healed")
	return nil
}

func planRollingRestart(rng *rand.Rand, n int) Fault {
	f := Fault{Kind: "rolling-restart", Variant: "graceful", Nodes: rng.Perm(n), Hold: between(rng, 0, time.Second)}
	if rng.IntN(2) == 0 {
		f.Variant = "crash"
	}
	return f
}

func injectRollingRestart(ctx context.Context, env Env, f Fault) error {
	env.Note("rolling restart (%s) in the order %s", f.Variant, nodeNames(f.Nodes))
	for _, i := range f.Nodes {
		var err error
		if f.Variant == "crash" {
			err = env.Kill(i)
		} else {
			err = env.Stop(ctx, i)
		}
		if err != nil {
			return err
		}
		if err := env.Start(ctx, i); err != nil {
			return err
		}
		if err := env.WaitCaughtUp(ctx, i); err != nil {
			return err
		}
		env.Note("%s restarted and caught up", nodeName(i))
		if err := hold(ctx, f.Hold); err != nil {
			return err
		}
	}
	return nil
}

// Membership variants: which member is replaced.
const (
	memberLeader = "leader" // whoever leads when the fault starts
	memberNode   = "node"   // the planned node, leader or not
)

func planMembership(rng *rand.Rand, n int) Fault {
	f := Fault{Kind: "membership", Variant: memberNode, Nodes: someNodes(rng, n, 1)}
	if rng.IntN(2) == 0 {
		f.Variant, f.Leader = memberLeader, true
	}
	return f
}

func injectMembership(ctx context.Context, env Env, f Fault) error {
	if env.Size() < 2 {
		// Removing the only voter would leave no cluster to add to.
		env.Note("membership: a one-node cluster cannot replace its only member; skipped")
		return nil
	}
	return env.Replace(ctx, resolve(ctx, env, f)[0])
}

// resolve returns the fault's nodes with the current leader first when the
// fault targets the leader.
func resolve(ctx context.Context, env Env, f Fault) []int {
	nodes := slices.Clone(f.Nodes)
	if !f.Leader || len(nodes) == 0 {
		return nodes
	}
	lead, err := env.Leader(ctx)
	if err != nil {
		env.Note("no leader found (%v); targeting the planned %s instead", err, nodeName(nodes[0]))
		return nodes
	}
	if j := slices.Index(nodes, lead); j >= 0 {
		nodes[0], nodes[j] = nodes[j], nodes[0]
	} else {
		nodes[0] = lead
	}
	return nodes
}

// hold waits d, or less if ctx ends.
func hold(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func nodeName(i int) string { return fmt.Sprintf("n%d", i+1) }

func nodeNames(nodes []int) string {
	names := make([]string, len(nodes))
	for j, i := range nodes {
		names[j] = nodeName(i)
	}
	return strings.Join(names, ",")
}

func describeCuts(cuts []Edge) string {
	parts := make([]string, len(cuts))
	for j, e := range cuts {
		parts[j] = nodeName(e.From) + "->" + nodeName(e.To)
	}
	return strings.Join(parts, " ")
}
