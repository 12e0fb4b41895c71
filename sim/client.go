package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

const (
	requestTimeout = 300_000 // µs a client waits for one attempt
	maxAttempts    = 12      // attempts before an operation is given up
)

// request is one attempt of a client operation, as a node sees it.
type request struct {
	id     uint64
	client *client
	// to is the node the attempt went to, and op the client's operation
	// it carries.
	to   *node
	op   *clientOp
	read bool
	key  string
	cmd  []byte
	// register: cmd opens a session, and the node stamps it with its own
	// clock and policy as the server does.
	register bool
	// user is the client's user (the auth workload), whose permission a
	// read needs when it is released.
	user string
	// onDone, if set, takes the answer instead of a client (a membership
	// change the nemesis proposed).
	onDone func(replica.Outcome)
	// commitAtAsk is the node's commit index when a read was asked: the
	// least index it may be released at.
	commitAtAsk uint64
}

// reply is a node's answer to one attempt.
type reply struct {
	notLeader core.NodeID // the leader a refusing node named (core.None if it knew none)
	refused   bool
	// definite: the write certainly was not applied (refused before
	// proposing, or its entry was replaced).
	definite bool
	unknown  bool
	// denied: a read refused for want of permission.
	denied bool
	result kvstore.Result
	get    kvstore.GetResult
	// etcdRange answers an etcd read (the etcd workload); compacted says
	// its revision was compacted away.
	etcdRange *pb.RangeResponse
	compacted bool
}

// client runs operations one at a time, like a user of the Go client:
// it retries on another node after a refusal or time-out, carrying the same
// exactly-once session and sequence number, and records each operation's
// call and outcome for the linearizability check.
type client struct {
	w       *world
	id      int
	rng     *rand.Rand
	session uint64 // kvstore session id, after Register
	seq     uint64
	target  core.NodeID
	stopped bool

	// the operation in progress
	op          *clientOp
	attemptID   uint64
	attemptDone bool
	versions    map[string]uint64
	opsDone     int
	// admin: the auth workload's administrator, with the setup steps it
	// has still to take.
	admin bool
	setup [][]byte
	// beginFn and attemptFn are the method values the client schedules
	// after every operation and retry, made once rather than each time.
	beginFn, attemptFn func()
	// etcd is the client's view under the etcd workload (sim/etcd.go).
	etcd etcdState
}

type clientOp struct {
	in        lin.Input
	hid       lin.OpID
	cmd       []byte
	attempts  int
	register  bool // a session's registration, not in the history
	setup     bool // an auth setup step, not in the history
	mayApply  bool // some attempt may have been applied
	isRead    bool
	startedAt int64
	// session and seq identify a write for exactly-once application.
	session, seq uint64
	// rev is the etcd workload's record of the operation, and etcdRange
	// its read (sim/etcd.go); nil otherwise.
	rev       *lin.RevOp
	etcdRange *pb.RangeRequest
}

func (w *world) newClient(id int, rng *rand.Rand) *client {
	c := &client{w: w, id: id, rng: rng, target: w.randomMember(rng), versions: map[string]uint64{}}
	if w.etcd {
		c.etcd.seen = map[string]lin.RevKV{}
	}
	c.beginFn, c.attemptFn = c.beginAfterThinking, c.attempt
	return c
}

func (c *client) start() {
	if c.admin {
		c.startAdmin()
		return
	}
	c.op = &clientOp{register: true, cmd: mustMarshal(&kvpb.Command{Op: &kvpb.Command_Register{Register: &kvpb.Register{}}})}
	c.attempt()
}

// next starts the client's next operation after a think time.
func (c *client) next() {
	c.op = nil
	if c.stopped {
		return
	}
	c.w.clock.after(c.rng.Int64N(20_000), c.beginFn)
}

// beginAfterThinking begins the next operation unless the client stopped
// or began one meanwhile.
func (c *client) beginAfterThinking() {
	if c.stopped || c.op != nil {
		return
	}
	c.begin()
}

func (c *client) begin() {
	if c.admin {
		c.op = c.beginAdmin()
		c.op.hid = c.w.rec.Call(c.id, c.op.in, c.w.clock.now)
		c.attempt()
		return
	}
	if c.w.etcd {
		c.beginEtcd()
		return
	}
	key := c.w.keyName(c.rng.IntN(c.w.keys))
	c.opsDone++
	value := "c" + strconv.Itoa(c.id) + "-" + strconv.Itoa(c.opsDone)
	op := &clientOp{startedAt: c.w.clock.now}
	var cmd *kvpb.Command
	switch r := c.rng.IntN(10); {
	case r < 4:
		op.in = lin.Get(key)
		op.isRead = true
	case r < 7:
		op.in = lin.Put(key, value)
		cmd = &kvpb.Command{Op: &kvpb.Command_Put{Put: &kvpb.Put{Key: []byte(key), Value: []byte(value)}}}
	case r < 8:
		op.in = lin.Delete(key)
		cmd = &kvpb.Command{Op: &kvpb.Command_Delete{Delete: &kvpb.Delete{Key: []byte(key)}}}
	default:
		expect := c.versions[key]
		if c.rng.IntN(4) == 0 {
			expect = 0
		}
		op.in = lin.CAS(key, expect, value)
		cmd = &kvpb.Command{Op: &kvpb.Command_CompareAndSwap{CompareAndSwap: &kvpb.CompareAndSwap{
			Key: []byte(key), ExpectedVersion: expect, NewValue: []byte(value)}}}
	}
	if cmd != nil {
		c.seq++
		cmd.ClientId, cmd.Seq, cmd.User = c.session, c.seq, c.w.authUser
		op.session, op.seq = c.session, c.seq
		op.cmd = mustMarshal(cmd)
	}
	op.hid = c.w.rec.Call(c.id, op.in, c.w.clock.now)
	c.op = op
	c.attempt()
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err) // a command built here always marshals
	}
	return b
}

// keyName is the name of key i of the key space ("k0", "k1", ...), made
// once per run rather than once per operation.
func (w *world) keyName(i int) string {
	for len(w.keyNames) <= i {
		w.keyNames = append(w.keyNames, "k"+strconv.Itoa(len(w.keyNames)))
	}
	return w.keyNames[i]
}

// attempt sends the current operation to the target node.
func (c *client) attempt() {
	w := c.w
	op := c.op
	op.attempts++
	w.nextRequest++
	id := w.nextRequest
	c.attemptID, c.attemptDone = id, false
	rq := &request{id: id, client: c, op: op, read: op.isRead, key: op.in.Key, cmd: op.cmd, register: op.register, user: c.w.authUser}
	rq.to = w.node(c.target)
	if rq.to == nil {
		rq.to = w.node(w.randomMember(c.rng))
	}
	if !w.net.lose() {
		w.clock.push(w.clock.now+w.net.delay(), event{kind: evRequest, ref: w.clock.requests.put(rq)})
	}
	w.clock.push(w.clock.now+requestTimeout, event{kind: evTimeout, ref: w.clock.requests.put(rq)})
}

// timeOut gives up on attempt rq if it is still the one waiting.
func (c *client) timeOut(rq *request) {
	op := rq.op
	if c.op == op && c.attemptID == rq.id && !c.attemptDone {
		// No answer: the write may or may not have been applied.
		if !op.isRead {
			op.mayApply = true
		}
		c.retry(core.None)
	}
}

func (c *client) retry(hint core.NodeID) {
	c.attemptDone = true
	op := c.op
	if hint != core.None { // none: try another node at random
		c.target = hint
	} else {
		c.target = c.w.randomMember(c.rng)
	}
	if op.attempts >= maxAttempts && op.inHistory() {
		c.giveUp()
		return
	}
	c.w.clock.after(1_000+c.rng.Int64N(10_000), c.attemptFn)
}

// inHistory reports whether the operation was recorded in the history:
// a registration or an auth setup step is retried until answered and, if
// the run ends first, is simply abandoned.
func (op *clientOp) inHistory() bool {
	return !op.register && !op.setup
}

func (c *client) giveUp() {
	op := c.op
	if op.rev != nil {
		c.etcdGaveUp()
		return
	}
	var err error
	switch {
	case op.isRead || !op.mayApply:
		err = c.w.rec.Drop(op.hid)
		c.w.opsFailed++
	default:
		// Settled at the end of the run from what the cluster applied.
		c.w.unresolved = append(c.w.unresolved, op)
		c.w.opsUnknown++
	}
	c.w.check(err)
	c.next()
}

// receive handles a node's reply to attempt id.
func (c *client) receive(id uint64, rp reply) {
	op := c.op
	if op == nil || id != c.attemptID || c.attemptDone {
		return
	}
	switch {
	case rp.refused:
		c.retry(rp.notLeader)
		return
	case rp.unknown:
		op.mayApply = true
		c.retry(core.None)
		return
	case rp.definite:
		c.retry(core.None)
		return
	}
	c.attemptDone = true
	if op.setup {
		c.setupAnswered(rp.result)
		return
	}
	if op.register {
		if rp.result.Status != kvstore.StatusOK {
			c.w.fail(fmt.Errorf("client %d: register failed: %v %s", c.id, rp.result.Status, rp.result.Err))
			return
		}
		c.session = rp.result.ClientID
		c.next()
		return
	}
	if op.rev != nil {
		c.etcdAnswered(rp)
		return
	}
	out, err := c.output(rp)
	if err != nil {
		c.w.fail(fmt.Errorf("client %d: %v: %w", c.id, op.in, err))
		return
	}
	c.w.check(c.w.rec.Return(op.hid, out, c.w.clock.now))
	c.w.opsOK++
	c.next()
}

func (c *client) output(rp reply) (lin.Output, error) {
	op := c.op
	if c.admin {
		return adminOutput(rp.result)
	}
	if rp.denied {
		return lin.Denied(), nil
	}
	if op.isRead {
		g := rp.get
		if !g.Found {
			delete(c.versions, op.in.Key)
			return lin.GetNotFound(), nil
		}
		c.versions[op.in.Key] = g.Version
		return lin.GetFound(string(g.Value), g.Version), nil
	}
	out, err := resultOutput(op.in, rp.result)
	if err != nil {
		return out, err
	}
	switch {
	case op.in.Kind == lin.OpDelete:
		delete(c.versions, op.in.Key)
	case rp.result.Exists || rp.result.Status == kvstore.StatusOK:
		c.versions[op.in.Key] = rp.result.Version
	}
	return out, nil
}

// resultOutput is what a client is told for a write's state machine result.
func resultOutput(in lin.Input, r kvstore.Result) (lin.Output, error) {
	switch r.Status {
	case kvstore.StatusOK:
	case kvstore.StatusCASFailed:
		return lin.Output{Found: r.Exists, Value: string(r.CurrentValue), Version: r.Version}, nil
	case kvstore.StatusPermissionDenied:
		return lin.Denied(), nil
	default:
		return lin.Output{}, fmt.Errorf("unexpected status %v: %s", r.Status, r.Err)
	}
	switch in.Kind {
	case lin.OpPut:
		return lin.PutOK(r.Version), nil
	case lin.OpDelete:
		return lin.DeleteOK(r.Existed), nil
	default:
		return lin.Output{Succeeded: true, Version: r.Version}, nil
	}
}

// handle is a node receiving one client attempt.
func (n *node) handle(rq *request) {
	if !n.alive() {
		return // the client times out
	}
	var err error
	if rq.read {
		rq.commitAtAsk = n.rep.Node().HardState().Commit
		err = n.rep.Read(rq.id)
	} else {
		err = n.propose(rq)
	}
	if err != nil {
		var nl *core.ErrNotLeader
		rp := reply{refused: true}
		if errors.As(err, &nl) {
			rp.notLeader = nl.Leader
		}
		n.reply(rq, rp)
		return
	}
	n.requests[rq.id] = rq
	n.schedule()
}

// answer turns the replica's outcome into the reply the client gets.
func (n *node) answer(rq *request, out replica.Outcome) {
	switch {
	case errors.Is(out.Err, replica.ErrLost):
		n.reply(rq, reply{definite: true})
	case errors.Is(out.Err, replica.ErrReadAborted):
		n.reply(rq, reply{definite: true})
	case out.Err != nil:
		n.reply(rq, reply{unknown: true})
	case rq.read && rq.op != nil && rq.op.etcdRange != nil:
		n.answerEtcdRange(rq)
	case rq.read:
		allowed, err := n.readAllowed(rq)
		if err != nil {
			n.w.fail(fmt.Errorf("node %d: read permission: %w", n.id, err))
			return
		}
		if !allowed {
			n.reply(rq, reply{denied: true})
			return
		}
		g, err := n.rep.Store().Get([]byte(rq.key))
		if err != nil {
			n.w.fail(fmt.Errorf("node %d: get: %w", n.id, err))
			return
		}
		n.reply(rq, reply{get: g})
	default:
		n.reply(rq, reply{result: out.Result})
	}
}

func (n *node) reply(rq *request, rp reply) {
	w := n.w
	if w.net.lose() {
		return
	}
	w.clock.push(w.clock.now+n.sendDelay+w.net.delay(), event{kind: evReply, ref: w.clock.replies.put(sentReply{rq: rq, rp: rp})})
}

// simSessions is the session policy every simulated node stamps into the
// Registers it proposes (keyvald's defaults).
var simSessions = kvstore.SessionPolicy{MaxSessions: kvstore.DefaultMaxSessions, IdleTTL: kvstore.DefaultSessionTTL}

// propose proposes a client's write as the server does: a Register stamped
// with the node's clock and policy, and after a write the node accepted
// (as leader) a session clock entry about once a second.
func (n *node) propose(rq *request) error {
	cmd := rq.cmd
	if rq.register {
		cmd = n.encodeRegister(rq.user)
	}
	if err := n.rep.Propose(rq.id, cmd); err != nil {
		return err
	}
	if now := n.wallMs(); n.sessionTicker.Due(now) {
		// An id no request has: nobody waits for it. A refusal (flow
		// control) only delays the clock to a later write.
		n.w.nextRequest++
		_ = n.rep.Propose(n.w.nextRequest, kvstore.EncodeSessionClock(now))
	}
	return nil
}

// wallMs is the node's wall clock in milliseconds: virtual time, running
// fast or slow with the node's clock drift.
func (n *node) wallMs() uint64 {
	return uint64(n.w.clock.now * n.tickStep / tickMicros / 1000)
}
