package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/client"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// Config is one chaos run.
type Config struct {
	Duration time.Duration // how long faults are injected
	Nodes    int           // cluster size (3 or 5; 1-9 accepted)
	Seed     int64         // decides the schedule and the clients' choices
	Nemeses  string        // "all" or a comma-separated list of Nemeses names
	OutDir   string        // history, visualization, logs and data go here
	Keyvald  string        // path of the keyvald binary
	// Clients is the number of workers doing put/get/delete/CAS; besides
	// them one reader per node reads from that node only (PinnedReaders).
	Clients       int
	PinnedReaders bool
	Keys          int           // size of the key space
	Think         time.Duration // pause between one client's operations
	// SnapshotInterval is passed to keyvald. Zero: the seed chooses (see
	// SnapshotIntervalFor).
	SnapshotInterval uint64
	// CatchUpEntries is passed to keyvald as --snapshot-catchup-entries.
	// Zero: the seed chooses (see CatchUpEntriesFor).
	CatchUpEntries uint64
	// Loopback runs on 127.0.0.1 even as root (no partitions).
	Loopback bool
	// CheckTimeout bounds Porcupine's search; if it runs out the run fails.
	CheckTimeout time.Duration
	// KeepData keeps the members' data directories after a passing run.
	KeepData bool
	// Progress receives the event lines as they happen (nil: none).
	Progress io.Writer
}

// Defaults fills the zero fields of c.
func (c *Config) defaults() {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Nemeses == "" {
		c.Nemeses = "all"
	}
	if c.Clients == 0 {
		c.Clients = 5
	}
	if c.Keys == 0 {
		c.Keys = 8
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = SnapshotIntervalFor(c.Seed)
	}
	if c.CatchUpEntries == 0 {
		c.CatchUpEntries = CatchUpEntriesFor(c.Seed, c.SnapshotInterval)
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = 2 * time.Minute
	}
}

// SnapshotIntervalFor is the keyvald --snapshot-interval a seed chooses:
// half the seeds snapshot every 1,000 entries, so members that fall behind
// catch up by InstallSnapshot (and the snapshot paths are exercised), half
// every 100,000 (never within a run of a few minutes), so they catch up
// from the log alone. Each hides bugs the other shows: a fresh snapshot
// replaces a follower's log, divergent entries included.
func SnapshotIntervalFor(seed int64) uint64 {
	if rand.New(rand.NewPCG(uint64(seed), 0x736e6170)).IntN(2) == 0 { // "snap"
		return 1000
	}
	return 100000
}

// CatchUpEntriesFor is the keyvald --snapshot-catchup-entries a seed
// chooses: with snapshots every 1,000 entries, the interval itself (the
// in-memory log is never cut between snapshots); with snapshots every
// 100,000, half the seeds keep the whole log in memory (members catch up
// from it alone), half cut it to 500 entries, so that a member that was
// gone while more was written is caught up by a snapshot its leader takes
// on demand.
func CatchUpEntriesFor(seed int64, interval uint64) uint64 {
	if interval < 100000 || rand.New(rand.NewPCG(uint64(seed), 0x637574)).IntN(2) == 0 { // "cut"
		return interval
	}
	return 500
}

func (c *Config) validate() error {
	switch {
	case c.Duration < 10*time.Second:
		return fmt.Errorf("--duration %v: at least 10s (warm-up and cool-down alone take 8s)", c.Duration)
	case c.Nodes < 1 || c.Nodes > MaxNetnsNodes:
		return fmt.Errorf("--nodes %d: want 1 to %d (3 or 5 are the usual)", c.Nodes, MaxNetnsNodes)
	case c.Keyvald == "":
		return errors.New("--keyvald: path of the keyvald binary needed")
	case c.OutDir == "":
		return errors.New("--out: an output directory is needed")
	case c.Clients < 1 || c.Keys < 1:
		return fmt.Errorf("--clients %d, --keys %d: at least 1 each", c.Clients, c.Keys)
	}
	if _, err := os.Stat(c.Keyvald); err != nil {
		return fmt.Errorf("--keyvald: %w (build it with make build)", err)
	}
	return nil
}

// Run runs one chaos test and returns its report. It removes every process
// and network object it created on every way out: a finished run, an error,
// a panic in one of its goroutines, or ctx being cancelled (SIGINT/SIGTERM in
// kvchaos). The error is for the harness itself failing (cannot set up, ctx
// cancelled, cleanup incomplete); what the run found about keyvald is in the
// report (Pass, Lost, Problems, ...).
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	keyvald, err := filepath.Abs(cfg.Keyvald)
	if err != nil {
		return nil, err
	}
	out, err := filepath.Abs(cfg.OutDir)
	if err != nil {
		return nil, err
	}
	// A member started on an old data directory would resume an old
	// cluster's state, which the history knows nothing about.
	for _, old := range []string{"data", "history.json"} {
		if _, err := os.Stat(filepath.Join(out, old)); err == nil {
			return nil, fmt.Errorf("--out %s already holds a run (%s): choose a new directory", out, old)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", out, err)
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, format+"\n", args...) }

	lock, err := acquireRunLock()
	if err != nil {
		return nil, err
	}
	defer lock.release()
	if removed, err := cleanupLocked(); err != nil {
		return nil, fmt.Errorf("removing what an earlier run left behind: %w", err)
	} else if len(removed) > 0 {
		say("removed leftovers of an earlier run: %s", strings.Join(removed, ", "))
	}

	start := time.Now()
	events := newEventLog(start, progress)
	rep = &Report{Seed: cfg.Seed, Nodes: cfg.Nodes, Duration: cfg.Duration, OutDir: out,
		Faults: map[string]int{}, FaultVariants: map[string]int{}}

	var hosts Hosts
	if !cfg.Loopback {
		h, err := newNetnsHosts(cfg.Nodes)
		if err != nil {
			say("NOTE: no network namespaces (%v): running on 127.0.0.1, without partitions", err)
		} else {
			hosts = h
		}
	}
	if hosts == nil {
		h, err := newLoopbackHosts(cfg.Nodes)
		if err != nil {
			return nil, err
		}
		hosts = h
	}
	// Deferred in this order so that the members die before their
	// namespaces go; a cleanup failure (something left behind) is an error.
	defer func() {
		if cerr := hosts.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up the network: %w", cerr))
		}
	}()
	rep.Hosts = hosts.Describe()
	say("hosts: %s", rep.Hosts)

	kinds, skipped, err := SelectNemeses(cfg.Nemeses, hosts.CanPartition())
	if err != nil {
		return nil, err
	}
	rep.Skipped = skipped
	for _, k := range kinds {
		rep.Nemeses = append(rep.Nemeses, k.Name)
	}
	if len(skipped) > 0 {
		say("NOTE: skipping %s: they need network namespaces (run as root)", strings.Join(skipped, ", "))
	}
	rep.Schedule, err = PlanSchedule(ScheduleConfig{Seed: cfg.Seed, Nodes: cfg.Nodes, Duration: cfg.Duration, Kinds: kinds})
	if err != nil {
		return nil, err
	}
	rep.SnapshotInterval, rep.CatchUpEntries = cfg.SnapshotInterval, cfg.CatchUpEntries
	say("seed %d: %d faults planned over %v from %s; keyvald --snapshot-interval %d --snapshot-catchup-entries %d", cfg.Seed, len(rep.Schedule), cfg.Duration,
		strings.Join(rep.Nemeses, ", "), cfg.SnapshotInterval, cfg.CatchUpEntries)

	// The members talk over the test's own private bridge, without peer TLS:
	// keyvald refuses a non-loopback peer address in plaintext unless told.
	args := []string{"--snapshot-interval", fmt.Sprint(cfg.SnapshotInterval), "--snapshot-catchup-entries", fmt.Sprint(cfg.CatchUpEntries), "--peer-insecure"}
	cl, err := newCluster(hosts, cfg.Nodes, keyvald, out, args, events)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := cl.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("stopping the members: %w", cerr))
		}
	}()
	rep.Logs = cl.logPaths()

	// runCtx ends on the caller's cancellation or a panic in any goroutine
	// of the run.
	runCtx, cancelRun := context.WithCancel(ctx)
	var panicMu sync.Mutex
	var panics []string
	var wg sync.WaitGroup
	spawn := func(name string, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					panicMu.Lock()
					panics = append(panics, fmt.Sprintf("panic in %s: %v\n%s", name, p, debug.Stack()))
					panicMu.Unlock()
					cancelRun()
				}
			}()
			f()
		}()
	}
	// No goroutine of the run outlives it (cancelling first, in case Run
	// itself is unwinding from a panic).
	defer func() { cancelRun(); wg.Wait() }()

	r := &runner{cfg: cfg, rep: rep, cl: cl, events: events, out: out, say: say, watch: &leaderWatch{}}
	r.work = &workload{rec: lin.NewRecorder(), clock: events.since, keys: cfg.Keys, think: cfg.Think}

	err = r.run(runCtx, kinds, spawn)
	rep.NodeIDs = cl.IDs()
	panicMu.Lock()
	rep.Problems = append(rep.Problems, panics...)
	panicMu.Unlock()
	rep.Elapsed = time.Since(start)
	if ctx.Err() != nil {
		rep.Interrupted = true
	}
	rep.decide()
	if rep.Pass && !cfg.KeepData {
		_ = cl.KillAll() // already stopped; makes sure before the data goes
		_ = os.RemoveAll(filepath.Join(out, "data"))
	}
	if werr := writeJSON(filepath.Join(out, "report.json"), rep, true); werr != nil {
		err = errors.Join(err, werr)
	}
	if rep.Interrupted {
		err = errors.Join(err, fmt.Errorf("interrupted: %w", context.Cause(ctx)))
	}
	return rep, err
}

// runner holds one run's moving parts.
type runner struct {
	cfg    Config
	rep    *Report
	cl     *cluster
	events *eventLog
	out    string
	work   *workload
	watch  *leaderWatch
	// watcher is the watch workload (watch.go), locks the lock workload
	// (lock.go).
	watcher *watcher
	locks   *lockLog
	say     func(format string, args ...any)
}

func (r *runner) leaderFigures() {
	r.watch.mu.Lock()
	defer r.watch.mu.Unlock()
	r.rep.LeaderElections, r.rep.LeaderChanges, r.rep.FinalTerm = r.watch.elections, r.watch.changes, r.watch.maxTerm
}

func (r *runner) run(ctx context.Context, kinds []Nemesis, spawn func(string, func())) error {
	cl, events := r.cl, r.events
	for i := range cl.nodes {
		if err := cl.launch(i); err != nil {
			return err
		}
	}
	for i := range cl.nodes {
		if err := cl.waitAnswering(ctx, i); err != nil {
			return r.abort(ctx, err)
		}
	}
	if _, err := cl.Leader(ctx); err != nil {
		return r.abort(ctx, fmt.Errorf("the new cluster elected no leader: %w", err))
	}
	events.note("cluster up: %d members", cl.Size())

	watch := r.watch
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	spawn("leader watch", func() { cl.watchLeaders(watchCtx, watch) })

	// The watch workload follows every change from the first revision.
	var err error
	if r.watcher, err = newWatcher(endpoints(cl)); err != nil {
		return r.abort(ctx, err)
	}
	watcherCtx, stopWatcher := context.WithCancel(ctx)
	defer stopWatcher()
	var watching sync.WaitGroup
	watching.Add(1)
	spawn("watcher", func() { defer watching.Done(); r.watcher.run(watcherCtx) })

	stopCh := make(chan struct{})
	var stopOnce sync.Once
	stopWork := func() { stopOnce.Do(func() { close(stopCh) }) }
	defer stopWork()
	var workers sync.WaitGroup
	var clients []*client.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	endpoints := endpoints(cl)
	for id := 1; id <= r.cfg.Clients; id++ {
		w, err := newWorker(id, endpoints, r.work, r.cfg.Seed)
		if err != nil {
			return r.abort(ctx, err)
		}
		clients = append(clients, w.cl)
		workers.Add(1)
		spawn(fmt.Sprintf("worker %d", id), func() { defer workers.Done(); w.run(ctx, stopCh) })
	}
	// The lock workload: three lockers on the lock and what it guards.
	r.locks = &lockLog{}
	for id := 1; id <= 3; id++ {
		lk := newLocker(id, endpoints, r.locks, r.cfg.Seed)
		workers.Add(1)
		spawn(fmt.Sprintf("locker %d", id), func() { defer workers.Done(); lk.run(ctx, stopCh) })
	}
	if r.cfg.PinnedReaders {
		for i := range endpoints {
			p, err := newPinnedReader(i, endpoints[i], r.work, r.cfg.Seed)
			if err != nil {
				return r.abort(ctx, err)
			}
			clients = append(clients, p.cl)
			workers.Add(1)
			spawn(fmt.Sprintf("pinned reader %d", i+1), func() { defer workers.Done(); p.run(ctx, stopCh) })
		}
	}

	// The faults, one after another, until the duration is up.
	if err := r.runSchedule(ctx, kinds); err != nil && ctx.Err() == nil {
		cl.problem("%v", err)
	}
	if ctx.Err() != nil {
		stopWork()
		workers.Wait()
		return r.abort(ctx, ctx.Err())
	}

	// Heal, and check the cluster makes progress again.
	events.note("end of faults: healing everything")
	if err := cl.HealAll(ctx); err != nil {
		cl.problem("healing at the end: %v", err)
	}
	healed := events.since()
	if err := r.waitProgress(ctx, healed); err != nil {
		cl.problem("%v", err)
	}
	stopWork()
	workers.Wait()
	events.note("clients stopped")
	if ctx.Err() != nil {
		return r.abort(ctx, ctx.Err())
	}

	// Final state: once every member has applied the whole log, read every
	// key linearizably (recorded: the checker then also sees lost writes)
	// and from each member's own state.
	final, perNode := FinalState{Keys: map[string]KeyState{}}, make([]map[string]KeyState, cl.Size())
	if _, err := cl.Converge(ctx); err != nil {
		cl.problem("%v", err)
	} else {
		final, perNode = r.finalReads(ctx, endpoints)
	}
	r.awaitWatcher(ctx, final.Revision)
	stopWatcher()
	watching.Wait()
	stopWatch()
	r.leaderFigures()
	if err := cl.StopAll(ctx); err != nil {
		cl.problem("stopping the members: %v", err)
	}
	events.note("members stopped")

	r.judge(final, perNode)
	return r.writeArtifacts()
}

// abort ends a run that cannot go on: the members are killed, what was
// recorded is saved, and err is reported.
func (r *runner) abort(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		r.events.note("interrupted: stopping")
	} else {
		r.cl.problem("%v", err)
	}
	_ = r.cl.KillAll()
	r.leaderFigures()
	r.rep.Problems = append(r.rep.Problems, r.cl.Problems()...)
	r.rep.countOps(r.work.rec.History())
	r.rep.Verdict = notChecked
	if werr := r.writeArtifacts(); werr != nil {
		err = errors.Join(err, werr)
	}
	if ctx.Err() != nil {
		return nil // the caller reports the interruption
	}
	return err
}

// runSchedule injects the planned faults in order, each no earlier than
// its planned time, and returns when the duration is up.
func (r *runner) runSchedule(ctx context.Context, kinds []Nemesis) error {
	start := r.events.start
	for n, step := range r.rep.Schedule {
		if err := hold(ctx, time.Until(start.Add(step.At))); err != nil {
			return err
		}
		if time.Since(start) >= r.cfg.Duration {
			r.events.note("time is up: %d planned faults not run", len(r.rep.Schedule)-n)
			break
		}
		kind, ok := NemesisByName(step.Fault.Kind)
		if !ok {
			return fmt.Errorf("schedule names unknown nemesis %q", step.Fault.Kind)
		}
		r.rep.Faults[kind.Name]++
		r.rep.FaultVariants[kind.Name+"/"+step.Fault.Variant]++
		r.events.note("fault %d: %v", n+1, step.Fault)
		if err := kind.Inject(ctx, r.cl, step.Fault); err != nil {
			return fmt.Errorf("fault %d (%v): %w", n+1, step.Fault, err)
		}
	}
	return hold(ctx, time.Until(start.Add(r.cfg.Duration)))
}

// waitProgress waits until a write is acknowledged after since (run clock).
func (r *runner) waitProgress(ctx context.Context, since int64) error {
	const limit = 30 * time.Second
	deadline := time.Now().Add(limit)
	for r.work.lastAck.Load() <= since {
		if time.Now().After(deadline) {
			return fmt.Errorf("no write was acknowledged within %v after every fault was healed", limit)
		}
		if err := hold(ctx, pollInterval); err != nil {
			return err
		}
	}
	r.events.note("writes acknowledged again %v after healing", time.Duration(r.work.lastAck.Load()-since).Round(time.Millisecond))
	return nil
}

// finalReads reads every key linearizably through any member (recorded in
// the history) and serializably from each member's own state.
func (r *runner) finalReads(ctx context.Context, endpoints []string) (FinalState, []map[string]KeyState) {
	final := FinalState{Keys: map[string]KeyState{}}
	perNode := make([]map[string]KeyState, len(endpoints))
	all, err := client.New(client.Config{Endpoints: endpoints, RequestTimeout: 10 * time.Second, MaxRetries: 1000})
	if err != nil {
		r.cl.problem("final reads: %v", err)
		return final, perNode
	}
	defer all.Close()
	for k := 0; k < r.cfg.Keys; k++ {
		key := keyName(k)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		id := r.work.rec.Call(finalReader, lin.Get(key), r.work.clock())
		res, err := all.Get(rctx, []byte(key))
		cancel()
		if err != nil {
			_ = r.work.rec.Drop(id)
			r.cl.problem("final read of %s: %v", key, err)
			continue
		}
		ks := KeyState{Found: res.Found, Value: string(res.Value), Version: res.Version}
		out := lin.GetNotFound()
		if res.Found {
			out = lin.GetFound(ks.Value, ks.Version)
		}
		_ = r.work.rec.Return(id, out, r.work.clock())
		final.Keys[key] = ks
		final.Revision = max(final.Revision, res.Revision)
	}
	for i, ep := range endpoints {
		one, err := client.New(client.Config{Endpoints: []string{ep}, RequestTimeout: 10 * time.Second})
		if err != nil {
			r.cl.problem("local reads on %s: %v", nodeName(i), err)
			continue
		}
		perNode[i] = map[string]KeyState{}
		for k := 0; k < r.cfg.Keys; k++ {
			key := keyName(k)
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			res, err := one.Get(rctx, []byte(key), client.Serializable)
			cancel()
			if err != nil {
				r.cl.problem("local read of %s on %s: %v", key, nodeName(i), err)
				continue
			}
			perNode[i][key] = KeyState{Found: res.Found, Value: string(res.Value), Version: res.Version}
		}
		one.Close()
	}
	return final, perNode
}

// judge checks the history and the final state and fills the report.
func (r *runner) judge(final FinalState, perNode []map[string]KeyState) {
	rep := r.rep
	h := r.work.rec.History()
	rep.countOps(h)
	r.events.note("checking %d operations for linearizability", len(h.Ops))
	writes := r.work.writes.all()
	if len(final.Keys) != r.cfg.Keys {
		r.cl.problem("the final state is incomplete (%d of %d keys read): lost writes not checked", len(final.Keys), r.cfg.Keys)
	}
	v := Judge(h, writes, final, perNode, r.cfg.CheckTimeout)
	if r.watcher != nil {
		events, through, failed := r.watcher.result()
		rep.Watch = WatchReport{Events: len(events), Through: through, Problems: CheckWatch(events, writes, through)}
		if failed != "" {
			rep.Watch.Problems = append(rep.Watch.Problems, failed)
		}
		for _, p := range rep.Watch.Problems {
			rep.Problems = append(rep.Problems, "watch: "+p)
		}
		if err := writeJSON(filepath.Join(r.out, "watch.json"), events, false); err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		}
	}
	if r.locks != nil {
		r.locks.note(func(lr *LockReport, ws *[]FencedWrite) {
			rep.Lock = *lr
			rep.Lock.Problems = CheckFencing(*ws)
			if err := writeJSON(filepath.Join(r.out, "fenced.json"), *ws, false); err != nil {
				rep.Problems = append(rep.Problems, err.Error())
			}
		})
		for _, p := range rep.Lock.Problems {
			rep.Problems = append(rep.Problems, "lock: "+p)
		}
	}
	res := v.Lin
	rep.Verdict, rep.Linearizability, rep.IllegalKeys = res.Verdict.String(), res.Summary(), res.IllegalKeys
	rep.AckedChanges = v.AckedChanges
	if len(final.Keys) == r.cfg.Keys {
		rep.Lost, rep.Divergent = v.Lost, v.Divergent
	}
	rep.Problems = append(rep.Problems, r.cl.Problems()...)
	viz := filepath.Join(r.out, "history.html")
	if err := res.WriteVisualization(viz); err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("visualization: %v", err))
	} else {
		rep.Visualization = viz
	}
	if err := writeJSON(filepath.Join(r.out, "writes.json"), writes, false); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	if err := writeJSON(filepath.Join(r.out, "final.json"), struct {
		Final   FinalState            `json:"final"`
		PerNode []map[string]KeyState `json:"per_node"`
	}{final, perNode}, true); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
}

// writeArtifacts saves the history and the event log.
func (r *runner) writeArtifacts() error {
	r.rep.History = filepath.Join(r.out, "history.json")
	r.rep.Events = filepath.Join(r.out, "events.log")
	err := writeJSON(r.rep.History, r.work.rec.History(), false)
	lines := strings.Join(r.events.all(), "\n") + "\n"
	if werr := os.WriteFile(r.rep.Events, []byte(lines), 0o644); werr != nil {
		err = errors.Join(err, fmt.Errorf("writing %s: %w", r.rep.Events, werr))
	}
	return err
}

// endpoints are the members' client addresses, by host.
func endpoints(cl *cluster) []string {
	eps := make([]string, cl.Size())
	for i := range eps {
		eps[i] = cl.hosts.ClientAddr(i)
	}
	return eps
}

// awaitWatcher gives the watcher time to catch up with rev, the
// revision the final reads saw (a watcher still behind then is judged on
// what it got; the report says how far that was).
func (r *runner) awaitWatcher(ctx context.Context, rev uint64) {
	deadline := time.Now().Add(15 * time.Second)
	for !r.watcher.caughtUp(rev) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	if !r.watcher.caughtUp(rev) {
		r.events.note("the watcher had not caught up with revision %d", rev)
	}
}
