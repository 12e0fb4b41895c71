package raftpb

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// Bytes the transport of commit 5c9f6aa (its own copy of these messages, in
// net/raftpb) sent for wireMessages, and for the header of a snapshot
// stream. Nodes of that version and of this one must understand each other.
const (
	oldBatchHex  = "0a2d0801100118022003280430023a090803100522037075743a12080310061801220a0101040003010203010440040a1308021002180120032806480150056203637478"
	oldHeaderHex = "08091001180420035a0e080710031a080a03010203120104"
)

var (
	wireMessages = []core.Message{
		{Type: core.MsgApp, From: 1, To: 2, Term: 3, Index: 4, LogTerm: 2, Commit: 4, Entries: []core.Entry{
			{Term: 3, Index: 5, Data: []byte("put")},
			{Term: 3, Index: 6, Type: core.EntryConfChange, Data: []byte{1, 1, 4, 0, 3, 1, 2, 3, 1, 4}},
		}},
		{Type: core.MsgAppResp, From: 2, To: 1, Term: 3, Index: 6, Reject: true, RejectHint: 5, Context: []byte("ctx")},
	}
	wireHeader = core.Message{Type: core.MsgSnap, From: 1, To: 4, Term: 3, Snapshot: &core.SnapshotMeta{
		Index: 7, Term: 3, Conf: core.ConfState{Voters: []core.NodeID{1, 2, 3}, Learners: []core.NodeID{4}},
	}}
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOldWireBytesDecode(t *testing.T) {
	var b Batch
	if err := proto.Unmarshal(mustHex(t, oldBatchHex), &b); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBatch(&b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wireMessages) {
		t.Fatalf("old batch decodes to\n%+v\nwant\n%+v", got, wireMessages)
	}
	var h Message
	if err := proto.Unmarshal(mustHex(t, oldHeaderHex), &h); err != nil {
		t.Fatal(err)
	}
	m, err := ToCore(&h)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, wireHeader) {
		t.Fatalf("old snapshot header decodes to %+v, want %+v", m, wireHeader)
	}
}

func TestWireBytesUnchanged(t *testing.T) {
	var enc Encoder
	for i := range wireMessages {
		enc.Add(&wireMessages[i])
	}
	batch, err := proto.Marshal(enc.Batch())
	if err != nil {
		t.Fatal(err)
	}
	if want := mustHex(t, oldBatchHex); !bytes.Equal(batch, want) {
		t.Errorf("batch encodes to\n%x\nthe old code sent\n%x", batch, want)
	}
	header, err := proto.Marshal(FromCore(&wireHeader))
	if err != nil {
		t.Fatal(err)
	}
	if want := mustHex(t, oldHeaderHex); !bytes.Equal(header, want) {
		t.Errorf("snapshot header encodes to\n%x\nthe old code sent\n%x", header, want)
	}
}
