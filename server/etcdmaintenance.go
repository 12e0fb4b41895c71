package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/api/backup"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// etcdMaintenance is etcd's Maintenance service on KeyVal's status,
// alarms, leadership transfer and backups.
type etcdMaintenance struct {
	pb.UnimplementedMaintenanceServer
	s      *Server
	native *maintenanceService
}

func (m *etcdMaintenance) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	s := m.s
	st, err := s.coreStatus(ctx)
	if err != nil {
		return nil, err
	}
	usage := s.store.Usage()
	resp := &pb.StatusResponse{
		Header: s.etcdHeader(), Version: etcdVersion, Leader: uint64(st.Lead),
		RaftIndex: st.HardState.Commit, RaftTerm: st.HardState.Term, RaftAppliedIndex: s.appliedIndex(st),
		DbSizeQuota: s.cfg.QuotaBackendBytes,
		IsLearner:   slices.Contains(st.Conf.Learners, s.cfg.ID),
	}
	if resp.DbSize, resp.DbSizeInUse, err = s.store.Sizes(); err != nil {
		resp.Errors = append(resp.Errors, fmt.Sprintf("size of the state database: %v", err))
	}
	for _, a := range usage.Alarms {
		resp.Errors = append(resp.Errors, fmt.Sprintf("memberID:%d alarm:%s", a.MemberID, etcdAlarmType(a.Type)))
	}
	if st.Lead == core.None {
		resp.Errors = append(resp.Errors, rpctypes.ErrNoLeader.Error()) // as etcd says it
	}
	return resp, nil
}

// Alarm lists, raises and disarms the one alarm KeyVal has, NOSPACE (the
// storage quota's). Root only once auth is on, like every alarm call.
func (m *etcdMaintenance) Alarm(ctx context.Context, req *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	if req.Action != pb.AlarmRequest_GET && req.Alarm != pb.AlarmType_NOSPACE {
		return nil, status.Errorf(codes.InvalidArgument, "KeyVal has no %v alarm: the only alarm is NOSPACE", req.Alarm)
	}
	switch req.Action {
	case pb.AlarmRequest_GET:
		list, err := m.native.alarmList(ctx, needUser)
		if err != nil {
			return nil, etcdError(err)
		}
		resp := &pb.AlarmResponse{Header: m.s.etcdHeader()}
		for _, a := range list.Alarms {
			if t := etcdAlarmType(kvstore.AlarmType(a.Type)); req.Alarm == pb.AlarmType_NONE || req.Alarm == t {
				resp.Alarms = append(resp.Alarms, &pb.AlarmMember{MemberID: a.MemberId, Alarm: t})
			}
		}
		return resp, nil
	case pb.AlarmRequest_ACTIVATE:
		return m.raise(ctx, req)
	case pb.AlarmRequest_DEACTIVATE:
		resp, err := m.native.AlarmDisarm(ctx, &apipb.AlarmDisarmRequest{Type: apipb.AlarmType_ALARM_TYPE_NOSPACE})
		if err != nil {
			return nil, etcdError(err)
		}
		out := &pb.AlarmResponse{Header: m.s.etcdHeader()}
		if d := resp.Disarmed; d != nil {
			out.Alarms = []*pb.AlarmMember{{MemberID: d.MemberId, Alarm: pb.AlarmType_NOSPACE}}
		}
		return out, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "unknown alarm action %v", req.Action)
}

// raise raises NOSPACE by hand, as etcd allows: writes are refused until
// it is disarmed. Only the leader proposes it: a follower forwards the
// request to etcd's Maintenance on the leader's peer port, naming itself
// as the member unless the caller named one.
func (m *etcdMaintenance) raise(ctx context.Context, req *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	s := m.s
	if err := s.requireFresh(ctx, needRoot); err != nil {
		return nil, etcdError(err)
	}
	member := req.MemberID
	if member == 0 {
		member = uint64(s.cfg.ID)
	}
	_, leader, err := s.write(ctx, kvstore.EncodeAlarm(kvstore.AlarmNoSpace, false, member))
	if leader != nil {
		return pb.NewMaintenanceClient(leader).Alarm(ctx, &pb.AlarmRequest{Action: req.Action, Alarm: req.Alarm, MemberID: member})
	}
	if err != nil {
		return nil, etcdError(err)
	}
	s.log.Warn("alarm raised by a client", "type", "NOSPACE", "member", member)
	return &pb.AlarmResponse{Header: s.etcdHeader(), Alarms: []*pb.AlarmMember{{MemberID: member, Alarm: pb.AlarmType_NOSPACE}}}, nil
}

func etcdAlarmType(t kvstore.AlarmType) pb.AlarmType {
	if t == kvstore.AlarmNoSpace {
		return pb.AlarmType_NOSPACE
	}
	return pb.AlarmType_NONE
}

// Defragment rewrites this member's state database into a new file of
// only the pages in use (kvstore's Bolt.Defragment), as etcd's does: the
// member applies nothing meanwhile, and serves reads from the old file.
func (m *etcdMaintenance) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if _, err := m.s.require(ctx, needRoot); err != nil {
		return nil, etcdError(err)
	}
	start := time.Now()
	if err := m.s.store.Defragment(); err != nil {
		m.s.log.Error("defragment failed", "err", err)
		return nil, status.Errorf(codes.Internal, "defragment: %v", err)
	}
	m.s.log.Info("defragmented the state database", "took", time.Since(start).Round(time.Millisecond))
	return &pb.DefragmentResponse{Header: m.s.etcdHeader()}, nil
}

// MoveLeader hands leadership to a voter. Like etcd, only the leader takes
// it; it answers once the target leads, or ErrTimeout.
func (m *etcdMaintenance) MoveLeader(ctx context.Context, req *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	s := m.s
	if err := s.requireFresh(ctx, needRoot); err != nil {
		return nil, etcdError(err)
	}
	target := core.NodeID(req.TargetID)
	var leading bool
	var terr error
	if err := s.do(ctx, func() {
		if leading = s.rep.Node().SoftState().Role == core.Leader; leading {
			terr = s.rep.Node().TransferLeadership(target)
		}
	}); err != nil {
		return nil, etcdError(toStatus(err))
	}
	switch {
	case !leading:
		return nil, rpctypes.ErrGRPCNotLeader
	case errors.Is(terr, core.ErrUnknownPeer):
		return nil, rpctypes.ErrGRPCBadLeaderTransferee
	case terr != nil:
		return nil, etcdError(toStatus(terr))
	}
	wait, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	tick := time.NewTicker(s.cfg.HeartbeatInterval)
	defer tick.Stop()
	for core.NodeID(s.leader.Load()) != target {
		select {
		case <-wait.Done():
			return nil, rpctypes.ErrGRPCTimeout
		case <-tick.C: // the loop publishes the leader it sees (noteState)
		}
	}
	return &pb.MoveLeaderResponse{Header: s.etcdHeader()}, nil
}

// Snapshot streams a KeyVal backup file (api/backup), whole: `etcdctl
// snapshot save` writes exactly the bytes it gets, so the file it saves
// is one keyvald --restore takes. It is not a bbolt file: etcdutl cannot
// restore it. etcdctl takes a file for one with a checksum when its
// length is 32 more than a multiple of 512: the metadata is padded so.
func (m *etcdMaintenance) Snapshot(_ *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	sink := &etcdBackup{stream: stream, s: m.s, h: sha256.New()}
	return etcdError(m.s.serveBackup(stream.Context(), sink))
}

// etcdBackup sends a backup as etcd's Snapshot messages: the file's bytes
// as blobs, its SHA-256 (of every byte before it) in the last one.
type etcdBackup struct {
	stream    pb.Maintenance_SnapshotServer
	s         *Server
	h         hash.Hash
	remaining uint64
}

func (e *etcdBackup) begin(info *apipb.SnapshotInfo) error {
	backup.PadTo(info, 512)
	head, err := backup.Header(info)
	if err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	e.remaining = uint64(len(head)) + info.Size + backup.SumSize
	hdr := e.s.etcdHeader()
	hdr.Revision = int64(info.Revision)
	return e.send(head, hdr)
}

func (e *etcdBackup) data(chunk []byte) error { return e.send(chunk, nil) }

func (e *etcdBackup) end() error { return e.send(e.h.Sum(nil), nil) }

func (e *etcdBackup) send(blob []byte, hdr *pb.ResponseHeader) error {
	e.h.Write(blob)
	e.remaining -= uint64(len(blob))
	return e.stream.Send(&pb.SnapshotResponse{Header: hdr, Blob: blob, RemainingBytes: e.remaining, Version: etcdVersion})
}

func (m *etcdMaintenance) Hash(context.Context, *pb.HashRequest) (*pb.HashResponse, error) {
	return nil, status.Error(codes.Unimplemented,
		"KeyVal does not implement etcd's Hash (a hash of the bbolt file, which differs between members in KeyVal); HashKV is the consistency check")
}

// HashKV hashes this member's own history as of a revision (0: its
// current one), with no read barrier: the point, as with etcd, is to
// compare what each member holds (etcdctl endpoint hashkv --cluster), so
// a member answers from its applied state, never the leader's. Root only
// once auth is on, as in etcd.
func (m *etcdMaintenance) HashKV(ctx context.Context, req *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if _, err := m.s.require(ctx, needRoot); err != nil {
		return nil, etcdError(err)
	}
	h, err := m.s.store.HashKV(req.Revision)
	if err != nil {
		return nil, etcdReadError(err, "hash the history at revision %d", req.Revision)
	}
	compacted := int64(h.CompactedRevision)
	if compacted == 0 {
		compacted = -1 // never compacted, as etcd says it
	}
	return &pb.HashKVResponse{Header: m.s.etcdHeader(), Hash: h.Hash,
		CompactRevision: compacted, HashRevision: int64(h.Revision)}, nil
}

func (m *etcdMaintenance) Downgrade(context.Context, *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	return nil, status.Error(codes.Unimplemented, "KeyVal does not implement etcd's Downgrade: it has no etcd storage versions to downgrade")
}
