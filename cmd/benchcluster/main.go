// Command benchcluster is the cluster benchmark behind make bench-cluster:
// it builds keyvald and kvbench, starts a fresh three-member cluster on
// loopback with its data on the real disk (keyvald always fsyncs its WAL),
// and measures writes at 1 to 256 clients, linearizable and serializable
// reads, the same through etcd's v3 API with etcd's own benchmark tool,
// watch fan-out and lease keep-alives paired with an etcd cluster,
// memory over a sustained-overwrite run, failover after kill -9 of the
// leader, and the catch-up of a member restarted behind many writes.
// --steps compare (make bench-compare) instead runs the write (closed and
// open loop), read and failover rows on KeyVal and etcd side by side, in
// interleaved rounds, then both systems' memory through a sustained
// overwrite, loaded at once.
// Everything measured goes to a markdown file with the exact commands.
//
// --smoke runs every step (compare only when named) with tiny counts in a
// few seconds so CI can check that the tooling works; it exits non-zero if
// anything fails.
//
// It is a Go program rather than a shell script because the failover
// figure needs the kill and the next acknowledged write timed in one
// process, and because a Go driver can read Status through the client
// library, sample /proc, and guarantee cleanup (children in their own
// process group, killed by the kernel if the driver itself dies).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/internal/version"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// options are the command line.
type options struct {
	smoke             bool
	out               string
	dir               string
	binDir            string
	goCmd             string
	basePort          int
	steps             map[string]bool
	writeOps          int
	readOps           int
	keySpace          int
	failoverTrials    int
	catchupKeys       int
	catchupTimeout    time.Duration
	rssDuration       time.Duration
	snapshotInterval  int
	quotaBytes        int64
	unary             bool
	etcdBenchmark     string
	etcdServer        string
	watchLeaseRounds  int
	compareRounds     int
	compareTrials     int
	compareMemory     time.Duration
	compareMemoryRate int
	minFreeGiB        int
	keep              bool
	quiet             bool
	timeout           time.Duration
	args              []string
}

// allSteps in the order they run. etcd's tool comes after KeyVal's own
// writes and reads, so these keep measuring what they always have. Memory
// is measured before failover and catch-up: those leave a million keys
// and restarted members behind.
var allSteps = []string{"writes", "reads", "etcd", "watch-lease", "rss", "failover", "catchup"}

// stepCompare (make bench-compare) runs only when asked for by name, after
// the others: it measures etcd as much as KeyVal, and for longer.
const stepCompare = "compare"

// knownSteps are the steps --steps accepts, in the order they run.
var knownSteps = append(slices.Clone(allSteps), stepCompare)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	opt, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if errors.Is(err, version.ErrRequested) {
		fmt.Fprintln(stdout, version.String("benchcluster"))
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "benchcluster:", err)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	// A second signal after the first: stop waiting for a clean shutdown.
	go func() {
		<-ctx.Done()
		again := make(chan os.Signal, 1)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		<-again
		fmt.Fprintln(stderr, "benchcluster: killing every child process now")
		killTracked()
		os.Exit(exitInterrupted)
	}()
	defer killTracked() // last resort; the cluster is normally stopped before

	runCtx, cancel := ctx, context.CancelFunc(func() {})
	if opt.timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, opt.timeout)
	}
	defer cancel()
	err = run(runCtx, opt, stderr)
	switch {
	case ctx.Err() == nil && runCtx.Err() != nil:
		fmt.Fprintf(stderr, "benchcluster: FAILED: gave up after --timeout %v; processes stopped; partial results in %s\n", opt.timeout, opt.out)
		return exitFailed
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "benchcluster: interrupted; processes stopped; partial results in", opt.out)
		return exitInterrupted
	case err != nil:
		fmt.Fprintln(stderr, "benchcluster: FAILED:", err)
		return exitFailed
	}
	fmt.Fprintln(stderr, "benchcluster: done; results in", opt.out)
	return exitOK
}

// defaultOut is where the report goes without --out: make bench-compare's
// run alone has a file of its own, so that it does not overwrite make
// bench-cluster's.
func defaultOut(steps map[string]bool, smoke bool) string {
	name := "bench-cluster"
	if len(steps) == 1 && steps[stepCompare] {
		name = "bench-compare"
	}
	if smoke {
		name += "-smoke"
	}
	return ".benchdata/" + name + ".md"
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	opt := options{args: args}
	fs := flag.NewFlagSet("benchcluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `benchcluster starts a fresh three-member KeyVal cluster on 127.0.0.1 and
benchmarks it with kvbench (run from the repository root):

  go run ./cmd/benchcluster                 the full matrix (about 6-10 minutes on 2 cores)
  go run ./cmd/benchcluster --smoke         every default step with tiny counts (seconds)
  go run ./cmd/benchcluster --steps writes,failover --failover-trials 20
  go run ./cmd/benchcluster --steps compare  KeyVal beside an etcd cluster (make bench-compare)

Results, with the exact commands, go to --out. Exit status: 0 all steps
ran without errors, 1 something failed (the report says what), 2 usage,
130 interrupted (every process started is stopped either way).

Flags:
`)
		fs.PrintDefaults()
	}
	fs.BoolVar(&opt.smoke, "smoke", false, "tiny counts: check the tooling works in a few seconds (flags given explicitly still win)")
	fs.StringVar(&opt.out, "out", "", "markdown file for the results (default .benchdata/bench-cluster.md, or -smoke.md)")
	fs.StringVar(&opt.dir, "dir", ".benchdata/cluster", "directory for the members' data and logs (emptied first)")
	fs.StringVar(&opt.binDir, "bin-dir", ".benchdata/bin", "where keyvald and kvbench are built")
	fs.StringVar(&opt.goCmd, "go", "go", "the go command used to build")
	fs.IntVar(&opt.basePort, "base-port", 3379, "client port of member 1; members 2 and 3 are +10000 and +20000, peer ports one above (0: any free ports; --smoke's default)")
	steps := fs.String("steps", strings.Join(allSteps, ","), "steps to run, comma-separated: "+strings.Join(knownSteps, ", ")+
		" ("+stepCompare+", make bench-compare's, only when named)")
	fs.IntVar(&opt.writeOps, "write-ops", 100000, "operations per write row (the 1-client row runs a tenth, the 16-client row half)")
	fs.IntVar(&opt.readOps, "read-ops", 100000, "operations per read row")
	fs.IntVar(&opt.keySpace, "key-space", 100000, "keys the writes and reads range over (preloaded for the reads)")
	fs.IntVar(&opt.failoverTrials, "failover-trials", 10, "kill -9 the leader this many times")
	fs.IntVar(&opt.catchupKeys, "catchup-keys", 1000000, "distinct keys written while a follower is down")
	fs.DurationVar(&opt.catchupTimeout, "catchup-timeout", 20*time.Minute, "how long the restarted follower may take to catch up")
	fs.DurationVar(&opt.rssDuration, "rss-duration", 2*time.Minute, "length of the sustained-overwrite run sampled for memory")
	fs.IntVar(&opt.snapshotInterval, "snapshot-interval", 0, "keyvald --snapshot-interval (0: keyvald's default)")
	fs.Int64Var(&opt.quotaBytes, "quota-backend-bytes", 0, "keyvald --quota-backend-bytes, for a state larger than the default quota (0: keyvald's default)")
	fs.BoolVar(&opt.unary, "unary", false, "kvbench --unary: one gRPC call per operation, as etcd's tool makes, instead of the client's pipeline")
	fs.StringVar(&opt.etcdBenchmark, "etcd-benchmark", defaultEtcdBenchmark, "etcd's benchmark tool for the etcd step (the default is built by make etcd-benchmark when needed)")
	fs.StringVar(&opt.etcdServer, "etcd-server", defaultEtcdServer, "etcd's server, run beside KeyVal in the watch-lease and compare steps (the default is built by make etcd when needed; "+noEtcdServer+": KeyVal alone)")
	fs.IntVar(&opt.watchLeaseRounds, "watch-lease-rounds", 3, "rounds of the watch-lease step, each running every benchmark on both systems")
	fs.IntVar(&opt.compareRounds, "compare-rounds", 3, "rounds of the compare step, each running every row on every system, the order rotating")
	fs.IntVar(&opt.compareTrials, "compare-failover-trials", 5, "failover trials of the compare step per probe and round")
	fs.DurationVar(&opt.compareMemory, "compare-memory", defaultCompareMemory, "length of the compare step's last phase, both systems' memory through a sustained overwrite (0: skip it)")
	fs.IntVar(&opt.compareMemoryRate, "compare-memory-rate", 2000, "puts a second offered to each system in the memory phase")
	fs.IntVar(&opt.minFreeGiB, "min-free-disk-gib", 20, "refuse to start unless the file system of --dir has this many GiB free (a full disk stops members mid-run and spoils the figures; the compare step's memory phase alone writes several GiB; 0: no check)")
	fs.BoolVar(&opt.keep, "keep", false, "keep the members' data directories afterwards (logs are always kept)")
	fs.BoolVar(&opt.quiet, "quiet", false, "no kvbench progress lines")
	fs.DurationVar(&opt.timeout, "timeout", 0, "give up (and fail) after this long; 0: no limit (--smoke: 3m)")
	showVersion := version.AddFlag(fs)
	if err := fs.Parse(args); err != nil {
		return opt, err
	}
	if *showVersion {
		return opt, version.ErrRequested
	}
	if fs.NArg() > 0 {
		return opt, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if opt.smoke {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for name, v := range map[string]string{
			"write-ops": "300", "read-ops": "300", "key-space": "1000", "failover-trials": "1",
			"catchup-keys": "3000", "catchup-timeout": "1m", "rss-duration": "3s", "snapshot-interval": "500",
			"quiet": "true", "base-port": "0", "timeout": "3m", "watch-lease-rounds": "1",
			"compare-rounds": "1", "compare-failover-trials": "1", "compare-memory": "3s", "compare-memory-rate": "200",
			"min-free-disk-gib": "0",
		} {
			if !given[name] {
				if err := fs.Set(name, v); err != nil {
					return opt, err
				}
			}
		}
	}
	opt.steps = map[string]bool{}
	for _, s := range strings.Split(*steps, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(knownSteps, s) {
			return opt, fmt.Errorf("--steps: unknown step %q (want some of %s)", s, strings.Join(knownSteps, ", "))
		}
		opt.steps[s] = true
	}
	if opt.out == "" {
		opt.out = defaultOut(opt.steps, opt.smoke)
	}
	switch {
	case len(opt.steps) == 0:
		return opt, errors.New("--steps: no steps given")
	case opt.writeOps < 1 || opt.readOps < 1 || opt.keySpace < 1 || opt.catchupKeys < 1:
		return opt, errors.New("--write-ops, --read-ops, --key-space and --catchup-keys must be positive")
	case opt.keySpace > 100000000:
		return opt, errors.New("--key-space must fit in 8-digit keys (at most 100000000)")
	case opt.watchLeaseRounds < 1 || opt.compareRounds < 1:
		return opt, errors.New("--watch-lease-rounds and --compare-rounds must be positive")
	case opt.compareTrials < 0:
		return opt, errors.New("--compare-failover-trials must not be negative")
	case opt.compareMemory < 0 || opt.compareMemoryRate < 1:
		return opt, errors.New("--compare-memory must not be negative, --compare-memory-rate must be positive")
	case opt.failoverTrials < 0:
		return opt, errors.New("--failover-trials must not be negative")
	case opt.quotaBytes < 0:
		return opt, errors.New("--quota-backend-bytes must not be negative")
	case opt.basePort < 0 || opt.basePort+20001 > 65535:
		return opt, fmt.Errorf("--base-port %d: members need ports up to base+20001", opt.basePort)
	case opt.rssDuration < time.Second:
		return opt, errors.New("--rss-duration must be at least 1s")
	}
	return opt, nil
}

// run builds, starts the cluster, runs the steps and writes the report.
// Whatever happens, the cluster is stopped before it returns.
func run(ctx context.Context, opt options, stderr io.Writer) error {
	if _, err := os.Stat("go.mod"); err != nil {
		return errors.New("run from the repository root (no go.mod here)")
	}
	if err := build(ctx, opt, stderr); err != nil {
		return err
	}
	if err := os.RemoveAll(opt.dir); err != nil {
		return fmt.Errorf("emptying %s: %w", opt.dir, err)
	}
	if err := enoughDisk(opt.dir, opt.minFreeGiB); err != nil {
		return err
	}
	var extra []string
	if opt.snapshotInterval > 0 {
		extra = append(extra, "--snapshot-interval", fmt.Sprint(opt.snapshotInterval))
	}
	if opt.quotaBytes > 0 {
		extra = append(extra, "--quota-backend-bytes", fmt.Sprint(opt.quotaBytes))
	}
	ports := fixedPorts(opt.basePort)
	if opt.basePort == 0 {
		var err error
		if ports, err = freePorts(); err != nil {
			return err
		}
	}
	c := newCluster(filepath.Join(opt.binDir, "keyvald"), opt.dir, ports, extra)
	if err := c.checkPortsFree(); err != nil {
		return err
	}
	rep := newReport(opt, c)
	d := &driver{opt: opt, c: c, kvbench: filepath.Join(opt.binDir, "kvbench"), rep: rep, progress: stderrIfVerbose(opt.quiet)}

	defer func() {
		c.stopAll()
		if !opt.keep {
			_ = os.RemoveAll(filepath.Join(opt.dir, "data"))
		}
	}()
	if err := c.startAll(); err != nil {
		return err
	}
	if _, err := c.waitHealthy(ctx, c.nodes, time.Minute); err != nil {
		return fmt.Errorf("the cluster did not come up: %w", err)
	}
	rep.loadStart = currentLoad()

	steps := map[string]func(context.Context) error{
		"writes": d.stepWrites, "reads": d.stepReads, "etcd": d.stepEtcd, "watch-lease": d.stepWatchLease, "rss": d.stepRSS,
		"failover": d.stepFailover, "catchup": d.stepCatchup, stepCompare: d.stepCompare,
	}
	var failed []error
	for _, name := range knownSteps {
		if !opt.steps[name] {
			continue
		}
		fmt.Fprintf(stderr, "benchcluster: step %s\n", name)
		start := time.Now()
		err := steps[name](ctx)
		rep.stepTimes = append(rep.stepTimes, stepTime{name, time.Since(start)})
		if ctx.Err() != nil {
			rep.failures = append(rep.failures, fmt.Sprintf("interrupted or timed out during %s: %v", name, err))
			break
		}
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", name, err))
			rep.failures = append(rep.failures, fmt.Sprintf("%s: %v", name, err))
			fmt.Fprintf(stderr, "benchcluster: step %s failed: %v\n", name, err)
		}
		// Whatever the step left behind, the next one starts from three
		// healthy members.
		if err := d.recover(ctx); err != nil {
			failed = append(failed, fmt.Errorf("recovering after %s: %w", name, err))
			rep.failures = append(rep.failures, fmt.Sprintf("recovering after %s: %v (remaining steps skipped)", name, err))
			break
		}
	}
	rep.loadEnd = currentLoad()
	rep.finished = time.Now()
	if err := rep.write(); err != nil {
		failed = append(failed, err)
	}
	return errors.Join(failed...)
}

// build compiles keyvald and kvbench from this checkout, and etcd's
// benchmark tool if the etcd, watch-lease or compare step is to run, and
// etcd's server for the last two unless they run KeyVal alone.
func build(ctx context.Context, opt options, stderr io.Writer) error {
	withEtcd := opt.steps["watch-lease"] || opt.steps[stepCompare]
	if opt.steps["etcd"] || withEtcd {
		if err := buildEtcdBinary(ctx, opt.etcdBenchmark, defaultEtcdBenchmark, "etcd-benchmark", "etcd's benchmark tool", stderr); err != nil {
			return err
		}
	}
	if withEtcd && opt.etcdServer != noEtcdServer {
		if err := buildEtcdBinary(ctx, opt.etcdServer, defaultEtcdServer, "etcd", "etcd's server", stderr); err != nil {
			return err
		}
	}
	for _, pkg := range []string{"keyvald", "kvbench"} {
		cmd := exec.CommandContext(ctx, opt.goCmd, "build", "-o", filepath.Join(opt.binDir, pkg), "./cmd/"+pkg)
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s: %w", pkg, err)
		}
	}
	return nil
}

// enoughDisk makes dir and checks that its file system has at least
// minGiB free (0: no check).
func enoughDisk(dir string, minGiB int) error {
	if minGiB <= 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("making %s: %w", dir, err)
	}
	free, ok, err := freeBytes(dir)
	if err != nil {
		return fmt.Errorf("free space under %s: %w", dir, err)
	}
	if ok && free < int64(minGiB)<<30 {
		return fmt.Errorf("only %.1f GiB free under %s, fewer than --min-free-disk-gib %d: free some space (old clusters in /tmp?) or lower the flag",
			float64(free)/(1<<30), dir, minGiB)
	}
	return nil
}
