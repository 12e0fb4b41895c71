package kvstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Bolt is the Store of the real server, kept in one bbolt file. Batches
// are applied into a bbolt write transaction that also records the applied
// index, so after a restart the store is exactly at some batch boundary
// and replaying entries it already has is skipped (idempotent).
//
// Opened with NoSync, Bolt leaves that transaction open across Apply calls
// and commits it later (boltpending.go): at once when anything reads the
// state, otherwise after commitInterval, commitEntries entries or
// commitBytes of them. Without NoSync every Apply commits, durably, before
// it returns.
type Bolt struct {
	// file is the open file. A restore or defragmentation swaps in a new
	// one, under writeMu; readers load it anew for each transaction.
	file atomic.Pointer[boltFile]
	path string
	opts Options

	// writeMu serializes the writers (Apply, Restore, Close) so that the
	// published index follows commits in order.
	writeMu sync.Mutex
	closed  atomic.Bool
	// usage is what the last commit left (Usage), for readers that must
	// not open a transaction (metrics, the quota check).
	usage atomic.Pointer[Usage]
	// authGen counts the applies and restores that changed an auth record
	// (AuthGeneration); authView is the records read at one (authview.go).
	authGen  atomic.Uint64
	authView atomic.Pointer[AuthView]
	// commits counts the write transactions committed (Commits).
	commits atomic.Uint64
	// index is the key index of the last commit (keyindex.go), which also
	// carries that commit's applied index and revisions.
	index atomic.Pointer[keyIndex]
	// applied is where Apply has brought the state, committed or not.
	applied atomic.Pointer[appliedMark]
	// pending is the write transaction Apply left open (nil: everything
	// applied is committed), guarded by writeMu; hasPending says whether
	// there is one without the lock (set when the transaction begins, so a
	// read that comes during an Apply waits for it and commits: letting
	// such reads go to the last commit instead was slower under mixed
	// load, docs/bench.md). commitTimer commits it when nothing
	// else has within commitInterval. failed is set once applies whose
	// results were returned could not be committed (boltpending.go).
	pending     *pendingTx
	hasPending  atomic.Bool
	commitTimer *time.Timer
	failed      atomic.Pointer[error]
	// sinceHandBack counts the bytes of entries applied, and commitsSince
	// the write transactions committed, since the mapped pages were last
	// handed back (handBackEvery, handBackCommits). Guarded by writeMu.
	sinceHandBack, commitsSince int
	// pruner plans the pruning of the compaction in progress, kept from
	// one chunk to the next; prunedSince counts the history entries
	// deleted since a pruning last finished. Guarded by writeMu. The
	// pruning goroutine is woken by pruneKick, stopped by pruneQuit
	// (closed once, by pruneStop), and closes pruneDone when it ends
	// (boltcompact.go).
	pruner                          *boltPruner
	prunedSince                     int
	pruneKick, pruneQuit, pruneDone chan struct{}
	pruneStop                       sync.Once
	// retiring counts the files retired and not yet closed (retire);
	// retireErr is the first error closing one.
	retiring  sync.WaitGroup
	retireMu  sync.Mutex
	retireErr error
}

// boltFile is one open bbolt file and the read transactions on it. A file
// that was replaced (or the store closed) is closed by whichever of
// retire and the end of its last read transaction comes last, never with
// a read transaction still on it: bbolt's Close waits for those holding
// the meta lock that ending any transaction takes, so a short read begun
// before the swap would end only after the longest (a snapshot being
// written, a backup).
type boltFile struct {
	db      *bbolt.DB
	mu      sync.Mutex
	readers int
	retired string // why the file is no longer the store's ("" while it is)
}

// enter counts a read transaction about to begin on f; false if f was
// retired.
func (f *boltFile) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.retired != "" {
		return false
	}
	f.readers++
	return true
}

var _ Store = (*Bolt)(nil)

// The bbolt layout; docs/kvstore.md describes it.
var (
	bucketMeta = []byte("meta") // the keys below
	// revision u64 | key -> the key's version at that revision: the
	// history, in revision order (and the revision index, leases.go).
	// Which version of a key is its newest is not stored: the key index
	// (keyindex.go) is built from the history when the file is opened.
	bucketRevs = []byte("revs")
	// lease id u64 -> kvpb.Lease; lease id u64 | key -> nothing
	bucketLeases    = []byte("leases")
	bucketLeaseKeys = []byte("lease_keys")
	bucketClients   = []byte("clients")    // client id u64 -> kvpb.ClientRecord
	bucketLRU       = []byte("client_lru") // last_index u64 -> client id u64

	keyFormat      = []byte("format")
	keyApplied     = []byte("applied_index")
	keyRevision    = []byte("revision")
	keyClientCount = []byte("client_count")
	// Absent in a file from a build before them: 0, none, and (for
	// used_bytes) counted when the file is opened.
	keyUsedBytes    = []byte("used_bytes")
	keySessionClock = []byte("session_clock")
	keyAlarms       = []byte("alarms") // kvpb.SnapshotHeader holding only alarms
	keyCompacted    = []byte("compacted_revision")
	// Present while a compaction's pruning is not done: a zero byte, the
	// revision the pass under way prunes for (8 bytes), then the history
	// key it goes on from (none: the first).
	keyCompacting = []byte("compacting_from")
)

// boltFormatVersion is the layout version stored under meta/format.
// Version 1, from before history, stored a version u64 before each value
// and had no history bucket; version 2 had no revision index and no
// leases; version 3 kept the history in a second bucket ordered by key
// (bucketHistoryV3), which cost every write a second random leaf page;
// version 4 kept each key's newest value in kv as well as in revs, which
// wrote every value twice; version 5 kept each key's head in a bucket,
// kv, ordered by key (bucketKVV5), which cost every write a random leaf
// page, now an index in memory. OpenBolt upgrades all five (migrateV1,
// migrateV2, migrateV3, migrateKeyTable).
const boltFormatVersion = 6

// bucketKVV5 is layouts 1 to 5's key table: user key -> the key's newest
// version (layouts 1 to 4) or its head (5).
var bucketKVV5 = []byte("kv")

// bucketHistoryV3 is layout 3's history: histKey -> meta | value.
var bucketHistoryV3 = []byte("history")

// initialMmapSize is bbolt's first memory map: address space, not memory.
// 10 GiB, as etcd's backend maps: below it the file grows without a remap,
// and a remap waits for every read transaction, a snapshot's included.
const initialMmapSize = 10 << 30

// OpenBolt opens (creating if needed) the store in the bbolt file at path.
//
// bbolt options: the freelist is not written on commit (NoFreelistSync)
// and is kept as a hash map, which makes commits cheaper at the cost of
// rebuilding the freelist by scanning when the file is opened; fsync on
// every commit stays on unless opts.NoSync. The memory map starts at 10
// GiB of address space (not memory): a commit that must grow the map waits
// for every open read transaction, and a snapshot being written holds one
// for as long as writing takes (tens of seconds with a large history), so
// with a smaller map every apply stalled for that long each time the file
// crossed a GiB (bbolt grows a map of a GiB or more a GiB at a time).
//
// An existing file is checked first (every page its trees reach is read);
// a file bbolt refuses or that fails the check is an error wrapping
// ErrDamaged, and the file is left as it was. So is one whose history
// does not decode or does not add up to the bytes it says it holds, found
// while the key index is built from it.
func OpenBolt(path string, opts Options) (*Bolt, error) {
	timeout := opts.lockTimeout()
	var db *bbolt.DB
	err := checkBolt(path, timeout)
	if err == nil {
		db, err = openRecovering(path, &bbolt.Options{
			Timeout:         timeout,
			NoSync:          opts.NoSync,
			NoFreelistSync:  true,
			FreelistType:    bbolt.FreelistMapType,
			InitialMmapSize: initialMmapSize,
		})
	}
	if errors.Is(err, bolterrors.ErrTimeout) {
		// bbolt's own word for a lock it could not take is "timeout",
		// which does not tell the operator what to do.
		return nil, fmt.Errorf("open kv store %s: %s is in use by another process, most likely another keyvald on the same data directory: "+
			"its lock was not released within %v (stop that process, or use another data directory): %w", path, filepath.Dir(path), timeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open kv store %s: %w", path, err)
	}
	b := &Bolt{path: path, opts: opts}
	b.file.Store(&boltFile{db: db})
	b.commitTimer = time.AfterFunc(time.Hour, b.commitIdle)
	b.commitTimer.Stop()
	err = db.Update(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			if err := initBuckets(tx, SnapshotInfo{}, 0); err != nil {
				return err
			}
		}
		if err := migrateV1(tx); err != nil {
			return err
		}
		if err := migrateV2(tx); err != nil {
			return err
		}
		if err := migrateV3(tx); err != nil {
			return err
		}
		if err := migrateKeyTable(tx); err != nil {
			return err
		}
		st, err := loadState(tx)
		if err != nil {
			return err
		}
		if st.index, err = st.buildIndex(); err != nil {
			return fmt.Errorf("%w: %w", ErrDamaged, err)
		}
		// used_bytes was kept write by write; counted again from the
		// index, it tells whether the history lost a key's newest version
		// (the index would hold an older one, or none).
		stored, hadUsed := st.used, st.hasUsed
		if err := st.countUsed(); err != nil {
			return fmt.Errorf("%w: %w", ErrDamaged, err)
		}
		if hadUsed && st.used != stored {
			return fmt.Errorf("%w: %w: the history's live keys and the sessions come to %d bytes, and meta/%s says %d",
				ErrDamaged, ErrCorrupt, st.used, keyUsedBytes, stored)
		}
		if !hadUsed {
			if err := st.flush(); err != nil {
				return err
			}
		}
		b.publish(st)
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open kv store %s: %w", path, err)
	}
	b.handBackMapped() // building the index read the whole history through the map
	b.startPruning()
	// A restore that a crash interrupted left its file behind: the store
	// is still the one it was to replace. Removed only now that this
	// process holds the store's lock, so that it is never another
	// process's restore in progress.
	if err := os.Remove(path + restoringSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		_ = b.Close()
		return nil, fmt.Errorf("open kv store %s: remove an interrupted restore's file: %w", path, err)
	}
	return b, nil
}

// handBackMapped drops the database file's mapped pages (dropMapped) from
// a read transaction of its own, after a scan of the whole history that
// ran in a write transaction.
func (b *Bolt) handBackMapped() {
	_ = b.file.Load().db.View(func(tx *bbolt.Tx) error { dropMapped(tx); return nil })
}

// initBuckets creates the buckets of an empty store holding info.
func initBuckets(tx *bbolt.Tx, info SnapshotInfo, clients uint64) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	st := &boltState{meta: tx.Bucket(bucketMeta), applied: info.AppliedIndex, rev: info.Revision, nclients: clients, compactDirty: true}
	if err := st.meta.Put(keyFormat, u64(boltFormatVersion)); err != nil {
		return err
	}
	return st.flush()
}

// Path is the file the store lives in.
func (b *Bolt) Path() string { return b.path }

// Sizes reports the file's size as etcd reports dbSize and dbSizeInUse:
// its pages up to their high-water mark (bbolt grows the file itself in
// steps of up to 16 MiB beyond that), and those less the free ones (freed
// by compactions and overwrites), which later writes reuse but only a new
// file (Defragment, a restore) gives back to the file system.
func (b *Bolt) Sizes() (size, inUse int64, err error) {
	if b.closed.Load() {
		return 0, 0, ErrClosed
	}
	tx, st, err := b.begin()
	if err != nil {
		return 0, 0, fmt.Errorf("size of %s: %w", b.path, err)
	}
	defer b.endRead(tx, st.file)
	db := tx.DB()
	size = tx.Size()
	return size, size - int64(db.Stats().FreePageN)*int64(db.Info().PageSize), nil
}

// Apply implements Store: the batch is applied into the open write
// transaction (begun if there is none), which is committed now unless the
// store was opened with NoSync (see Bolt and boltpending.go).
func (b *Bolt) Apply(entries []Entry) ([]Result, error) {
	results, err := b.apply(entries)
	if err != nil && len(entries) > 0 && !errors.Is(err, ErrClosed) {
		return nil, fmt.Errorf("apply entries %d..%d: %w", entries[0].Index, entries[len(entries)-1].Index, err)
	}
	return results, err
}

// apply is Apply, under writeMu.
func (b *Bolt) apply(entries []Entry) ([]Result, error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if b.closed.Load() {
		return nil, ErrClosed
	}
	if err := b.failure(); err != nil {
		return nil, err
	}
	at := b.applied.Load()
	if len(entries) == 0 || entries[len(entries)-1].Index <= at.index {
		// Nothing new (replay after a restart): answer without a write
		// transaction and its fsync.
		return applyBatch(&replayState{applied: at.index, rev: at.rev}, entries, 0)
	}
	// Refused before the open transaction is touched: a refused batch
	// must not cost the batches applied into it before.
	if err := checkContiguous(entries, at.index); err != nil {
		return nil, err
	}
	p, err := b.openPending()
	if err != nil {
		return nil, err
	}
	st := p.st
	// bbolt keeps the values written, without copying, until the commit:
	// each batch has an arena of its own.
	st.arena = make([]byte, 0, arenaSize(entries))
	results, err := applyBatch(st, entries, b.opts.maxClients())
	if err != nil {
		b.abandon(p, err)
		return nil, err
	}
	for _, e := range entries {
		p.bytes += len(e.Data)
	}
	p.entries += len(entries)
	defer b.kickPruning()
	b.countAuthChange(st)
	if !b.opts.NoSync || p.commitDue() {
		if err := b.commitLocked(); err != nil {
			return nil, err
		}
		return results, nil
	}
	if !p.returned {
		// Left open for the first time: committed within commitInterval
		// even if nothing else comes.
		p.returned = true
		b.commitTimer.Reset(commitInterval)
	}
	b.applied.Store(markOf(st))
	b.noteUsage(st)
	return results, nil
}

// publish makes st, just committed (or opened), what readers see: its
// key index, stamped with the commit, and its usage.
func (b *Bolt) publish(st *boltState) {
	st.index.applied, st.index.rev, st.index.compacted = st.applied, st.rev, st.compactRev
	st.index.pruneRev, st.index.pruneFrom = st.pruneRev, string(st.pruneFrom)
	b.index.Store(st.index)
	b.applied.Store(markOf(st))
	b.noteUsage(st)
}

// Usage reports what the store holds against its limits, as of the last
// Apply.
func (b *Bolt) Usage() Usage {
	if u := b.usage.Load(); u != nil {
		return *u
	}
	return Usage{}
}

// noteUsage caches st's usage once it is committed (or being opened).
func (b *Bolt) noteUsage(st *boltState) {
	b.usage.Store(&Usage{Bytes: st.used, Sessions: st.nclients, SessionClockMs: st.clock, Alarms: alarmsFromProto(st.alarmList)})
}

// AppliedIndex implements Store.
func (b *Bolt) AppliedIndex() uint64 { return b.applied.Load().index }

// AuthGeneration moves whenever an applied batch or a restore changes an
// auth record: before Apply or Restore returns, and never before a read
// begun once it has moved would see the change. So what a caller read of
// the auth records while it stood still is current until it moves
// (AuthView keeps them so). A read that began before a restore's new
// file was put in place and checks the generation before it moves may
// keep an old record: a check concurrent with the restore, ordered
// before it, and forgotten once Restore returns.
func (b *Bolt) AuthGeneration() uint64 { return b.authGen.Load() }

// Commits is how many write transactions the store has committed since
// it was opened. Under NoSync, Apply leaves its transaction open and any
// read commits it, so a count near the number of requests says something
// reads the store for each of them.
func (b *Bolt) Commits() uint64 { return b.commits.Load() }

// countAuthChange moves AuthGeneration if the batch just applied into st
// changed an auth record. Under writeMu, with the batch's transaction
// open: a read begun from now on waits for it (hasPending) and sees it,
// whether Apply then commits it or leaves it open.
func (b *Bolt) countAuthChange(st *boltState) {
	if st.auth.changed {
		st.auth.changed = false
		b.authGen.Add(1)
	}
}

// Revision implements Store.
func (b *Bolt) Revision() uint64 { return b.applied.Load().rev }

// Get implements Store.
func (b *Bolt) Get(key []byte) (GetResult, error) {
	if b.closed.Load() {
		return GetResult{}, ErrClosed
	}
	var r GetResult
	err := b.view(func(st *boltState) error {
		r.Revision = st.rev
		if len(key) == 0 {
			return nil // bbolt has no empty keys, and neither do we
		}
		v, meta, found, err := st.get(key)
		r.Value, r.Version, r.Found = clone(v), meta.modRev, found
		return err
	})
	if err != nil {
		return GetResult{}, fmt.Errorf("get %q: %w", key, err)
	}
	return r, nil
}

// Range implements Store.
func (b *Bolt) Range(prefix, after []byte, limit int) (RangeResult, error) {
	return b.RangeBytes(prefix, after, limit, 0)
}

// RangeBytes implements Store.
func (b *Bolt) RangeBytes(prefix, after []byte, limit, maxBytes int) (RangeResult, error) {
	if b.closed.Load() {
		return RangeResult{}, ErrClosed
	}
	var r RangeResult
	page := rangePage{limit: limit, maxBytes: maxBytes}
	err := b.view(func(st *boltState) error {
		r.Revision = st.rev
		end := rangeBound(auth.PrefixEnd(prefix))
		return st.scanLatest([]byte(rangeStart(prefix, after)), end, func(v version) bool {
			if !page.room(len(v.key)+len(v.value), &r) {
				return false
			}
			r.Entries = append(r.Entries, KeyValue{Key: clone(v.key), Value: clone(v.value), Version: v.meta.modRev})
			return true
		})
	})
	if err != nil {
		return RangeResult{}, fmt.Errorf("range %q: %w", prefix, err)
	}
	return r, nil
}

// EtcdRange implements Store, on one read transaction.
func (b *Bolt) EtcdRange(req *pb.RangeRequest, maxBytes int) (resp *pb.RangeResponse, err error) {
	err = b.view(func(st *boltState) error {
		resp, err = etcdRange(st, req, maxBytes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("etcd range %q: %w", req.Key, err)
	}
	return resp, nil
}

// hashPruneTimeout bounds how long HashKV prunes before it gives up on a
// member that compactions keep giving more to prune.
var hashPruneTimeout = 10 * time.Second

// HashKV implements Store, on one read transaction.
func (b *Bolt) HashKV(rev int64) (h KVHash, err error) {
	// Every version is hashed, and how far pruning has got differs from
	// member to member: hashed once it is done, again if a compaction
	// applied meanwhile left some to do.
	ctx, cancel := context.WithTimeout(context.Background(), hashPruneTimeout)
	defer cancel()
	for pruned := false; err == nil && !pruned; {
		if err = b.FinishCompaction(ctx); err != nil {
			break
		}
		err = b.view(func(st *boltState) error {
			if pruned = !st.pruning(); pruned {
				h, err = hashKV(st, rev)
			}
			return err
		})
	}
	if err != nil {
		return KVHash{}, fmt.Errorf("hash the history at revision %d: %w", rev, err)
	}
	return h, nil
}

// Events implements Store, on one read transaction.
func (b *Bolt) Events(key, end []byte, from, to uint64, prev bool, limit int) (evs []*Event, more bool, err error) {
	err = b.view(func(st *boltState) error {
		start, stop := keySpan(key, end)
		evs, more, err = events(st, start, stop, from, to, prev, limit)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("events of %q from revision %d: %w", key, from, err)
	}
	return evs, more, nil
}

// EventsApplied is Events read from what Apply has applied, committed or
// not: inside the write transaction Apply left open, under writeMu, where
// Events commits it first (begin). It is for the watch dispatcher, which
// reads each batch's changes as soon as it is applied: committing for
// each of those reads undid leaving the transaction open whenever a
// watcher was synced. It holds Apply off while it reads, so only a read
// with a limit is made so; with no limit (a revision of more changes than
// a page), or with nothing left open, it is Events.
func (b *Bolt) EventsApplied(key, end []byte, from, to uint64, prev bool, limit int) (evs []*Event, more bool, err error) {
	if limit <= 0 {
		return b.Events(key, end, from, to, prev, limit)
	}
	b.writeMu.Lock()
	if b.pending == nil {
		b.writeMu.Unlock()
		return b.Events(key, end, from, to, prev, limit)
	}
	defer b.writeMu.Unlock()
	if b.closed.Load() {
		return nil, false, ErrClosed
	}
	if err := b.failure(); err != nil {
		return nil, false, err
	}
	start, stop := keySpan(key, end)
	if evs, more, err = events(b.pending.st, start, stop, from, to, prev, limit); err != nil {
		return nil, false, fmt.Errorf("events of %q from revision %d: %w", key, from, err)
	}
	return evs, more, nil
}

// Leases implements Store.
func (b *Bolt) Leases() (infos []LeaseInfo, err error) {
	err = b.view(func(st *boltState) error {
		infos, err = leaseInfos(st, st.leaseIDs())
		return err
	})
	return infos, err
}

// Lease implements Store.
func (b *Bolt) Lease(id int64) (info LeaseInfo, found bool, err error) {
	err = b.view(func(st *boltState) error {
		info, found, err = leaseInfo(st, id)
		return err
	})
	return info, found, err
}

// view runs fn on a read transaction of the applied state.
func (b *Bolt) view(fn func(st *boltState) error) error {
	if b.closed.Load() {
		return ErrClosed
	}
	tx, st, err := b.begin()
	if err != nil {
		return err
	}
	defer b.endRead(tx, st.file)
	return fn(st)
}

// viewTries is how many times begin tries to pair the key index with a
// read transaction of the same commit before it makes Apply wait.
const viewTries = 8

// begin commits what Apply left open, so that a read sees everything
// applied before it, then opens a read transaction and pairs it with the
// key index of the same commit. The index is published after its commit,
// so the transaction begun after loading it is of that commit or a later
// one; a later one (a commit between the two, or not yet published) is
// retried: its history may lack a version the older index points to
// (compacted), or hold keys the index lacks. After viewTries, it holds
// Apply off.
func (b *Bolt) begin() (*bbolt.Tx, *boltState, error) {
	if err := b.commitPending(); err != nil {
		return nil, nil, err
	}
	for try := 0; ; try++ {
		if try == viewTries {
			b.writeMu.Lock()
			defer b.writeMu.Unlock()
			if err := b.commitHeld(); err != nil {
				return nil, nil, err
			}
		}
		tx, st, err := b.pair(b.file.Load())
		if errors.Is(err, errRetired) {
			if b.closed.Load() {
				return nil, nil, ErrClosed
			}
			continue // replaced meanwhile: the store's file is a new one
		}
		if err == nil || !errors.Is(err, errNotPaired) || try >= viewTries {
			return tx, st, err
		}
		runtime.Gosched()
	}
}

// errNotPaired says the key index and the read transaction begun after
// loading it are of different commits (begin).
var errNotPaired = errors.New("the key index and the file are of different commits")

// errRetired says the file was no longer the store's when a read
// transaction was to begin on it.
var errRetired = errors.New("the file was replaced or closed")

// pair opens a read transaction on f, counted as its reader (enter), and
// pairs it with the key index loaded before it, if they are of the same
// commit. The transaction ends with endRead; on an error, pair ends it.
func (b *Bolt) pair(f *boltFile) (*bbolt.Tx, *boltState, error) {
	if !f.enter() {
		return nil, nil, fmt.Errorf("begin a read transaction of %s: %w", b.path, errRetired)
	}
	ix := b.index.Load()
	tx, err := f.db.Begin(false)
	if err != nil {
		b.leave(f)
		return nil, nil, fmt.Errorf("begin a read transaction of %s: %w", b.path, err)
	}
	st, err := loadState(tx)
	if err != nil {
		_ = b.endRead(tx, f)
		return nil, nil, err
	}
	st.file = f
	if st.applied != ix.applied || st.rev != ix.rev || st.compactRev != ix.compacted ||
		st.pruneRev != ix.pruneRev || string(st.pruneFrom) != ix.pruneFrom {
		_ = b.endRead(tx, f)
		return nil, nil, fmt.Errorf("%w: %w: the key index is of index %d, revision %d, and the file of index %d, revision %d",
			ErrCorrupt, errNotPaired, ix.applied, ix.rev, st.applied, st.rev)
	}
	st.index = ix
	return tx, st, nil
}

// CompactedRevision implements Store.
func (b *Bolt) CompactedRevision() uint64 { return b.applied.Load().compacted }

// Snapshot implements Store. It reads one bbolt read transaction, so it
// is consistent and does not block Apply.
func (b *Bolt) Snapshot(w io.Writer) (SnapshotInfo, error) {
	f, err := b.Freeze()
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer f.Close()
	if err := f.WriteSnapshot(w); err != nil {
		return SnapshotInfo{}, err
	}
	return f.Info(), nil
}

// Freeze implements Store: the state is a bbolt read transaction, begun
// now and read when the snapshot is written.
func (b *Bolt) Freeze() (Frozen, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	tx, st, err := b.begin()
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", b.path, err)
	}
	return &boltFrozen{b: b, tx: tx, st: st}, nil
}

// dropMappedEvery is how many bytes of history a snapshot reads between
// two dropMapped: the mapped pages of a scan stay below a few times this.
const dropMappedEvery = 1 << 20

// handBackEvery and handBackCommits bound what Apply's commits map in
// between two hand-backs of the mapped pages. Bytes of entries alone do
// not: each commit reads, through the map, the pages the commit before it
// wrote (the history's last leaf, the branches above it, the small
// buckets), at new places in the file each time (bbolt copies on write),
// so what stays mapped grows by a few pages a commit however small the
// commit. With a bound of 4 MiB of entries alone, members offered 2,000
// small puts a second after a compaction mapped some 20 MB of the file
// between hand-backs (docs/bench.md). A hand-back costs one madvise over
// the file and the next commit a few page faults.
const (
	handBackEvery   = 1 << 20
	handBackCommits = 16
)

type boltFrozen struct {
	b      *Bolt
	tx     *bbolt.Tx
	st     *boltState
	closed atomic.Bool
}

func (f *boltFrozen) Info() SnapshotInfo {
	return SnapshotInfo{AppliedIndex: f.st.applied, Revision: f.st.rev}
}

func (f *boltFrozen) WriteSnapshot(w io.Writer) error {
	sw := newSnapshotWriter(w, &kvpb.SnapshotHeader{AppliedIndex: f.st.applied, Revision: f.st.rev,
		SessionClockMs: f.st.clock, Alarms: f.st.alarmList, CompactedRevision: f.st.compactRev})
	// The history is kept by revision, so it is read in one pass in
	// the format's order. Each key's newest version must be in it, as
	// the index says, since a lost one would leave a snapshot that no
	// reader accepts. The index's heads, put in the same order, are
	// matched as the versions pass: a merge, where a lookup in the index
	// per version took more than half of the snapshot's time.
	heads := f.st.index.byRevision()
	var next int
	var live uint64
	// The scan maps in every page of the history; each time it has read
	// a share of them, they are handed back (dropMapped), so that memory
	// does not grow with the history.
	var scanned int
	defer dropMapped(f.tx)
	err := f.st.eachVersion(func(key []byte, meta kvMeta, _ uint64, value []byte) error {
		if next < len(heads) && heads[next].rev == meta.modRev && heads[next].e.key == string(key) {
			next++
			if !meta.tombstone() {
				live++
			}
		}
		if scanned += len(key) + len(value) + versionHead; scanned >= dropMappedEvery {
			dropMapped(f.tx)
			scanned = 0
		}
		sw.history(key, value, meta)
		return sw.err
	})
	if err == nil && next < len(heads) {
		err = fmt.Errorf("%w: the newest version of %q, at revision %d, is missing from the history", ErrCorrupt, heads[next].e.key, heads[next].rev)
	}
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", f.b.path, err)
	}
	sw.setLiveKeys(live)
	for _, id := range f.st.leaseIDs() {
		l, err := f.st.lease(id)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", f.b.path, err)
		}
		sw.lease(l)
	}
	c := f.st.clients.Cursor()
	for k, v := c.First(); k != nil && sw.err == nil; k, v = c.Next() {
		rec, err := decodeClient(k, v)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", f.b.path, err)
		}
		sw.client(rec)
	}
	if err := sw.finish(); err != nil {
		return fmt.Errorf("snapshot %s: %w", f.b.path, err)
	}
	return nil
}

// Close ends the read transaction; closing again does nothing (the
// replica may close a snapshot from two places).
func (f *boltFrozen) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	return f.b.endRead(f.tx, f.st.file)
}

// endRead ends a read transaction that pair began on f, and closes f if
// it was retired and this was its last reader.
func (b *Bolt) endRead(tx *bbolt.Tx, f *boltFile) error {
	err := tx.Rollback()
	b.leave(f)
	return err
}

// leave uncounts a read transaction of f (enter).
func (b *Bolt) leave(f *boltFile) {
	f.mu.Lock()
	f.readers--
	last := f.retired != "" && f.readers == 0
	f.mu.Unlock()
	if last {
		b.closeFile(f)
	}
}

// restoringSuffix names, beside the store's file, the file a restore
// writes before it takes the store's place.
const restoringSuffix = ".restoring"

// restoreCommitEvery is how many bytes of records a restore writes per
// bbolt transaction: a transaction holds every page it writes in memory
// until it commits, so this bounds what a restore holds beyond the key
// index (which the store keeps in memory anyway). A variable, so that a
// test's small state can span many transactions.
var restoreCommitEvery = 64 << 20

// Restore implements Store. The snapshot is written to a new file beside
// the store's, in transactions of restoreCommitEvery bytes, synced, and
// renamed over the store's file only once the whole stream has checked
// out: until then readers see the old state, and a stream that fails a
// check (or a crash) leaves the old state as it was, the new file removed
// (or, after a crash, removed by OpenBolt). The old file is closed once
// the read transactions still on it end (retire).
func (b *Bolt) Restore(r io.Reader) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if b.closed.Load() {
		return ErrClosed
	}
	if err := b.commitHeld(); err != nil {
		return fmt.Errorf("restore %s: %w", b.path, err)
	}
	path := b.path + restoringSuffix
	db, st, err := b.restoreInto(path, r, false)
	if err == nil {
		err = b.install(db, st, path)
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", b.path, err)
	}
	return nil
}

// Defragment rewrites the store into a new file that holds only the
// pages in use, as etcd's defragmentation does: the state is written as a
// snapshot straight into a new file, as a restore writes one (restoreInto),
// which then takes the old file's place. Apply waits meanwhile (the new
// file is the state of one commit); readers go on, on the old file.
func (b *Bolt) Defragment() error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if b.closed.Load() {
		return ErrClosed
	}
	if err := b.failure(); err != nil {
		return fmt.Errorf("defragment %s: %w", b.path, err)
	}
	// Pruned first (at full speed, as Apply waits anyway): the new file
	// is to hold only what the state needs, and is written with no mark.
	for more := true; more; {
		var err error
		if more, err = b.pruneStepLocked(pruneChunk); err != nil {
			return fmt.Errorf("defragment %s: %w", b.path, err)
		}
	}
	if err := b.commitHeld(); err != nil {
		return fmt.Errorf("defragment %s: %w", b.path, err)
	}
	// No commit can come between the index and the transaction while
	// writeMu is held.
	tx, st, err := b.pair(b.file.Load())
	if err != nil {
		return fmt.Errorf("defragment %s: %w", b.path, err)
	}
	frozen := &boltFrozen{b: b, tx: tx, st: st}
	pr, pw := io.Pipe()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		pw.CloseWithError(frozen.WriteSnapshot(pw))
	}()
	path := b.path + restoringSuffix
	db, restored, err := b.restoreInto(path, pr, true)
	pr.CloseWithError(errors.New("defragment: the new file was abandoned")) // unblocks the writer if restoreInto stopped early
	<-wrote
	_ = frozen.Close()
	if err == nil {
		err = b.install(db, restored, path)
	}
	if err != nil {
		return fmt.Errorf("defragment %s: %w", b.path, err)
	}
	return nil
}

// restoreInto writes the snapshot in r to a new bbolt file at path and,
// if it checks out, syncs it: the open file and its state are returned.
// On an error no file is left at path.
func (b *Bolt) restoreInto(path string, r io.Reader, pruned bool) (_ *bbolt.DB, _ *boltState, err error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("remove an earlier restore's file: %w", err)
	}
	// Not synced commit by commit: the file counts only once renamed,
	// after one sync of the whole.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: b.opts.lockTimeout(), NoSync: true,
		NoFreelistSync: true, FreelistType: bbolt.FreelistMapType, InitialMmapSize: initialMmapSize})
	if err != nil {
		return nil, nil, fmt.Errorf("create %s: %w", path, err)
	}
	sink := &boltSink{db: db, index: newKeyIndex()}
	defer func() {
		if err != nil {
			if sink.tx != nil {
				_ = sink.tx.Rollback()
			}
			err = errors.Join(err, db.Close(), os.Remove(path))
		}
	}()
	if err := sink.beginTx(); err != nil {
		return nil, nil, err
	}
	if err := initBuckets(sink.tx, SnapshotInfo{}, 0); err != nil {
		return nil, nil, err
	}
	sink.bind()
	info, err := readSnapshot(r, sink)
	if err != nil {
		return nil, nil, err
	}
	tx := sink.tx
	st := &boltState{meta: tx.Bucket(bucketMeta), index: sink.index, applied: info.AppliedIndex, rev: info.Revision, nclients: sink.n,
		used: sink.used, clock: sink.clock, clockDirty: true, compactRev: sink.compactRev, compactDirty: true,
		pruneDirty: true}
	if !pruned {
		// A snapshot may hold versions its compaction doomed that its
		// member had not pruned yet (boltcompact.go): pruned here (a
		// compacted revision of 0 leaves nothing to prune).
		st.pruneRev = sink.compactRev
	}
	st.setAlarms(sink.alarms)
	if err := st.flush(); err != nil {
		return nil, nil, err
	}
	sink.tx = nil
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("commit: %w", err)
	}
	if err := db.Sync(); err != nil {
		return nil, nil, fmt.Errorf("sync %s: %w", path, err)
	}
	return db, st, nil
}

// install renames the file restoreInto wrote at path over the store's,
// makes it the store, with its state, and closes the old one (retire).
func (b *Bolt) install(db *bbolt.DB, st *boltState, path string) error {
	if err := os.Rename(path, b.path); err != nil {
		return errors.Join(fmt.Errorf("replace the store's file: %w", err), db.Close(), os.Remove(path))
	}
	db.NoSync = b.opts.NoSync
	b.retire(b.file.Swap(&boltFile{db: db}), "a restore or defragmentation replaced it")
	b.pruner = nil // of the old file's index
	b.publish(st)
	b.authGen.Add(1) // the restored state may have other auth records
	b.kickPruning()
	b.handBackMapped() // the writes read pages of the new file through the map
	// The new file is the store now, whatever the directory's sync says;
	// a crash before the rename is durable brings back the old file,
	// which the replica restores again from the same snapshot file.
	return (disk.OSFS{}).SyncDir(filepath.Dir(b.path))
}

// retire marks f as no longer the store's file, for the reason why, and
// closes it now if no read transaction is on it, or else when the last
// one ends (leave): a restore is not held up by the readers of the file
// it replaced. Close waits for every retired file to be closed.
func (b *Bolt) retire(f *boltFile, why string) {
	b.retiring.Add(1)
	f.mu.Lock()
	f.retired = why
	last := f.readers == 0
	f.mu.Unlock()
	if last {
		b.closeFile(f)
	}
}

// closeFile closes a retired file with no reader left.
func (b *Bolt) closeFile(f *boltFile) {
	defer b.retiring.Done()
	if err := f.db.Close(); err != nil {
		b.retireMu.Lock()
		defer b.retireMu.Unlock()
		if b.retireErr == nil {
			b.retireErr = fmt.Errorf("close %s as %s: %w", b.path, f.retired, err)
		}
	}
}

// boltSink writes a snapshot's records into a new file, committing every
// restoreCommitEvery bytes (written).
type boltSink struct {
	db                      *bbolt.DB
	tx                      *bbolt.Tx
	written                 int
	index                   *keyIndex
	clients, lru            *bbolt.Bucket
	revs, leases, leaseKeys *bbolt.Bucket
	n                       uint64
	// What the header says and what the records count (Usage).
	used, clock, compactRev uint64
	// byKey: the stream's history comes in key order (format 2).
	byKey  bool
	alarms []*kvpb.Alarm
}

func (s *boltSink) beginTx() (err error) {
	if s.tx, err = s.db.Begin(true); err != nil {
		return fmt.Errorf("begin a write transaction: %w", err)
	}
	return nil
}

// bind takes the buckets of the transaction begun.
func (s *boltSink) bind() {
	tx := s.tx
	s.clients, s.lru = tx.Bucket(bucketClients), tx.Bucket(bucketLRU)
	s.revs, s.leases, s.leaseKeys = tx.Bucket(bucketRevs), tx.Bucket(bucketLeases), tx.Bucket(bucketLeaseKeys)
	// Sessions arrive in key order: pack those pages full. The history
	// arrives in revision order (format 3), its keys' order, and packs as
	// it does in Apply; a format 2 stream's comes by key, in no revision
	// order, and keeps bbolt's default for random writes.
	s.clients.FillPercent, s.lru.FillPercent = 0.95, 0.95
	if !s.byKey {
		s.revs.FillPercent = historyFill
	}
}

// room makes room for a record of n bytes: once the transaction holds
// restoreCommitEvery bytes, it is committed and the next one begun.
func (s *boltSink) room(n int) error {
	if s.written >= restoreCommitEvery {
		tx := s.tx
		s.tx, s.written = nil, 0
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		if err := s.beginTx(); err != nil {
			return err
		}
		s.bind()
	}
	s.written += n
	return nil
}

func (s *boltSink) begin(h *kvpb.SnapshotHeader, format uint32) error {
	s.clock, s.alarms, s.compactRev = h.SessionClockMs, h.Alarms, h.CompactedRevision
	if s.byKey = format == snapshotFormatKeyOrder; s.byKey {
		s.revs.FillPercent = bbolt.DefaultFillPercent
	}
	return nil
}

// keyValue counts a live key: history already stored it, and its head
// in the index has its value's size.
func (s *boltSink) keyValue(kv *kvpb.KeyValue) error {
	h := s.index.get(kv.Key)
	if h == nil || h.meta.modRev != kv.Version {
		return badSnapshot("key %q is live at revision %d, which its history does not end with", kv.Key, kv.Version)
	}
	s.used += KeyBytes(len(kv.Key), int(h.size))
	if kv.Lease != 0 {
		if err := s.room(8 + len(kv.Key)); err != nil {
			return err
		}
		return s.leaseKeys.Put(append(u64(kv.Lease), kv.Key...), nil)
	}
	return nil
}

// history stores a version, and makes it the key's newest: in either
// format a key's records arrive in revision order, so the head the index
// has is the version before, and the last one stays.
func (s *boltSink) history(kv *kvpb.KeyValue, _ []byte) error {
	var prev uint64
	var stored string
	if h := s.index.get(kv.Key); h != nil {
		prev, stored = h.meta.modRev, h.key
	} else {
		stored = string(kv.Key)
	}
	v := versionBytes(kv.Value, metaFromProto(kv), prev)
	if err := s.room(8 + len(kv.Key) + len(v)); err != nil {
		return err
	}
	if err := s.revs.Put(revisionKey(nil, kv.Version, kv.Key), v); err != nil {
		return err
	}
	s.index.set(stored, metaFromProto(kv), prev, len(kv.Value))
	return nil
}

func (s *boltSink) lease(l *kvpb.Lease) error {
	data, err := proto.Marshal(l)
	if err != nil {
		return fmt.Errorf("encode lease %d: %w", l.Id, err)
	}
	if err := s.room(8 + len(data)); err != nil {
		return err
	}
	return s.leases.Put(u64(uint64(l.Id)), data)
}

func (s *boltSink) client(rec *kvpb.ClientRecord) error {
	s.used += sessionBytes(rec)
	data, err := proto.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode session %d: %w", rec.ClientId, err)
	}
	if err := s.room(24 + len(data)); err != nil {
		return err
	}
	if err := s.clients.Put(u64(rec.ClientId), data); err != nil {
		return err
	}
	s.n++
	return s.lru.Put(u64(rec.LastIndex), u64(rec.ClientId))
}

// Sync implements Store: it flushes commits made under NoSync.
func (b *Bolt) Sync() error {
	// Under writeMu: a restore or Close would otherwise close the file
	// mid-sync.
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if b.closed.Load() {
		return ErrClosed
	}
	if err := b.commitHeld(); err != nil {
		return fmt.Errorf("sync %s: %w", b.path, err)
	}
	if err := b.file.Load().db.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", b.path, err)
	}
	return nil
}

// Close implements Store.
func (b *Bolt) Close() error {
	b.stopPruning()
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if b.closed.Swap(true) {
		return ErrClosed
	}
	b.commitTimer.Stop()
	var commitErr error
	if b.pending != nil {
		commitErr = b.commitLocked()
	}
	// Waits, as bbolt's own Close would, for the read transactions still
	// open.
	b.retire(b.file.Load(), "the store was closed")
	b.retiring.Wait()
	b.retireMu.Lock()
	defer b.retireMu.Unlock()
	return errors.Join(commitErr, b.retireErr)
}

// boltState is the shared apply logic's view of one bbolt transaction.
// The counters in meta are read once and written back by flush.
//
// Every entry of a batch looks up, writes and deletes several keys; the
// state keeps what those need from one operation to the next, so that a
// batch allocates per transaction rather than per key: one cursor per
// bucket for lookups and deletes (bbolt's Get and Delete make a fresh
// cursor, and grow its stack, on every call), and an arena for the values
// written (bbolt keeps them, without copying, until the commit).
type boltState struct {
	// file is, for a read transaction (begin), the file it is on.
	file               *boltFile
	meta, clients, lru *bbolt.Bucket
	// index is the key index: the published one for a reader, a clone
	// being written for a batch.
	index                  *keyIndex
	applied, rev, nclients uint64
	compactRev             uint64
	compactDirty           bool
	// pruneRev is the revision the pass of pruning under way prunes for
	// (boltcompact.go; compactRev, or one before it that the pass began
	// with; 0: none), which goes on from history key pruneFrom (nil: its
	// start).
	pruneRev   uint64
	pruneFrom  []byte
	pruneDirty bool

	// used, the session clock and the alarms (Usage); hasUsed says the
	// file holds used_bytes. The clock and alarms are written back only
	// when changed.
	used, clock             uint64
	hasUsed                 bool
	alarmList               []*kvpb.Alarm
	clockDirty, alarmsDirty bool
	// lastGet is the last key get looked up and what the index holds for it,
	// while haveLast, so that the put or delete that follows it counts
	// the bytes it replaces, moves the key between leases and links the
	// new version to the one before without a second lookup.
	lastGet  []byte
	last     head
	haveLast bool

	revs, leases, leaseKeysB *bbolt.Bucket
	revKeyBuf                []byte
	// historyDeleted counts the history entries deleteHistory removed in
	// this transaction.
	historyDeleted int

	revsCur, clientsCur, lruCur *bbolt.Cursor
	arena                       []byte
	auth                        authMemo
	// probe looks keys up in the index (keyIndex.find).
	probe indexEntry
}

// head is what the index holds for a key: the size of its value (-1: absent or
// deleted), its lease, and its newest version's revision and that
// version's previous one (0: none).
type head struct {
	size      int
	lease     uint64
	rev, prev uint64
	// key is the key as the index holds it ("" if it does not).
	key string
}

// prevFor is the previous version of a version written at rev over h:
// h's own, unless h was written at rev too (the same key twice in one
// revision), which rev's version replaces.
func (h head) prevFor(rev uint64) uint64 {
	if h.rev == rev {
		return h.prev
	}
	return h.rev
}

// Apply sizes the arena for its batch: every command's bytes (a value is
// stored with its 8-byte version) plus arenaPerEntry for the session
// record and index a write also stores. A batch that needs more (long
// error texts in remembered results) continues in blocks of arenaChunk.
const (
	arenaPerEntry = 128
	arenaChunk    = 4 << 10
)

func arenaSize(entries []Entry) int {
	n := 64 // the counters flush writes
	for _, e := range entries {
		n += len(e.Data) + arenaPerEntry
	}
	return n
}

// alloc returns n bytes that stay valid until the transaction ends.
func (st *boltState) alloc(n int) []byte {
	if cap(st.arena)-len(st.arena) < n {
		st.arena = make([]byte, 0, max(n, arenaChunk))
	}
	start := len(st.arena)
	st.arena = st.arena[:start+n]
	return st.arena[start : start+n : start+n]
}

// u64 is v in the stored form, in the arena (for values bbolt keeps).
func (st *boltState) u64(v uint64) []byte {
	b := st.alloc(8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// seek returns the value stored under key, or nil. c is one of the
// state's cursors (created on first use).
func seek(c **bbolt.Cursor, b *bbolt.Bucket, key []byte) []byte {
	if *c == nil {
		*c = b.Cursor()
	}
	k, v := (*c).Seek(key)
	if !bytes.Equal(k, key) {
		return nil
	}
	return v
}

// remove deletes key, if present, through the cursor c.
func remove(c **bbolt.Cursor, b *bbolt.Bucket, key []byte) error {
	if *c == nil {
		*c = b.Cursor()
	}
	if k, _ := (*c).Seek(key); !bytes.Equal(k, key) {
		return nil
	}
	return (*c).Delete()
}

func loadState(tx *bbolt.Tx) (*boltState, error) {
	st := &boltState{
		meta:    tx.Bucket(bucketMeta),
		clients: tx.Bucket(bucketClients),
		lru:     tx.Bucket(bucketLRU),

		revs:       tx.Bucket(bucketRevs),
		leases:     tx.Bucket(bucketLeases),
		leaseKeysB: tx.Bucket(bucketLeaseKeys),
	}
	if st.meta == nil || st.clients == nil || st.lru == nil ||
		st.revs == nil || st.leases == nil || st.leaseKeysB == nil {
		return nil, fmt.Errorf("%w: a bucket is missing", ErrCorrupt)
	}
	st.revs.FillPercent = historyFill
	format, err := st.metaU64(keyFormat)
	if err != nil {
		return nil, err
	}
	if format != boltFormatVersion {
		return nil, fmt.Errorf("%w: layout version %d; this build reads version %d", ErrCorrupt, format, boltFormatVersion)
	}
	if st.applied, err = st.metaU64(keyApplied); err != nil {
		return nil, err
	}
	if st.rev, err = st.metaU64(keyRevision); err != nil {
		return nil, err
	}
	if st.nclients, err = st.metaU64(keyClientCount); err != nil {
		return nil, err
	}
	if st.meta.Get(keyUsedBytes) != nil {
		st.hasUsed = true
		if st.used, err = st.metaU64(keyUsedBytes); err != nil {
			return nil, err
		}
	}
	if st.compactRev, err = st.metaU64(keyCompacted); err != nil {
		return nil, err
	}
	if mark := st.meta.Get(keyCompacting); mark != nil {
		if len(mark) < 9 || mark[0] != 0 {
			return nil, fmt.Errorf("%w: meta/%s is %x", ErrCorrupt, keyCompacting, mark)
		}
		st.pruneRev = binary.BigEndian.Uint64(mark[1:9])
		if len(mark) > 9 {
			st.pruneFrom = clone(mark[9:])
		}
		if st.pruneRev == 0 || st.pruneRev > st.compactRev {
			return nil, fmt.Errorf("%w: meta/%s prunes for revision %d, compacted at %d", ErrCorrupt, keyCompacting, st.pruneRev, st.compactRev)
		}
	}
	if st.meta.Get(keySessionClock) != nil {
		if st.clock, err = st.metaU64(keySessionClock); err != nil {
			return nil, err
		}
	}
	// Usually empty: decoding costs only while an alarm is raised.
	if raw := st.meta.Get(keyAlarms); len(raw) > 0 {
		var h kvpb.SnapshotHeader
		if err := proto.Unmarshal(raw, &h); err != nil {
			return nil, fmt.Errorf("%w: meta/%s does not decode", ErrCorrupt, keyAlarms)
		}
		st.alarmList = h.Alarms
	}
	return st, nil
}

// countUsed counts used_bytes from the index and the sessions: for a file
// from a build before used_bytes, and to check the one stored.
func (st *boltState) countUsed() error {
	st.used = 0
	st.index.ascend(nil, nil, func(e *indexEntry) bool {
		if !e.meta.tombstone() {
			st.used += KeyBytes(len(e.key), int(e.size))
		}
		return true
	})
	err := st.clients.ForEach(func(k, v []byte) error {
		rec, err := decodeClient(k, v)
		if err != nil {
			return err
		}
		st.used += sessionBytes(rec)
		return nil
	})
	st.hasUsed = err == nil
	return err
}

func (st *boltState) metaU64(key []byte) (uint64, error) {
	v := st.meta.Get(key)
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: meta/%s is %d bytes, want 8", ErrCorrupt, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (st *boltState) flush() error {
	for _, kv := range []struct {
		k []byte
		v uint64
	}{{keyApplied, st.applied}, {keyRevision, st.rev}, {keyClientCount, st.nclients}, {keyUsedBytes, st.used}} {
		if err := st.meta.Put(kv.k, st.u64(kv.v)); err != nil {
			return fmt.Errorf("write meta/%s: %w", kv.k, err)
		}
	}
	if st.compactDirty {
		if err := st.meta.Put(keyCompacted, st.u64(st.compactRev)); err != nil {
			return fmt.Errorf("write meta/%s: %w", keyCompacted, err)
		}
	}
	if st.pruneDirty {
		var err error
		if st.pruning() {
			// In the arena: bbolt keeps a value until the commit.
			v := st.alloc(9 + len(st.pruneFrom))
			v[0] = 0 // the layout's version
			binary.BigEndian.PutUint64(v[1:9], st.pruneRev)
			copy(v[9:], st.pruneFrom)
			err = st.meta.Put(keyCompacting, v)
		} else {
			err = st.meta.Delete(keyCompacting)
		}
		if err != nil {
			return fmt.Errorf("write meta/%s: %w", keyCompacting, err)
		}
	}
	if st.clockDirty {
		if err := st.meta.Put(keySessionClock, st.u64(st.clock)); err != nil {
			return fmt.Errorf("write meta/%s: %w", keySessionClock, err)
		}
	}
	if st.alarmsDirty {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&kvpb.SnapshotHeader{Alarms: st.alarmList})
		if err != nil {
			return fmt.Errorf("encode alarms: %w", err)
		}
		if err := st.meta.Put(keyAlarms, data); err != nil {
			return fmt.Errorf("write meta/%s: %w", keyAlarms, err)
		}
	}
	return nil
}

func (st *boltState) appliedIndex() uint64     { return st.applied }
func (st *boltState) setAppliedIndex(i uint64) { st.applied = i }
func (st *boltState) revision() uint64         { return st.rev }
func (st *boltState) setRevision(r uint64)     { st.rev = r }
func (st *boltState) clientCount() uint64      { return st.nclients }

func (st *boltState) get(key []byte) ([]byte, kvMeta, bool, error) {
	meta, found, err := st.lookup(key)
	if err != nil || !found {
		return nil, kvMeta{}, false, err
	}
	value, err := st.newestValue(key, meta)
	if err != nil {
		st.haveLast = false
		return nil, kvMeta{}, false, err
	}
	return value, meta, true, nil
}

func (st *boltState) lookup(key []byte) (kvMeta, bool, error) {
	e := st.index.find(&st.probe, key)
	st.lastGet, st.last, st.haveLast = append(st.lastGet[:0], key...), headOf(e), true
	if e == nil || e.meta.tombstone() {
		return kvMeta{}, false, nil
	}
	return e.meta, true, nil
}

// head is the index's head of key before a put or delete, from the get
// just before when it read key.
func (st *boltState) head(key []byte) (head, error) {
	if st.haveLast && bytes.Equal(st.lastGet, key) {
		st.haveLast = false
		return st.last, nil
	}
	st.haveLast = false
	return headOf(st.index.find(&st.probe, key)), nil
}

// headOf is what a put or delete needs of e, a key's index entry (nil:
// none).
func headOf(e *indexEntry) head {
	h := head{size: -1}
	if e == nil {
		return h
	}
	h.rev, h.prev, h.key = e.meta.modRev, e.prev, e.key
	if !e.meta.tombstone() {
		h.size, h.lease = int(e.size), e.meta.lease
	}
	return h
}

// newestValue is the value of key's newest version, whose meta the index holds:
// the history has it.
func (st *boltState) newestValue(key []byte, meta kvMeta) ([]byte, error) {
	v := st.historyAt(key, meta.modRev)
	if v == nil {
		return nil, missingNewest(key, meta.modRev)
	}
	_, _, value, err := splitVersion(key, v)
	return value, err
}

func missingNewest(key []byte, rev uint64) error {
	return fmt.Errorf("%w: the newest version of %q, at revision %d, is missing from the history", ErrCorrupt, key, rev)
}

// record stores key's version v, written at rev over h, in the history,
// and makes it the key's head in the index.
func (st *boltState) record(key []byte, h head, meta kvMeta, prev uint64, value, v []byte) error {
	st.revKeyBuf = revisionKey(st.revKeyBuf[:0], meta.modRev, key)
	if err := st.revs.Put(st.revKeyBuf, v); err != nil {
		return fmt.Errorf("record %q at revision %d: %w", key, meta.modRev, err)
	}
	stored := h.key
	if stored == "" {
		stored = string(key) // new: the index keeps a copy
	}
	st.index.set(stored, meta, prev, len(value))
	return nil
}

// attach moves key from lease from to lease to (0: none).
func (st *boltState) attach(key []byte, from, to uint64) error {
	if from == to {
		return nil
	}
	if from != 0 {
		if err := st.leaseKeysB.Delete(append(u64(from), key...)); err != nil {
			return fmt.Errorf("detach %q from lease %d: %w", key, from, err)
		}
	}
	if to != 0 {
		if err := st.leaseKeysB.Put(append(u64(to), key...), nil); err != nil {
			return fmt.Errorf("attach %q to lease %d: %w", key, to, err)
		}
	}
	return nil
}

func (st *boltState) memo() *authMemo { return &st.auth }

// put builds the new version in the arena: bbolt keeps values, not keys,
// until the commit.
func (st *boltState) put(key, value []byte, meta kvMeta) error {
	st.auth.forget(key)
	h, err := st.head(key)
	if err != nil {
		return err
	}
	v := st.alloc(versionHead + len(value))
	prev := h.prevFor(meta.modRev)
	putVersion(v, meta, prev, value)
	if err := st.record(key, h, meta, prev, value, v); err != nil {
		return err
	}
	if err := st.attach(key, h.lease, meta.lease); err != nil {
		return err
	}
	countPut(st, key, value, max(h.size, 0), h.size >= 0)
	return nil
}

// del makes a live key's newest version a tombstone, which stays in the
// index (so that reads at earlier revisions find the key's versions) until
// a compaction drops it.
func (st *boltState) del(key []byte, rev uint64) error {
	st.auth.forget(key)
	h, err := st.head(key)
	if err != nil || h.size < 0 {
		return err
	}
	v := st.alloc(versionHead)
	meta, prev := kvMeta{modRev: rev}, h.prevFor(rev)
	putVersion(v, meta, prev, nil)
	if err := st.record(key, h, meta, prev, nil, v); err != nil {
		return err
	}
	if err := st.attach(key, h.lease, 0); err != nil {
		return err
	}
	countDelete(st, key, h.size)
	return nil
}

func (st *boltState) scanRevisions(from, to uint64, fn func(rev uint64, key []byte) bool) error {
	c := st.revs.Cursor()
	for k, _ := c.Seek(u64(from)); k != nil; k, _ = c.Next() {
		if len(k) < 8 {
			return fmt.Errorf("%w: revision index entry %x is shorter than a revision", ErrCorrupt, k)
		}
		rev := binary.BigEndian.Uint64(k)
		if rev > to || !fn(rev, k[8:]) {
			return nil
		}
	}
	return nil
}

// compactRevisions has nothing to do: the revision index is the history,
// which deleteHistory compacts, and Events never reads below the
// compacted revision.
func (st *boltState) compactRevisions(uint64) error { return nil }

func (st *boltState) lease(id int64) (*kvpb.Lease, error) {
	v := st.leases.Get(u64(uint64(id)))
	if v == nil {
		return nil, nil
	}
	l := &kvpb.Lease{}
	if err := proto.Unmarshal(v, l); err != nil || l.Id != id {
		return nil, fmt.Errorf("%w: lease record %d does not decode", ErrCorrupt, id)
	}
	return l, nil
}

func (st *boltState) putLease(l *kvpb.Lease) error {
	data, err := proto.Marshal(l)
	if err != nil {
		return fmt.Errorf("encode lease %d: %w", l.Id, err)
	}
	if err := st.leases.Put(u64(uint64(l.Id)), data); err != nil {
		return fmt.Errorf("write lease %d: %w", l.Id, err)
	}
	return nil
}

func (st *boltState) delLease(id int64) error {
	keys, err := st.leaseKeys(id)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := st.leaseKeysB.Delete(append(u64(uint64(id)), k...)); err != nil {
			return fmt.Errorf("detach %q from lease %d: %w", k, id, err)
		}
	}
	if err := st.leases.Delete(u64(uint64(id))); err != nil {
		return fmt.Errorf("delete lease %d: %w", id, err)
	}
	return nil
}

func (st *boltState) leaseKeys(id int64) ([][]byte, error) {
	prefix := u64(uint64(id))
	var keys [][]byte
	c := st.leaseKeysB.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, clone(k[8:]))
	}
	return keys, nil
}

// leaseIDs are the leases' ids, ascending.
func (st *boltState) leaseIDs() []int64 {
	var ids []int64
	c := st.leases.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) == 8 {
			ids = append(ids, int64(binary.BigEndian.Uint64(k)))
		}
	}
	return ids
}

func (st *boltState) compacted() uint64 { return st.compactRev }

// pruning says a compaction's pruning is not done (boltcompact.go).
func (st *boltState) pruning() bool { return st.pruneRev != 0 }
func (st *boltState) setCompacted(rev uint64) {
	st.compactRev, st.compactDirty = rev, true
}

// scanIndex calls fn with each key of the index in [start, end) and its
// entry, in key order, until fn returns false or an error. The key is
// valid only during the call.
func (st *boltState) scanIndex(start, end []byte, fn func(key []byte, e *indexEntry) (bool, error)) error {
	var (
		key []byte
		err error
	)
	st.index.ascend(start, end, func(e *indexEntry) bool {
		key = append(key[:0], e.key...)
		var more bool
		more, err = fn(key, e)
		return more && err == nil
	})
	return err
}

func (st *boltState) scanLatest(start, end []byte, fn func(v version) bool) error {
	return st.scanIndex(start, end, func(k []byte, e *indexEntry) (bool, error) {
		if e.meta.tombstone() {
			return true, nil
		}
		value, err := st.newestValue(k, e.meta)
		if err != nil {
			return false, err
		}
		return fn(version{key: k, value: value, meta: e.meta}), nil
	})
}

// scanHistory reads each key's versions by following the links from its
// newest one back: one lookup in the history per version.
func (st *boltState) scanHistory(start, end []byte, fn func(v version) bool) error {
	var chain []version
	return st.scanIndex(start, end, func(k []byte, e *indexEntry) (bool, error) {
		newest := st.historyAt(k, e.meta.modRev)
		if newest == nil {
			return false, missingNewest(k, e.meta.modRev)
		}
		var err error
		if chain, err = st.versions(chain[:0], k, newest); err != nil {
			return false, err
		}
		for i := len(chain) - 1; i >= 0; i-- {
			if !fn(chain[i]) {
				return false, nil
			}
		}
		return true, nil
	})
}

// scanVisible is scanAt's shortcut: each key's walk back from its newest
// version stops at the first one at or below rev.
func (st *boltState) scanVisible(start, end []byte, rev uint64, fn func(v version) bool) error {
	return st.scanIndex(start, end, func(k []byte, e *indexEntry) (bool, error) {
		meta, prev := e.meta, e.prev
		// Walk back from the head; value is read with the version it
		// belongs to, once the walk leaves the head.
		var (
			value []byte
			err   error
		)
		fromHead := true
		for meta.modRev > rev {
			v, err := st.previous(k, meta.modRev, prev)
			if err != nil {
				return false, err
			}
			if v == nil {
				break
			}
			if meta, prev, value, err = splitVersion(k, v); err != nil {
				return false, err
			}
			fromHead = false
		}
		if meta.modRev > rev || meta.tombstone() {
			return true, nil
		}
		if fromHead {
			if value, err = st.newestValue(k, meta); err != nil {
				return false, err
			}
		}
		return fn(version{key: k, value: value, meta: meta}), nil
	})
}

// versions appends to dst key's versions from v, the newest as the
// history stores it, back to the oldest the history holds.
func (st *boltState) versions(dst []version, key, v []byte) ([]version, error) {
	for v != nil {
		meta, prev, value, err := splitVersion(key, v)
		if err != nil {
			return nil, err
		}
		dst = append(dst, version{key: key, value: value, meta: meta})
		if v, err = st.previous(key, meta.modRev, prev); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// previous follows the link from key's version at rev to the one before,
// prev (0: none), as stored; nil if there is none. A missing version ends
// the list if compaction may have removed it (at or below the compacted
// revision: a tombstone, since compaction keeps the newest live version at
// or below it), else the file is corrupt.
func (st *boltState) previous(key []byte, rev, prev uint64) ([]byte, error) {
	switch {
	case prev == 0:
		return nil, nil
	case prev >= rev:
		return nil, fmt.Errorf("%w: version of %q at revision %d links to revision %d", ErrCorrupt, key, rev, prev)
	}
	v := st.historyAt(key, prev)
	if v == nil && prev > st.compactRev {
		return nil, fmt.Errorf("%w: version of %q at revision %d links to revision %d, which the history lacks", ErrCorrupt, key, rev, prev)
	}
	return v, nil
}

// historyAt is key's version at rev as stored, or nil.
func (st *boltState) historyAt(key []byte, rev uint64) []byte {
	st.revKeyBuf = revisionKey(st.revKeyBuf[:0], rev, key)
	return seek(&st.revsCur, st.revs, st.revKeyBuf)
}

func (st *boltState) versionAround(key []byte, rev uint64) (at, before *version, err error) {
	v := st.historyAt(key, rev)
	if v == nil {
		return nil, nil, nil
	}
	meta, prev, value, err := splitVersion(key, v)
	if err != nil {
		return nil, nil, err
	}
	at = &version{key: clone(key), value: clone(value), meta: meta}
	if prev == 0 {
		return at, nil, nil
	}
	if v = st.historyAt(key, prev); v != nil {
		meta, _, value, err := splitVersion(key, v)
		if err != nil {
			return nil, nil, err
		}
		before = &version{key: clone(key), value: clone(value), meta: meta}
	}
	return at, before, nil
}

// deleteHistory removes key's version at rev, and the key from the index
// if that version is its newest (a tombstone: compaction keeps live ones),
// which only one the plan calls newest can be.
func (st *boltState) deleteHistory(key []byte, rev uint64, newest bool) error {
	st.haveLast = false
	st.revKeyBuf = revisionKey(st.revKeyBuf[:0], rev, key)
	if err := remove(&st.revsCur, st.revs, st.revKeyBuf); err != nil {
		return fmt.Errorf("compact %q at revision %d: %w", key, rev, err)
	}
	st.historyDeleted++
	if !newest {
		return nil
	}
	if e := st.index.find(&st.probe, key); e != nil && e.meta.modRev == rev {
		st.index.remove(key)
	}
	return nil
}

func (st *boltState) client(id uint64) (*kvpb.ClientRecord, error) {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], id)
	v := seek(&st.clientsCur, st.clients, k[:])
	if v == nil {
		return nil, nil
	}
	return decodeClient(k[:], v)
}

func (st *boltState) putClient(rec *kvpb.ClientRecord, prevIndex uint64, isNew bool) error {
	data, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(st.alloc(proto.Size(rec))[:0], rec)
	if err != nil {
		return fmt.Errorf("encode session %d: %w", rec.ClientId, err)
	}
	// Keys are copied by bbolt's Put; only values must outlive the call.
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], rec.ClientId)
	if err := st.clients.Put(k[:], data); err != nil {
		return fmt.Errorf("write session %d: %w", rec.ClientId, err)
	}
	if isNew {
		st.nclients++
	} else {
		binary.BigEndian.PutUint64(k[:], prevIndex)
		if err := remove(&st.lruCur, st.lru, k[:]); err != nil {
			return fmt.Errorf("unlink session %d: %w", rec.ClientId, err)
		}
	}
	binary.BigEndian.PutUint64(k[:], rec.LastIndex)
	if err := st.lru.Put(k[:], st.u64(rec.ClientId)); err != nil {
		return fmt.Errorf("link session %d: %w", rec.ClientId, err)
	}
	return nil
}

func (st *boltState) oldestClient() (*kvpb.ClientRecord, error) {
	k, v := st.lru.Cursor().First()
	if k == nil {
		if st.nclients > 0 {
			return nil, fmt.Errorf("%w: %d sessions counted but the LRU index is empty", ErrCorrupt, st.nclients)
		}
		return nil, nil
	}
	if len(v) != 8 {
		return nil, fmt.Errorf("%w: LRU index entry %x is %d bytes, want 8", ErrCorrupt, k, len(v))
	}
	rec, err := st.client(binary.BigEndian.Uint64(v))
	if err != nil {
		return nil, err
	}
	if rec == nil || rec.LastIndex != binary.BigEndian.Uint64(k) {
		return nil, fmt.Errorf("%w: LRU index entry %x names session %d, which is missing or not at that index", ErrCorrupt, k, binary.BigEndian.Uint64(v))
	}
	return rec, nil
}

func (st *boltState) removeClient(rec *kvpb.ClientRecord) error {
	if err := remove(&st.lruCur, st.lru, u64(rec.LastIndex)); err != nil {
		return fmt.Errorf("evict session %d: %w", rec.ClientId, err)
	}
	if err := remove(&st.clientsCur, st.clients, u64(rec.ClientId)); err != nil {
		return fmt.Errorf("evict session %d: %w", rec.ClientId, err)
	}
	st.nclients--
	return nil
}

func (st *boltState) sessionClock() uint64 { return st.clock }
func (st *boltState) setSessionClock(ms uint64) {
	st.clock, st.clockDirty = ms, true
}

func (st *boltState) alarms() []*kvpb.Alarm { return st.alarmList }

func (st *boltState) setAlarms(alarms []*kvpb.Alarm) {
	st.alarmList, st.alarmsDirty = alarms, true
}

func (st *boltState) usedBytes() uint64     { return st.used }
func (st *boltState) setUsedBytes(n uint64) { st.used = n }

// replayState answers a batch that is wholly already applied without a
// transaction; applyBatch never reaches its data methods.
type replayState struct {
	state
	applied, rev uint64
}

func (s *replayState) appliedIndex() uint64 { return s.applied }
func (s *replayState) revision() uint64     { return s.rev }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// A version is stored in the history as its meta, then the revision of
// the key's previous version (0: none), then the value.
const versionHead = metaSize + 8

// historyFill is how full the history's pages are split. The history
// grows at its end (revisions only increase), in Apply and in a restore
// alike: split half full, bbolt's default for random writes, every page
// would stay half empty, and a restored or defragmented file would be
// twice the size of the one it copies.
const historyFill = 0.9

// revisionKey is where the history keeps key's version at rev.
func revisionKey(dst []byte, rev uint64, key []byte) []byte {
	return append(binary.BigEndian.AppendUint64(dst, rev), key...)
}

func putVersion(dst []byte, meta kvMeta, prev uint64, value []byte) {
	putMeta(dst, meta)
	binary.BigEndian.PutUint64(dst[metaSize:], prev)
	copy(dst[versionHead:], value)
}

// versionBytes is a version's stored form in a fresh slice, as bbolt
// keeps it until the commit.
func versionBytes(value []byte, meta kvMeta, prev uint64) []byte {
	v := make([]byte, versionHead+len(value))
	putVersion(v, meta, prev, value)
	return v
}

func splitVersion(key, v []byte) (meta kvMeta, prev uint64, value []byte, err error) {
	if len(v) < versionHead {
		return kvMeta{}, 0, nil, fmt.Errorf("%w: value of key %q is %d bytes, shorter than its meta", ErrCorrupt, key, len(v))
	}
	return getMeta(v), binary.BigEndian.Uint64(v[metaSize:]), v[versionHead:], nil
}

// joinValueV3 is a version's stored form in layouts 2 and 3: its meta,
// then the value.
func joinValueV3(value []byte, meta kvMeta) []byte {
	v := make([]byte, metaSize+len(value))
	putMeta(v, meta)
	copy(v[metaSize:], value)
	return v
}

// allBuckets are the store's buckets.
var allBuckets = [][]byte{bucketMeta, bucketRevs, bucketLeases, bucketLeaseKeys, bucketClients, bucketLRU}

// migrateV1 upgrades a file of layout version 1 in place: each value gets
// the meta of a key written once at its version, which also becomes its
// only history entry.
func migrateV1(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyFormat); len(v) != 8 || binary.BigEndian.Uint64(v) != 1 {
		return nil
	}
	kv := tx.Bucket(bucketKVV5)
	if kv == nil {
		return fmt.Errorf("%w: a bucket is missing", ErrCorrupt)
	}
	hist, err := tx.CreateBucketIfNotExists(bucketHistoryV3)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketHistoryV3, err)
	}
	type upgraded struct{ key, value []byte }
	var all []upgraded
	err = kv.ForEach(func(k, v []byte) error {
		if len(v) < 8 {
			return fmt.Errorf("%w: value of key %q is %d bytes, shorter than its version", ErrCorrupt, k, len(v))
		}
		rev := binary.BigEndian.Uint64(v)
		all = append(all, upgraded{clone(k), joinValueV3(v[8:], kvMeta{modRev: rev, createRev: rev, count: 1})})
		return nil
	})
	if err != nil {
		return err
	}
	for _, u := range all {
		if err := kv.Put(u.key, u.value); err != nil {
			return fmt.Errorf("upgrade %q: %w", u.key, err)
		}
		if err := hist.Put(histKey(nil, u.key, getMeta(u.value).modRev), u.value); err != nil {
			return fmt.Errorf("upgrade %q: %w", u.key, err)
		}
	}
	if err := meta.Put(keyCompacted, u64(0)); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	return meta.Put(keyFormat, u64(2))
}

// migrateV2 upgrades a file of layout version 2 in place: the revision
// index is built from the history, and the (empty) lease buckets made.
func migrateV2(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyFormat); len(v) != 8 || binary.BigEndian.Uint64(v) != 2 {
		return nil
	}
	hist := tx.Bucket(bucketHistoryV3)
	if hist == nil {
		return fmt.Errorf("%w: a bucket is missing", ErrCorrupt)
	}
	for _, name := range [][]byte{bucketRevs, bucketLeases, bucketLeaseKeys} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	revs := tx.Bucket(bucketRevs)
	var entries [][]byte
	err := hist.ForEach(func(hk, _ []byte) error {
		key, rev, err := splitHistKey(hk)
		if err != nil {
			return fmt.Errorf("%w: history key %x: %v", ErrCorrupt, hk, err)
		}
		entries = append(entries, append(u64(rev), key...))
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := revs.Put(e, nil); err != nil {
			return fmt.Errorf("upgrade: %w", err)
		}
	}
	return meta.Put(keyFormat, u64(3))
}

// migrateV3 upgrades a file of layout version 3 in place to the current
// layout: the history, read from its key-ordered bucket, is rewritten by
// revision with each version linked to the one before, and kv goes (the
// key index is built from the history). It holds the whole history in
// memory once.
func migrateV3(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyFormat); len(v) != 8 || binary.BigEndian.Uint64(v) != 3 {
		return nil
	}
	hist := tx.Bucket(bucketHistoryV3)
	if hist == nil {
		return fmt.Errorf("%w: a bucket is missing", ErrCorrupt)
	}
	type upgraded struct {
		key []byte
		rev uint64
		v   []byte
	}
	var (
		all     []upgraded
		lastKey []byte
		lastRev uint64
	)
	err := hist.ForEach(func(hk, v []byte) error {
		key, rev, err := splitHistKey(hk)
		if err != nil {
			return fmt.Errorf("%w: history key %x: %v", ErrCorrupt, hk, err)
		}
		if len(v) < metaSize {
			return fmt.Errorf("%w: history entry of %q at revision %d is %d bytes, shorter than its meta", ErrCorrupt, key, rev, len(v))
		}
		var prev uint64
		if bytes.Equal(key, lastKey) {
			prev = lastRev
		}
		lastKey, lastRev = key, rev
		all = append(all, upgraded{key, rev, versionBytes(v[metaSize:], getMeta(v), prev)})
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range [][]byte{bucketHistoryV3, bucketKVV5, bucketRevs} {
		if err := tx.DeleteBucket(name); err != nil {
			return fmt.Errorf("upgrade: drop bucket %s: %w", name, err)
		}
	}
	revs, err := tx.CreateBucket(bucketRevs)
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	for _, u := range all {
		if err := revs.Put(revisionKey(nil, u.rev, u.key), u.v); err != nil {
			return fmt.Errorf("upgrade %q: %w", u.key, err)
		}
	}
	return meta.Put(keyFormat, u64(boltFormatVersion))
}

// migrateKeyTable upgrades a file of layout version 4 or 5 in place to
// the current layout: its history is already the current one, and the key
// table (each key's newest version in 4, its head in 5) goes, since the
// key index is built from the history when the file is opened.
func migrateKeyTable(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyFormat); len(v) != 8 || (binary.BigEndian.Uint64(v) != 4 && binary.BigEndian.Uint64(v) != 5) {
		return nil
	}
	if err := tx.DeleteBucket(bucketKVV5); err != nil {
		return fmt.Errorf("upgrade: drop bucket %s: %w", bucketKVV5, err)
	}
	return meta.Put(keyFormat, u64(boltFormatVersion))
}

// buildIndex builds the key index from the history: each key's newest
// version is the last of its versions in revision order. Every version is
// checked as it is read, so a damaged history fails the opening.
func (st *boltState) buildIndex() (*keyIndex, error) {
	ix := newKeyIndex()
	err := st.eachVersion(func(key []byte, meta kvMeta, prev uint64, value []byte) error {
		ix.set(ix.keyFor(key), meta, prev, len(value))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ix, nil
}

// eachVersion calls fn with every version in the history, in revision
// order (key order within a revision), checking each as it is read. The
// slices are bbolt's: valid only during the call.
func (st *boltState) eachVersion(fn func(key []byte, meta kvMeta, prev uint64, value []byte) error) error {
	c := st.revs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) <= 8 {
			return fmt.Errorf("%w: history key %x is too short", ErrCorrupt, k)
		}
		key := k[8:]
		meta, prev, value, err := splitVersion(key, v)
		if err != nil {
			return err
		}
		if rev := binary.BigEndian.Uint64(k); meta.modRev != rev {
			return fmt.Errorf("%w: the version of %q under revision %d says revision %d", ErrCorrupt, key, rev, meta.modRev)
		}
		if err := checkHistoryEntry(key, meta, st.rev); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if err := fn(key, meta, prev, value); err != nil {
			return err
		}
	}
	return nil
}

func decodeClient(k, v []byte) (*kvpb.ClientRecord, error) {
	rec := &kvpb.ClientRecord{}
	if err := proto.Unmarshal(v, rec); err != nil || len(k) != 8 || rec.ClientId != binary.BigEndian.Uint64(k) {
		return nil, fmt.Errorf("%w: session record under key %x does not decode", ErrCorrupt, k)
	}
	return rec, nil
}
