package disk

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// FuzzRecordPayloads holds the WAL's own encoding of entries and hard
// states to what proto.Marshal makes of the same raftpb messages, which
// recovery decodes and older WALs hold.
func FuzzRecordPayloads(f *testing.F) {
	f.Add(uint64(0), uint64(0), uint8(0), []byte(nil), uint64(0))
	f.Add(uint64(1), uint64(1), uint8(1), []byte("x"), uint64(3))
	f.Add(uint64(1<<63), uint64(300), uint8(0), []byte{}, uint64(1<<40))
	f.Fuzz(func(t *testing.T, term, index uint64, typ uint8, data []byte, vote uint64) {
		e := core.Entry{Term: term, Index: index, Type: core.EntryType(typ % 2), Data: data}
		var pe raftpb.Entry
		raftpb.FillEntry(&pe, &e)
		want, err := proto.Marshal(&pe)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendEntryPayload([]byte("prefix"), &e); !bytes.Equal(got[6:], want) {
			t.Fatalf("entry %+v: encoded %x, proto.Marshal %x", e, got[6:], want)
		}
		hs := core.HardState{Term: term, Vote: core.NodeID(vote), Commit: index}
		want, err = proto.Marshal(raftpb.HardStateFromCore(hs))
		if err != nil {
			t.Fatal(err)
		}
		if got := appendHardStatePayload(nil, hs); !bytes.Equal(got, want) {
			t.Fatalf("hard state %+v: encoded %x, proto.Marshal %x", hs, got, want)
		}
	})
}
