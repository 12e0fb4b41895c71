package kvstore

import (
	"slices"
	"sort"
	"strings"
)

// orderedMap is the memory store's sorted key space: a list of sorted
// chunks. A lookup is two binary searches; an insert or delete moves at
// most one chunk's worth of items (plus, rarely, the chunk list), so it
// stays cheap for the simulator's key counts without a balanced tree.
// Iteration is always in key order, never map order.
type orderedMap struct {
	chunks [][]item // each non-empty and sorted; chunks in key order
}

type item struct {
	key   string
	value []byte
	meta  kvMeta
	// record caches a history item's snapshot record payload; set clears
	// it, since it no longer matches a replaced value.
	record []byte
}

// maxChunk is the size at which a chunk splits in two.
const maxChunk = 512

// search returns the position of the first item whose key is >= key:
// chunk ci and offset i (ci == len(chunks) when every key is smaller).
func (m *orderedMap) search(key string) (ci, i int) {
	ci = sort.Search(len(m.chunks), func(c int) bool {
		ch := m.chunks[c]
		return ch[len(ch)-1].key >= key
	})
	if ci == len(m.chunks) {
		return ci, 0
	}
	ch := m.chunks[ci]
	return ci, sort.Search(len(ch), func(j int) bool { return ch[j].key >= key })
}

func (m *orderedMap) len() int {
	n := 0
	for _, ch := range m.chunks {
		n += len(ch)
	}
	return n
}

func (m *orderedMap) get(key string) (*item, bool) {
	ci, i := m.search(key)
	if ci < len(m.chunks) && m.chunks[ci][i].key == key {
		return &m.chunks[ci][i], true
	}
	return nil, false
}

// set inserts or replaces key.
func (m *orderedMap) set(key string, value []byte, meta kvMeta) {
	m.setRecord(key, value, meta, nil)
}

// setRecord inserts or replaces key with its snapshot record's payload
// (nil: not encoded yet).
func (m *orderedMap) setRecord(key string, value []byte, meta kvMeta, record []byte) {
	it := item{key: key, value: value, meta: meta, record: record}
	ci, i := m.search(key)
	if ci < len(m.chunks) && m.chunks[ci][i].key == key {
		m.chunks[ci][i] = it
		return
	}
	if ci == len(m.chunks) { // larger than every key: append to the last chunk
		if ci == 0 {
			m.chunks = append(m.chunks, []item{it})
			return
		}
		ci--
		i = len(m.chunks[ci])
	}
	ch := append(m.chunks[ci], item{})
	copy(ch[i+1:], ch[i:])
	ch[i] = it
	m.chunks[ci] = ch
	if len(ch) > maxChunk {
		half := len(ch) / 2
		right := append([]item(nil), ch[half:]...)
		m.chunks[ci] = ch[:half:half]
		m.chunks = append(m.chunks, nil)
		copy(m.chunks[ci+2:], m.chunks[ci+1:])
		m.chunks[ci+1] = right
	}
}

// build makes the map hold exactly items, with distinct keys in any
// order: one sort instead of moving part of a chunk for every item.
func (m *orderedMap) build(items []item) {
	m.chunks = m.chunks[:0]
	slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.key, b.key) })
	for len(items) > 0 {
		n := min(len(items), maxChunk/2)
		m.chunks = append(m.chunks, items[:n:n])
		items = items[n:]
	}
}

// delete removes key and reports whether it was there.
func (m *orderedMap) delete(key string) bool {
	ci, i := m.search(key)
	if ci == len(m.chunks) || m.chunks[ci][i].key != key {
		return false
	}
	ch := m.chunks[ci]
	copy(ch[i:], ch[i+1:])
	ch[len(ch)-1] = item{} // drop the reference for the collector
	ch = ch[:len(ch)-1]
	if len(ch) == 0 {
		m.chunks = append(m.chunks[:ci], m.chunks[ci+1:]...)
	} else {
		m.chunks[ci] = ch
	}
	return true
}

// ascend calls fn for each item with key >= from, in key order, until fn
// returns false.
func (m *orderedMap) ascend(from string, fn func(*item) bool) {
	ci, i := m.search(from)
	for ; ci < len(m.chunks); ci, i = ci+1, 0 {
		for ch := m.chunks[ci]; i < len(ch); i++ {
			if !fn(&ch[i]) {
				return
			}
		}
	}
}

// around returns the first item with a key >= key (nil if none) and the
// item just before that position (nil if none).
func (m *orderedMap) around(key string) (at, before *item) {
	ci, i := m.search(key)
	if ci < len(m.chunks) {
		at = &m.chunks[ci][i]
	}
	switch {
	case i > 0:
		before = &m.chunks[ci][i-1]
	case ci > 0:
		prev := m.chunks[ci-1]
		before = &prev[len(prev)-1]
	}
	return at, before
}
