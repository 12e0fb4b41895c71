package server

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// A cap on what clients can make the replicated state hold: open
// exactly-once sessions, reclaiming only sessions idle past a TTL. It is
// decided where every member decides alike: the leader stamps its clock,
// cap and TTL into each Register, and keeps the state machine's clock
// moving while writes arrive. docs/kvstore.md says why.

// Defaults for the limits' flags.
const (
	DefaultMaxSessions = kvstore.DefaultMaxSessions
	DefaultSessionTTL  = kvstore.DefaultSessionTTL
	// MinSessionTTL is the Go client's MinSessionLifetime: a client
	// re-sends a write on a new session only if it trusts the old one to
	// have been kept that long after its last write.
	MinSessionTTL = 30 * time.Second
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
	return nil
}

// limitState is the event loop's part of the limits.
type limitState struct {
	ticker    kvstore.ClockTicker
	sessRefus prometheus.Counter
}

// stampRegister is the Register this node proposes now: its clock and its
// --max-sessions and --session-ttl, which the state machine decides by.
func (s *Server) stampRegister() *kvpb.Register {
	return kvstore.StampRegister(uint64(time.Now().UnixMilli()), kvstore.SessionPolicy{
		MaxSessions: uint64(s.cfg.MaxSessions), IdleTTL: s.cfg.SessionTTL})
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
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	s.limits.sessRefus = prometheus.NewCounter(prometheus.CounterOpts{Name: "keyval_sessions_refused_total",
		Help: "Register calls this member answered with ResourceExhausted: --max-sessions sessions open and none idle past --session-ttl."})
	return s.obs.m.Register(
		gauge("keyval_sessions", "Open exactly-once sessions.", func() float64 { return float64(s.store.Usage().Sessions) }),
		gauge("keyval_max_sessions", "The cap on open sessions, --max-sessions.", func() float64 { return float64(s.cfg.MaxSessions) }),
		s.limits.sessRefus,
	)
}

// limitError maps the limits' refusals from the state machine to a status
// (nil for any other result).
func limitError(r kvstore.Result) error {
	if r.Status == kvstore.StatusSessionLimit {
		return status.Errorf(codes.ResourceExhausted, "%s (--max-sessions, --session-ttl)", r.Err)
	}
	return nil
}
