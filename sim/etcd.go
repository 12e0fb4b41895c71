package sim

import (
	"errors"
	"fmt"
	"strconv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// The etcd workload (Options.Etcd): the clients speak etcd's API as the
// server's etcd service does (server/etcdkv.go): multi-key transactions,
// some with compares on values or mod revisions, as etcd transaction
// commands carrying the client's exactly-once session; reads of key ranges
// after a ReadIndex barrier, at the latest revision or at a revision the
// client has seen. The history is checked by revision
// (linearizability.CheckRevisions), not by Porcupine.

// etcdState is a client's view under the etcd workload: what it last saw
// of each key, for its compares, and the latest revision it saw, for its
// reads of the past.
type etcdState struct {
	seen    map[string]lin.RevKV
	lastRev int64
}

// beginEtcd starts the client's next etcd operation.
func (c *client) beginEtcd() {
	w := c.w
	c.opsDone++
	op := &clientOp{startedAt: w.clock.now, rev: &lin.RevOp{Client: c.id, Call: w.clock.now}}
	rec := op.rev
	a, b := c.rng.IntN(w.keys), c.rng.IntN(w.keys)
	value := func(n int) string {
		return "c" + strconv.Itoa(c.id) + "-" + strconv.Itoa(c.opsDone) + "-" + strconv.Itoa(n)
	}
	switch r := c.rng.IntN(10); {
	case r < 3: // a range at the latest revision
		rec.Kind, rec.Key, rec.End = lin.RevRange, w.keyName(min(a, b)), w.keyName(max(a, b))+"\xff"
	case r < 4 && c.etcd.lastRev > 0: // a range at a revision seen before
		rec.Kind, rec.Key, rec.End = lin.RevRange, w.keyName(0), w.keyName(w.keys-1)+"\xff"
		rec.At = 1 + c.rng.Int64N(c.etcd.lastRev)
	case r < 8: // compare what was last seen of a key, then write two
		rec.Kind = lin.RevTxn
		ka := w.keyName(a)
		last, known := c.etcd.seen[ka]
		cmp := lin.RevCompare{Key: ka, ModRevision: last.ModRevision}
		if known && c.rng.IntN(2) == 0 {
			cmp = lin.RevCompare{Key: ka, ByValue: true, Value: last.Value}
		}
		rec.Compares = []lin.RevCompare{cmp}
		rec.Then = []lin.RevWrite{{Key: ka, Value: value(0)}}
		if b != a {
			rec.Then = append(rec.Then, lin.RevWrite{Key: w.keyName(b), Value: value(1)})
		}
		if c.rng.IntN(2) == 0 { // otherwise a failed compare writes nothing
			rec.Else = []lin.RevWrite{{Key: w.keyName(b), Value: value(2)}}
		}
	default: // a put and a delete, with no compare
		rec.Kind = lin.RevTxn
		rec.Then = []lin.RevWrite{{Key: w.keyName(a), Value: value(0)}}
		if b != a {
			rec.Then = append(rec.Then, lin.RevWrite{Key: w.keyName(b), Delete: true})
		}
	}
	if rec.Kind == lin.RevRange {
		op.isRead = true
		op.etcdRange = &pb.RangeRequest{Key: []byte(rec.Key), RangeEnd: []byte(rec.End), Revision: rec.At}
	} else {
		c.seq++
		op.session, op.seq = c.session, c.seq
		op.cmd = mustMarshal(&kvpb.Command{ClientId: c.session, Seq: c.seq, Op: &kvpb.Command_EtcdTxn{EtcdTxn: encodeTxn(rec)}})
	}
	op.in.Key = rec.Key
	c.op = op
	c.attempt()
}

// encodeTxn is the etcd transaction a RevTxn stands for.
func encodeTxn(rec *lin.RevOp) []byte {
	req := &pb.TxnRequest{Success: etcdOps(rec.Then), Failure: etcdOps(rec.Else)}
	for _, c := range rec.Compares {
		cmp := &pb.Compare{Key: []byte(c.Key), Result: pb.Compare_EQUAL, Target: pb.Compare_MOD,
			TargetUnion: &pb.Compare_ModRevision{ModRevision: c.ModRevision}}
		if c.ByValue {
			cmp.Target, cmp.TargetUnion = pb.Compare_VALUE, &pb.Compare_Value{Value: []byte(c.Value)}
		}
		req.Compare = append(req.Compare, cmp)
	}
	data, err := req.Marshal()
	if err != nil {
		panic(err) // a request built here always marshals
	}
	return data
}

func etcdOps(writes []lin.RevWrite) []*pb.RequestOp {
	var ops []*pb.RequestOp
	for _, wr := range writes {
		if wr.Delete {
			ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(wr.Key)}}})
		} else {
			ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(wr.Key), Value: []byte(wr.Value)}}})
		}
	}
	return ops
}

// etcdAnswered records an etcd operation's answer.
func (c *client) etcdAnswered(rp reply) {
	rec := c.op.rev
	rec.Return = c.w.clock.now
	if rp.compacted { // etcd's ErrCompacted: the read is refused, not wrong
		c.w.watchCounts.CompactedReads++
		c.w.opsFailed++
		c.next()
		return
	}
	if c.op.isRead {
		rec.Revision = rp.etcdRange.Header.Revision
		for _, kv := range rp.etcdRange.Kvs {
			got := lin.RevKV{Key: string(kv.Key), Value: string(kv.Value), ModRevision: kv.ModRevision}
			rec.KVs = append(rec.KVs, got)
			if rec.At == 0 {
				c.etcd.seen[got.Key] = got
			}
		}
	} else if err := fillTxn(rec, rp.result); err != nil {
		c.w.fail(fmt.Errorf("client %d: %v: %w", c.id, rec, err))
		return
	}
	c.etcd.lastRev = max(c.etcd.lastRev, rec.Revision)
	c.w.revOps = append(c.w.revOps, *rec)
	c.w.opsOK++
	c.next()
}

// fillTxn takes a transaction's outcome from the state machine's result.
func fillTxn(rec *lin.RevOp, r kvstore.Result) error {
	if r.Status != kvstore.StatusOK || r.Etcd == nil {
		return fmt.Errorf("unexpected result %v: %s", r.Status, r.Err)
	}
	rec.Succeeded, rec.Revision = r.Etcd.Succeeded, int64(r.Revision)
	return nil
}

// etcdGaveUp records an etcd operation the client gave up on: a read, or a
// write no attempt of which can have been applied, is left out; another
// write is settled at the end of the run.
func (c *client) etcdGaveUp() {
	op := c.op
	if op.isRead || !op.mayApply {
		c.w.opsFailed++
	} else {
		c.w.unresolved = append(c.w.unresolved, op)
		c.w.opsUnknown++
	}
	c.next()
}

// resolveEtcd settles an etcd write whose client never heard back, from
// what the cluster applied: taking effect no later than its first
// application, or, applied nowhere, left out as unknown.
func (w *world) resolveEtcd(op *clientOp) {
	rec := *op.rev
	a, ok := w.applied[sessionSeq{op.session, op.seq}]
	if !ok {
		rec.Unknown = true
	} else if err := fillTxn(&rec, a.result); err != nil {
		w.fail(err)
		rec.Unknown = true
	} else {
		rec.Return = max(a.at, op.startedAt)
	}
	w.revOps = append(w.revOps, rec)
}

// answerEtcdRange reads a range for a client whose read was released.
func (n *node) answerEtcdRange(rq *request) {
	resp, err := n.rep.Store().EtcdRange(rq.op.etcdRange, 0)
	if err != nil {
		var re *kvstore.RangeError
		if errors.As(err, &re) && re.Status == kvstore.StatusCompacted && rq.op.etcdRange.Revision > 0 {
			n.reply(rq, reply{compacted: true})
			return
		}
		if errors.As(err, &re) {
			err = fmt.Errorf("refused after its barrier (the client saw revision %d): %w", rq.op.etcdRange.Revision, err)
		}
		n.w.fail(fmt.Errorf("node %d: etcd range: %w", n.id, err))
		return
	}
	n.reply(rq, reply{etcdRange: resp})
}

// checkHashes compares the history of every live member once they have
// converged: the same hash at the same revision.
func (w *world) checkHashes() {
	var first *kvstore.KVHash
	var firstID uint64
	for _, id := range w.members() {
		n := w.node(id)
		if n.state != nodeUp {
			continue
		}
		h, err := n.rep.Store().HashKV(0)
		if err != nil {
			w.fail(fmt.Errorf("node %d: hash of the history: %w", id, err))
			return
		}
		if first == nil {
			first, firstID = &h, uint64(id)
		} else if h != *first {
			w.fail(fmt.Errorf("histories differ: node %d hashes %+v, node %d %+v", firstID, *first, id, h))
			return
		}
	}
}
