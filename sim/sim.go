// Package sim is KeyVal's deterministic simulator: one thread, a virtual
// clock and one seeded PRNG drive a whole cluster built from the real code
// (core, the WAL and snapshot files over a fault-injecting in-memory file
// system, the key-value state machine), with clients whose histories
// Porcupine checks. A seed decides everything, including which faults are
// on, so `make sim SEED=n` replays a run bit for bit. See docs/sim.md.
package sim

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

const (
	tickMicros = 10_000 // one Raft tick: 10 ms
	// defaultElectionTicks is etcd's ratio of election timeout to
	// heartbeat, so a 100–200 ms election timeout; the server's defaults
	// (50 ms heartbeat, 250 ms election timeout) make it 5, and its
	// flags allow as few as 2 (Options.ElectionTicks).
	defaultElectionTicks = 10
)

// Options configure a run. Zero values let the seed choose.
type Options struct {
	Seed uint64
	// Nodes is 3 or 5; 0 lets the seed choose.
	Nodes int
	// Duration is the simulated time with faults on, µs. Default 10 s.
	Duration int64
	// Clients is the number of concurrent clients; 0 lets the seed choose.
	Clients int
	// Faults, if set, replaces the seed's choice of fault model.
	Faults *Faults
	// Auth runs the auth workload (sim/auth.go): the clients work as a
	// user whose permissions an administrator revokes and grants.
	Auth bool
	// Etcd runs the etcd workload (sim/etcd.go): multi-key transactions
	// and reads at a revision, checked by revision. It does not combine
	// with Auth, which wins if both are set.
	Etcd bool
	// Repair makes every run repair damaged WALs: whatever else the seed
	// chose, a minority of nodes crash now and then and come back with a
	// bit flipped deep in their WAL (Faults.DeepRotProb).
	Repair bool
	// DamageAll damages every member at once, at different entries
	// (Faults.DamageAll), instead of the seed's storage faults.
	DamageAll bool
	// LostWrites makes a minority of nodes lose synced writes
	// (Faults.LostWriteProb, disk.MemFaults.LoseLastWrite) and keep the WAL
	// end mark, whatever else the seed chose, and crash now and then, when
	// the loss shows.
	LostWrites bool
	// SlowSnapshots makes every node's snapshot writer take a seed-chosen
	// extra 10 ms to 1 s per snapshot (Faults.SnapshotWriteTime), as a
	// large state machine's does, so that crashes, batches and a leader's
	// snapshot fall inside a snapshot of the node's own in flight.
	SlowSnapshots bool
	// GoneNotices tells the nodes a crashed node could reach that its
	// process is gone, a link's delay after the crash
	// (Faults.GoneNotices), as the server's transport learns it from a
	// broken stream and a refused connection: a follower that hears it
	// of its leader forgets the leader (core.Node.ForgetLeader).
	GoneNotices bool
	// ElectionTicks is the election timeout in ticks (a node's timeout is
	// drawn from (ElectionTicks, 2*ElectionTicks]; the heartbeat is one
	// tick). 0 means 10, etcd's ratio; the server's defaults make it 5,
	// and 2 is the least it accepts. At least 2.
	ElectionTicks int
}

// Replay is the command that replays o's seed with its workload and fault
// model: what a failing run prints.
func (o Options) Replay() string {
	replay := fmt.Sprintf("make sim SEED=%d", o.Seed)
	for _, f := range []struct {
		on   bool
		name string
	}{{o.Auth, "AUTH"}, {o.Etcd, "ETCD"}, {o.Repair, "REPAIR"}, {o.DamageAll, "DAMAGE_ALL"}, {o.LostWrites, "LOST_WRITES"}, {o.SlowSnapshots, "SLOW_SNAPSHOTS"}, {o.GoneNotices, "GONE_NOTICES"}} {
		if f.on {
			replay += " " + f.name + "=1"
		}
	}
	if o.ElectionTicks != 0 {
		replay += fmt.Sprintf(" ELECTION_TICKS=%d", o.ElectionTicks)
	}
	return replay
}

// Result is what a run did and found.
type Result struct {
	Seed    uint64
	Nodes   int
	Clients int
	// ElectionTicks is the election timeout the nodes ran with, in ticks.
	ElectionTicks int
	Faults        Faults
	Counts        FaultCounts
	// Joined is how many fresh nodes the membership nemesis started, and
	// Membership what it did (see sim/membership.go).
	Joined        int
	Membership    MemberCounts
	OpsOK         int
	OpsFailed     int
	OpsUnknown    int
	Elections     int
	SnapshotsSent int
	// CatchUpEntries is how many applied entries the nodes kept in memory
	// (0: every entry since the last snapshot); SnapshotsAsked counts the
	// times a leader asked for a fresh snapshot for a follower needing
	// entries it had cut.
	CatchUpEntries uint64
	SnapshotsAsked int
	// Pipeline says how much the nodes' pipelines overlapped.
	Pipeline     PipeStats
	SimTime      time.Duration
	TraceHash    uint64
	Linearizable string
	// Err is the first violation, or nil when the run passed.
	Err error
	// Check is Porcupine's verdict on the history; it can write the HTML
	// visualization. Log is the run's event log.
	Check   lin.Result
	History lin.History
	// Revisions is the etcd workload's history (Options.Etcd), and
	// Watch what its watchers saw.
	Revisions []lin.RevOp
	Watch     EtcdCounts
	Log       []string
}

// Passed reports whether the run found nothing wrong.
func (r Result) Passed() bool { return r.Err == nil }

// String is the run's summary, one fact per line.
func (r Result) String() string {
	var b strings.Builder
	verdict := "PASS"
	if r.Err != nil {
		verdict = "FAIL: " + r.Err.Error()
	}
	fmt.Fprintf(&b, "seed:          %d\n", r.Seed)
	fmt.Fprintf(&b, "cluster:       %d nodes (+%d joined), %d clients, election timeout %d–%d ticks of %v\n",
		r.Nodes, r.Joined, r.Clients, r.ElectionTicks, 2*r.ElectionTicks, time.Duration(tickMicros)*time.Microsecond)
	fmt.Fprintf(&b, "faults on:     %s\n", r.Faults)
	fmt.Fprintf(&b, "faults fired:  %s\n", r.Counts)
	if r.Faults.Membership {
		fmt.Fprintf(&b, "membership:    %s\n", r.Membership)
	}
	fmt.Fprintf(&b, "operations:    ok=%d failed=%d unknown=%d\n", r.OpsOK, r.OpsFailed, r.OpsUnknown)
	fmt.Fprintf(&b, "elections:     %d\n", r.Elections)
	fmt.Fprintf(&b, "snapshots:     %d sent to followers", r.SnapshotsSent)
	if r.CatchUpEntries > 0 {
		fmt.Fprintf(&b, "; logs cut to %d entries behind applied, a fresh snapshot asked for %d times", r.CatchUpEntries, r.SnapshotsAsked)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "pipeline:      %d batches, %d taken while others were in flight, at most %d in flight\n",
		r.Pipeline.Batches, r.Pipeline.Overlapped, r.Pipeline.MaxInflight)
	fmt.Fprintf(&b, "simulated:     %v\n", r.SimTime)
	if r.Watch.Watchers > 0 {
		fmt.Fprintf(&b, "watchers:      %d, %d events checked, moved on by compaction %d, resumed on another member %d; compactions proposed %d, past reads refused as compacted %d\n",
			r.Watch.Watchers, r.Watch.Events, r.Watch.WatchCompacted, r.Watch.Resumed, r.Watch.Compactions, r.Watch.CompactedReads)
		fmt.Fprintf(&b, "leases:        %d granted, %d keep-alives acknowledged, %d revokes applied; %d writes under a lock's fence took effect\n",
			r.Watch.Leases, r.Watch.KeepAlives, r.Watch.Revokes, r.Watch.Fenced)
	}
	fmt.Fprintf(&b, "history:       %s\n", r.Linearizable)
	fmt.Fprintf(&b, "trace hash:    %016x\n", r.TraceHash)
	fmt.Fprintf(&b, "verdict:       %s\n", verdict)
	return b.String()
}

// world is one simulated cluster and everything around it.
type world struct {
	seed uint64
	// electionTicks is every node's core.Config.ElectionTick.
	electionTicks int
	clock         clock
	faults        Faults
	counts        FaultCounts
	ids           []core.NodeID // the bootstrap members
	nodes         []*node       // every node ever started, nodes[id-1]
	// conf is the latest committed membership any node has applied, at
	// entry confIndex.
	conf core.ConfState
	// damaged holds every index Faults.DamageAll damaged, on any member.
	damaged   map[uint64]bool
	confIndex uint64
	memberIDs []core.NodeID // conf's voters and learners, sorted
	mem       *membership
	net       *network
	clients   []*client
	checker   *core.Checker
	rec       *lin.Recorder
	digests   map[uint64]uint64
	applied   map[sessionSeq]appliedWrite
	// unresolved are writes whose clients gave up without an answer.
	unresolved []*clientOp
	keys       int
	keyNames   []string
	// authUser is the clients' user under the auth workload ("" without).
	authUser string
	// etcd: the clients run the etcd workload, whose history is revOps.
	etcd   bool
	revOps []lin.RevOp
	// The etcd workload's watchers and compactions (sim/watch.go).
	reference   *kvstore.Memory
	watchers    []*watcher
	compactRng  *rand.Rand
	compactFn   func()
	watchCounts EtcdCounts
	// The etcd workload's lease holders (sim/lease.go): leaseSafe is, by
	// lease, the earliest moment a revoke keeps its holder's promise.
	holders       []*holder
	leaseSafe     map[int64]int64
	leaseCheckFn  func()
	lastFence     int64 // the token of the last guarded write that took effect
	snapshotEvery uint64
	// catchUpEntries: how many applied entries a node's in-memory log
	// keeps between snapshots (0: all since the last one).
	catchUpEntries uint64
	// snapshotsAsked counts the batches in which a leader asked for a
	// fresh snapshot because it had cut the entries a follower needs.
	snapshotsAsked int
	nextRequest    uint64
	nemesisRng     *rand.Rand
	extraRng       *rand.Rand // bit rot at crashes, isolating leaders
	repairRng      *rand.Rand // damage in the middle of a WAL (Faults.DeepRotProb)
	pipeRng        *rand.Rand // seeds each node's pipeline timing
	goneRng        *rand.Rand // delays of the notices that a node is gone
	pipeStats      PipeStats
	faultsUntil    int64

	opsOK, opsFailed, opsUnknown int
	elections                    int
	snapshotsSent                int
	lastLeader                   core.NodeID
	lastTerm                     uint64
	watchLeaderFn                func()

	trace traceHash
	log   []string
	err   error
}

// Run simulates one seed. It reads no clock and writes no file: the
// caller measures wall time and saves the artifacts (see WriteArtifacts in
// cmd/kvsim).
func Run(opts Options) Result {
	if opts.ElectionTicks < 0 || opts.ElectionTicks == 1 {
		return Result{Seed: opts.Seed, Err: fmt.Errorf("election timeout of %d ticks: it must be at least 2 (the heartbeat is one tick)", opts.ElectionTicks)}
	}
	w, res := newWorld(opts)
	w.run(opts)
	res.Counts = w.counts
	res.Joined = len(w.nodes) - len(w.ids)
	res.Membership = w.mem.counts
	for _, n := range w.nodes {
		c := n.fs.Injected()
		res.Counts.TornWrites += c.TornWrites
		res.Counts.FlippedWrites += c.FlippedWrites
		res.Counts.MisdirectedWrites += c.MisdirectedWrites
		res.Counts.ReadErrors += c.ReadErrors
		res.Counts.NoSpace += c.NoSpace
		res.Counts.LostWrites += c.LostWrites
	}
	res.OpsOK, res.OpsFailed, res.OpsUnknown = w.opsOK, w.opsFailed, w.opsUnknown
	res.Elections = w.elections
	res.SnapshotsSent = w.snapshotsSent
	res.CatchUpEntries, res.SnapshotsAsked = w.catchUpEntries, w.snapshotsAsked
	res.Pipeline = w.pipeStats
	res.SimTime = time.Duration(w.clock.now) * time.Microsecond
	res.TraceHash = uint64(w.trace)
	w.resolveUnknown()
	res.Err = w.err // after resolveUnknown, whose errors count too
	res.History = w.rec.History()
	res.Check = lin.Check(res.History, time.Minute)
	res.Linearizable = res.Check.Summary()
	if res.Err == nil && res.Check.Verdict != lin.Linearizable {
		res.Err = fmt.Errorf("history is not linearizable (%v)", res.Check.Verdict)
	}
	if w.etcd {
		if res.Err == nil {
			w.checkWatchers()
			res.Err = w.err
		}
		res.Watch = w.watchCounts
		res.Revisions = w.revOps
		err := lin.CheckRevisions(w.revOps)
		res.Linearizable = lin.RevSummary(w.revOps, err)
		if res.Err == nil && err != nil {
			res.Err = fmt.Errorf("history is not linearizable: %w", err)
		}
	}
	res.Log = w.log
	return res
}

// FaultModel is the fault model opts's seed chooses, without running it
// (to pick seeds with a given kind of fault).
func FaultModel(opts Options) Faults {
	_, res := newWorld(opts)
	return res.Faults
}

func newWorld(opts Options) (*world, Result) {
	root := rand.New(rand.NewPCG(opts.Seed, 0x6b657976616c)) // "keyval"
	// Each component gets its own stream, split off in a fixed order, so
	// that changing how one component draws does not shift the others.
	split := func() *rand.Rand { return rand.New(rand.NewPCG(root.Uint64(), root.Uint64())) }
	cfgRng, netRng, nemesisRng, clientRng := split(), split(), split(), split()
	// The pipelines' timing, one stream per node split from this one.
	pipeRng := split()
	// Whether and how far the nodes cut their in-memory logs between
	// snapshots (replica.Config.CatchUpEntries): on in half the seeds. A
	// root of its own, so that the streams split off after this point stay
	// what they were before it existed.
	logRng := rand.New(rand.NewPCG(opts.Seed, 0x6c6f67637574)) // "logcut"

	size := opts.Nodes
	if size == 0 {
		size = 3 + 2*cfgRng.IntN(2)
	}
	w := &world{
		seed: opts.Seed, checker: core.NewChecker(), rec: lin.NewRecorder(),
		digests: map[uint64]uint64{}, applied: map[sessionSeq]appliedWrite{}, trace: hashSeed, nemesisRng: nemesisRng,
		keys: 2 + cfgRng.IntN(6), snapshotEvery: uint64(20 + cfgRng.IntN(200)), pipeRng: pipeRng,
	}
	w.clock.w = w
	w.electionTicks = cmp.Or(opts.ElectionTicks, defaultElectionTicks)
	if logRng.IntN(2) == 0 {
		w.catchUpEntries = 1 + uint64(logRng.IntN(int(w.snapshotEvery/2)))
	}
	if opts.Faults != nil {
		w.faults = *opts.Faults
	} else {
		w.faults = chooseFaults(cfgRng, size)
	}
	if opts.DamageAll {
		// Its own damage only: a seed's storage faults on top could hit
		// the same entry on a majority.
		f := &w.faults
		f.StorageNodes, f.BitFlipProb, f.MisdirectProb, f.ReadErrorProb, f.DiskCapacity = 0, 0, 0, 0, 0
	}
	nclients := opts.Clients
	if nclients == 0 {
		nclients = 2 + cfgRng.IntN(6)
	}
	for i := 1; i <= size; i++ {
		w.ids = append(w.ids, core.NodeID(i))
	}
	w.net = newNetwork(w, netRng, size)
	for i, id := range w.ids {
		w.nodes = append(w.nodes, w.newNode(id, split(), i < w.faults.StorageNodes))
	}
	// Split last, so the streams above are the same as before it existed.
	w.extraRng = split()
	if opts.Faults == nil {
		chooseExtras(w.extraRng, &w.faults)
	}
	// And the membership stream after that, for the same reason.
	w.mem = newMembership(split())
	if opts.Faults == nil {
		chooseMembership(w.mem.rng, &w.faults)
	}
	w.setConf(core.ConfState{Voters: w.ids}, 0)
	w.etcd = opts.Etcd && !opts.Auth
	for i := range nclients {
		w.clients = append(w.clients, w.newClient(i+1, rand.New(rand.NewPCG(clientRng.Uint64(), clientRng.Uint64()))))
	}
	if opts.Auth {
		// Its stream is split last, so the others are the same as without.
		w.authUser = workerUser
		admin := w.newClient(nclients+1, split())
		admin.admin = true
		w.clients = append(w.clients, admin)
	}
	// Split after every other stream, so that they are as before it.
	w.repairRng = split()
	if opts.Faults == nil {
		chooseRepair(w.repairRng, &w.faults)
	}
	if opts.Repair {
		w.stressRepair()
	}
	if opts.LostWrites {
		// Its own stream, split after every other.
		w.stressLostWrites(split())
	}
	if opts.SlowSnapshots {
		// Its own stream, split after every other.
		w.faults.SnapshotWriteTime = []int64{10_000, 100_000, 300_000, 1_000_000}[split().IntN(4)]
	}
	if opts.GoneNotices {
		// Its own stream, split after every other.
		w.goneRng = split()
		w.faults.GoneNotices = true
	}
	if opts.DamageAll {
		f := &w.faults
		f.RotProb, f.DeepRotProb = 0, 0
		f.DamageAll = true
		f.DamageAllEvery = 1_000_000 + w.repairRng.Int64N(3_000_000)
		for _, n := range w.nodes {
			n.storageFault = true
		}
	}
	return w, Result{Seed: opts.Seed, Nodes: size, Clients: nclients, ElectionTicks: w.electionTicks, Faults: w.faults}
}

// stressRepair turns on what Options.Repair asks for.
func (w *world) stressRepair() {
	f, rng := &w.faults, w.repairRng
	if f.StorageNodes == 0 {
		f.StorageNodes = 1 + rng.IntN((len(w.nodes)-1)/2)
		for i := range f.StorageNodes {
			w.nodes[i].storageFault = true
		}
	}
	if !f.Crashes {
		f.Crashes = true
		f.CrashEvery = 300_000 + rng.Int64N(1_000_000)
		f.DownFor = 10_000 + rng.Int64N(500_000)
	}
	f.DeepRotProb = 0.5 + rng.Float64()*0.5
}

// stressLostWrites turns on what Options.LostWrites asks for: on a
// minority of nodes (the storage-faulty ones, or some), synced writes are
// lost with a seed-chosen probability, a file's last one too (at most one
// of those per crash), and those nodes keep the WAL end mark that finds a
// lost last write (replica.Config.DetectLostWrites); crashes on.
func (w *world) stressLostWrites(rng *rand.Rand) {
	f := &w.faults
	if f.StorageNodes == 0 {
		f.StorageNodes = 1 + rng.IntN((len(w.nodes)-1)/2)
	}
	f.LostWriteProb = 0.01 + 0.2*rng.Float64()
	for i := range f.StorageNodes {
		w.nodes[i].storageFault = true
		w.nodes[i].fs.Faults.LostWriteProb = f.LostWriteProb
		w.nodes[i].fs.Faults.LoseLastWrite = true
	}
	if !f.Crashes {
		f.Crashes = true
		f.CrashEvery = 300_000 + rng.Int64N(1_000_000)
		f.DownFor = 10_000 + rng.Int64N(500_000)
	}
}

func (w *world) run(opts Options) {
	duration := opts.Duration
	if duration == 0 {
		duration = 10_000_000
	}
	for _, n := range w.nodes {
		n.start()
	}
	for _, c := range w.clients {
		w.clock.after(c.rng.Int64N(50_000), c.start)
	}
	w.faultsUntil = duration
	w.startNemesis(duration)
	if w.faults.Membership {
		w.startMembership(duration)
	}
	if w.etcd {
		w.startWatchers(opts.Seed)
	}
	w.watchLeaderFn = w.watchLeader // scheduled every tick: made once
	w.clock.after(0, w.watchLeaderFn)
	for w.err == nil && w.clock.step(duration) {
	}
	if w.err != nil {
		return
	}
	w.healAll()
	w.checkLiveness(duration)
}

// watchLeader counts elections (a new leader or term) once per tick.
func (w *world) watchLeader() {
	for _, n := range w.nodes {
		if n.state != nodeUp {
			continue
		}
		nd := n.rep.Node()
		if term := nd.HardState().Term; nd.SoftState().Role == core.Leader && term > w.lastTerm {
			w.elections++
			w.lastLeader, w.lastTerm = n.id, term
			w.logf("node %d leads term %d", n.id, term)
			w.newLeader()
		}
	}
	if w.err == nil {
		w.clock.after(tickMicros, w.watchLeaderFn)
	}
}

// healAll ends every fault: partitions heal, paused nodes resume, crashed
// nodes restart, and the disks stop lying.
func (w *world) healAll() {
	w.logf("faults off: healing everything")
	w.net.heal()
	w.faults.DropProb, w.faults.DupProb, w.faults.SpikeProb = 0, 0, 0
	for _, n := range w.nodes {
		n.fs.Faults.BitFlipProb, n.fs.Faults.MisdirectProb, n.fs.Faults.ReadErrorProb = 0, 0, 0
		n.fs.Faults.CapacityBytes = 0
		n.fs.Intercept = nil // a power cut armed during the faults stays unfired
		if n.state == nodeRemoved {
			continue
		}
		if n.paused {
			n.resume()
		}
		if n.state == nodeDown {
			n.restart()
		}
	}
}

// waitingOnRepair lists the up members whose log is below the vote floor
// a repair left, or has holes a repair that kept the log left: neither
// campaigns.
func (w *world) waitingOnRepair() []core.NodeID {
	var out []core.NodeID
	for _, n := range w.active() {
		if n.state == nodeUp && !n.canCampaignAfterRepair() {
			out = append(out, n.id)
		}
	}
	return out
}

// lastPosition is the position of the node's last log entry.
func (n *node) lastPosition() core.LogPosition {
	last := n.rep.Node().Status().LastIndex
	t, _ := n.rep.Node().Term(last)
	return core.LogPosition{Term: t, Index: last}
}

// canCampaignAfterRepair: the node's log is at or past its vote floor and
// has no holes.
func (n *node) canCampaignAfterRepair() bool {
	return n.lastPosition().AtLeast(n.rep.VoteFloor()) && n.rep.Node().Holes().Empty()
}

// noOneCanWin reports whether no up member could be elected with the
// logs, floors and configurations the members have now: for each that
// may campaign (a voter in the configuration in force in its own log, not
// waiting on a repair), fewer than a quorum of that configuration's voters
// are up, at or behind its log, and satisfied with it by their floors.
// That is the limit docs/disk.md names: a repaired member's floor keeps
// the others from electing a leader that lacks what only it may have
// acknowledged, and the one member whose log is ahead may be unable to
// campaign (below its own floor, on holes, or a learner in its log while
// the others' logs hold its uncommitted promotion). Safe, not available.
func (w *world) noOneCanWin() bool {
	byID := make(map[core.NodeID]*node, len(w.nodes))
	for _, n := range w.active() {
		if n.state == nodeUp {
			byID[n.id] = n
		}
	}
	for _, c := range w.active() {
		if c.state != nodeUp || !c.canCampaignAfterRepair() {
			continue
		}
		voters := c.rep.Node().Status().Conf.Voters
		if !slices.Contains(voters, c.id) {
			continue
		}
		pos := c.lastPosition()
		grants := 0
		for _, id := range voters {
			v, up := byID[id]
			if up && pos.AtLeast(v.lastPosition()) && pos.AtLeast(v.rep.VoteFloor()) {
				grants++
			}
		}
		if grants >= len(voters)/2+1 {
			return false
		}
	}
	return true
}

// checkLiveness: with every fault healed, a connected majority must elect a
// leader, serve new requests, and every live node must converge to the same
// state, within a bounded simulated time.
func (w *world) checkLiveness(start int64) {
	const bound = 20_000_000
	deadline := start + bound
	probe := w.newClient(len(w.clients)+1, rand.New(rand.NewPCG(w.seed, 99)))
	w.clients = append(w.clients, probe)
	w.clock.after(0, probe.start)
	for w.err == nil && w.clock.step(deadline) {
		if probe.opsDone >= 3 && probe.op == nil {
			break
		}
	}
	if w.err != nil {
		return
	}
	if probe.opsDone < 3 {
		if waiting := w.waitingOnRepair(); len(waiting) > 0 && w.noOneCanWin() {
			// The limits docs/disk.md names: a member whose lost entries
			// could not be identified started its log over and waits
			// below its floor for entries only the others had; one whose
			// holes no member holds (entries only it had, never
			// committed) waits with them. When those left cannot elect
			// anyone: safe, not available. Counted, not failed.
			w.counts.WaitedBelowFloor++
			w.logf("no progress after faults healed: members %v wait below their vote floors or on holes", waiting)
			return
		}
		w.fail(fmt.Errorf("no convergence: no progress within %v after faults healed", time.Duration(bound)*time.Microsecond))
		return
	}
	// Let clients finish, then wait for every live member to apply the same.
	for _, c := range w.clients {
		c.stopped = true
	}
	for w.err == nil && w.clock.step(deadline) {
		if w.converged() {
			break
		}
	}
	if w.err == nil && !w.converged() {
		w.fail(fmt.Errorf("no convergence: live members %v did not reach the same state within %v", w.members(), time.Duration(bound)*time.Microsecond))
	}
	if w.err == nil {
		w.checkHashes()
	}
	for _, c := range w.clients {
		if c.op != nil && c.op.inHistory() {
			if !c.attemptDone && !c.op.isRead {
				// An attempt is still out there and may yet be applied.
				c.op.mayApply = true
			}
			c.giveUp()
		}
	}
}

// resolveUnknown settles the writes whose clients never heard back: one the
// cluster applied is recorded with its result, taking effect no later than
// its first application; one nobody applied by the end of the run is
// dropped. It may still be in some log, but nothing in the history can have
// seen it (every answer comes from applied state), so it takes effect, if
// ever, after the history ends, which is what dropping it says. Left
// unknown, it could take effect anywhere after its call: the checker would
// have more orders to search (dozens of such writes on a hot key made it
// time out) and could explain with it a read that no applied write explains.
func (w *world) resolveUnknown() {
	for _, op := range w.unresolved {
		if op.rev != nil {
			w.resolveEtcd(op)
			continue
		}
		a, ok := w.applied[sessionSeq{op.session, op.seq}]
		if !ok && op.session == 0 {
			// Not a session write (the auth workload's grants and
			// revokes): its application is not recorded.
			w.check(w.rec.Unknown(op.hid))
			continue
		}
		if !ok {
			w.check(w.rec.Drop(op.hid))
			continue
		}
		out, err := resultOutput(op.in, a.result)
		if err != nil {
			w.fail(err)
			w.check(w.rec.Unknown(op.hid))
			continue
		}
		w.check(w.rec.Resolve(op.hid, out, max(a.at, op.startedAt)))
	}
	w.unresolved = nil
}

// converged reports whether every member of the latest committed
// configuration that has not halted is up and has applied the same entries
// to the same state. Nodes outside it (removed, or started but never added)
// are not waited for.
func (w *world) converged() bool {
	var applied uint64
	var digest uint64
	first := true
	for _, id := range w.members() {
		n := w.node(id)
		if n.state == nodeHalted {
			continue
		}
		if n.state != nodeUp {
			return false
		}
		store := n.rep.Store()
		d, err := stateDigest(n.mem)
		if err != nil {
			return false
		}
		if first {
			applied, digest, first = store.AppliedIndex(), d, false
		} else if store.AppliedIndex() != applied || d != digest {
			return false
		}
	}
	return true
}

// node is the node with id, or nil if the simulator never started one.
func (w *world) node(id core.NodeID) *node {
	if id == core.None || int(id) > len(w.nodes) {
		return nil
	}
	return w.nodes[id-1]
}

// members are the voters and learners of the latest committed
// configuration, in id order. The slice is shared: do not modify it.
func (w *world) members() []core.NodeID { return w.memberIDs }

// setConf makes conf the latest committed configuration. The members are
// sorted here, once, rather than at every client retry that picks one.
func (w *world) setConf(conf core.ConfState, index uint64) {
	w.conf = core.ConfState{Voters: slices.Clone(conf.Voters), Learners: slices.Clone(conf.Learners)}
	w.confIndex = index
	w.memberIDs = slices.Sorted(slices.Values(append(slices.Clone(conf.Voters), conf.Learners...)))
}

// randomMember is where a client sends a request when it knows no leader.
func (w *world) randomMember(rng *rand.Rand) core.NodeID {
	ids := w.members()
	return ids[rng.IntN(len(ids))]
}

// active are the nodes that have not stopped for good after their removal
// (halted and crashed nodes included), in id order: what process faults
// pick from.
func (w *world) active() []*node {
	out := make([]*node, 0, len(w.nodes))
	for _, n := range w.nodes {
		if n.state != nodeRemoved {
			out = append(out, n)
		}
	}
	return out
}

// stateDigest hashes the whole key-value state (the simulator's key space
// is small) and its revision, reading the store in place.
func stateDigest(s *kvstore.Memory) (uint64, error) {
	h := hashSeed
	rev, err := s.Each(func(key string, value []byte, version uint64) {
		h.addString(key)
		h.add(value)
		h.word(version)
	})
	if err != nil {
		return 0, err
	}
	// The revision goes last (it is known only after the walk), which
	// changes no comparison: every node hashes the same way.
	h.word(rev)
	return uint64(h), nil
}

func (w *world) check(err error) {
	if err != nil {
		w.fail(err)
	}
}

func (w *world) fail(err error) {
	if w.err == nil {
		w.err = fmt.Errorf("at %v: %w", time.Duration(w.clock.now)*time.Microsecond, err)
		w.logf("VIOLATION: %v", err)
	}
}

const maxLogLines = 200_000

func (w *world) logf(format string, a ...any) {
	line := fmt.Sprintf("%12.6fs ", float64(w.clock.now)/1e6) + fmt.Sprintf(format, a...)
	w.trace.add([]byte(line))
	if len(w.log) < maxLogLines {
		w.log = append(w.log, line)
	}
}

func (w *world) hashMsg(m core.Message) {
	h := &w.trace
	h.word(uint64(w.clock.now))
	h.word(uint64(m.Type) | uint64(m.From)<<8 | uint64(m.To)<<32)
	h.word(m.Term)
	h.word(m.Index)
	h.word(m.Commit)
	h.word(uint64(len(m.Entries)))
}

// hashReply hashes a reply's time, request and fields.
func (w *world) hashReply(id uint64, rp reply) {
	h := &w.trace
	h.word(uint64(w.clock.now))
	h.word(id)
	var flags uint64
	for i, f := range [...]bool{rp.refused, rp.unknown, rp.definite, rp.get.Found} {
		if f {
			flags |= 1 << i
		}
	}
	h.word(flags | uint64(rp.result.Status)<<8)
	h.word(rp.result.Version)
	h.word(rp.get.Version)
}

// traceHash is the trace hash and the state digest: a multiply-rotate mix
// over 64-bit words, FNV's constants, kept as a value so that hashing does
// not move anything to the heap. Every step is a bijection of the state for
// a given input, so any one difference in what a run hashes changes the
// result. It takes a word at a time rather than a byte at a time (as the
// FNV-1a it replaced did): it hashes every message delivered and every
// reply, and byte-wise hashing was 5 % of a run.
type traceHash uint64

const (
	hashSeed  traceHash = 14695981039346656037
	hashPrime traceHash = 1099511628211
)

func (h *traceHash) word(x uint64) {
	*h = traceHash(bits.RotateLeft64(uint64((*h^traceHash(x))*hashPrime), 29))
}

// add hashes b and its length (so that where one input ends and the next
// begins counts).
func (h *traceHash) add(b []byte) {
	n := len(b)
	for len(b) >= 8 {
		h.word(binary.LittleEndian.Uint64(b))
		b = b[8:]
	}
	var tail uint64
	for i, c := range b {
		tail |= uint64(c) << (8 * i)
	}
	h.word(tail)
	h.word(uint64(n))
}

func (h *traceHash) addString(s string) {
	n := len(s)
	for len(s) >= 8 {
		var x uint64
		for i := range 8 {
			x |= uint64(s[i]) << (8 * i)
		}
		h.word(x)
		s = s[8:]
	}
	var tail uint64
	for i := 0; i < len(s); i++ {
		tail |= uint64(s[i]) << (8 * i)
	}
	h.word(tail)
	h.word(uint64(n))
}
