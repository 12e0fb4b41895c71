package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The load generators of the compare step, each a column of its report:
// etcd's benchmark tool against etcd, kvbench against KeyVal through the
// Go client's pipeline and with one gRPC call per operation, and etcd's
// tool against KeyVal.
const (
	varEtcd      = "etcd"
	varPipelined = "KeyVal pipelined"
	varUnary     = "KeyVal unary"
	varEtcdTool  = "KeyVal, etcd's tool"
)

// compareVariant is one load generator and the system it loads.
type compareVariant struct {
	name, system string
	kvbench      bool // kvbench rather than etcd's tool
	unary        bool
}

var compareVariants = []compareVariant{
	{varEtcd, sysEtcd, false, false},
	{varPipelined, sysKeyVal, true, false},
	{varUnary, sysKeyVal, true, true},
	{varEtcdTool, sysKeyVal, false, false},
}

// The operations of the compare step's rows.
const (
	cmpPut  = "put"
	cmpGetL = "get"              // linearizable
	cmpGetS = "get-serializable" // kvbench's name
)

// compareReadKey is the one key the read rows read on both systems, as
// etcd's tool reads one key; kvbench reads it as key 0 of a one-key space.
const compareReadKey = "00000000"

// compareRow is a row of issue 17's table. share scales --write-ops
// (puts) or --read-ops (gets), so that each row runs for seconds rather
// than a fixed time: the single client is slow and runs a twentieth. A
// row with a rate is open loop: puts offered at rate a second (kvbench
// --rate, etcd's tool put --rate), its share ten seconds of them at the
// default --write-ops.
type compareRow struct {
	label          string
	op             string
	clients, conns int
	share          float64
	rate           int
}

// The open-loop rows' labels, which the targets read.
const (
	rowOpen5k  = "put, 5,000/s offered, 256 clients"
	rowOpen10k = "put, 10,000/s offered, 256 clients"
)

var compareRows = []compareRow{
	{"put, 1 client", cmpPut, 1, 1, 0.05, 0},
	{"put, 16 clients", cmpPut, 16, 4, 0.25, 0},
	{"put, 64 clients", cmpPut, 64, 8, 1, 0},
	{"put, 256 clients", cmpPut, 256, 16, 1, 0},
	{rowOpen5k, cmpPut, 256, 16, 0.5, 5000},
	{rowOpen10k, cmpPut, 256, 16, 1, 10000},
	{"linearizable get, 64 clients", cmpGetL, 64, 8, 1, 0},
	{"serializable get, 64 clients", cmpGetS, 64, 8, 1, 0},
}

// compareProbe is a client the failover trials write through.
type compareProbe struct {
	name, system string
	goClient     bool // KeyVal's Go client rather than etcd's
}

// The same probe, etcd's Go client, on both systems; and KeyVal's own.
var compareProbes = []compareProbe{
	{"etcd, etcd's Go client", sysEtcd, false},
	{"KeyVal, etcd's Go client", sysKeyVal, false},
	{"KeyVal, KeyVal's Go client", sysKeyVal, true},
}

// compareRun is one load generator's run of one row in one round.
type compareRun struct {
	row, variant string
	round        int
	res          *benchResult
	cmd          string
	cpuPerOp     float64 // µs of the three members and the tool; 0 unknown
	rssKiB       int64   // the largest member's peak during the run
	elections    uint64  // terms begun during the run
	err          error
}

// compareTrial is one failover trial of one probe.
type compareTrial struct {
	probe string
	round int
	tr    failoverTrial
}

// compareResult is the compare step's report.
type compareResult struct {
	rounds int
	etcd   string // the etcd server's version line, or why it did not run
	// etcdCluster is the etcd side, for the commands that ran it.
	etcdCluster *cluster
	loadStart   []float64
	loadEnd     []float64
	ops         map[string]int // operations per row
	runs        []compareRun
	trials      []compareTrial
	memory      *compareMemory // nil unless the memory phase ran
}

// rotated is xs begun at round's element (wrapping), so that each system
// takes each place in the order as the rounds go by.
func rotated[T any](xs []T, round int) []T {
	out := make([]T, 0, len(xs))
	for k := range xs {
		out = append(out, xs[(k+round)%len(xs)])
	}
	return out
}

// stepCompare runs issue 17's rows on KeyVal and, in the same run, an
// etcd cluster with the same timing, snapshot interval and compaction:
// interleaved rounds, the order of the load generators rotating from
// round to round, then failover trials of each probe; and last, both
// systems' memory through a sustained overwrite.
func (d *driver) stepCompare(ctx context.Context) error {
	res := &compareResult{rounds: d.opt.compareRounds, loadStart: currentLoad(), ops: map[string]int{},
		etcd: "not run (--etcd-server " + noEtcdServer + ")"}
	d.rep.compare = res
	systems, stop, err := d.compareSystems(ctx, res)
	defer stop()
	if err != nil {
		return err
	}
	var variants []compareVariant
	for _, v := range compareVariants {
		if systems[v.system] != nil {
			variants = append(variants, v)
		}
	}
	var probes []compareProbe
	for _, p := range compareProbes {
		if systems[p.system] != nil {
			probes = append(probes, p)
		}
	}
	var errs []error
	for round := range d.opt.compareRounds {
		for _, row := range compareRows {
			for _, v := range rotated(variants, round) {
				run := d.compareRun(ctx, systems[v.system], v, row, res)
				run.round = round
				res.runs = append(res.runs, run)
				d.rep.save()
				if run.err != nil {
					errs = append(errs, fmt.Errorf("%s, %s: %w", v.name, row.label, run.err))
				}
				if ctx.Err() != nil {
					return errors.Join(errs...)
				}
			}
		}
		errs = append(errs, d.compareFailover(ctx, systems, rotated(probes, round), round, res)...)
		if ctx.Err() != nil {
			break
		}
	}
	if d.opt.compareMemory > 0 && ctx.Err() == nil {
		errs = append(errs, d.compareMemoryPhase(ctx, systems, res))
	}
	res.loadEnd = currentLoad()
	return errors.Join(errs...)
}

// compareSystems are KeyVal's cluster and, unless --etcd-server none, a
// fresh etcd cluster beside it, each with the key the read rows read
// written. stop stops etcd; it is to be called whatever the error.
func (d *driver) compareSystems(ctx context.Context, res *compareResult) (map[string]*failoverTarget, func(), error) {
	systems := map[string]*failoverTarget{sysKeyVal: d.keyvalTarget()}
	stop := func() {}
	if d.opt.etcdServer != noEtcdServer {
		ec, err := d.startEtcd(ctx)
		if ec != nil {
			stop = func() { d.stopEtcd(ec) }
			res.etcdCluster = ec
		}
		if err != nil {
			res.etcd = "failed to start: " + firstLine(err)
			return nil, stop, err
		}
		res.etcd = etcdVersion(d.opt.etcdServer)
		cli, err := newEtcdClient(ec)
		if err != nil {
			return nil, stop, err
		}
		stop = func() { _ = cli.Close(); d.stopEtcd(ec) }
		systems[sysEtcd] = etcdTarget(ec, cli)
	}
	for name, sys := range systems {
		if err := putReadKey(ctx, sys.c); err != nil {
			return nil, stop, fmt.Errorf("%s: %w", name, err)
		}
	}
	return systems, stop, nil
}

// putReadKey writes the key the read rows read, through etcd's v3 API,
// which both systems serve.
func putReadKey(ctx context.Context, c *cluster) error {
	cli, err := newEtcdClient(c)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, compareReadKey, string(make([]byte, 256))); err != nil {
		return fmt.Errorf("writing %q for the read rows: %w", compareReadKey, err)
	}
	return nil
}

// etcdTarget is an etcd cluster as the failover trials see it; cli is
// etcd's Go client on its members, for their Status (each asked over a
// connection of its own, as KeyVal's are).
func etcdTarget(c *cluster, cli *clientv3.Client) *failoverTarget {
	return &failoverTarget{
		c:      c,
		leader: func(ctx context.Context, nodes []*node) (*node, uint64) { return etcdLeader(ctx, cli, nodes) },
		healthy: func(ctx context.Context) (*node, error) {
			if err := c.startStopped(); err != nil {
				return nil, err
			}
			return waitEtcdHealthy(ctx, c, 2*time.Minute)
		},
	}
}

// compareArgs is the command line of v's tool for one row.
func (d *driver) compareArgs(c *cluster, v compareVariant, row compareRow, total int) []string {
	clients, conns := strconv.Itoa(row.clients), strconv.Itoa(row.conns)
	if v.kvbench {
		keySpace := strconv.Itoa(d.opt.keySpace)
		if row.op != cmpPut {
			keySpace = "1"
		}
		args := append(kvbenchArgs(c.endpoints(), 8, v.unary, d.progress != nil), "--target", "leader", "--op", row.op,
			"--clients", clients, "--conns", conns, "--total", strconv.Itoa(total), "--key-space-size", keySpace)
		if row.rate > 0 {
			args = append(args, "--rate", strconv.Itoa(row.rate))
		}
		return args
	}
	args := []string{"--endpoints", c.endpoints(), "--target-leader", "--precise", "--conns", conns, "--clients", clients}
	switch row.op {
	case cmpPut:
		args = append(args, "put", "--key-size", "8", "--val-size", "256", "--key-space-size", strconv.Itoa(d.opt.keySpace))
		if row.rate > 0 {
			args = append(args, "--rate", strconv.Itoa(row.rate))
		}
	case cmpGetL:
		args = append(args, "range", compareReadKey, "--consistency", "l")
	default:
		args = append(args, "range", compareReadKey, "--consistency", "s")
	}
	return append(args, "--total", strconv.Itoa(total))
}

// compareRun runs v's tool once for row against sys, measuring the CPU
// of the members and the tool, the members' memory and any election.
func (d *driver) compareRun(ctx context.Context, sys *failoverTarget, v compareVariant, row compareRow, res *compareResult) compareRun {
	ops := d.opt.writeOps
	if row.op != cmpPut {
		ops = d.opt.readOps
	}
	total := max(int(row.share*float64(ops)), 1)
	res.ops[row.label] = total
	b := &benchRun{bin: d.kvbench, args: d.compareArgs(sys.c, v, row, total)}
	if !v.kvbench {
		b.bin, b.parse = d.opt.etcdBenchmark, parseEtcdReport
	}
	if err := compactHistory(ctx, sys.c); err != nil {
		return compareRun{row: row.label, variant: v.name, err: err}
	}
	_, termBefore := sys.leader(ctx, sys.c.nodes)
	cpuBefore := membersCPU(sys.c)
	peak := sampleRSS(sys.c, 250*time.Millisecond)
	r, cmd, toolCPU, err := runBench(ctx, b)
	run := compareRun{row: row.label, variant: v.name, res: r, cmd: cmd, err: err, rssKiB: peak()}
	run.cpuPerOp = cpuPerRequest(sys.c, cpuBefore, toolCPU, r)
	if _, termAfter := sys.leader(ctx, sys.c.nodes); termAfter > termBefore && termBefore > 0 {
		run.elections = termAfter - termBefore
	}
	if err := sys.c.checkRunning(); err != nil && run.err == nil {
		run.err = err
	}
	return run
}

// compactHistory compacts c's history up to its current revision, through
// etcd's v3 API, which both systems serve. Every run starts so: otherwise
// KeyVal's one cluster, loaded by three load generators to etcd's one,
// would carry three times etcd's history into the later runs.
func compactHistory(ctx context.Context, c *cluster) error {
	cli, err := newEtcdClient(c)
	if err != nil {
		return err
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, compareReadKey)
	if err != nil {
		return fmt.Errorf("reading the current revision: %w", err)
	}
	// After reads nothing new was written: already compacted is done.
	_, err = cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("compacting to revision %d: %w", resp.Header.Revision, err)
	}
	return nil
}

// sampleRSS samples the resident memory of c's members every interval
// until the returned function is called, which returns the largest any
// member reached, in KiB.
func sampleRSS(c *cluster, every time.Duration) func() int64 {
	var peak int64
	sample := func() {
		for _, n := range c.nodes {
			if m, err := memKiB(n.pid()); err == nil {
				peak = max(peak, m.rss)
			}
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			sample()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() int64 {
		close(done)
		wg.Wait()
		sample()
		return peak
	}
}

// compareFailover runs --compare-failover-trials trials of each probe,
// bringing the killed member back after each.
func (d *driver) compareFailover(ctx context.Context, systems map[string]*failoverTarget, probes []compareProbe, round int, res *compareResult) []error {
	var errs []error
	for _, p := range probes {
		sys := systems[p.system]
		dial := func() (prober, error) { return dialEtcdProbe(sys.c) }
		if p.goClient {
			dial = func() (prober, error) { return dialKeyValProbe(sys.c) }
		}
		for i := range d.opt.compareTrials {
			tr := runFailoverTrial(ctx, sys, dial, d.opt.keySpace)
			res.trials = append(res.trials, compareTrial{probe: p.name, round: round, tr: tr})
			d.rep.save()
			if tr.err != nil {
				errs = append(errs, fmt.Errorf("%s, failover trial %d of round %d: %w", p.name, i+1, round+1, tr.err))
			}
			if ctx.Err() != nil {
				return errs
			}
			if _, err := sys.healthy(ctx); err != nil {
				return append(errs, fmt.Errorf("%s after a failover trial: %w", p.system, err))
			}
		}
	}
	return errs
}

// etcdProbe writes through etcd's Go client, retrying as KeyVal's client
// is told to in the failover trials: each attempt bounded, a growing pause
// between attempts, until the request's time is up.
type etcdProbe struct{ cli *clientv3.Client }

func dialEtcdProbe(c *cluster) (prober, error) {
	cli, err := newEtcdClient(c)
	if err != nil {
		return nil, err
	}
	return etcdProbe{cli}, nil
}

func (p etcdProbe) put(ctx context.Context, key, value []byte) error {
	ctx, cancel := context.WithTimeout(ctx, probeRequestTimeout)
	defer cancel()
	pause := probeBackoffBase
	for {
		actx, acancel := context.WithTimeout(ctx, probeAttemptTimeout)
		_, err := p.cli.Put(actx, string(key), string(value))
		acancel()
		if err == nil {
			return nil
		}
		if err := sleepCtx(ctx, pause); err != nil {
			return fmt.Errorf("put: %w", err)
		}
		pause = min(2*pause, probeBackoffMax)
	}
}

func (p etcdProbe) close() error { return p.cli.Close() }
