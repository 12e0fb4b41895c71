package server

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// The lessor keeps the leader's clock for leases. Which leases exist is
// replicated (the store's lease list is the truth); when one expires is
// not: only the leader holds deadlines, in memory, and expires a lease by
// proposing its revoke, so every member deletes its keys at one revision.
//
// The rule that keeps a holder safe across leader changes: a node that
// becomes leader gives every lease a full TTL from the moment it sees
// itself leading. A holder's last keepalive was answered by an earlier
// leader, before that moment, so the new deadline is never earlier than
// the one the holder was told. Leaders renew only after a read barrier
// started after the keepalive arrived, so a deposed leader never extends
// a lease its successor does not know about.
const (
	// leaseCheck is how often the leader looks for expired leases.
	leaseCheck = 100 * time.Millisecond
	// leaseSync is how often the leader reads the store's lease list, to
	// learn of leases granted through an earlier leader.
	leaseSync = time.Second
	// maxRevokesInFlight bounds the revokes proposed at once; with
	// leaseCheck it caps expiry at etcd's default rate of 1,000 a second.
	maxRevokesInFlight = 100
	// maxLeaseTTL is etcd's largest TTL, in seconds.
	maxLeaseTTL = 9_000_000_000
)

// errNotLeading says the call must go to the leader, or wait for one.
var errNotLeading = errors.New("this member does not lead (or just stopped leading)")

type lessor struct {
	s  *Server
	mu sync.Mutex
	// term is the leadership the deadlines belong to (0: not leading).
	term      uint64
	deadlines map[int64]time.Time
	revoking  map[int64]bool
	synced    time.Time
}

func newLessor(s *Server) *lessor { return &lessor{s: s} }

// lead reports whether this node leads, and in which term.
func (l *lessor) lead() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leadingLocked(time.Now())
}

// leadingLocked notices a change of leadership: a new one starts every
// lease's full TTL from now, a lost one forgets every deadline.
func (l *lessor) leadingLocked(now time.Time) (uint64, bool) {
	term := l.s.term.Load()
	if l.s.leader.Load() != uint64(l.s.cfg.ID) {
		l.term, l.deadlines, l.revoking = 0, nil, nil
		return 0, false
	}
	if term != l.term {
		l.term, l.deadlines, l.revoking, l.synced = term, map[int64]time.Time{}, map[int64]bool{}, time.Time{}
	}
	if now.Sub(l.synced) >= leaseSync {
		l.syncLocked(now)
	}
	return term, true
}

// syncLocked adopts the store's lease list: a lease new to this leader
// gets a full TTL from now, a revoked one is dropped.
func (l *lessor) syncLocked(now time.Time) {
	infos, err := l.s.store.Leases()
	if err != nil {
		l.s.log.Warn("cannot read the leases; expiring none until they can be read", "err", err)
		return
	}
	exist := make(map[int64]bool, len(infos))
	for _, in := range infos {
		exist[in.ID] = true
		if _, ok := l.deadlines[in.ID]; !ok {
			l.deadlines[in.ID] = now.Add(ttlDuration(in.TTL))
		}
	}
	for id := range l.deadlines {
		if !exist[id] && !l.revoking[id] {
			delete(l.deadlines, id)
		}
	}
	l.synced = now
}

func ttlDuration(ttl int64) time.Duration { return time.Duration(ttl) * time.Second }

// granted starts a lease this leader granted.
func (l *lessor) granted(id, ttl int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.leadingLocked(time.Now()); ok {
		l.deadlines[id] = time.Now().Add(ttlDuration(ttl))
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
	d, known := l.deadlines[info.ID]
	if l.revoking[info.ID] || (known && d.Before(now)) {
		return false, nil
	}
	l.deadlines[info.ID] = later(d, from.Add(ttlDuration(info.TTL)))
	return true, nil
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
	d, ok := l.deadlines[info.ID]
	if !ok {
		d = now.Add(ttlDuration(info.TTL))
		l.deadlines[info.ID] = d
	}
	return max(d.Sub(now), 0), nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// due marks the expired leases to revoke now, at most
// maxRevokesInFlight at once, and returns them with the term they expired in.
func (l *lessor) due(now time.Time) ([]int64, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	term, ok := l.leadingLocked(now)
	if !ok {
		return nil, 0
	}
	var ids []int64
	for id, d := range l.deadlines {
		if len(l.revoking) >= maxRevokesInFlight {
			break
		}
		if d.Before(now) && !l.revoking[id] {
			l.revoking[id] = true
			ids = append(ids, id)
		}
	}
	return ids, term
}

// revoked ends a revoke: a lease gone is forgotten; one whose revoke was
// lost stays expired, to be proposed again at the next check.
func (l *lessor) revoked(id int64, term uint64, gone bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term != term {
		return
	}
	delete(l.revoking, id)
	if gone {
		delete(l.deadlines, id)
	}
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
