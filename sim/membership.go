package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// The membership nemesis changes who is in the cluster while the other
// faults go on, as an operator would: through the leader of the moment, it
// adds a fresh node (started empty, core.Config.Join) as a learner,
// promotes a learner, removes a learner or a voter — the leader itself
// too — or replaces a voter by a fresh node under a new id. Whatever core
// refuses (a change already pending, no commit in the leader's term yet, a
// learner too far behind, a transfer under way, not the leader) is normal
// and counted; the nemesis tries again later.
//
// It never goes below a safe minimum, judged against the leader's latest
// configuration before each removal: at least minVoters voters remain,
// and most of them are nodes that can always come back (no storage faults,
// not halted). Without the second rule a run could remove healthy voters
// until the ones whose disks may halt them are half the cluster, and the
// liveness check after healing would blame the protocol for a cluster an
// operator had broken.
//
// A node that applies its own removal stops for good, as the server does
// (at once, or after lingering up to two election timeouts — a server
// shutting down takes a moment). A node removed while cut off keeps
// running and sending until it hears of its removal: when its messages
// reach the leader, the leader is told to inform it (as a server does from
// its tombstones), and the protocol must cope with it meanwhile.

const (
	// minVoters: a removal never leaves fewer voters. Three, not two, so
	// that one voter can be down during the faults without stopping the
	// cluster for good: with two, any crash at the wrong moment stalls it
	// until healing (allowed), but a halted one would stall it forever.
	minVoters = 3
	// maxMembers bounds voters and learners together, and maxJoined the
	// fresh nodes one run starts (each replacement uses one).
	maxMembers = 7
	maxJoined  = 10
)

// MemberCounts is what the membership nemesis did in one run.
type MemberCounts struct {
	// Proposed changes a leader accepted; Lost ones whose entry was
	// overwritten (the proposer's answer was ErrLost).
	Proposed, Lost int
	// Committed changes, by kind; LeaderRemovals are removals of the
	// leader that proposed them.
	Adds, Promotions, Removals, LeaderRemovals int
	// Replacements: a voter removed and a fresh node with an empty disk
	// added in its place, both committed.
	Replacements int
	// Joined fresh nodes started; Stopped nodes that applied their own
	// removal and stopped.
	Joined, Stopped int
	// Refusals, by reason, and attempts with no leader to ask.
	RefusedPending, RefusedNoTermCommit, RefusedBehind, RefusedTransferring, RefusedNotLeader, RefusedInvalid int
	NoLeader                                                                                                  int
}

// Add sums counts (for a swarm's totals).
func (c *MemberCounts) Add(o MemberCounts) {
	c.Proposed += o.Proposed
	c.Lost += o.Lost
	c.Adds += o.Adds
	c.Promotions += o.Promotions
	c.Removals += o.Removals
	c.LeaderRemovals += o.LeaderRemovals
	c.Replacements += o.Replacements
	c.Joined += o.Joined
	c.Stopped += o.Stopped
	c.RefusedPending += o.RefusedPending
	c.RefusedNoTermCommit += o.RefusedNoTermCommit
	c.RefusedBehind += o.RefusedBehind
	c.RefusedTransferring += o.RefusedTransferring
	c.RefusedNotLeader += o.RefusedNotLeader
	c.RefusedInvalid += o.RefusedInvalid
	c.NoLeader += o.NoLeader
}

// Committed is the number of committed changes of every kind.
func (c MemberCounts) Committed() int { return c.Adds + c.Promotions + c.Removals }

func (c MemberCounts) String() string {
	return fmt.Sprintf("committed add-learner=%d promote=%d remove=%d (of the leader %d), replacements=%d; "+
		"proposed=%d lost=%d joined=%d stopped=%d; refused pending=%d no-term-commit=%d learner-behind=%d transferring=%d not-leader=%d invalid=%d; no-leader=%d",
		c.Adds, c.Promotions, c.Removals, c.LeaderRemovals, c.Replacements,
		c.Proposed, c.Lost, c.Joined, c.Stopped,
		c.RefusedPending, c.RefusedNoTermCommit, c.RefusedBehind, c.RefusedTransferring, c.RefusedNotLeader, c.RefusedInvalid, c.NoLeader)
}

// membership is the nemesis's state.
type membership struct {
	rng    *rand.Rand
	counts MemberCounts
	// seen are the committed configuration entries already counted.
	seen map[uint64]bool
	// proposals by the entry (index, term) they became.
	proposals map[entryPos]*proposal
	// joiner is a fresh node started but not yet in the configuration;
	// the next addition adds it.
	joiner *node
	// replacements under way, oldest first.
	replacements []*replacement
	// eager: the next new leader is asked for a change at once (set when
	// a proposer was cut off with its change).
	eager bool
	// removed holds every node a committed change removed: as a server's
	// tombstones do, it tells a leader to inform such a node that still
	// sends (core.Node.InformRemoved).
	removed map[core.NodeID]bool
}

type entryPos struct{ index, term uint64 }

type proposal struct {
	cc     core.ConfChange
	leader core.NodeID
}

// replacement is one voter being replaced by a fresh node: either removed
// first and then the fresh node added, or (when removing first would go
// below the minimum) the fresh node added and promoted first.
type replacement struct {
	old, fresh     core.NodeID
	removed, added bool
}

func newMembership(rng *rand.Rand) *membership {
	return &membership{rng: rng, seen: map[uint64]bool{}, proposals: map[entryPos]*proposal{}, removed: map[core.NodeID]bool{}}
}

// startMembership runs the nemesis every Faults.MemberEvery µs on average
// until the faulty period ends.
func (w *world) startMembership(until int64) {
	mean := w.faults.MemberEvery
	rng := w.mem.rng
	var loop func()
	loop = func() {
		if w.clock.now >= until || w.err != nil {
			return
		}
		w.changeMembership()
		w.clock.after(mean/2+rng.Int64N(mean), loop)
	}
	w.clock.after(mean/2+rng.Int64N(mean), loop)
}

// change is one membership change the nemesis has chosen. For an addition
// the node is chosen when it is proposed (the pending fresh node, or a new
// one).
type change struct {
	typ  core.ConfChangeType
	node core.NodeID
	// replaces is set for the first step of a new replacement, and repl
	// for a step of one under way.
	replaces core.NodeID
	repl     *replacement
}

// changeMembership proposes one change to the current leader: most of the
// time one that finishes what earlier changes started (a replacement, a
// learner to promote), otherwise one drawn at random. Now and then a second
// request follows at once, before the first can commit, as an impatient
// operator's would (core refuses it: one change at a time).
func (w *world) changeMembership() {
	if w.changeMembershipOnce() && w.mem.rng.IntN(4) == 0 {
		w.changeMembershipOnce()
	}
}

// changeMembershipOnce makes one request and reports whether the leader
// accepted it.
func (w *world) changeMembershipOnce() bool {
	m := w.mem
	lead := w.leader()
	if lead == nil || !lead.alive() {
		m.counts.NoLeader++
		return false
	}
	conf := lead.rep.Node().Conf()
	ch, ok := change{}, false
	if m.rng.IntN(5) != 0 {
		ch, ok = w.owedChange(conf)
	}
	if !ok {
		ch, ok = w.randomChange(conf, lead.id)
	}
	return ok && w.proposeChange(lead, conf, ch)
}

// owedChange continues what is under way: the next step of a replacement,
// or the promotion of a learner.
func (w *world) owedChange(conf core.ConfState) (change, bool) {
	m := w.mem
	for _, r := range m.replacements {
		switch {
		case !r.removed && isMember(conf, r.old) && w.canRemove(conf, r.old):
			return change{typ: core.ConfRemove, node: r.old, repl: r}, true
		case !r.added && (r.fresh == core.None || !isMember(conf, r.fresh)) && w.canAdd(conf):
			return change{typ: core.ConfAddLearner, repl: r}, true
		}
	}
	if len(conf.Learners) > 0 {
		return change{typ: core.ConfPromote, node: conf.Learners[m.rng.IntN(len(conf.Learners))]}, true
	}
	return change{}, false
}

// randomChange draws one change that fits the configuration, weighted:
// additions and removals of voters most often, learners removed now and
// then, the leader removing itself about one time in ten.
func (w *world) randomChange(conf core.ConfState, lead core.NodeID) (change, bool) {
	m := w.mem
	var voters, replaceable []core.NodeID
	for _, id := range conf.Voters {
		if id != lead && w.canRemove(conf, id) {
			voters = append(voters, id)
		}
		if w.canRemove(conf, id) || w.canAdd(conf) {
			replaceable = append(replaceable, id)
		}
	}
	type option struct {
		weight int
		pick   func() change
	}
	var opts []option
	if w.canAdd(conf) {
		opts = append(opts, option{3, func() change { return change{typ: core.ConfAddLearner} }})
	}
	if len(conf.Learners) > 0 {
		opts = append(opts,
			option{2, func() change { return change{typ: core.ConfPromote, node: w.pickOf(conf.Learners)} }},
			option{1, func() change { return change{typ: core.ConfRemove, node: w.pickOf(conf.Learners)} }})
	}
	if len(voters) > 0 {
		opts = append(opts, option{2, func() change { return change{typ: core.ConfRemove, node: w.pickVoter(voters)} }})
	}
	if w.canRemove(conf, lead) {
		opts = append(opts, option{1, func() change { return change{typ: core.ConfRemove, node: lead} }})
	}
	if len(replaceable) > 0 {
		opts = append(opts, option{2, func() change {
			old := w.pickVoter(replaceable)
			if w.canRemove(conf, old) {
				return change{typ: core.ConfRemove, node: old, replaces: old}
			}
			return change{typ: core.ConfAddLearner, replaces: old}
		}})
	}
	total := 0
	for _, o := range opts {
		total += o.weight
	}
	if total == 0 {
		return change{}, false
	}
	r := m.rng.IntN(total)
	for _, o := range opts {
		if r < o.weight {
			return o.pick(), true
		}
		r -= o.weight
	}
	return change{}, false
}

func (w *world) pickOf(ids []core.NodeID) core.NodeID { return ids[w.mem.rng.IntN(len(ids))] }

// pickVoter prefers a halted voter half the time: replacing a node whose
// disk failed is what an operator does.
func (w *world) pickVoter(ids []core.NodeID) core.NodeID {
	if w.mem.rng.IntN(2) == 0 {
		for _, id := range ids {
			if w.node(id).state == nodeHalted {
				return id
			}
		}
	}
	return w.pickOf(ids)
}

// canAdd: room for one more member, and for one more fresh node.
func (w *world) canAdd(conf core.ConfState) bool {
	return len(conf.Voters)+len(conf.Learners) < maxMembers &&
		(w.mem.joiner != nil || len(w.nodes)-len(w.ids) < maxJoined)
}

// canRemove: removing id leaves at least minVoters voters, most of them
// healthy (see the comment at the top).
func (w *world) canRemove(conf core.ConfState, id core.NodeID) bool {
	if !slices.Contains(conf.Voters, id) {
		return slices.Contains(conf.Learners, id)
	}
	left, healthy := 0, 0
	for _, v := range conf.Voters {
		if v == id {
			continue
		}
		left++
		if n := w.node(v); !n.storageFault && n.state != nodeHalted {
			healthy++
		}
	}
	return left >= minVoters && 2*healthy > left
}

func isMember(conf core.ConfState, id core.NodeID) bool {
	return slices.Contains(conf.Voters, id) || slices.Contains(conf.Learners, id)
}

// proposeChange asks the leader for ch and reports whether it accepted.
func (w *world) proposeChange(lead *node, conf core.ConfState, ch change) bool {
	m := w.mem
	cc := core.ConfChange{Type: ch.typ, Node: ch.node}
	if cc.Type == core.ConfAddLearner {
		fresh := w.freshNode(conf)
		cc.Node = fresh.id
		// The address book entry: in the simulator any name will do.
		cc.Context = []byte(strconv.FormatUint(uint64(fresh.id), 10))
	}
	w.nextRequest++
	id := w.nextRequest
	err := lead.rep.ProposeConfChange(id, cc)
	if err != nil {
		w.refused(lead, cc, err)
		return false
	}
	nd := lead.rep.Node()
	index := nd.LastIndex()
	term, _ := nd.Term(index)
	m.counts.Proposed++
	m.proposals[entryPos{index, term}] = &proposal{cc: cc, leader: lead.id}
	repl := ch.repl
	if ch.replaces != core.None {
		repl = &replacement{old: ch.replaces}
		m.replacements = append(m.replacements, repl)
	}
	note := ""
	if cc.Node == lead.id {
		note = " (itself)"
	}
	switch {
	case repl != nil && repl.old == cc.Node:
		note += " (to be replaced)"
	case repl != nil && cc.Type == core.ConfAddLearner:
		repl.fresh = cc.Node
		note += fmt.Sprintf(" (replacing node %d)", repl.old)
	}
	w.logf("membership: leader %d (term %d) proposes %v %d%s as entry %d", lead.id, term, cc.Type, cc.Node, note, index)
	lead.requests[id] = &request{id: id, onDone: func(out replica.Outcome) {
		if out.Err != nil {
			if errors.Is(out.Err, replica.ErrLost) {
				m.counts.Lost++
			}
			w.logf("membership: %v %d (entry %d on node %d): %v", cc.Type, cc.Node, index, lead.id, out.Err)
		}
	}}
	lead.schedule()
	if f := w.faults.ChangeIsolate; f > 0 && m.rng.Float64() < f {
		w.cutOffProposer(lead)
	}
	return true
}

// cutOffProposer cuts a leader that has just accepted a change off from
// all its peers, or from a random part of them, for up to half a second:
// the change may then live in its log alone, or on a minority.
func (w *world) cutOffProposer(lead *node) {
	rng := w.mem.rng
	all := rng.IntN(2) == 0
	var cut []core.NodeID
	for _, n := range w.active() {
		if n != lead && (all || rng.IntN(2) == 0) {
			cut = append(cut, n.id)
		}
	}
	if len(cut) == 0 {
		return
	}
	set := func(on bool) {
		for _, id := range cut {
			w.net.cutLink(lead.id, id, on)
			w.net.cutLink(id, lead.id, on)
		}
	}
	set(true)
	w.mem.eager = true
	w.counts.Isolations++
	w.logf("node %d cut off from %v right after accepting a membership change", lead.id, cut)
	w.clock.after(20_000+rng.Int64N(500_000), func() { set(false) })
}

// newLeader hears of a newly elected leader: now and then the nemesis asks
// it for a change at once, before it has committed an entry of its term —
// always right after a proposer was cut off with its change.
func (w *world) newLeader() {
	f := w.faults
	if !f.Membership || w.clock.now >= w.faultsUntil {
		return
	}
	if w.mem.eager || (f.NewLeaderChange > 0 && w.mem.rng.Float64() < f.NewLeaderChange) {
		w.mem.eager = false
		w.changeMembership()
	}
}

// refused counts a refusal by its reason.
func (w *world) refused(lead *node, cc core.ConfChange, err error) {
	c := &w.mem.counts
	var nl *core.ErrNotLeader
	switch {
	case errors.Is(err, core.ErrConfChangePending):
		c.RefusedPending++
	case errors.Is(err, core.ErrNoTermCommit):
		c.RefusedNoTermCommit++
	case errors.Is(err, core.ErrLearnerBehind):
		c.RefusedBehind++
	case errors.Is(err, core.ErrTransferring):
		c.RefusedTransferring++
	case errors.As(err, &nl):
		c.RefusedNotLeader++
	default:
		// The nemesis only asks for changes that fit the leader's
		// configuration; anything else is worth reading in the log.
		c.RefusedInvalid++
	}
	w.logf("membership: leader %d refuses %v %d: %v", lead.id, cc.Type, cc.Node, err)
}

// freshNode is the node the next addition adds: the one started earlier
// and not yet in the configuration, or a new one under the next id, with
// an empty disk.
func (w *world) freshNode(conf core.ConfState) *node {
	m := w.mem
	if m.joiner != nil && !isMember(conf, m.joiner.id) {
		return m.joiner
	}
	id := core.NodeID(len(w.nodes) + 1)
	n := w.newNode(id, rand.New(rand.NewPCG(m.rng.Uint64(), m.rng.Uint64())), false)
	// Under DamageAll every member's disk is damaged now and then.
	n.storageFault = w.faults.DamageAll
	n.join = true
	w.nodes = append(w.nodes, n)
	w.net.grow(len(w.nodes))
	m.joiner = n
	m.counts.Joined++
	w.logf("node %d starts with an empty disk, waiting to be added", id)
	n.start()
	return n
}

// confCommitted hears of a committed configuration change applied by node
// n (from replica.Config.ConfChanged): the world's view of the membership
// follows the newest, and each change is counted and logged once.
func (w *world) confCommitted(n *node, index uint64, cc core.ConfChange, conf core.ConfState) {
	if index > w.confIndex {
		w.setConf(conf, index)
	}
	m := w.mem
	if m.seen[index] {
		return
	}
	m.seen[index] = true
	var p *proposal
	if term, err := n.rep.Node().Term(index); err == nil {
		p = m.proposals[entryPos{index, term}]
	}
	note := ""
	switch cc.Type {
	case core.ConfAddLearner:
		m.counts.Adds++
		if m.joiner != nil && m.joiner.id == cc.Node {
			m.joiner = nil
		}
	case core.ConfPromote:
		m.counts.Promotions++
	case core.ConfRemove:
		m.removed[cc.Node] = true
		m.counts.Removals++
		if p != nil && p.leader == cc.Node {
			m.counts.LeaderRemovals++
			note = " (the leader that proposed it)"
		}
	}
	w.logf("membership: committed %v %d%s at entry %d: voters %v learners %v", cc.Type, cc.Node, note, index, conf.Voters, conf.Learners)
	if len(conf.Voters) < minVoters {
		// Every change the nemesis asks for keeps the minimum against the
		// configuration it builds on; a committed one below it was built
		// on another.
		w.fail(fmt.Errorf("membership: committed %v %d at entry %d leaves voters %v, below the minimum of %d the nemesis keeps",
			cc.Type, cc.Node, index, conf.Voters, minVoters))
	}
	for _, r := range m.replacements {
		done := r.removed && r.added
		switch {
		case cc.Type == core.ConfRemove && r.old == cc.Node:
			r.removed = true
		case cc.Type == core.ConfAddLearner && r.fresh == cc.Node:
			r.added = true
		}
		if !done && r.removed && r.added {
			m.counts.Replacements++
			w.logf("membership: node %d replaced by node %d", r.old, r.fresh)
		}
	}
	m.replacements = slices.DeleteFunc(m.replacements, func(r *replacement) bool { return r.removed && r.added })
}

// confChanged is the replica's report of a committed membership change.
func (n *node) confChanged(index uint64, cc core.ConfChange, conf core.ConfState) {
	n.w.confCommitted(n, index, cc, conf)
	if cc.Type == core.ConfRemove && cc.Node == n.id && n.removedAt == 0 {
		n.removedAt = index
	}
}

// arrangeLeave stops a node that has applied its own removal: at once, or
// after lingering a little, still running, as a server shutting down does.
func (n *node) arrangeLeave() {
	n.leaving = true
	w := n.w
	if w.mem.rng.IntN(2) == 0 {
		n.stop()
		return
	}
	linger := 1 + w.mem.rng.Int64N(2*int64(w.electionTicks)*tickMicros)
	w.logf("node %d applied its own removal (entry %d); stops in %v", n.id, n.removedAt, time.Duration(linger)*time.Microsecond)
	w.clock.after(linger, n.stop)
}

// stop ends the node for good, saying why.
func (n *node) stop() {
	if n.state == nodeRemoved {
		return
	}
	n.halt = fmt.Sprintf("removed from the cluster by entry %d", n.removedAt)
	n.w.logf("node %d stops: %s", n.id, n.halt)
	n.state = nodeRemoved
	n.endLife()
	n.fs.Intercept = nil
	n.w.mem.counts.Stopped++
}
