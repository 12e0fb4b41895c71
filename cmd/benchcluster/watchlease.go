package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/therealutkarshpriyadarshi/keyval/server"
)

// defaultEtcdServer is where make etcd puts etcd's server, built from the
// Go module proxy at the version tools/etcd/go.mod pins.
const defaultEtcdServer = "bin/etcd"

// noEtcdServer as --etcd-server measures KeyVal alone.
const noEtcdServer = "none"

// The two systems of the watch-lease step, in the order of its first round.
const (
	sysKeyVal = "KeyVal"
	sysEtcd   = "etcd"
)

// watchLeaseRun is one run of etcd's benchmark tool against one system.
type watchLeaseRun struct {
	system string
	res    *benchResult
	cmd    string
	// cpuPerOp is the CPU time of the three members and the tool per
	// operation (watch event, keep-alive), in µs; 0 where unknown.
	cpuPerOp float64
	err      error
}

// watchLeaseRow is one benchmark of the step with its runs, every round's.
type watchLeaseRow struct {
	label string
	unit  string // what the tool counts: "events" or "keep-alives"
	// timed: the tool's latencies mean something. Its watch benchmark
	// times each event from its own arrival, so they are all zero.
	timed bool
	runs  []watchLeaseRun
}

// watchLeaseResult is the watch-lease step's report.
type watchLeaseResult struct {
	rounds    int
	etcd      string // the etcd server's version line, or why it did not run
	etcdCmds  []string
	loadStart []float64
	loadEnd   []float64
	rows      []*watchLeaseRow
}

// watchLeaseMatrix is what the step asks etcd's benchmark tool for, with
// counts scaled from --write-ops (puts) and --read-ops (keep-alives) and a
// floor that keeps --smoke's runs meaningful.
var watchLeaseMatrix = []struct {
	label, unit string
	timed       bool
	args        func(opt options) []string
}{
	{"watch-latency: 1 writer, 100 watchers (100 clients / 10 conns), 100 puts/s", "events", true, watchLatencyArgs(100)},
	{"watch-latency: 1 writer, 1,000 watchers (1,000 clients / 100 conns), 100 puts/s", "events", true, watchLatencyArgs(1000)},
	{"watch fan-out: 1 key, 1,000 watchers (10 streams × 100), 10 writers unthrottled", "events", false, func(opt options) []string {
		return []string{"--clients", "10", "--conns", "10", "watch", "--streams", "10", "--watch-per-stream", "100",
			"--watched-key-total", "1", "--key-size", "8", "--put-total", strconv.Itoa(max(opt.writeOps/50, 5)),
			"--put-rate", "1000000"}
	}},
	{"lease-keepalive: 64 clients / 8 conns", "keep-alives", true, func(opt options) []string {
		return []string{"--clients", "64", "--conns", "8", "lease-keepalive", "--total", strconv.Itoa(max(opt.readOps/2, 50))}
	}},
}

// watchLatencyArgs time one writer's puts to watchers, each a client of
// its own, ten to a connection.
func watchLatencyArgs(watchers int) func(opt options) []string {
	return func(opt options) []string {
		return []string{"--clients", strconv.Itoa(watchers), "--conns", strconv.Itoa(watchers / 10), "watch-latency",
			"--put-rate", "100", "--total", strconv.Itoa(max(opt.writeOps/200, 10)), "--key-size", "8", "--val-size", "256"}
	}
}

// watchLeaseRunTimeout bounds one run: etcd's watch benchmark waits for
// every event it expects, so a lost event would otherwise hang it.
const watchLeaseRunTimeout = 3 * time.Minute

// newEtcdCluster lays out three etcd members under dir with KeyVal's
// default heartbeat and election timeout, its snapshot interval and its
// automatic compaction of the history (etcd's own default keeps it all),
// so that both systems run with the same timing, snapshot often alike and
// keep the same history.
func newEtcdCluster(bin, dir string, ports [3][2]int, snapshotEvery int) *cluster {
	c := newCluster(bin, dir, ports, []string{
		"--initial-cluster-state", "new", "--initial-cluster-token", "benchcluster",
		"--snapshot-count", strconv.Itoa(snapshotEvery),
		"--auto-compaction-mode", server.CompactionPeriodic, "--auto-compaction-retention", server.DefaultAutoCompactionRetention,
		"--heartbeat-interval", strconv.FormatInt(server.DefaultHeartbeatInterval.Milliseconds(), 10),
		"--election-timeout", strconv.FormatInt(server.DefaultElectionTimeout.Milliseconds(), 10),
		"--logger", "zap", "--log-outputs", "stderr",
	})
	var peers []string
	for _, n := range c.nodes {
		peers = append(peers, fmt.Sprintf("m%d=http://%s", n.id, n.peerAddr))
	}
	c.initial = strings.Join(peers, ",")
	c.memberArgs = func(c *cluster, n *node) []string {
		client, peer := "http://"+n.clientAddr, "http://"+n.peerAddr
		return []string{"--name", fmt.Sprintf("m%d", n.id), "--data-dir", n.dataDir,
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", c.initial}
	}
	return c
}

// etcdPorts are the etcd members' ports: free ones when KeyVal's are, else
// five above KeyVal's (clear of keyvald's metrics and gateway ports, one
// and two above its peer port).
func etcdPorts(basePort int) ([3][2]int, error) {
	if basePort == 0 {
		return freePorts()
	}
	return fixedPorts(basePort + 5), nil
}

// newEtcdClient connects etcd's Go client to every member of c.
func newEtcdClient(c *cluster) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(c.endpoints(), ","), DialTimeout: time.Second,
		// Its retries while members start or die are expected, not news.
		Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd: %w", err)
	}
	return cli, nil
}

// waitEtcdHealthy waits until every etcd member answers Status naming the
// same leader and has applied what the leader had when first seen, as
// KeyVal's waitHealthy does; it returns the leader.
func waitEtcdHealthy(ctx context.Context, c *cluster, timeout time.Duration) (*node, error) {
	cli, err := newEtcdClient(c)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	deadline := time.Now().Add(timeout)
	var target uint64
	for {
		if err := c.checkRunning(); err != nil {
			return nil, err
		}
		leader, last := etcdAgreeOnLeader(etcdStatuses(ctx, cli, c.nodes), &target)
		if last == nil {
			return leader, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("etcd cluster not healthy after %v: %w", timeout, last)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// etcdStatus is one member's answer to Status, or why there was none.
type etcdStatus struct {
	n   *node
	st  *clientv3.StatusResponse
	err error
}

// etcdStatuses asks each of nodes for its status, in parallel, each over
// a connection of its own.
func etcdStatuses(ctx context.Context, cli *clientv3.Client, nodes []*node) []etcdStatus {
	out := make([]etcdStatus, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			st, err := cli.Status(sctx, n.clientAddr)
			out[i] = etcdStatus{n, st, err}
		})
	}
	wg.Wait()
	return out
}

// etcdAgreeOnLeader returns the leader if every member answered naming it
// and has applied *target, the leader's last index when first seen (set
// here once there is a leader).
func etcdAgreeOnLeader(sts []etcdStatus, target *uint64) (*node, error) {
	var leader *node
	var id uint64
	for _, s := range sts {
		switch {
		case s.err != nil:
			return nil, fmt.Errorf("member %d: %w", s.n.id, s.err)
		case s.st.Leader == 0 || (id != 0 && s.st.Leader != id):
			return nil, fmt.Errorf("member %d: leader %x, others %x", s.n.id, s.st.Leader, id)
		}
		id = s.st.Leader
		if s.st.Header.GetMemberId() == id {
			leader = s.n
			if *target == 0 {
				*target = s.st.RaftIndex
			}
		}
	}
	if leader == nil {
		return nil, fmt.Errorf("leader %x is none of the members asked", id)
	}
	for _, s := range sts {
		if s.st.RaftAppliedIndex < *target {
			return nil, fmt.Errorf("member %d: applied %d of %d", s.n.id, s.st.RaftAppliedIndex, *target)
		}
	}
	return leader, nil
}

// etcdLeader is the member of nodes that says it leads, with the highest
// term, and that term (nil if none does).
func etcdLeader(ctx context.Context, cli *clientv3.Client, nodes []*node) (*node, uint64) {
	var best *node
	var term uint64
	for _, s := range etcdStatuses(ctx, cli, nodes) {
		if s.err == nil && s.st.Leader != 0 && s.st.Header.GetMemberId() == s.st.Leader && (best == nil || s.st.RaftTerm > term) {
			best, term = s.n, s.st.RaftTerm
		}
	}
	return best, term
}

// etcdVersion is the first line of the server's --version.
func etcdVersion(bin string) string {
	line, _, _ := strings.Cut(commandOutput(bin, "--version"), "\n")
	return strings.TrimSpace(line)
}

// stepWatchLease runs etcd's watch-latency, watch and lease-keepalive
// benchmarks against the KeyVal cluster and, paired in the same run, an
// etcd cluster: interleaved rounds, the order of the two systems rotating
// from one round to the next, so that both see the machine's load alike.
func (d *driver) stepWatchLease(ctx context.Context) error {
	res := &watchLeaseResult{rounds: d.opt.watchLeaseRounds, loadStart: currentLoad()}
	d.rep.watchLease = res
	for _, m := range watchLeaseMatrix {
		res.rows = append(res.rows, &watchLeaseRow{label: m.label, unit: m.unit, timed: m.timed})
	}
	systems := map[string]*cluster{sysKeyVal: d.c}
	order := []string{sysKeyVal}
	res.etcd = "not run (--etcd-server none)"
	if d.opt.etcdServer != noEtcdServer {
		ec, err := d.startEtcd(ctx)
		if ec != nil {
			defer d.stopEtcd(ec)
			res.etcdCmds = ec.commands
		}
		if err != nil {
			res.etcd = "failed to start: " + firstLine(err)
			return err
		}
		res.etcd = etcdVersion(d.opt.etcdServer)
		systems[sysEtcd] = ec
		order = append(order, sysEtcd)
	}
	var errs []error
	for round := range d.opt.watchLeaseRounds {
		for i, m := range watchLeaseMatrix {
			for k := range order {
				sys := order[(k+round)%len(order)]
				run := d.watchLeaseRun(ctx, systems[sys], m.args(d.opt))
				run.system = sys
				res.rows[i].runs = append(res.rows[i].runs, run)
				d.rep.save()
				if run.err != nil {
					errs = append(errs, fmt.Errorf("%s, %s: %w", sys, m.label, run.err))
				}
				if ctx.Err() != nil {
					return errors.Join(errs...)
				}
			}
		}
	}
	res.loadEnd = currentLoad()
	return errors.Join(errs...)
}

// startEtcd starts a fresh etcd cluster beside KeyVal's, its data and logs
// under --dir/etcd. The cluster is returned whenever something was started,
// for the caller to stop.
func (d *driver) startEtcd(ctx context.Context) (*cluster, error) {
	ports, err := etcdPorts(d.opt.basePort)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(d.opt.dir, "etcd")
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("emptying %s: %w", dir, err)
	}
	ec := newEtcdCluster(d.opt.etcdServer, dir, ports, snapshotEvery(d.opt))
	if err := ec.checkPortsFree(); err != nil {
		return nil, err
	}
	if err := ec.startAll(); err != nil {
		return ec, err
	}
	_, err = waitEtcdHealthy(ctx, ec, time.Minute)
	return ec, err
}

// snapshotEvery is the KeyVal members' snapshot interval, which the etcd
// members are given too.
func snapshotEvery(opt options) int {
	if opt.snapshotInterval > 0 {
		return opt.snapshotInterval
	}
	return server.DefaultSnapshotEvery
}

// stopEtcd stops the etcd cluster and, unless --keep, removes its data
// (its logs stay, as KeyVal's do).
func (d *driver) stopEtcd(ec *cluster) {
	ec.stopAll()
	if !d.opt.keep {
		_ = os.RemoveAll(filepath.Join(d.opt.dir, "etcd", "data"))
	}
}

// watchLeaseRun runs etcd's tool once against c, every connection to its
// leader, and measures the CPU time all four processes spent.
func (d *driver) watchLeaseRun(ctx context.Context, c *cluster, sub []string) watchLeaseRun {
	args := append([]string{"--endpoints", c.endpoints(), "--target-leader", "--precise"}, sub...)
	parse := parseEtcdReport
	if slices.Contains(sub, "watch") {
		parse = parseEtcdWatchReport
	}
	before := membersCPU(c)
	rctx, cancel := context.WithTimeout(ctx, watchLeaseRunTimeout)
	defer cancel()
	res, cmd, toolCPU, err := runBench(rctx, &benchRun{bin: d.opt.etcdBenchmark, args: args, parse: parse})
	run := watchLeaseRun{res: res, cmd: cmd, err: err}
	if err == nil {
		run.err = c.checkRunning()
	}
	run.cpuPerOp = cpuPerRequest(c, before, toolCPU, res)
	return run
}

// membersCPU is the CPU time each running member of c has used so far.
func membersCPU(c *cluster) map[*node]time.Duration {
	before := map[*node]time.Duration{}
	for _, n := range c.nodes {
		if cpu, err := cpuTime(n.pid()); err == nil {
			before[n] = cpu
		}
	}
	return before
}

// cpuPerRequest is the CPU time, in µs per request counted in res, that
// the members of c spent since before plus the tool's own; 0 when a
// member's share is unknown (it was down at either end).
func cpuPerRequest(c *cluster, before map[*node]time.Duration, toolCPU time.Duration, res *benchResult) float64 {
	total := toolCPU
	for _, n := range c.nodes {
		now, err := cpuTime(n.pid())
		b, ok := before[n]
		if err != nil || !ok {
			return 0
		}
		total += now - b
	}
	if res == nil || res.Requests == 0 {
		return 0
	}
	return float64(total.Microseconds()) / float64(res.Requests)
}

// parseEtcdWatchReport reads the second of the two reports etcd's watch
// benchmark prints: the first times the creation of the watches, the
// second the events received.
func parseEtcdWatchReport(out []byte) (*benchResult, error) {
	const events = "Watch events received summary:"
	_, rest, ok := bytes.Cut(out, []byte(events))
	if !ok {
		return nil, fmt.Errorf("etcd watch benchmark report: no %q section in its output", events)
	}
	return parseEtcdReport(rest)
}

// writeWatchLease renders the step: per benchmark and system the median
// over the rounds (with the range), and KeyVal's median rate over etcd's.
func (r *report) writeWatchLease(b *strings.Builder) {
	res := r.watchLease
	fmt.Fprintf(b, "## Watch fan-out and lease keep-alive, paired with etcd\n\n")
	fmt.Fprintf(b, "etcd's own `benchmark` tool (etcd "+etcdToolVersion+"'s, `make etcd-benchmark`) against the KeyVal cluster and a "+
		"three-member etcd cluster (%s, `make etcd`) on 127.0.0.1, both running through "+
		"the step, with the same heartbeat (%v) and election timeout (%v). %d round(s); in each, every benchmark runs "+
		"on both systems, the order of the two rotating from round to round. `--target-leader` puts every connection on "+
		"the leader. *CPU µs per op*: user and system time of the three members and the tool over the run, divided by "+
		"the events or keep-alives counted. Load average (1, 5, 15 min): %s at the start, %s at the end.\n\n",
		res.etcd, server.DefaultHeartbeatInterval, server.DefaultElectionTimeout, res.rounds,
		loadString(res.loadStart), loadString(res.loadEnd))
	fmt.Fprintf(b, "| benchmark | system | runs | per second: median (min–max) | p50 ms | p99 ms | CPU µs per op | errors | KeyVal / etcd |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range res.rows {
		rates := map[string]float64{}
		for _, sys := range []string{sysKeyVal, sysEtcd} {
			s := summariseRuns(row.runs, sys)
			if s.runs == 0 && s.failed == 0 {
				continue
			}
			rates[sys] = s.rate.med
			ratio := ""
			if sys == sysEtcd && rates[sysEtcd] > 0 && rates[sysKeyVal] > 0 {
				ratio = strconv.FormatFloat(rates[sysKeyVal]/rates[sysEtcd], 'f', 2, 64)
			}
			p50, p99 := "n/a", "n/a"
			if row.timed {
				p50, p99 = strconv.FormatFloat(s.p50, 'f', 2, 64), strconv.FormatFloat(s.p99, 'f', 2, 64)
			}
			fmt.Fprintf(b, "| %s | %s | %d | %s %s (%s–%s) | %s | %s | %.0f | %s | %s |\n", row.label, sys, s.runs,
				thousands(s.rate.med), row.unit, thousands(s.rate.lo), thousands(s.rate.hi), p50, p99, s.cpuPerOp,
				s.errorCell(), ratio)
		}
	}
	fmt.Fprintf(b, "\n```\n")
	for _, cmd := range res.etcdCmds {
		fmt.Fprintf(b, "%s\n", cmd)
	}
	for _, row := range res.rows {
		seen := map[string]bool{}
		for _, run := range row.runs {
			if !seen[run.system] {
				seen[run.system] = true
				fmt.Fprintf(b, "%s\n", run.cmd)
			}
		}
	}
	fmt.Fprintf(b, "```\n\n")
}

// spread is a median with the range around it.
type spread struct{ med, lo, hi float64 }

func spreadOf(xs []float64) spread {
	if len(xs) == 0 {
		return spread{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return spread{med, s[0], s[n-1]}
}

// runsSummary is one system's runs of one benchmark.
type runsSummary struct {
	runs, failed       int
	rate               spread
	p50, p99, cpuPerOp float64 // medians
	errors             int
	firstErr           error
}

func summariseRuns(runs []watchLeaseRun, system string) runsSummary {
	var s runsSummary
	var rates, p50s, p99s, cpus []float64
	for _, run := range runs {
		if run.system != system {
			continue
		}
		if run.err != nil && s.firstErr == nil {
			s.firstErr = run.err
		}
		if run.res == nil {
			s.failed++
			continue
		}
		s.runs++
		s.errors += run.res.Errors
		rates = append(rates, run.res.RequestsPerSec)
		p50s = append(p50s, run.res.Latency.P50)
		p99s = append(p99s, run.res.Latency.P99)
		if run.cpuPerOp > 0 {
			cpus = append(cpus, run.cpuPerOp)
		}
	}
	s.rate = spreadOf(rates)
	s.p50, s.p99, s.cpuPerOp = spreadOf(p50s).med, spreadOf(p99s).med, spreadOf(cpus).med
	return s
}

func (s runsSummary) errorCell() string {
	switch {
	case s.firstErr == nil:
		return "0"
	case s.failed > 0:
		return fmt.Sprintf("**%d run(s) failed**: %s", s.failed, firstLine(s.firstErr))
	default:
		return fmt.Sprintf("**%d**: %s", s.errors, firstLine(s.firstErr))
	}
}
