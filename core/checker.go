package core

import (
	"fmt"
	"hash/fnv"
	"slices"
)

// Checker verifies Raft's safety properties across a cluster. A driver (a
// test, the simulator) calls Observe for a node after every input it gives
// that node, ObserveSent for every message a node actually sends, and
// Restarted when a node comes back from a crash. Any error is a violation.
//
// It checks Election Safety (one leader per term), Leader Append-Only,
// Log Matching (equal index and term imply equal entries and equal
// predecessor terms), Leader Completeness (a new leader holds every entry
// committed so far), State Machine Safety (one entry per committed index,
// cluster-wide), per node that term and commit never go back and applied
// never passes commit, and that no node grants two votes in one term, even
// across restarts.
type Checker struct {
	leaders   map[uint64]NodeID
	votes     map[termVote]NodeID
	committed []digest // committed[i-1] is the entry committed at index i
	// committedBy[i-1] is the term of the node first seen with index i
	// committed: the term in which it was committed, or a later one.
	committedBy []uint64
	// byIndex[i-1] is the first entry seen at index i, nearly always the
	// only one; entries of other terms at the same index go to positions.
	byIndex   []termDigest
	positions map[position]posDigest
	// nodes is searched in order rather than hashed: a cluster has a few
	// members, and Observe runs after every input to every node. Values,
	// not pointers, so the search reads one array.
	nodes []nodeWatch
}

type termVote struct {
	voter NodeID
	term  uint64
}

type position struct{ index, term uint64 }

type digest struct {
	term uint64
	data uint64
}

type posDigest struct {
	data     uint64
	prevTerm uint64
}

type termDigest struct {
	known bool
	term  uint64
	posDigest
}

type nodeWatch struct {
	id           NodeID
	term, commit uint64
	// leaderTerm, leaderLast, leaderLastTerm remember the log end of this
	// node while it leads, to check that a leader only appends.
	leaderTerm, leaderLast, leaderLastTerm uint64
	// checkedTo is how far the log has been verified against positions,
	// valid while the log's rewrite count is still rewrites.
	checkedTo uint64
	rewrites  uint64
}

// NewChecker returns a Checker that has seen nothing.
func NewChecker() *Checker {
	return &Checker{
		leaders:   make(map[uint64]NodeID),
		votes:     make(map[termVote]NodeID),
		positions: make(map[position]posDigest),
	}
}

// Restarted forgets what was true only for the node's previous life (its
// in-memory term and commit may legitimately restart lower). Votes cast and
// entries committed are remembered.
func (c *Checker) Restarted(id NodeID) {
	c.nodes = slices.DeleteFunc(c.nodes, func(w nodeWatch) bool { return w.id == id })
}

func (c *Checker) watch(id NodeID) *nodeWatch {
	for i := range c.nodes {
		if c.nodes[i].id == id {
			return &c.nodes[i]
		}
	}
	return nil
}

// ObserveSent records a message as it leaves its sender.
func (c *Checker) ObserveSent(m Message) error {
	if m.Type != MsgVoteResp || m.Reject {
		return nil
	}
	k := termVote{voter: m.From, term: m.Term}
	if prev, ok := c.votes[k]; ok && prev != m.To {
		return fmt.Errorf("node %d voted for %d and for %d in term %d", m.From, prev, m.To, m.Term)
	}
	c.votes[k] = m.To
	return nil
}

func entryDigest(e Entry) uint64 {
	h := fnv.New64a()
	h.Write([]byte{byte(e.Type)})
	h.Write(e.Data)
	return h.Sum64()
}

// Observe checks one node's state against what the Checker has seen.
func (c *Checker) Observe(n *Node) error {
	r, l := n.r, n.r.log
	w := c.watch(r.id)
	if w == nil {
		c.nodes = append(c.nodes, nodeWatch{id: r.id, rewrites: l.rewrites, checkedTo: l.snap.Index})
		w = &c.nodes[len(c.nodes)-1]
	}
	if r.term < w.term {
		return fmt.Errorf("node %d: term went back from %d to %d", r.id, w.term, r.term)
	}
	if l.committed < w.commit {
		return fmt.Errorf("node %d: commit went back from %d to %d", r.id, w.commit, l.committed)
	}
	if l.applied > l.committed {
		return fmt.Errorf("node %d: applied %d beyond commit %d", r.id, l.applied, l.committed)
	}
	if l.committed > l.lastIndex() {
		return fmt.Errorf("node %d: commit %d beyond last index %d", r.id, l.committed, l.lastIndex())
	}
	if h := l.holes; !h.Empty() && r.role != Follower {
		return fmt.Errorf("node %d: %s with holes %v in its log", r.id, r.role, h)
	}
	if err := c.checkLog(r, w); err != nil {
		return err
	}
	if err := c.checkCommitted(r, w); err != nil {
		return err
	}
	if r.role == Leader {
		if err := c.checkLeader(r, w); err != nil {
			return err
		}
	}
	w.term, w.commit = r.term, l.committed
	return nil
}

// checkLog verifies Log Matching for the entries written since last time.
func (c *Checker) checkLog(r *raft, w *nodeWatch) error {
	l := r.log
	from := w.checkedTo + 1
	if l.rewrites != w.rewrites {
		if l.rewrites == w.rewrites+1 && l.rewriteFrom > 0 {
			from = min(from, l.rewriteFrom)
		} else {
			from = l.firstIndex()
		}
		w.rewrites = l.rewrites
	}
	from = max(from, l.firstIndex())
	for i := from; i <= l.lastIndex(); i++ {
		if l.holes.Has(i) || l.holes.Has(i-1) {
			// No data to compare yet (nor, after a committed hole of
			// unknown term, the term before): checked once filled (a
			// rewrite).
			continue
		}
		e := l.entries[i-l.snap.Index-1]
		prevTerm, _ := l.term(i - 1)
		d := posDigest{data: entryDigest(e), prevTerm: prevTerm}
		if seen, ok := c.seen(i, e.Term, d); ok && seen != d {
			return fmt.Errorf("node %d: Log Matching violated at index %d term %d", r.id, i, e.Term)
		}
	}
	w.checkedTo = l.lastIndex()
	return nil
}

// seen returns what was first seen at index i in term t, or records d
// there and returns false.
func (c *Checker) seen(i, t uint64, d posDigest) (posDigest, bool) {
	if n := int(i); n > len(c.byIndex) {
		c.byIndex = slices.Grow(c.byIndex, n-len(c.byIndex))[:n]
	}
	switch first := &c.byIndex[i-1]; {
	case !first.known:
		*first = termDigest{known: true, term: t, posDigest: d}
		return posDigest{}, false
	case first.term == t:
		return first.posDigest, true
	}
	p := position{index: i, term: t}
	if seen, ok := c.positions[p]; ok {
		return seen, true
	}
	c.positions[p] = d
	return posDigest{}, false
}

// checkCommitted verifies that the node's committed entries agree with every
// entry any node has committed at the same index.
func (c *Checker) checkCommitted(r *raft, w *nodeWatch) error {
	l := r.log
	for i := w.commit + 1; i <= l.committed; i++ {
		var d digest
		switch t, ok := l.term(i); {
		case l.holes.Has(i):
			// Only the term is known for a hole (and not even that for a
			// committed hole of unknown term, 0).
			if int(i) <= len(c.committed) && t != 0 && c.committed[i-1].term != t {
				return fmt.Errorf("node %d: hole at %d has term %d, committed term is %d", r.id, i, t, c.committed[i-1].term)
			}
			continue
		case i > l.snap.Index:
			e := l.entries[i-l.snap.Index-1]
			d = digest{term: e.Term, data: entryDigest(e)}
		case i == l.snap.Index && ok:
			// Only the term is known for a snapshot's last entry.
			if int(i) <= len(c.committed) && c.committed[i-1].term != t {
				return fmt.Errorf("node %d: snapshot at %d has term %d, committed term is %d", r.id, i, t, c.committed[i-1].term)
			}
			continue
		default:
			continue
		}
		switch {
		case int(i) <= len(c.committed):
			if c.committed[i-1] != d {
				return fmt.Errorf("node %d: State Machine Safety violated: committed entry at %d (term %d) differs from one committed before (term %d)",
					r.id, i, d.term, c.committed[i-1].term)
			}
		case int(i) == len(c.committed)+1:
			c.committed = append(c.committed, d)
			c.committedBy = append(c.committedBy, r.term)
		default:
			// A gap: the node learned a commit beyond what anyone recorded
			// (e.g. after a snapshot). Record it once the prefix is known.
		}
	}
	return nil
}

func (c *Checker) checkLeader(r *raft, w *nodeWatch) error {
	l := r.log
	// Once this life of the node was seen leading the term, the term's
	// leader is recorded as r.id: a second leader would have failed here.
	if w.leaderTerm != r.term {
		if lead, ok := c.leaders[r.term]; ok && lead != r.id {
			return fmt.Errorf("election safety violated: nodes %d and %d both lead term %d", lead, r.id, r.term)
		}
		c.leaders[r.term] = r.id
	}
	if w.leaderTerm == r.term {
		if w.leaderLast > l.lastIndex() {
			return fmt.Errorf("leader append-only violated: leader %d's log shrank from %d to %d", r.id, w.leaderLast, l.lastIndex())
		}
		if t, ok := l.term(w.leaderLast); ok && t != w.leaderLastTerm {
			return fmt.Errorf("leader append-only violated: leader %d overwrote index %d", r.id, w.leaderLast)
		}
	} else {
		// Newly elected: it must hold every entry committed in an earlier
		// term. (A leader of an older term, elected on votes that reached
		// it late, may lack what later terms committed; it cannot commit.)
		for i := l.firstIndex(); i <= uint64(len(c.committed)); i++ {
			if c.committedBy[i-1] >= r.term {
				continue
			}
			t, ok := l.term(i)
			if !ok || t != c.committed[i-1].term {
				return fmt.Errorf("leader completeness violated: leader %d of term %d lacks committed entry %d", r.id, r.term, i)
			}
		}
	}
	w.leaderTerm, w.leaderLast, w.leaderLastTerm = r.term, l.lastIndex(), l.lastTerm()
	return nil
}
