package core

import (
	"fmt"
	"slices"
)

// Membership changes go one server at a time (Ongaro's dissertation, §4.1):
// any majority of the old configuration overlaps any majority of the new
// one, so two leaders can never be elected by disjoint majorities. A
// change takes effect on a node as soon as the entry is in its log,
// committed or not, and a truncated change is undone with it (switchConf
// from confAt). The leader proposes a change only after committing an
// entry of its own term, and only when no earlier change is pending.

// proposeConfChange appends cc to the leader's log and puts it in force.
func (r *raft) proposeConfChange(cc ConfChange) (uint64, uint64, error) {
	if r.role != Leader {
		return 0, 0, &ErrNotLeader{Leader: r.lead}
	}
	if r.leadTransferee != None {
		return 0, 0, ErrTransferring
	}
	if !r.committedInTerm() {
		return 0, 0, ErrNoTermCommit
	}
	if r.confIndex > r.log.committed {
		return 0, 0, fmt.Errorf("%w (entry %d is not committed yet)", ErrConfChangePending, r.confIndex)
	}
	conf, err := applyConfChange(r.trk.conf, cc)
	if err != nil {
		return 0, 0, err
	}
	if cc.Type == ConfPromote {
		// Caught up means: it has answered, its log matches ours, and it
		// is at most MaxLearnerLag entries behind. A learner that never
		// answered has Match 0, which a short log would otherwise excuse.
		pr := r.trk.progress.get(cc.Node)
		last := r.log.lastIndex()
		switch {
		case pr == nil || pr.State != StateReplicate:
			return 0, 0, fmt.Errorf("promote node %d: %w (the leader is still finding where its log matches: is it running?)",
				cc.Node, ErrLearnerBehind)
		case pr.Match+r.cfg.MaxLearnerLag < last:
			return 0, 0, fmt.Errorf("promote node %d: %w (it has %d of %d entries; at most %d behind is allowed)",
				cc.Node, ErrLearnerBehind, pr.Match, last, r.cfg.MaxLearnerLag)
		}
	}
	cc.Context = slices.Clone(cc.Context)
	data := confEntry{Change: cc, Result: conf}.encode()
	i, t := r.appendEntry(Entry{Type: EntryConfChange, Data: data})
	r.switchConf(conf, i)
	return i, t, nil
}

// switchConf puts conf, from the configuration entry at index at, in force.
// On a leader, new members get a fresh progress (they are probed from the
// end of the log), and removed members keep theirs until they have heard
// of their removal, so a removed node learns it and stops.
func (r *raft) switchConf(conf ConfState, at uint64) {
	r.confIndex = at
	if r.trk.conf.Equal(conf) {
		return
	}
	old := r.trk
	r.trk = newTracker(conf)
	if r.role != Leader {
		return
	}
	for _, id := range r.trk.ids {
		pr := old.progress.get(id)
		if pr == nil {
			pr = &Progress{Next: r.log.lastIndex() + 1, LastHeard: r.ticks,
				inflights: newInflights(r.cfg.MaxInflightMsgs, r.cfg.MaxInflightBytes)}
		}
		pr.learner = !r.trk.isVoter(id)
		pr.removedAt = 0
		r.trk.progress.set(id, pr)
	}
	for _, id := range old.ids {
		if r.trk.progress.get(id) != nil {
			continue
		}
		pr := old.progress.get(id)
		if pr.removedAt == 0 {
			pr.removedAt = at
		}
		pr.learner = true
		r.trk.progress.set(id, pr)
		r.trk.ids = append(r.trk.ids, id)
	}
	slices.Sort(r.trk.ids)
}

// keepRemovedInformed, on a new leader whose latest configuration entry is
// not committed yet, keeps replicating to the nodes that entry removes
// (like the leader that made the change would have), so that they learn of
// their removal once this leader commits it.
func (r *raft) keepRemovedInformed() {
	if r.confIndex <= r.log.committed {
		return
	}
	prev, _ := r.log.confAt(r.confIndex - 1)
	for _, id := range append(slices.Clone(prev.Voters), prev.Learners...) {
		if id != r.id && !r.trk.isMember(id) {
			r.informRemoved(id, r.confIndex)
		}
	}
}

// informRemoved has the leader replicate to node id, which is no member,
// until it holds the log up to index at least and knows it committed.
func (r *raft) informRemoved(id NodeID, index uint64) {
	if r.role != Leader || id == r.id || r.trk.isMember(id) || r.trk.progress.get(id) != nil {
		return
	}
	r.trk.progress.set(id, &Progress{Next: r.log.lastIndex() + 1, LastHeard: r.ticks, learner: true, removedAt: index,
		inflights: newInflights(r.cfg.MaxInflightMsgs, r.cfg.MaxInflightBytes)})
	r.trk.ids = append(r.trk.ids, id)
	slices.Sort(r.trk.ids)
}

// removedLeader reports whether this node leads a configuration it is no
// longer part of: it still replicates until its removal commits, without
// counting itself towards any majority.
func (r *raft) removedLeader() bool {
	return r.role == Leader && !r.trk.isMember(r.id)
}

// handOver passes leadership on once the leader's own removal has
// committed: to the voter with the most of the log, at once if it has all
// of it, or as soon as it catches up. If that takes longer than an election
// timeout, tickLeader steps down regardless.
func (r *raft) handOver() {
	var best NodeID
	var bestMatch uint64
	for _, id := range r.trk.conf.Voters {
		if pr := r.trk.progress.get(id); pr != nil && (best == None || pr.Match > bestMatch) {
			best, bestMatch = id, pr.Match
		}
	}
	if best == None {
		return
	}
	r.leadTransferee = best
	r.electionElapsed = 0
	if bestMatch == r.log.lastIndex() {
		r.send(Message{Type: MsgTimeoutNow, To: best})
	}
}

// soleVoter reports whether this node alone decides: a read needs no
// heartbeat round then.
func (r *raft) soleVoter() bool {
	return len(r.trk.conf.Voters) == 1 && r.trk.conf.Voters[0] == r.id
}

func hasConfEntry(ents []Entry) bool {
	for i := range ents {
		if ents[i].Type == EntryConfChange {
			return true
		}
	}
	return false
}
