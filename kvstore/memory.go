package kvstore

import (
	"bytes"
	"cmp"
	"container/list"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Memory is the in-memory Store, for the deterministic simulator (and any
// test that wants a state machine without files). It is safe for
// concurrent use, but starts no goroutines and reads no clock.
type Memory struct {
	mu     sync.RWMutex
	opts   Options
	closed bool
	data   *memData
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory(opts Options) *Memory {
	return &Memory{opts: opts, data: newMemData()}
}

// memData is the whole state of a Memory store; it is the state that the
// shared apply logic works on.
type memData struct {
	applied uint64
	rev     uint64
	keys    orderedMap
	// hist holds every version since compactRev, under histKey (mvcc.go);
	// its values share the keys' slices, which are never changed in place.
	hist       orderedMap
	compactRev uint64
	// revs is the revision index: every version's (revision, key), in
	// revision order and key order within a revision.
	revs []revKey
	// leases, and the keys attached to each.
	leases    map[int64]*kvpb.Lease
	leaseSets map[int64]map[string]struct{}
	clients   map[uint64]*memClient
	// lru holds the sessions by ascending last_index. Every command that
	// names a session sets its last_index to the newest index, so moving
	// it to the back keeps the order without sorting.
	lru list.List
	// clock is the session clock, alarmList the raised alarms, used the
	// logical size (Usage).
	clock     uint64
	alarmList []*kvpb.Alarm
	used      uint64
	auth      authMemo
	// histBuf builds history keys for the writes (under Memory's write
	// lock) and a restore (before the data is in use), so that each costs
	// the one string the history keeps.
	histBuf []byte
}

type memClient struct {
	rec  *kvpb.ClientRecord
	elem *list.Element
}

type revKey struct {
	rev uint64
	key string
}

func newMemData() *memData {
	return &memData{clients: map[uint64]*memClient{}, leases: map[int64]*kvpb.Lease{}, leaseSets: map[int64]map[string]struct{}{}}
}

// Apply implements Store.
func (m *Memory) Apply(entries []Entry) ([]Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	return applyBatch(m.data, entries, m.opts.maxClients())
}

// AppliedIndex implements Store.
func (m *Memory) AppliedIndex() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.data.applied
}

// Revision implements Store.
func (m *Memory) Revision() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.data.rev
}

// Get implements Store.
func (m *Memory) Get(key []byte) (GetResult, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return GetResult{}, ErrClosed
	}
	r := GetResult{Revision: m.data.rev}
	if it, ok := m.data.keys.get(string(key)); ok {
		r.Value, r.Version, r.Found = clone(it.value), it.meta.modRev, true
	}
	return r, nil
}

// Range implements Store.
func (m *Memory) Range(prefix, after []byte, limit int) (RangeResult, error) {
	return m.RangeBytes(prefix, after, limit, 0)
}

// RangeBytes implements Store.
func (m *Memory) RangeBytes(prefix, after []byte, limit, maxBytes int) (RangeResult, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return RangeResult{}, ErrClosed
	}
	r := RangeResult{Revision: m.data.rev}
	page := rangePage{limit: limit, maxBytes: maxBytes}
	p := string(prefix)
	m.data.keys.ascend(rangeStart(prefix, after), func(it *item) bool {
		if !strings.HasPrefix(it.key, p) {
			return false
		}
		if !page.room(len(it.key)+len(it.value), &r) {
			return false
		}
		r.Entries = append(r.Entries, KeyValue{Key: []byte(it.key), Value: clone(it.value), Version: it.meta.modRev})
		return true
	})
	return r, nil
}

// EtcdRange implements Store.
func (m *Memory) EtcdRange(req *pb.RangeRequest, maxBytes int) (*pb.RangeResponse, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	return etcdRange(m.data, req, maxBytes)
}

// HashKV implements Store.
func (m *Memory) HashKV(rev int64) (KVHash, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return KVHash{}, ErrClosed
	}
	return hashKV(m.data, rev)
}

// Events implements Store.
func (m *Memory) Events(key, end []byte, from, to uint64, prev bool, limit int) ([]*Event, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, false, ErrClosed
	}
	start, stop := keySpan(key, end)
	return events(m.data, start, stop, from, to, prev, limit)
}

// Leases implements Store.
func (m *Memory) Leases() ([]LeaseInfo, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	return leaseInfos(m.data, m.data.leaseIDs())
}

// Lease implements Store.
func (m *Memory) Lease(id int64) (LeaseInfo, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return LeaseInfo{}, false, ErrClosed
	}
	return leaseInfo(m.data, id)
}

// CompactedRevision implements Store.
func (m *Memory) CompactedRevision() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.data.compactRev
}

// Each calls fn for every key in order with the store's own bytes, which
// fn must neither keep nor change, and returns the revision they are at:
// for checkers that hash the whole state after every apply without
// copying it (the simulator).
func (m *Memory) Each(fn func(key string, value []byte, version uint64)) (revision uint64, err error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, ErrClosed
	}
	m.data.keys.ascend("", func(it *item) bool {
		fn(it.key, it.value, it.meta.modRev)
		return true
	})
	return m.data.rev, nil
}

// rangeStart is the smallest key Range may return: the prefix itself, or
// the key just after "after" when that is further on.
func rangeStart(prefix, after []byte) string {
	if after != nil && bytes.Compare(after, prefix) >= 0 {
		return string(after) + "\x00"
	}
	return string(prefix)
}

// Snapshot implements Store.
//
// It takes the write lock because it fills the history's record cache.
func (m *Memory) Snapshot(w io.Writer) (SnapshotInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return SnapshotInfo{}, ErrClosed
	}
	d := m.data
	info := SnapshotInfo{AppliedIndex: d.applied, Revision: d.rev}
	sw := newSnapshotWriter(w, &kvpb.SnapshotHeader{AppliedIndex: d.applied, Revision: d.rev, SessionClockMs: d.clock, Alarms: d.alarmList, CompactedRevision: d.compactRev})
	if err := d.writeHistory(sw); err != nil {
		return SnapshotInfo{}, err
	}
	for _, id := range d.leaseIDs() {
		sw.lease(d.leases[id])
	}
	ids := make([]uint64, 0, len(d.clients))
	for id := range d.clients {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		sw.client(d.clients[id].rec)
	}
	if err := sw.finish(); err != nil {
		return SnapshotInfo{}, err
	}
	return info, nil
}

// Freeze implements Store. The memory store is the simulator's: it writes
// the snapshot into memory at once, so what is frozen cannot change and no
// lock is held while it waits to be written.
func (m *Memory) Freeze() (Frozen, error) {
	var buf bytes.Buffer
	info, err := m.Snapshot(&buf)
	if err != nil {
		return nil, err
	}
	return &memoryFrozen{info: info, data: buf.Bytes()}, nil
}

type memoryFrozen struct {
	info SnapshotInfo
	data []byte
}

func (f *memoryFrozen) Info() SnapshotInfo { return f.info }

func (f *memoryFrozen) WriteSnapshot(w io.Writer) error {
	if _, err := w.Write(f.data); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

func (f *memoryFrozen) Close() error { return nil }

// Restore implements Store. The snapshot is loaded into a fresh state
// that replaces the current one only once the whole stream has checked
// out.
func (m *Memory) Restore(r io.Reader) error {
	m.mu.RLock()
	closed := m.closed
	m.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	sink := &memSink{d: newMemData()}
	if _, err := readSnapshot(r, sink); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	sink.finish()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.data = sink.d
	return nil
}

// memSink builds a memData from snapshot records.
type memSink struct {
	d       *memData
	clients []*memClient
	// byRevision says the stream's history comes in revision order (format
	// 3); hist gathers it until settleHistory puts it in key order at once.
	byRevision bool
	hist       []item
}

func (s *memSink) begin(h *kvpb.SnapshotHeader, format uint32) error {
	s.byRevision = format > snapshotFormatKeyOrder
	s.d.applied, s.d.rev, s.d.clock, s.d.alarmList = h.AppliedIndex, h.Revision, h.SessionClockMs, h.Alarms
	s.d.compactRev = h.CompactedRevision
	return nil
}

// keyValue makes a live key's current version the history's version at
// its revision, which shares its value.
func (s *memSink) keyValue(kv *kvpb.KeyValue) error {
	s.settleHistory()
	s.d.histBuf = histKey(s.d.histBuf[:0], kv.Key, kv.Version)
	it, ok := s.d.hist.get(string(s.d.histBuf))
	if !ok {
		return badSnapshot("key %q is live at revision %d, which its history lacks", kv.Key, kv.Version)
	}
	s.d.keys.set(string(kv.Key), it.value, metaFromProto(kv))
	s.d.used += KeyBytes(len(kv.Key), len(it.value))
	return nil
}

// history keeps the record as read for the store's next snapshot: it
// passed every check the reader makes, so written back byte for byte it
// reads back the same, and re-encoding every restored version at the next
// snapshot is what the record cache is there to avoid.
func (s *memSink) history(kv *kvpb.KeyValue, record []byte) error {
	s.d.histBuf = histKey(s.d.histBuf[:0], kv.Key, kv.Version)
	// The value and the record in one allocation: both live as long as
	// the version.
	both := append(append(make([]byte, 0, len(kv.Value)+len(record)), kv.Value...), record...)
	value, rec := both[:len(kv.Value):len(kv.Value)], both[len(kv.Value):]
	if len(value) == 0 {
		value = nil
	}
	if len(rec) == 0 {
		rec = nil
	}
	if s.byRevision {
		s.hist = append(s.hist, item{key: string(s.d.histBuf), value: value, meta: metaFromProto(kv), record: rec})
	} else {
		s.d.hist.setRecord(string(s.d.histBuf), value, metaFromProto(kv), rec)
	}
	s.d.revs = append(s.d.revs, revKey{kv.Version, string(kv.Key)})
	return nil
}

// settleHistory puts a revision-ordered history into the key-ordered map
// with one sort: inserted one by one, each version moved half a chunk of
// the others (the simulator restores a snapshot at every restart).
func (s *memSink) settleHistory() {
	if s.hist != nil {
		s.d.hist.build(s.hist)
		s.hist = nil
	}
}

func (s *memSink) lease(l *kvpb.Lease) error {
	s.d.leases[l.Id] = l
	return nil
}

func (s *memSink) client(rec *kvpb.ClientRecord) error {
	s.d.used += sessionBytes(rec)
	c := &memClient{rec: rec}
	s.d.clients[rec.ClientId] = c
	s.clients = append(s.clients, c)
	return nil
}

// finish builds what the stream does not hold: the LRU order (sessions
// come sorted by id), the revision index (a format-2 history comes in key
// order) and the leases' keys.
func (s *memSink) finish() {
	s.settleHistory()
	slices.SortStableFunc(s.d.revs, func(a, b revKey) int { return cmp.Compare(a.rev, b.rev) })
	s.d.keys.ascend("", func(it *item) bool {
		s.d.attach(it.key, 0, it.meta.lease)
		return true
	})
	sort.Slice(s.clients, func(i, j int) bool { return s.clients[i].rec.LastIndex < s.clients[j].rec.LastIndex })
	for _, c := range s.clients {
		c.elem = s.d.lru.PushBack(c)
	}
}

// Sync implements Store; memory has nothing to make durable.
func (m *Memory) Sync() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.closed = true
	m.data = newMemData()
	return nil
}

// memData implements state.

func (d *memData) appliedIndex() uint64     { return d.applied }
func (d *memData) setAppliedIndex(i uint64) { d.applied = i }
func (d *memData) revision() uint64         { return d.rev }
func (d *memData) setRevision(r uint64)     { d.rev = r }
func (d *memData) clientCount() uint64      { return uint64(len(d.clients)) }

func (d *memData) get(key []byte) ([]byte, kvMeta, bool, error) {
	if it, ok := d.keys.get(string(key)); ok {
		return it.value, it.meta, true, nil
	}
	return nil, kvMeta{}, false, nil
}

func (d *memData) lookup(key []byte) (kvMeta, bool, error) {
	_, meta, found, err := d.get(key)
	return meta, found, err
}

func (d *memData) memo() *authMemo { return &d.auth }

func (d *memData) put(key, value []byte, meta kvMeta) error {
	d.auth.forget(key)
	old, existed := d.keys.get(string(key))
	var oldLen int
	if existed {
		oldLen = len(old.value)
	}
	v := clone(value)
	var oldLease uint64
	if existed {
		oldLease = old.meta.lease
	}
	d.keys.set(string(key), v, meta)
	d.histBuf = histKey(d.histBuf[:0], key, meta.modRev)
	d.hist.set(string(d.histBuf), v, meta)
	d.indexRevision(meta.modRev, string(key))
	d.attach(string(key), oldLease, meta.lease)
	countPut(d, key, value, oldLen, existed)
	return nil
}

// indexRevision adds (rev, key) to the revision index, keeping key order
// within a revision (one command may write several keys).
func (d *memData) indexRevision(rev uint64, key string) {
	d.revs = append(d.revs, revKey{rev, key})
	for i := len(d.revs) - 1; i > 0 && d.revs[i-1].rev == rev && d.revs[i-1].key > key; i-- {
		d.revs[i-1], d.revs[i] = d.revs[i], d.revs[i-1]
	}
}

// attach moves key from lease from to lease to (0: none).
func (d *memData) attach(key string, from, to uint64) {
	if from == to {
		return
	}
	if from != 0 {
		delete(d.leaseSets[int64(from)], key)
	}
	if to != 0 {
		set := d.leaseSets[int64(to)]
		if set == nil {
			set = map[string]struct{}{}
			d.leaseSets[int64(to)] = set
		}
		set[key] = struct{}{}
	}
}

func (d *memData) del(key []byte, rev uint64) error {
	d.auth.forget(key)
	old, ok := d.keys.get(string(key))
	if !ok {
		return nil
	}
	countDelete(d, key, len(old.value))
	d.attach(string(key), old.meta.lease, 0)
	d.keys.delete(string(key))
	d.histBuf = histKey(d.histBuf[:0], key, rev)
	d.hist.set(string(d.histBuf), nil, kvMeta{modRev: rev})
	d.indexRevision(rev, string(key))
	return nil
}

func (d *memData) scanRevisions(from, to uint64, fn func(rev uint64, key []byte) bool) error {
	i := sort.Search(len(d.revs), func(i int) bool { return d.revs[i].rev >= from })
	for ; i < len(d.revs) && d.revs[i].rev <= to; i++ {
		if !fn(d.revs[i].rev, []byte(d.revs[i].key)) {
			break
		}
	}
	return nil
}

func (d *memData) compactRevisions(below uint64) error {
	i := sort.Search(len(d.revs), func(i int) bool { return d.revs[i].rev >= below })
	d.revs = append([]revKey(nil), d.revs[i:]...)
	return nil
}

func (d *memData) lease(id int64) (*kvpb.Lease, error) { return d.leases[id], nil }

func (d *memData) putLease(l *kvpb.Lease) error {
	d.leases[l.Id] = l
	return nil
}

func (d *memData) delLease(id int64) error {
	delete(d.leases, id)
	delete(d.leaseSets, id)
	return nil
}

func (d *memData) leaseKeys(id int64) ([][]byte, error) {
	keys := make([]string, 0, len(d.leaseSets[id]))
	for k := range d.leaseSets[id] {
		keys = append(keys, k)
	}
	sort.Strings(keys) // map order must not leak
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = []byte(k)
	}
	return out, nil
}

// leaseIDs are the leases' ids, ascending.
func (d *memData) leaseIDs() []int64 {
	ids := make([]int64, 0, len(d.leases))
	for id := range d.leases {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func (d *memData) compacted() uint64       { return d.compactRev }
func (d *memData) setCompacted(rev uint64) { d.compactRev = rev }

func (d *memData) scanLatest(start, end []byte, fn func(v version) bool) error {
	d.keys.ascend(string(start), func(it *item) bool {
		if len(end) > 0 && it.key >= string(end) {
			return false
		}
		return fn(version{key: []byte(it.key), value: it.value, meta: it.meta})
	})
	return nil
}

func (d *memData) scanHistory(start, end []byte, fn func(v version) bool) error {
	var stop string
	if len(end) > 0 {
		stop = string(histPrefix(nil, end))
	}
	var err error
	d.hist.ascend(string(histPrefix(nil, start)), func(it *item) bool {
		if stop != "" && it.key >= stop {
			return false
		}
		var key []byte
		if key, _, err = splitHistKey([]byte(it.key)); err != nil {
			return false
		}
		return fn(version{key: key, value: it.value, meta: it.meta})
	})
	return err
}

// writeHistory writes the history into sw. Every version's record is
// encoded once and kept: the simulator snapshots its stores every few
// hundred entries, and re-encoding a history that only grows made each
// snapshot cost as much as all the writes before it.
func (d *memData) writeHistory(sw *snapshotWriter) error {
	// The history is kept by key: sorted by revision for the format (the
	// escaped keys order as the keys do).
	var items []*item
	d.hist.ascend("", func(it *item) bool {
		items = append(items, it)
		return true
	})
	slices.SortFunc(items, func(a, b *item) int {
		if c := cmp.Compare(a.meta.modRev, b.meta.modRev); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	var scratch kvpb.KeyValue
	for _, it := range items {
		if it.record == nil {
			key, _, err := splitHistKey([]byte(it.key))
			if err != nil {
				return fmt.Errorf("snapshot history: %w", err)
			}
			if it.record, err = historyPayload(nil, &scratch, key, it.value, it.meta); err != nil {
				return fmt.Errorf("snapshot history: %w", err)
			}
		}
		sw.historyEncoded(it.record)
		if sw.err != nil {
			break
		}
	}
	sw.setLiveKeys(uint64(d.keys.len()))
	return nil
}

func (d *memData) versionAround(key []byte, rev uint64) (at, before *version, err error) {
	hk := string(histKey(nil, key, rev))
	group := hk[:len(hk)-8]
	a, b := d.hist.around(hk)
	if a != nil && a.key == hk {
		at = &version{key: clone(key), value: clone(a.value), meta: a.meta}
	}
	if b != nil && len(b.key) == len(hk) && strings.HasPrefix(b.key, group) {
		before = &version{key: clone(key), value: clone(b.value), meta: b.meta}
	}
	return at, before, nil
}

func (d *memData) deleteHistory(key []byte, rev uint64, _ bool) error {
	d.histBuf = histKey(d.histBuf[:0], key, rev)
	d.hist.delete(string(d.histBuf))
	return nil
}

func (d *memData) client(id uint64) (*kvpb.ClientRecord, error) {
	if c, ok := d.clients[id]; ok {
		return c.rec, nil
	}
	return nil, nil
}

func (d *memData) putClient(rec *kvpb.ClientRecord, _ uint64, isNew bool) error {
	if isNew {
		c := &memClient{rec: rec}
		c.elem = d.lru.PushBack(c)
		d.clients[rec.ClientId] = c
		return nil
	}
	c := d.clients[rec.ClientId]
	c.rec = rec
	d.lru.MoveToBack(c.elem)
	return nil
}

func (d *memData) oldestClient() (*kvpb.ClientRecord, error) {
	if front := d.lru.Front(); front != nil {
		return front.Value.(*memClient).rec, nil
	}
	return nil, nil
}

func (d *memData) removeClient(rec *kvpb.ClientRecord) error {
	if c, ok := d.clients[rec.ClientId]; ok {
		d.lru.Remove(c.elem)
		delete(d.clients, rec.ClientId)
	}
	return nil
}

func (d *memData) sessionClock() uint64           { return d.clock }
func (d *memData) setSessionClock(ms uint64)      { d.clock = ms }
func (d *memData) alarms() []*kvpb.Alarm          { return d.alarmList }
func (d *memData) setAlarms(alarms []*kvpb.Alarm) { d.alarmList = alarms }
func (d *memData) usedBytes() uint64              { return d.used }
func (d *memData) setUsedBytes(n uint64)          { d.used = n }

// Usage reports what the store holds against its limits.
func (m *Memory) Usage() Usage {
	m.mu.RLock()
	defer m.mu.RUnlock()
	d := m.data
	return Usage{Bytes: d.used, Sessions: uint64(len(d.clients)), SessionClockMs: d.clock, Alarms: alarmsFromProto(d.alarmList)}
}
