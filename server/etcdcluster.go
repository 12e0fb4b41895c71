package server

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// clientAddrWait bounds how long MemberList waits for another member to
// tell its client address: a member that is down must not hold the list.
const clientAddrWait = 500 * time.Millisecond

// etcdCluster is etcd's Cluster service on KeyVal's membership (the
// native clusterService does the changes, the checks and the forwarding).
type etcdCluster struct {
	pb.UnimplementedClusterServer
	s      *Server
	native *clusterService
}

func (c *etcdCluster) MemberList(ctx context.Context, req *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if req.Linearizable {
		if err := c.s.readBarrier(ctx); err != nil {
			return nil, etcdError(err)
		}
	}
	resp, err := c.native.MemberList(ctx, &apipb.MemberListRequest{})
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.MemberListResponse{Header: c.s.etcdHeader(), Members: c.etcdMembers(ctx, resp.Members)}, nil
}

// etcdMembers describes members as etcd does. A member knows only its own
// client address, so the others are asked for theirs (in parallel, for at
// most clientAddrWait); one that does not answer is listed without.
func (c *etcdCluster) etcdMembers(ctx context.Context, ms []*apipb.Member) []*pb.Member {
	out := make([]*pb.Member, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		out[i] = &pb.Member{ID: m.Id, Name: strconv.FormatUint(m.Id, 10), IsLearner: m.Learner}
		// etcd's clients call a member without a name unstarted: here,
		// one that never answered the leader, nor answers now.
		unstarted := m.Match == 0 && core.NodeID(m.Id) != c.s.cfg.ID
		if m.PeerAddress != "" {
			out[i].PeerURLs = []string{etcdURL(m.PeerAddress, c.s.cfg.PeerServerTLS != nil)}
		}
		addr := m.ClientAddress
		if core.NodeID(m.Id) == c.s.cfg.ID {
			addr = c.s.ClientAddr() // the list may come from the leader
		}
		if addr == "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if a := c.clientAddress(ctx, core.NodeID(m.Id)); a != "" {
					out[i].ClientURLs = []string{etcdURL(a, c.s.cfg.ClientTLS != nil)}
				} else if unstarted {
					out[i].Name = ""
				}
			}()
		} else {
			out[i].ClientURLs = []string{etcdURL(addr, c.s.cfg.ClientTLS != nil)}
		}
	}
	wg.Wait()
	return out
}

// clientAddress asks member id (at its peer port) for its client address.
func (c *etcdCluster) clientAddress(ctx context.Context, id core.NodeID) string {
	conn, err := c.s.peerConn(id)
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, clientAddrWait)
	defer cancel()
	st, err := apipb.NewKVClient(conn).Status(ctx, &apipb.StatusRequest{})
	if err != nil {
		return ""
	}
	for _, m := range st.Members {
		if m.Id == uint64(id) {
			return m.ClientAddress
		}
	}
	return ""
}

// MemberAdd adds a learner. Asked for a voter, it also promotes the
// learner once it has caught up (promoteWhenReady): etcd's voter add
// counts the new member in the quorum before it has even started, while
// KeyVal's core promotes only a learner in sync with the leader, which
// keeps a cluster that adds a member as available as it was meanwhile.
func (c *etcdCluster) MemberAdd(ctx context.Context, req *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if len(req.PeerURLs) != 1 {
		return nil, status.Errorf(codes.InvalidArgument, "a KeyVal member has exactly one peer URL; got %d", len(req.PeerURLs))
	}
	addr, err := hostPort(req.PeerURLs[0])
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "peer URL: %v", err)
	}
	// Every member's id and address as of every acknowledged change, so
	// the new id is fresh and the address unused.
	if err := c.s.readBarrier(ctx); err != nil {
		return nil, etcdError(err)
	}
	for _, a := range c.s.book.snapshot() {
		if a == addr {
			return nil, rpctypes.ErrGRPCPeerURLExist
		}
	}
	if req.IsLearner {
		// As etcd's --max-learners, judged on the configuration after the
		// barrier (two adds at once may both pass it; etcd judges each
		// as it applies it).
		st, err := c.s.coreStatus(ctx)
		if err != nil {
			return nil, err
		}
		if len(st.Conf.Learners) >= c.s.cfg.MaxLearners {
			return nil, rpctypes.ErrGRPCTooManyLearners
		}
	}
	id := c.s.book.nextID()
	resp, err := c.native.MemberAddLearner(ctx, &apipb.MemberAddLearnerRequest{Id: uint64(id), PeerAddr: addr})
	if err != nil {
		return nil, memberError(err)
	}
	if !req.IsLearner {
		go c.promoteWhenReady(context.WithoutCancel(ctx), id)
	}
	members := c.etcdMembers(ctx, resp.Members)
	added := &pb.Member{ID: uint64(id), PeerURLs: req.PeerURLs, IsLearner: req.IsLearner}
	return &pb.MemberAddResponse{Header: c.s.etcdHeader(), Member: added, Members: members}, nil
}

// promoteWhenReady asks, every election timeout, for the promotion of
// learner id, on behalf of the caller of the MemberAdd whose context call
// carries (its values: who asked), until the promotion is made, the
// member is no longer a learner (promoted or removed by someone else), the
// caller's credentials are refused, or this server stops. The intent lives
// only here: should this member stop first, the new member stays a
// learner, as MemberList shows, for an operator to promote.
func (c *etcdCluster) promoteWhenReady(call context.Context, id core.NodeID) {
	tick := time.NewTicker(c.s.cfg.ElectionTimeout)
	defer tick.Stop()
	for {
		select {
		case <-c.s.stopping:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(call, c.s.cfg.RequestTimeout)
		var conf core.ConfState
		err := c.s.do(ctx, func() { conf = c.s.rep.Node().Conf() })
		if err == nil && !slices.Contains(conf.Learners, id) {
			cancel()
			return
		}
		_, err = c.native.MemberPromote(ctx, &apipb.MemberPromoteRequest{Id: uint64(id)})
		cancel()
		switch status.Code(err) {
		case codes.OK:
			c.s.log.Info("promoted the member added as a voter once it caught up", "member", uint64(id))
			return
		case codes.Unauthenticated, codes.PermissionDenied:
			c.s.log.Warn("gave up promoting a member added as a voter: the credentials of the call that added it are no longer accepted; promote it by hand",
				"member", uint64(id), "err", err)
			return
		}
	}
}

// nextID is an id no member has had: above every id in use or removed
// (ids are never reused).
func (b *addressBook) nextID() core.NodeID {
	b.mu.Lock()
	defer b.mu.Unlock()
	var top core.NodeID
	for id := range b.addrs {
		top = max(top, id)
	}
	for id := range b.removed {
		top = max(top, id)
	}
	return top + 1
}

func (c *etcdCluster) MemberRemove(ctx context.Context, req *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if _, err := c.member(ctx, req.ID); err != nil {
		return nil, err
	}
	resp, err := c.native.MemberRemove(ctx, &apipb.MemberRemoveRequest{Id: req.ID})
	if err != nil {
		return nil, memberError(err)
	}
	return &pb.MemberRemoveResponse{Header: c.s.etcdHeader(), Members: c.etcdMembers(ctx, resp.Members)}, nil
}

func (c *etcdCluster) MemberPromote(ctx context.Context, req *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	learner, err := c.member(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if !learner {
		return nil, rpctypes.ErrGRPCMemberNotLearner
	}
	resp, err := c.native.MemberPromote(ctx, &apipb.MemberPromoteRequest{Id: req.ID})
	if err != nil {
		return nil, memberError(err)
	}
	return &pb.MemberPromoteResponse{Header: c.s.etcdHeader(), Members: c.etcdMembers(ctx, resp.Members)}, nil
}

// MemberUpdate succeeds only when nothing changes: KeyVal keeps a member's
// peer address for life (it is in the configuration change that added it),
// so a member moves by being replaced.
func (c *etcdCluster) MemberUpdate(ctx context.Context, req *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if _, err := c.member(ctx, req.ID); err != nil {
		return nil, err
	}
	addr, _ := c.s.book.address(core.NodeID(req.ID))
	if len(req.PeerURLs) == 1 {
		if want, err := hostPort(req.PeerURLs[0]); err == nil && want == addr {
			list, err := c.MemberList(ctx, &pb.MemberListRequest{})
			if err != nil {
				return nil, err
			}
			return &pb.MemberUpdateResponse{Header: list.Header, Members: list.Members}, nil
		}
	}
	return nil, status.Errorf(codes.Unimplemented,
		"KeyVal cannot change member %d's peer URL (%s): add a learner at the new URL, promote it once it has caught up, then remove member %d",
		req.ID, etcdURL(addr, c.s.cfg.PeerServerTLS != nil), req.ID)
}

// member checks, against every acknowledged change, that id is a member,
// and reports whether it is a learner.
func (c *etcdCluster) member(ctx context.Context, id uint64) (learner bool, err error) {
	if err := c.s.readBarrier(ctx); err != nil {
		return false, etcdError(err)
	}
	st, err := c.s.coreStatus(ctx)
	if err != nil {
		return false, err
	}
	switch {
	case slices.Contains(st.Conf.Learners, core.NodeID(id)):
		return true, nil
	case slices.Contains(st.Conf.Voters, core.NodeID(id)):
		return false, nil
	}
	return false, rpctypes.ErrGRPCMemberNotFound
}

// memberError is etcdError for membership changes, whose refusals the
// leader may have sent back as text: a learner that is behind is what
// etcd's clients wait on.
func memberError(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition &&
		strings.Contains(st.Message(), core.ErrLearnerBehind.Error()) {
		return rpctypes.ErrGRPCLearnerNotReady
	}
	return etcdError(err)
}
