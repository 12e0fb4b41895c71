// Package kvstore is KeyVal's replicated state machine: the key-value state
// that every node builds by applying the Raft log's committed entries in
// index order.
//
// Applying is deterministic: the same entries give the same state and the
// same results on every node, whichever implementation runs it. Both
// implementations (bbolt for the real server, memory for the simulator)
// share one apply function (apply.go) and differ only in where the state
// lives. The memory one starts no goroutines, reads no clock, draws no
// randomness and never lets map iteration order leak into behaviour.
//
// Semantics, the bbolt layout and the snapshot format are described in
// docs/kvstore.md.
package kvstore

import (
	"errors"
	"io"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Store is the state machine. Apply and Restore are called by one goroutine
// (the node's applier); Get, Range, Snapshot and the accessors may be called
// concurrently with them and see a state between whole batches.
type Store interface {
	// Apply applies a batch of committed entries atomically (one
	// transaction) and returns one Result per entry, in order. Entries
	// must have consecutive indexes; those at or below AppliedIndex are
	// skipped (replay after a restart), and the first new one must be
	// AppliedIndex()+1. An error means storage failed or the indexes do
	// not line up; nothing of the batch was applied.
	Apply(entries []Entry) ([]Result, error)
	// AppliedIndex is the index of the last applied entry (0 if none).
	// Every read the store serves afterwards sees that entry, whether or
	// not the store has made it visible in its files yet (Bolt commits
	// what Apply left open before any read): the replica releases
	// ReadIndex reads by this index.
	AppliedIndex() uint64
	// Revision is the store revision: the number of successful mutations.
	Revision() uint64
	// Get reads one key.
	Get(key []byte) (GetResult, error)
	// Range lists keys starting with prefix, in ascending byte order,
	// strictly after the key after (nil: from the start), at most limit
	// of them (limit <= 0: all). More says whether keys remain; pass the
	// last returned key as after to continue.
	Range(prefix, after []byte, limit int) (RangeResult, error)
	// RangeBytes is Range that also stops before the page's keys and
	// values would exceed maxBytes (maxBytes <= 0: no byte bound). The
	// bound holds while the values are copied, so a page of large values
	// never costs more memory than the budget; the first key is always
	// returned, whatever its size, so a caller paging through advances.
	RangeBytes(prefix, after []byte, limit, maxBytes int) (RangeResult, error)
	// EtcdRange answers an etcd Range on the applied state (etcd.go),
	// within maxBytes of keys and values (<= 0: no bound). A revision
	// compacted or not reached yet is refused with a *RangeError.
	EtcdRange(req *pb.RangeRequest, maxBytes int) (*pb.RangeResponse, error)
	// CompactedRevision is the revision history was last compacted at.
	CompactedRevision() uint64
	// HashKV hashes the history as of rev (0: the current revision); a
	// revision compacted or not reached yet is refused with a *RangeError.
	HashKV(rev int64) (KVHash, error)
	// Events returns the changes to keys in [key, end) (etcd's range_end
	// rules) at revisions from..to, in revision order and key order within
	// a revision, each with the key's version before it if prev, at most
	// limit of them (<= 0: all); more says the limit cut the list. Once
	// compacted at c, a from at or below c is refused with a *RangeError
	// (compaction may have dropped a deletion at c).
	Events(key, end []byte, from, to uint64, prev bool, limit int) (evs []*Event, more bool, err error)
	// Leases lists the leases, in id order, with their keys; Lease is one
	// (found false if there is none).
	Leases() ([]LeaseInfo, error)
	Lease(id int64) (info LeaseInfo, found bool, err error)
	// Snapshot writes a consistent image of the whole state to w and
	// says which applied index and revision it holds.
	Snapshot(w io.Writer) (SnapshotInfo, error)
	// Freeze captures the state as it is now (between batches), to be
	// written as a snapshot later while Apply goes on: taking it is cheap,
	// writing it costs what Snapshot does. Close it when done.
	Freeze() (Frozen, error)
	// Restore replaces the whole state with a snapshot read from r. A
	// damaged or invalid snapshot is refused with an error wrapping
	// ErrBadSnapshot, and the previous state is kept untouched.
	Restore(r io.Reader) error
	// Sync makes everything applied so far durable. It is needed only
	// when the store was opened with NoSync; otherwise each Apply is
	// durable when it returns.
	Sync() error
	// Close releases the store. Later calls return ErrClosed.
	Close() error
}

// Frozen is a state captured by Freeze. Its methods may be called from
// another goroutine than Apply's, concurrently with it.
type Frozen interface {
	// Info says which applied index and revision the state holds.
	Info() SnapshotInfo
	// WriteSnapshot writes the captured state to w in the snapshot format
	// (what Snapshot would have written when Freeze was called).
	WriteSnapshot(w io.Writer) error
	// Close releases what holds the state (for bbolt, a read
	// transaction, which keeps the pages it reads from being reused).
	// Closing again does nothing (it may report that it is closed).
	Close() error
}

// Entry is one committed log entry handed to Apply. Data is an encoded
// kvpb.Command, or empty for an entry that carries no command (Raft's empty
// entries; the runtime should pass configuration changes this way too, so
// the applied index covers every index).
type Entry struct {
	Index uint64
	Data  []byte
}

// Status is the outcome class of an applied entry; see kvpb.Status.
type Status = kvpb.Status

// The statuses an entry can have. See docs/kvstore.md for when each occurs.
const (
	StatusOK               = kvpb.Status_STATUS_OK
	StatusCASFailed        = kvpb.Status_STATUS_CAS_FAILED
	StatusStaleDuplicate   = kvpb.Status_STATUS_STALE_DUPLICATE
	StatusInvalid          = kvpb.Status_STATUS_INVALID
	StatusMalformed        = kvpb.Status_STATUS_MALFORMED
	StatusSessionExpired   = kvpb.Status_STATUS_SESSION_EXPIRED
	StatusNoop             = kvpb.Status_STATUS_NOOP
	StatusAlreadyApplied   = kvpb.Status_STATUS_ALREADY_APPLIED
	StatusPermissionDenied = kvpb.Status_STATUS_PERMISSION_DENIED
	StatusSessionLimit     = kvpb.Status_STATUS_SESSION_LIMIT
	StatusNoSpace          = kvpb.Status_STATUS_NO_SPACE
	StatusKeyNotFound      = kvpb.Status_STATUS_KEY_NOT_FOUND
	StatusLeaseNotFound    = kvpb.Status_STATUS_LEASE_NOT_FOUND
	StatusCompacted        = kvpb.Status_STATUS_COMPACTED
	StatusFutureRevision   = kvpb.Status_STATUS_FUTURE_REVISION
	StatusLeaseExists      = kvpb.Status_STATUS_LEASE_EXISTS
)

// Result is what applying one entry produced.
type Result struct {
	// Index is the log index of the entry this result answers.
	Index  uint64
	Status Status
	// Err explains StatusInvalid, StatusMalformed, StatusStaleDuplicate
	// and StatusSessionExpired, in words a person can act on.
	Err string
	// Revision is the store revision after the command. For a
	// Duplicate it is the revision the original command produced.
	Revision uint64
	// Existed and Exists say whether the key was present before and
	// after the command.
	Existed bool
	Exists  bool
	// Version is the key's version after the command (0 when absent).
	// For a failed CAS it is the key's current version.
	Version uint64
	// CurrentValue is the key's value when a CAS failed (nil if absent),
	// so the client can retry without another read.
	CurrentValue []byte
	// ClientID is the new session's id, for a Register.
	ClientID uint64
	// Duplicate is set when the command's seq equals its session's last
	// applied seq: it was not applied again and this is the remembered
	// result.
	Duplicate bool
	// Etcd is an etcd transaction's answer (etcd.go); its headers carry
	// only the revision.
	Etcd *pb.TxnResponse
}

// Succeeded reports whether the command did what it asked (StatusOK).
func (r Result) Succeeded() bool { return r.Status == StatusOK }

// GetResult is the answer to Get.
type GetResult struct {
	Value    []byte
	Version  uint64
	Found    bool
	Revision uint64 // the store revision the read saw
}

// KeyValue is one key in a RangeResult.
type KeyValue struct {
	Key     []byte
	Value   []byte
	Version uint64
}

// RangeResult is the answer to Range.
type RangeResult struct {
	Entries  []KeyValue
	More     bool   // more keys with the prefix follow the last entry
	Revision uint64 // the store revision the read saw
	// ByteLimited says the byte budget, not the key limit, ended the page.
	ByteLimited bool
}

// rangePage decides which entries a Range page takes, in order.
type rangePage struct {
	limit, maxBytes int // <= 0: unbounded
	keys, bytes     int // taken so far
}

// room reports whether the next entry, of size bytes of key and value, may
// join the page, and counts it if so. The first entry always may, so that a
// caller paging through always advances; otherwise it marks r as cut
// short, saying which bound did it.
func (p *rangePage) room(size int, r *RangeResult) bool {
	if p.keys > 0 {
		if p.limit > 0 && p.keys >= p.limit {
			r.More = true
			return false
		}
		if p.maxBytes > 0 && p.bytes+size > p.maxBytes {
			r.More, r.ByteLimited = true, true
			return false
		}
	}
	p.keys++
	p.bytes += size
	return true
}

// SnapshotInfo identifies the state a snapshot holds.
type SnapshotInfo struct {
	AppliedIndex uint64
	Revision     uint64
}

// Options configure a store.
type Options struct {
	// MaxClients bounds the exactly-once sessions remembered for a
	// Register that carries no policy of its own (from a build before
	// session TTLs; servers now stamp theirs, see SessionPolicy): when one
	// would exceed it, the least recently used session (smallest last log
	// index) is evicted. It is part of the replicated semantics: every
	// node of a cluster must use the same value. 0 means
	// DefaultMaxClients.
	MaxClients int

	// NoSync (bbolt only) skips the fsync at the end of each Apply. A
	// process crash loses nothing, but after a power loss or kernel crash
	// recent batches may be gone (or, as bbolt warns, the file damaged):
	// use it only when the WAL is the durable record and the runtime can
	// replay it (or rebuild the store from a snapshot), and call Sync
	// before relying on AppliedIndex for log compaction.
	NoSync bool
	// LockTimeout (bbolt only) is how long OpenBolt waits for another
	// process's lock on the file. 0 means DefaultLockTimeout.
	LockTimeout time.Duration
	// OnFailure (bbolt only), if set, is called with an error no caller
	// was there to get: a failed commit of batches Apply had answered,
	// made by the store's timer because no Apply or read came within the
	// commit interval (NoSync), which fails the store (it answers every
	// later call with that error), called with the store locked; or a
	// failed chunk of the pruning after a compaction (boltcompact.go),
	// called from the pruning goroutine without the lock, which fails the
	// store only if the chunk's transaction held answered batches. A
	// server stops on either, as it does when Apply fails. It must not
	// call the store.
	OnFailure func(error)
}

// Defaults for Options.
const (
	DefaultMaxClients  = 10000
	DefaultLockTimeout = time.Second
)

// Hard limits, enforced the same way by every implementation so that an
// oversized command is an Invalid result on every node rather than a
// storage error on some. The server's configurable limits sit below them.
const (
	// MaxKeySize kept layout 3's history keys (histKey: the key with each
	// 0x00 byte doubled, plus 10 bytes) within bbolt's 32 KiB key limit.
	// Layout 4 needs only 8 bytes more than the key, but a member still on
	// layout 3 in a rolling upgrade must accept every key the others do.
	MaxKeySize = (32<<10 - 10) / 2
	// MaxValueSize keeps one value, and so one snapshot record, bounded.
	MaxValueSize = 64 << 20
)

var (
	// ErrClosed is returned by a store after Close.
	ErrClosed = errors.New("kvstore: store is closed")
	// ErrNotContiguous is returned by Apply for entries whose indexes do
	// not continue the applied index one by one.
	ErrNotContiguous = errors.New("kvstore: entry indexes are not contiguous with the applied index")
	// ErrBadSnapshot is wrapped by every refusal of Restore and
	// VerifySnapshot: the input is damaged, truncated, or not a snapshot.
	ErrBadSnapshot = errors.New("kvstore: bad snapshot")
	// ErrCorrupt is wrapped when the bbolt file holds data this package
	// could not have written.
	ErrCorrupt = errors.New("kvstore: corrupt store")
)

// lockTimeout is how long opening waits for the file's lock.
func (o Options) lockTimeout() time.Duration {
	if o.LockTimeout <= 0 {
		return DefaultLockTimeout
	}
	return o.LockTimeout
}

func (o Options) maxClients() uint64 {
	if o.MaxClients <= 0 {
		return DefaultMaxClients
	}
	return uint64(o.MaxClients)
}
