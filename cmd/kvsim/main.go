// Command kvsim runs KeyVal's deterministic simulator: one seed
// (`kvsim -seed 42`, what `make sim SEED=42` runs) or a swarm of seeds in
// parallel (`kvsim -swarm -count 500`; `-membership` runs only seeds whose
// fault model changes the membership). A failing seed leaves its event log
// and Porcupine's HTML visualization in a directory it names, and the swarm
// prints the exact command that replays each failure.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/internal/version"
	"github.com/therealutkarshpriyadarshi/keyval/sim"
)

func main() {
	seed := flag.Uint64("seed", 1, "seed to run")
	nodes := flag.Int("nodes", 0, "cluster size (3 or 5); 0 lets the seed choose")
	duration := flag.Duration("duration", 10*time.Second, "simulated time with faults on")
	out := flag.String("out", filepath.Join(os.TempDir(), "keyval-sim"), "where failing runs leave their event log and visualization")
	vis := flag.Bool("vis", false, "write the visualization and event log for a passing run too")
	swarm := flag.Bool("swarm", false, "run many seeds, starting at -seed")
	count := flag.Int("count", 100, "seeds to run with -swarm")
	budget := flag.Duration("budget", 0, "with -swarm, stop starting new seeds after this wall time (0: no limit)")
	workers := flag.Int("workers", runtime.NumCPU(), "seeds run in parallel with -swarm")
	membership := flag.Bool("membership", false, "with -swarm, run only seeds whose fault model changes the membership (-count of them)")
	authWorkload := flag.Bool("auth", false, "run the auth workload: the clients work as a user whose permissions an administrator revokes and grants")
	repair := flag.Bool("repair", false, "make nodes repair damaged WALs: a minority crash and come back with a bit flipped deep in their WAL, whatever else the seed chose")
	damageAll := flag.Bool("damage-all", false, "crash every member at once now and then, each coming back with one entry of its WAL damaged, no two at the same index")
	goneNotices := flag.Bool("gone-notices", false, "tell the nodes a cleanly crashed node could reach that its process is gone, as the server's transport learns from a refused connection, so its followers forget it and elect a new leader at once")
	slowSnapshots := flag.Bool("slow-snapshots", false, "make every snapshot of a node's own take an extra 10 ms to 1 s (chosen by the seed) to write, so that crashes and a leader's snapshot fall inside one in flight")
	lostWrites := flag.Bool("lost-writes", false, "make a minority of nodes lose synced writes (zeros after a crash, or a file's last write), with the WAL end mark on to find a lost last one, whatever else the seed chose")
	electionTicks := flag.Int("election-ticks", 0, "the election timeout in 10 ms ticks, at least 2 (0: 10, etcd's ratio to the heartbeat; the server's defaults make it 5)")
	etcdWorkload := flag.Bool("etcd", false, "run the etcd workload: multi-key transactions with compares and reads at a revision, checked by revision")
	showVersion := version.AddFlag(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.String("kvsim"))
		return
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "kvsim: unexpected argument %q (kvsim takes only flags; see kvsim -help)\n", flag.Arg(0))
		os.Exit(2)
	}
	if *nodes != 0 && *nodes != 3 && *nodes != 5 {
		fmt.Fprintln(os.Stderr, "kvsim: -nodes must be 3 or 5")
		os.Exit(2)
	}
	if *electionTicks != 0 && *electionTicks < 2 {
		fmt.Fprintf(os.Stderr, "kvsim: -election-ticks must be at least 2 (the heartbeat is one tick), not %d\n", *electionTicks)
		os.Exit(2)
	}
	if *authWorkload && *etcdWorkload {
		fmt.Fprintln(os.Stderr, "kvsim: -auth and -etcd are two workloads; choose one")
		os.Exit(2)
	}
	tuneGC()
	opts := sim.Options{Nodes: *nodes, Duration: duration.Microseconds(), Auth: *authWorkload, Etcd: *etcdWorkload, Repair: *repair, DamageAll: *damageAll, LostWrites: *lostWrites, SlowSnapshots: *slowSnapshots, GoneNotices: *goneNotices, ElectionTicks: *electionTicks}
	if *swarm {
		os.Exit(runSwarm(opts, *seed, *count, *workers, *budget, *out, *membership))
	}
	opts.Seed = *seed
	start := time.Now()
	res := sim.Run(opts)
	wall := time.Since(start)
	fmt.Print(res)
	fmt.Printf("wall time:     %v (%.0fx real time)\n", wall.Round(time.Millisecond), float64(res.SimTime)/float64(wall))
	if !res.Passed() || *vis {
		fmt.Printf("artifacts:     %s\n", writeArtifacts(*out, res))
	}
	if !res.Passed() {
		os.Exit(1)
	}
}

func runSwarm(opts sim.Options, first uint64, count, workers int, budget time.Duration, out string, membershipOnly bool) int {
	start := time.Now()
	seeds := make(chan uint64)
	var mu sync.Mutex
	var failed []string
	ran := 0
	var simTime time.Duration
	var members sim.MemberCounts
	withChanges, repairs, kept, waited, lost, lostEnds := 0, 0, 0, 0, 0, 0
	var halts sim.FaultCounts // only the halts
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range seeds {
				o := opts
				o.Seed = s
				res := sim.Run(o)
				mu.Lock()
				ran++
				simTime += res.SimTime
				members.Add(res.Membership)
				halts.Halts += res.Counts.Halts
				for r, n := range res.Counts.HaltsBy {
					halts.HaltsBy[r] += n
				}
				repairs += res.Counts.Repairs
				kept += res.Counts.Kept
				waited += res.Counts.WaitedBelowFloor
				lost += res.Counts.LostWrites
				lostEnds += res.Counts.LostEnds
				if res.Membership.Committed() > 0 {
					withChanges++
				}
				if !res.Passed() {
					dir := writeArtifacts(out, res)
					failed = append(failed, fmt.Sprintf("%s   # %v (artifacts: %s)", o.Replay(), res.Err, dir))
				}
				mu.Unlock()
			}
		}()
	}
	for s, sent := first, 0; sent < count; s++ {
		if budget > 0 && time.Since(start) > budget {
			break
		}
		if membershipOnly {
			o := opts
			o.Seed = s
			if !sim.FaultModel(o).Membership {
				continue
			}
		}
		seeds <- s
		sent++
	}
	close(seeds)
	wg.Wait()
	wall := time.Since(start)
	fmt.Printf("%d seeds in %v (%.0f seeds/min, %.0fx real time per core), %d failed\n", ran, wall.Round(time.Millisecond),
		float64(ran)/wall.Minutes(), float64(simTime)/float64(wall)/float64(max(workers, 1)), len(failed))
	fmt.Printf("membership changes in %d seeds: %s\n", withChanges, members)
	fmt.Printf("damaged storage: %d nodes repaired their WAL (%d keeping the log), %d halted", repairs, kept, halts.Halts)
	if by := halts.HaltsByReason(); by != "" {
		fmt.Printf(" (%s)", by)
	}
	fmt.Println()
	if lost > 0 {
		fmt.Printf("%d synced writes lost; %d starts found the WAL's last records lost\n", lost, lostEnds)
	}
	if waited > 0 {
		fmt.Printf("%d seeds made no progress after healing: members waited below their vote floors or on holes no one could fill, and no other member could win an election (docs/disk.md, \"Keeping the log\")\n", waited)
	}
	for _, f := range failed {
		fmt.Println(f)
	}
	if len(failed) > 0 {
		return 1
	}
	return 0
}

// writeArtifacts saves a run's event log and Porcupine visualization and
// returns the directory.
func writeArtifacts(out string, res sim.Result) string {
	dir := filepath.Join(out, fmt.Sprintf("seed-%d", res.Seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "(could not write artifacts: " + err.Error() + ")"
	}
	summary := res.String()
	if err := os.WriteFile(filepath.Join(dir, "events.log"), []byte(summary+"\n"+strings.Join(res.Log, "\n")+"\n"), 0o644); err != nil {
		return "(could not write the event log: " + err.Error() + ")"
	}
	if err := res.Check.WriteVisualization(filepath.Join(dir, "history.html")); err != nil {
		return dir + " (no visualization: " + err.Error() + ")"
	}
	return dir
}

// tuneGC lets the garbage collector run less often than Go's default,
// unless GOGC says otherwise: a run allocates mostly short-lived events,
// messages and batches over a small live heap, and collecting at 4× the
// live heap instead of 2× cut the CPU per seed by about a quarter in paired
// runs (docs/sim.md, "Speed"). No run's outcome depends on it.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}
