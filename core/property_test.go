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
// message delivery in any order, loss, duplication, partitions, crashes
// that lose everything not persisted, snapshots, reads, transfers. After
// every step the Checker verifies Raft's safety properties, and the release
// points hold: a read is served only at or below the applied index and
// covers every write committed before it was asked for; a leader counts
// only its durable entries as its own match; a vote or an acknowledgement
// leaves only once what it promises is durable. At the end, once the
// network heals, the cluster must elect a leader and commit.
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
	// Rapid draws the seed; a PRNG draws the schedule from it. (Rapid's own
	// integer draws lean towards small values, which starves a schedule of
	// variety; it still shrinks the configuration and reports the seed.)
	rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "schedule"), 7))
	intn := func(lo, hi int) int { return lo + rng.IntN(hi-lo+1) }
	reads := map[string]readProbe{}
	nextRead := 0
	checkReads := func() {
		for _, id := range c.ids {
			tn := c.nodes[id]
			for _, rs := range tn.reads {
				p, ok := reads[string(rs.Context)]
				if !ok {
					rt.Fatalf("node %d: read state for unknown request %q", id, rs.Context)
				}
				if rs.Index < p.minIndex {
					rt.Fatalf("node %d: read %q released at %d, but %d was committed before it was asked", id, rs.Context, rs.Index, p.minIndex)
				}
				if rs.applied < rs.Index {
					rt.Fatalf("node %d: read %q at %d served with only %d applied", id, rs.Context, rs.Index, rs.applied)
				}
			}
			tn.reads = nil
		}
	}
	maxCommit := func() uint64 {
		var m uint64
		for _, id := range c.ids {
			m = max(m, c.nodes[id].node.Status().HardState.Commit)
		}
		return m
	}
	pick := func(string) NodeID {
		return c.ids[intn(0, len(c.ids)-1)]
	}
	steps := intn(50, 600)
	for step := 0; step < steps; step++ {
		var err error
		if membership && intn(0, 19) == 0 {
			err = changeMembership(c, intn, size)
			if err != nil {
				rt.Fatalf("step %d: %v", step, err)
			}
			continue
		}
		switch a := intn(0, 99); {
		case a < 20:
			if len(c.queue) > 0 {
				err = c.deliver(intn(0, len(c.queue)-1))
			}
		case a < 38:
			// A burst: everything queued now arrives, in order.
			err = c.burst()
		case a < 41:
			if len(c.queue) > 0 {
				k := intn(0, len(c.queue)-1)
				c.lost(c.queue[k])
				c.queue = slices.Delete(c.queue, k, k+1)
			}
		case a < 43:
			if len(c.queue) > 0 {
				c.queue = append(c.queue, c.queue[intn(0, len(c.queue)-1)])
			}
		case a < 50:
			// Time passes for everyone (a node may miss the tick: drift).
			for _, id := range c.ids {
				if err == nil && intn(0, 9) > 0 {
					err = c.tick(id)
				}
			}
		case a < 52:
			err = c.tick(pick("tick"))
		case a < 70 && mode == pipelined:
			err = pipelineStep(c, rng)
		case a < 70:
			err = c.ready()
		case a < 73:
			err = c.readyNode(pick("ready"))
		case a < 74:
			err = c.readyNodeCrashing(pick("readyCrash"), true)
		case a < 84:
			id := c.leader()
			if id == None || intn(0, 9) == 0 {
				id = pick("propose")
			}
			if tn := c.nodes[id]; !tn.down {
				for k := intn(1, 3); k > 0; k-- {
					_, _, _ = tn.node.Propose([]byte(fmt.Sprintf("p%d.%d", step, k)))
				}
			}
		case a < 87:
			switch rng.IntN(4) {
			case 0:
				c.heal()
			case 1:
				// A pause: a stalled leader that resumes and answers from
				// stale state is the classic trap for reads.
				tn := c.nodes[pick("stall")]
				tn.stalled = !tn.stalled
			default:
				from, to := pick("cutFrom"), pick("cutTo")
				c.setCut(from, to, true)
				if rng.IntN(2) == 0 {
					c.setCut(to, from, true)
				}
			}
		case a < 90:
			id := pick("crash")
			if c.nodes[id].down {
				err = c.restart(id)
			} else {
				c.crash(id)
			}
		case a < 92:
			err = c.snapshot(pick("snapshot"))
		case a < 95:
			if tn := c.nodes[pick("read")]; !tn.down {
				ctx := fmt.Sprintf("r%d", nextRead)
				nextRead++
				reads[ctx] = readProbe{minIndex: maxCommit()}
				_ = tn.node.ReadIndex([]byte(ctx))
			}
		case a < 97:
			if tn := c.nodes[pick("transferFrom")]; !tn.down {
				_ = tn.node.TransferLeadership(pick("transferTo"))
			}
		default:
			if tn := c.nodes[pick("unreachableAt")]; !tn.down {
				tn.node.ReportUnreachable(pick("unreachable"))
				tn.node.ReportSnapshot(pick("snapFailed"), false)
			}
		}
		if err == nil {
			err = c.checkDurableMatches()
		}
		if err != nil {
			rt.Fatalf("step %d: %v", step, err)
		}
		checkReads()
	}

	// Liveness: heal everything; a leader must emerge and commit a new
	// proposal on every node within a bounded number of ticks.
	c.heal()
	for _, id := range c.ids {
		if c.nodes[id].down {
			if err := c.restart(id); err != nil {
				rt.Fatal(err)
			}
		}
	}
	const bound = 400
	var idx, term uint64
	proposed := false
	err = c.stabilize(bound, func() bool {
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
			rt.Logf("node %d down=%v %+v lastTerm=%d", id, c.nodes[id].down, st, c.nodes[id].node.r.log.lastTerm())
		}
		rt.Fatalf("no progress after healing: %v", err)
	}
	checkReads()
	return c
}

// pipelineStep moves the pipelines on: each node, with probability three
// in four, runs one to four stages drawn at random (take a Ready, persist,
// apply, advance; a stage with nothing to do does nothing).
func pipelineStep(c *cluster, rng *rand.Rand) error {
	for _, id := range c.ids {
		if rng.IntN(4) == 0 {
			continue
		}
		for k := 1 + rng.IntN(4); k > 0; k-- {
			var err error
			switch rng.IntN(4) {
			case 0:
				c.takeReady(id)
			case 1:
				err = c.persistNext(id)
			case 2:
				err = c.applyNext(id)
			default:
				err = c.advanceNext(id)
			}
			if err != nil {
				return err
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
