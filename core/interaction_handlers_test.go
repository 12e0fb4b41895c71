package core

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/datadriven"
)

// The verbs of the transcript tests, one small handler each. Node ids are
// bare arguments ("propose 1 x"); options are key=value ("deliver from=1").
// Verbs that take node ids and are given none act on every node.
var interactionVerbs = map[string]verbHandler{
	"add-nodes":           handleAddNodes,
	"campaign":            handleCampaign,
	"tick":                handleTick,
	"tick-election":       handleTickElection,
	"tick-heartbeat":      handleTickHeartbeat,
	"propose":             handlePropose,
	"read-index":          handleReadIndex,
	"transfer-leadership": handleTransferLeadership,
	"process-ready":       handleProcessReady,
	"messages":            handleMessages,
	"deliver":             handleDeliver,
	"drop":                handleDrop,
	"stabilize":           handleStabilize,
	"partition":           handlePartition,
	"heal":                handleHeal,
	"crash":               handleCrash,
	"restart":             handleRestart,
	"snapshot":            handleSnapshot,
	"raft-state":          handleRaftState,
	"status":              handleStatus,
	"log":                 handleLog,
}

// add-nodes N [seed=1] [prevote=true] [checkquorum=true] [election=10]
// [max-msg-bytes=…] [max-inflight=…] starts a cluster of N voters, and each
// persists its bootstrap membership.
func handleAddNodes(env *interactionEnv, td *datadriven.TestData) error {
	if env.c != nil {
		return errors.New("the cluster exists already")
	}
	args := positional(td)
	if len(args) != 1 {
		return errors.New("usage: add-nodes <count> [options]")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return fmt.Errorf("node count: %w", err)
	}
	for _, a := range td.CmdArgs {
		if len(a.Vals) > 0 && !slices.Contains([]string{"seed", "prevote", "checkquorum", "election", "max-msg-bytes", "max-inflight"}, a.Key) {
			return fmt.Errorf("unknown option %q", a.Key)
		}
	}
	seed := uint64(1)
	preVote, checkQuorum := true, true
	var opts Config
	if err := errors.Join(
		intArg(td, "seed", &seed), boolArg(td, "prevote", &preVote), boolArg(td, "checkquorum", &checkQuorum),
		intArg(td, "election", &opts.ElectionTick), intArg(td, "max-msg-bytes", &opts.MaxMsgBytes),
		intArg(td, "max-inflight", &opts.MaxInflightMsgs),
	); err != nil {
		return err
	}
	c, err := newCluster(n, seed, func(cfg *Config) {
		cfg.DisablePreVote, cfg.DisableCheckQuorum = !preVote, !checkQuorum
		if opts.ElectionTick > 0 {
			cfg.ElectionTick = opts.ElectionTick
		}
		cfg.MaxMsgBytes, cfg.MaxInflightMsgs = opts.MaxMsgBytes, opts.MaxInflightMsgs
	})
	if err != nil {
		return err
	}
	if err := c.ready(); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	c.trace = env.printReady
	env.c = c
	return handleRaftState(env, td)
}

// campaign ID makes the node start an election now (a pre-vote first,
// unless PreVote is off), as if its election timeout had fired.
func handleCampaign(env *interactionEnv, td *datadriven.TestData) error {
	tn, id, _, err := env.node(td)
	if err != nil {
		return err
	}
	r := tn.node.r
	r.campaign(!r.cfg.DisablePreVote, false)
	env.printState(id)
	return nil
}

// tick [IDs] [n=1] ticks each node n times.
func handleTick(env *interactionEnv, td *datadriven.TestData) error {
	ids, err := env.nodes(td)
	if err != nil {
		return err
	}
	n := 1
	if err := intArg(td, "n", &n); err != nil {
		return err
	}
	return env.tick(ids, n)
}

func (env *interactionEnv) tick(ids []NodeID, n int) error {
	for range n {
		for _, id := range ids {
			if err := env.c.tick(id); err != nil {
				return err
			}
		}
	}
	for _, id := range ids {
		env.printState(id)
	}
	return nil
}

// tick-election ID ticks the node through one election timeout: its own
// randomized one as a follower or candidate (so it campaigns), ElectionTick
// as a leader (so CheckQuorum and a pending transfer are decided).
func handleTickElection(env *interactionEnv, td *datadriven.TestData) error {
	tn, id, _, err := env.node(td)
	if err != nil {
		return err
	}
	r := tn.node.r
	n := r.cfg.ElectionTick
	if r.role != Leader {
		n = r.randomizedElectionTimeout - r.electionElapsed
	}
	env.printf("%d ticks\n", n)
	return env.tick([]NodeID{id}, n)
}

// tick-heartbeat ID ticks the node through one heartbeat interval.
func handleTickHeartbeat(env *interactionEnv, td *datadriven.TestData) error {
	tn, id, _, err := env.node(td)
	if err != nil {
		return err
	}
	return env.tick([]NodeID{id}, tn.node.r.cfg.HeartbeatTick)
}

// propose ID DATA appends DATA at the node, if it leads.
func handlePropose(env *interactionEnv, td *datadriven.TestData) error {
	tn, _, rest, err := env.node(td)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return errors.New("usage: propose <id> <data>")
	}
	index, term, err := tn.node.Propose([]byte(rest[0]))
	if err != nil {
		env.printf("refused: %v\n", err)
		return nil
	}
	env.printf("proposed at %s\n", fmtPos(index, term))
	return nil
}

// read-index ID CTX asks the node for a linearizable read point.
func handleReadIndex(env *interactionEnv, td *datadriven.TestData) error {
	tn, _, rest, err := env.node(td)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return errors.New("usage: read-index <id> <ctx>")
	}
	if err := tn.node.ReadIndex([]byte(rest[0])); err != nil {
		env.printf("refused: %v\n", err)
	}
	return nil
}

// transfer-leadership from=ID to=ID asks the leader to hand over.
func handleTransferLeadership(env *interactionEnv, td *datadriven.TestData) error {
	var from, to NodeID
	if err := errors.Join(intArg(td, "from", &from), intArg(td, "to", &to)); err != nil {
		return err
	}
	if err := env.exists(from); err != nil {
		return err
	}
	if env.c.nodes[from].down {
		return fmt.Errorf("node %d is down", from)
	}
	if err := env.c.node(from).TransferLeadership(to); err != nil {
		env.printf("refused: %v\n", err)
	}
	return nil
}

// process-ready [IDs] has each node with work hand out a Ready, and does
// it: send, persist, send what waited for persistence, apply, Advance.
func handleProcessReady(env *interactionEnv, td *datadriven.TestData) error {
	ids, err := env.nodes(td)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := env.c.readyNode(id); err != nil {
			return err
		}
	}
	return nil
}

// messages lists the messages in flight, oldest first.
func handleMessages(env *interactionEnv, _ *datadriven.TestData) error {
	for _, m := range env.c.queue {
		env.printf("%s\n", fmtMsg(m))
	}
	return nil
}

// deliver [from=ID] [to=ID] [type=MsgX] delivers the messages in flight
// that match, oldest first. A partition or a down recipient loses them.
func handleDeliver(env *interactionEnv, td *datadriven.TestData) error {
	f, err := parseFilter(td)
	if err != nil {
		return err
	}
	return env.deliver(f, "")
}

func (env *interactionEnv) deliver(f msgFilter, indent string) error {
	c := env.c
	for _, m := range env.takeQueued(f) {
		note := ""
		switch from, to := c.nodes[m.From], c.nodes[m.To]; {
		case to.down:
			note = " (lost: recipient down)"
		case c.cut[m.From][m.To]:
			note = " (lost: partition)"
		case m.Type == MsgSnap && from.snaps[m.Snapshot.Index] == smState{}:
			note = " (lost: the sender no longer has the snapshot)"
		}
		env.printf("%s%s%s\n", indent, fmtMsg(m), note)
		if err := c.deliverMsg(m); err != nil {
			return err
		}
	}
	return nil
}

// drop [from=ID] [to=ID] [type=MsgX] loses the matching messages in flight.
func handleDrop(env *interactionEnv, td *datadriven.TestData) error {
	f, err := parseFilter(td)
	if err != nil {
		return err
	}
	for _, m := range env.takeQueued(f) {
		env.c.lost(m)
		env.printf("dropped %s\n", fmtMsg(m))
	}
	return nil
}

// stabilize processes Readys and delivers messages until the cluster is
// quiet (no ticks pass). With "quiet" it shows only the state it ends in,
// for setting a scene.
func handleStabilize(env *interactionEnv, td *datadriven.TestData) error {
	if err := env.stabilize(); err != nil {
		return err
	}
	if td.HasArg("quiet") {
		env.out.Reset()
		return handleRaftState(env, td)
	}
	return nil
}

func (env *interactionEnv) stabilize() error {
	c := env.c
	for round := 0; ; round++ {
		if round == 1000 {
			return errors.New("not quiet after 1000 rounds")
		}
		busy := false
		for _, id := range c.ids {
			if tn := c.nodes[id]; !tn.down && tn.node.HasReady() {
				busy = true
				if err := c.readyNode(id); err != nil {
					return err
				}
			}
		}
		if len(c.queue) > 0 {
			busy = true
			env.printf("deliver:\n")
			if err := env.deliver(msgFilter{}, "  "); err != nil {
				return err
			}
		}
		if !busy {
			return nil
		}
	}
}

// partition cuts the network into groups that cannot talk to each other.
// "partition 1 2" puts 1 and 2 on one side and everyone else on the other.
// Otherwise each input line is a group, and a node on no line is alone.
func handlePartition(env *interactionEnv, td *datadriven.TestData) error {
	c := env.c
	var groups [][]NodeID
	if args := positional(td); len(args) > 0 {
		side, err := env.parseNodes(args)
		if err != nil {
			return err
		}
		rest := slices.DeleteFunc(slices.Clone(c.ids), func(id NodeID) bool { return slices.Contains(side, id) })
		groups = append(groups, side, rest)
	}
	for _, line := range strings.Split(td.Input, "\n") {
		if fields := strings.Fields(line); len(fields) > 0 {
			g, err := env.parseNodes(fields)
			if err != nil {
				return err
			}
			groups = append(groups, g)
		}
	}
	groupOf := make(map[NodeID]int)
	for i, g := range groups {
		for _, id := range g {
			groupOf[id] = i + 1
		}
	}
	c.heal()
	for _, a := range c.ids {
		if groupOf[a] == 0 {
			groups = append(groups, []NodeID{a})
		}
		for _, b := range c.ids {
			if a != b && (groupOf[a] == 0 || groupOf[a] != groupOf[b]) {
				c.setCut(a, b, true)
			}
		}
	}
	shown := make([]string, len(groups))
	for i, g := range groups {
		shown[i] = fmtIDs(g)
	}
	env.printf("%s\n", strings.Join(shown, " "))
	return nil
}

// heal reconnects every pair of nodes.
func handleHeal(env *interactionEnv, _ *datadriven.TestData) error {
	env.c.heal()
	return nil
}

// crash ID stops the node; what it had not persisted is gone.
func handleCrash(env *interactionEnv, td *datadriven.TestData) error {
	_, id, _, err := env.node(td)
	if err != nil {
		return err
	}
	env.c.crash(id)
	env.printState(id)
	return nil
}

// restart ID brings a crashed node back from its durable state.
func handleRestart(env *interactionEnv, td *datadriven.TestData) error {
	tn, id, _, err := env.node(td)
	if err != nil {
		return err
	}
	if !tn.down {
		return fmt.Errorf("node %d is not down", id)
	}
	if err := env.c.restart(id); err != nil {
		return err
	}
	env.printState(id)
	return nil
}

// snapshot ID has the node capture its state machine at its applied index
// and compact its log up to there.
func handleSnapshot(env *interactionEnv, td *datadriven.TestData) error {
	tn, id, _, err := env.node(td)
	if err != nil {
		return err
	}
	if err := env.c.snapshot(id); err != nil {
		return err
	}
	l := tn.node.r.log
	env.printf("%d: snapshot %s, log from %d\n", id, fmtSnap(l.snap), l.firstIndex())
	return nil
}

// raft-state shows every node's role, term, vote, leader and log positions.
func handleRaftState(env *interactionEnv, _ *datadriven.TestData) error {
	for _, id := range env.c.ids {
		env.printState(id)
	}
	return nil
}

// status ID adds the leader's view of each follower to the node's state.
func handleStatus(env *interactionEnv, td *datadriven.TestData) error {
	tn, id, _, err := env.node(td)
	if err != nil {
		return err
	}
	env.printState(id)
	if tn.down {
		return nil
	}
	r := tn.node.r
	if r.leadTransferee != None {
		env.printf("  transferring to %d\n", r.leadTransferee)
	}
	for _, pid := range r.trk.ids {
		if pr := r.trk.progress.get(pid); pr != nil && pid != id {
			env.printf("  %d: %s match=%d next=%d inflight=%d paused=%v\n",
				pid, pr.State, pr.Match, pr.Next, pr.inflights.count, pr.paused())
		}
	}
	return nil
}

// log [IDs] shows each node's log; for a node that is down, what is durable.
func handleLog(env *interactionEnv, td *datadriven.TestData) error {
	ids, err := env.nodes(td)
	if err != nil {
		return err
	}
	for _, id := range ids {
		tn := env.c.nodes[id]
		l := tn.node.r.log
		snap, ents, commit := l.snap, l.slice(l.firstIndex(), l.lastIndex()+1), l.committed
		if tn.down {
			env.printf("%d (down, durable):", id)
			snap, ents, commit = *tn.store.snap, tn.store.ents, tn.store.hs.Commit
		} else {
			env.printf("%d:", id)
		}
		if snap.Index > 0 {
			env.printf(" snapshot=%s", fmtPos(snap.Index, snap.Term))
		}
		if len(ents) > 0 {
			env.printf(" %s", fmtEntries(ents))
		}
		env.printf(" | commit=%d\n", commit)
	}
	return nil
}
