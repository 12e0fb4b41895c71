package replica

import (
	"bytes"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Members' addresses live in the state machine, under a reserved prefix
// clients cannot write: a configuration entry that adds a node records the
// address it carries (core.ConfChange.Context), one that removes a node
// replaces it with a tombstone, so that a removed id is never used again
// (a new node under an old id could vote twice in a term). Snapshots therefore carry the address book, and a node that
// joins, or catches up, by snapshot learns every address with the data.
// Bootstrap members have no record; their addresses come from the
// runtime's initial configuration.

// MemberKeyPrefix starts every key of the address book.
var MemberKeyPrefix = []byte("\x00keyval/member/")

// IsReservedKey reports whether key belongs to KeyVal itself.
func IsReservedKey(key []byte) bool { return bytes.HasPrefix(key, []byte("\x00keyval/")) }

// IsMemberRecord reports whether key is one of the address book's: the
// records a cluster's backup must not carry into another cluster (its auth
// records it does carry).
func IsMemberRecord(key []byte) bool { return bytes.HasPrefix(key, MemberKeyPrefix) }

func memberKey(id core.NodeID) []byte {
	return strconv.AppendUint(append([]byte(nil), MemberKeyPrefix...), uint64(id), 10)
}

// memberCommand is the state machine command that records a committed
// configuration change in the address book; nil when there is nothing to
// record (a promotion, or an entry that does not decode).
func memberCommand(data []byte) []byte {
	cc, _, err := core.DecodeConfChange(data)
	if err != nil {
		return nil
	}
	var cmd kvpb.Command
	switch cc.Type {
	case core.ConfAddLearner:
		if len(cc.Context) == 0 {
			return nil
		}
		cmd.Op = &kvpb.Command_Put{Put: &kvpb.Put{Key: memberKey(cc.Node), Value: cc.Context}}
	case core.ConfRemove:
		// The tombstone keeps the node's last address (the change's
		// context), so a later leader can still tell the node if it never
		// heard.
		cmd.Op = &kvpb.Command_Put{Put: &kvpb.Put{Key: memberKey(cc.Node), Value: append([]byte(removedMark), cc.Context...)}}
	default:
		return nil
	}
	b, err := proto.Marshal(&cmd)
	if err != nil {
		return nil
	}
	return b
}

// removedMark starts the address book's tombstone for a removed node; its
// last address follows.
const removedMark = "\x00removed:"

// Addresses reads the address book from a store: every node added through
// a configuration change with the address it was added with, and every
// node ever removed, with its last address if known.
func Addresses(st kvstore.Store) (addrs map[core.NodeID]string, removed map[core.NodeID]string, err error) {
	addrs, removed = map[core.NodeID]string{}, map[core.NodeID]string{}
	var after []byte
	for {
		res, err := st.Range(MemberKeyPrefix, after, 256)
		if err != nil {
			return nil, nil, fmt.Errorf("replica: read member addresses: %w", err)
		}
		for _, kv := range res.Entries {
			id, err := strconv.ParseUint(string(kv.Key[len(MemberKeyPrefix):]), 10, 64)
			if err != nil || id == 0 {
				return nil, nil, fmt.Errorf("replica: damaged member record %q", kv.Key)
			}
			if a, ok := bytes.CutPrefix(kv.Value, []byte(removedMark)); ok {
				removed[core.NodeID(id)] = string(a)
			} else {
				addrs[core.NodeID(id)] = string(kv.Value)
			}
		}
		if !res.More || len(res.Entries) == 0 {
			return addrs, removed, nil
		}
		after = res.Entries[len(res.Entries)-1].Key
	}
}

// ProposeConfChange proposes a membership change as request id; Done(id, …)
// answers once it is applied (or lost), like a write.
func (r *Replica) ProposeConfChange(id uint64, cc core.ConfChange) error {
	index, term, err := r.node.ProposeConfChange(cc)
	if err != nil {
		return err
	}
	r.writes[index] = pendingWrite{id: id, term: term}
	return nil
}

// appliedConfAfter tracks the membership in force as of the last applied
// entry: what a snapshot taken then records.
func (r *Replica) appliedConfAfter(e core.Entry) {
	if e.Type != core.EntryConfChange {
		return
	}
	if _, conf, err := core.DecodeConfChange(e.Data); err == nil {
		r.appliedConf = conf
	}
}
