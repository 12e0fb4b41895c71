package server

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// etcdVersion is what etcd's Status reports as the server's version: the
// etcd API KeyVal speaks (clients compare it to decide what they may ask),
// not KeyVal's own version.
var etcdVersion = version.APIVersion + ".0"

// registerEtcd serves etcd's v3 gRPC services beside KeyVal's own (gRPC
// routes by service name: etcdserverpb.* and keyval.api.* do not meet).
// Each maps onto KeyVal's own service, which does the work, the checks
// and the forwarding to the leader; the etcd side translates messages and
// errors. Client port only, but for KV, which the peer port serves too:
// a follower forwards etcd writes to the leader as they came.
func (s *Server) registerEtcd(srv *grpc.Server, auth *authService) {
	pb.RegisterKVServer(srv, &etcdKV{s: s})
	pb.RegisterClusterServer(srv, &etcdCluster{s: s, native: &clusterService{s: s}})
	pb.RegisterMaintenanceServer(srv, &etcdMaintenance{s: s, native: &maintenanceService{s: s}})
	pb.RegisterAuthServer(srv, &etcdAuth{s: s, native: auth})
	pb.RegisterWatchServer(srv, &etcdWatch{s: s})
	pb.RegisterLeaseServer(srv, &etcdLease{s: s})
}

// etcdHeader is the header of every etcd response: the revision is the
// store's as this member has applied it.
func (s *Server) etcdHeader() *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: s.clusterID, MemberId: uint64(s.cfg.ID),
		Revision: int64(s.store.Revision()), RaftTerm: s.term.Load()}
}

// etcdHeaderAt is etcdHeader with the revision an answer was made at.
func (s *Server) etcdHeaderAt(rev uint64) *pb.ResponseHeader {
	h := s.etcdHeader()
	h.Revision = int64(rev)
	return h
}

// noLeaderMessage is how KeyVal says that no leader is known, which etcd
// clients must see as etcd's ErrNoLeader to wait and retry as they do.
var noLeaderMessage = status.Convert(toStatus(&core.ErrNotLeader{Leader: core.None})).Message()

// etcdError turns a status of KeyVal's into the etcd error that etcd's
// clients recognise (they match the code and the exact message), where
// there is one; other statuses keep KeyVal's message, which says what to do.
func etcdError(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	switch {
	case st.Code() == codes.PermissionDenied && strings.HasSuffix(st.Message(), auth.NoUser):
		return rpctypes.ErrGRPCUserEmpty
	case st.Code() == codes.PermissionDenied:
		return rpctypes.ErrGRPCPermissionDenied
	case st.Code() == codes.Unauthenticated:
		// clientv3 logs in again once on this error, then retries.
		return rpctypes.ErrGRPCInvalidAuthToken
	case st.Code() == codes.Unavailable && st.Message() == noLeaderMessage:
		return rpctypes.ErrGRPCNoLeader
	case st.Code() == codes.ResourceExhausted && strings.HasPrefix(st.Message(), noSpacePrefix):
		return rpctypes.ErrGRPCNoSpace
	}
	return err
}

// coreStatus reads the core's status on the event loop.
func (s *Server) coreStatus(ctx context.Context) (core.Status, error) {
	var st core.Status
	if err := s.do(ctx, func() { st = s.rep.Node().Status() }); err != nil {
		return core.Status{}, etcdError(toStatus(err))
	}
	return st, nil
}

// appliedIndex is the applied index a status reports: the state
// machine's. The core counts a snapshot's index as applied as soon as it
// takes the snapshot in, while the store is still being restored from it
// (and the store runs a batch ahead of the core otherwise).
func (s *Server) appliedIndex(st core.Status) uint64 {
	return min(st.Applied, s.store.AppliedIndex())
}

// etcdURL is an address as etcd writes it, with the scheme the port uses.
func etcdURL(addr string, tls bool) string {
	if tls {
		return "https://" + addr
	}
	return "http://" + addr
}

// hostPort is the address in an etcd URL ("http://127.0.0.1:2380").
func hostPort(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Port() == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("%q is not a URL of the form http://host:port", raw)
	}
	return u.Host, nil
}
