package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// etcdKV is etcd's KV service over the store's history (kvstore/etcd.go).
// Put, DeleteRange and Txn are one command each, an etcd transaction,
// proposed like any write (and forwarded to the leader by a follower);
// Range reads the applied state after a ReadIndex barrier unless it asks to
// be serializable; Compact is a command too. It is served on both ports:
// followers forward writes to the leader's peer port.
type etcdKV struct {
	pb.UnimplementedKVServer
	s *Server
}

func (k *etcdKV) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	if len(req.Key) == 0 {
		return nil, rpctypes.ErrGRPCEmptyKey
	}
	if err := checkSort(req); err != nil {
		return nil, err
	}
	if err := k.s.readChecked(ctx, req.Serializable, needRead(req.Key, req.RangeEnd)); err != nil {
		return nil, etcdError(err)
	}
	resp, err := k.s.store.EtcdRange(req, k.s.cfg.MaxRangeBytes)
	if err != nil {
		return nil, etcdReadError(err, "range %q", req.Key)
	}
	if req.Limit <= 0 && resp.More {
		// Only the byte budget cuts an answer without a limit. etcd
		// would send it whole, and a caller that set no limit need not
		// look at more (etcdctl get does not): part of the range would
		// pass for all of it. Refused instead, saying how to read it.
		k.s.obs.m.rangesRefused.Inc()
		return nil, status.Errorf(codes.ResourceExhausted,
			"range %q holds more than --max-range-bytes (%d bytes) of keys and values: read it in pages with a limit (etcdctl get --limit), each from the key after the last one read, or raise --max-range-bytes",
			req.Key, k.s.cfg.MaxRangeBytes)
	}
	resp.Header = k.s.etcdHeaderAt(uint64(resp.Header.Revision))
	return resp, nil
}

// etcdReadError is etcd's error for a read of the store's history refused
// for its revision (compacted, future), else Internal with what was read.
func etcdReadError(err error, format string, args ...any) error {
	var re *kvstore.RangeError
	if errors.As(err, &re) {
		return etcdStatus(re.Status, re.Msg)
	}
	return status.Errorf(codes.Internal, "%s: %v", fmt.Sprintf(format, args...), err)
}

// checkSort refuses the sort options etcd refuses.
func checkSort(req *pb.RangeRequest) error {
	if _, ok := pb.RangeRequest_SortOrder_name[int32(req.SortOrder)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(req.SortTarget)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

func (k *etcdKV) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	resp, err := k.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: req}}}})
	if err != nil {
		return nil, err
	}
	out := resp.Responses[0].GetResponsePut()
	out.Header = resp.Header
	return out, nil
}

func (k *etcdKV) DeleteRange(ctx context.Context, req *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	resp, err := k.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: req}}}})
	if err != nil {
		return nil, err
	}
	out := resp.Responses[0].GetResponseDeleteRange()
	out.Header = resp.Header
	return out, nil
}

// Txn checks req as etcd does before proposing it, proposes it, and
// answers with its outcome; a follower hands it to the leader. A Put or a
// DeleteRange is a transaction of one operation, forwarded as one too.
func (k *etcdKV) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := k.checkTxn(req, k.s.cfg.MaxTxnOps); err != nil {
		return nil, err
	}
	user, err := k.s.require(ctx, needUser)
	if err != nil {
		return nil, etcdError(err)
	}
	data, err := kvstore.EncodeEtcdTxn(req, user)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	res, resp, answered, err := proposeEtcd(ctx, k.s, data, txnNeed(req), func(leader *grpc.ClientConn) (*pb.TxnResponse, error) {
		return pb.NewKVClient(leader).Txn(ctx, req)
	})
	if answered {
		return resp, err
	}
	if err != nil {
		return nil, k.resultError(res, err)
	}
	if res.Etcd == nil {
		return nil, status.Errorf(codes.Internal, "the transaction was applied (%v) but left no answer", res.Status)
	}
	res.Etcd.Header = k.s.etcdHeaderAt(res.Revision)
	return res.Etcd, nil
}

// checkTxn applies the server's limits, which the state machine does not
// know: operations per transaction (--max-txn-ops), a budget nested
// transactions share as in etcd (each gets what its enclosing level leaves
// over), and key and value sizes (--max-key-bytes, --max-value-bytes); and
// etcd's checks of a put on both branches, chosen or not.
func (k *etcdKV) checkTxn(req *pb.TxnRequest, maxOps int) error {
	ops := max(len(req.Compare), len(req.Success), len(req.Failure))
	if ops > maxOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range req.Compare {
		if len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, op := range append(append([]*pb.RequestOp(nil), req.Success...), req.Failure...) {
		var key, value []byte
		switch o := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			key = o.RequestRange.Key
			if err := checkSort(o.RequestRange); err != nil {
				return err
			}
		case *pb.RequestOp_RequestPut:
			key, value = o.RequestPut.Key, o.RequestPut.Value
			if err := checkPut(o.RequestPut); err != nil {
				return err
			}
		case *pb.RequestOp_RequestDeleteRange:
			key = o.RequestDeleteRange.Key
		case *pb.RequestOp_RequestTxn:
			if err := k.checkTxn(o.RequestTxn, maxOps-ops); err != nil {
				return err
			}
			continue
		default:
			return status.Error(codes.InvalidArgument, "etcdserver: a transaction operation has no request")
		}
		if len(key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
		if len(key) > k.s.cfg.MaxKeyBytes || len(value) > k.s.cfg.MaxValueBytes {
			return rpctypes.ErrGRPCRequestTooLarge
		}
	}
	return nil
}

// checkPut refuses a put that both keeps and gives the value or lease.
func checkPut(p *pb.PutRequest) error {
	if p.IgnoreValue && len(p.Value) != 0 {
		return rpctypes.ErrGRPCValueProvided
	}
	if p.IgnoreLease && p.Lease != 0 {
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

// txnNeed is what a transaction's puts may add to the store, for the
// storage quota.
func txnNeed(req *pb.TxnRequest) uint64 {
	var n uint64
	for _, op := range append(append([]*pb.RequestOp(nil), req.Success...), req.Failure...) {
		switch o := op.Request.(type) {
		case *pb.RequestOp_RequestPut:
			n += kvstore.KeyBytes(len(o.RequestPut.Key), len(o.RequestPut.Value))
		case *pb.RequestOp_RequestTxn:
			n += txnNeed(o.RequestTxn)
		}
	}
	return n
}

func (k *etcdKV) Compact(ctx context.Context, req *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	user, err := k.s.require(ctx, needUser)
	if err != nil {
		return nil, etcdError(err)
	}
	if req.Revision < 0 {
		return nil, rpctypes.ErrGRPCCompacted
	}
	res, leader, err := k.s.write(ctx, kvstore.EncodeCompact(uint64(req.Revision), user))
	if leader != nil {
		return pb.NewKVClient(leader).Compact(ctx, req)
	}
	if err != nil {
		return nil, k.resultError(res, err)
	}
	// The command moved the compacted revision; this member's store
	// deletes what it dooms after it (kvstore's boltcompact.go), which
	// Physical waits for, as etcd's does.
	if req.Physical {
		if err := k.s.store.FinishCompaction(ctx); err != nil {
			return nil, etcdError(err)
		}
	}
	return &pb.CompactionResponse{Header: k.s.etcdHeaderAt(res.Revision)}, nil
}

// resultError gives a refusal of the state machine etcd's error for it.
func (k *etcdKV) resultError(res kvstore.Result, err error) error {
	if e := etcdStatus(res.Status, res.Err); e != nil {
		return e
	}
	return etcdError(err)
}

// etcdStatus is the etcd error for a store status that has one, or nil.
func etcdStatus(s kvstore.Status, msg string) error {
	switch s {
	case kvstore.StatusKeyNotFound:
		return rpctypes.ErrGRPCKeyNotFound
	case kvstore.StatusLeaseNotFound:
		return rpctypes.ErrGRPCLeaseNotFound
	case kvstore.StatusCompacted:
		return rpctypes.ErrGRPCCompacted
	case kvstore.StatusFutureRevision:
		return rpctypes.ErrGRPCFutureRev
	case kvstore.StatusNoSpace:
		return rpctypes.ErrGRPCNoSpace
	case kvstore.StatusPermissionDenied:
		return rpctypes.ErrGRPCPermissionDenied
	case kvstore.StatusInvalid, kvstore.StatusMalformed:
		// The store words etcd's own refusals as etcd does.
		return status.Error(codes.InvalidArgument, msg)
	}
	return nil
}

// proposeEtcd proposes data (a write that may add need bytes to the
// store, for the quota), or on a follower hands the call to the leader
// with forward. A leader that could not be reached never had it, so it is
// tried again once another leader is known (the old one may just have
// died) rather than answering with the dead leader's address; a
// connection that broke with the call on it leaves the outcome unknown,
// etcd's ErrLeaderChanged. answered says the leader answered a forwarded
// call: fwd and err are its answer, etcd's already.
func proposeEtcd[T any](ctx context.Context, s *Server, data []byte, need uint64, forward func(*grpc.ClientConn) (T, error)) (res kvstore.Result, fwd T, answered bool, err error) {
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	res, leader, err := s.writeSized(ctx, data, need)
	for leader != nil {
		before := s.leader.Load()
		fwd, err = forward(leader)
		if err != nil && lostLeader(err) {
			return kvstore.Result{}, fwd, true, rpctypes.ErrGRPCLeaderChanged
		}
		if err == nil || !unreachable(err) {
			return kvstore.Result{}, fwd, true, err
		}
		if err := s.awaitLeaderChange(ctx, before); err != nil {
			return kvstore.Result{}, fwd, true, rpctypes.ErrGRPCNoLeader
		}
		res, leader, err = s.writeSized(ctx, data, need)
	}
	return res, fwd, false, err
}

// unreachable reports whether a forwarded call failed because the leader
// could not be reached at all (gRPC could not connect), so that it cannot
// have been applied.
func unreachable(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable &&
		(strings.Contains(st.Message(), "connection refused") || strings.Contains(st.Message(), "Error while dialing"))
}

// lostLeader reports whether a forwarded call failed because the
// connection to the leader broke while the call was on it.
func lostLeader(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable &&
		(strings.Contains(st.Message(), "error reading from server") || strings.Contains(st.Message(), "transport is closing"))
}

// awaitLeaderChange waits until this node knows a leader other than
// before, or ctx ends.
func (s *Server) awaitLeaderChange(ctx context.Context, before uint64) error {
	for {
		// The channel first: a change after it is taken closes it.
		s.leaderMu.Lock()
		changed := s.leaderChanged
		s.leaderMu.Unlock()
		if l := s.leader.Load(); l != before && l != 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopping:
			return errStopping
		case <-changed:
		}
	}
}
