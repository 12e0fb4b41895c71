package sim

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// sessionOf must read what proto.Unmarshal reads, for every kind of
// command the clients send.
func TestSessionOfMatchesUnmarshal(t *testing.T) {
	cmds := []*kvpb.Command{
		{Op: &kvpb.Command_Register{Register: &kvpb.Register{}}},
		{ClientId: 7, Seq: 3, Op: &kvpb.Command_Put{Put: &kvpb.Put{Key: []byte("k1"), Value: []byte("c1-2")}}},
		{ClientId: 1 << 40, Seq: 1 << 33, Op: &kvpb.Command_Delete{Delete: &kvpb.Delete{Key: []byte("k0")}}},
		{ClientId: 2, Seq: 300, Op: &kvpb.Command_CompareAndSwap{CompareAndSwap: &kvpb.CompareAndSwap{
			Key: []byte("k2"), ExpectedVersion: 9, NewValue: []byte("v")}}},
	}
	for _, c := range cmds {
		data := mustMarshal(c)
		var want kvpb.Command
		if err := proto.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		got, ok := sessionOf(data)
		if !ok || got != (sessionSeq{want.ClientId, want.Seq}) {
			t.Errorf("sessionOf(%v) = %v, %v; want %d/%d", c, got, ok, want.ClientId, want.Seq)
		}
	}
	if _, ok := sessionOf([]byte{0x08}); ok {
		t.Error("sessionOf accepted a truncated varint")
	}
}
