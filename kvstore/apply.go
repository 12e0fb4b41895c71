package kvstore

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// state is what the shared apply logic needs from an implementation: one
// open write transaction over the store. The memory store applies
// directly; the bbolt store wraps a bbolt.Tx. Only storage may fail, and a
// failure aborts the whole batch.
type state interface {
	appliedIndex() uint64
	setAppliedIndex(uint64)
	revision() uint64
	setRevision(uint64)

	// get returns the key's current value (valid until the next call)
	// and meta.
	get(key []byte) (value []byte, meta kvMeta, found bool, err error)
	// lookup is get without the value, for writes that need only the
	// meta (the bbolt store reads a value from the history).
	lookup(key []byte) (meta kvMeta, found bool, err error)
	// put makes value, with meta, the key's current version and records
	// it in the history; del removes the key's current version, if any,
	// and records a tombstone at rev. Both keep usedBytes up to date.
	put(key, value []byte, meta kvMeta) error
	del(key []byte, rev uint64) error
	// scanLatest calls fn with the current version of each key in
	// [start, end) (end empty: no bound), in key order, until fn returns
	// false; the slices are valid only during the call.
	scanLatest(start, end []byte, fn func(v version) bool) error
	// The history (mvcc.go): scanHistory, and deleteHistory removing one
	// entry (newest: it may be the key's newest version, a tombstone, which
	// takes the key out of the index too); compacted is the revision it was
	// last compacted at.
	history
	deleteHistory(key []byte, rev uint64, newest bool) error
	compacted() uint64
	setCompacted(rev uint64)
	// The revision index (leases.go): scanRevisions calls fn with each
	// (revision, key) written at revisions from..to, in revision order and
	// key order within one, until fn returns false; compactRevisions drops
	// the entries below rev. put and del keep it.
	scanRevisions(from, to uint64, fn func(rev uint64, key []byte) bool) error
	compactRevisions(below uint64) error
	versionAround(key []byte, rev uint64) (at, before *version, err error)
	// Leases (leases.go): a lease's record (nil if none), storing and
	// removing one, and the keys attached to one, in key order. put and
	// del keep the attachments from the versions' lease.
	lease(id int64) (*kvpb.Lease, error)
	putLease(l *kvpb.Lease) error
	delLease(id int64) error
	leaseKeys(id int64) ([][]byte, error)
	// memo is where authEnabled keeps the auth switch it read (auth.go);
	// put and del forget it when they write an auth record.
	memo() *authMemo

	// client returns the session, or nil when there is none.
	client(id uint64) (*kvpb.ClientRecord, error)
	// putClient stores rec; prevIndex is its last_index before this
	// command (for the LRU order), isNew says it was not stored before.
	putClient(rec *kvpb.ClientRecord, prevIndex uint64, isNew bool) error
	clientCount() uint64
	// oldestClient returns the session with the smallest last_index, or
	// nil when there is none; removeClient removes a session.
	oldestClient() (*kvpb.ClientRecord, error)
	removeClient(rec *kvpb.ClientRecord) error

	// The session clock (sessions.go), the raised alarms (alarms.go; the
	// slice is not changed in place, only replaced) and the store's
	// logical size (Usage.Bytes).
	sessionClock() uint64
	setSessionClock(ms uint64)
	alarms() []*kvpb.Alarm
	setAlarms([]*kvpb.Alarm)
	usedBytes() uint64
	setUsedBytes(uint64)
}

// applyBatch is the whole replicated semantics of Apply, shared by every
// implementation so that they cannot drift apart.
func applyBatch(st state, entries []Entry, maxClients uint64) ([]Result, error) {
	if err := checkContiguous(entries, st.appliedIndex()); err != nil {
		return nil, err
	}
	results := make([]Result, len(entries))
	for i, e := range entries {
		if e.Index <= st.appliedIndex() {
			results[i] = Result{Index: e.Index, Status: StatusAlreadyApplied, Revision: st.revision()}
			continue
		}
		r, err := applyEntry(st, e, maxClients)
		if err != nil {
			return nil, fmt.Errorf("apply entry %d: %w", e.Index, err)
		}
		r.Index = e.Index
		results[i] = r
		st.setAppliedIndex(e.Index)
	}
	return results, nil
}

// checkContiguous refuses a batch that would leave a hole in, or go back
// over, the applied log: indexes must run one by one, and the first entry
// past the applied index must be applied+1.
func checkContiguous(entries []Entry, applied uint64) error {
	for i, e := range entries {
		if e.Index == 0 {
			return fmt.Errorf("%w: entry %d of the batch has index 0", ErrNotContiguous, i)
		}
		if i > 0 && e.Index != entries[i-1].Index+1 {
			return fmt.Errorf("%w: index %d follows %d in the batch", ErrNotContiguous, e.Index, entries[i-1].Index)
		}
		if e.Index > applied+1 && (i == 0 || entries[i-1].Index <= applied) {
			return fmt.Errorf("%w: first new index is %d but the applied index is %d", ErrNotContiguous, e.Index, applied)
		}
	}
	return nil
}

// The texts of deterministic error results. They end up in remembered
// results and so in snapshots: they must depend only on the command, never
// on library error strings (protobuf randomizes its own on purpose).
const (
	errMalformed    = "malformed command: the entry's bytes are not a valid kvpb.Command"
	errNoOp         = "invalid command: no operation set"
	errEmptyKey     = "invalid command: the key is empty"
	errRegisterIDs  = "invalid command: register must not carry client_id or seq"
	errSeqZero      = "invalid command: seq must be at least 1 when client_id is set"
	errKeyTooLong   = "invalid command: the key is %d bytes; the limit is %d"
	errValueTooLong = "invalid command: the value is %d bytes; the limit is %d"
	errStale        = "stale duplicate: seq %d is older than client %d's last applied seq %d"
	errNoSession    = "session expired: client %d has no session (never registered, or reclaimed after being idle past the session TTL); register a new one"
	errSessionOwner = "session expired: client %d's session belongs to another user (or was opened before auth was enabled); register a new one"
)

// command is a decoded kvpb.Command, flat: what apply needs of it, with
// no protobuf structures to allocate on the hot path.
type command struct {
	clientID, seq uint64
	op            opKind
	key, value    []byte // value: Put's value or CompareAndSwap's new value
	expected      uint64 // CompareAndSwap's expected version
	user          string // who proposed it, once auth is enabled
	auth          *kvpb.AuthChange
	grant         *kvpb.LeaseGrant
	revoke        *kvpb.LeaseRevoke

	// Register's and SessionClock's stamps (sessions.go), AlarmChange.
	nowMs, maxSessions, ttlMs uint64
	alarm                     *kvpb.AlarmChange
}

type opKind uint8

const (
	opNone opKind = iota
	opPut
	opDelete
	opCAS
	opRegister
	opAuth
	opSessionClock
	opAlarm
	opEtcdTxn // value: the encoded etcdserverpb.TxnRequest
	opCompact // expected: the revision
	opLeaseGrant
	opLeaseRevoke
	opGenesis
)

// decodeCommand reads an entry's bytes. A put, delete or compare-and-swap,
// with or without a session, encoded field by field in order as
// proto.Marshal writes it (what the server proposes for the native
// writes), is read in place: key and value alias data. Anything else —
// other operations, repeated or reordered fields, unknown fields — goes
// through proto.Unmarshal, so the outcome is the same as decoding every
// command with it.
func decodeCommand(data []byte, c *command) error {
	if decodeSimple(data, c) {
		return nil
	}
	return decodeProto(data, c)
}

// decodeProto decodes any command with proto.Unmarshal.
func decodeProto(data []byte, c *command) error {
	var pb kvpb.Command
	if err := proto.Unmarshal(data, &pb); err != nil {
		return err
	}
	*c = command{clientID: pb.ClientId, seq: pb.Seq, user: pb.User}
	switch op := pb.Op.(type) {
	case *kvpb.Command_Put:
		c.op, c.key, c.value = opPut, op.Put.GetKey(), op.Put.GetValue()
	case *kvpb.Command_Delete:
		c.op, c.key = opDelete, op.Delete.GetKey()
	case *kvpb.Command_CompareAndSwap:
		cas := op.CompareAndSwap
		c.op, c.key, c.value, c.expected = opCAS, cas.GetKey(), cas.GetNewValue(), cas.GetExpectedVersion()
	case *kvpb.Command_Register:
		r := op.Register
		c.op, c.nowMs, c.maxSessions, c.ttlMs = opRegister, r.GetNowMs(), r.GetMaxSessions(), r.GetIdleTtlMs()
	case *kvpb.Command_SessionClock:
		c.op, c.nowMs = opSessionClock, op.SessionClock.GetNowMs()
	case *kvpb.Command_Alarm:
		c.op, c.alarm = opAlarm, op.Alarm
	case *kvpb.Command_AuthChange:
		c.op, c.auth = opAuth, op.AuthChange
	case *kvpb.Command_EtcdTxn:
		c.op, c.value = opEtcdTxn, op.EtcdTxn
	case *kvpb.Command_Compact:
		c.op, c.expected = opCompact, op.Compact.GetRevision()
	case *kvpb.Command_LeaseGrant:
		c.op, c.grant = opLeaseGrant, op.LeaseGrant
	case *kvpb.Command_LeaseRevoke:
		c.op, c.revoke = opLeaseRevoke, op.LeaseRevoke
	case *kvpb.Command_Genesis:
		c.op = opGenesis
	}
	return nil
}

// The field numbers decodeSimple reads (kvstore.proto).
const (
	fieldClientID = 1
	fieldSeq      = 2
	fieldPut      = 3
	fieldDelete   = 4
	fieldCAS      = 5
)

// The fields of a Put, as EncodePut writes them.
const (
	fieldPutKey   = 1
	fieldPutValue = 2
)

// The fields of each operation decodeSimple reads, by field number from 1:
// what kind each one is and where it goes in a command.
var (
	putFields    = []simpleField{fieldKey, fieldValue}
	deleteFields = []simpleField{fieldKey}
	casFields    = []simpleField{fieldKey, fieldExpected, fieldValue}
)

// simpleOp is the operation a Command field number holds, if decodeSimple
// reads it.
func simpleOp(num protowire.Number) (opKind, []simpleField, bool) {
	switch num {
	case fieldPut:
		return opPut, putFields, true
	case fieldDelete:
		return opDelete, deleteFields, true
	case fieldCAS:
		return opCAS, casFields, true
	}
	return opNone, nil, false
}

type simpleField int

const (
	fieldKey      simpleField = iota // bytes: command.key
	fieldValue                       // bytes: command.value
	fieldExpected                    // varint: command.expected
)

// decodeSimple fills c from data if data is a put, delete or
// compare-and-swap in the canonical layout: client_id and seq (each
// optional, as varints), then the operation's message, its fields each
// optional, every field at most once and in number order, nothing else. It
// reports false for any other input, without judging whether it is valid.
func decodeSimple(data []byte, c *command) bool {
	*c = command{}
	next := protowire.Number(fieldClientID) // the lowest field that may come next
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 || num < next {
			return false
		}
		data = data[n:]
		switch {
		case (num == fieldClientID || num == fieldSeq) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return false
			}
			data = data[n:]
			if num == fieldClientID {
				c.clientID = v
			} else {
				c.seq = v
			}
		case num >= fieldPut && typ == protowire.BytesType:
			op, fields, ok := simpleOp(num)
			msg, n := protowire.ConsumeBytes(data)
			if !ok || n < 0 || n != len(data) {
				return false // the operation must be the last field
			}
			c.op = op
			return decodeSimpleFields(msg, fields, c)
		default:
			return false
		}
		next = num + 1
	}
	return false // no operation
}

func decodeSimpleFields(msg []byte, fields []simpleField, c *command) bool {
	next := protowire.Number(1)
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 || num < next || int(num) > len(fields) {
			return false
		}
		msg = msg[n:]
		switch f := fields[num-1]; {
		case f == fieldExpected && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(msg)
			if n < 0 {
				return false
			}
			msg, c.expected = msg[n:], v
		case f != fieldExpected && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(msg)
			if n < 0 {
				return false
			}
			msg = msg[n:]
			if f == fieldKey {
				c.key = v
			} else {
				c.value = v
			}
		default:
			return false
		}
		next = num + 1
	}
	return true
}

func applyEntry(st state, e Entry, maxClients uint64) (Result, error) {
	if len(e.Data) == 0 {
		return Result{Status: StatusNoop, Revision: st.revision()}, nil
	}
	var cmd command
	if err := decodeCommand(e.Data, &cmd); err != nil {
		return invalid(st, StatusMalformed, errMalformed), nil
	}
	if cmd.op == opAuth {
		return applyAuth(st, &cmd, e.Index)
	}
	if cmd.op == opRegister {
		if r, ok, err := authorize(st, &cmd); err != nil || !ok {
			return r, err
		}
	}
	switch cmd.op {
	case opRegister:
		return register(st, &cmd, e.Index, maxClients)
	case opCompact:
		return compact(st, &cmd)
	case opLeaseGrant:
		return grantLease(st, &cmd)
	case opLeaseRevoke:
		return revokeLease(st, &cmd)
	case opGenesis:
		if cmd.clientID != 0 || cmd.seq != 0 {
			return invalid(st, StatusInvalid, errAdminIDs), nil
		}
		if st.revision() == 0 {
			st.setRevision(1)
		}
		return Result{Status: StatusOK, Revision: st.revision()}, nil
	case opSessionClock, opAlarm:
		if cmd.clientID != 0 || cmd.seq != 0 {
			return invalid(st, StatusInvalid, errAdminIDs), nil
		}
		if cmd.op == opAlarm {
			return changeAlarm(st, &cmd, e.Index), nil
		}
		advanceClock(st, cmd.nowMs)
		return Result{Status: StatusOK, Revision: st.revision()}, nil
	}
	if cmd.clientID == 0 {
		return executeAs(st, &cmd)
	}
	if cmd.seq == 0 {
		return invalid(st, StatusInvalid, errSeqZero), nil
	}
	rec, err := st.client(cmd.clientID)
	if err != nil {
		return Result{}, err
	}
	if rec == nil {
		return invalid(st, StatusSessionExpired, fmt.Sprintf(errNoSession, cmd.clientID)), nil
	}
	if r, ok, err := sessionOwner(st, &cmd, rec); err != nil || !ok {
		return r, err
	}
	prevIndex, prevBytes := rec.LastIndex, sessionBytes(rec)
	// Every command naming the session refreshes it.
	rec.LastIndex, rec.LastActiveMs = e.Index, st.sessionClock()
	var r Result
	switch {
	case cmd.seq < rec.LastSeq:
		r = invalid(st, StatusStaleDuplicate, fmt.Sprintf(errStale, cmd.seq, cmd.clientID, rec.LastSeq))
	case cmd.seq == rec.LastSeq:
		r = resultFromProto(rec.Result)
		r.Duplicate = true
	default:
		if r, err = executeAs(st, &cmd); err != nil {
			return Result{}, err
		}
		// A write refused for want of space changed nothing: the same
		// seq may be sent again once there is room.
		if r.Status != StatusNoSpace {
			rec.LastSeq = cmd.seq
			rec.Result = resultToProto(r)
		}
	}
	if err := st.putClient(rec, prevIndex, false); err != nil {
		return Result{}, err
	}
	st.setUsedBytes(st.usedBytes() - min(st.usedBytes(), prevBytes) + sessionBytes(rec))
	return r, nil
}

// register opens a session whose id is the entry's index: unique, never
// reused, and the same on every node. Making room reclaims sessions idle
// past the TTL the command carries (registerSession), or refuses; a later
// command naming a reclaimed session gets StatusSessionExpired instead of
// being applied a second time.
func register(st state, cmd *command, index, maxClients uint64) (Result, error) {
	if cmd.clientID != 0 || cmd.seq != 0 {
		return invalid(st, StatusInvalid, errRegisterIDs), nil
	}
	if cmd.maxSessions != 0 {
		return registerSession(st, cmd, index)
	}
	r, err := openSession(st, index, cmd.user)
	if err != nil {
		return Result{}, err
	}
	return r, evictLegacy(st, maxClients)
}

// execute runs the command's operation on the data.
func execute(st state, cmd *command) (Result, error) {
	switch cmd.op {
	case opPut:
		if msg := checkKeyValue(cmd.key, cmd.value); msg != "" {
			return invalid(st, StatusInvalid, msg), nil
		}
		if noSpace(st, cmd.key) {
			return invalid(st, StatusNoSpace, errNoSpace), nil
		}
		meta, found, err := st.lookup(cmd.key)
		if err != nil {
			return Result{}, err
		}
		return write(st, cmd.key, cmd.value, meta, found)
	case opDelete:
		if msg := checkKeyValue(cmd.key, nil); msg != "" {
			return invalid(st, StatusInvalid, msg), nil
		}
		_, found, err := st.lookup(cmd.key)
		if err != nil {
			return Result{}, err
		}
		if !found {
			return Result{Status: StatusOK, Revision: st.revision()}, nil
		}
		rev := st.revision() + 1
		if err := st.del(cmd.key, rev); err != nil {
			return Result{}, err
		}
		st.setRevision(rev)
		return Result{Status: StatusOK, Revision: rev, Existed: true}, nil
	case opCAS:
		if msg := checkKeyValue(cmd.key, cmd.value); msg != "" {
			return invalid(st, StatusInvalid, msg), nil
		}
		if noSpace(st, cmd.key) {
			return invalid(st, StatusNoSpace, errNoSpace), nil
		}
		cur, meta, found, err := st.get(cmd.key)
		if err != nil {
			return Result{}, err
		}
		if meta.modRev != cmd.expected { // an absent key has version 0
			r := Result{Status: StatusCASFailed, Revision: st.revision(), Existed: found, Exists: found, Version: meta.modRev}
			if found {
				r.CurrentValue = clone(cur)
			}
			return r, nil
		}
		return write(st, cmd.key, cmd.value, meta, found)
	case opEtcdTxn:
		return etcdTxn(st, cmd)
	}
	return invalid(st, StatusInvalid, errNoOp), nil
}

// write stores value at the next revision, which becomes the key's version,
// over its current version cur (existed: there is one).
func write(st state, key, value []byte, cur kvMeta, existed bool) (Result, error) {
	rev := st.revision() + 1
	if err := st.put(key, value, cur.next(rev, existed)); err != nil {
		return Result{}, err
	}
	st.setRevision(rev)
	return Result{Status: StatusOK, Revision: rev, Existed: existed, Exists: true, Version: rev}, nil
}

func invalid(st state, status Status, msg string) Result {
	return Result{Status: status, Err: msg, Revision: st.revision()}
}

// checkKeyValue returns why key or value cannot be stored, or "".
func checkKeyValue(key, value []byte) string {
	switch {
	case len(key) == 0:
		return errEmptyKey
	case len(key) > MaxKeySize:
		return fmt.Sprintf(errKeyTooLong, len(key), MaxKeySize)
	case len(value) > MaxValueSize:
		return fmt.Sprintf(errValueTooLong, len(value), MaxValueSize)
	}
	return ""
}

func resultToProto(r Result) *kvpb.Result {
	return &kvpb.Result{
		Status:       r.Status,
		Error:        r.Err,
		Revision:     r.Revision,
		Existed:      r.Existed,
		Exists:       r.Exists,
		Version:      r.Version,
		CurrentValue: clone(r.CurrentValue),
		ClientId:     r.ClientID,
		EtcdResponse: encodeEtcdResponse(r.Etcd),
	}
}

func resultFromProto(p *kvpb.Result) Result {
	return Result{
		Status:       p.GetStatus(),
		Err:          p.GetError(),
		Revision:     p.GetRevision(),
		Existed:      p.GetExisted(),
		Exists:       p.GetExists(),
		Version:      p.GetVersion(),
		CurrentValue: clone(p.GetCurrentValue()),
		ClientID:     p.GetClientId(),
		Etcd:         decodeEtcdResponse(p.GetEtcdResponse()),
	}
}

// clone copies b. Empty becomes nil, so that every implementation (and
// every protobuf round trip) hands back the same thing for an empty value.
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
