// Package lease keeps the leader's clock for etcd leases: which leases
// exist is replicated (the store's lease list is the truth), when one
// expires is not. Only the leader holds deadlines, in memory, and expires
// a lease by proposing its revoke, so every member deletes its keys at one
// revision. Lessor is the bookkeeping alone, without a clock, a lock or a
// goroutine: the server drives it with the wall clock (server/lease.go),
// the simulator with each node's drifting virtual clock (sim/lease.go).
//
// The rule that keeps a holder safe across leader changes: a node that
// becomes leader gives every lease a full TTL from the moment it sees
// itself leading. A holder's last keep-alive was answered by an earlier
// leader, before that moment, so the new deadline is never earlier than
// the one the holder was told. A leader renews only after a read barrier
// started after the keep-alive arrived (the caller's part), so a deposed
// leader never extends a lease its successor does not know about.
package lease

import (
	"maps"
	"slices"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

const (
	// SyncEvery is how often the leader reads the store's lease list, to
	// learn of leases granted through an earlier leader.
	SyncEvery = time.Second
	// MaxRevokesInFlight bounds the revokes proposed at once; checked
	// every 100 ms it caps expiry at etcd's default rate of 1,000 a second.
	MaxRevokesInFlight = 100
)

// Lessor is one node's lease deadlines. The zero value does not lead.
type Lessor struct {
	// term is the leadership the deadlines belong to (0: not leading).
	term      uint64
	deadlines map[int64]time.Time
	revoking  map[int64]bool
	synced    time.Time
}

// TTL is a lease's TTL as a duration (the store keeps seconds).
func TTL(seconds int64) time.Duration { return time.Duration(seconds) * time.Second }

// Lead notes whether this node leads, and in which term, as of now. A new
// leadership starts with no deadline (each lease gets a full TTL from when
// this leader first sees it); a lost one forgets every deadline. syncDue
// says the caller should read the store's lease list and pass it to Sync.
func (l *Lessor) Lead(term uint64, leading bool, now time.Time) (syncDue bool) {
	if !leading {
		l.term, l.deadlines, l.revoking = 0, nil, nil
		return false
	}
	if term != l.term {
		l.term, l.deadlines, l.revoking, l.synced = term, map[int64]time.Time{}, map[int64]bool{}, time.Time{}
	}
	return now.Sub(l.synced) >= SyncEvery
}

// Term is the leadership the deadlines belong to (0: not leading).
func (l *Lessor) Term() uint64 { return l.term }

// Sync adopts the store's lease list: a lease new to this leader gets a
// full TTL from now, a revoked one is dropped.
func (l *Lessor) Sync(leases []kvstore.LeaseInfo, now time.Time) {
	if l.term == 0 {
		return
	}
	exist := make(map[int64]bool, len(leases))
	for _, in := range leases {
		exist[in.ID] = true
		if _, ok := l.deadlines[in.ID]; !ok {
			l.deadlines[in.ID] = now.Add(TTL(in.TTL))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(l.deadlines)) {
		if !exist[id] && !l.revoking[id] {
			delete(l.deadlines, id)
		}
	}
	l.synced = now
}

// Granted starts a lease this leader granted.
func (l *Lessor) Granted(id, ttl int64, now time.Time) {
	if l.term != 0 {
		l.deadlines[id] = now.Add(TTL(ttl))
	}
}

// Renew extends lease id to from + its TTL, from being a moment before the
// leadership was last confirmed. An expired lease, whose revoke is due or
// under way, is not renewed: false, as for a lease that does not exist.
func (l *Lessor) Renew(id, ttl int64, from, now time.Time) bool {
	d, known := l.deadlines[id]
	if l.term == 0 || l.revoking[id] || (known && d.Before(now)) {
		return false
	}
	if e := from.Add(TTL(ttl)); e.After(d) {
		d = e
	}
	l.deadlines[id] = d
	return true
}

// Remaining is the time lease id has left (a lease this leader had not
// yet seen starts its full TTL now).
func (l *Lessor) Remaining(id, ttl int64, now time.Time) time.Duration {
	if l.term == 0 {
		return 0
	}
	d, ok := l.deadlines[id]
	if !ok {
		d = now.Add(TTL(ttl))
		l.deadlines[id] = d
	}
	return max(d.Sub(now), 0)
}

// Due marks the expired leases to revoke now, at most MaxRevokesInFlight
// under way at once, in id order, and returns them.
func (l *Lessor) Due(now time.Time) []int64 {
	var ids []int64
	for _, id := range slices.Sorted(maps.Keys(l.deadlines)) {
		if l.deadlines[id].Before(now) && !l.revoking[id] {
			ids = append(ids, id)
		}
	}
	ids = ids[:min(len(ids), max(MaxRevokesInFlight-len(l.revoking), 0))]
	for _, id := range ids {
		l.revoking[id] = true
	}
	return ids
}

// Revoked ends the revoke of lease id proposed in term: a lease gone is
// forgotten; one whose revoke was lost stays expired, to be proposed again
// by the next Due.
func (l *Lessor) Revoked(id int64, term uint64, gone bool) {
	if l.term != term || l.term == 0 {
		return
	}
	delete(l.revoking, id)
	if gone {
		delete(l.deadlines, id)
	}
}
