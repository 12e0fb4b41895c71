package kvstore

import (
	"bytes"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Leases (etcd's model): a lease has an id and a TTL; a key put with a
// lease is attached to it; revoking the lease deletes its keys, all at one
// revision. Which leases exist and which keys they hold is replicated
// state. When a lease expires is not: only the leader keeps the clock, and
// it expires a lease by proposing its revoke (server/lease.go), so every
// member deletes the same keys at the same revision.
//
// The store also indexes every version by revision (the revision index),
// so that the changes since a revision — what a watch replays — are read
// in revision order without scanning the history (Events).

// The texts of lease refusals, as etcd words them.
const (
	errLeaseExists  = "etcdserver: lease already exists"
	errLeaseInvalid = "invalid command: a lease needs an id above 0 and a TTL above 0"
)

// EncodeLeaseGrant returns the command that creates lease id with ttl
// seconds, as user.
func EncodeLeaseGrant(id, ttl int64, user string) []byte {
	return mustEncode(&kvpb.Command{User: user, Op: &kvpb.Command_LeaseGrant{LeaseGrant: &kvpb.LeaseGrant{Id: id, Ttl: ttl}}})
}

// EncodeLeaseRevoke returns the command that revokes lease id, as user.
func EncodeLeaseRevoke(id int64, user string) []byte {
	return mustEncode(&kvpb.Command{User: user, Op: &kvpb.Command_LeaseRevoke{LeaseRevoke: &kvpb.LeaseRevoke{Id: id}}})
}

func grantLease(st state, cmd *command) (Result, error) {
	if cmd.clientID != 0 || cmd.seq != 0 {
		return invalid(st, StatusInvalid, errAdminIDs), nil
	}
	g := cmd.grant
	if g.GetId() <= 0 || g.GetTtl() <= 0 {
		return invalid(st, StatusInvalid, errLeaseInvalid), nil
	}
	if l, err := st.lease(g.Id); err != nil || l != nil {
		if err != nil {
			return Result{}, err
		}
		return invalid(st, StatusLeaseExists, errLeaseExists), nil
	}
	if err := st.putLease(&kvpb.Lease{Id: g.Id, Ttl: g.Ttl}); err != nil {
		return Result{}, err
	}
	return Result{Status: StatusOK, Revision: st.revision()}, nil
}

// revokeLease deletes the lease's keys at the next revision (if it holds
// any) and the lease. Once auth is enabled the user must be allowed to
// write every key it holds, as in etcd.
func revokeLease(st state, cmd *command) (Result, error) {
	if cmd.clientID != 0 || cmd.seq != 0 {
		return invalid(st, StatusInvalid, errAdminIDs), nil
	}
	id := cmd.revoke.GetId()
	l, err := st.lease(id)
	if err != nil {
		return Result{}, err
	}
	if l == nil {
		return invalid(st, StatusLeaseNotFound, errEtcdLeaseMissing), nil
	}
	keys, err := st.leaseKeys(id)
	if err != nil {
		return Result{}, err
	}
	if cmd.user != "" {
		if on, err := authEnabled(st); err != nil {
			return Result{}, err
		} else if on {
			for _, k := range keys {
				if r, ok, err := authResult(st, auth.Allowed(records{st}, cmd.user, kvpb.AuthPermission_TYPE_WRITE, k, nil)); err != nil || !ok {
					return r, err
				}
			}
		}
	}
	rev := st.revision() + 1
	for _, k := range keys {
		if err := st.del(k, rev); err != nil {
			return Result{}, err
		}
	}
	if len(keys) > 0 {
		st.setRevision(rev)
	}
	if err := st.delLease(id); err != nil {
		return Result{}, err
	}
	return Result{Status: StatusOK, Revision: st.revision()}, nil
}

// LeaseInfo is a lease as the store holds it, with the keys attached.
type LeaseInfo struct {
	ID, TTL int64
	Keys    [][]byte
}

// Event is one change of a key at a revision, as a watch reports it:
// etcd's event, with the key's version before it when asked for.
type Event = mvccpb.Event

// events reads the changes to keys in [start, stop) at revisions from..to
// (both included), in revision order and key order within a revision, at
// most limit of them (<= 0: all); more says the limit cut the list.
func events(rd reader, start, stop []byte, from, to uint64, prev bool, limit int) (evs []*Event, more bool, err error) {
	// Compaction at c keeps every key's version at c, a tombstone
	// too, so the changes are complete from c on, as etcd's clients
	// expect of a watch started at the compact revision it reported.
	if c := rd.compacted(); c > 0 && from < c {
		return nil, false, &RangeError{Status: StatusCompacted, Msg: errEtcdCompacted}
	}
	var readErr error
	err = rd.scanRevisions(from, to, func(rev uint64, key []byte) bool {
		if !inRange(key, start, stop) || bytes.HasPrefix(key, reservedKeyPrefix) {
			return true
		}
		if limit > 0 && len(evs) >= limit {
			more = true
			return false
		}
		var ev *Event
		if ev, readErr = eventAt(rd, key, rev, prev); readErr != nil {
			return false
		}
		evs = append(evs, ev)
		return true
	})
	if err == nil {
		err = readErr
	}
	return evs, more, err
}

// eventAt is the change the history holds for key at rev.
func eventAt(rd reader, key []byte, rev uint64, prev bool) (*Event, error) {
	now, before, err := rd.versionAround(key, rev)
	if err != nil {
		return nil, err
	}
	if now == nil {
		return nil, fmt.Errorf("%w: the revision index names %q at %d, which its history lacks", ErrCorrupt, key, rev)
	}
	ev := &Event{Type: mvccpb.PUT, Kv: toMVCC(*now, false)}
	if now.meta.tombstone() {
		ev.Type, ev.Kv = mvccpb.DELETE, &mvccpb.KeyValue{Key: clone(key), ModRevision: int64(rev)}
	}
	// An event at the compacted revision has no previous version to give:
	// the compaction dooms it (bbolt's pruning may not have reached it
	// yet, and what a read answers must not depend on that), as etcd,
	// which reads it at the revision before, finds it compacted.
	if prev && before != nil && !before.meta.tombstone() && rev > rd.compacted() {
		ev.PrevKv = toMVCC(*before, false)
	}
	return ev, nil
}

// leaseInfos describes the leases ids, which exist, in that order.
func leaseInfos(rd reader, ids []int64) ([]LeaseInfo, error) {
	out := make([]LeaseInfo, 0, len(ids))
	for _, id := range ids {
		info, found, err := leaseInfo(rd, id)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, info)
		}
	}
	return out, nil
}

func leaseInfo(rd reader, id int64) (LeaseInfo, bool, error) {
	l, err := rd.lease(id)
	if err != nil || l == nil {
		return LeaseInfo{}, false, err
	}
	keys, err := rd.leaseKeys(id)
	if err != nil {
		return LeaseInfo{}, false, err
	}
	return LeaseInfo{ID: l.Id, TTL: l.Ttl, Keys: keys}, true, nil
}

// EncodeGenesis returns the command that takes a new store to revision 1
// (kvpb.Genesis).
func EncodeGenesis() []byte {
	return mustEncode(&kvpb.Command{Op: &kvpb.Command_Genesis{Genesis: &kvpb.Genesis{}}})
}
