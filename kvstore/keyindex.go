package kvstore

import (
	"cmp"
	"slices"
	"strings"
	"unsafe"

	"github.com/google/btree"
)

// keyIndex is the Bolt store's key index, kept in memory as etcd keeps
// its own: each key's head (its newest version's meta, the revision of the
// version before it, and its value's size), in key order. The values and
// every older version stay in bbolt's history (revs), which a write only
// appends to; so an apply reads and dirties no page for the key it writes,
// where a key-ordered bucket cost it a random leaf page to read and to
// write back per key.
//
// A published index is never changed: Apply writes a copy-on-write clone
// and publishes it once its batch has committed, so a reader holding one
// sees exactly the state of one commit.
type keyIndex struct {
	tree *btree.BTreeG[*indexEntry]
	// The commit the index is of: readers pair it with a bbolt read
	// transaction of the same commit (Bolt.begin), and the store's
	// AppliedIndex, Revision and CompactedRevision are these. A chunk
	// of pruning changes none of those, only the marker of how far it got
	// (pruneRev, pruneFrom), which the pairing compares too: an index
	// from before a chunk holds tombstones whose versions the chunk
	// deleted.
	applied, rev, compacted uint64
	pruneRev                uint64
	pruneFrom               string
}

// indexEntry is one key's head. An entry in a published index is never
// modified: a write replaces it with a new one.
type indexEntry struct {
	key  string
	meta kvMeta
	// prev is the revision of the version before the newest (0: none).
	prev uint64
	// size is the newest version's value length.
	size uint32
}

// indexDegree is the B-tree's degree (etcd's, for its key index): nodes
// of up to 63 entries, so a clone's first write to a leaf copies 63
// pointers.
const indexDegree = 32

func newKeyIndex() *keyIndex {
	return &keyIndex{tree: btree.NewG(indexDegree, func(a, b *indexEntry) bool { return a.key < b.key })}
}

// clone is a copy the caller may change without changing ix.
func (ix *keyIndex) clone() *keyIndex {
	c := *ix
	c.tree = ix.tree.Clone()
	return &c
}

// get is key's entry, or nil.
func (ix *keyIndex) get(key []byte) *indexEntry {
	return ix.find(new(indexEntry), key)
}

// find is get with the caller's probe, for a caller that looks keys up
// for every write and read (a store state) and would otherwise allocate a
// probe and a copy of the key each time. The probe's key is key's own
// bytes, only while the tree is searched: the tree keeps nothing of it.
func (ix *keyIndex) find(probe *indexEntry, key []byte) *indexEntry {
	probe.key = unsafe.String(unsafe.SliceData(key), len(key))
	e, _ := ix.tree.Get(probe)
	probe.key = ""
	return e
}

// set makes an entry with meta the head of key, given as the string the
// entry is to keep: for a key the index holds, its entry's own (keyFor),
// so that an overwrite copies no key.
func (ix *keyIndex) set(key string, meta kvMeta, prev uint64, size int) {
	ix.tree.ReplaceOrInsert(&indexEntry{key: key, meta: meta, prev: prev, size: uint32(size)})
}

// keyFor is key as the index holds it, or a copy if it holds none.
func (ix *keyIndex) keyFor(key []byte) string {
	if e := ix.get(key); e != nil {
		return e.key
	}
	return string(key)
}

// byRevision is every entry, in the order of the history's records:
// by revision, then by key.
func (ix *keyIndex) byRevision() []revisionHead {
	out := make([]revisionHead, 0, ix.tree.Len())
	ix.tree.Ascend(func(e *indexEntry) bool {
		out = append(out, revisionHead{rev: e.meta.modRev, e: e})
		return true
	})
	// The revision sits beside the pointer so that sorting reads the
	// entries themselves only for the keys of one revision (one
	// transaction's), which are rare.
	slices.SortFunc(out, func(a, b revisionHead) int {
		if c := cmp.Compare(a.rev, b.rev); c != 0 {
			return c
		}
		return strings.Compare(a.e.key, b.e.key)
	})
	return out
}

// revisionHead is an index entry with its revision.
type revisionHead struct {
	rev uint64
	e   *indexEntry
}

// remove drops key's entry.
func (ix *keyIndex) remove(key []byte) {
	ix.tree.Delete(&indexEntry{key: string(key)})
}

// ascend calls fn with each entry whose key is in [start, end) (end
// empty: no bound), in key order, until fn returns false.
func (ix *keyIndex) ascend(start, end []byte, fn func(e *indexEntry) bool) {
	stop := string(end)
	ix.tree.AscendGreaterOrEqual(&indexEntry{key: string(start)}, func(e *indexEntry) bool {
		if len(end) > 0 && strings.Compare(e.key, stop) >= 0 {
			return false
		}
		return fn(e)
	})
}
