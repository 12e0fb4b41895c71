package sim

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// Leases and locks under the etcd workload. Every node runs the server's lessor
// (lease.Lessor) on its own drifting clock, as keyvald runs it on the
// wall clock: while it leads it reads the lease list, and every 100 ms it
// proposes the revokes of the leases it finds expired. Holders grant a
// lease, put a key with it, keep it alive through the leader (a read
// barrier, then a renewal from the moment the keep-alive arrived, as
// server/etcdlease.go does) a random number of times, then let it expire
// and start again. While their lease lives they also compete for one lock
// as etcd's lock recipe does (put the lock key with the lease if it does
// not exist; the holder's fencing token is its create revision) and,
// while they believe they hold it, write the resource it guards with a
// transaction comparing the lock key's create revision with their token:
// the fencing of docs/etcd.md.
//
// The checks, at the first application anywhere of each command: a
// guarded write that took effect never carries a lower token than one
// before it (a stale holder's write is refused, never applied after a
// newer holder's); and, at the first application anywhere of each revoke: a lease is
// never revoked before the promise of its holder's last acknowledged
// keep-alive (or of its grant) ran out: the moment it was sent plus the
// TTL as the fastest clock the drift allows could measure it. That is
// what a new leader restarting every lease's full TTL guarantees.

// leaseCheckMicros is how often each node's lessor looks for expired
// leases (server/lease.go's leaseCheck).
const leaseCheckMicros = 100_000

// holder keeps one lease at a time alive.
type holder struct {
	id    int
	rng   *rand.Rand
	lease int64 // the current lease (0: none yet)
	ttl   int64 // seconds
	key   string
	keeps int // keep-alives still to send before letting the lease expire
	n     int // leases granted so far
	act   func()
	// token is the lock key's create revision while this holder holds
	// the lock with its current lease (0: it does not).
	token int64
	// pausedUntil: the holder is stopped (a long pause of its process)
	// until then, and sends nothing.
	pausedUntil int64
}

// startLeases starts the nodes' lessor checks and the holders.
func (w *world) startLeases(rng *rand.Rand) {
	w.leaseSafe = map[int64]int64{}
	w.leaseCheckFn = w.leaseCheck
	w.clock.after(leaseCheckMicros, w.leaseCheckFn)
	for i := range 1 + rng.IntN(3) {
		h := &holder{id: i + 1, rng: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))}
		h.act = func() { w.grant(h) }
		w.holders = append(w.holders, h)
		w.clock.after(h.rng.Int64N(200_000), h.act)
	}
}

// leaseClock is node n's clock for leases: its ticks' clock, so a node
// whose ticks come slowly also measures TTLs slowly.
func (n *node) leaseClock() time.Time {
	return time.UnixMicro(n.w.clock.now * tickMicros / n.tickStep)
}

// leaseLead brings n's lessor up to date with n's leadership, reading the
// lease list when due, as the server's lessor does before every use; it
// returns the term n leads in, or 0.
func (n *node) leaseLead(now time.Time) uint64 {
	nd := n.rep.Node()
	if n.lessor.Lead(nd.HardState().Term, nd.SoftState().Role == core.Leader, now) {
		infos, err := n.rep.Store().Leases()
		if err != nil {
			n.w.fail(fmt.Errorf("node %d: lease list: %w", n.id, err))
			return 0
		}
		n.lessor.Sync(infos, now)
	}
	return n.lessor.Term()
}

// leaseCheck is every live node's expiry check: the leader proposes the
// revokes of expired leases (nobody waits for them but its lessor).
func (w *world) leaseCheck() {
	w.clock.after(leaseCheckMicros, w.leaseCheckFn)
	for _, n := range w.nodes {
		if !n.alive() {
			continue
		}
		now := n.leaseClock()
		term := n.leaseLead(now)
		if term == 0 {
			continue
		}
		for _, id := range n.lessor.Due(now) {
			proposed := n.submit(false, kvstore.EncodeLeaseRevoke(id, ""), func(out replica.Outcome) {
				st := out.Result.Status
				n.lessor.Revoked(id, term, out.Err == nil && (st == kvstore.StatusOK || st == kvstore.StatusLeaseNotFound))
			})
			if !proposed {
				n.lessor.Revoked(id, term, false)
			}
		}
	}
}

// ask sends a holder's request to the leader, whose outcome goes to done;
// with no leader it tries again a little later.
func (w *world) ask(h *holder, read bool, cmd []byte, done func(n *node, out replica.Outcome)) {
	n := w.leader()
	if n == nil || !n.alive() {
		w.clock.after(20_000, h.act)
		return
	}
	if !n.submit(read, cmd, func(out replica.Outcome) { done(n, out) }) {
		w.clock.after(20_000, h.act)
	}
}

// submit hands n a read (read) or the proposal of cmd for the simulator
// itself, whose outcome goes to done; false if n refused it.
func (n *node) submit(read bool, cmd []byte, done func(replica.Outcome)) bool {
	n.w.nextRequest++
	rid := n.w.nextRequest
	var err error
	if read {
		err = n.rep.Read(rid)
	} else {
		err = n.rep.Propose(rid, cmd)
	}
	if err != nil {
		return false
	}
	n.requests[rid] = &request{id: rid, read: read, onDone: done}
	n.schedule()
	return true
}

// grant starts the holder's next lease; an answer lost is asked again
// with the same id, which then exists.
func (w *world) grant(h *holder) {
	if h.lease == 0 || h.keeps < 0 {
		h.n++
		h.lease, h.ttl, h.keeps = int64(h.id)<<32|int64(h.n), 1+h.rng.Int64N(2), 3+h.rng.IntN(12)
		h.key = fmt.Sprintf("lease/h%d-%d", h.id, h.n)
	}
	sent := w.clock.now
	w.ask(h, false, kvstore.EncodeLeaseGrant(h.lease, h.ttl, ""), func(n *node, out replica.Outcome) {
		st := out.Result.Status
		if out.Err != nil || (st != kvstore.StatusOK && st != kvstore.StatusLeaseExists) {
			w.clock.after(20_000, h.act)
			return
		}
		now := n.leaseClock()
		if n.leaseLead(now) != 0 {
			n.lessor.Granted(h.lease, h.ttl, now)
		}
		if _, again := w.leaseSafe[h.lease]; !again {
			w.watchCounts.Leases++
		}
		w.promise(h, sent)
		h.act = func() { w.attach(h) }
		w.attach(h)
	})
}

// attach puts the holder's key with its lease.
func (w *world) attach(h *holder) {
	cmd, err := kvstore.EncodeEtcdTxn(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
		Key: []byte(h.key), Value: []byte("held"), Lease: h.lease}}}}}, "")
	if err != nil {
		w.fail(fmt.Errorf("a lease put: %w", err))
		return
	}
	w.ask(h, false, cmd, func(_ *node, out replica.Outcome) {
		switch {
		case out.Err != nil:
			w.clock.after(20_000, h.act)
		case out.Result.Status == kvstore.StatusOK:
			h.act = func() { w.keepAlive(h) }
			w.clock.after(h.ttl*1_000_000/3, h.act)
			gen := h.n
			w.clock.after(h.rng.Int64N(100_000), func() { w.lockStep(h, gen) })
		default: // expired meanwhile
			w.restartHolder(h)
		}
	})
}

// keepAlive renews the lease through the leader after a read barrier, as
// the server does; once the holder has sent its share it stops and lets
// the lease expire.
func (w *world) keepAlive(h *holder) {
	if h.keeps == 0 {
		w.restartHolder(h)
		return
	}
	if h.rng.IntN(8) == 0 {
		// The process stops for longer than its TTL (a pause, SIGSTOP):
		// it still believes it holds what it held, and when it wakes up
		// it writes before its next keep-alive tells it otherwise.
		h.pausedUntil = w.clock.now + h.ttl*1_000_000 + h.rng.Int64N(1_000_000)
		w.clock.at(h.pausedUntil+1_000, h.act)
		return
	}
	n := w.leader()
	if n == nil || !n.alive() {
		w.clock.after(20_000, h.act)
		return
	}
	sent, from := w.clock.now, n.leaseClock()
	term := n.leaseLead(from)
	w.ask(h, true, nil, func(n *node, out replica.Outcome) {
		now := n.leaseClock()
		if out.Err != nil || term == 0 || n.leaseLead(now) != term {
			w.clock.after(20_000, h.act)
			return
		}
		info, found, err := n.rep.Store().Lease(h.lease)
		if err != nil {
			w.fail(fmt.Errorf("node %d: lease %d: %w", n.id, h.lease, err))
			return
		}
		if !found || !n.lessor.Renew(h.lease, info.TTL, from, now) {
			w.restartHolder(h) // expired: a new lease
			return
		}
		w.promise(h, sent)
		w.watchCounts.KeepAlives++
		h.keeps--
		w.clock.after(h.ttl*1_000_000/3, h.act)
	})
}

// restartHolder lets the current lease go and grants a new one a little
// after it could have expired.
func (w *world) restartHolder(h *holder) {
	h.keeps, h.token = -1, 0
	h.act = func() { w.grant(h) }
	w.clock.after(h.ttl*1_000_000+h.rng.Int64N(500_000), h.act)
}

// promise records what an acknowledged grant or keep-alive sent at sent
// promises: no revoke before sent + the TTL measured by the fastest clock
// the drift allows.
func (w *world) promise(h *holder, sent int64) {
	until := sent + int64(float64(h.ttl*1_000_000)*(1-w.faults.ClockDrift))
	w.leaseSafe[h.lease] = max(w.leaseSafe[h.lease], until)
}

// checkRevoke holds the first application of a revoke to its holder's
// promise.
func (w *world) checkRevoke(id int64) {
	w.watchCounts.Revokes++
	if until, ok := w.leaseSafe[id]; ok && w.clock.now < until {
		w.fail(fmt.Errorf("lease %d revoked %v before its holder's last acknowledged keep-alive promised",
			id, time.Duration(until-w.clock.now)*time.Microsecond))
	}
}

// The lock the holders compete for, and the resource it guards.
const (
	lockKey     = "lock/key"
	lockGuarded = "lock/resource"
)

// lockStep is what a holder of lease generation gen does every 50–150 ms
// while that lease lives: take the lock, or, holding it, write the
// resource under its fence.
func (w *world) lockStep(h *holder, gen int) {
	if h.n != gen || h.keeps <= 0 {
		return // the lease is being let go, or a new one replaced it
	}
	next := func() { w.clock.after(50_000+h.rng.Int64N(100_000), func() { w.lockStep(h, gen) }) }
	if w.clock.now < h.pausedUntil {
		w.clock.at(h.pausedUntil, func() { w.lockStep(h, gen) })
		return
	}
	if h.token == 0 {
		// etcd's recipe: the lock is the key; taking it is creating it.
		txn := &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte(lockKey), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
				Key: []byte(lockKey), Value: []byte(h.key), Lease: h.lease}}}},
		}
		w.askTxn(txn, func(r kvstore.Result) {
			if h.n == gen && r.Etcd != nil && r.Etcd.Succeeded {
				h.token = int64(r.Revision)
			}
			next()
		})
		return
	}
	token := h.token
	txn := &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte(lockKey), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_CreateRevision{CreateRevision: token}}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
			Key: []byte(lockGuarded), Value: []byte(strconv.FormatInt(token, 10))}}}},
	}
	w.askTxn(txn, func(r kvstore.Result) {
		if h.n == gen && r.Etcd != nil && !r.Etcd.Succeeded && h.token == token {
			h.token = 0 // the fence refused it: the lock is someone else's
		}
		next()
	})
}

// askTxn proposes an etcd transaction (no session: a lost answer is not
// retried) through the leader and hands its result to done; an answer
// lost or refused gives a zero result.
func (w *world) askTxn(txn *pb.TxnRequest, done func(kvstore.Result)) {
	cmd, err := kvstore.EncodeEtcdTxn(txn, "")
	if err != nil {
		w.fail(fmt.Errorf("a lock transaction: %w", err))
		return
	}
	n := w.leader()
	proposed := n != nil && n.alive() && n.submit(false, cmd, func(out replica.Outcome) {
		if out.Err != nil {
			out.Result = kvstore.Result{}
		}
		done(out.Result)
	})
	if !proposed {
		done(kvstore.Result{})
	}
}

// checkFenced holds each guarded write that took effect to the token of
// the one before it.
func (w *world) checkFenced(cmd *kvpb.Command, r kvstore.Result) {
	if r.Etcd == nil || !r.Etcd.Succeeded {
		return
	}
	var txn pb.TxnRequest
	if txn.Unmarshal(cmd.GetEtcdTxn()) != nil {
		return
	}
	for _, op := range txn.Success {
		put := op.GetRequestPut()
		if put == nil || string(put.Key) != lockGuarded {
			continue
		}
		token, err := strconv.ParseInt(string(put.Value), 10, 64)
		if err != nil {
			w.fail(fmt.Errorf("a guarded write of %q", put.Value))
			return
		}
		if token < w.lastFence {
			w.fail(fmt.Errorf("a write guarded by lock token %d took effect at revision %d, after one guarded by token %d: a stale holder wrote", token, r.Revision, w.lastFence))
		}
		w.lastFence = max(w.lastFence, token)
		w.watchCounts.Fenced++
	}
}
