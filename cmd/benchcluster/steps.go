package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/client"
)

// driver runs the benchmark steps against one cluster.
type driver struct {
	opt      options
	c        *cluster
	kvbench  string
	rep      *report
	progress io.Writer // where kvbench's progress lines go (nil: nowhere)
}

// benchRow is one kvbench run with what happened to the cluster meanwhile.
type benchRow struct {
	label string
	cmd   string
	res   *benchResult
	// Elections: the highest term before and after, and the role changes
	// the members logged during the run.
	termBefore, termAfter     uint64
	leaderBefore, leaderAfter uint64
	roles                     roleChanges
	// CPU use over the run, as a percentage of one core: each member's
	// (leader first) and kvbench's. Nil where unknown.
	cpu []cpuShare
	err error
}

type cpuShare struct {
	who     string // "leader", "follower", "kvbench"
	percent float64
}

// elections is how many terms began during the run.
func (r benchRow) elections() uint64 {
	if r.termAfter > r.termBefore {
		return r.termAfter - r.termBefore
	}
	return 0
}

// commonArgs are the kvbench flags every run shares: the workload
// (256-byte values, 8-byte keys unless more digits are needed) over the
// given endpoints.
func (d *driver) commonArgs(endpoints string, keySize int) []string {
	return kvbenchArgs(endpoints, keySize, d.opt.unary, d.progress != nil)
}

// kvbenchArgs are commonArgs with the calling convention and progress
// lines chosen by the caller.
func kvbenchArgs(endpoints string, keySize int, unary, progress bool) []string {
	args := []string{
		"--endpoints", endpoints, "--key-size", strconv.Itoa(keySize), "--val-size", "256",
		"--json", "--progress=" + strconv.FormatBool(progress),
	}
	if unary {
		args = append(args, "--unary")
	}
	return args
}

// runRow runs kvbench once with args and watches terms and logs around it.
func (d *driver) runRow(ctx context.Context, label string, args []string) benchRow {
	return d.runRowWith(ctx, label, func(ctx context.Context) (*benchResult, string, time.Duration, error) {
		return runKvbench(ctx, d.kvbench, args, d.progress)
	})
}

// runRowWith runs one load generator and watches terms, CPU and logs
// around it.
func (d *driver) runRowWith(ctx context.Context, label string, bench func(context.Context) (*benchResult, string, time.Duration, error)) benchRow {
	row := benchRow{label: label}
	before := d.c.view(ctx, d.c.nodes)
	row.termBefore = before.maxTerm()
	if l, _ := before.leader(); l != nil {
		row.leaderBefore = l.id
	}
	offsets := map[*node]int64{}
	for _, n := range d.c.nodes {
		offsets[n] = logSize(n.logPath)
	}
	cpuBefore := membersCPU(d.c)
	start := time.Now()
	var benchCPU time.Duration
	row.res, row.cmd, benchCPU, row.err = bench(ctx)
	wall := time.Since(start)
	// Members in a fixed order: the leader at the end, then the others.
	after := d.c.view(ctx, d.c.nodes)
	leaderAfter, _ := after.leader()
	for _, n := range d.c.nodes {
		before, ok := cpuBefore[n]
		now, err := cpuTime(n.pid())
		if !ok || err != nil {
			continue
		}
		share := cpuShare{who: "follower", percent: 100 * (now - before).Seconds() / wall.Seconds()}
		if n == leaderAfter {
			share.who = "leader"
			row.cpu = append([]cpuShare{share}, row.cpu...)
		} else {
			row.cpu = append(row.cpu, share)
		}
	}
	row.cpu = append(row.cpu, cpuShare{who: "kvbench", percent: 100 * benchCPU.Seconds() / wall.Seconds()})
	row.termAfter = after.maxTerm()
	if l, _ := after.leader(); l != nil {
		row.leaderAfter = l.id
	}
	for _, n := range d.c.nodes {
		rc, err := readRoleChanges(n.logPath, offsets[n])
		if err != nil && row.err == nil {
			row.err = fmt.Errorf("reading node %d's log: %w", n.id, err)
		}
		row.roles.add(rc)
	}
	if err := d.c.checkRunning(); err != nil && row.err == nil {
		row.err = err
	}
	return row
}

// writeMatrix is the write table: clients / connections, and the
// share of --write-ops each row runs (the single client gets a tenth, as
// it is slow).
var writeMatrix = []struct {
	clients, conns int
	share          float64
}{{1, 1, 0.1}, {16, 4, 0.5}, {64, 8, 1}, {256, 16, 1}}

// stepWrites measures puts at each concurrency of the matrix, to the
// leader, over random keys in the key space.
func (d *driver) stepWrites(ctx context.Context) error {
	var errs []error
	for _, m := range writeMatrix {
		total := max(int(m.share*float64(d.opt.writeOps)), 1)
		args := append(d.commonArgs(d.c.endpoints(), 8), "--target", "leader", "--op", "put",
			"--clients", strconv.Itoa(m.clients), "--conns", strconv.Itoa(m.conns),
			"--total", strconv.Itoa(total), "--key-space-size", strconv.Itoa(d.opt.keySpace))
		row := d.runRow(ctx, fmt.Sprintf("%d / %d", m.clients, m.conns), args)
		d.rep.writes = append(d.rep.writes, row)
		d.rep.save()
		if row.err != nil {
			errs = append(errs, row.err)
			// With a member down the remaining rows would measure a
			// different cluster; the driver restarts it before the
			// next step.
			if ctx.Err() != nil || !d.c.allRunning() {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// stepReads preloads every key of the key space, then measures
// linearizable and serializable gets at 64 clients over 8 connections,
// both to the leader alone and spread over all members.
func (d *driver) stepReads(ctx context.Context) error {
	ks := strconv.Itoa(d.opt.keySpace)
	pre := append(d.commonArgs(d.c.endpoints(), 8), "--target", "leader", "--op", "put", "--sequential-keys",
		"--clients", "64", "--conns", "8", "--total", ks, "--key-space-size", ks)
	row := d.runRow(ctx, "preload", pre)
	d.rep.preload = &row
	d.rep.save()
	if row.err != nil {
		return fmt.Errorf("preloading the key space: %w", row.err)
	}
	var errs []error
	for _, r := range []struct{ op, target string }{
		{"get", "leader"}, {"get", "all"}, {"get-serializable", "leader"}, {"get-serializable", "all"},
	} {
		args := append(d.commonArgs(d.c.endpoints(), 8), "--target", r.target, "--op", r.op,
			"--clients", "64", "--conns", "8", "--total", strconv.Itoa(d.opt.readOps), "--key-space-size", ks)
		row := d.runRow(ctx, r.op+" → "+r.target, args)
		d.rep.reads = append(d.rep.reads, row)
		d.rep.save()
		if row.err != nil {
			errs = append(errs, row.err)
			// With a member down the remaining rows would measure a
			// different cluster; the driver restarts it before the
			// next step.
			if ctx.Err() != nil || !d.c.allRunning() {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// rssResult is the memory of each member over a sustained-overwrite run.
type rssResult struct {
	// preload, if the step wrote the key space once first (not sampled):
	// run alone, the step would otherwise measure the store growing to
	// its size rather than memory at a steady size.
	preload  *benchRow
	row      benchRow
	duration time.Duration
	nodes    []rssSeries
}

type rssSeries struct {
	id      uint64
	samples []int64 // KiB, one a second
	// anon and file split each sample into its anonymous part (Go's heap,
	// stacks) and its file-backed part (bbolt's memory map, the binary).
	anon, file []int64
	// compactions counts the times the member's first log index moved
	// forward: each is a snapshot followed by compaction.
	compactions int
	// steadyFrom is the sample taken right after the first compaction:
	// from there on the log has filled to the snapshot interval once, so
	// the samples show the steady state rather than the climb to it.
	steadyFrom int
	// compactedAt holds, for each compaction, the first sample taken
	// after it.
	compactedAt []int
}

// cycles returns the highest and lowest sample of each complete snapshot
// cycle: the samples after one compaction up to and including the first
// after the next. The in-memory log fills and empties once per cycle, so
// memory is a sawtooth whose teeth should match from cycle to cycle;
// growth shows as teeth getting taller.
func (s rssSeries) cycles() (peaks, troughs []int64) { return cyclesOf(s.samples, s.compactedAt) }

// cyclesOf is cycles over any of the series' samples (all, anon, file).
func cyclesOf(samples []int64, compactedAt []int) (peaks, troughs []int64) {
	for i := 1; i < len(compactedAt); i++ {
		if compactedAt[i]+1 > len(samples) {
			break
		}
		window := samples[compactedAt[i-1]+1 : compactedAt[i]+1]
		if len(window) == 0 {
			continue
		}
		peaks = append(peaks, slices.Max(window))
		troughs = append(troughs, slices.Min(window))
	}
	return peaks, troughs
}

// stepRSS overwrites keys of the key space for --rss-duration at 64
// clients, sampling every member's VmRSS once a second, and counts the
// snapshots (log compactions) the members take meanwhile.
func (d *driver) stepRSS(ctx context.Context) error {
	res := &rssResult{duration: d.opt.rssDuration}
	d.rep.rss = res
	if d.rep.preload == nil { // the reads step has not written every key
		ks := strconv.Itoa(d.opt.keySpace)
		pre := append(d.commonArgs(d.c.endpoints(), 8), "--target", "leader", "--op", "put", "--sequential-keys",
			"--clients", "64", "--conns", "8", "--total", ks, "--key-space-size", ks)
		row := d.runRow(ctx, "preload", pre)
		res.preload = &row
		d.rep.save()
		if row.err != nil {
			return fmt.Errorf("preloading the key space: %w", row.err)
		}
	}
	series := make([]rssSeries, len(d.c.nodes))
	firstIndex := make([]uint64, len(d.c.nodes))
	for i, n := range d.c.nodes {
		series[i].id = n.id
	}
	sample := func() error {
		v := d.c.view(ctx, d.c.nodes)
		for i, n := range d.c.nodes {
			pid := n.pid()
			if pid == 0 {
				return fmt.Errorf("node %d is not running", n.id)
			}
			m, err := memKiB(pid)
			if err != nil {
				return fmt.Errorf("node %d: %w", n.id, err)
			}
			series[i].samples = append(series[i].samples, m.rss)
			series[i].anon = append(series[i].anon, m.anon)
			series[i].file = append(series[i].file, m.file)
			if st, ok := v.st[n]; ok {
				if firstIndex[i] != 0 && st.FirstIndex > firstIndex[i] {
					series[i].compactions++
					series[i].compactedAt = append(series[i].compactedAt, len(series[i].samples)-1)
					if series[i].compactions == 1 {
						series[i].steadyFrom = len(series[i].samples) - 1
					}
				}
				firstIndex[i] = max(firstIndex[i], st.FirstIndex)
			}
		}
		return nil
	}

	args := append(d.commonArgs(d.c.endpoints(), 8), "--target", "leader", "--op", "put",
		"--clients", "64", "--conns", "8", "--duration", d.opt.rssDuration.String(),
		"--key-space-size", strconv.Itoa(d.opt.keySpace))
	rowDone := make(chan benchRow, 1)
	go func() { rowDone <- d.runRow(ctx, "sustained overwrite", args) }()
	var sampleErr error
	if err := sample(); err != nil {
		sampleErr = err
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
loop:
	for {
		select {
		case row := <-rowDone:
			res.row = row
			break loop
		case <-t.C:
			if err := sample(); err != nil && sampleErr == nil {
				sampleErr = err
			}
		}
	}
	if sampleErr == nil {
		sampleErr = sample()
	}
	res.nodes = series
	d.rep.save()
	return errors.Join(res.row.err, sampleErr)
}

// failoverTrial is one kill -9 of the leader under a steady writer.
type failoverTrial struct {
	killed      uint64
	oldTerm     uint64
	newLeader   uint64
	newTerm     uint64
	toAck       time.Duration // kill → first acknowledged write begun after the kill
	toLeader    time.Duration // kill → a survivor first reported being leader (polled)
	writeErrors int64
	acks        int64
	err         error
}

type failoverResult struct {
	writers int
	trials  []failoverTrial
}

// failoverWriters is how many goroutines keep writing during a trial; more
// than one so a write stuck on the dead leader does not hide the moment
// the new leader starts acknowledging.
const failoverWriters = 4

// stepFailover runs --failover-trials trials: with writers running, kill
// -9 the leader, time until a write begun after the kill is acknowledged,
// then restart the killed member and wait until it has caught up.
func (d *driver) stepFailover(ctx context.Context) error {
	res := &failoverResult{writers: failoverWriters}
	d.rep.failover = res
	var errs []error
	for i := range d.opt.failoverTrials {
		tr := d.failoverTrial(ctx)
		res.trials = append(res.trials, tr)
		d.rep.save()
		if tr.err != nil {
			errs = append(errs, fmt.Errorf("trial %d: %w", i+1, tr.err))
			if ctx.Err() != nil {
				break
			}
		}
		// Bring the killed member back before the next trial.
		if err := d.recover(ctx); err != nil {
			errs = append(errs, fmt.Errorf("after trial %d: %w", i+1, err))
			break
		}
	}
	return errors.Join(errs...)
}

// failoverTarget is a cluster as a failover trial sees it: KeyVal's or
// etcd's, each asked about its leader in its own way.
type failoverTarget struct {
	c *cluster
	// leader is the member of nodes that claims to lead with the highest
	// term, and that term (nil if none does).
	leader func(ctx context.Context, nodes []*node) (*node, uint64)
	// healthy starts any member that is down and waits until all three
	// follow one leader and have caught up; it returns the leader.
	healthy func(ctx context.Context) (*node, error)
}

// keyvalTarget is the driver's KeyVal cluster.
func (d *driver) keyvalTarget() *failoverTarget {
	return &failoverTarget{
		c:      d.c,
		leader: func(ctx context.Context, nodes []*node) (*node, uint64) { return d.c.view(ctx, nodes).leader() },
		healthy: func(ctx context.Context) (*node, error) {
			if err := d.c.startStopped(); err != nil {
				return nil, err
			}
			return d.c.waitHealthy(ctx, d.c.nodes, 2*time.Minute)
		},
	}
}

func (d *driver) failoverTrial(ctx context.Context) failoverTrial {
	c := d.c
	return runFailoverTrial(ctx, d.keyvalTarget(), func() (prober, error) { return dialKeyValProbe(c) }, d.opt.keySpace)
}

// runFailoverTrial kills t's leader under writers that write through the
// client dial returns, and times the first acknowledgement of a write
// begun after the kill.
func runFailoverTrial(ctx context.Context, t *failoverTarget, dial func() (prober, error), keySpace int) (tr failoverTrial) {
	leader, err := t.healthy(ctx)
	if err != nil {
		tr.err = err
		return tr
	}
	_, tr.oldTerm = t.leader(ctx, []*node{leader})
	tr.killed = leader.id

	p, err := dial()
	if err != nil {
		tr.err = err
		return tr
	}
	w := startFailoverWriter(ctx, p, keySpace)
	defer func() { tr.acks, tr.writeErrors = w.stop() }()
	// Let the writers settle into a steady state before the kill.
	if err := w.waitAcks(ctx, 20, 30*time.Second); err != nil {
		tr.err = fmt.Errorf("before the kill: %w", err)
		return tr
	}

	killedAt := time.Now()
	if err := leader.kill(); err != nil {
		tr.err = err
		return tr
	}
	// Writes begun from now on cannot be answered by the dead leader.
	w.killed(time.Now())

	survivors := slices.DeleteFunc(slices.Clone(t.c.nodes), func(n *node) bool { return n == leader })
	deadline := killedAt.Add(30 * time.Second)
	for tr.toAck == 0 || tr.newLeader == 0 {
		if tr.newLeader == 0 {
			if l, term := t.leader(ctx, survivors); l != nil && term > tr.oldTerm {
				tr.toLeader, tr.newLeader, tr.newTerm = time.Since(killedAt), l.id, term
			}
		}
		if at := w.firstAck(); at != 0 && tr.toAck == 0 {
			tr.toAck = time.Duration(at - killedAt.UnixNano())
		}
		if time.Now().After(deadline) {
			tr.err = fmt.Errorf("no write acknowledged (new leader: %d) within %v of killing leader %d",
				tr.newLeader, 30*time.Second, leader.id)
			return tr
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			tr.err = err
			return tr
		}
	}
	return tr
}

// prober is the client a failover trial's writers write through: KeyVal's
// Go client, or etcd's. Both retry a write the same way (probe* below)
// until it is acknowledged or the request times out.
type prober interface {
	put(ctx context.Context, key, value []byte) error
	close() error
}

// How the failover writers' clients retry: quickly, so that the
// measurement shows the cluster's failover rather than the client's
// backoff (at most 50 ms instead of KeyVal's default 500 ms), and long
// enough that the dead member's refusals cannot use a write up before
// the election is over.
const (
	probeBackoffBase    = 5 * time.Millisecond
	probeBackoffMax     = 50 * time.Millisecond
	probeAttemptTimeout = 2 * time.Second
	probeRequestTimeout = 20 * time.Second
)

// keyvalProbe writes through KeyVal's Go client, which retries by itself.
type keyvalProbe struct{ c *client.Client }

func dialKeyValProbe(c *cluster) (prober, error) {
	cl, err := client.New(client.Config{
		Endpoints:   []string{c.nodes[0].clientAddr, c.nodes[1].clientAddr, c.nodes[2].clientAddr},
		BackoffBase: probeBackoffBase, BackoffMax: probeBackoffMax,
		MaxRetries:     1 << 20,
		AttemptTimeout: probeAttemptTimeout,
		RequestTimeout: probeRequestTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("connecting KeyVal's client: %w", err)
	}
	return keyvalProbe{cl}, nil
}

func (p keyvalProbe) put(ctx context.Context, key, value []byte) error {
	_, err := p.c.Put(ctx, key, value)
	return err
}

func (p keyvalProbe) close() error { return p.c.Close() }

// failoverWriter keeps a few writes in flight through a client that knows
// every member, and notes the first acknowledgement of a write begun after
// the leader was killed.
type failoverWriter struct {
	p        prober
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	killedAt atomic.Int64 // UnixNano; 0 until the kill
	first    atomic.Int64 // UnixNano of that first acknowledgement
	acks     atomic.Int64
	errs     atomic.Int64
}

func startFailoverWriter(ctx context.Context, p prober, keySpace int) *failoverWriter {
	wctx, cancel := context.WithCancel(ctx)
	w := &failoverWriter{p: p, cancel: cancel}
	value := make([]byte, 256)
	for i := range failoverWriters {
		w.wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
			key := make([]byte, 8)
			for wctx.Err() == nil {
				copy(key, fmt.Sprintf("%08d", rng.IntN(keySpace)))
				began := time.Now().UnixNano()
				if err := p.put(wctx, key, value); err != nil {
					if wctx.Err() == nil {
						w.errs.Add(1)
					}
					continue
				}
				w.acks.Add(1)
				if k := w.killedAt.Load(); k != 0 && began >= k {
					w.first.CompareAndSwap(0, time.Now().UnixNano())
				}
			}
		})
	}
	return w
}

func (w *failoverWriter) killed(at time.Time) { w.killedAt.Store(at.UnixNano()) }
func (w *failoverWriter) firstAck() int64     { return w.first.Load() }

// waitAcks waits until n writes have been acknowledged.
func (w *failoverWriter) waitAcks(ctx context.Context, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for w.acks.Load() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d writes acknowledged in %v (%d failed)", w.acks.Load(), timeout, w.errs.Load())
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// stop ends the writers and returns the acknowledged and failed counts.
func (w *failoverWriter) stop() (acks, errs int64) {
	w.cancel()
	w.wg.Wait()
	_ = w.p.close()
	return w.acks.Load(), w.errs.Load()
}

// catchupResult is a follower restarted behind many writes.
type catchupResult struct {
	keys       int
	follower   uint64
	load       benchRow
	target     uint64        // the leader's commit index when the follower restarted
	targetRev  uint64        // and its store's revision
	toAnswer   time.Duration // restart → first Status answer
	toCaughtUp time.Duration // restart → applied ≥ target
	snapshots  int           // "received snapshot" lines in its log after the restart
	// The follower's memory once caught up, with its peak since the
	// restart (opening, and a snapshot's restore if it got one).
	mem residentKiB
	// The leader's data directory after the load: in all, and its WAL,
	// snapshots and bbolt file.
	dataBytes, walBytes, snapBytes, stateBytes int64
}

// stepCatchup stops a follower cleanly, writes --catchup-keys distinct
// keys through the others, restarts it and times how long it takes until
// it has applied everything the leader had committed.
func (d *driver) stepCatchup(ctx context.Context) error {
	res := &catchupResult{keys: d.opt.catchupKeys}
	d.rep.catchup = res
	leader, err := d.c.waitHealthy(ctx, d.c.nodes, time.Minute)
	if err != nil {
		return err
	}
	var follower *node
	for _, n := range d.c.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	res.follower = follower.id
	if err := follower.stop(30 * time.Second); err != nil {
		return err
	}

	keys := strconv.Itoa(d.opt.catchupKeys)
	// Keys wide enough for the count; 256 writers so the leader can batch
	// many writes per fsync.
	keySize := max(8, len(strconv.Itoa(d.opt.catchupKeys-1)))
	args := append(d.commonArgs(d.c.endpoints(follower), keySize), "--target", "leader", "--op", "put", "--sequential-keys",
		"--clients", "256", "--conns", "16", "--total", keys, "--key-space-size", keys)
	res.load = d.runRow(ctx, "catch-up load", args)
	d.rep.save()
	if res.load.err != nil {
		return fmt.Errorf("writing %s keys with node %d down: %w", keys, follower.id, res.load.err)
	}
	live := slices.DeleteFunc(slices.Clone(d.c.nodes), func(n *node) bool { return n == follower })
	leader, err = d.c.waitHealthy(ctx, live, time.Minute)
	if err != nil {
		return err
	}
	st, err := statusOf(ctx, leader.clientAddr, 5*time.Second)
	if err != nil {
		return err
	}
	res.target, res.targetRev = st.Commit, st.Revision
	res.dataBytes = dirSize(leader.dataDir)
	res.walBytes = dirSize(filepath.Join(leader.dataDir, "wal"))
	res.snapBytes = dirSize(filepath.Join(leader.dataDir, "snap"))
	res.stateBytes = dirSize(filepath.Join(leader.dataDir, "state.db"))

	offset := logSize(follower.logPath)
	restarted := time.Now()
	if err := d.c.start(follower); err != nil {
		return err
	}
	deadline := restarted.Add(d.opt.catchupTimeout)
	for {
		if err := follower.crashed(); err != nil {
			return err
		}
		st, err := statusOf(ctx, follower.clientAddr, time.Second)
		if err == nil {
			if res.toAnswer == 0 {
				res.toAnswer = time.Since(restarted)
			}
			// The revision too: a member reports the snapshot's index as
			// applied as soon as it takes the snapshot in, before its
			// store is restored from it.
			if st.Applied >= res.target && st.Revision >= res.targetRev {
				res.toCaughtUp = time.Since(restarted)
				if m, err := memKiB(follower.pid()); err == nil {
					res.mem = m
				}
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %d had not caught up %v after restarting (applied %d of %d, revision %d of %d; last error %v)",
				follower.id, d.opt.catchupTimeout, st.Applied, res.target, st.Revision, res.targetRev, err)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	res.snapshots = countLines(follower.logPath, offset, "received snapshot")
	d.rep.save()
	return nil
}

// recover restarts any member that is down and waits for a healthy
// cluster.
func (d *driver) recover(ctx context.Context) error {
	_, err := d.keyvalTarget().healthy(ctx)
	return err
}
