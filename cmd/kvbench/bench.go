package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/cmd/kvbench/stats"
)

// opKind says whether one operation reads or writes; a mix keeps the two
// apart so each gets its own figures.
type opKind int

const (
	kindRead opKind = iota
	kindWrite
	numKinds
)

func (k opKind) String() string {
	if k == kindRead {
		return "get"
	}
	return "put"
}

// errUnreachable marks failures to reach the cluster before any load was
// sent (exit status 3).
var errUnreachable = errors.New("cluster unreachable")

// worker is one closed-loop load source: one operation in flight at a
// time, on one connection. Its recorders and counters are its own, so
// workers never contend with each other over statistics.
type worker struct {
	c    *client.Client
	key  []byte // reused for every operation
	rng  *rand.Rand
	recs [numKinds]*stats.Recorder
	// ops and errs are read by the progress line while the worker runs.
	ops  atomic.Int64
	errs atomic.Int64
	_    [64]byte // keep the next worker's counters off this cache line
}

// bench is one run: its settings, connections and workers.
type bench struct {
	cfg     config
	value   []byte
	conns   []*client.Client
	workers []*worker
	// claimed counts operations handed out (the next one's number).
	claimed atomic.Uint64
	stopped atomic.Bool // set when --duration is up
	// start is when the timed run started: the open loop's schedule
	// counts from it.
	start time.Time
}

// scheduled is when the open loop (--rate) sends operation n: n / rate
// seconds after start.
func scheduled(start time.Time, n uint64, rate float64) time.Time {
	return start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
}

// testHookTimedStart, if set, is called when the timed run starts.
var testHookTimedStart func()

// serializableRead is the option slice for serializable gets, made once so
// the hot loop passes no fresh variadic slice.
var serializableRead = []client.ReadOption{client.Serializable}

// run measures the configured load and returns the report; progress goes to
// progress (nil: none). Errors are about setting up (cluster unreachable,
// no leader); failed operations are counted in the report instead.
func run(ctx context.Context, cfg config, progress io.Writer) (*Report, error) {
	rep := &Report{
		Tool: "kvbench", Op: cfg.op, Target: cfg.target, Clients: cfg.clients, Conns: cfg.conns,
		Total: cfg.total, DurationSeconds: cfg.duration.Seconds(), KeySize: cfg.keySize, ValSize: cfg.valSize,
		KeySpaceSize: cfg.keySpace, SequentialKeys: cfg.sequentialKeys, Unary: cfg.unary, Rate: cfg.rate,
	}
	if cfg.op == opMix {
		rep.ReadRatio = &cfg.readRatio
	}

	probe, err := client.New(client.Config{Endpoints: cfg.endpoints, RequestTimeout: cfg.requestTimeout})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer probe.Close()
	before, err := waitForCluster(ctx, probe, cfg)
	if err != nil {
		return nil, err
	}
	rep.Cluster.LeaderStart, rep.Cluster.TermStart = before.leader, before.term
	targets := cfg.endpoints
	if cfg.target == targetLeader {
		targets = []string{before.leaderEndpoint}
	}
	rep.Endpoints = targets

	b := &bench{cfg: cfg, value: makeValue(cfg.valSize)}
	defer b.close()
	if err := b.connect(ctx, targets, cfg.endpoints); err != nil {
		return nil, err
	}
	b.makeWorkers()

	dl := newDeadlines(ctx, cfg.requestTimeout)
	defer dl.close()
	b.warmUp(ctx, dl)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	rep.LoadAverage.Start = loadAverage()
	start := time.Now()
	b.start = start
	stopProgress := b.startProgress(progress, start)
	if testHookTimedStart != nil {
		testHookTimedStart()
	}
	if cfg.duration > 0 {
		t := time.AfterFunc(cfg.duration, func() { b.stopped.Store(true) })
		defer t.Stop()
	}
	var wg sync.WaitGroup
	for _, w := range b.workers {
		wg.Go(func() { b.loop(ctx, dl, w) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	rep.LoadAverage.End = loadAverage()
	rep.Interrupted = ctx.Err() != nil

	var all []*stats.Recorder
	byKind := [numKinds][]*stats.Recorder{}
	for _, w := range b.workers {
		for k, r := range w.recs {
			all = append(all, r)
			byKind[k] = append(byKind[k], r)
		}
	}
	rep.Summary = stats.Summarize(all, elapsed, cfg.buckets)
	if cfg.op == opMix {
		rep.ByOp = map[string]stats.Summary{}
		for k, recs := range byKind {
			rep.ByOp[opKind(k).String()] = stats.Summarize(recs, elapsed, cfg.buckets)
		}
	}

	// The cluster's state afterwards: a higher term means elections
	// happened while the load ran. Best effort; the run itself is done.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.requestTimeout)
	defer cancel()
	after := clusterStateOf(probe.StatusAll(actx))
	rep.Cluster.LeaderEnd, rep.Cluster.TermEnd = after.leader, after.term
	return rep, nil
}

// connect makes --conns clients: connection i starts at targets[i mod
// len(targets)] and opens its connection there before the clock starts.
// Each client also knows the other endpoints, after its own: a client stays
// with the endpoint that answers (it is told nothing that would move it
// while that works), so --target leader keeps the leader and --target all
// keeps the spread; but if the member dies mid-run, the client moves on
// rather than failing every remaining operation.
func (b *bench) connect(ctx context.Context, targets, all []string) error {
	for i := range b.cfg.conns {
		first := targets[i%len(targets)]
		eps := []string{first}
		for _, e := range all {
			if e != first {
				eps = append(eps, e)
			}
		}
		c, err := client.New(client.Config{Endpoints: eps, RequestTimeout: b.cfg.requestTimeout, Unary: b.cfg.unary})
		if err != nil {
			return fmt.Errorf("%w: connection %d to %s: %w", errUnreachable, i, first, err)
		}
		b.conns = append(b.conns, c)
		if _, err := c.Status(ctx, first); err != nil {
			return fmt.Errorf("%w: connection %d to %s: %w", errUnreachable, i, first, err)
		}
	}
	return nil
}

func (b *bench) close() {
	for _, c := range b.conns {
		_ = c.Close()
	}
}

func (b *bench) makeWorkers() {
	seed := b.cfg.seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	for i := range b.cfg.clients {
		w := &worker{
			c:   b.conns[i%len(b.conns)],
			key: make([]byte, b.cfg.keySize),
			rng: rand.New(rand.NewPCG(seed, uint64(i))),
		}
		for k := range w.recs {
			w.recs[k] = stats.NewRecorder()
		}
		b.workers = append(b.workers, w)
	}
}

// warmUp has every worker make one untimed operation at once, so that
// connection set-up and, for writes, opening a session are not in the
// figures. A failure is counted like any other.
func (b *bench) warmUp(ctx context.Context, dl *deadlines) {
	var wg sync.WaitGroup
	for i, w := range b.workers {
		wg.Go(func() {
			formatKey(w.key, uint64(i)%b.cfg.keySpace)
			k := b.pick(w)
			if err := b.do(dl.current(), w, k); err != nil && ctx.Err() == nil {
				w.recs[k].Fail("warm-up: " + errorKey(err))
			}
		})
	}
	wg.Wait()
}

// loop is a worker's hot path: claim an operation, make its key in the
// reused buffer, time the call, record into the worker's own recorder.
func (b *bench) loop(ctx context.Context, dl *deadlines, w *worker) {
	total := uint64(b.cfg.total)
	for ctx.Err() == nil && !b.stopped.Load() {
		n := b.claimed.Add(1) - 1
		if total > 0 && n >= total {
			return
		}
		if b.cfg.sequentialKeys {
			formatKey(w.key, n%b.cfg.keySpace)
		} else {
			formatKey(w.key, w.rng.Uint64N(b.cfg.keySpace))
		}
		k := b.pick(w)
		start := time.Now()
		if b.cfg.rate > 0 {
			// Open loop: wait for the operation's turn, and time it
			// from then even when every worker was busy at that moment
			// (no coordinated omission: a slow answer delays the ones
			// behind it, and their latency says so).
			due := scheduled(b.start, n, b.cfg.rate)
			if wait := due.Sub(start); wait > 0 {
				time.Sleep(wait)
			}
			if b.stopped.Load() {
				return
			}
			start = due
		}
		err := b.do(dl.current(), w, k)
		took := time.Since(start)
		if err != nil {
			if ctx.Err() != nil {
				return // interrupted: not a failure of the cluster
			}
			w.recs[k].Fail(errorKey(err))
			w.errs.Add(1)
		} else {
			w.recs[k].Observe(took)
		}
		w.ops.Add(1)
	}
}

// pick chooses the next operation's kind.
func (b *bench) pick(w *worker) opKind {
	switch b.cfg.op {
	case opPut:
		return kindWrite
	case opMix:
		if w.rng.Float64() < b.cfg.readRatio {
			return kindRead
		}
		return kindWrite
	default:
		return kindRead
	}
}

// do makes one operation of kind k on w's connection with w's key.
func (b *bench) do(ctx context.Context, w *worker, k opKind) error {
	if k == kindWrite {
		_, err := w.c.Put(ctx, w.key, b.value)
		return err
	}
	if b.cfg.op == opGetSerializable {
		_, err := w.c.Get(ctx, w.key, serializableRead...)
		return err
	}
	_, err := w.c.Get(ctx, w.key)
	return err
}

// maxErrorKey bounds the text an error is tallied under.
const maxErrorKey = 300

// errorKey is the text failures are grouped by.
func errorKey(err error) string {
	msg := err.Error()
	if len(msg) > maxErrorKey {
		msg = msg[:maxErrorKey] + "..."
	}
	return msg
}
