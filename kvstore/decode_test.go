package kvstore

import (
	"bytes"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// viaProto decodes data the slow way, with proto.Unmarshal only: what
// decodeCommand must always agree with.
func viaProto(data []byte) (command, error) {
	var pb kvpb.Command
	if err := proto.Unmarshal(data, &pb); err != nil {
		return command{}, err
	}
	c := command{clientID: pb.ClientId, seq: pb.Seq}
	switch op := pb.Op.(type) {
	case *kvpb.Command_Put:
		c.op, c.key, c.value = opPut, op.Put.GetKey(), op.Put.GetValue()
	case *kvpb.Command_Delete:
		c.op, c.key = opDelete, op.Delete.GetKey()
	case *kvpb.Command_CompareAndSwap:
		c.op, c.key, c.value, c.expected = opCAS, op.CompareAndSwap.GetKey(), op.CompareAndSwap.GetNewValue(), op.CompareAndSwap.GetExpectedVersion()
	case *kvpb.Command_Register:
		c.op = opRegister
	}
	return c, nil
}

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
	want, wantErr := viaProto(data)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("decode %x: error %v, proto.Unmarshal says %v", data, gotErr, wantErr)
	}
	if gotErr == nil && !sameCommand(got, want) {
		t.Fatalf("decode %x = %+v, proto.Unmarshal gives %+v", data, got, want)
	}
}

// The fast path must be taken for the puts the server proposes (or it
// buys nothing), and give exactly what proto.Unmarshal gives.
func TestDecodePutFastPath(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		cmd := &kvpb.Command{
			ClientId: rapid.Uint64().Draw(rt, "client"),
			Seq:      rapid.Uint64().Draw(rt, "seq"),
			Op: &kvpb.Command_Put{Put: &kvpb.Put{
				Key:   rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(rt, "key"),
				Value: rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(rt, "value"),
			}},
		}
		data, err := proto.Marshal(cmd)
		if err != nil {
			rt.Fatal(err)
		}
		var c command
		if !decodePut(data, &c) {
			rt.Fatalf("put %x not taken by the fast path", data)
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
