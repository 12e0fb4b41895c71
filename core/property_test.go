package core

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// The property tests drive whole clusters through random schedules: ticks,
// message delivery in any order, loss, duplication, partitions, stalled
// nodes whose messages wait, crashes that lose everything not persisted,
// snapshots, reads, transfers, membership changes; each kind of fault is on
// in some schedules and off in others. After every step the Checker
// verifies Raft's safety properties, and the release points hold: a read is
// served only at or below the applied index and covers every write
// committed before it was asked for; a leader counts only its durable
// entries as its own match; a vote or an acknowledgement leaves only once
// what it promises is durable. At the end, once the network heals, the
// cluster must elect a leader and commit.
//
// Each test runs in two modes. Atomic: a node's Ready is persisted, applied
// and advanced in one step. Pipelined: like the server, taking a Ready,
// persisting it, applying it and advancing are separate steps, several
// batches may be in flight per node, and anything else (messages, ticks,
// proposals, reads, crashes) happens in between.
//
// `make test` runs them with RAPID_CHECKS schedules each; with
// KEYVAL_PROPERTY_BUDGET set (a duration such as 20s), each test keeps
// drawing fresh schedules, RAPID_CHECKS at a time, until the budget is spent.

func TestPropertyCluster3(t *testing.T) { checkSchedules(t, 3, atomic) }

func TestPropertyCluster5(t *testing.T) { checkSchedules(t, 5, atomic) }

func TestPropertyCluster3Pipelined(t *testing.T) { checkSchedules(t, 3, pipelined) }

func TestPropertyCluster5Pipelined(t *testing.T) { checkSchedules(t, 5, pipelined) }

// pipelineMode says how a schedule runs each node's Readys.
type pipelineMode bool

const (
	atomic    pipelineMode = false
	pipelined pipelineMode = true
)

// budgetVar names the environment variable with the time each property test
// may spend drawing schedules beyond the first RAPID_CHECKS.
const budgetVar = "KEYVAL_PROPERTY_BUDGET"

func checkSchedules(t *testing.T, size int, mode pipelineMode) {
	budget, err := propertyBudget()
	if err != nil {
		t.Fatal(err)
	}
	schedules := 0
	prop := func(rt *rapid.T) {
		schedules++
		runSchedule(rt, size, mode)
	}
	start := time.Now()
	rapid.Check(t, prop)
	// Another round draws a fresh base seed, unless one is pinned (then it
	// would only repeat the same schedules).
	for !pinnedSeed() && time.Since(start) < budget {
		rapid.Check(t, prop)
	}
	t.Logf("%d schedules in %v", schedules, time.Since(start).Round(time.Millisecond))
}

func propertyBudget() (time.Duration, error) {
	v := os.Getenv(budgetVar)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %w", budgetVar, v, err)
	}
	return d, nil
}

// pinnedSeed reports whether rapid was given a seed (-rapid.seed or
// RAPID_SEED) or a fail file to replay.
func pinnedSeed() bool {
	// The flags' defaults come from RAPID_SEED and RAPID_FAILFILE.
	seed, file := flag.Lookup("rapid.seed"), flag.Lookup("rapid.failfile")
	return (seed != nil && seed.Value.String() != "0") || (file != nil && file.Value.String() != "")
}

type readProbe struct {
	// minIndex is the highest commit index any node knew when the read was
	// asked for: a linearizable read must see at least that.
	minIndex uint64
}

// schedule is one random run: a cluster, the PRNG that draws its steps,
// and the reads asked so far.
type schedule struct {
	rt       *rapid.T
	c        *cluster
	rng      *rand.Rand
	mode     pipelineMode
	size     int
	actions  []action
	reads    map[string]readProbe
	nextRead int
	// slowStage is the pipeline stage that lags in this schedule (see
	// pipelineStep).
	slowStage int
}

// action is one kind of step; weight is how often a schedule draws it.
type action struct {
	weight int
	run    func(s *schedule, step int) error
}

// runSchedule runs one random schedule and returns its cluster, for tests
// that look at what the schedule did.
func runSchedule(rt *rapid.T, size int, mode pipelineMode) *cluster {
	preVote := rapid.Bool().Draw(rt, "preVote")
	checkQuorum := rapid.Bool().Draw(rt, "checkQuorum")
	smallMsgs := rapid.Bool().Draw(rt, "smallMsgs")
	// Membership changes need PreVote or CheckQuorum: without either, a
	// node removed while cut off can disrupt the cluster forever (§4.2.3).
	membership := rapid.Bool().Draw(rt, "membership") && (preVote || checkQuorum)
	c, err := newCluster(size, rapid.Uint64().Draw(rt, "seed"), func(cfg *Config) {
		// Short timeouts, so that a schedule sees many elections.
		cfg.ElectionTick = 4
		cfg.DisablePreVote = !preVote
		cfg.DisableCheckQuorum = !checkQuorum
		if smallMsgs {
			cfg.MaxMsgBytes = 1
			cfg.MaxInflightMsgs = 2
		}
	})
	if err != nil {
		rt.Fatal(err)
	}
	if rapid.Bool().Draw(rt, "trimLog") {
		c.logKeep = rapid.Uint64Range(1, 8).Draw(rt, "logKeep")
	}
	s := &schedule{rt: rt, c: c, mode: mode, size: size, reads: map[string]readProbe{}}
	s.actions = scheduleActions(rt, mode, membership)
	// Rapid draws the seed; a PRNG draws the schedule from it. (Rapid's own
	// integer draws lean towards small values, which starves a schedule of
	// variety; it still shrinks the configuration and reports the seed.)
	s.rng = rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "schedule"), 7))
	s.slowStage = s.rng.IntN(4)
	steps := s.intn(50, 600)
	for step := 0; step < steps; step++ {
		err := s.draw().run(s, step)
		if err == nil {
			err = c.checkDurableMatches()
		}
		if err != nil {
			rt.Fatalf("step %d: %v", step, err)
		}
		s.checkReads()
	}
	s.checkLiveness()
	return c
}

// scheduleActions is the mix of steps a schedule draws from. Each kind of
// fault is on in some schedules and off in others (swarm testing): a
// schedule without crashes, say, spends its steps on what else can go
// wrong, and keeps a leader long enough for slower bugs to show.
func scheduleActions(rt *rapid.T, mode pipelineMode, membership bool) []action {
	on := func(fault string) int {
		if rapid.Bool().Draw(rt, fault) {
			return 1
		}
		return 0
	}
	crashes, partitions, stalls, lossy := on("crashes"), on("partitions"), on("stalls"), on("lossy")
	// A Ready takes four pipelined steps to go through, not one.
	pipeline := 18
	if mode == pipelined {
		pipeline = 30
	}
	mix := []action{
		{20, (*schedule).deliverOne},
		{18, (*schedule).burst},
		{3 * lossy, (*schedule).drop},
		{2 * lossy, (*schedule).duplicate},
		{3 * lossy, (*schedule).unreachable},
		{10, (*schedule).tickAll},
		{2, (*schedule).tickOne},
		{pipeline, (*schedule).pipeline},
		{3, (*schedule).readyOne},
		{1 * crashes, (*schedule).readyAndCrash},
		{2 * crashes, (*schedule).crash},
		{4 * crashes, (*schedule).restart},
		{3 * partitions, (*schedule).partition},
		{2 * stalls, (*schedule).stall},
		{10, (*schedule).propose},
		{5, (*schedule).read},
		{2, (*schedule).snapshot},
		{2, (*schedule).transfer},
	}
	if membership {
		mix = append(mix, action{5, (*schedule).changeMembership})
	}
	return mix
}

func (s *schedule) intn(lo, hi int) int { return lo + s.rng.IntN(hi-lo+1) }

func (s *schedule) pick() NodeID { return s.c.ids[s.rng.IntN(len(s.c.ids))] }

func (s *schedule) draw() action {
	total := 0
	for _, a := range s.actions {
		total += a.weight
	}
	x := s.rng.IntN(total)
	for _, a := range s.actions {
		if x < a.weight {
			return a
		}
		x -= a.weight
	}
	panic("unreachable")
}

func (s *schedule) deliverOne(int) error {
	if len(s.c.queue) == 0 {
		return nil
	}
	return s.c.deliver(s.rng.IntN(len(s.c.queue)))
}

// burst: everything queued now arrives, in order.
func (s *schedule) burst(int) error { return s.c.burst() }

func (s *schedule) drop(int) error {
	if len(s.c.queue) > 0 {
		k := s.rng.IntN(len(s.c.queue))
		s.c.lost(s.c.queue[k])
		s.c.queue = slices.Delete(s.c.queue, k, k+1)
	}
	return nil
}

func (s *schedule) duplicate(int) error {
	if len(s.c.queue) > 0 {
		s.c.queue = append(s.c.queue, s.c.queue[s.rng.IntN(len(s.c.queue))])
	}
	return nil
}

func (s *schedule) unreachable(int) error {
	if tn := s.c.nodes[s.pick()]; !tn.down {
		gone := s.pick()
		tn.node.ReportUnreachable(gone)
		// The runtime's word that gone's process died, true or not:
		// safety must not rest on it.
		tn.node.ForgetLeader(gone)
		tn.node.ReportSnapshot(s.pick(), false)
	}
	return nil
}

// tickAll: time passes for everyone (a node may miss the tick: drift).
func (s *schedule) tickAll(int) error {
	for _, id := range s.c.ids {
		if s.rng.IntN(10) > 0 {
			if err := s.c.tick(id); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *schedule) tickOne(int) error { return s.c.tick(s.pick()) }

// pipeline moves every node's Readys on: all the way through at once, or
// by a few stages each.
func (s *schedule) pipeline(int) error {
	if s.mode == pipelined {
		return pipelineStep(s.c, s.rng, s.slowStage)
	}
	return s.c.ready()
}

func (s *schedule) readyOne(int) error { return s.c.readyNode(s.pick()) }

func (s *schedule) readyAndCrash(int) error { return s.c.readyNodeCrashing(s.pick(), true) }

func (s *schedule) crash(int) error {
	if id := s.pick(); !s.c.nodes[id].down {
		s.c.crash(id)
	}
	return nil
}

func (s *schedule) restart(int) error {
	if id := s.pick(); s.c.nodes[id].down {
		return s.c.restart(id)
	}
	return nil
}

func (s *schedule) partition(int) error {
	if s.rng.IntN(3) == 0 {
		s.c.heal()
		return nil
	}
	from, to := s.pick(), s.pick()
	s.c.setCut(from, to, true)
	if s.rng.IntN(2) == 0 {
		s.c.setCut(to, from, true)
	}
	return nil
}

// stall pauses or resumes a node, often the leader: a leader that resumes
// and answers from stale state is the classic trap for reads.
func (s *schedule) stall(int) error {
	id := s.c.leader()
	if id == None || s.rng.IntN(2) == 0 {
		id = s.pick()
	}
	tn := s.c.nodes[id]
	tn.stalled = !tn.stalled
	return nil
}

func (s *schedule) propose(step int) error {
	id := s.c.leader()
	if id == None || s.rng.IntN(10) == 0 {
		id = s.pick()
	}
	if tn := s.c.nodes[id]; !tn.down {
		for k := s.intn(1, 3); k > 0; k-- {
			_, _, _ = tn.node.Propose([]byte(fmt.Sprintf("p%d.%d", step, k)))
		}
	}
	return nil
}

func (s *schedule) read(int) error {
	tn := s.c.nodes[s.pick()]
	if tn.down {
		return nil
	}
	ctx := fmt.Sprintf("r%d", s.nextRead)
	s.nextRead++
	var commit uint64
	for _, id := range s.c.ids {
		commit = max(commit, s.c.nodes[id].node.HardState().Commit)
	}
	s.reads[ctx] = readProbe{minIndex: commit}
	_ = tn.node.ReadIndex([]byte(ctx))
	return nil
}

func (s *schedule) snapshot(int) error { return s.c.snapshot(s.pick()) }

func (s *schedule) transfer(int) error {
	if tn := s.c.nodes[s.pick()]; !tn.down {
		_ = tn.node.TransferLeadership(s.pick())
	}
	return nil
}

func (s *schedule) changeMembership(int) error { return changeMembership(s.c, s.intn, s.size) }

// checkReads checks every read served since the last call at its release
// point: at or below the applied index, and covering every write committed
// before it was asked for.
func (s *schedule) checkReads() {
	for _, id := range s.c.ids {
		tn := s.c.nodes[id]
		for _, rs := range tn.reads {
			p, ok := s.reads[string(rs.Context)]
			if !ok {
				s.rt.Fatalf("node %d: read state for unknown request %q", id, rs.Context)
			}
			if rs.Index < p.minIndex {
				s.rt.Fatalf("node %d: read %q released at %d, but %d was committed before it was asked", id, rs.Context, rs.Index, p.minIndex)
			}
			if rs.applied < rs.Index {
				s.rt.Fatalf("node %d: read %q at %d served with only %d applied", id, rs.Context, rs.Index, rs.applied)
			}
		}
		tn.reads = nil
	}
}

// checkLiveness heals everything; a leader must emerge and commit a new
// proposal on every node within a bounded number of ticks.
func (s *schedule) checkLiveness() {
	c := s.c
	c.heal()
	for _, id := range c.ids {
		if c.nodes[id].down {
			if err := c.restart(id); err != nil {
				s.rt.Fatal(err)
			}
		}
	}
	const bound = 400
	var idx, term uint64
	proposed := false
	err := c.stabilize(bound, func() bool {
		lead := c.leader()
		if lead == None {
			return false
		}
		if proposed {
			// A proposal the current leader does not hold is lost (made at
			// a stale leader, or overwritten): try again.
			if t, err := c.node(lead).Term(idx); err != nil || t != term {
				proposed = false
			}
		}
		if !proposed {
			var perr error
			idx, term, perr = c.node(lead).Propose([]byte("final"))
			proposed = perr == nil
			return false
		}
		return c.committedEverywhere(idx)
	})
	if err != nil {
		for _, id := range c.ids {
			st := c.nodes[id].node.Status()
			s.rt.Logf("node %d down=%v %+v lastTerm=%d", id, c.nodes[id].down, st, c.nodes[id].node.r.log.lastTerm())
		}
		s.rt.Fatalf("no progress after healing: %v", err)
	}
	s.checkReads()
}

// pipelineStep moves the pipelines on: each node, with probability three
// in four, may take a Ready, then persists, applies and advances up to two
// batches each (a stage with nothing to do does nothing). The slow stage
// (1 persist, 2 apply, 3 advance; 0 none) mostly waits, as behind a slow
// disk or state machine, so batches pile up before it.
func pipelineStep(c *cluster, rng *rand.Rand, slow int) error {
	for _, id := range c.ids {
		if rng.IntN(4) == 0 {
			continue
		}
		if rng.IntN(2) == 0 {
			if _, err := c.takeReady(id); err != nil {
				return err
			}
		}
		for i, stage := range []func(NodeID) error{c.persistNext, c.applyNext, c.advanceNext} {
			if i+1 == slow && rng.IntN(4) > 0 {
				continue
			}
			for k := rng.IntN(3); k > 0; k-- {
				if err := stage(id); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// changeMembership proposes a random membership change at the leader: add a
// brand-new node as a learner, promote a learner, or remove any member.
// Refusals (a change pending, a lagging learner, …) are part of the test.
func changeMembership(c *cluster, intn func(lo, hi int) int, size int) error {
	lead := c.leader()
	if lead == None {
		return nil
	}
	conf := c.node(lead).Conf()
	var cc ConfChange
	switch intn(0, 2) {
	case 0:
		if len(c.ids) >= size+3 {
			return nil
		}
		id := c.ids[len(c.ids)-1] + 1
		if err := c.join(id); err != nil {
			return err
		}
		cc = ConfChange{Type: ConfAddLearner, Node: id}
	case 1:
		if len(conf.Learners) == 0 {
			return nil
		}
		cc = ConfChange{Type: ConfPromote, Node: conf.Learners[intn(0, len(conf.Learners)-1)]}
	default:
		members := append(slices.Clone(conf.Voters), conf.Learners...)
		cc = ConfChange{Type: ConfRemove, Node: members[intn(0, len(members)-1)]}
	}
	_, _, _ = c.node(lead).ProposeConfChange(cc)
	return nil
}

// readyDigest renders a Ready deterministically (no pointers), so two runs
// can be compared byte for byte.
func readyDigest(b []byte, id NodeID, rd Ready) []byte {
	b = binary.AppendUvarint(b, uint64(id))
	if rd.SoftState != nil {
		b = fmt.Appendf(b, "ss%d/%d", rd.SoftState.Lead, rd.SoftState.Role)
	}
	b = fmt.Appendf(b, "hs%v", rd.HardState)
	if rd.Snapshot != nil {
		b = fmt.Appendf(b, "snap%v", *rd.Snapshot)
	}
	b = fmt.Appendf(b, "e%v c%v r%v sync%v", rd.Entries, rd.CommittedEntries, rd.ReadStates, rd.MustSync)
	for _, ms := range [][]Message{rd.Messages, rd.MessagesAfterPersist} {
		for _, m := range ms {
			b = fmt.Appendf(b, "m%v%v%s", m, m.Entries, m.Context)
			if m.Snapshot != nil {
				b = fmt.Appendf(b, "%v", *m.Snapshot)
			}
		}
	}
	return b
}

// The same seed and schedule give the same Ready stream, byte for byte.
func TestDeterministicReadyStream(t *testing.T) {
	run := func() string {
		var trace []byte
		c, err := newCluster(5, 42, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.trace = func(id NodeID, rd Ready) { trace = readyDigest(trace, id, rd) }
		// A fixed schedule with elections, proposals, a crash, a partition
		// and a snapshot.
		for round := 0; round < 300; round++ {
			switch round {
			case 50:
				c.crash(c.leader())
			case 120:
				for _, id := range c.ids {
					if c.nodes[id].down {
						if err := c.restart(id); err != nil {
							t.Fatal(err)
						}
					}
				}
			case 150:
				c.isolate(2)
			case 200:
				c.heal()
				if err := c.snapshot(c.leader()); err != nil {
					t.Fatal(err)
				}
			}
			if round%3 == 0 {
				_, _, _ = c.propose(fmt.Sprintf("v%d", round))
			}
			if err := c.tickAll(); err != nil {
				t.Fatal(err)
			}
			if err := c.deliverAll(10000); err != nil {
				t.Fatal(err)
			}
		}
		return string(trace)
	}
	a, b := run(), run()
	if len(a) == 0 || a != b {
		t.Fatalf("two runs with the same seed differ (%d vs %d bytes of trace)", len(a), len(b))
	}
}
