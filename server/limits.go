package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Two limits on what clients can make the replicated state hold: a cap on
// open exactly-once sessions (reclaiming only sessions idle past a TTL),
// and a storage quota with a NOSPACE alarm. Both are decided where every
// member decides alike: the leader stamps its clock, cap and TTL into each
// Register, and refuses writes past the quota before proposing them while
// raising the alarm through the log, which every member then applies.
// docs/kvstore.md and docs/security.md say why.

// Defaults for the limits' flags.
const (
	DefaultMaxSessions       = kvstore.DefaultMaxSessions
	DefaultSessionTTL        = kvstore.DefaultSessionTTL
	DefaultQuotaBackendBytes = int64(2 << 30)
	// MinSessionTTL is the Go client's MinSessionLifetime: a client
	// re-sends a write on a new session only if it trusts the old one to
	// have been kept that long after its last write.
	MinSessionTTL = 30 * time.Second
	// noSpaceRaiseEvery bounds how often a leader proposes the NOSPACE
	// alarm while writes keep being refused before it is applied (a
	// proposal lost to a leader change is made again after it).
	noSpaceRaiseEvery = time.Second
)

func (c *Config) setLimitDefaults() error {
	if c.MaxSessions == 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.SessionTTL < MinSessionTTL {
		return fmt.Errorf("--session-ttl is %v; it must be at least %v (clients rely on a session outliving its last write that long)", c.SessionTTL, MinSessionTTL)
	}
	if c.QuotaBackendBytes == 0 {
		c.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	if c.QuotaBackendBytes < 0 {
		return fmt.Errorf("--quota-backend-bytes is %d; it must be positive (0: the default, %d)", c.QuotaBackendBytes, DefaultQuotaBackendBytes)
	}
	return nil
}

// limitState is the event loop's part of the limits.
type limitState struct {
	ticker    kvstore.ClockTicker
	raisedAt  time.Time // when this leader last proposed the NOSPACE alarm
	noSpace   prometheus.Counter
	sessRefus prometheus.Counter
}

// stampRegister is the Register this node proposes now: its clock and its
// --max-sessions and --session-ttl, which the state machine decides by.
func (s *Server) stampRegister() *kvpb.Register {
	return kvstore.StampRegister(uint64(time.Now().UnixMilli()), kvstore.SessionPolicy{
		MaxSessions: uint64(s.cfg.MaxSessions), IdleTTL: s.cfg.SessionTTL})
}

// noSpacePrefix starts the message of a write refused for the quota, by
// which etcd's API knows to answer etcd's ErrNoSpace instead.
const noSpacePrefix = "no space: "

// admitWrite runs on the loop before a write that may grow the store by need
// bytes is proposed: it refuses the write if the NOSPACE alarm is raised or
// the write would take the store past the quota, raising the alarm in the
// latter case. Only the leader judges (elsewhere the proposal is refused
// and forwarded): it proposes the alarm, and its view of the store is the
// most recent.
func (s *Server) admitWrite(need uint64) error {
	if need == 0 || s.rep.Node().SoftState().Role != core.Leader {
		return nil
	}
	u := s.store.Usage()
	quota := uint64(s.cfg.QuotaBackendBytes)
	if u.Raised(kvstore.AlarmNoSpace) {
		s.limits.raisedAt = time.Time{} // applied: once disarmed, raise again at once
		s.limits.noSpace.Inc()
		return status.Errorf(codes.ResourceExhausted, noSpacePrefix+"the NOSPACE alarm is raised (the store holds %d bytes; the quota is %d, --quota-backend-bytes): "+
			"puts and compare-and-swaps are refused until it is disarmed; delete keys to free space, then disarm it (kvctl alarm disarm)", u.Bytes, quota)
	}
	if u.Bytes+need <= quota {
		return nil
	}
	s.limits.noSpace.Inc()
	if now := time.Now(); now.Sub(s.limits.raisedAt) >= noSpaceRaiseEvery {
		s.limits.raisedAt = now
		// No waiter: the outcome shows in the store's alarms.
		if err := s.rep.Propose(s.nextID.Add(1), kvstore.EncodeAlarm(kvstore.AlarmNoSpace, false, uint64(s.cfg.ID))); err != nil {
			s.log.Warn("could not propose the NOSPACE alarm", "err", err)
		} else {
			s.log.Warn("storage quota reached: raising the NOSPACE alarm", "bytes", u.Bytes, "quota", quota)
		}
	}
	return status.Errorf(codes.ResourceExhausted, noSpacePrefix+"this write would take the store from %d to %d bytes, past its quota of %d (--quota-backend-bytes); "+
		"the NOSPACE alarm is raised: delete keys to free space, then disarm it (kvctl alarm disarm)", u.Bytes, u.Bytes+need, quota)
}

// tickClock runs on the loop after this node proposed a write, so as a
// leader: about once a second it also proposes a SessionClock entry, so
// the sessions that write keep looking active to the state machine even
// when no Register comes to carry time along.
func (s *Server) tickClock() {
	now := uint64(time.Now().UnixMilli())
	if !s.limits.ticker.Due(now) {
		return
	}
	if err := s.rep.Propose(s.nextID.Add(1), kvstore.EncodeSessionClock(now)); err != nil {
		s.log.Debug("could not propose a session clock entry", "err", err)
	}
}

// registerLimitMetrics exports the limits' figures, read at scrape time.
func (s *Server) registerLimitMetrics() error {
	gauge := func(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	s.limits.noSpace = prometheus.NewCounter(prometheus.CounterOpts{Name: "keyval_quota_refused_total",
		Help: "Puts and compare-and-swaps this member (as leader) refused for want of space: past --quota-backend-bytes, or while the NOSPACE alarm was raised."})
	s.limits.sessRefus = prometheus.NewCounter(prometheus.CounterOpts{Name: "keyval_sessions_refused_total",
		Help: "Register calls this member answered with ResourceExhausted: --max-sessions sessions open and none idle past --session-ttl."})
	return s.obs.m.Register(
		gauge("keyval_quota_bytes", "The storage quota, --quota-backend-bytes.", nil,
			func() float64 { return float64(s.cfg.QuotaBackendBytes) }),
		gauge("keyval_store_bytes_in_use", "The store's size as the quota counts it: keys, values and sessions (docs/kvstore.md).", nil,
			func() float64 { return float64(s.store.Usage().Bytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyval_store_commits_total",
			Help: "bbolt write transactions the state machine committed: about ten a second under load, more only if something reads the store for each request or batch (docs/kvstore.md, Commits left open)."},
			func() float64 { return float64(s.store.Commits()) }),
		gauge("keyval_alarm_active", "1 while the alarm is raised in the replicated state.", prometheus.Labels{"type": "nospace"},
			func() float64 {
				if s.store.Usage().Raised(kvstore.AlarmNoSpace) {
					return 1
				}
				return 0
			}),
		gauge("keyval_sessions", "Open exactly-once sessions.", nil, func() float64 { return float64(s.store.Usage().Sessions) }),
		gauge("keyval_max_sessions", "The cap on open sessions, --max-sessions.", nil, func() float64 { return float64(s.cfg.MaxSessions) }),
		s.limits.noSpace, s.limits.sessRefus,
	)
}

// maintenanceService lists and disarms alarms.
type maintenanceService struct {
	apipb.UnimplementedMaintenanceServer
	s *Server
}

// Once auth is enabled, both methods are for the root role only: an
// alarm is a cluster-wide switch, and the list shows the store's use.

func (m *maintenanceService) AlarmList(ctx context.Context, _ *apipb.AlarmListRequest) (*apipb.AlarmListResponse, error) {
	return m.alarmList(ctx, needRoot)
}

// alarmList is AlarmList for a caller allowed n: root for KeyVal's own
// call, whose answer also shows the store's use; any user for etcd's,
// which shows only the alarms (etcdctl endpoint health lists them, so a
// probe need not log in as root).
func (m *maintenanceService) alarmList(ctx context.Context, n need) (*apipb.AlarmListResponse, error) {
	s := m.s
	if err := s.requireFresh(ctx, n); err != nil {
		return nil, err
	}
	u := s.store.Usage()
	resp := &apipb.AlarmListResponse{
		Header:     &apipb.Header{Revision: s.store.Revision(), NodeId: uint64(s.cfg.ID), LeaderId: s.leader.Load()},
		StoreBytes: u.Bytes, QuotaBytes: uint64(s.cfg.QuotaBackendBytes), Sessions: u.Sessions, MaxSessions: uint64(s.cfg.MaxSessions),
	}
	for _, a := range u.Alarms {
		resp.Alarms = append(resp.Alarms, alarmToAPI(a))
	}
	return resp, nil
}

func (m *maintenanceService) AlarmDisarm(ctx context.Context, req *apipb.AlarmDisarmRequest) (*apipb.AlarmDisarmResponse, error) {
	s := m.s
	if req.Type != apipb.AlarmType_ALARM_TYPE_NOSPACE {
		return nil, status.Errorf(codes.InvalidArgument, "unknown alarm type %v: the only alarm is %v", req.Type, apipb.AlarmType_ALARM_TYPE_NOSPACE)
	}
	if err := s.requireFresh(ctx, needRoot); err != nil {
		return nil, err
	}
	before := s.store.Usage()
	res, leader, err := s.write(ctx, kvstore.EncodeAlarm(kvstore.AlarmNoSpace, true, uint64(s.cfg.ID)))
	if leader != nil {
		return apipb.NewMaintenanceClient(leader).AlarmDisarm(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	resp := &apipb.AlarmDisarmResponse{Header: &apipb.Header{Revision: res.Revision, NodeId: uint64(s.cfg.ID), LeaderId: s.leader.Load()}}
	for _, a := range before.Alarms {
		if a.Type == kvstore.AlarmNoSpace {
			resp.Disarmed = alarmToAPI(a)
		}
	}
	s.log.Info("alarm disarmed", "type", req.Type.String(), "was_raised", resp.Disarmed != nil)
	return resp, nil
}

func alarmToAPI(a kvstore.Alarm) *apipb.Alarm {
	return &apipb.Alarm{Type: apipb.AlarmType(a.Type), MemberId: a.MemberID, Index: a.Index}
}

// limitError maps the limits' refusals from the state machine to a status
// (nil for any other result).
func limitError(r kvstore.Result) error {
	switch r.Status {
	case kvstore.StatusSessionLimit:
		return status.Errorf(codes.ResourceExhausted, "%s (--max-sessions, --session-ttl)", r.Err)
	case kvstore.StatusNoSpace:
		return status.Error(codes.ResourceExhausted, r.Err)
	}
	return nil
}

// requestAllowance is how far past MaxRequestBytes a client's message may
// go before gRPC itself refuses it: etcd's (its grpcOverheadBytes).
const requestAllowance = 512 << 10

// refuseOversized refuses a unary request larger than MaxRequestBytes:
// etcd's calls with etcd's ErrRequestTooLarge, as etcd does, KeyVal's own
// with RESOURCE_EXHAUSTED naming the limit.
func (s *Server) refuseOversized(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if n, ok := messageSize(req); ok {
		if n > s.cfg.MaxRequestBytes {
			if strings.HasPrefix(info.FullMethod, "/etcdserverpb.") {
				return nil, rpctypes.ErrGRPCRequestTooLarge
			}
			return nil, status.Errorf(codes.ResourceExhausted, "the request is %d bytes; the limit is %d (--max-key-bytes plus --max-value-bytes plus 1 KiB)", n, s.cfg.MaxRequestBytes)
		}
	}
	return next(ctx, req)
}

// messageSize is req's encoded size: etcd's messages (gogo protobuf)
// compute it themselves, KeyVal's through the protobuf runtime.
func messageSize(req any) (int, bool) {
	switch m := req.(type) {
	case interface{ Size() int }:
		return m.Size(), true
	case proto.Message:
		return proto.Size(m), true
	}
	return 0, false
}
