package raftpb

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// genBytes draws nil for empty, since protobuf cannot tell nil from empty.
func genBytes(t *rapid.T, label string, max int) []byte {
	b := rapid.SliceOfN(rapid.Byte(), 0, max).Draw(t, label)
	if len(b) == 0 {
		return nil
	}
	return b
}

func genIDs(t *rapid.T, label string) []core.NodeID {
	ids := rapid.SliceOfN(rapid.Uint64(), 0, 5).Draw(t, label)
	if len(ids) == 0 {
		return nil
	}
	out := make([]core.NodeID, len(ids))
	for i, id := range ids {
		out[i] = core.NodeID(id)
	}
	return out
}

// genMessage draws any message core could hand to a transport: every field
// over its whole range, including the extremes rapid favours.
func genMessage(t *rapid.T) core.Message {
	m := core.Message{
		Type:       core.MessageType(rapid.IntRange(int(core.MsgApp), int(lastMessageType)).Draw(t, "type")),
		From:       core.NodeID(rapid.Uint64().Draw(t, "from")),
		To:         core.NodeID(rapid.Uint64().Draw(t, "to")),
		Term:       rapid.Uint64().Draw(t, "term"),
		Index:      rapid.Uint64().Draw(t, "index"),
		LogTerm:    rapid.Uint64().Draw(t, "logTerm"),
		Commit:     rapid.Uint64().Draw(t, "commit"),
		Reject:     rapid.Bool().Draw(t, "reject"),
		RejectHint: rapid.Uint64().Draw(t, "rejectHint"),
		Context:    genBytes(t, "context", 16),
	}
	n := rapid.IntRange(0, 5).Draw(t, "entries")
	if n > 0 {
		m.Entries = make([]core.Entry, n)
		for i := range m.Entries {
			m.Entries[i] = core.Entry{
				Term:  rapid.Uint64().Draw(t, "eterm"),
				Index: rapid.Uint64().Draw(t, "eindex"),
				Type:  core.EntryType(rapid.IntRange(0, 1).Draw(t, "etype")),
				Data:  genBytes(t, "data", 64),
			}
		}
	}
	if rapid.Bool().Draw(t, "hasSnapshot") {
		m.Snapshot = &core.SnapshotMeta{
			Index: rapid.Uint64().Draw(t, "sindex"),
			Term:  rapid.Uint64().Draw(t, "sterm"),
			Conf:  core.ConfState{Voters: genIDs(t, "voters"), Learners: genIDs(t, "learners")},
		}
	}
	return m
}

func equalMessages(t *rapid.T, want, got core.Message) {
	t.Helper()
	if want.Type != got.Type || want.From != got.From || want.To != got.To || want.Term != got.Term ||
		want.Index != got.Index || want.LogTerm != got.LogTerm || want.Commit != got.Commit ||
		want.Reject != got.Reject || want.RejectHint != got.RejectHint || !bytes.Equal(want.Context, got.Context) {
		t.Fatalf("header differs:\nwant %v ctx=%x\n got %v ctx=%x", want, want.Context, got, got.Context)
	}
	if len(want.Entries) != len(got.Entries) {
		t.Fatalf("entry count: want %d, got %d", len(want.Entries), len(got.Entries))
	}
	for i := range want.Entries {
		w, g := want.Entries[i], got.Entries[i]
		if w.Term != g.Term || w.Index != g.Index || w.Type != g.Type || !bytes.Equal(w.Data, g.Data) {
			t.Fatalf("entry %d: want %+v, got %+v", i, w, g)
		}
	}
	if (want.Snapshot == nil) != (got.Snapshot == nil) {
		t.Fatalf("snapshot presence: want %v, got %v", want.Snapshot != nil, got.Snapshot != nil)
	}
	if want.Snapshot != nil {
		w, g := want.Snapshot, got.Snapshot
		if w.Index != g.Index || w.Term != g.Term || !w.Conf.Equal(g.Conf) {
			t.Fatalf("snapshot: want %+v, got %+v", *w, *g)
		}
	}
}

// TestPropertyRoundTrip: every message survives core → protobuf → wire bytes
// → protobuf → core, through a reused Encoder (so stale state from earlier
// batches would show) and through the one-message FromCore/ToCore.
func TestPropertyRoundTrip(t *testing.T) {
	var enc Encoder
	rapid.Check(t, func(t *rapid.T) {
		msgs := rapid.SliceOfN(rapid.Custom(genMessage), 0, 8).Draw(t, "batch")
		enc.Reset()
		for i := range msgs {
			enc.Add(&msgs[i])
		}
		wire, err := proto.Marshal(enc.Batch())
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var b Batch
		if err := proto.Unmarshal(wire, &b); err != nil {
			t.Fatalf("unmarshal: %v", err)
		}
		estimate := 0
		for i := range msgs {
			estimate += EncodedSizeEstimate(&msgs[i])
		}
		if len(wire) > estimate {
			t.Fatalf("batch encodes to %d bytes, above the estimate %d", len(wire), estimate)
		}
		got, err := DecodeBatch(&b, nil)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if len(got) != len(msgs) {
			t.Fatalf("decoded %d messages, sent %d", len(got), len(msgs))
		}
		for i := range msgs {
			equalMessages(t, msgs[i], got[i])
			one, err := ToCore(FromCore(&msgs[i]))
			if err != nil {
				t.Fatalf("ToCore(FromCore): %v", err)
			}
			equalMessages(t, msgs[i], one)
		}
	})
}

// TestDecodedEntriesDoNotAlias: appending to one decoded message's entries
// must not overwrite the next message's (they share one allocation).
func TestDecodedEntriesDoNotAlias(t *testing.T) {
	b := &Batch{Messages: []*Message{
		{Type: MessageType_MSG_APP, Entries: []*Entry{{Index: 1}}},
		{Type: MessageType_MSG_APP, Entries: []*Entry{{Index: 2}}},
	}}
	got, err := DecodeBatch(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(got[0].Entries, core.Entry{Index: 99})
	if got[1].Entries[0].Index != 2 {
		t.Fatalf("second message's entry overwritten: %+v", got[1].Entries[0])
	}
}

func TestDecodeRejectsUnknownEnums(t *testing.T) {
	cases := map[string]*Batch{
		"zero type":         {Messages: []*Message{{Type: MessageType_MSG_UNSPECIFIED}}},
		"type out of range": {Messages: []*Message{{Type: MessageType(lastMessageType) + 1}}},
		"negative type":     {Messages: []*Message{{Type: -1}}},
		"entry type":        {Messages: []*Message{{Type: MessageType_MSG_APP, Entries: []*Entry{{Type: 2}}}}},
		"nil entry":         {Messages: []*Message{{Type: MessageType_MSG_APP, Entries: []*Entry{nil}}}},
		"nil message":       {Messages: []*Message{nil}},
		"second bad":        {Messages: []*Message{{Type: MessageType_MSG_APP}, {Type: 77}}},
	}
	for name, b := range cases {
		out := []core.Message{{Type: core.MsgHeartbeat}}
		got, err := DecodeBatch(b, out)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		}
		if len(got) != 1 {
			t.Errorf("%s: output grew to %d on error", name, len(got))
		}
	}
}

func TestValidMessageType(t *testing.T) {
	for ty := 0; ty < 256; ty++ {
		want := ty >= int(core.MsgApp) && ty <= int(core.MsgFetchResp)
		if got := ValidMessageType(core.MessageType(ty)); got != want {
			t.Errorf("ValidMessageType(%d) = %v", ty, got)
		}
	}
}

// FuzzDecode: arbitrary bytes from the network or a disk either fail to
// parse or decode without panicking, as a batch, a message (the header of a
// snapshot stream), an entry, snapshot metadata.
func FuzzDecode(f *testing.F) {
	var enc Encoder
	enc.Add(&core.Message{Type: core.MsgApp, From: 1, To: 2, Entries: []core.Entry{{Index: 1, Data: []byte("x")}}})
	seed, _ := proto.Marshal(enc.Batch())
	f.Add(seed)
	f.Add([]byte{0x0a, 0x02, 0x08, 0x63})
	f.Fuzz(func(t *testing.T, data []byte) {
		var b Batch
		if proto.Unmarshal(data, &b) == nil {
			_, _ = DecodeBatch(&b, nil)
		}
		var m Message
		if proto.Unmarshal(data, &m) == nil {
			_, _ = ToCore(&m)
		}
		var e Entry
		if proto.Unmarshal(data, &e) == nil {
			_, _ = EntryToCore(&e)
		}
		var s SnapshotMeta
		if proto.Unmarshal(data, &s) == nil {
			_ = SnapshotMetaToCore(&s)
		}
	})
}

func benchBatch(n int) []core.Message {
	msgs := make([]core.Message, n)
	for i := range msgs {
		msgs[i] = core.Message{Type: core.MsgApp, From: 1, To: 2, Term: 5, Index: uint64(i), LogTerm: 5, Commit: uint64(i),
			Entries: []core.Entry{{Term: 5, Index: uint64(i + 1), Data: make([]byte, 256)}}}
	}
	return msgs
}

// BenchmarkEncode: steady-state encoding of a 64-message batch, including
// the protobuf marshal that gRPC performs.
func BenchmarkEncode(b *testing.B) {
	msgs := benchBatch(64)
	var enc Encoder
	b.ReportAllocs()
	for b.Loop() {
		enc.Reset()
		for i := range msgs {
			enc.Add(&msgs[i])
		}
		if _, err := proto.Marshal(enc.Batch()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/msg")
}

// BenchmarkDecode: the conversion step alone (protobuf unmarshal is gRPC's).
func BenchmarkDecode(b *testing.B) {
	msgs := benchBatch(64)
	var enc Encoder
	for i := range msgs {
		enc.Add(&msgs[i])
	}
	wire, _ := proto.Marshal(enc.Batch())
	var pb Batch
	if err := proto.Unmarshal(wire, &pb); err != nil {
		b.Fatal(err)
	}
	var out []core.Message
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if out, err = DecodeBatch(&pb, out[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/msg")
}
