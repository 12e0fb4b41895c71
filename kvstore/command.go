package kvstore

import "google.golang.org/protobuf/encoding/protowire"

// EncodePut returns the encoded kvpb.Command of a put — the same bytes
// proto.Marshal writes for it — in one allocation, without building the
// protobuf messages first: the server encodes one of these per write.
func EncodePut(clientID, seq uint64, key, value []byte) []byte {
	inner := bytesFieldSize(key) + bytesFieldSize(value)
	n := 1 + protowire.SizeVarint(uint64(inner)) + inner
	if clientID != 0 {
		n += 1 + protowire.SizeVarint(clientID)
	}
	if seq != 0 {
		n += 1 + protowire.SizeVarint(seq)
	}
	b := make([]byte, 0, n)
	if clientID != 0 {
		b = protowire.AppendTag(b, fieldClientID, protowire.VarintType)
		b = protowire.AppendVarint(b, clientID)
	}
	if seq != 0 {
		b = protowire.AppendTag(b, fieldSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, seq)
	}
	b = protowire.AppendTag(b, fieldPut, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	if len(key) > 0 {
		b = protowire.AppendTag(b, fieldPutKey, protowire.BytesType)
		b = protowire.AppendBytes(b, key)
	}
	if len(value) > 0 {
		b = protowire.AppendTag(b, fieldPutValue, protowire.BytesType)
		b = protowire.AppendBytes(b, value)
	}
	return b
}

// bytesFieldSize is the encoded size of a proto3 bytes field with a
// one-byte tag: nothing when empty, as proto3 leaves it out.
func bytesFieldSize(v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return 1 + protowire.SizeBytes(len(v))
}
