package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"pgregory.net/rapid"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// TestConformance runs random command sequences against the memory store,
// the bbolt store and the map model, and checks that all three agree on
// every result and every read, across batches, replays, snapshots,
// restores and bbolt reopens.
func TestConformance(t *testing.T) {
	dir := t.TempDir()
	run := 0
	rapid.Check(t, func(rt *rapid.T) {
		run++
		c := newConformance(rt, filepath.Join(dir, fmt.Sprintf("run-%d.db", run)))
		defer c.close()
		rt.Repeat(map[string]func(*rapid.T){
			"apply":          c.apply,
			"applyOverlap":   c.applyOverlap,
			"replay":         c.replay,
			"applyGap":       c.applyGap,
			"get":            c.get,
			"rangeAll":       c.rangeAll,
			"snapshotSwap":   c.snapshotSwap,
			"restoreDamaged": c.restoreDamaged,
			"reopenBolt":     c.reopenBolt,
			"crashBolt":      c.crashBolt,
			"":               c.check,
		})
	})
}

var (
	conformanceKeys     = []string{"a", "aa", "ab", "abc", "b", "ba", "bb", "c", "\x00", "\xff", "\xff\xff"}
	conformancePrefixes = []string{"", "a", "ab", "b", "c", "\xff", "z"}
)

type conformance struct {
	rt        *rapid.T
	opts      Options
	path      string
	mem       *Memory
	bolt      *Bolt
	model     *model
	next      uint64            // index of the next entry
	sessions  []uint64          // every session id registered (maybe evicted since)
	seq       map[uint64]uint64 // highest seq sent per session
	sent      map[uint64][][]byte
	lastBatch []Entry
	// log is every entry applied, at index-1, with the result it was
	// answered with: what a crashed bolt store replays.
	log     []Entry
	answers []Result
}

func newConformance(rt *rapid.T, path string) *conformance {
	opts := Options{MaxClients: rapid.IntRange(1, 4).Draw(rt, "maxClients"), NoSync: true}
	b, err := OpenBolt(path, opts)
	if err != nil {
		rt.Fatalf("open bolt: %v", err)
	}
	return &conformance{
		rt: rt, opts: opts, path: path,
		mem: NewMemory(opts), bolt: b, model: newModel(opts.MaxClients),
		next: 1, seq: map[uint64]uint64{}, sent: map[uint64][][]byte{},
	}
}

func (c *conformance) close() {
	_ = c.mem.Close()
	_ = c.bolt.Close()
}

// command draws one entry's data: every kind of command, valid or not.
func (c *conformance) command(t *rapid.T) []byte {
	key := rapid.SampledFrom(conformanceKeys).Draw(t, "key")
	value := string(rapid.SliceOfN(rapid.Byte(), 0, 6).Draw(t, "value"))
	client, seq := uint64(0), uint64(0)
	if len(c.sessions) > 0 && rapid.Bool().Draw(t, "withSession") {
		client = rapid.SampledFrom(c.sessions).Draw(t, "client")
		seq = c.seq[client] + 1
	}
	kind := rapid.SampledFrom([]string{
		"put", "put", "delete", "casHit", "casMiss", "casAbsent", "register",
		"retrySame", "retryOld", "unknownSession", "seqZero", "emptyKey",
		"noop", "malformed", "noOp", "registerAt", "registerAt", "clock", "alarm",
	}).Draw(t, "kind")
	var data []byte
	switch kind {
	case "put":
		data = putCmd(client, seq, key, value)
	case "delete":
		data = delCmd(client, seq, key)
	case "casHit":
		data = casCmd(client, seq, key, c.model.data[key].version, value)
	case "casMiss":
		data = casCmd(client, seq, key, rapid.Uint64Range(0, c.model.rev+2).Draw(t, "expected"), value)
	case "casAbsent":
		data = casCmd(client, seq, key, 0, value)
	case "register":
		return registerCmd()
	case "registerAt":
		return registerAt(c.drawTime(t), rapid.Uint64Range(1, 4).Draw(t, "maxSessions"), rapid.Uint64Range(0, 3000).Draw(t, "ttlMs"))
	case "clock":
		return clockCmd(c.drawTime(t))
	case "alarm":
		return alarmCmd(rapid.Bool().Draw(t, "disarm"))
	case "retrySame", "retryOld":
		if client == 0 || len(c.sent[client]) == 0 {
			return nil
		}
		prev := c.sent[client]
		i := len(prev) - 1
		if kind == "retryOld" {
			i = rapid.IntRange(0, i).Draw(t, "retryIndex")
		}
		return prev[i]
	case "unknownSession":
		return putCmd(1<<40, 1, key, value)
	case "seqZero":
		return putCmd(1<<40, 0, key, value)
	case "emptyKey":
		data = putCmd(client, seq, "", value)
	case "noop":
		return nil
	case "malformed":
		// Garbage can decode to a command the model leaves to other
		// tests (an empty etcd transaction, say).
		return rapid.SliceOfN(rapid.Byte(), 1, 12).Filter(func(b []byte) bool { return !outsideModel(b) }).Draw(t, "garbage")
	case "noOp":
		data = encode(&kvpb.Command{ClientId: client, Seq: seq}) // no operation
	}
	if client != 0 {
		c.seq[client] = seq
		c.sent[client] = append(c.sent[client], data)
	}
	return data
}

// drawTime is a proposer's clock: mostly ahead of the session clock,
// sometimes behind it (a member whose clock lags).
func (c *conformance) drawTime(t *rapid.T) uint64 {
	return c.model.clock + rapid.Uint64Range(0, 4000).Draw(t, "ahead") - min(c.model.clock, rapid.Uint64Range(0, 1000).Draw(t, "behind"))
}

func (c *conformance) batch(t *rapid.T) []Entry {
	n := rapid.IntRange(1, 6).Draw(t, "batchSize")
	entries := make([]Entry, n)
	for i := range entries {
		entries[i] = Entry{Index: c.next, Data: c.command(t)}
		c.next++
	}
	return entries
}

// applyAll applies entries to the three and checks they agree.
func (c *conformance) applyAll(t *rapid.T, entries []Entry) {
	want := c.model.apply(entries)
	gotMem, err := c.mem.Apply(entries)
	if err != nil {
		t.Fatalf("memory apply: %v", err)
	}
	gotBolt, err := c.bolt.Apply(entries)
	if err != nil {
		t.Fatalf("bolt apply: %v", err)
	}
	for i := range entries {
		if !reflect.DeepEqual(gotMem[i], want[i]) {
			t.Fatalf("entry %d: memory result\n%+v\nwant\n%+v", entries[i].Index, gotMem[i], want[i])
		}
		if !reflect.DeepEqual(gotBolt[i], want[i]) {
			t.Fatalf("entry %d: bolt result\n%+v\nwant\n%+v", entries[i].Index, gotBolt[i], want[i])
		}
		if want[i].Status == StatusOK && want[i].ClientID != 0 {
			c.sessions = append(c.sessions, want[i].ClientID)
		}
		if entries[i].Index == uint64(len(c.log))+1 {
			c.log = append(c.log, entries[i])
			c.answers = append(c.answers, gotBolt[i])
		}
	}
	c.lastBatch = entries
}

func (c *conformance) apply(t *rapid.T) { c.applyAll(t, c.batch(t)) }

// applyOverlap sends a batch that starts with entries already applied, as
// a runtime does when it replays its log after a restart.
func (c *conformance) applyOverlap(t *rapid.T) {
	if len(c.lastBatch) == 0 {
		t.Skip("nothing applied yet")
	}
	old := c.lastBatch[rapid.IntRange(0, len(c.lastBatch)-1).Draw(t, "from"):]
	c.applyAll(t, append(append([]Entry(nil), old...), c.batch(t)...))
}

// replay re-applies the last batch: every entry is skipped.
func (c *conformance) replay(t *rapid.T) {
	if len(c.lastBatch) == 0 {
		t.Skip("nothing applied yet")
	}
	c.applyAll(t, c.lastBatch)
}

// applyGap sends a batch that skips an index: refused, nothing applied.
func (c *conformance) applyGap(t *rapid.T) {
	gap := rapid.Uint64Range(1, 3).Draw(t, "gap")
	entries := []Entry{{Index: c.next + gap, Data: putCmd(0, 0, "a", "gap")}}
	if rapid.Bool().Draw(t, "validFirst") { // a good entry first must not be applied either
		entries = []Entry{{Index: c.next, Data: putCmd(0, 0, "a", "x")}, {Index: c.next + 1 + gap, Data: putCmd(0, 0, "b", "y")}}
	}
	for name, s := range c.stores() {
		if _, err := s.Apply(entries); !errors.Is(err, ErrNotContiguous) {
			t.Fatalf("%s: gap batch: err %v, want ErrNotContiguous", name, err)
		}
	}
}

func (c *conformance) stores() map[string]Store {
	return map[string]Store{"memory": c.mem, "bolt": c.bolt}
}

func (c *conformance) get(t *rapid.T) {
	key := rapid.SampledFrom(append(conformanceKeys, "", "zz")).Draw(t, "key")
	want, found := c.model.data[key]
	for name, s := range c.stores() {
		got, err := s.Get([]byte(key))
		if err != nil {
			t.Fatalf("%s get %q: %v", name, key, err)
		}
		if got.Found != found || got.Version != want.version || !bytes.Equal(got.Value, want.value) || got.Revision != c.model.rev {
			t.Fatalf("%s get %q = %+v, want found=%v %q v%d rev %d", name, key, got, found, want.value, want.version, c.model.rev)
		}
	}
}

// rangeAll pages through a prefix with a random key limit and byte budget
// and checks every page against the model.
func (c *conformance) rangeAll(t *rapid.T) {
	prefix := rapid.SampledFrom(conformancePrefixes).Draw(t, "prefix")
	limit := rapid.IntRange(0, 4).Draw(t, "limit")
	maxBytes := rapid.IntRange(0, 12).Draw(t, "maxBytes")
	var after []byte
	if rapid.Bool().Draw(t, "startAfter") {
		after = []byte(rapid.SampledFrom(conformanceKeys).Draw(t, "after"))
	}
	for name, s := range c.stores() {
		c.checkRange(t, name, s, prefix, after, limit, maxBytes)
	}
}

func (c *conformance) checkRange(t *rapid.T, name string, s Store, prefix string, after []byte, limit, maxBytes int) {
	var want []string
	for _, k := range c.model.sortedKeys(prefix) {
		if after == nil || k > string(after) {
			want = append(want, k)
		}
	}
	for pages := 0; ; pages++ {
		got, err := s.RangeBytes([]byte(prefix), after, limit, maxBytes)
		if err != nil {
			t.Fatalf("%s range %q: %v", name, prefix, err)
		}
		if n, byBytes := c.model.pageLen(want, limit, maxBytes); len(got.Entries) != n || got.ByteLimited != byBytes {
			t.Fatalf("%s range %q (limit %d, %d bytes) page %d: %d entries, byte-limited %v; want %d, %v",
				name, prefix, limit, maxBytes, pages, len(got.Entries), got.ByteLimited, n, byBytes)
		}
		if got.Revision != c.model.rev {
			t.Fatalf("%s range revision %d, want %d", name, got.Revision, c.model.rev)
		}
		for _, kv := range got.Entries {
			if len(want) == 0 || string(kv.Key) != want[0] {
				t.Fatalf("%s range %q page %d: got key %q, want next %q", name, prefix, pages, kv.Key, want)
			}
			m := c.model.data[want[0]]
			if kv.Version != m.version || !bytes.Equal(kv.Value, m.value) {
				t.Fatalf("%s range: key %q = %q v%d, want %q v%d", name, kv.Key, kv.Value, kv.Version, m.value, m.version)
			}
			want = want[1:]
		}
		if limit > 0 && len(got.Entries) > limit {
			t.Fatalf("%s range returned %d entries over limit %d", name, len(got.Entries), limit)
		}
		if got.More != (len(want) > 0) {
			t.Fatalf("%s range %q: more=%v with %d keys left", name, prefix, got.More, len(want))
		}
		if !got.More {
			return
		}
		if len(got.Entries) == 0 {
			t.Fatalf("%s range: more=true on an empty page", name)
		}
		after = got.Entries[len(got.Entries)-1].Key
	}
}

// snapshotSwap checks both implementations write the same bytes for the
// same state, then restores each into the other.
func (c *conformance) snapshotSwap(t *rapid.T) {
	var memSnap, boltSnap bytes.Buffer
	mi, err := c.mem.Snapshot(&memSnap)
	if err != nil {
		t.Fatalf("memory snapshot: %v", err)
	}
	bi, err := c.bolt.Snapshot(&boltSnap)
	if err != nil {
		t.Fatalf("bolt snapshot: %v", err)
	}
	if !bytes.Equal(memSnap.Bytes(), boltSnap.Bytes()) {
		t.Fatalf("memory and bolt snapshots differ (%d and %d bytes)", memSnap.Len(), boltSnap.Len())
	}
	if want := (SnapshotInfo{AppliedIndex: c.model.applied, Revision: c.model.rev}); mi != want || bi != want {
		t.Fatalf("snapshot info memory %+v bolt %+v, want %+v", mi, bi, want)
	}
	if rapid.Bool().Draw(t, "fresh") { // restore into new stores rather than over the old state
		_ = c.mem.Close()
		c.mem = NewMemory(c.opts)
		if err := c.bolt.Restore(bytes.NewReader(memSnap.Bytes())); err != nil {
			t.Fatalf("bolt restore: %v", err)
		}
		_ = c.bolt.Close()
		c.reopen(t)
	}
	if err := c.mem.Restore(&boltSnap); err != nil {
		t.Fatalf("memory restore: %v", err)
	}
	if err := c.bolt.Restore(&memSnap); err != nil {
		t.Fatalf("bolt restore: %v", err)
	}
}

// restoreDamaged offers a damaged snapshot: refused, state kept.
func (c *conformance) restoreDamaged(t *rapid.T) {
	var snap bytes.Buffer
	if _, err := c.mem.Snapshot(&snap); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	b := snap.Bytes()
	if rapid.Bool().Draw(t, "truncate") {
		b = b[:rapid.IntRange(0, len(b)-1).Draw(t, "length")]
	} else {
		bit := rapid.IntRange(0, len(b)*8-1).Draw(t, "bit")
		b[bit/8] ^= 1 << (bit % 8)
	}
	for name, s := range c.stores() {
		if err := s.Restore(bytes.NewReader(b)); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("%s restore of damaged snapshot: err %v, want ErrBadSnapshot", name, err)
		}
	}
}

func (c *conformance) reopen(t *rapid.T) {
	b, err := OpenBolt(c.path, c.opts)
	if err != nil {
		t.Fatalf("reopen bolt: %v", err)
	}
	c.bolt = b
}

func (c *conformance) reopenBolt(t *rapid.T) {
	if rapid.Bool().Draw(t, "sync") {
		if err := c.bolt.Sync(); err != nil {
			t.Fatalf("sync: %v", err)
		}
	}
	if err := c.bolt.Close(); err != nil {
		t.Fatalf("close bolt: %v", err)
	}
	c.reopen(t)
}

// crashBolt stops the bolt store as a process crash would, losing what
// Apply left uncommitted, then replays the log after what the file holds,
// as the replica does on restart: the replayed entries are answered as
// they were the first time.
func (c *conformance) crashBolt(t *rapid.T) {
	c.bolt.crash()
	c.reopen(t)
	from := c.bolt.AppliedIndex()
	if from > c.model.applied {
		t.Fatalf("after a crash the store is at index %d, beyond the %d applied", from, c.model.applied)
	}
	if from == c.model.applied {
		return
	}
	got, err := c.bolt.Apply(c.log[from:])
	if err != nil {
		t.Fatalf("replay entries %d..%d after a crash: %v", from+1, c.model.applied, err)
	}
	for i, r := range got {
		if want := c.answers[int(from)+i]; !reflect.DeepEqual(r, want) {
			t.Fatalf("entry %d replayed after a crash: result\n%+v\nanswered first\n%+v", from+1+uint64(i), r, want)
		}
	}
}

// check runs after every action: both stores hold exactly the model. The
// whole range is read only sometimes, since a read commits what the bolt
// store left open, which crashBolt would then never find.
func (c *conformance) check(t *rapid.T) {
	for name, s := range c.stores() {
		if s.AppliedIndex() != c.model.applied || s.Revision() != c.model.rev {
			t.Fatalf("%s: applied %d revision %d, want %d %d", name, s.AppliedIndex(), s.Revision(), c.model.applied, c.model.rev)
		}
	}
	want := c.model.usage()
	for name, u := range map[string]Usage{"memory": c.mem.Usage(), "bolt": c.bolt.Usage()} {
		if !reflect.DeepEqual(u, want) {
			t.Fatalf("%s usage %+v, want %+v", name, u, want)
		}
	}
	if rapid.Bool().Draw(t, "checkRange") {
		for name, s := range c.stores() {
			c.checkRange(t, name, s, "", nil, 0, 0)
		}
	}
}

// pageLen is how many of the keys left (want) a Range page holds under
// limit keys and maxBytes bytes of keys and values: as many as fit, but
// never none. byBytes says the byte budget ended a page that left keys.
func (m *model) pageLen(want []string, limit, maxBytes int) (n int, byBytes bool) {
	size := 0
	for _, k := range want {
		kv := len(k) + len(m.data[k].value)
		if n > 0 && limit > 0 && n == limit {
			return n, false
		}
		if n > 0 && maxBytes > 0 && size+kv > maxBytes {
			return n, true
		}
		n, size = n+1, size+kv
	}
	return n, false
}
