package server

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/lease"
)

// The lessor is the server's side of lease.Lessor (the package says how
// leases expire and why a holder is safe across leader changes): the wall
// clock, the leadership the event loop publishes, the store's lease list,
// and a lock for the handlers and the expiry loop that share it.
const (
	// leaseCheck is how often the leader looks for expired leases.
	leaseCheck = 100 * time.Millisecond
	// maxLeaseTTL is etcd's largest TTL, in seconds.
	maxLeaseTTL = 9_000_000_000
)

// errNotLeading says the call must go to the leader, or wait for one.
var errNotLeading = errors.New("this member does not lead (or just stopped leading)")

type lessor struct {
	s  *Server
	mu sync.Mutex
	l  lease.Lessor
}

func newLessor(s *Server) *lessor { return &lessor{s: s} }

// lead reports whether this node leads, and in which term.
func (l *lessor) lead() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leadingLocked(time.Now())
}

// leadingLocked tells the lessor the leadership as of now, and gives it
// the store's lease list when it is due.
func (l *lessor) leadingLocked(now time.Time) (uint64, bool) {
	term := l.s.term.Load()
	syncDue := l.l.Lead(term, l.s.leader.Load() == uint64(l.s.cfg.ID), now)
	if l.l.Term() == 0 {
		return 0, false
	}
	if syncDue {
		if infos, err := l.s.store.Leases(); err != nil {
			l.s.log.Warn("cannot read the leases; expiring none until they can be read", "err", err)
		} else {
			l.l.Sync(infos, now)
		}
	}
	return term, true
}

// granted starts a lease this leader granted.
func (l *lessor) granted(id, ttl int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if _, ok := l.leadingLocked(now); ok {
		l.l.Granted(id, ttl, now)
	}
}

// renew extends lease info to from + its TTL, from being a moment before
// the leadership of term was last confirmed. An expired lease, whose revoke
// is due or under way, is not renewed: found is false, as for a lease
// that does not exist.
func (l *lessor) renew(info kvstore.LeaseInfo, term uint64, from time.Time) (found bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, ok := l.leadingLocked(now); !ok || t != term {
		return false, errNotLeading
	}
	return l.l.Renew(info.ID, info.TTL, from, now), nil
}

// remaining is the time lease info has left (a lease this leader had not
// yet seen starts its full TTL now).
func (l *lessor) remaining(info kvstore.LeaseInfo, term uint64) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, ok := l.leadingLocked(now); !ok || t != term {
		return 0, errNotLeading
	}
	return l.l.Remaining(info.ID, info.TTL, now), nil
}

// due marks the expired leases to revoke now and returns them with the
// term they expired in.
func (l *lessor) due(now time.Time) ([]int64, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	term, ok := l.leadingLocked(now)
	if !ok {
		return nil, 0
	}
	return l.l.Due(now), term
}

// revoked ends a revoke (lease.Lessor.Revoked).
func (l *lessor) revoked(id int64, term uint64, gone bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l.Revoked(id, term, gone)
}

// expireLeases runs until the node stops, revoking expired leases while
// this node leads.
func (s *Server) expireLeases() {
	t := time.NewTicker(leaseCheck)
	defer t.Stop()
	for {
		select {
		case <-s.stopping:
			return
		case now := <-t.C:
			ids, term := s.lessor.due(now)
			for _, id := range ids {
				go s.revokeExpired(id, term)
			}
		}
	}
}

// revokeExpired proposes the revoke of an expired lease, as the leader
// (the command carries no user: members' own commands need no permission).
func (s *Server) revokeExpired(id int64, term uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	res, leader, err := s.write(ctx, kvstore.EncodeLeaseRevoke(id, ""))
	gone := leader == nil && (err == nil || res.Status == kvstore.StatusLeaseNotFound)
	if leader == nil && !gone {
		s.log.Warn("revoking an expired lease failed; retrying", "lease", id, "err", err)
	}
	s.lessor.revoked(id, term, gone)
}

// minLeaseTTL is the shortest TTL granted, in seconds, as etcd computes
// it: one and a half election timeouts, so that a lease survives the
// election of a new leader, which restarts it.
func (s *Server) minLeaseTTL() int64 {
	return int64(math.Ceil((s.cfg.ElectionTimeout * 3 / 2).Seconds()))
}
