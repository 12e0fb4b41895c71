package kvstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// sampleSnapshot returns the snapshot of a small state with keys, an
// empty value and sessions with every kind of remembered result.
func sampleSnapshot(t *testing.T) []byte { return sampleSnapshotTB(t) }

// stateOf is a store's snapshot, used to compare whole states.
func stateOf(t *testing.T, s Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	_, err := s.Snapshot(&buf)
	require.NoError(t, err)
	return buf.Bytes()
}

// TestSnapshotDamageRefused flips every bit and cuts at every length of a
// snapshot: each damaged copy must be refused by both implementations,
// whose state stays what it was.
func TestSnapshotDamageRefused(t *testing.T) {
	snap := sampleSnapshot(t)
	implementations(t, Options{NoSync: true}, func(t *testing.T, s Store) {
		newApplier(t, s).apply(putCmd(0, 0, "before", "1"), registerCmd())
		before := stateOf(t, s)
		refuse := func(damaged []byte, what string, at int) {
			err := s.Restore(bytes.NewReader(damaged))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("%s at %d: restore err %v, want ErrBadSnapshot", what, at, err)
			}
		}
		for bit := 0; bit < len(snap)*8; bit++ {
			damaged := append([]byte(nil), snap...)
			damaged[bit/8] ^= 1 << (bit % 8)
			refuse(damaged, "bit flip", bit)
		}
		for n := 0; n < len(snap); n++ {
			refuse(snap[:n], "truncation", n)
		}
		refuse(append(append([]byte(nil), snap...), 0), "trailing byte", len(snap))
		require.Equal(t, before, stateOf(t, s), "refused restores must not change the state")
		require.NoError(t, s.Restore(bytes.NewReader(snap)))
		require.Equal(t, snap, stateOf(t, s))
	})
}

// craft writes a snapshot stream record by record, with valid checksums,
// so the reader's checks beyond the checksums can be exercised.
func craft(records ...func(sw *snapshotWriter)) []byte {
	return craftFormat(snapshotFormatVersion, records...)
}

// craftFormat is craft in an older format.
func craftFormat(format byte, records ...func(sw *snapshotWriter)) []byte {
	var buf bytes.Buffer
	sw := &snapshotWriter{bw: bufio.NewWriter(&buf), sum: crc32.New(castagnoli)}
	prefix := append([]byte(snapshotMagic), 0, 0, 0, format)
	sw.write(prefix)
	for _, r := range records {
		r(sw)
	}
	var trailer [4]byte
	binary.BigEndian.PutUint32(trailer[:], sw.sum.Sum32())
	sw.write(trailer[:])
	if err := sw.bw.Flush(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func header(applied, rev uint64) func(*snapshotWriter) {
	return func(sw *snapshotWriter) {
		sw.record(recHeader, &kvpb.SnapshotHeader{AppliedIndex: applied, Revision: rev})
	}
}

func kv(key string, version uint64) func(*snapshotWriter) {
	return func(sw *snapshotWriter) {
		sw.history([]byte(key), []byte("v"), kvMeta{modRev: version, createRev: version, count: 1})
	}
}

func client(rec *kvpb.ClientRecord) func(*snapshotWriter) {
	return func(sw *snapshotWriter) { sw.client(rec) }
}

func end(keys, clients uint64) func(*snapshotWriter) {
	return func(sw *snapshotWriter) {
		sw.record(recEnd, &kvpb.SnapshotEnd{KeyCount: keys, ClientCount: clients, HistoryCount: keys})
	}
}

func raw(typ byte, payload []byte) func(*snapshotWriter) {
	return func(sw *snapshotWriter) {
		var frame [recordHeaderSize]byte
		frame[0] = typ
		binary.BigEndian.PutUint32(frame[1:5], uint32(len(payload)))
		crc := crc32.Update(crc32.Update(0, castagnoli, frame[:5]), castagnoli, payload)
		binary.BigEndian.PutUint32(frame[5:], crc)
		sw.write(frame[:])
		sw.write(payload)
	}
}

func okResult() *kvpb.Result { return &kvpb.Result{Status: StatusOK, Revision: 1} }

func TestSnapshotReaderChecks(t *testing.T) {
	good := craft(header(10, 5), kv("a", 1), kv("b", 5),
		client(&kvpb.ClientRecord{ClientId: 2, LastIndex: 3}),
		client(&kvpb.ClientRecord{ClientId: 4, LastSeq: 1, LastIndex: 10, Result: okResult()}),
		end(2, 2))
	info, err := VerifySnapshot(bytes.NewReader(good))
	require.NoError(t, err, "the crafting helper itself must produce a valid snapshot")
	require.Equal(t, SnapshotInfo{AppliedIndex: 10, Revision: 5}, info)

	cases := []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty input", nil, "too short"},
		{"wrong magic", append([]byte("NOTASNAP"), 0, 0, 0, 1), "not a kvstore snapshot"},
		{"future format", append([]byte(snapshotMagic), 0, 0, 0, snapshotFormatVersion+1), "format version 4"},
		{"no header", craft(kv("a", 1), end(1, 0)), "out of order"},
		{"two headers", craft(header(1, 1), header(1, 1), end(0, 0)), "out of order"},
		{"key after session", craft(header(5, 5), client(&kvpb.ClientRecord{ClientId: 1, LastIndex: 1}), kv("a", 1), end(1, 1)), "out of order"},
		{"unknown record type", craft(header(1, 1), raw(9, nil), end(0, 0)), "unknown record type 9"},
		{"header undecodable", craft(raw(recHeader, []byte{0xff})), "header record"},
		{"key undecodable", craft(header(1, 1), raw(recHistory, []byte{0xff}), end(1, 0)), "history record"},
		{"key record in format 2", craft(header(1, 1), raw(recKeyValue, nil), end(1, 0)), "out of order"},
		{"session undecodable", craft(header(1, 1), raw(recClient, []byte{0xff}), end(0, 1)), "session record"},
		{"end undecodable", craft(header(1, 1), raw(recEnd, []byte{0xff})), "end record"},
		{"keys out of order in a revision", craft(header(5, 5), kv("b", 2), kv("a", 2), end(2, 0)), "out of order"},
		{"keys in key order, not revision order", craft(header(5, 5), kv("a", 2), kv("b", 1), end(2, 0)), "out of order"},
		{"format 2: keys out of order", craftFormat(2, header(5, 5), kv("b", 1), kv("a", 2), end(2, 0)), "out of order"},
		{"format 2: revisions out of order", craftFormat(2, header(5, 5), kv("a", 2), kv("a", 1), end(1, 0)), "out of order"},
		{"format 2: versions counted as keys", craftFormat(2, header(5, 5), kv("a", 1), kv("a", 2), end(2, 0)), "end record says 2 keys"},
		{"revisions out of order", craft(header(5, 5), kv("a", 2), kv("a", 1), end(1, 0)), "out of order"},
		{"duplicate version", craft(header(5, 5), kv("a", 1), kv("a", 1), end(1, 0)), "out of order"},
		{"versions counted as keys", craft(header(5, 5), kv("a", 1), kv("a", 2), end(2, 0)), "end record says 2 keys"},
		{"empty key", craft(header(5, 5), kv("", 1), end(1, 0)), "key is empty"},
		{"version zero", craft(header(5, 5), kv("a", 0), end(1, 0)), "revision 0"},
		{"version past revision", craft(header(5, 5), kv("a", 6), end(1, 0)), "revision 6"},
		{"session id zero", craft(header(5, 5), client(&kvpb.ClientRecord{LastIndex: 1}), end(0, 1)), "client id 0"},
		{"sessions out of order", craft(header(5, 5), client(&kvpb.ClientRecord{ClientId: 3, LastIndex: 3}), client(&kvpb.ClientRecord{ClientId: 2, LastIndex: 4}), end(0, 2)), "does not follow"},
		{"last index before id", craft(header(5, 5), client(&kvpb.ClientRecord{ClientId: 3, LastIndex: 2}), end(0, 1)), "last index 2"},
		{"last index past applied", craft(header(5, 5), client(&kvpb.ClientRecord{ClientId: 3, LastIndex: 6}), end(0, 1)), "last index 6"},
		{"shared last index", craft(header(5, 5), client(&kvpb.ClientRecord{ClientId: 1, LastIndex: 4}), client(&kvpb.ClientRecord{ClientId: 2, LastIndex: 4}), end(0, 2)), "used by another"},
		{"seq without result", craft(header(5, 5), client(&kvpb.ClientRecord{ClientId: 1, LastSeq: 1, LastIndex: 2}), end(0, 1)), "last seq 1"},
		{"result without seq", craft(header(5, 5), client(&kvpb.ClientRecord{ClientId: 1, LastIndex: 2, Result: okResult()}), end(0, 1)), "last seq 0"},
		{"unrecorded status", craft(header(5, 5), client(&kvpb.ClientRecord{ClientId: 1, LastSeq: 1, LastIndex: 2, Result: &kvpb.Result{Status: StatusNoop}}), end(0, 1)), "not one apply records"},
		{"remembered value too big", craft(header(5, 5), client(&kvpb.ClientRecord{ClientId: 1, LastSeq: 1, LastIndex: 2, Result: &kvpb.Result{Status: StatusCASFailed, CurrentValue: make([]byte, MaxValueSize+1)}}), end(0, 1)), "exceeds the limit"},
		{"end count mismatch", craft(header(5, 5), kv("a", 1), end(2, 0)), "end record says 2 keys"},
		{"no end record", craft(header(5, 5), kv("a", 1)), "truncated"},
		{"giant record", append(craft(header(1, 1))[:len(craft(header(1, 1)))-4], 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0), "claims"},
		{"payload cut", append(craft(header(1, 1))[:len(craft(header(1, 1)))-4], 2, 0, 0, 0, 50, 0, 0, 0, 0, 1, 2), "only 2 remain"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := VerifySnapshot(bytes.NewReader(c.data))
			require.ErrorIs(t, err, ErrBadSnapshot)
			require.Contains(t, err.Error(), c.msg)
			// Restore says the same, and keeps the state.
			s := NewMemory(Options{})
			newApplier(t, s).one(putCmd(0, 0, "keep", "me"))
			err = s.Restore(bytes.NewReader(c.data))
			require.ErrorIs(t, err, ErrBadSnapshot)
			got, gerr := s.Get([]byte("keep"))
			require.NoError(t, gerr)
			require.True(t, got.Found)
		})
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

type failingWriter struct{ after int }

var errInjected = errors.New("injected I/O error")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after < len(p) {
		n := w.after
		w.after = 0
		return n, errInjected
	}
	w.after -= len(p)
	return len(p), nil
}

// TestSnapshotIOErrors: a failing reader or writer is an I/O error, not a
// bad snapshot, and is reported wrapped.
func TestSnapshotIOErrors(t *testing.T) {
	snap := sampleSnapshot(t)
	for _, n := range []int{0, 5, 12, 20, len(snap) - 4, len(snap)} {
		_, err := VerifySnapshot(&failingReader{data: snap[:n], err: errInjected})
		require.ErrorIs(t, err, errInjected, "cut at %d", n)
		require.NotErrorIs(t, err, ErrBadSnapshot)
	}
	implementations(t, Options{}, func(t *testing.T, s Store) {
		newApplier(t, s).apply(putCmd(0, 0, "a", "1"), registerCmd())
		for _, after := range []int{0, 10, 40} {
			_, err := s.Snapshot(&failingWriter{after: after})
			require.ErrorIs(t, err, errInjected)
		}
		err := s.Restore(&failingReader{data: snap[:40], err: errInjected})
		require.ErrorIs(t, err, errInjected)
	})
}

// TestSnapshotLargeRecords restores values bigger than the reader's buffer
// through both implementations.
func TestSnapshotLargeRecords(t *testing.T) {
	big := string(bytes.Repeat([]byte{0xab}, 1<<20))
	src := NewMemory(Options{})
	newApplier(t, src).apply(putCmd(0, 0, "big", big), putCmd(0, 0, "small", "s"))
	snap := stateOf(t, src)
	implementations(t, Options{NoSync: true}, func(t *testing.T, s Store) {
		require.NoError(t, s.Restore(bytes.NewReader(snap)))
		got, err := s.Get([]byte("big"))
		require.NoError(t, err)
		require.Equal(t, big, string(got.Value))
		require.Equal(t, snap, stateOf(t, s))
	})
}

func TestStatusValuesMatchProto(t *testing.T) {
	// The Go names are aliases of the protobuf enum: one numbering.
	require.Equal(t, "STATUS_CAS_FAILED", StatusCASFailed.String())
	require.Equal(t, int32(8), int32(StatusAlreadyApplied))
	b, err := proto.Marshal(resultToProto(Result{Status: StatusSessionExpired}))
	require.NoError(t, err)
	var p kvpb.Result
	require.NoError(t, proto.Unmarshal(b, &p))
	require.Equal(t, StatusSessionExpired, resultFromProto(&p).Status)
}

func TestRestoreIntoBoltFromScratchFile(t *testing.T) {
	// A bolt store can be built from nothing but a snapshot.
	snap := sampleSnapshot(t)
	path := filepath.Join(t.TempDir(), "kv.db")
	b, err := OpenBolt(path, Options{})
	require.NoError(t, err)
	require.NoError(t, b.Restore(bytes.NewReader(snap)))
	require.NoError(t, b.Close())
	b, err = OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, snap, stateOf(t, b))
}

// A frozen state is the state when Freeze was called, however much is
// applied before it is written, and writing it (from another goroutine)
// does not hold Apply up.
func TestFreezeCapturesTheStateOfItsMoment(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		for i := range 100 {
			a.one(putCmd(0, 0, fmt.Sprintf("k%03d", i), "before"))
		}
		want := stateOf(t, s)
		f, err := s.Freeze()
		require.NoError(t, err)
		require.Equal(t, SnapshotInfo{AppliedIndex: 100, Revision: 100}, f.Info())

		written := make(chan []byte)
		go func() {
			var buf bytes.Buffer
			if err := f.WriteSnapshot(&buf); err != nil {
				buf.Reset()
			}
			written <- buf.Bytes()
		}()
		// Overwrite every key and add more while the frozen state waits
		// or is being written.
		for i := range 200 {
			a.one(putCmd(0, 0, fmt.Sprintf("k%03d", i), "after"))
		}
		got := <-written
		require.NoError(t, f.Close())
		require.Equal(t, want, got, "the frozen state is the one at Freeze")

		fresh := NewMemory(Options{})
		defer fresh.Close()
		require.NoError(t, fresh.Restore(bytes.NewReader(got)))
		g, err := fresh.Get([]byte("k050"))
		require.NoError(t, err)
		require.Equal(t, "before", string(g.Value))
		require.Equal(t, uint64(300), s.AppliedIndex(), "Apply went on meanwhile")
	})
}

// A snapshot from a build before history (format 1: key records, no
// history) restores with each key's current version as its only history
// entry, so reads at its revision and later work and compaction finds
// nothing older.
func TestSnapshotFormat1IsRead(t *testing.T) {
	var buf bytes.Buffer
	sw := &snapshotWriter{bw: bufio.NewWriter(&buf), sum: crc32.New(castagnoli)}
	sw.write(append([]byte(snapshotMagic), 0, 0, 0, 1))
	sw.record(recHeader, &kvpb.SnapshotHeader{AppliedIndex: 9, Revision: 7})
	sw.record(recKeyValue, &kvpb.KeyValue{Key: []byte("a"), Value: []byte("1"), Version: 3})
	sw.record(recKeyValue, &kvpb.KeyValue{Key: []byte("b"), Value: []byte("2"), Version: 7})
	sw.record(recEnd, &kvpb.SnapshotEnd{KeyCount: 2})
	var trailer [4]byte
	binary.BigEndian.PutUint32(trailer[:], sw.sum.Sum32())
	sw.write(trailer[:])
	require.NoError(t, sw.bw.Flush())

	implementations(t, Options{}, func(t *testing.T, s Store) {
		require.NoError(t, s.Restore(bytes.NewReader(buf.Bytes())))
		resp, err := s.EtcdRange(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c"), Revision: 5}, 0)
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1, "at revision 5 only a existed")
		require.Equal(t, int64(3), resp.Kvs[0].CreateRevision)
		require.Equal(t, int64(1), resp.Kvs[0].Version)

		var again bytes.Buffer
		_, err = s.Snapshot(&again)
		require.NoError(t, err)
		sum, err := SummarizeSnapshot(&again)
		require.NoError(t, err)
		require.Equal(t, uint64(2), sum.Keys)
	})
}

// The memory store keeps each version's snapshot record, encoded at the
// first snapshot that meets it or as read by Restore. Whatever it kept,
// its snapshots must be the bytes a store that never took one writes for
// the same state: after repeated snapshots, after a restore, and after
// writes on top of either.
func TestMemorySnapshotRecordCacheWritesTheSameBytes(t *testing.T) {
	writes := func(a *applier, from, to int) {
		for i := from; i < to; i++ {
			key := fmt.Sprintf("k%02d", i%7)
			if i%5 == 4 {
				a.one(delCmd(0, 0, key))
			} else {
				a.one(putCmd(0, 0, key, fmt.Sprintf("v%d", i)))
			}
		}
	}
	fresh := func(to int) []byte { // never snapshotted before
		s := NewMemory(Options{})
		defer s.Close()
		writes(newApplier(t, s), 0, to)
		return stateOf(t, s)
	}

	s := NewMemory(Options{})
	defer s.Close()
	a := newApplier(t, s)
	writes(a, 0, 40)
	first := stateOf(t, s)
	require.Equal(t, fresh(40), first)
	require.Equal(t, first, stateOf(t, s), "a second snapshot, from the kept records")
	writes(a, 40, 60)
	require.Equal(t, fresh(60), stateOf(t, s), "kept records and new versions together")

	restored := NewMemory(Options{})
	defer restored.Close()
	require.NoError(t, restored.Restore(bytes.NewReader(first)))
	require.Equal(t, first, stateOf(t, restored), "the records as read, written back")
	writes(&applier{t: t, s: restored, next: 41}, 40, 60)
	require.Equal(t, fresh(60), stateOf(t, restored), "records as read and new versions together")
}

// A history record decodes the same in place as through proto.Unmarshal,
// whatever the bytes, and a record as the writer encodes it takes the
// in-place path, with its key and value pointing into the record.
func TestDecodeHistoryRecordMatchesProto(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		kv := &kvpb.KeyValue{
			Key:            rapid.SliceOfN(rapid.Byte(), 0, 20).Draw(rt, "key"),
			Value:          rapid.SliceOfN(rapid.Byte(), 0, 50).Draw(rt, "value"),
			Version:        rapid.Uint64().Draw(rt, "version"),
			CreateRevision: rapid.Uint64().Draw(rt, "create"),
			Count:          rapid.Uint64().Draw(rt, "count"),
			Lease:          rapid.OneOf(rapid.Just(uint64(0)), rapid.Uint64()).Draw(rt, "lease"),
		}
		kv.Deleted = metaFromProto(kv).tombstone()
		var scratch kvpb.KeyValue
		record, err := historyPayload(nil, &scratch, kv.Key, kv.Value, metaFromProto(kv))
		if err != nil {
			rt.Fatal(err)
		}
		var got kvpb.KeyValue
		if !decodeHistoryInPlace(record, &got) {
			rt.Fatalf("the writer's layout %x not read in place", record)
		}
		if !proto.Equal(&got, kv) {
			rt.Fatalf("in place: %v, want %v", &got, kv)
		}
		// Sharing record's array, the value ends where its capacity says.
		if k := cap(record) - cap(got.Value); len(got.Value) > 0 && (k < 0 || k >= len(record) || &got.Value[0] != &record[k]) {
			rt.Fatal("the value was copied")
		}
		// Any bytes at all, made by changing the record: the two decoders
		// agree on whether they decode, and on what.
		mutated := slices.Clone(record)
		for range rapid.IntRange(0, 4).Draw(rt, "changes") {
			switch {
			case rapid.Bool().Draw(rt, "field"): // a field of any number and type, anywhere
				i := rapid.IntRange(0, len(mutated)).Draw(rt, "at")
				field := protowire.AppendTag(nil, protowire.Number(rapid.IntRange(1, 9).Draw(rt, "num")), protowire.Type(rapid.IntRange(0, 5).Draw(rt, "type")))
				field = protowire.AppendVarint(field, rapid.Uint64Range(0, 300).Draw(rt, "v"))
				mutated = slices.Insert(mutated, i, field...)
			case len(mutated) > 0 && rapid.Bool().Draw(rt, "flip"):
				i := rapid.IntRange(0, len(mutated)-1).Draw(rt, "at")
				mutated[i] = rapid.Byte().Draw(rt, "byte")
			default:
				mutated = append(mutated, rapid.SliceOfN(rapid.Byte(), 1, 6).Draw(rt, "tail")...)
			}
		}
		var want kvpb.KeyValue
		wantErr := proto.Unmarshal(mutated, &want)
		got.Reset()
		got.Key = []byte("left over from an earlier record")
		gotErr := decodeHistoryRecord(mutated, &got)
		if (gotErr == nil) != (wantErr == nil) {
			rt.Fatalf("%x: decodeHistoryRecord %v, proto.Unmarshal %v", mutated, gotErr, wantErr)
		}
		if wantErr == nil && !proto.Equal(&got, &want) {
			rt.Fatalf("%x: decoded %v, proto.Unmarshal %v", mutated, &got, &want)
		}
	})
}
