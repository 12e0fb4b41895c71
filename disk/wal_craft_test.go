package disk

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk/walpb"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// Records with good checksums that this code could never have written are
// corruption too ("impossible frames"). These tests craft such segments.

type craftRecord struct {
	typ recordType
	msg proto.Message
	raw []byte // used instead of msg when set
}

func craftSegment(t *testing.T, seq uint64, recs ...craftRecord) []byte {
	var buf []byte
	for _, r := range recs {
		payload := r.raw
		if payload == nil {
			var err error
			payload, err = proto.Marshal(r.msg)
			must(t, err)
		}
		var err error
		buf, err = appendFrame(buf, seedFor(seq), int64(len(buf)), r.typ, payload)
		must(t, err)
	}
	return buf
}

func startRec(seq, last uint64, hs core.HardState, snap core.SnapshotMeta) craftRecord {
	return craftRecord{typ: recSegmentStart, msg: &walpb.SegmentStart{
		FormatVersion: walFormatVersion, Sequence: seq, LastIndex: last,
		HardState: raftpb.HardStateFromCore(hs), Snapshot: raftpb.SnapshotMetaFromCore(snap),
	}}
}

func entryRec(term, index uint64) craftRecord {
	return craftRecord{typ: recEntry, msg: &raftpb.Entry{Term: term, Index: index}}
}

func TestWALImpossibleRecords(t *testing.T) {
	zeroHS, zeroSnap := core.HardState{}, core.SnapshotMeta{}
	start := startRec(1, 0, zeroHS, zeroSnap)
	cases := []struct {
		name   string
		recs   []craftRecord
		reason string
	}{
		{"entry gap", []craftRecord{start, entryRec(1, 1), entryRec(1, 3)}, "gap"},
		{"entry below snapshot", []craftRecord{startRec(1, 5, zeroHS, core.SnapshotMeta{Index: 5}), entryRec(1, 5)}, "covered by the snapshot"},
		{"rewrite committed", []craftRecord{start, entryRec(1, 1), entryRec(1, 2),
			{typ: recHardState, msg: &raftpb.HardState{Term: 1, Commit: 2}}, entryRec(2, 2)}, "committed"},
		{"commit beyond log", []craftRecord{start, {typ: recHardState, msg: &raftpb.HardState{Commit: 1}}}, "beyond the last entry"},
		{"install older", []craftRecord{startRec(1, 5, zeroHS, core.SnapshotMeta{Index: 5}),
			{typ: recSnapshot, msg: &walpb.SnapshotMarker{Meta: &raftpb.SnapshotMeta{Index: 4}, ReplacesLog: true}}}, "older"},
		{"compact beyond log", []craftRecord{start,
			{typ: recSnapshot, msg: &walpb.SnapshotMarker{Meta: &raftpb.SnapshotMeta{Index: 4}}}}, "outside the log"},
		{"entry type", []craftRecord{start, {typ: recEntry, msg: &raftpb.Entry{Index: 1, Type: 2}}}, "unknown type 2"},
		// index 1, type 2^32-1: what the first format's uint32 type field
		// could hold, beyond any enum value.
		{"entry type uint32", []craftRecord{start, {typ: recEntry, raw: []byte{0x10, 0x01, 0x18, 0xff, 0xff, 0xff, 0xff, 0x0f}}}, "unknown type"},
		{"undecodable entry", []craftRecord{start, {typ: recEntry, raw: []byte{0xff, 0xff}}}, "undecodable"},
		{"undecodable hard state", []craftRecord{start, {typ: recHardState, raw: []byte{0x08}}}, "undecodable"},
		{"undecodable marker", []craftRecord{start, {typ: recSnapshot, raw: []byte{0x0a, 0x05}}}, "undecodable"},
		{"undecodable start", []craftRecord{{typ: recSegmentStart, raw: []byte{0x12}}}, "undecodable"},
		{"wrong sequence", []craftRecord{startRec(2, 0, zeroHS, zeroSnap)}, "segment 2"},
		{"future format", []craftRecord{{typ: recSegmentStart, msg: &walpb.SegmentStart{FormatVersion: 9, Sequence: 1}}}, "format version 9"},
		{"start inconsistent", []craftRecord{startRec(1, 3, core.HardState{Commit: 4}, zeroSnap)}, "below the snapshot"},
		{"no start", []craftRecord{entryRec(1, 1)}, "not a segment start"},
		{"second start", []craftRecord{start, start}, "middle of a segment"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newTestMemFS(1)
			must(t, m.MkdirAll("/w"))
			writeFile(t, m, "/w/"+segmentName(1), craftSegment(t, 1, c.recs...), true)
			_, _, err := Open(m, "/w", Options{})
			var ce *CorruptionError
			if !errors.As(err, &ce) || !strings.Contains(ce.Reason, c.reason) {
				t.Fatalf("got %v, want corruption mentioning %q", err, c.reason)
			}
			if ce.File != filepath.Join("/w", segmentName(1)) {
				t.Fatalf("error names %s", ce.File)
			}
		})
	}

	t.Run("empty segment", func(t *testing.T) {
		m := newTestMemFS(1)
		must(t, m.MkdirAll("/w"))
		writeFile(t, m, "/w/"+segmentName(1), nil, true)
		if _, _, err := Open(m, "/w", Options{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("empty segment: %v", err)
		}
	})

	t.Run("segments disagree", func(t *testing.T) {
		m := newTestMemFS(1)
		must(t, m.MkdirAll("/w"))
		writeFile(t, m, "/w/"+segmentName(1), craftSegment(t, 1, start, entryRec(1, 1)), true)
		writeFile(t, m, "/w/"+segmentName(2), craftSegment(t, 2, startRec(2, 7, zeroHS, zeroSnap)), true)
		_, _, err := Open(m, "/w", Options{})
		var ce *CorruptionError
		if !errors.As(err, &ce) || ce.File != "/w/"+segmentName(2) || !strings.Contains(ce.Reason, "disagrees") {
			t.Fatalf("disagreeing segments: %v", err)
		}
	})

	t.Run("torn tail only in the last segment", func(t *testing.T) {
		m := newTestMemFS(1)
		must(t, m.MkdirAll("/w"))
		seg1 := craftSegment(t, 1, start, entryRec(1, 1))
		writeFile(t, m, "/w/"+segmentName(1), seg1[:len(seg1)-3], true)
		writeFile(t, m, "/w/"+segmentName(2), craftSegment(t, 2, startRec(2, 0, zeroHS, zeroSnap)), true)
		_, _, err := Open(m, "/w", Options{})
		var ce *CorruptionError
		if !errors.As(err, &ce) || ce.File != "/w/"+segmentName(1) {
			t.Fatalf("torn record in an older segment: %v", err)
		}
	})
}

func TestRecordLimits(t *testing.T) {
	if _, err := appendFrame(nil, seedFor(1), 0, recEntry, make([]byte, maxPayload+1)); err == nil {
		t.Fatal("oversized record accepted")
	}
	m := newTestMemFS(1)
	w, err := Create(m, "/w", Options{})
	must(t, err)
	big := []core.Entry{{Term: 1, Index: 1, Data: make([]byte, maxPayload)}}
	if err := w.Append(core.HardState{}, big); err == nil {
		t.Fatal("oversized entry accepted")
	}
	must(t, w.Append(core.HardState{}, []core.Entry{{Term: 1, Index: 1, Data: []byte("ok")}}))
	must(t, w.Sync())
	_, rec, err := Open(m, "/w", Options{})
	must(t, err)
	if len(rec.Entries) != 1 {
		t.Fatalf("%d entries", len(rec.Entries))
	}
	for typ, want := range map[recordType]string{recEntry: "entry", recSnapshot: "snapshot", recordType(9): "type-9",
		recSegmentStart: "segment-start", recHardState: "hard-state"} {
		if typ.String() != want {
			t.Errorf("%d.String() = %q", typ, typ.String())
		}
	}
	// A header claiming an impossible length or type is a bad header.
	frame, err := appendFrame(nil, seedFor(1), 0, recEntry, []byte("x"))
	must(t, err)
	for name, mutate := range map[string]func(h []byte){
		"reserved": func(h []byte) { h[13] = 1 },
		"type":     func(h []byte) { h[12] = 77 },
		"length":   func(h []byte) { h[8], h[9], h[10], h[11] = 0xff, 0xff, 0xff, 0x7f },
		"offset":   func(h []byte) { h[16] = 8 },
	} {
		b := append([]byte(nil), frame...)
		mutate(b)
		copy(b[0:4], le32(headerChecksum(seedFor(1), b)))
		if f := decodeFrame(b, seedFor(1), 0); f.status != frameBadHeader {
			t.Errorf("%s: status %d (%s)", name, f.status, f.reason)
		}
	}
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
