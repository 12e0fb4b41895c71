package kvstore

import (
	"bytes"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// sameCommand compares two decodings; an empty key or value equals a
// missing one (apply looks only at lengths and copies the bytes).
func sameCommand(a, b command) bool {
	norm := func(c command) command {
		if len(c.key) == 0 {
			c.key = nil
		}
		if len(c.value) == 0 {
			c.value = nil
		}
		return c
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// fataler is what checkDecode needs of *testing.T and *rapid.T.
type fataler interface {
	Fatalf(format string, args ...any)
}

func checkDecode(t fataler, data []byte) {
	var got command
	gotErr := decodeCommand(data, &got)
	var want command
	wantErr := decodeProto(data, &want)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("decode %x: error %v, proto.Unmarshal says %v", data, gotErr, wantErr)
	}
	if gotErr == nil && !sameCommand(got, want) {
		t.Fatalf("decode %x = %+v, proto.Unmarshal gives %+v", data, got, want)
	}
}

// The fast path must be taken for the puts, deletes and compare-and-swaps
// the server and the simulator propose (or it buys nothing), and give
// exactly what proto.Unmarshal gives.
func TestDecodeFastPath(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		key := rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(rt, "key")
		value := rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(rt, "value")
		cmd := &kvpb.Command{
			ClientId: rapid.Uint64().Draw(rt, "client"),
			Seq:      rapid.Uint64().Draw(rt, "seq"),
		}
		switch rapid.IntRange(0, 2).Draw(rt, "op") {
		case 0:
			cmd.Op = &kvpb.Command_Put{Put: &kvpb.Put{Key: key, Value: value}}
		case 1:
			cmd.Op = &kvpb.Command_Delete{Delete: &kvpb.Delete{Key: key}}
		default:
			cmd.Op = &kvpb.Command_CompareAndSwap{CompareAndSwap: &kvpb.CompareAndSwap{
				Key: key, ExpectedVersion: rapid.Uint64().Draw(rt, "expected"), NewValue: value}}
		}
		data, err := proto.Marshal(cmd)
		if err != nil {
			rt.Fatal(err)
		}
		var c command
		if !decodeSimple(data, &c) {
			rt.Fatalf("%v (%x) not taken by the fast path", cmd, data)
		}
		checkDecode(rt, data)
	})
}

// Every other shape falls back to proto.Unmarshal with the same result.
func TestDecodeCommandOtherShapes(t *testing.T) {
	for name, data := range applySeeds() {
		t.Run(name, func(t *testing.T) { checkDecode(t, data) })
	}
	twice := append(putCmd(1, 2, "k", "v"), putCmd(3, 4, "k2", "")...) // fields repeat: last wins, puts merge
	checkDecode(t, twice)
	reordered := append(encode(&kvpb.Command{Seq: 7}), encode(&kvpb.Command{ClientId: 3})...)
	checkDecode(t, append(reordered, putCmd(0, 0, "k", "v")...))
}

// FuzzDecodeCommand: on any bytes, decodeCommand agrees with
// proto.Unmarshal (the fast path accepts only what it reads the same way).
func FuzzDecodeCommand(f *testing.F) {
	for _, data := range applySeeds() {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data) })
}

// EncodePut writes exactly what proto.Marshal writes for the same put, so
// a command from either decodes (and is stored in the log) the same way.
func TestEncodePutMatchesProto(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		client := rapid.OneOf(rapid.Just(uint64(0)), rapid.Uint64()).Draw(rt, "client")
		seq := rapid.OneOf(rapid.Just(uint64(0)), rapid.Uint64()).Draw(rt, "seq")
		key := rapid.SliceOfN(rapid.Byte(), 0, 200).Draw(rt, "key")
		value := rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(rt, "value")
		want, err := proto.Marshal(&kvpb.Command{ClientId: client, Seq: seq, Op: &kvpb.Command_Put{Put: &kvpb.Put{Key: key, Value: value}}})
		if err != nil {
			rt.Fatal(err)
		}
		if got := EncodePut(client, seq, key, value); !bytes.Equal(got, want) {
			rt.Fatalf("EncodePut = %x, proto.Marshal = %x", got, want)
		}
	})
}
