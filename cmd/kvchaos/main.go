// Command kvchaos runs the chaos test of package chaos against real keyvald
// processes: a cluster in network namespaces (as root) or on 127.0.0.1,
// concurrent clients, a seeded schedule of faults, then the verdicts. It
// exits 0 if the run passed, 1 if it found a violation, 2 if the harness
// itself failed and 130 if interrupted; in every case it has removed the
// processes and network objects it made. See docs/chaos.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/chaos"
	"github.com/therealutkarshpriyadarshi/keyval/internal/version"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

const (
	exitPass        = 0
	exitViolation   = 1
	exitHarness     = 2
	exitInterrupted = 130
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) (code int) {
	fs := flag.NewFlagSet("kvchaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `kvchaos runs a KeyVal cluster of real keyvald processes under faults, with
concurrent clients, and checks that every answer was linearizable and no
acknowledged write was lost. As root each member gets its own network
namespace on bridge %s (%s), so partitions can be run; otherwise the
members run on 127.0.0.1 and partitions are skipped.

  kvchaos --duration 2m --nodes 3 --seed 42 --nemeses all

Nemeses (--nemeses all, or a comma-separated list):
`, "kvchaos0", chaos.Subnet)
		for _, k := range chaos.Nemeses {
			fmt.Fprintf(stderr, "  %-16s %s\n", k.Name, k.Doc)
		}
		fmt.Fprintf(stderr, "\nExit status: 0 pass, 1 violation found, 2 harness failure, 130 interrupted.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var cfg chaos.Config
	fs.DurationVar(&cfg.Duration, "duration", 2*time.Minute, "how long faults are injected (at least 10s)")
	fs.IntVar(&cfg.Nodes, "nodes", 3, "cluster size (3 or 5)")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the fault schedule and the clients' choices (0: pick one from the clock and print it)")
	fs.StringVar(&cfg.Nemeses, "nemeses", "all", "faults to inject: all, or a comma-separated list of "+strings.Join(chaos.NemesisNames(), ","))
	fs.StringVar(&cfg.OutDir, "out", "", "directory for the report, history, visualization, node logs and data (default: a new directory under "+filepath.Join(os.TempDir(), "kvchaos-runs")+")")
	fs.StringVar(&cfg.Keyvald, "keyvald", "bin/keyvald", "the keyvald binary to test")
	fs.IntVar(&cfg.Clients, "clients", 5, "client workers doing put, get, delete and CAS")
	fs.BoolVar(&cfg.PinnedReaders, "pinned-readers", true, "also one reader per node that only ever asks that node")
	fs.IntVar(&cfg.Keys, "keys", 8, "size of the key space")
	fs.DurationVar(&cfg.Think, "think", 10*time.Millisecond, "pause between one client's operations (keeps CPU use moderate)")
	fs.Uint64Var(&cfg.SnapshotInterval, "snapshot-interval", 0, "keyvald --snapshot-interval (0: the seed chooses 1000, so lagging members catch up by snapshot, or 100000, so they catch up from the log)")
	fs.Uint64Var(&cfg.CatchUpEntries, "snapshot-catchup-entries", 0, "keyvald --snapshot-catchup-entries (0: the seed chooses; with snapshots every 100000, half the seeds cut the in-memory log to 500 entries, so that members gone while more was written catch up by a snapshot taken for them)")
	fs.BoolVar(&cfg.Loopback, "loopback", false, "run on 127.0.0.1 even as root (no partitions)")
	fs.DurationVar(&cfg.CheckTimeout, "check-timeout", 2*time.Minute, "bound on each linearizability search (a failing history is searched twice); running out fails the run")
	fs.BoolVar(&cfg.KeepData, "keep-data", false, "keep the members' data directories after a passing run (always kept after a failure)")
	cleanup := fs.Bool("cleanup", false, "only remove what a crashed earlier run left behind (processes, namespaces, links), then exit")
	recheck := fs.String("recheck", "", "only check a saved history.json for linearizability again and write its visualization beside it, then exit")
	showVersion := version.AddFlag(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitPass
		}
		return exitHarness
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("kvchaos"))
		return exitPass
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvchaos: unexpected arguments %q\n", fs.Args())
		return exitHarness
	}

	if *cleanup {
		removed, err := chaos.Cleanup()
		for _, r := range removed {
			fmt.Fprintln(stdout, "removed", r)
		}
		if err != nil {
			fmt.Fprintln(stderr, "kvchaos:", err)
			return exitHarness
		}
		if len(removed) == 0 {
			fmt.Fprintln(stdout, "nothing left behind")
		}
		return exitPass
	}

	if *recheck != "" {
		return recheckHistory(*recheck, cfg.CheckTimeout, stdout, stderr)
	}

	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano() % 1_000_000_000
	}
	if cfg.OutDir == "" {
		cfg.OutDir = filepath.Join(os.TempDir(), "kvchaos-runs", fmt.Sprintf("%s-seed%d", time.Now().Format("20060102-150405"), cfg.Seed))
	}
	cfg.Progress = stdout
	fmt.Fprintf(stdout, "kvchaos --duration %v --nodes %d --seed %d --nemeses %s (output in %s)\n", cfg.Duration, cfg.Nodes, cfg.Seed, cfg.Nemeses, cfg.OutDir)

	// The first SIGINT or SIGTERM cancels the run, which then cleans up;
	// later ones are caught too (not fatal) so the cleanup can finish.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		first := true
		for s := range sigs {
			if first {
				fmt.Fprintf(stderr, "\nkvchaos: %v: stopping and cleaning up\n", s)
				cancel(fmt.Errorf("signal %v", s))
				first = false
			} else {
				fmt.Fprintf(stderr, "kvchaos: %v: still cleaning up, please wait\n", s)
			}
		}
	}()

	defer func() {
		// chaos.Run has cleaned up on its way out; report and fail.
		if p := recover(); p != nil {
			fmt.Fprintf(stderr, "kvchaos: panic: %v\n", p)
			code = exitHarness
		}
	}()
	rep, err := chaos.Run(ctx, cfg)
	if rep != nil {
		rep.Text(stdout)
		if f, ferr := os.Create(filepath.Join(rep.OutDir, "report.txt")); ferr == nil {
			rep.Text(f)
			f.Close()
		}
	}
	switch {
	case rep != nil && rep.Interrupted:
		if err != nil {
			fmt.Fprintln(stderr, "kvchaos:", err)
		}
		return exitInterrupted
	case err != nil:
		fmt.Fprintln(stderr, "kvchaos:", err)
		return exitHarness
	case !rep.Pass:
		fmt.Fprintf(stdout, "reproduce the schedule with: kvchaos --duration %v --nodes %d --seed %d --nemeses %s\n",
			cfg.Duration, cfg.Nodes, cfg.Seed, strings.Join(rep.Nemeses, ","))
		return exitViolation
	}
	return exitPass
}

// recheckHistory checks a history saved by an earlier run again, e.g. with
// a longer --check-timeout, and writes the visualization next to it.
func recheckHistory(path string, timeout time.Duration, stdout, stderr io.Writer) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "kvchaos:", err)
		return exitHarness
	}
	var h lin.History
	if err := json.Unmarshal(b, &h); err != nil {
		fmt.Fprintf(stderr, "kvchaos: %s is not a saved history: %v\n", path, err)
		return exitHarness
	}
	res := lin.Check(h, timeout)
	fmt.Fprintln(stdout, res.Summary())
	viz := strings.TrimSuffix(path, ".json") + ".recheck.html"
	if err := res.WriteVisualization(viz); err != nil {
		fmt.Fprintln(stderr, "kvchaos:", err)
		return exitHarness
	}
	fmt.Fprintln(stdout, "visualization:", viz)
	if res.Verdict != lin.Linearizable {
		return exitViolation
	}
	return exitPass
}
