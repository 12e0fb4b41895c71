package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// etcdLease is etcd's Lease service. Grant and Revoke are commands,
// proposed like any write (a follower forwards them to the leader); the
// calls that need the leader's clock (KeepAlive, TimeToLive) are answered
// by the leader, a follower forwarding each to the leader's peer port,
// where this service is served too.
type etcdLease struct {
	pb.UnimplementedLeaseServer
	s *Server
}

// maxIDPicks bounds the ids the server draws for a grant that named none;
// a clash of random 63-bit ids is all but impossible.
const maxIDPicks = 8

func (e *etcdLease) LeaseGrant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if req.TTL > maxLeaseTTL {
		return nil, rpctypes.ErrGRPCLeaseTTLTooLarge
	}
	user, err := e.s.require(ctx, needUser)
	if err != nil {
		return nil, etcdError(err)
	}
	// No lease is granted while the NOSPACE alarm is raised, as etcd
	// refuses it: a lease is a record past the quota. Judged on the
	// alarms this member has applied, before the log, as the quota is:
	// a grant that races the alarm goes through. (At apply, a member of
	// an older build would still grant what this one refused.)
	if e.s.store.Usage().Raised(kvstore.AlarmNoSpace) {
		return nil, rpctypes.ErrGRPCNoSpace
	}
	ttl := max(req.TTL, e.s.minLeaseTTL())
	for range maxIDPicks {
		id := req.ID
		if id == 0 {
			id = rand.Int64N(1<<63-1) + 1
		}
		res, fwd, answered, err := proposeEtcd(ctx, e.s, kvstore.EncodeLeaseGrant(id, ttl, user), 0,
			func(c *grpc.ClientConn) (*pb.LeaseGrantResponse, error) {
				return pb.NewLeaseClient(c).LeaseGrant(ctx, req)
			})
		switch {
		case answered:
			return fwd, err
		case err == nil:
			e.s.lessor.granted(id, ttl)
			return &pb.LeaseGrantResponse{Header: e.s.etcdHeaderAt(res.Revision), ID: id, TTL: ttl}, nil
		case res.Status == kvstore.StatusLeaseExists && req.ID == 0:
			continue
		case res.Status == kvstore.StatusLeaseExists:
			return nil, rpctypes.ErrGRPCLeaseExist
		default:
			return nil, e.refused(res, err)
		}
	}
	return nil, status.Errorf(codes.Internal, "%d random lease ids in a row were taken", maxIDPicks)
}

func (e *etcdLease) LeaseRevoke(ctx context.Context, req *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	user, err := e.s.require(ctx, needUser)
	if err != nil {
		return nil, etcdError(err)
	}
	res, fwd, answered, err := proposeEtcd(ctx, e.s, kvstore.EncodeLeaseRevoke(req.ID, user), 0,
		func(c *grpc.ClientConn) (*pb.LeaseRevokeResponse, error) {
			return pb.NewLeaseClient(c).LeaseRevoke(ctx, req)
		})
	switch {
	case answered:
		return fwd, err
	case err != nil:
		return nil, e.refused(res, err)
	}
	return &pb.LeaseRevokeResponse{Header: e.s.etcdHeaderAt(res.Revision)}, nil
}

// refused is etcd's error for a refused lease command, as for KV's.
func (e *etcdLease) refused(res kvstore.Result, err error) error {
	return (&etcdKV{s: e.s}).resultError(res, err)
}

// errLeaseStopping ends the keepalive streams of a member that stops:
// clientv3 then opens one to another member.
var errLeaseStopping = status.Error(codes.Unavailable, "this member is stopping: keep the lease alive through another member")

// LeaseKeepAlive answers each request in turn; only this goroutine writes
// to the stream, so it may end the stream at once when the member stops.
func (e *etcdLease) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	reqs := make(chan *pb.LeaseKeepAliveRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	for {
		select {
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-e.s.draining:
			return errLeaseStopping
		case req := <-reqs:
			// The header is taken before the renewal, as etcd does: its
			// revision is never one at which the lease was already revoked.
			resp := &pb.LeaseKeepAliveResponse{ID: req.ID, Header: e.s.etcdHeader()}
			var err error
			if resp.TTL, err = e.s.renewLease(stream.Context(), req.ID); err != nil {
				return err
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

// renewLease renews lease id at the leader and returns its TTL, or 0 if
// it does not exist (or has expired), as etcd answers.
func (s *Server) renewLease(ctx context.Context, id int64) (ttl int64, err error) {
	err = s.onLeader(ctx, func(ctx context.Context, term uint64) error {
		from := time.Now()
		info, found, err := s.leaderLease(ctx, id, term)
		if err != nil || !found {
			return err
		}
		if err := s.requireLeaseKeys(ctx, kvpb.AuthPermission_TYPE_WRITE, info); err != nil {
			return err
		}
		if found, err = s.lessor.renew(info, term, from); found {
			ttl = info.TTL
		}
		return err
	}, func(ctx context.Context, c *grpc.ClientConn) (err error) {
		ttl, err = s.renewAt(ctx, c, id)
		return err
	})
	return ttl, err
}

// renewAt forwards one keepalive to the leader, over a stream of its own
// so that each carries the caller's credentials afresh.
func (s *Server) renewAt(ctx context.Context, c *grpc.ClientConn, id int64) (int64, error) {
	ctx, cancel := context.WithCancel(s.forwardCredentials(metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")))
	defer cancel()
	stream, err := pb.NewLeaseClient(c).LeaseKeepAlive(ctx)
	if err != nil {
		return 0, err
	}
	if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
		return 0, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return 0, err
	}
	return resp.TTL, stream.CloseSend()
}

// leaderLease reads lease id as the leader of term, after a read barrier:
// every grant and revoke committed before the call is applied, and the
// leadership is confirmed by a quorum after the call arrived.
func (s *Server) leaderLease(ctx context.Context, id int64, term uint64) (kvstore.LeaseInfo, bool, error) {
	if err := s.readBarrier(ctx); err != nil {
		if t, ok := s.lessor.lead(); !ok || t != term {
			return kvstore.LeaseInfo{}, false, errNotLeading
		}
		return kvstore.LeaseInfo{}, false, etcdError(err)
	}
	if t, ok := s.lessor.lead(); !ok || t != term {
		return kvstore.LeaseInfo{}, false, errNotLeading
	}
	info, found, err := s.store.Lease(id)
	if err != nil {
		return kvstore.LeaseInfo{}, false, status.Errorf(codes.Internal, "read lease %d: %v", id, err)
	}
	return info, found, nil
}

// onLeader runs here if this member leads, else there against the
// leader's peer port, retrying while the leadership moves until the
// request's time is up. A forwarded call is not forwarded again.
func (s *Server) onLeader(ctx context.Context, here func(ctx context.Context, term uint64) error, there func(context.Context, *grpc.ClientConn) error) error {
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		err := s.leaderAttempt(ctx, here, there)
		if !errors.Is(err, errNotLeading) && !errors.Is(err, rpctypes.ErrGRPCNotLeader) && !unreachable(err) {
			return err
		}
		if forwarded(ctx) {
			return rpctypes.ErrGRPCNotLeader
		}
		select {
		case <-ctx.Done():
			return rpctypes.ErrGRPCNoLeader
		case <-s.stopping:
			return toStatus(errStopping)
		case <-t.C:
		}
	}
}

func (s *Server) leaderAttempt(ctx context.Context, here func(ctx context.Context, term uint64) error, there func(context.Context, *grpc.ClientConn) error) error {
	if term, ok := s.lessor.lead(); ok {
		return here(ctx, term)
	}
	lead := core.NodeID(s.leader.Load())
	if lead == core.None || lead == s.cfg.ID || forwarded(ctx) {
		return errNotLeading
	}
	c, err := s.peerConn(lead)
	if err != nil {
		return fmt.Errorf("%w: %w", errNotLeading, err)
	}
	return there(ctx, c)
}

// requireLeaseKeys checks, once auth is on, that the caller may act on
// every key the leases hold (root may always), as etcd does for keepalives
// (write), TimeToLive with keys and Leases (read).
func (s *Server) requireLeaseKeys(ctx context.Context, perm kvpb.AuthPermission_Type, infos ...kvstore.LeaseInfo) error {
	user, err := s.require(ctx, needUser)
	if err != nil || user == "" {
		return etcdError(err)
	}
	r := s.records()
	if auth.RequireRoot(r, user) == nil {
		return nil
	}
	for _, in := range infos {
		for _, k := range in.Keys {
			if err := auth.Allowed(r, user, perm, k, nil); err != nil {
				return etcdError(authStatus(err, codes.PermissionDenied))
			}
		}
	}
	return nil
}

func (e *etcdLease) LeaseTimeToLive(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if _, err := e.s.require(ctx, needUser); err != nil {
		return nil, etcdError(err)
	}
	var resp *pb.LeaseTimeToLiveResponse
	err := e.s.onLeader(ctx, func(ctx context.Context, term uint64) error {
		info, found, err := e.s.leaderLease(ctx, req.ID, term)
		if err != nil {
			return err
		}
		if !found {
			resp = &pb.LeaseTimeToLiveResponse{Header: e.s.etcdHeader(), ID: req.ID, TTL: -1}
			return nil
		}
		if req.Keys {
			if err := e.s.requireLeaseKeys(ctx, kvpb.AuthPermission_TYPE_READ, info); err != nil {
				return err
			}
		}
		left, err := e.s.lessor.remaining(info, term)
		if err != nil {
			return err
		}
		resp = &pb.LeaseTimeToLiveResponse{Header: e.s.etcdHeader(), ID: req.ID, TTL: int64(left.Seconds()), GrantedTTL: info.TTL}
		if req.Keys {
			resp.Keys = info.Keys
		}
		return nil
	}, func(ctx context.Context, c *grpc.ClientConn) (err error) {
		resp, err = pb.NewLeaseClient(c).LeaseTimeToLive(ctx, req)
		return err
	})
	return resp, err
}

// LeaseLeases lists the leases this member has applied after a read
// barrier, so a lease granted before the call is listed.
func (e *etcdLease) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	if err := e.s.readBarrier(ctx); err != nil {
		return nil, etcdError(err)
	}
	infos, err := e.s.store.Leases()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read the leases: %v", err)
	}
	if err := e.s.requireLeaseKeys(ctx, kvpb.AuthPermission_TYPE_READ, infos...); err != nil {
		return nil, err
	}
	resp := &pb.LeaseLeasesResponse{Header: e.s.etcdHeader(), Leases: make([]*pb.LeaseStatus, len(infos))}
	for i, in := range infos {
		resp.Leases[i] = &pb.LeaseStatus{ID: in.ID}
	}
	return resp, nil
}
