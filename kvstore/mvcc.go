package kvstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// History (multi-version concurrency control, etcd's model): every write
// gets a revision, and the store keeps, besides each key's current version,
// every version each key has had since the last compaction, a deletion
// being a version too (a tombstone). A read at revision r sees, for each
// key, its newest version at or below r, unless that is a tombstone. All
// writes of one command share one revision.
//
// Each key's current version is found without the history: Memory keeps
// the current versions in a key table, Bolt each key's head in an index in
// memory (keyindex.go). The history holds every version, the current ones
// included. Memory orders it by key, then revision (histKey); Bolt by
// revision, each version linked to the key's previous one, so that a
// batch's writes append to it (bolt.go). Either way scanHistory yields it
// in (key, revision) order, the order of HashKV; snapshots take it in
// revision order (snapshot.go). Compacting at revision c removes what no read at c or later can see:
// every version older than the newest one at or below c, and that one too
// if it is a tombstone.

// kvMeta is what the store keeps about a version besides its value.
type kvMeta struct {
	// modRev is the revision that wrote this version (the native API's
	// version, etcd's mod_revision).
	modRev uint64
	// createRev is the revision that created the key (after its last
	// deletion, if any); count is how many writes the key has had since
	// (etcd's version). A tombstone has count 0.
	createRev, count uint64
	// lease is the lease the key is attached to (0: none).
	lease uint64
}

// tombstone reports whether m records a deletion.
func (m kvMeta) tombstone() bool { return m.count == 0 }

// next is the meta of a write at rev over the key's current version cur
// (found: there is one). A write attaches the key to no lease unless it
// says so (etcd's rule: a put without a lease detaches the key).
func (cur kvMeta) next(rev uint64, found bool) kvMeta {
	if !found {
		return kvMeta{modRev: rev, createRev: rev, count: 1}
	}
	return kvMeta{modRev: rev, createRev: cur.createRev, count: cur.count + 1}
}

// metaSize is the stored size of a kvMeta: four big-endian uint64s.
const metaSize = 32

func putMeta(b []byte, m kvMeta) {
	binary.BigEndian.PutUint64(b[0:], m.modRev)
	binary.BigEndian.PutUint64(b[8:], m.createRev)
	binary.BigEndian.PutUint64(b[16:], m.count)
	binary.BigEndian.PutUint64(b[24:], m.lease)
}

func getMeta(b []byte) kvMeta {
	return kvMeta{
		modRev:    binary.BigEndian.Uint64(b[0:]),
		createRev: binary.BigEndian.Uint64(b[8:]),
		count:     binary.BigEndian.Uint64(b[16:]),
		lease:     binary.BigEndian.Uint64(b[24:]),
	}
}

// histKey orders history entries by key, then by revision: the key with
// each 0x00 byte escaped as 0x00 0xFF, then the terminator 0x00 0x01, then
// the revision big-endian. Escaping keeps byte order between keys of which
// one is a prefix of the other.
func histKey(dst, key []byte, rev uint64) []byte {
	dst = appendEscaped(dst, key)
	dst = append(dst, 0, 1)
	return binary.BigEndian.AppendUint64(dst, rev)
}

// histPrefix is where key's history entries start (or, for the start of a
// range, where those of keys at or after key start).
func histPrefix(dst, key []byte) []byte {
	return appendEscaped(dst, key)
}

func appendEscaped(dst, key []byte) []byte {
	for {
		i := bytes.IndexByte(key, 0)
		if i < 0 {
			return append(dst, key...)
		}
		dst = append(dst, key[:i+1]...)
		dst = append(dst, 0xFF)
		key = key[i+1:]
	}
}

var errHistKey = errors.New("malformed history key")

// splitHistKey undoes histKey.
func splitHistKey(hk []byte) (key []byte, rev uint64, err error) {
	if len(hk) < 10 {
		return nil, 0, errHistKey
	}
	body, tail := hk[:len(hk)-8], hk[len(hk)-8:]
	if body[len(body)-2] != 0 || body[len(body)-1] != 1 {
		return nil, 0, errHistKey
	}
	body = body[:len(body)-2]
	key = make([]byte, 0, len(body))
	for {
		i := bytes.IndexByte(body, 0)
		if i < 0 {
			key = append(key, body...)
			break
		}
		if i+1 >= len(body) || body[i+1] != 0xFF {
			return nil, 0, errHistKey
		}
		key = append(key, body[:i+1]...)
		body = body[i+2:]
	}
	return key, binary.BigEndian.Uint64(tail), nil
}

// inRange reports whether key lies in [start, end); an empty end means no
// upper bound.
func inRange(key, start, end []byte) bool {
	return bytes.Compare(key, start) >= 0 && (len(end) == 0 || bytes.Compare(key, end) < 0)
}

// version is one entry of a key's history, as scanHistory yields it.
type version struct {
	key, value []byte
	meta       kvMeta
}

// history is what the shared logic needs from an implementation's history
// table, inside a batch or a read.
type history interface {
	// scanHistory calls fn with every history entry of the keys in
	// [start, end) (end empty: no bound), in (key, revision) order, until
	// fn returns false. The slices are valid only during the call.
	scanHistory(start, end []byte, fn func(v version) bool) error
}

// visibleScanner is a history that finds each key's version at a
// revision without reading the key's whole history (Bolt's).
type visibleScanner interface {
	scanVisible(start, end []byte, rev uint64, fn func(v version) bool) error
}

// scanAt calls fn with each key in [start, end) as it was at rev: the
// newest version at or below rev that is not a tombstone.
func scanAt(h history, start, end []byte, rev uint64, fn func(v version) bool) error {
	if vs, ok := h.(visibleScanner); ok {
		return vs.scanVisible(start, end, rev, fn)
	}
	var (
		pending version // the newest visible version of the key being read
		have    bool
		stopped bool
	)
	err := h.scanHistory(start, end, func(v version) bool {
		if have && !bytes.Equal(v.key, pending.key) {
			have = false
			if !pending.meta.tombstone() && !fn(pending) {
				stopped = true
				return false
			}
		}
		if v.meta.modRev <= rev {
			pending = version{key: append(pending.key[:0], v.key...), value: append(pending.value[:0], v.value...), meta: v.meta}
			have = true
		}
		return true
	})
	if err != nil || stopped || !have || pending.meta.tombstone() {
		return err
	}
	fn(pending)
	return nil
}

// compactChunk is how many history entries the memory store's compact
// plans before it deletes them: compactPlan's chunk ends at the first key
// after that many, so it holds them plus one key's history at most (the
// Bolt store prunes after the command, pruneChunk at a time). Planning the
// whole history at once held every doomed entry in memory: compacting
// 600,000 overwrites took the leader's live heap from 37 to 174 MB
// (docs/bench.md, "A compaction's plan, a chunk at a time"). A variable,
// so that a test's small history can span many chunks.
var compactChunk = 4096

// laterPruner is a history that deletes what a compaction dooms after
// the command (the Bolt store, boltcompact.go): schedulePrune marks the
// history below rev as to be pruned.
type laterPruner interface {
	schedulePrune(rev uint64) error
}

// pruneNow deletes what compacting at rev dooms, a chunk at a time: the
// scan must not run over the entries being deleted, and planning the
// whole history at once would hold them all.
func pruneNow(st state, rev uint64) error {
	var start []byte
	for {
		doomed, next, err := compactPlan(st, start, rev, compactChunk)
		if err != nil {
			return err
		}
		for _, v := range doomed {
			if err := st.deleteHistory(v.key, v.rev, v.newest); err != nil {
				return err
			}
		}
		if next == nil {
			return nil
		}
		start = next
	}
}

// doomedVersion is a history entry a compaction removes; newest says it
// is the key's newest version at or below the compacted revision (a
// tombstone), which may be its head.
type doomedVersion struct {
	key    []byte
	rev    uint64
	newest bool
}

// compactPlan lists the history entries compacting at rev removes, scanning
// the history from key start (nil: the first): for each key, the versions
// older than its newest one at or below rev, and that one too if it is a
// tombstone below rev (one at rev stays until a later compaction, so a
// watch from rev, the first revision clients may watch from, still sees
// the deletion). It stops at the first key after at least limit entries and
// returns that key as next, to scan from once these are deleted; next is
// nil when the scan reached the end.
func compactPlan(h history, start []byte, rev uint64, limit int) (doomed []doomedVersion, next []byte, err error) {
	var (
		key    []byte
		newest kvMeta // the key's newest version at or below rev so far
		have   bool
	)
	settle := func() {
		if have && newest.tombstone() && newest.modRev < rev {
			doomed = append(doomed, doomedVersion{key, newest.modRev, true})
		}
		have = false
	}
	limit = max(limit, 1) // 0 would stop at start, and start again there
	err = h.scanHistory(start, nil, func(v version) bool {
		if !bytes.Equal(v.key, key) {
			settle()
			if len(doomed) >= limit {
				next = clone(v.key)
				return false
			}
			key = clone(v.key)
		}
		if v.meta.modRev > rev {
			return true
		}
		if have {
			doomed = append(doomed, doomedVersion{key, newest.modRev, false})
		}
		newest, have = v.meta, true
		return true
	})
	if next == nil {
		settle()
	}
	return doomed, next, err
}

// checkHistoryEntry checks a history entry read from storage or a
// snapshot: a plausible version within the store's revision.
func checkHistoryEntry(key []byte, m kvMeta, rev uint64) error {
	switch {
	case m.modRev == 0 || m.modRev > rev:
		return fmt.Errorf("history entry of key %q at revision %d, outside 1..%d", key, m.modRev, rev)
	case !m.tombstone() && (m.createRev == 0 || m.createRev > m.modRev):
		return fmt.Errorf("history entry of key %q at revision %d created at %d", key, m.modRev, m.createRev)
	}
	return nil
}

func metaFromProto(kv *kvpb.KeyValue) kvMeta {
	return kvMeta{modRev: kv.Version, createRev: kv.CreateRevision, count: kv.Count, lease: kv.Lease}
}
