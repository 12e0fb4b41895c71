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
//
// Each node's Readys go through a pipeline shaped like the server's: take
// the Ready (its Messages leave at once), persist it (then its
// MessagesAfterPersist leave), apply it, Advance. Every stage runs the
// batches in Ready order, and a batch enters a stage only after the one
// before it; several batches may be in flight, and Step, Propose, ReadIndex
// and Tick happen between any two stages. readyNode runs one Ready through
// all the stages at once; the pipelined property tests run the stages as
// separate steps. The release points are checked where they happen: a
// message that waited for durability against what is durable, a read
// against the applied index, a leader's own match against its stable log.

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

// lastIndex is the index of the last durable entry.
func (s *stable) lastIndex() uint64 {
	if s.snap == nil {
		return 0
	}
	return s.snap.Index + uint64(len(s.ents))
}

// term is the term of the durable entry at i, if there is one.
func (s *stable) term(i uint64) (uint64, bool) {
	switch {
	case s.snap == nil || i < s.snap.Index || i > s.lastIndex():
		return 0, false
	case i == s.snap.Index:
		return s.snap.Term, true
	}
	return s.ents[i-s.snap.Index-1].Term, true
}

func (s *stable) persist(rd Ready) {
	if rd.Snapshot != nil {
		if rd.SnapshotKeepsLog {
			// A compaction: the log after the snapshot stays.
			drop := min(int(rd.Snapshot.Index-s.snap.Index), len(s.ents))
			s.ents = slices.Clone(s.ents[drop:])
		} else {
			s.ents = nil
		}
		s.snap = rd.Snapshot
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

// batch is one Ready on its way through a node's pipeline.
type batch struct {
	rd        Ready
	persisted bool
	applied   bool
	// snapData is the state machine of rd.Snapshot, stored with it.
	snapData smState
	// smAfter is the state machine once this batch is applied.
	smAfter smState
}

// maxBatchesInFlight is how many Readys a node may have taken and not yet
// advanced: the server's bound (replica.DefaultMaxInflight).
const maxBatchesInFlight = 256

// servedRead is a read released to its client, with the state machine's
// applied index at that moment.
type servedRead struct {
	ReadState
	applied uint64
}

type testNode struct {
	node  *Node
	store stable
	sm    smState
	// advanced is the state machine as of the node's applied index (the
	// last batch advanced): what a snapshot of the node captures.
	advanced smState
	// incoming holds state machine data that arrived with a MsgSnap.
	incoming map[uint64]smState
	// inflight holds the batches taken and not yet advanced, oldest first.
	inflight []*batch
	// waiting holds read states handed out whose index is not applied yet;
	// reads the ones served.
	waiting []ReadState
	reads   []servedRead
	// snaps holds this node's own snapshots, by index, for sending.
	snaps map[uint64]smState
	down  bool
	// stalled: the node's clock stops and messages to it wait in the queue
	// (a process pause, a congested link), as opposed to being lost.
	stalled bool
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
	// overlap counts what the pipeline did, so tests can show that batches
	// really overlapped.
	overlap overlapStats
	// logKeep, when set, has every node cut its in-memory log to logKeep
	// entries behind its applied index after each batch (Node.CompactLog),
	// as the replica does; a node asked for a snapshot (Ready.WantSnapshot)
	// takes one when the batch that asked is done.
	logKeep uint64
}

type overlapStats struct {
	// maxInflight is the most batches one node had in flight at once.
	maxInflight int
	// steps counts inputs (messages, ticks) given to a node while it had a
	// batch taken and not yet advanced.
	steps int
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

// readyNode finishes whatever node id has in flight, then runs its next
// Ready through every stage at once.
func (c *cluster) readyNode(id NodeID) error {
	if err := c.drainNode(id); err != nil {
		return err
	}
	if taken, err := c.takeReady(id); !taken || err != nil {
		return err
	}
	return c.drainNode(id)
}

// readyNodeCrashing processes a Ready; with crash set, the node dies right
// after sending the messages that may leave early, before persisting.
func (c *cluster) readyNodeCrashing(id NodeID, crash bool) error {
	if !crash {
		return c.readyNode(id)
	}
	taken, err := c.takeReady(id)
	if taken {
		c.crash(id)
	}
	return err
}

// drainNode runs every batch node id has in flight through the remaining
// stages, in order.
func (c *cluster) drainNode(id NodeID) error {
	tn := c.nodes[id]
	for !tn.down && len(tn.inflight) > 0 {
		if err := c.persistNext(id); err != nil {
			return err
		}
		if err := c.applyNext(id); err != nil {
			return err
		}
		if err := c.advanceNext(id); err != nil {
			return err
		}
	}
	return nil
}

// takeReady is the first stage: it takes node id's next Ready, sends the
// messages that may leave before anything is durable, and queues the batch.
// It reports whether there was one.
func (c *cluster) takeReady(id NodeID) (bool, error) {
	tn := c.nodes[id]
	if tn.down || len(tn.inflight) >= maxBatchesInFlight || !tn.node.HasReady() {
		return false, nil
	}
	rd := tn.node.Ready()
	if c.trace != nil {
		c.trace(id, rd)
	}
	// These leave at once, so they must promise nothing not yet durable.
	for _, m := range rd.Messages {
		if err := checkPromise(&tn.store, m); err != nil {
			return false, fmt.Errorf("node %d: sent before persisting: %w", id, err)
		}
	}
	c.enqueue(rd.Messages)
	tn.waiting = append(tn.waiting, rd.ReadStates...)
	tn.inflight = append(tn.inflight, &batch{rd: rd})
	c.overlap.maxInflight = max(c.overlap.maxInflight, len(tn.inflight))
	return true, nil
}

// persistNext makes node id's oldest unpersisted batch durable, then sends
// the messages that waited for it.
func (c *cluster) persistNext(id NodeID) error {
	tn := c.nodes[id]
	k := slices.IndexFunc(tn.inflight, func(b *batch) bool { return !b.persisted })
	if tn.down || k < 0 {
		return nil
	}
	b := tn.inflight[k]
	tn.store.persist(b.rd)
	if s := b.rd.Snapshot; s != nil && s.Index > 0 {
		data, ok := tn.incoming[s.Index]
		if !ok {
			return fmt.Errorf("node %d: snapshot %d installed without its data", id, s.Index)
		}
		b.snapData = data
		tn.store.snapData = data
		tn.snaps[s.Index] = data
	}
	b.persisted = true
	for _, m := range b.rd.MessagesAfterPersist {
		if err := checkPromise(&tn.store, m); err != nil {
			return fmt.Errorf("node %d: %w", id, err)
		}
		if err := c.checker.ObserveSent(m); err != nil {
			return err
		}
	}
	c.enqueue(b.rd.MessagesAfterPersist)
	return nil
}

// checkPromise is the release point of a message: what it promises must be
// on stable storage when it leaves. A granted vote needs the vote; an
// acknowledged append needs the entries, unless a later term (in the same
// write) has already replaced them, as it could have on a node that wrote
// the ack and then the newer entries.
func checkPromise(st *stable, m Message) error {
	switch {
	case m.Reject:
	case m.Type == MsgVoteResp:
		if st.hs.Term < m.Term || (st.hs.Term == m.Term && st.hs.Vote != m.To) {
			return fmt.Errorf("vote for %d in term %d sent, but the durable hard state is %+v", m.To, m.Term, st.hs)
		}
	case m.Type == MsgAppResp:
		if st.lastIndex() < m.Index && st.hs.Term <= m.Term {
			return fmt.Errorf("append to %d acknowledged in term %d, but the durable log ends at %d in term %d",
				m.Index, m.Term, st.lastIndex(), st.hs.Term)
		}
	}
	return nil
}

// applyNext applies node id's oldest unapplied batch, if it is persisted,
// and serves the reads whose index the state machine has now reached.
func (c *cluster) applyNext(id NodeID) error {
	tn := c.nodes[id]
	k := slices.IndexFunc(tn.inflight, func(b *batch) bool { return !b.applied })
	if tn.down || k < 0 || !tn.inflight[k].persisted {
		return nil
	}
	b := tn.inflight[k]
	if s := b.rd.Snapshot; s != nil && s.Index > 0 {
		tn.sm = b.snapData
	}
	for _, e := range b.rd.CommittedEntries {
		if e.Index != tn.sm.index+1 {
			return fmt.Errorf("node %d: applying %d after %d", id, e.Index, tn.sm.index)
		}
		tn.sm = tn.sm.apply(e)
		if h, ok := c.applied[e.Index]; ok && h != tn.sm.hash {
			return fmt.Errorf("node %d: state after applying %d differs from another node's", id, e.Index)
		}
		c.applied[e.Index] = tn.sm.hash
	}
	b.applied = true
	b.smAfter = tn.sm
	c.serveReads(tn)
	return nil
}

// serveReads releases the waiting reads whose index is applied: the release
// point of a read.
func (c *cluster) serveReads(tn *testNode) {
	n := 0
	for _, rs := range tn.waiting {
		if rs.Index <= tn.sm.index {
			tn.reads = append(tn.reads, servedRead{ReadState: rs, applied: tn.sm.index})
			continue
		}
		tn.waiting[n] = rs
		n++
	}
	tn.waiting = tn.waiting[:n]
}

// advanceNext tells node id that its oldest batch is done, if it is
// applied.
func (c *cluster) advanceNext(id NodeID) error {
	tn := c.nodes[id]
	if tn.down || len(tn.inflight) == 0 || !tn.inflight[0].applied {
		return nil
	}
	b := tn.inflight[0]
	tn.inflight = tn.inflight[1:]
	tn.node.Advance(b.rd)
	tn.advanced = b.smAfter
	if b.rd.WantSnapshot {
		if err := c.snapshot(id); err != nil {
			return err
		}
	}
	if applied := tn.advanced.index; c.logKeep > 0 && applied > c.logKeep {
		tn.node.CompactLog(applied - c.logKeep)
	}
	return c.observe(id)
}

// countOverlap notes an input given to a node with batches in flight.
func (c *cluster) countOverlap(tn *testNode) {
	if len(tn.inflight) > 0 {
		c.overlap.steps++
	}
}

// observe checks node id after an input: the Checker's invariants, and that
// a leader counts itself for commit only with entries it has made durable.
func (c *cluster) observe(id NodeID) error {
	tn := c.nodes[id]
	if err := c.checker.Observe(tn.node); err != nil {
		return err
	}
	return checkDurableMatch(tn)
}

// checkDurableMatch is the release point of a leader's own acknowledgement:
// its Match (what it counts towards a commit for itself) must be on its
// stable storage, the very entry it holds at that index.
func checkDurableMatch(tn *testNode) error {
	if tn.down {
		return nil
	}
	s := tn.node.Status()
	k := slices.IndexFunc(s.Progress, func(p PeerProgress) bool { return p.ID == s.ID })
	if k < 0 || s.Progress[k].Match == 0 {
		return nil
	}
	match := s.Progress[k].Match
	if snap := tn.store.snap; snap != nil && match < snap.Index {
		// Compacted into the durable snapshot: durable, its term gone.
		// A leader's own acknowledgement can lag its compaction when the
		// others committed and it applied before its ack came back.
		return nil
	}
	durable, ok := tn.store.term(match)
	if !ok {
		return fmt.Errorf("leader %d: own match %d beyond its durable log (last index %d)", s.ID, match, tn.store.lastIndex())
	}
	if t, err := tn.node.Term(match); err == nil && t != durable {
		return fmt.Errorf("leader %d: own match %d has term %d in its log but %d on stable storage", s.ID, match, t, durable)
	}
	return nil
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

// deliver hands message k of the queue to its recipient, unless that one
// is stalled.
func (c *cluster) deliver(k int) error {
	m := c.queue[k]
	if c.held(m) {
		return nil
	}
	c.queue = append(c.queue[:k], c.queue[k+1:]...)
	return c.deliverMsg(m)
}

// burst delivers everything queued now, in order, but what waits for a
// stalled node.
func (c *cluster) burst() error {
	q := c.queue
	c.queue = nil
	for i, m := range q {
		if c.held(m) {
			c.queue = append(c.queue, m)
			continue
		}
		if err := c.deliverMsg(m); err != nil {
			c.queue = append(c.queue, q[i+1:]...)
			return err
		}
	}
	return nil
}

func (c *cluster) held(m Message) bool {
	to := c.nodes[m.To]
	return to != nil && to.stalled && !to.down
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
	c.countOverlap(to)
	if err := to.node.Step(m); err != nil {
		return fmt.Errorf("node %d rejected %v: %w", m.To, m, err)
	}
	if from := c.nodes[m.From]; m.Type == MsgSnap && !from.down {
		// The stream finished: the runtime reports it, ack or no ack.
		from.node.ReportSnapshot(m.To, true)
	}
	return c.observe(m.To)
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
	if tn.down || tn.stalled {
		return nil
	}
	c.countOverlap(tn)
	tn.node.Tick()
	return c.observe(id)
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

// crash stops a node: whatever it had not persisted is gone, and so are
// the batches in its pipeline and the reads it had not served.
func (c *cluster) crash(id NodeID) {
	tn := c.nodes[id]
	tn.down = true
	tn.inflight, tn.waiting = nil, nil
	tn.snaps = map[uint64]smState{}
	if tn.store.snap != nil && tn.store.snap.Index > 0 {
		tn.snaps[tn.store.snap.Index] = tn.store.snapData
	}
}

// restart brings a crashed node back from exactly its stable storage.
func (c *cluster) restart(id NodeID) error { return c.restartHoled(id, false) }

// restartWithHoles brings a crashed node back with entries from..to of its
// stable log known by index and term only, as a repair that kept its log
// around damaged WAL records would (the stable copy keeps its data, as the
// damaged WAL does not, so a later restart without holes is also possible).
func (c *cluster) restartWithHoles(id NodeID, from, to uint64) error {
	var holes []uint64
	for i := from; i <= to; i++ {
		holes = append(holes, i)
	}
	return c.restartWithHoleList(id, holes...)
}

// restartWithHoleList is restartWithHoles for any set of indexes.
func (c *cluster) restartWithHoleList(id NodeID, holes ...uint64) error {
	return c.restartHoled(id, false, holes...)
}

// restartWithCommittedHoles is restartWithHoles for committed entries whose
// terms were lost too (term 0).
func (c *cluster) restartWithCommittedHoles(id NodeID, from, to uint64) error {
	var holes []uint64
	for i := from; i <= to; i++ {
		holes = append(holes, i)
	}
	return c.restartHoled(id, true, holes...)
}

func (c *cluster) restartHoled(id NodeID, termsLost bool, holes ...uint64) error {
	tn := c.nodes[id]
	cfg := c.cfg(id)
	st := tn.store.state()
	for i := range st.Entries {
		if e := &st.Entries[i]; slices.Contains(holes, e.Index) {
			e.Type, e.Data = EntryNormal, nil
			if termsLost {
				e.Term = 0
			}
			st.Holes = append(st.Holes, e.Index)
		}
	}
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
	tn.down, tn.stalled = false, false
	tn.advanced = tn.sm
	c.checker.Restarted(id)
	return c.observe(id)
}

// snapshot has node id capture its state machine as of its applied index
// and compact its log.
func (c *cluster) snapshot(id NodeID) error {
	tn := c.nodes[id]
	applied := tn.node.Status().Applied
	if tn.down || applied <= tn.node.r.log.snapFile {
		return nil
	}
	if tn.advanced.index != applied {
		return fmt.Errorf("node %d: state machine advanced to %d, node says applied %d", id, tn.advanced.index, applied)
	}
	meta, err := tn.node.SnapshotTaken(applied)
	if err != nil {
		return err
	}
	tn.snaps[meta.Index] = tn.advanced
	// The snapshot is durable, and the log it replaces can go.
	drop := min(int(meta.Index-tn.store.snap.Index), len(tn.store.ents))
	tn.store.ents = slices.Clone(tn.store.ents[drop:])
	tn.store.snap = &meta
	tn.store.snapData = tn.advanced
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

// heal reconnects every link and resumes every stalled node.
func (c *cluster) heal() {
	c.cut = make(map[NodeID]map[NodeID]bool)
	for _, tn := range c.nodes {
		tn.stalled = false
	}
}

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

// checkDurableMatches runs checkDurableMatch on every node.
func (c *cluster) checkDurableMatches() error {
	for _, id := range c.ids {
		if err := checkDurableMatch(c.nodes[id]); err != nil {
			return err
		}
	}
	return nil
}
