package core

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
)

// Role is a node's part in the protocol.
type Role uint8

const (
	Follower Role = iota
	PreCandidate
	Candidate
	Leader
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "Follower"
	case PreCandidate:
		return "PreCandidate"
	case Candidate:
		return "Candidate"
	case Leader:
		return "Leader"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// transferContext marks a vote request caused by a leadership transfer:
// voters grant it even while they still hear from the old leader.
var transferContext = []byte("transfer")

// ReadState releases a ReadIndex request: once the state machine has
// applied Index, a read issued with Context sees every write that was
// acknowledged before the request was made.
type ReadState struct {
	Index   uint64
	Context []byte
}

// readRequest is a ReadIndex request waiting for a heartbeat round to
// confirm that this node is still the leader.
type readRequest struct {
	ctx   []byte
	from  NodeID
	index uint64
	// round names the read in the heartbeats sent for it. Contexts are
	// the askers' (each member numbers its own requests), so two waiting
	// reads can share one, and a round's acks must not be taken for those
	// of a read that arrived after the round was sent.
	round uint64
	// acks are the nodes that answered a heartbeat sent after the read
	// arrived (this leader first), each once.
	acks []NodeID
}

// raft is the protocol state of one node. Everything it decides to do is
// queued in msgs, msgsAfterPersist, readStates and the log, and leaves
// through Node.Ready.
type raft struct {
	id  NodeID
	cfg Config

	term uint64
	vote NodeID
	lead NodeID
	role Role
	// leadMatched is how far this follower's log is known to be the
	// leader's: the end of the last append (or snapshot) of the leader's it
	// took since the last reset. Below the vote floor a heartbeat commits
	// no further.
	leadMatched uint64
	// durableTerm is the highest term the runtime has reported persisted
	// (Advance): a candidate counts its own vote only once it is durable
	// (see campaign).
	durableTerm uint64

	log *raftLog
	trk *tracker
	// confIndex is the index of the configuration entry trk.conf comes from
	// (or of the snapshot). A node uses the latest configuration in its log,
	// committed or not; while confIndex > committed a change is pending.
	confIndex uint64
	// pendingSnapshot is a snapshot (or bootstrap configuration) accepted
	// but not yet handed out for persisting.
	pendingSnapshot *SnapshotMeta
	// pendingKeepsLog: pendingSnapshot filled holes and the log after it
	// stays (Ready.SnapshotKeepsLog).
	pendingKeepsLog bool
	// wantSnapshot asks the next Ready for a fresh snapshot
	// (Ready.WantSnapshot).
	wantSnapshot bool

	votes map[NodeID]bool

	msgs             []Message
	msgsAfterPersist []Message
	// spareMsgs are emptied message arrays the runtime handed back
	// (Node.RecycleMessages), reused so that a Ready allocates none.
	spareMsgs  [][]Message
	readStates []ReadState

	// ticks counts every Tick of this node's life; CheckQuorum compares
	// followers' LastHeard against it.
	ticks                     uint64
	electionElapsed           int
	heartbeatElapsed          int
	randomizedElectionTimeout int
	rng                       *rand.Rand

	leadTransferee NodeID

	// reads wait for a heartbeat round; pendingReads wait for the leader's
	// first commit in its term; readRound asks flush for a heartbeat round.
	reads        []readRequest
	pendingReads []readRequest
	readRound    bool
	// lastRound numbers the reads that wait for rounds, over the node's
	// whole life, so a late ack from an earlier term names none of them.
	lastRound uint64
}

func newRaft(cfg Config, st PersistentState) (*raft, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &raft{
		id:  cfg.ID,
		cfg: cfg,
		rng: rand.New(rand.NewPCG(cfg.Seed, uint64(cfg.ID))),
	}
	if st.isEmpty() {
		if len(cfg.Peers) == 0 && !cfg.Join {
			return nil, errors.New("new node with empty state needs Config.Peers to bootstrap, or Config.Join")
		}
		// A joining node starts with no members at all: it cannot campaign,
		// and learns the membership from the log the leader sends it.
		boot := SnapshotMeta{}
		if !cfg.Join {
			boot.Conf = ConfState{Voters: sortedIDs(cfg.Peers)}
		}
		r.log = newLog(boot, nil)
		r.pendingSnapshot = &boot
	} else {
		if err := st.validate(); err != nil {
			return nil, err
		}
		r.log = newLog(*st.Snapshot, append([]Entry(nil), st.Entries...))
		r.log.holes = slices.Clone(st.Holes)
		r.term, r.vote = st.HardState.Term, st.HardState.Vote
		r.durableTerm = r.term
		r.log.committed = max(st.HardState.Commit, r.log.committed)
		if cfg.Applied > r.log.committed {
			// The state machine is durable and only ever applied committed
			// entries, so its index is a lower bound on commit.
			if cfg.Applied > r.log.lastIndex() {
				return nil, fmt.Errorf("applied index %d is beyond the last log index %d", cfg.Applied, r.log.lastIndex())
			}
			r.log.committed = cfg.Applied
		}
		if cfg.Applied > r.log.applied {
			r.log.applied, r.log.applying = cfg.Applied, cfg.Applied
		}
	}
	conf, at := r.log.confAt(r.log.lastIndex())
	r.trk = newTracker(conf)
	r.confIndex = at
	r.becomeFollower(r.term, None)
	return r, nil
}

// send queues a message that may leave at once.
func (r *raft) send(m Message) {
	m.From = r.id
	if m.Term == 0 {
		m.Term = r.term
	}
	if r.msgs == nil {
		r.msgs = r.spareMessages()
	}
	r.msgs = append(r.msgs, m)
}

// sendAfterPersist queues a message that depends on this node's durable
// state (a granted vote, an acknowledged append): it leaves only once the
// Ready that carries that state has been persisted.
func (r *raft) sendAfterPersist(m Message) {
	m.From = r.id
	if m.Term == 0 {
		m.Term = r.term
	}
	if r.msgsAfterPersist == nil {
		r.msgsAfterPersist = r.spareMessages()
	}
	r.msgsAfterPersist = append(r.msgsAfterPersist, m)
}

// spareMessages is an empty array handed back by the runtime, or nil.
func (r *raft) spareMessages() []Message {
	k := len(r.spareMsgs)
	if k == 0 {
		return nil
	}
	m := r.spareMsgs[k-1]
	r.spareMsgs = r.spareMsgs[:k-1]
	return m
}

// promotable reports whether this node may campaign: it is a voter in its
// latest configuration — or it was one before a change that is not yet
// committed. Without the second case a node holding an uncommitted change
// that removes it could deadlock the cluster: it alone has the entry, so
// the remaining voters cannot win without its vote, which they never get
// because their logs are behind, and it would never campaign itself. As a
// candidate it still counts votes by its latest configuration; if it wins
// it commits its own removal and hands over.
func (r *raft) promotable() bool {
	if !r.reachedFloor() {
		// Its log lacks entries it once held: as leader it could not give
		// them to the others, and its votes count them still.
		return false
	}
	if !r.log.holes.Empty() {
		// Nor while it holds entries without their data: as leader it could
		// not send or apply them, and one may be a configuration change
		// it does not know of.
		return false
	}
	if r.trk.isVoter(r.id) {
		return true
	}
	if r.confIndex <= r.log.committed {
		return false
	}
	prev, _ := r.log.confAt(r.log.committed)
	_, voter := slices.BinarySearch(prev.Voters, r.id)
	return voter
}

// reachedFloor reports whether the log is back at the end it had before a
// repair dropped entries (always, when there was no repair).
func (r *raft) reachedFloor() bool {
	return LogPosition{Term: r.log.lastTerm(), Index: r.log.lastIndex()}.AtLeast(r.cfg.VoteFloor)
}

// resetRandomizedElectionTimeout draws the next timeout from
// (ElectionTick, 2·ElectionTick]. Strictly more than ElectionTick: nodes'
// tick phases differ by up to one tick, and a peer that heard the leader
// less than ElectionTick ticks ago ignores a (pre-)vote request as in its
// lease (CheckQuorum). Waiting one tick past it means the first candidate
// after a leader dies is not ignored, which costs a whole extra timeout.
func (r *raft) resetRandomizedElectionTimeout() {
	r.randomizedElectionTimeout = r.cfg.ElectionTick + 1 + r.rng.IntN(r.cfg.ElectionTick)
}

func (r *raft) reset(term uint64) {
	if r.term != term {
		r.term = term
		r.vote = None
	}
	r.lead = None
	r.leadMatched = 0
	r.electionElapsed = 0
	r.heartbeatElapsed = 0
	r.resetRandomizedElectionTimeout()
	r.leadTransferee = None
	r.votes = nil
	r.reads = nil
	r.pendingReads = nil
	r.readRound = false
}

func (r *raft) becomeFollower(term uint64, lead NodeID) {
	r.reset(term)
	r.role = Follower
	r.lead = lead
}

func (r *raft) becomePreCandidate() {
	// A pre-candidate changes neither term nor vote: that is the point.
	r.role = PreCandidate
	r.lead = None
	r.votes = make(map[NodeID]bool)
	r.electionElapsed = 0
	r.resetRandomizedElectionTimeout()
}

func (r *raft) becomeCandidate() {
	r.reset(r.term + 1)
	r.vote = r.id
	r.role = Candidate
	r.votes = make(map[NodeID]bool)
}

func (r *raft) becomeLeader() {
	r.reset(r.term)
	r.role = Leader
	r.lead = r.id
	last := r.log.lastIndex()
	// Start from the members alone: progress kept for nodes leaving under
	// an earlier leadership is stale.
	r.trk = newTracker(r.trk.conf)
	for _, id := range r.trk.ids {
		pr := &Progress{Next: last + 1, LastHeard: r.ticks, learner: !r.trk.isVoter(id),
			inflights: newInflights(r.cfg.MaxInflightMsgs, r.cfg.MaxInflightBytes)}
		if id == r.id {
			pr.Match = r.log.stable
			pr.State = StateReplicate
		}
		r.trk.progress.set(id, pr)
	}
	r.keepRemovedInformed()
	// An entry of the new term: committing it commits everything before it
	// (§5.4.2), and it tells ReadIndex when the leader knows the commit index.
	r.appendEntry(Entry{Type: EntryNormal})
}

// appendEntry adds a leader's own entry at the end of its log.
func (r *raft) appendEntry(e Entry) (uint64, uint64) {
	e.Term = r.term
	e.Index = r.log.lastIndex() + 1
	r.log.entries = append(r.log.entries, e)
	return e.Index, e.Term
}

// campaign starts a pre-vote round, or an election when preVote is false.
func (r *raft) campaign(preVote, transfer bool) {
	if !r.promotable() {
		return
	}
	var typ MessageType
	var term uint64
	if preVote {
		r.becomePreCandidate()
		typ, term = MsgPreVote, r.term+1
	} else {
		r.becomeCandidate()
		typ, term = MsgVote, r.term
	}
	r.votes[r.id] = true
	if r.trk.tally(r.votes) == voteWon {
		// A sole voter wins on its own vote. A pre-candidate moves on at
		// once; a candidate only once its term and vote are durable
		// (selfVoteDurable): leading earlier, it would append and send
		// entries in a term a crash could take back, come back in the old
		// term, win the same term again and write other entries at the
		// same indexes — two different entries at one index and term on
		// its learners.
		if preVote || r.durableTerm >= r.term {
			r.advanceCampaign()
		}
		return
	}
	var ctx []byte
	if transfer {
		ctx = transferContext
	}
	for _, id := range r.trk.conf.Voters {
		if id == r.id {
			continue
		}
		m := Message{Type: typ, To: id, Term: term, Index: r.log.lastIndex(), LogTerm: r.log.lastTerm(), Context: ctx}
		if preVote {
			r.send(m)
		} else {
			// The candidate's own vote must be durable before it can help
			// win: otherwise a crash could let it vote again in this term.
			r.sendAfterPersist(m)
		}
	}
}

// selfVoteDurable is told that the runtime persisted term: a candidate that
// won on its own vote alone may now lead.
func (r *raft) selfVoteDurable(term uint64) {
	r.durableTerm = max(r.durableTerm, term)
	if r.role == Candidate && r.durableTerm >= r.term && r.trk.tally(r.votes) == voteWon {
		r.becomeLeader()
	}
}

// advanceCampaign moves a pre-candidate that won to a real election and a
// candidate that won to leadership.
func (r *raft) advanceCampaign() {
	if r.role == PreCandidate {
		r.campaign(false, false)
	} else {
		r.becomeLeader()
	}
}

func (r *raft) tick() {
	r.ticks++
	if r.role == Leader {
		r.tickLeader()
		return
	}
	r.electionElapsed++
	if !r.log.holes.Empty() && r.ticks%uint64(r.cfg.ElectionTick) == 0 {
		r.askForHoles()
	}
	if r.promotable() && r.electionElapsed >= r.randomizedElectionTimeout {
		r.electionElapsed = 0
		r.campaign(!r.cfg.DisablePreVote, false)
	}
}

func (r *raft) tickLeader() {
	r.heartbeatElapsed++
	r.electionElapsed++
	if !r.cfg.DisableCheckQuorum && !r.trk.quorumActive(r.id, r.ticks, uint64(r.cfg.ElectionTick)) {
		r.becomeFollower(r.term, None)
		return
	}
	if r.electionElapsed >= r.cfg.ElectionTick {
		r.electionElapsed = 0
		// A transfer that has not finished within an election timeout has
		// failed; accept proposals again.
		r.leadTransferee = None
		if r.removedLeader() && r.confIndex <= r.log.committed {
			// Our removal is committed but the hand-over did not happen in
			// time; stop leading anyway and let the voters elect someone.
			// (Before it commits we keep leading: we are the one who will
			// tell ourselves, and everyone else, that it did.)
			r.becomeFollower(r.term, None)
			return
		}
	}
	if r.heartbeatElapsed >= r.cfg.HeartbeatTick {
		r.heartbeatElapsed = 0
		r.bcastHeartbeat()
	}
}

// step is the single entry point for messages from other nodes.
func (r *raft) step(m Message) error {
	if err := r.validate(m); err != nil {
		return err
	}
	switch m.Type {
	case MsgFetch:
		// Any member's entries do, whatever its term or role: an entry's
		// index and term say what it is.
		r.serveFetch(m)
		return nil
	case MsgFetchResp:
		r.fillFrom(m.Entries, m.Commit)
		return nil
	}
	switch {
	case m.Term > r.term:
		if m.Type == MsgVote || m.Type == MsgPreVote {
			force := bytes.Equal(m.Context, transferContext)
			inLease := !r.cfg.DisableCheckQuorum && r.lead != None && r.electionElapsed < r.cfg.ElectionTick
			if !force && inLease {
				// We heard from a leader within the election timeout: the
				// candidate is the one cut off, so refuse without moving.
				return nil
			}
		}
		switch {
		case m.Type == MsgPreVote:
			// A pre-vote asks about a future term and never moves ours.
		case m.Type == MsgPreVoteResp && !m.Reject:
			// Granted for the term we would move to; we move when we campaign.
		case m.Type == MsgApp || m.Type == MsgHeartbeat || m.Type == MsgSnap:
			r.becomeFollower(m.Term, m.From)
		default:
			r.becomeFollower(m.Term, None)
		}
	case m.Term < r.term:
		switch {
		case (m.Type == MsgApp || m.Type == MsgHeartbeat) && (!r.cfg.DisableCheckQuorum || !r.cfg.DisablePreVote):
			// A stale leader, perhaps cut off while we moved on. Tell it our
			// term so it steps down; with PreVote or CheckQuorum it would
			// otherwise never learn of it.
			r.send(Message{Type: MsgAppResp, To: m.From})
		case m.Type == MsgPreVote:
			r.send(Message{Type: MsgPreVoteResp, To: m.From, Reject: true})
		}
		return nil
	}

	switch m.Type {
	case MsgVote, MsgPreVote:
		r.handleVoteRequest(m)
		return nil
	}
	switch r.role {
	case Leader:
		r.stepLeader(m)
	case Candidate, PreCandidate:
		r.stepCandidate(m)
	default:
		r.stepFollower(m)
	}
	return nil
}

// validate rejects messages no correct peer sends, so that garbage from the
// network is an error instead of a crash or a corrupted log.
func (r *raft) validate(m Message) error {
	if m.To != r.id {
		return fmt.Errorf("message addressed to node %d delivered to node %d", m.To, r.id)
	}
	if m.From == None || m.From == r.id {
		return fmt.Errorf("message from invalid sender %d", m.From)
	}
	if m.Type < MsgApp || m.Type > MsgFetchResp {
		return fmt.Errorf("unknown message type %d", m.Type)
	}
	if m.Term == 0 {
		return fmt.Errorf("%s with term 0", m.Type)
	}
	if m.Type == MsgSnap && m.Snapshot == nil {
		return errors.New("MsgSnap without snapshot metadata")
	}
	for i, e := range m.Entries {
		if e.Index != m.Index+1+uint64(i) {
			return fmt.Errorf("%s: entry %d has index %d, expected %d", m.Type, i, e.Index, m.Index+1+uint64(i))
		}
		if e.Term > m.Term || (i > 0 && e.Term < m.Entries[i-1].Term) || (i == 0 && e.Term < m.LogTerm) {
			return fmt.Errorf("%s: entry %d has impossible term %d", m.Type, e.Index, e.Term)
		}
		if e.Type == EntryConfChange {
			if _, err := decodeConfEntry(e.Data); err != nil {
				return fmt.Errorf("%s: entry %d: %w", m.Type, e.Index, err)
			}
		} else if e.Type != EntryNormal {
			return fmt.Errorf("%s: entry %d has unknown type %d", m.Type, e.Index, e.Type)
		}
	}
	return nil
}

func (r *raft) handleVoteRequest(m Message) {
	// Either we already voted for this candidate, or we have voted for no
	// one and follow no leader in this term, or it is a pre-vote for a
	// later term (which promises nothing).
	canVote := r.vote == m.From ||
		(r.vote == None && r.lead == None) ||
		(m.Type == MsgPreVote && m.Term > r.term)
	resp := MsgVoteResp
	if m.Type == MsgPreVote {
		resp = MsgPreVoteResp
	}
	if canVote && r.log.isUpToDate(m.Index, m.LogTerm) && (LogPosition{Term: m.LogTerm, Index: m.Index}).AtLeast(r.cfg.VoteFloor) {
		if m.Type == MsgVote {
			r.electionElapsed = 0
			r.vote = m.From
		}
		// Answer in the term asked about, so a pre-candidate counts it.
		r.sendAfterPersist(Message{Type: resp, To: m.From, Term: m.Term})
		return
	}
	r.sendAfterPersist(Message{Type: resp, To: m.From, Reject: true})
}

func (r *raft) stepFollower(m Message) {
	switch m.Type {
	case MsgApp:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleAppend(m)
	case MsgHeartbeat:
		r.electionElapsed = 0
		r.lead = m.From
		commit := m.Commit
		if !r.reachedFloor() {
			// The leader sends a commit index no higher than what it
			// matched here, trusting the log the node acknowledged. Below
			// its floor the log may not be that one (the WAL lost its end,
			// and with it perhaps an overwrite of older entries): commit
			// only as far as an append of this leader's has checked it.
			commit = min(commit, r.leadMatched)
		}
		r.log.commitTo(commit)
		r.send(Message{Type: MsgHeartbeatResp, To: m.From, Context: m.Context})
	case MsgSnap:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleSnapshot(m)
	case MsgTimeoutNow:
		r.campaign(false, true)
	case MsgReadIndex:
		// A forwarded read that reached a follower: pass it on.
		if r.lead != None {
			m.To = r.lead
			m.Term = 0
			from := m.From
			r.send(m)
			r.msgs[len(r.msgs)-1].From = from
		}
	case MsgReadIndexResp:
		r.readStates = append(r.readStates, ReadState{Index: m.Index, Context: m.Context})
	}
}

func (r *raft) stepCandidate(m Message) {
	switch m.Type {
	case MsgApp, MsgHeartbeat, MsgSnap:
		// Someone won this term.
		r.becomeFollower(m.Term, m.From)
		r.stepFollower(m)
	case MsgVoteResp, MsgPreVoteResp:
		if (m.Type == MsgPreVoteResp) != (r.role == PreCandidate) {
			return
		}
		r.votes[m.From] = !m.Reject
		switch r.trk.tally(r.votes) {
		case voteWon:
			r.advanceCampaign()
		case voteLost:
			r.becomeFollower(r.term, None)
		}
	}
}

func (r *raft) stepLeader(m Message) {
	if m.Type == MsgReadIndex {
		r.leaderReadIndex(m.Context, m.From)
		return
	}
	pr := r.trk.progress.get(m.From)
	if pr == nil {
		return
	}
	pr.LastHeard = r.ticks
	switch m.Type {
	case MsgAppResp:
		r.handleAppendResponse(m, pr)
	case MsgHeartbeatResp:
		pr.probeSent = false
		if pr.State == StateReplicate && pr.Match < r.log.lastIndex() && pr.Match == pr.matchAtHeartbeat {
			pr.becomeProbe()
		}
		pr.matchAtHeartbeat = pr.Match
		if len(m.Context) > 0 {
			r.ackRead(m.Context, m.From)
		}
	}
}

func (r *raft) handleAppend(m Message) {
	// A leader of our term or a later one holds every entry committed by
	// then (Leader Completeness), the committed holes' among them.
	r.fillFrom(m.Entries, r.log.committed)
	if first := r.log.holes.First(); first > 0 && m.Index >= first {
		// The append does not reach our first hole: have the leader send
		// from there (entries, or a snapshot if it compacted them). As a
		// repair's rejection, it makes the leader forget what it matched.
		t, _ := r.log.term(first - 1)
		r.sendAfterPersist(Message{Type: MsgAppResp, To: m.From, Index: m.Index,
			Reject: true, RejectHint: first - 1, LogTerm: t, LogCut: true})
		return
	}
	if m.Index < r.log.committed {
		// Everything up to our commit index is settled; say so.
		r.ackAppend(m.From, r.log.committed)
		return
	}
	if !r.log.matchTerm(m.Index, m.LogTerm) {
		hintIndex, hintTerm := r.log.findConflictByTerm(min(m.Index, r.log.lastIndex()), m.LogTerm)
		r.sendAfterPersist(Message{Type: MsgAppResp, To: m.From, Index: m.Index,
			Reject: true, RejectHint: hintIndex, LogTerm: hintTerm, LogCut: !r.reachedFloor()})
		return
	}
	if len(m.Entries) > 0 {
		// m.Index ≥ committed, so no committed entry can be overwritten.
		rewrites := r.log.rewrites
		r.log.appendAfterMatch(m.Entries)
		if r.log.rewrites != rewrites || hasConfEntry(m.Entries) {
			// A new configuration arrived, or one was truncated away.
			r.switchConf(r.log.confAt(r.log.lastIndex()))
		}
	}
	lastNew := m.Index + uint64(len(m.Entries))
	r.leadMatched = max(r.leadMatched, lastNew)
	r.log.commitTo(min(m.Commit, lastNew))
	r.ackAppend(m.From, lastNew)
}

// fillFrom gives holes their data from ents, where an entry has a hole's
// index and term, or is at a committed hole's index and at most committed,
// what the source knows committed. A filled configuration entry is put in
// force.
func (r *raft) fillFrom(ents []Entry, committed uint64) {
	conf := false
	for _, e := range ents {
		if r.log.fill(e, committed) {
			conf = conf || e.Type == EntryConfChange
		}
	}
	if conf {
		r.switchConf(r.log.confAt(r.log.lastIndex()))
	}
}

// askForHoles asks every other member for the entries of our first run of
// holes: any that holds an entry of the same index and term holds the
// same entry; for committed holes of unknown term (LogTerm 0), any that
// knows them committed. (The runs after it are asked for once it is
// filled.)
func (r *raft) askForHoles() {
	h := r.log.holes
	t, _ := r.log.term(h[0])
	to := h[0]
	for k := 1; k < len(h) && h[k] == to+1; k++ {
		if kt, _ := r.log.term(h[k]); (kt == 0) != (t == 0) {
			break
		}
		to = h[k]
	}
	for _, id := range r.trk.ids {
		if id != r.id {
			r.send(Message{Type: MsgFetch, To: id, Index: h[0], LogTerm: t, Commit: to})
		}
	}
}

// serveFetch answers a MsgFetch with the entries m.Index..m.Commit this log
// holds, if it holds the first with the term asked (else it has nothing to
// give), up to its own first hole and one message's size.
func (r *raft) serveFetch(m Message) {
	if m.Index <= r.log.snap.Index || r.log.holes.Has(m.Index) {
		return
	}
	hi := min(m.Commit, r.log.lastIndex())
	if m.LogTerm == 0 {
		// Committed holes of unknown term: only what we know committed.
		hi = min(hi, r.log.committed)
		if m.Index > hi {
			return
		}
	} else if !r.log.matchTerm(m.Index, m.LogTerm) {
		return
	}
	for _, i := range r.log.holes {
		if i > m.Index && i <= hi {
			hi = i - 1 // up to our own first hole in the range
			break
		}
	}
	ents := r.oneMessage(r.log.slice(m.Index, hi+1))
	prevTerm, _ := r.log.term(m.Index - 1)
	r.send(Message{Type: MsgFetchResp, To: m.From, Index: m.Index - 1, LogTerm: prevTerm, Entries: ents, Commit: r.log.committed})
}

// ackAppend acknowledges that this node's log holds the leader's entries up
// to index, once the Ready carrying them is durable. LogTerm names the
// entry acknowledged, so that a checker can tell it from one that replaces
// it later; the leader does not need it.
func (r *raft) ackAppend(to NodeID, index uint64) {
	t, _ := r.log.term(index)
	r.sendAfterPersist(Message{Type: MsgAppResp, To: to, Index: index, LogTerm: t})
}

func (r *raft) handleSnapshot(m Message) {
	s := *m.Snapshot
	s.Conf = ConfState{Voters: sortedIDs(s.Conf.Voters), Learners: sortedIDs(s.Conf.Learners)}
	switch {
	case !r.log.holes.Empty() && s.Index >= r.log.holes.First() && s.Index > r.log.applied && s.Index <= r.log.lastIndex() &&
		(r.log.matchTerm(s.Index, s.Term) || s.Index <= r.log.committed):
		// It covers holes, and we hold its last entry (hence, by Log
		// Matching, the log it summarises), or know everything it
		// summarises committed: take it for the holes, keep the log after
		// it.
		r.log.restoreKeeping(s)
		r.switchConf(r.log.confAt(r.log.lastIndex()))
		r.pendingSnapshot, r.pendingKeepsLog = &s, true
		r.leadMatched = max(r.leadMatched, s.Index)
		r.ackAppend(m.From, s.Index)
	case s.Index <= r.log.committed:
		r.ackAppend(m.From, r.log.committed)
	case r.log.matchTerm(s.Index, s.Term):
		// We already hold the snapshot's last entry, hence (Log Matching)
		// everything before it: keep the log and just learn the commit.
		r.log.commitTo(s.Index)
		r.leadMatched = max(r.leadMatched, s.Index)
		r.ackAppend(m.From, s.Index)
	default:
		r.log.restore(s)
		r.trk = newTracker(s.Conf)
		r.confIndex = s.Index
		// (Not kept, whatever an earlier snapshot since the last Ready
		// said: this one replaces the log.)
		r.pendingSnapshot, r.pendingKeepsLog = &s, false
		r.leadMatched = s.Index
		r.ackAppend(m.From, s.Index)
	}
}

func (r *raft) handleAppendResponse(m Message, pr *Progress) {
	if m.Reject {
		if m.LogCut && m.RejectHint <= pr.Match {
			// A repair cut the follower's log below what it once
			// acknowledged: what it matches must be learned again. At
			// the match index itself too: the hint is the follower's
			// last entry there or below with a term no later than the
			// probe's, and a follower that lost the entry it
			// acknowledged may hold an older term's entry in its place.
			pr.forgetMatch()
		}
		next := m.RejectHint
		if m.LogTerm > 0 {
			next, _ = r.log.findConflictByTerm(m.RejectHint, m.LogTerm)
		}
		if pr.maybeDecrTo(m.Index, next) && pr.State == StateReplicate {
			pr.becomeProbe()
		}
		return
	}
	updated := pr.maybeUpdate(m.Index)
	if updated || (pr.State == StateProbe && m.Index == pr.Match) {
		switch {
		case pr.State == StateProbe:
			pr.becomeReplicate()
		case pr.State == StateSnapshot && pr.Match+1 >= r.log.firstIndex():
			pr.becomeProbe()
			pr.becomeReplicate()
		case pr.State == StateReplicate:
			pr.inflights.freeLE(m.Index)
		}
	}
	if updated {
		r.maybeCommit()
		if m.From == r.leadTransferee && pr.Match == r.log.lastIndex() {
			r.send(Message{Type: MsgTimeoutNow, To: m.From})
		}
	}
}

// maybeCommit advances the commit index to what a majority stores, but only
// by counting replicas of an entry of the current term (Figure 8: an older
// entry on a majority can still be overwritten).
func (r *raft) maybeCommit() {
	ci := r.trk.committedIndex()
	if ci <= r.log.committed {
		return
	}
	if t, _ := r.log.term(ci); t != r.term {
		return
	}
	wasInTerm := r.committedInTerm()
	r.log.commitTo(ci)
	if r.removedLeader() && r.confIndex <= ci && r.leadTransferee == None {
		r.handOver()
	}
	if !wasInTerm {
		pending := r.pendingReads
		r.pendingReads = nil
		for _, rq := range pending {
			r.serveRead(rq.ctx, rq.from)
		}
	}
}

func (r *raft) committedInTerm() bool {
	t, _ := r.log.term(r.log.committed)
	return t == r.term
}

// flush sends the appends the leader owes its followers. It runs when a
// Ready is assembled, so that every proposal made since the last Ready
// travels in the same message: that is where batching comes from.
func (r *raft) flush() {
	if r.role != Leader {
		return
	}
	for _, id := range r.trk.ids {
		if id != r.id {
			r.sendAppends(id)
		}
	}
	r.trk.dropInformed()
	if r.readRound {
		r.readRound = false
		r.bcastHeartbeat()
	}
}

// sendAppends sends to one follower as many appends as flow control allows,
// a snapshot if it needs compacted entries, or an empty append to carry a
// commit index it has not seen.
func (r *raft) sendAppends(to NodeID) {
	pr := r.trk.progress.get(to)
	for !pr.paused() {
		if pr.Next < r.log.firstIndex() {
			r.sendSnapshot(to, pr)
			return
		}
		prevIndex := pr.Next - 1
		prevTerm, _ := r.log.term(prevIndex)
		ents := r.entriesToSend(pr.Next)
		if len(ents) == 0 && pr.State == StateReplicate && pr.sentCommit >= r.log.committed {
			return
		}
		r.send(Message{Type: MsgApp, To: to, Index: prevIndex, LogTerm: prevTerm, Entries: ents, Commit: r.log.committed})
		pr.sentCommit = max(pr.sentCommit, r.log.committed)
		switch pr.State {
		case StateReplicate:
			if len(ents) == 0 {
				return
			}
			last := ents[len(ents)-1].Index
			pr.Next = last + 1
			var size uint64
			for _, e := range ents {
				size += entrySize(e)
			}
			pr.inflights.add(last, size)
		case StateProbe:
			pr.probeSent = true
			return
		}
	}
}

// entriesToSend returns the entries from next on that fit in one message
// (always at least one, however large).
func (r *raft) entriesToSend(next uint64) []Entry {
	return r.oneMessage(r.log.slice(next, r.log.lastIndex()+1))
}

// oneMessage is as many of ents, from the first, as fit in one message
// (always at least one, however large).
func (r *raft) oneMessage(ents []Entry) []Entry {
	var size uint64
	for i, e := range ents {
		size += entrySize(e)
		if size > r.cfg.MaxMsgBytes && i > 0 {
			return ents[:i]
		}
	}
	return ents
}

// followersKeepUpAfterCut reports whether a leader may cut its log up to
// index (Node.CompactLog): no follower heard from within an election
// timeout has matched less, and no snapshot on its way is older.
func (r *raft) followersKeepUpAfterCut(index uint64) bool {
	for _, id := range r.trk.ids {
		pr := r.trk.progress.get(id)
		switch {
		case id == r.id || pr == nil:
		case pr.State == StateSnapshot:
			if pr.PendingSnapshot < index {
				return false
			}
		case r.ticks-pr.LastHeard <= uint64(r.cfg.ElectionTick):
			if pr.Match < index {
				return false
			}
		}
	}
	return true
}

func (r *raft) sendSnapshot(to NodeID, pr *Progress) {
	if r.log.snapFile < r.log.snap.Index {
		// The log was cut in memory past the newest snapshot file, so
		// that file would leave the follower short of entries. Ask for a
		// fresh one, and try the follower again at its next heartbeat
		// response (asking once a round, not at every Ready).
		r.wantSnapshot = true
		if pr.State != StateProbe {
			pr.becomeProbe()
		}
		pr.probeSent = true
		return
	}
	s := r.log.snap
	s.Conf = ConfState{Voters: append([]NodeID(nil), s.Conf.Voters...), Learners: append([]NodeID(nil), s.Conf.Learners...)}
	pr.becomeSnapshot(s.Index)
	r.send(Message{Type: MsgSnap, To: to, Snapshot: &s})
}

func (r *raft) bcastHeartbeat() {
	var ctx []byte
	if n := len(r.reads); n > 0 {
		ctx = binary.BigEndian.AppendUint64(nil, r.reads[n-1].round)
	}
	for _, id := range r.trk.ids {
		if id == r.id {
			continue
		}
		pr := r.trk.progress.get(id)
		r.send(Message{Type: MsgHeartbeat, To: id, Commit: min(pr.Match, r.log.committed), Context: ctx})
	}
}

func (r *raft) propose(typ EntryType, data []byte) (uint64, uint64, error) {
	if r.role != Leader {
		return 0, 0, &ErrNotLeader{Leader: r.lead}
	}
	if r.leadTransferee != None {
		return 0, 0, ErrTransferring
	}
	i, t := r.appendEntry(Entry{Type: typ, Data: data})
	return i, t, nil
}

func (r *raft) readIndex(ctx []byte) error {
	if r.role == Leader {
		r.leaderReadIndex(ctx, r.id)
		return nil
	}
	if r.lead == None {
		return &ErrNotLeader{}
	}
	r.send(Message{Type: MsgReadIndex, To: r.lead, Context: ctx})
	return nil
}

func (r *raft) leaderReadIndex(ctx []byte, from NodeID) {
	if !r.committedInTerm() {
		// Until an entry of our term commits we do not know the commit
		// index a read must wait for (§6.4).
		r.pendingReads = append(r.pendingReads, readRequest{ctx: ctx, from: from})
		return
	}
	r.serveRead(ctx, from)
}

func (r *raft) serveRead(ctx []byte, from NodeID) {
	index := r.log.committed
	if r.soleVoter() || r.cfg.LeaseRead {
		r.respondRead(ctx, from, index)
		return
	}
	// A slot past the end keeps an answered read's acks array (see
	// dropReads): a leader serves a read for nearly every client read.
	n := len(r.reads)
	if n < cap(r.reads) {
		r.reads = r.reads[:n+1]
	} else {
		r.reads = append(r.reads, readRequest{})
	}
	rq := &r.reads[n]
	r.lastRound++
	*rq = readRequest{ctx: ctx, from: from, index: index, round: r.lastRound, acks: append(rq.acks[:0], r.id)}
	r.readRound = true
}

// ackRead records a heartbeat answer for the round of the read numbered
// in ctx. Once a majority answered a heartbeat sent after that read
// arrived, this node was still leader at that moment, so that read and
// every earlier one may proceed.
func (r *raft) ackRead(ctx []byte, from NodeID) {
	if len(ctx) != 8 {
		return // not a round this node numbered
	}
	round := binary.BigEndian.Uint64(ctx)
	for k := len(r.reads) - 1; k >= 0; k-- {
		rq := &r.reads[k]
		if rq.round != round {
			continue
		}
		if !slices.Contains(rq.acks, from) {
			rq.acks = append(rq.acks, from)
		}
		if !r.trk.hasQuorum(rq.acks) {
			return
		}
		for _, done := range r.reads[:k+1] {
			r.respondRead(done.ctx, done.from, done.index)
		}
		r.dropReads(k + 1)
		return
	}
}

// dropReads removes the first n reads, answered, keeping the order of the
// rest. Their slots move past the end rather than being overwritten, so
// each keeps an acks array of its own for serveRead to reuse.
func (r *raft) dropReads(n int) {
	live := len(r.reads) - n
	for i := range live {
		r.reads[i], r.reads[i+n] = r.reads[i+n], r.reads[i]
	}
	for i := live; i < len(r.reads); i++ {
		r.reads[i].ctx = nil // do not pin the answered request
	}
	r.reads = r.reads[:live]
}

func (r *raft) respondRead(ctx []byte, from NodeID, index uint64) {
	if from == r.id {
		r.readStates = append(r.readStates, ReadState{Index: index, Context: ctx})
		return
	}
	r.send(Message{Type: MsgReadIndexResp, To: from, Index: index, Context: ctx})
}

func (r *raft) transferLeadership(to NodeID) error {
	if r.role != Leader {
		return &ErrNotLeader{Leader: r.lead}
	}
	if !r.trk.isVoter(to) {
		return fmt.Errorf("transfer leadership to node %d: %w", to, ErrUnknownPeer)
	}
	if to == r.id || to == r.leadTransferee {
		return nil
	}
	r.leadTransferee = to
	r.electionElapsed = 0
	if r.trk.progress.get(to).Match == r.log.lastIndex() {
		r.send(Message{Type: MsgTimeoutNow, To: to})
	}
	// Otherwise flush keeps replicating and the ack that catches the target
	// up triggers MsgTimeoutNow.
	return nil
}

func (r *raft) reportUnreachable(id NodeID) {
	if r.role != Leader {
		return
	}
	if pr := r.trk.progress.get(id); pr != nil && pr.State == StateReplicate {
		pr.becomeProbe()
	}
}

func (r *raft) forgetLeader(id NodeID) bool {
	if r.role != Follower || id == None || r.lead != id || r.cfg.LeaseRead {
		return false
	}
	r.lead = None
	// The lease is over. The voters left campaign a tick apart, in id
	// order: the first at its next tick, the second a tick later (in case
	// the first's log was behind, or its pre-votes went unanswered), and
	// so on, none later than a whole timeout. Followers that all saw the
	// leader go then do not split their votes by campaigning together.
	rank := 0
	for _, v := range r.trk.conf.Voters {
		if v != id && v < r.id {
			rank++
		}
	}
	r.electionElapsed = max(r.electionElapsed, r.randomizedElectionTimeout-min(rank+1, r.cfg.ElectionTick))
	return true
}

func (r *raft) reportSnapshot(id NodeID, ok bool) {
	if r.role != Leader {
		return
	}
	pr := r.trk.progress.get(id)
	if pr == nil || pr.State != StateSnapshot {
		return
	}
	if !ok {
		pr.PendingSnapshot = 0
	}
	pr.becomeProbe()
	// Wait for a sign of life (a heartbeat answer) before probing again.
	pr.probeSent = true
}
