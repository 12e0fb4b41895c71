package peerpb

import (
	"bytes"
	"encoding/hex"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// The service's method paths and a snapshot stream's first message are what
// the code of commit 5c9f6aa used: nodes of that version and of this one
// must reach each other's handlers and read each other's chunks.
func TestWireCompatibleWithOldNodes(t *testing.T) {
	if Peer_Messages_FullMethodName != "/keyval.net.raftpb.Peer/Messages" ||
		Peer_Snapshot_FullMethodName != "/keyval.net.raftpb.Peer/Snapshot" {
		t.Errorf("method paths %s, %s changed", Peer_Messages_FullMethodName, Peer_Snapshot_FullMethodName)
	}
	hdr := core.Message{Type: core.MsgSnap, From: 1, To: 4, Term: 3, Snapshot: &core.SnapshotMeta{
		Index: 7, Term: 3, Conf: core.ConfState{Voters: []core.NodeID{1, 2, 3}, Learners: []core.NodeID{4}},
	}}
	got, err := proto.Marshal(&SnapshotChunk{Kind: &SnapshotChunk_Header{Header: raftpb.FromCore(&hdr)}})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := hex.DecodeString("0a1808091001180420035a0e080710031a080a03010203120104")
	if !bytes.Equal(got, want) {
		t.Errorf("header chunk encodes to %x, the old code sent %x", got, want)
	}
}
