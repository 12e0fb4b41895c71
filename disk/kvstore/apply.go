package kvstore

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/disk/kvstore/kvpb"
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

	// get returns the key's value (valid until the next call) and version.
	get(key []byte) (value []byte, version uint64, found bool, err error)
	put(key, value []byte, version uint64) error
	del(key []byte) error

	// client returns the session, or nil when there is none.
	client(id uint64) (*kvpb.ClientRecord, error)
	// putClient stores rec; prevIndex is its last_index before this
	// command (for the LRU order), isNew says it was not stored before.
	putClient(rec *kvpb.ClientRecord, prevIndex uint64, isNew bool) error
	clientCount() uint64
	// evictOldest removes the session with the smallest last_index.
	evictOldest() error
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
	errNoSession    = "session expired: client %d has no session (never registered, or evicted as least recently used); register a new one"
)

func applyEntry(st state, e Entry, maxClients uint64) (Result, error) {
	if len(e.Data) == 0 {
		return Result{Status: StatusNoop, Revision: st.revision()}, nil
	}
	var cmd kvpb.Command
	if err := proto.Unmarshal(e.Data, &cmd); err != nil {
		return invalid(st, StatusMalformed, errMalformed), nil
	}
	if cmd.GetRegister() != nil {
		return register(st, &cmd, e.Index, maxClients)
	}
	if cmd.ClientId == 0 {
		return execute(st, &cmd)
	}
	if cmd.Seq == 0 {
		return invalid(st, StatusInvalid, errSeqZero), nil
	}
	rec, err := st.client(cmd.ClientId)
	if err != nil {
		return Result{}, err
	}
	if rec == nil {
		return invalid(st, StatusSessionExpired, fmt.Sprintf(errNoSession, cmd.ClientId)), nil
	}
	prevIndex := rec.LastIndex
	rec.LastIndex = e.Index // every command naming the session refreshes it
	var r Result
	switch {
	case cmd.Seq < rec.LastSeq:
		r = invalid(st, StatusStaleDuplicate, fmt.Sprintf(errStale, cmd.Seq, cmd.ClientId, rec.LastSeq))
	case cmd.Seq == rec.LastSeq:
		r = resultFromProto(rec.Result)
		r.Duplicate = true
	default:
		if r, err = execute(st, &cmd); err != nil {
			return Result{}, err
		}
		rec.LastSeq = cmd.Seq
		rec.Result = resultToProto(r)
	}
	if err := st.putClient(rec, prevIndex, false); err != nil {
		return Result{}, err
	}
	return r, nil
}

// register opens a session whose id is the entry's index: unique, never
// reused, and the same on every node. Making room evicts the least
// recently used sessions; a later command naming one of them gets
// StatusSessionExpired instead of being applied a second time.
func register(st state, cmd *kvpb.Command, index, maxClients uint64) (Result, error) {
	if cmd.ClientId != 0 || cmd.Seq != 0 {
		return invalid(st, StatusInvalid, errRegisterIDs), nil
	}
	rec := &kvpb.ClientRecord{ClientId: index, LastIndex: index}
	if err := st.putClient(rec, 0, true); err != nil {
		return Result{}, err
	}
	for st.clientCount() > maxClients {
		if err := st.evictOldest(); err != nil {
			return Result{}, err
		}
	}
	return Result{Status: StatusOK, Revision: st.revision(), ClientID: index}, nil
}

// execute runs the command's operation on the data.
func execute(st state, cmd *kvpb.Command) (Result, error) {
	switch op := cmd.Op.(type) {
	case *kvpb.Command_Put:
		if msg := checkKeyValue(op.Put.Key, op.Put.Value); msg != "" {
			return invalid(st, StatusInvalid, msg), nil
		}
		_, _, found, err := st.get(op.Put.Key)
		if err != nil {
			return Result{}, err
		}
		return write(st, op.Put.Key, op.Put.Value, found)
	case *kvpb.Command_Delete:
		if msg := checkKeyValue(op.Delete.Key, nil); msg != "" {
			return invalid(st, StatusInvalid, msg), nil
		}
		_, _, found, err := st.get(op.Delete.Key)
		if err != nil {
			return Result{}, err
		}
		if !found {
			return Result{Status: StatusOK, Revision: st.revision()}, nil
		}
		rev := st.revision() + 1
		if err := st.del(op.Delete.Key); err != nil {
			return Result{}, err
		}
		st.setRevision(rev)
		return Result{Status: StatusOK, Revision: rev, Existed: true}, nil
	case *kvpb.Command_CompareAndSwap:
		cas := op.CompareAndSwap
		if msg := checkKeyValue(cas.Key, cas.NewValue); msg != "" {
			return invalid(st, StatusInvalid, msg), nil
		}
		cur, version, found, err := st.get(cas.Key)
		if err != nil {
			return Result{}, err
		}
		if version != cas.ExpectedVersion { // an absent key has version 0
			r := Result{Status: StatusCASFailed, Revision: st.revision(), Existed: found, Exists: found, Version: version}
			if found {
				r.CurrentValue = clone(cur)
			}
			return r, nil
		}
		return write(st, cas.Key, cas.NewValue, found)
	}
	return invalid(st, StatusInvalid, errNoOp), nil
}

// write stores value at the next revision, which becomes the key's version.
func write(st state, key, value []byte, existed bool) (Result, error) {
	rev := st.revision() + 1
	if err := st.put(key, value, rev); err != nil {
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
