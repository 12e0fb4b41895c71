package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/internal/flowwindow"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
	"github.com/therealutkarshpriyadarshi/keyval/net/transport"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// maxRangeLimit caps one Range page.
const maxRangeLimit = 10000

// forwardedKey marks a request a follower forwarded to the leader, so a
// request is forwarded at most once.
const forwardedKey = "keyval-forwarded"

// kvService is the client API. Writes are proposed through the event loop
// (or forwarded to the leader); linearizable reads wait for a ReadIndex
// barrier and then read bbolt directly, concurrently with the loop.
type kvService struct {
	apipb.UnimplementedKVServer
	s    *Server
	port string // "client" or "peer", for metrics
}

// Pipeline serves many calls over one stream (see ServePipeline), each
// exactly as its unary method.
func (k *kvService) Pipeline(stream apipb.KV_PipelineServer) error {
	return ServePipeline(stream, k, PipelineOptions{
		Timeout:       k.s.cfg.RequestTimeout,
		MaxReplyBytes: k.s.cfg.MaxPipelineReplyBytes,
		MaxValueBytes: k.s.cfg.MaxValueBytes,
		Draining:      k.s.draining,
		Held:          k.s.obs.m.pipelineHeld,
		Observe: func(method string, code codes.Code, d time.Duration) {
			k.s.obs.m.observeRequest(k.port, method, code, d)
		},
	})
}

func (k *kvService) checkKey(key []byte) error {
	if len(key) == 0 {
		return status.Error(codes.InvalidArgument, "the key is empty; keys must be 1 or more bytes")
	}
	if len(key) > k.s.cfg.MaxKeyBytes {
		return status.Errorf(codes.InvalidArgument, "the key is %d bytes; the limit is %d (--max-key-bytes)", len(key), k.s.cfg.MaxKeyBytes)
	}
	if replica.IsReservedKey(key) {
		return status.Errorf(codes.InvalidArgument, "keys starting with %q are reserved for KeyVal's own records", "\\x00keyval/")
	}
	return nil
}

func (k *kvService) checkValue(v []byte) error {
	if len(v) > k.s.cfg.MaxValueBytes {
		return status.Errorf(codes.InvalidArgument, "the value is %d bytes; the limit is %d (--max-value-bytes)", len(v), k.s.cfg.MaxValueBytes)
	}
	return nil
}

func (k *kvService) checkKeyValue(key, value []byte) error {
	if err := k.checkKey(key); err != nil {
		return err
	}
	return k.checkValue(value)
}

func (k *kvService) header(rev uint64) *apipb.Header {
	return &apipb.Header{Revision: rev, NodeId: uint64(k.s.cfg.ID), LeaderId: k.s.leader.Load()}
}

func session(s *apipb.Session) (uint64, uint64) {
	if s == nil {
		return 0, 0
	}
	return s.ClientId, s.Seq
}

func (k *kvService) Register(ctx context.Context, req *apipb.RegisterRequest) (*apipb.RegisterResponse, error) {
	user, err := k.s.require(ctx, needUser)
	if err != nil {
		return nil, err
	}
	res, leader, err := k.s.write(ctx, encodeCommand(&kvpb.Command{User: user, Op: &kvpb.Command_Register{Register: k.s.stampRegister()}}))
	if leader != nil {
		return apipb.NewKVClient(leader).Register(ctx, req)
	}
	if err != nil {
		if res.Status == kvstore.StatusSessionLimit {
			k.s.limits.sessRefus.Inc()
		}
		return nil, err
	}
	return &apipb.RegisterResponse{Header: k.header(res.Revision), ClientId: res.ClientID}, nil
}

func (k *kvService) Put(ctx context.Context, req *apipb.PutRequest) (*apipb.PutResponse, error) {
	if err := k.checkKeyValue(req.Key, req.Value); err != nil {
		return nil, err
	}
	user, err := k.s.require(ctx, needWrite(req.Key))
	if err != nil {
		return nil, err
	}
	id, seq := session(req.Session)
	data := kvstore.EncodePut(id, seq, req.Key, req.Value)
	if user != "" {
		data = encodeCommand(&kvpb.Command{ClientId: id, Seq: seq, User: user,
			Op: &kvpb.Command_Put{Put: &kvpb.Put{Key: req.Key, Value: req.Value}}})
	}
	res, leader, err := k.s.writeSized(ctx, data, kvstore.KeyBytes(len(req.Key), len(req.Value)))
	if leader != nil {
		return apipb.NewKVClient(leader).Put(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	return &apipb.PutResponse{Header: k.header(res.Revision), Version: res.Version, Existed: res.Existed}, nil
}

func (k *kvService) Delete(ctx context.Context, req *apipb.DeleteRequest) (*apipb.DeleteResponse, error) {
	if err := k.checkKey(req.Key); err != nil {
		return nil, err
	}
	user, err := k.s.require(ctx, needWrite(req.Key))
	if err != nil {
		return nil, err
	}
	id, seq := session(req.Session)
	res, leader, err := k.s.write(ctx, encodeCommand(&kvpb.Command{ClientId: id, Seq: seq, User: user,
		Op: &kvpb.Command_Delete{Delete: &kvpb.Delete{Key: req.Key}}}))
	if leader != nil {
		return apipb.NewKVClient(leader).Delete(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	return &apipb.DeleteResponse{Header: k.header(res.Revision), Existed: res.Existed}, nil
}

func (k *kvService) CompareAndSwap(ctx context.Context, req *apipb.CompareAndSwapRequest) (*apipb.CompareAndSwapResponse, error) {
	if err := k.checkKeyValue(req.Key, req.Value); err != nil {
		return nil, err
	}
	user, err := k.s.require(ctx, needReadWrite(req.Key))
	if err != nil {
		return nil, err
	}
	id, seq := session(req.Session)
	res, leader, err := k.s.writeSized(ctx, encodeCommand(&kvpb.Command{ClientId: id, Seq: seq, User: user,
		Op: &kvpb.Command_CompareAndSwap{CompareAndSwap: &kvpb.CompareAndSwap{Key: req.Key, ExpectedVersion: req.ExpectedVersion, NewValue: req.Value}}}),
		kvstore.KeyBytes(len(req.Key), len(req.Value)))
	if leader != nil {
		return apipb.NewKVClient(leader).CompareAndSwap(ctx, req)
	}
	if err != nil && res.Status != kvstore.StatusCASFailed {
		return nil, err
	}
	return &apipb.CompareAndSwapResponse{Header: k.header(res.Revision), Succeeded: res.Succeeded(),
		Version: res.Version, Exists: res.Exists, CurrentValue: res.CurrentValue}, nil
}

func (k *kvService) Get(ctx context.Context, req *apipb.GetRequest) (*apipb.GetResponse, error) {
	if err := k.checkKey(req.Key); err != nil {
		return nil, err
	}
	if err := k.s.readChecked(ctx, req.Serializable, needRead(req.Key, nil)); err != nil {
		return nil, err
	}
	if err := reserveValue(ctx); err != nil {
		return nil, err
	}
	g, err := k.s.store.Get(req.Key)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read %q: %v", req.Key, err)
	}
	return &apipb.GetResponse{Header: k.header(g.Revision), Found: g.Found, Value: g.Value, Version: g.Version}, nil
}

func (k *kvService) Range(ctx context.Context, req *apipb.RangeRequest) (*apipb.RangeResponse, error) {
	limit := int(req.Limit)
	if limit <= 0 || limit > maxRangeLimit {
		limit = maxRangeLimit
	}
	if err := k.s.readChecked(ctx, req.Serializable, needRead(req.Prefix, auth.PrefixEnd(req.Prefix))); err != nil {
		return nil, err
	}
	var after []byte
	if len(req.StartAfter) > 0 {
		after = req.StartAfter
	}
	for {
		rr, err := k.s.store.RangeBytes(req.Prefix, after, limit, k.s.cfg.MaxRangeBytes)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "range %q: %v", req.Prefix, err)
		}
		resp := &apipb.RangeResponse{Header: k.header(rr.Revision), More: rr.More}
		for _, kv := range rr.Entries {
			// KeyVal's own records (the members' addresses) are not data.
			if !replica.IsReservedKey(kv.Key) {
				resp.Kvs = append(resp.Kvs, &apipb.KeyValue{Key: kv.Key, Value: kv.Value, Version: kv.Version})
			}
		}
		if len(resp.Kvs) > 0 || !rr.More {
			if rr.ByteLimited {
				k.s.obs.m.rangesCut.Inc()
			}
			return resp, nil
		}
		after = rr.Entries[len(rr.Entries)-1].Key
	}
}

func (k *kvService) Status(ctx context.Context, _ *apipb.StatusRequest) (*apipb.StatusResponse, error) {
	var st core.Status
	if err := k.s.do(ctx, func() { st = k.s.rep.Node().Status() }); err != nil {
		return nil, toStatus(err)
	}
	resp := &apipb.StatusResponse{
		Header: k.header(k.s.store.Revision()), Id: uint64(st.ID), Role: st.Role.String(),
		Term: st.HardState.Term, Commit: st.HardState.Commit, Applied: k.s.appliedIndex(st), LeaderId: uint64(st.Lead),
		FirstIndex: st.FirstIndex, LastIndex: st.LastIndex, ClusterId: fmt.Sprintf("%016x", k.s.clusterID),
	}
	resp.Members = k.s.members(st)
	return resp, nil
}

// encodeCommand encodes a command other than a put (puts, the hot path,
// use kvstore.EncodePut). The messages are built here and cannot fail to
// encode.
func encodeCommand(cmd *kvpb.Command) []byte {
	data, _ := proto.Marshal(cmd)
	return data
}

// proposal is one write on its way through the event loop. Proposals are
// reused (proposals pool) and run is bound once, so handing a write to the
// loop allocates nothing.
type proposal struct {
	s    *Server
	id   uint64
	data []byte
	need uint64 // what the write may add to the store (Server.admitWrite)
	// ch carries both a refusal to propose (err says why) and the
	// outcome, so a write costs one hand-off into the loop and one back.
	ch  chan replica.Outcome
	err error
	wt  *writeTrace // nil unless tracing
	run func()
}

var proposals = sync.Pool{New: func() any {
	p := &proposal{ch: make(chan replica.Outcome, 1)}
	p.run = p.propose
	return p
}}

// propose runs on the loop.
func (p *proposal) propose() {
	err := p.s.admitWrite(p.need)
	if err == nil {
		err = p.s.rep.Propose(p.id, p.data)
	}
	if err != nil {
		p.err = err
		p.ch <- replica.Outcome{Err: errRefused}
		return
	}
	p.s.waiters[p.id] = p.ch
	p.s.obs.writeProposed(p.wt, p.id)
	p.s.tickClock()
}

// write proposes data (an encoded command) and waits for its outcome. If
// this node is not the leader it returns a client for the leader, and the
// caller forwards the request there (once: a forwarded request is not
// forwarded again).
func (s *Server) write(ctx context.Context, data []byte) (kvstore.Result, *grpc.ClientConn, error) {
	return s.writeSized(ctx, data, 0)
}

// writeSized is write for a put or compare-and-swap that may add need
// bytes to the store, which the storage quota may refuse. A write that
// finds no leader known (an election under way: a follower forgets a dead
// leader at once) waits for one, for a few election timeouts at most,
// rather than failing while the next leader is being elected.
func (s *Server) writeSized(ctx context.Context, data []byte, need uint64) (kvstore.Result, *grpc.ClientConn, error) {
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	res, conn, noLeader, err := s.proposeOnce(ctx, data, need)
	if !noLeader {
		return res, conn, err
	}
	wait, cancel := context.WithTimeout(ctx, leaderWaitElections*s.cfg.ElectionTimeout)
	defer cancel()
	if s.awaitLeaderChange(wait, 0) != nil {
		return res, conn, err
	}
	res, conn, _, err = s.proposeOnce(ctx, data, need)
	return res, conn, err
}

// leaderWaitElections is how many election timeouts a write waits for a
// leader when none is known: enough for an election that needs a second
// round, short enough that a member cut off from the majority answers
// "no leader" while the client can still try another.
const leaderWaitElections = 4

// proposeOnce is one attempt of writeSized. noLeader says the loop refused
// it because no leader is known.
func (s *Server) proposeOnce(ctx context.Context, data []byte, need uint64) (res kvstore.Result, conn *grpc.ClientConn, noLeader bool, err error) {
	if s.removed.Load() {
		return kvstore.Result{}, nil, false, removedStatus
	}
	p := proposals.Get().(*proposal)
	p.s, p.id, p.data, p.need, p.err = s, s.nextID.Add(1), data, need, nil
	p.wt = s.obs.writeStarted(ctx) // nil unless tracing
	select {
	case s.inbox <- p.run:
	case <-s.stopping:
		proposals.Put(p)
		return kvstore.Result{}, nil, false, toStatus(errStopping)
	case <-ctx.Done():
		proposals.Put(p)
		return kvstore.Result{}, nil, false, toStatus(ctx.Err())
	}
	// From here the loop may still hold p (a waiter to answer), so it goes
	// back to the pool only once its outcome has been taken.
	var out replica.Outcome
	select {
	case out = <-p.ch:
		s.obs.writeAnswered(p.wt, out.Err, p.err)
	case <-s.loopDone:
		s.obs.writeAbandoned(p.wt, errStopping)
		return kvstore.Result{}, nil, false, toStatus(errStopping)
	case <-ctx.Done():
		s.forget(p.id)
		s.obs.writeAbandoned(p.wt, ctx.Err())
		return kvstore.Result{}, nil, false, status.Errorf(codes.DeadlineExceeded,
			"no outcome before the deadline: the write may or may not be applied; retry with the same session and seq to find out")
	}
	perr := p.err
	p.s, p.data, p.err, p.wt = nil, nil, nil, nil
	proposals.Put(p)
	if out.Err == errRefused {
		var nl *core.ErrNotLeader
		if errors.As(perr, &nl) && nl.Leader != core.None && !forwarded(ctx) {
			if conn, err := s.peerConn(nl.Leader); err == nil {
				return kvstore.Result{}, conn, false, nil
			}
		}
		return kvstore.Result{}, nil, nl != nil && nl.Leader == core.None, toStatus(perr)
	}
	if out.Err != nil {
		return kvstore.Result{}, nil, false, toStatus(out.Err)
	}
	return out.Result, nil, false, resultError(out.Result)
}

// errRefused tells write that the loop refused to propose (perr says why).
var errRefused = errors.New("refused")

// errBehindRepair refuses a serializable read on a member whose state
// machine a disk repair took back to an older state (replica.BehindRepair):
// answering from it would let a client see time go backwards. Unavailable,
// so that clients try another member.
var errBehindRepair = status.Error(codes.Unavailable,
	"this member is catching up after repairing its disk and may hold older data than it served before; retry on another member, or read with linearizable consistency")

// readChecked waits for what a read needs (readFor), then checks that the
// caller may read what n names: a linearizable read against auth records
// as new as itself, a serializable one against this member's, as old as
// the data it reads (checkLocal).
func (s *Server) readChecked(ctx context.Context, serializable bool, n need) error {
	if err := s.readFor(ctx, serializable); err != nil {
		return err
	}
	var err error
	if serializable {
		_, _, err = s.checkLocal(ctx, n)
	} else {
		_, err = s.check(ctx, n, true)
	}
	return err
}

// readFor is the check before a read: a linearizable one waits for the
// read barrier, a serializable one only for localRead.
func (s *Server) readFor(ctx context.Context, serializable bool) error {
	if serializable {
		return s.localRead()
	}
	return s.readBarrier(ctx)
}

// localRead is the check before a serializable read, one this member
// answers from its own state without asking the leader.
func (s *Server) localRead() error {
	if s.behindRepair.Load() {
		return errBehindRepair
	}
	return nil
}

// readBarrier waits until this node's state machine reflects every write
// acknowledged before the call (ReadIndex, answered by the leader).
func (s *Server) readBarrier(ctx context.Context) (err error) {
	defer s.obs.readIndexDone(ctx, time.Now(), &err)
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	if s.removed.Load() {
		return removedStatus
	}
	ch := make(chan replica.Outcome, 1)
	id := s.nextID.Add(1)
	var rerr error
	if err := s.do(ctx, func() {
		if rerr = s.rep.Read(id); rerr == nil {
			s.waiters[id] = ch
		}
	}); err != nil {
		return toStatus(err)
	}
	if rerr != nil {
		return toStatus(rerr)
	}
	select {
	case out := <-ch:
		return toStatus(out.Err)
	case <-ctx.Done():
		s.forget(id)
		return status.Errorf(codes.DeadlineExceeded, "no leader confirmed the read before the deadline; retry")
	}
}

func (s *Server) forget(id uint64) {
	go func() {
		_ = s.do(context.Background(), func() {
			delete(s.waiters, id)
			s.rep.Cancel(id)
		})
	}()
}

// forwarded and the token checks read one key of the call's metadata:
// FromIncomingContext copies all of it, on every call.
func forwarded(ctx context.Context) bool {
	return len(metadata.ValueFromIncomingContext(ctx, forwardedKey)) > 0
}

// peerConn is a client connection to member id's peer port, where requests
// forwarded to a leader arrive.
func (s *Server) peerConn(id core.NodeID) (*grpc.ClientConn, error) {
	s.fwdMu.Lock()
	defer s.fwdMu.Unlock()
	if c, ok := s.forward[id]; ok {
		return c, nil
	}
	addr, ok := s.book.address(id)
	if !ok {
		return nil, fmt.Errorf("member %d has no known address", id)
	}
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	if s.cfg.PeerClientTLS != nil {
		creds = grpc.WithTransportCredentials(transport.DialCreds(s.cfg.PeerClientTLS))
	}
	opts := append(s.obs.forwardDialOptions(id), creds, grpc.WithUnaryInterceptor(s.markForwarded),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(s.cfg.MaxRequestBytes)))
	conn, err := grpc.NewClient(addr, append(opts, flowwindow.DialOptions()...)...)
	if err != nil {
		return nil, err
	}
	s.fwdConn = append(s.fwdConn, conn)
	s.forward[id] = conn
	return conn, nil
}

// markForwarded marks a call as forwarded and says whom it is for.
func (s *Server) markForwarded(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx = s.forwardCredentials(metadata.AppendToOutgoingContext(ctx, forwardedKey, "1"))
	return invoker(ctx, method, req, reply, cc, opts...)
}

// toStatus turns an internal error into a gRPC status a person can act on.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var nl *core.ErrNotLeader
	switch {
	case errors.As(err, &nl):
		if nl.Leader == core.None {
			return status.Error(codes.Unavailable, "no leader is known right now (an election may be under way); retry shortly")
		}
		return status.Errorf(codes.Unavailable, "this node is not the leader; the leader is node %d", nl.Leader)
	case errors.Is(err, core.ErrTransferring):
		return status.Error(codes.Unavailable, "leadership is being transferred; retry shortly")
	case errors.Is(err, replica.ErrLost):
		return status.Error(codes.Unavailable, "the leader changed before the write committed; it was not applied: retry")
	case errors.Is(err, replica.ErrReadAborted):
		return status.Error(codes.Unavailable, "the leader changed before the read was confirmed; retry")
	case errors.Is(err, replica.ErrUnknown):
		return status.Error(codes.Unavailable, "the write's outcome is unknown after a leader change; retry with the same session and seq")
	case errors.Is(err, errStopping):
		return status.Error(codes.Unavailable, stoppingMessage)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	}
	return status.Error(codes.Internal, err.Error())
}

// resultError maps a state machine refusal to a status.
func resultError(r kvstore.Result) error {
	if err := limitError(r); err != nil {
		return err
	}
	switch r.Status {
	case kvstore.StatusPermissionDenied:
		return status.Error(codes.PermissionDenied, r.Err)
	case kvstore.StatusOK, kvstore.StatusCASFailed:
		return nil
	case kvstore.StatusInvalid, kvstore.StatusMalformed:
		return status.Error(codes.InvalidArgument, r.Err)
	case kvstore.StatusSessionExpired, kvstore.StatusStaleDuplicate:
		// The store's text already names the refusal and its remedy.
		return status.Error(codes.FailedPrecondition, r.Err)
	}
	return status.Errorf(codes.Internal, "unexpected result %v: %s", r.Status, r.Err)
}
