package disk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// A WAL record on disk (all integers little-endian):
//
//	offset  size  field
//	0       4     header checksum: CRC32C of the segment's sequence number
//	              (8 bytes) followed by bytes 4..24 of this header
//	4       4     payload checksum: CRC32C of the payload
//	8       4     payload length n
//	12      1     record type
//	13      3     reserved, zero
//	16      8     the record's own offset within its segment file
//	24      n     payload (a protobuf message from walpb or raftpb)
//	24+n    1     trailer: 0xFF
//
// The header has its own checksum so that a damaged length is never trusted.
// The sequence number and offset bind a record to the one place it was
// written, so a record that turns up anywhere else (a misdirected write, a
// stray copy) does not decode. The trailer is never zero, so a record whose
// last byte is zero was cut short by a crash; see classifyDamage.
const (
	headerSize  = 24
	trailerSize = 1
	trailerByte = 0xFF
	// maxPayload bounds a record's payload; a header claiming more is
	// impossible. It leaves segment offsets well inside 32 bits.
	maxPayload = 64 << 20
)

type recordType uint8

const (
	recSegmentStart recordType = 1 // walpb.SegmentStart, first in every segment
	recEntry        recordType = 2 // raftpb.Entry
	recHardState    recordType = 3 // raftpb.HardState
	recSnapshot     recordType = 4 // walpb.SnapshotMarker
	recFill         recordType = 5 // raftpb.Entry: the data of an entry the log holds as a hole
)

func (t recordType) String() string {
	switch t {
	case recSegmentStart:
		return "segment-start"
	case recEntry:
		return "entry"
	case recHardState:
		return "hard-state"
	case recSnapshot:
		return "snapshot"
	case recFill:
		return "fill"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

func (t recordType) known() bool { return t >= recSegmentStart && t <= recFill }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segmentSeed is the CRC32C of a segment's sequence number (8 bytes), the
// starting value of every header checksum in that segment. Computed once per
// segment rather than per record.
type segmentSeed uint32

func seedFor(seq uint64) segmentSeed {
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], seq)
	return segmentSeed(crc32.Checksum(s[:], castagnoli))
}

func headerChecksum(seed segmentSeed, h []byte) uint32 {
	return crc32.Update(uint32(seed), castagnoli, h[4:headerSize])
}

// beginFrame reserves room for a header at the end of buf. The caller appends
// the payload and then calls finishFrame with the returned start.
func beginFrame(buf []byte) ([]byte, int) {
	start := len(buf)
	var zero [headerSize]byte
	return append(buf, zero[:]...), start
}

// finishFrame completes the record that begins at buf[start] and whose
// payload runs to the end of buf; off is where the record will sit in the
// segment whose seed is given.
func finishFrame(buf []byte, start int, seed segmentSeed, off int64, typ recordType) ([]byte, error) {
	n := len(buf) - start - headerSize
	if n > maxPayload {
		return buf[:start], fmt.Errorf("wal: %s record of %d bytes exceeds the %d-byte limit", typ, n, maxPayload)
	}
	h := buf[start : start+headerSize]
	binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(buf[start+headerSize:], castagnoli))
	binary.LittleEndian.PutUint32(h[8:], uint32(n))
	h[12] = byte(typ)
	h[13], h[14], h[15] = 0, 0, 0
	binary.LittleEndian.PutUint64(h[16:], uint64(off))
	binary.LittleEndian.PutUint32(h[0:], headerChecksum(seed, h))
	return append(buf, trailerByte), nil
}

// appendFrame appends a whole record with the given payload.
func appendFrame(buf []byte, seed segmentSeed, off int64, typ recordType, payload []byte) ([]byte, error) {
	buf, start := beginFrame(buf)
	buf = append(buf, payload...)
	return finishFrame(buf, start, seed, off, typ)
}

// frameStatus says how decoding a record went.
type frameStatus uint8

const (
	frameOK        frameStatus = iota
	frameShort                 // fewer bytes than a header remain
	frameBadHeader             // the header fails its checksum or is impossible
	frameTruncated             // the header is good but the record runs past the end
	frameBadBody               // the payload checksum or the trailer is wrong
)

// frame is a decoded record, or the description of why it did not decode.
type frame struct {
	status  frameStatus
	typ     recordType
	payload []byte // aliases the input
	size    int    // bytes the record occupies (when the header is good)
	reason  string // why status is not frameOK
}

// decodeFrame decodes the record at the start of b, which lies at offset off
// of the segment whose seed is given. It never panics, whatever b holds.
func decodeFrame(b []byte, seed segmentSeed, off int64) frame {
	if len(b) < headerSize {
		return frame{status: frameShort, reason: fmt.Sprintf("%d bytes left, a header needs %d", len(b), headerSize)}
	}
	h := b[:headerSize]
	if got, want := binary.LittleEndian.Uint32(h[0:]), headerChecksum(seed, h); got != want {
		return frame{status: frameBadHeader, reason: fmt.Sprintf("header checksum %08x, computed %08x", got, want)}
	}
	n := binary.LittleEndian.Uint32(h[8:])
	typ := recordType(h[12])
	switch {
	case h[13]|h[14]|h[15] != 0:
		return frame{status: frameBadHeader, reason: "reserved header bytes are not zero"}
	case !typ.known():
		return frame{status: frameBadHeader, reason: fmt.Sprintf("unknown record type %d", uint8(typ))}
	case n > maxPayload:
		return frame{status: frameBadHeader, reason: fmt.Sprintf("payload length %d exceeds the %d-byte limit", n, maxPayload)}
	case int64(binary.LittleEndian.Uint64(h[16:])) != off:
		return frame{status: frameBadHeader, reason: fmt.Sprintf("record written for offset %d found at %d (misdirected write?)",
			int64(binary.LittleEndian.Uint64(h[16:])), off)}
	}
	size := headerSize + int(n) + trailerSize
	if len(b) < size {
		return frame{status: frameTruncated, typ: typ, size: size,
			reason: fmt.Sprintf("%s record of %d bytes cut off after %d", typ, size, len(b))}
	}
	payload := b[headerSize : headerSize+int(n)]
	if b[size-1] != trailerByte {
		return frame{status: frameBadBody, typ: typ, size: size, reason: fmt.Sprintf("%s record trailer is %#x", typ, b[size-1])}
	}
	if got, want := binary.LittleEndian.Uint32(h[4:]), crc32.Checksum(payload, castagnoli); got != want {
		return frame{status: frameBadBody, typ: typ, size: size,
			reason: fmt.Sprintf("%s record payload checksum %08x, computed %08x", typ, got, want)}
	}
	return frame{status: frameOK, typ: typ, payload: payload, size: size}
}

// isTornTail decides whether a record that failed to decode at b[p:] (the
// rest of the last segment) is what a crash in the middle of a write leaves
// behind, rather than damage to data that was once written whole. A write
// cut short leaves a prefix of the intended bytes, and past it either the
// end of the file or zeros (the file grew but the data never landed). So the
// tail is torn exactly when everything past the first undecodable record's
// own extent is zero and the record itself is cut:
//
//   - fewer bytes than a header remain; or
//   - the header is bad and every byte after it is zero; or
//   - the header is good and the record runs past the end of the file; or
//   - the header is good, the body is bad, the record's last byte (the
//     trailer, never zero when written) is zero, and so is every byte after.
//
// Anything else — a bad record followed by non-zero bytes, a bad record
// whose trailer landed — is corruption.
func isTornTail(b []byte, f frame) bool {
	switch f.status {
	case frameShort, frameTruncated:
		return true
	case frameBadHeader:
		return allZero(b[headerSize:])
	case frameBadBody:
		return b[f.size-1] == 0 && allZero(b[f.size:])
	}
	return false
}

// RecordsEnd returns where the records of a WAL segment's image end:
// after them the WAL writes only zeros (Options.ZeroAhead), and no record
// ends in a zero byte. The simulator aims its bit rot there; tests cut and
// damage segments relative to it.
func RecordsEnd(segment []byte) int {
	return len(bytes.TrimRight(segment, "\x00"))
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// appendEntryPayload appends e encoded as a raftpb.Entry, byte for byte
// what proto.Marshal produces (fields in number order, zero values left
// out), without its reflection: the WAL encodes every entry it writes, and
// marshalling was most of the cost of an append. Recovery decodes it with
// proto.Unmarshal; a test holds the two encodings equal.
func appendEntryPayload(b []byte, e *core.Entry) []byte {
	b = appendVarintField(b, 1, e.Term)
	b = appendVarintField(b, 2, e.Index)
	b = appendVarintField(b, 3, uint64(e.Type))
	if len(e.Data) > 0 {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, e.Data)
	}
	return b
}

// appendHardStatePayload appends hs encoded as a raftpb.HardState, as
// appendEntryPayload does an entry.
func appendHardStatePayload(b []byte, hs core.HardState) []byte {
	b = appendVarintField(b, 1, hs.Term)
	b = appendVarintField(b, 2, uint64(hs.Vote))
	return appendVarintField(b, 3, hs.Commit)
}

// appendVarintField appends a proto3 varint field unless v is zero.
func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}
