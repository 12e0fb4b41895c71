package core

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
)

// This file is a small in-memory driver for core: nodes with perfect
// storage, a message queue the test controls, and a state machine that is a
// running hash of what it applied. Unit, property and benchmark tests build
// on it.

// stable is a node's durable storage: exactly what its Readys asked to
// persist, plus the state machine bytes of its latest snapshot.
type stable struct {
	hs       HardState
	snap     *SnapshotMeta
	snapData smState
	ents     []Entry
}

func (s *stable) state() PersistentState {
	return PersistentState{HardState: s.hs, Snapshot: s.snap, Entries: slices.Clone(s.ents)}
}

func (s *stable) persist(rd Ready) {
	if rd.Snapshot != nil {
		s.snap = rd.Snapshot
		s.ents = nil
	}
	if len(rd.Entries) > 0 {
		first := rd.Entries[0].Index
		keep := int(first - s.snap.Index - 1)
		s.ents = append(s.ents[:min(keep, len(s.ents)):min(keep, len(s.ents))], rd.Entries...)
	}
	if !rd.HardState.IsEmpty() {
		s.hs = rd.HardState
	}
}

// smState is the test state machine: how many entries it applied, up to
// which index, and a hash chain over their data.
type smState struct {
	index uint64
	count uint64
	hash  uint64
}

func (s smState) apply(e Entry) smState {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], s.hash)
	h.Write(b[:])
	h.Write(e.Data)
	s.hash = h.Sum64()
	s.index = e.Index
	if len(e.Data) > 0 {
		s.count++
	}
	return s
}

type testNode struct {
	node  *Node
	store stable
	sm    smState
	// incoming holds state machine data that arrived with a MsgSnap.
	incoming map[uint64]smState
	reads    []ReadState
	// snaps holds this node's own snapshots, by index, for sending.
	snaps map[uint64]smState
	down  bool
}

type cluster struct {
	// ids is every node ever started, initial the bootstrap voters.
	ids     []NodeID
	initial []NodeID
	nodes   map[NodeID]*testNode
	queue   []Message
	checker *Checker
	// cut[a][b] drops messages from a to b.
	cut  map[NodeID]map[NodeID]bool
	cfg  func(NodeID) Config
	seed uint64
	// applied maps an index to the state machine hash after applying it,
	// across the whole cluster (State Machine Safety at the state level).
	applied map[uint64]uint64
	// trace receives every Ready, for determinism checks.
	trace func(NodeID, Ready)
	// rewrite, if set, may alter a message in flight (as a network that cut
	// an append short would).
	rewrite func(*Message)
}

func newCluster(n int, seed uint64, tweak func(*Config)) (*cluster, error) {
	c := &cluster{nodes: make(map[NodeID]*testNode), checker: NewChecker(),
		cut: make(map[NodeID]map[NodeID]bool), seed: seed, applied: make(map[uint64]uint64)}
	for i := 1; i <= n; i++ {
		c.ids = append(c.ids, NodeID(i))
	}
	c.initial = slices.Clone(c.ids)
	c.cfg = func(id NodeID) Config {
		cfg := Config{ID: id, Peers: c.initial, ElectionTick: 10, HeartbeatTick: 1, Seed: seed}
		if !slices.Contains(c.initial, id) {
			cfg.Peers, cfg.Join = nil, true
		}
		if tweak != nil {
			tweak(&cfg)
		}
		return cfg
	}
	for _, id := range c.ids {
		nd, err := NewNode(c.cfg(id), PersistentState{})
		if err != nil {
			return nil, err
		}
		c.nodes[id] = &testNode{node: nd, incoming: map[uint64]smState{}, snaps: map[uint64]smState{}}
	}
	return c, nil
}

func (c *cluster) node(id NodeID) *Node { return c.nodes[id].node }

// join starts a new, empty node that waits to be added to the cluster.
func (c *cluster) join(id NodeID) error {
	nd, err := NewNode(c.cfg(id), PersistentState{})
	if err != nil {
		return err
	}
	c.nodes[id] = &testNode{node: nd, incoming: map[uint64]smState{}, snaps: map[uint64]smState{}}
	c.ids = append(c.ids, id)
	slices.Sort(c.ids)
	return nil
}

// changeConf proposes a membership change at the current leader.
func (c *cluster) changeConf(typ ConfChangeType, id NodeID) (uint64, error) {
	lead := c.leader()
	if lead == None {
		return 0, fmt.Errorf("no leader")
	}
	i, _, err := c.node(lead).ProposeConfChange(ConfChange{Type: typ, Node: id})
	return i, err
}

// members is the membership the current leader has in force.
func (c *cluster) members() []NodeID {
	lead := c.leader()
	if lead == None {
		return c.ids
	}
	conf := c.node(lead).Conf()
	return sortedIDs(append(slices.Clone(conf.Voters), conf.Learners...))
}

// ready processes every node's pending Ready, in the order the contract
// prescribes, and returns the first invariant violation.
func (c *cluster) ready() error {
	for _, id := range c.ids {
		if err := c.readyNode(id); err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) readyNode(id NodeID) error { return c.readyNodeCrashing(id, false) }

// readyNodeCrashing processes a Ready; with crash set, the node dies right
// after sending the messages that may leave early, before persisting.
func (c *cluster) readyNodeCrashing(id NodeID, crash bool) error {
	tn := c.nodes[id]
	if tn.down || !tn.node.HasReady() {
		return nil
	}
	rd := tn.node.Ready()
	if c.trace != nil {
		c.trace(id, rd)
	}
	c.enqueue(rd.Messages)
	if crash {
		c.crash(id)
		return nil
	}
	tn.store.persist(rd)
	if rd.Snapshot != nil && rd.Snapshot.Index > 0 {
		data, ok := tn.incoming[rd.Snapshot.Index]
		if !ok {
			return fmt.Errorf("node %d: snapshot %d installed without its data", id, rd.Snapshot.Index)
		}
		tn.sm = data
		tn.store.snapData = data
		tn.snaps[rd.Snapshot.Index] = data
	}
	for _, m := range rd.MessagesAfterPersist {
		if err := c.checker.ObserveSent(m); err != nil {
			return err
		}
	}
	c.enqueue(rd.MessagesAfterPersist)
	for _, e := range rd.CommittedEntries {
		if e.Index != tn.sm.index+1 {
			return fmt.Errorf("node %d: applying %d after %d", id, e.Index, tn.sm.index)
		}
		tn.sm = tn.sm.apply(e)
		if h, ok := c.applied[e.Index]; ok && h != tn.sm.hash {
			return fmt.Errorf("node %d: state after applying %d differs from another node's", id, e.Index)
		}
		c.applied[e.Index] = tn.sm.hash
	}
	tn.reads = append(tn.reads, rd.ReadStates...)
	tn.node.Advance(rd)
	return c.checker.Observe(tn.node)
}

func (c *cluster) enqueue(ms []Message) {
	for _, m := range ms {
		if m.Type == MsgSnap {
			// The runtime ships the snapshot bytes beside the metadata.
			m.Snapshot = &SnapshotMeta{Index: m.Snapshot.Index, Term: m.Snapshot.Term, Conf: m.Snapshot.Conf}
		}
		c.queue = append(c.queue, m)
	}
}

// deliver hands message k of the queue to its recipient.
func (c *cluster) deliver(k int) error {
	m := c.queue[k]
	c.queue = append(c.queue[:k], c.queue[k+1:]...)
	return c.deliverMsg(m)
}

// lost tells the sender of a snapshot that it did not arrive, as a real
// runtime's snapshot stream would.
func (c *cluster) lost(m Message) {
	if from := c.nodes[m.From]; m.Type == MsgSnap && from != nil && !from.down {
		from.node.ReportSnapshot(m.To, false)
	}
}

func (c *cluster) deliverMsg(m Message) error {
	to := c.nodes[m.To]
	if to == nil || to.down || c.cut[m.From][m.To] {
		c.lost(m)
		return nil
	}
	if c.rewrite != nil {
		c.rewrite(&m)
	}
	if m.Type == MsgSnap {
		from := c.nodes[m.From]
		data, ok := from.snaps[m.Snapshot.Index]
		if !ok {
			// The sender crashed and lost it: the send fails.
			c.lost(m)
			return nil
		}
		to.incoming[m.Snapshot.Index] = data
	}
	if err := to.node.Step(m); err != nil {
		return fmt.Errorf("node %d rejected %v: %w", m.To, m, err)
	}
	if from := c.nodes[m.From]; m.Type == MsgSnap && !from.down {
		// The stream finished: the runtime reports it, ack or no ack.
		from.node.ReportSnapshot(m.To, true)
	}
	return c.checker.Observe(to.node)
}

// deliverAll delivers queued messages (and processes Readys) until the
// network is quiet or limit deliveries happened.
func (c *cluster) deliverAll(limit int) error {
	for i := 0; i < limit; i++ {
		if err := c.ready(); err != nil {
			return err
		}
		if len(c.queue) == 0 {
			return nil
		}
		if err := c.deliver(0); err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) tick(id NodeID) error {
	tn := c.nodes[id]
	if tn.down {
		return nil
	}
	tn.node.Tick()
	return c.checker.Observe(tn.node)
}

func (c *cluster) tickAll() error {
	for _, id := range c.ids {
		if err := c.tick(id); err != nil {
			return err
		}
	}
	return nil
}

// stabilize ticks everybody and delivers everything until pred holds, for
// at most ticks ticks.
func (c *cluster) stabilize(ticks int, pred func() bool) error {
	for i := 0; i < ticks; i++ {
		if err := c.deliverAll(100000); err != nil {
			return err
		}
		if pred() {
			return nil
		}
		if err := c.tickAll(); err != nil {
			return err
		}
	}
	if err := c.deliverAll(100000); err != nil {
		return err
	}
	if !pred() {
		return fmt.Errorf("condition not reached within %d ticks", ticks)
	}
	return nil
}

func (c *cluster) leader() NodeID {
	var lead NodeID
	var term uint64
	for _, id := range c.ids {
		tn := c.nodes[id]
		if s := tn.node.Status(); !tn.down && s.Role == Leader && s.HardState.Term >= term {
			lead, term = id, s.HardState.Term
		}
	}
	return lead
}

func (c *cluster) electLeader() (NodeID, error) {
	err := c.stabilize(200, func() bool { return c.leader() != None })
	return c.leader(), err
}

// crash stops a node: whatever it had not persisted is gone.
func (c *cluster) crash(id NodeID) {
	tn := c.nodes[id]
	tn.down = true
	tn.snaps = map[uint64]smState{}
	if tn.store.snap != nil && tn.store.snap.Index > 0 {
		tn.snaps[tn.store.snap.Index] = tn.store.snapData
	}
}

// restart brings a crashed node back from exactly its stable storage.
func (c *cluster) restart(id NodeID) error {
	tn := c.nodes[id]
	cfg := c.cfg(id)
	st := tn.store.state()
	tn.sm = smState{}
	if st.Snapshot != nil {
		tn.sm = tn.store.snapData
		cfg.Applied = st.Snapshot.Index
	}
	nd, err := NewNode(cfg, st)
	if err != nil {
		return err
	}
	tn.node = nd
	tn.down = false
	c.checker.Restarted(id)
	return c.checker.Observe(nd)
}

// snapshot has node id capture its state machine and compact its log.
func (c *cluster) snapshot(id NodeID) error {
	tn := c.nodes[id]
	applied := tn.node.Status().Applied
	if tn.down || applied <= tn.node.r.log.snap.Index {
		return nil
	}
	if tn.sm.index != applied {
		return fmt.Errorf("node %d: state machine at %d, node says applied %d", id, tn.sm.index, applied)
	}
	meta, err := tn.node.SnapshotTaken(applied)
	if err != nil {
		return err
	}
	tn.snaps[meta.Index] = tn.sm
	// The snapshot is durable, and the log it replaces can go.
	drop := min(int(meta.Index-tn.store.snap.Index), len(tn.store.ents))
	tn.store.ents = slices.Clone(tn.store.ents[drop:])
	tn.store.snap = &meta
	tn.store.snapData = tn.sm
	return nil
}

func (c *cluster) isolate(id NodeID) {
	for _, o := range c.ids {
		if o != id {
			c.setCut(id, o, true)
			c.setCut(o, id, true)
		}
	}
}

func (c *cluster) heal() { c.cut = make(map[NodeID]map[NodeID]bool) }

func (c *cluster) setCut(from, to NodeID, v bool) {
	if c.cut[from] == nil {
		c.cut[from] = make(map[NodeID]bool)
	}
	c.cut[from][to] = v
}

// propose proposes data at the current leader and returns where it went.
func (c *cluster) propose(data string) (uint64, uint64, error) {
	lead := c.leader()
	if lead == None {
		return 0, 0, fmt.Errorf("no leader")
	}
	return c.node(lead).Propose([]byte(data))
}

// committedEverywhere reports whether every member (of the leader's
// configuration) has applied index.
func (c *cluster) committedEverywhere(index uint64) bool {
	for _, id := range c.members() {
		tn := c.nodes[id]
		if tn.down || tn.sm.index < index {
			return false
		}
	}
	return true
}
