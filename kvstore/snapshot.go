package kvstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Snapshot stream layout (docs/kvstore.md has the full description):
//
//	magic "KVSTSNAP" | format version u32
//	record*  where record = type u8 | length u32 | crc32c u32 | payload
//	trailer  crc32c u32 of every byte before it
//
// All integers are big-endian. A record's CRC covers its type, length and
// payload, so damage is reported at the record where it is; the trailer
// covers the whole stream, and the end record's counts catch a stream cut
// exactly at a record boundary. Records come in a fixed order: one header,
// the history in ascending (revision, key) order (from which the keys'
// current versions follow: each key's last entry, unless a tombstone), the
// leases and the sessions in ascending id order, one end. Version 2 has the
// history in (key, revision) order instead, which a store whose history is
// kept by revision can only write by a lookup per version; version 1, from
// before history, has key records, in ascending key order: each key's
// current version stands for its history. All three are read.
const (
	snapshotMagic         = "KVSTSNAP"
	snapshotFormatVersion = 3
	// snapshotFormatKeyOrder is version 2: a copy of such a stream
	// (CopySnapshot) is written in it, since its history comes in that
	// order.
	snapshotFormatKeyOrder = 2

	recHeader   byte = 1
	recKeyValue byte = 2
	recClient   byte = 3
	recEnd      byte = 4
	recHistory  byte = 5
	recLease    byte = 6

	recordHeaderSize = 1 + 4 + 4
	// maxRecordSize bounds a payload: a key-value record at the limits,
	// plus room for protobuf tags.
	maxRecordSize = MaxKeySize + MaxValueSize + 1024
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapshotWriter encodes a snapshot stream. Errors stick: after the first
// one every call is a no-op and finish reports it.
type snapshotWriter struct {
	// byKey: the history comes in (key, revision) order (format 2), so
	// the writer counts the live keys itself; in format 3 the store
	// says how many there are (setLiveKeys).
	byKey     bool
	bw        *bufio.Writer
	sum       hash.Hash32 // whole-stream checksum for the trailer
	keys      uint64      // live keys among the history records so far
	histCount uint64
	leases    uint64
	clients   uint64
	lastKey   []byte // the key of the last history record
	lastLive  bool   // and whether that record is not a tombstone
	payload   []byte
	kv        kvpb.KeyValue // history's record, reused
	header    [recordHeaderSize]byte
	err       error
}

// newSnapshotWriter starts a snapshot of the current format with the
// whole header h (the session clock and alarms besides the indexes). The
// history must come in (revision, key) order, and the caller says how
// many keys are live before finish.
func newSnapshotWriter(w io.Writer, h *kvpb.SnapshotHeader) *snapshotWriter {
	return newSnapshotWriterFormat(w, h, snapshotFormatVersion)
}

// newSnapshotWriterFormat starts a snapshot of format 3 or, for a copy of
// a format-2 stream, 2 (history in (key, revision) order).
func newSnapshotWriterFormat(w io.Writer, h *kvpb.SnapshotHeader, format uint32) *snapshotWriter {
	sw := &snapshotWriter{byKey: format == snapshotFormatKeyOrder, bw: bufio.NewWriterSize(w, 64<<10), sum: crc32.New(castagnoli)}
	var prefix [len(snapshotMagic) + 4]byte
	copy(prefix[:], snapshotMagic)
	binary.BigEndian.PutUint32(prefix[len(snapshotMagic):], format)
	sw.write(prefix[:])
	sw.record(recHeader, h)
	return sw
}

// setLiveKeys is, in format 3, the number of keys whose last history
// entry is not a tombstone, for the end record.
func (sw *snapshotWriter) setLiveKeys(n uint64) { sw.keys = n }

// history writes one history entry, in the order the format asks.
func (sw *snapshotWriter) history(key, value []byte, m kvMeta) {
	sw.startHistory(key, m)
	// One message, refilled for each version: a snapshot writes millions.
	kv := &sw.kv
	kv.Key, kv.Value, kv.Version, kv.CreateRevision, kv.Count, kv.Lease, kv.Deleted = key, value, m.modRev, m.createRev, m.count, m.lease, m.tombstone()
	sw.record(recHistory, kv)
	kv.Key, kv.Value = nil, nil // not to pin the caller's bytes
}

// historyEncoded writes one history entry whose record payload is
// already encoded (the memory store keeps each version's, since a version
// never changes once written); format 3 only.
func (sw *snapshotWriter) historyEncoded(payload []byte) {
	sw.histCount++
	sw.frame(recHistory, payload)
}

// startHistory counts a history entry of key; in key order, the key
// before it is settled when this one starts another key.
func (sw *snapshotWriter) startHistory(key []byte, m kvMeta) {
	sw.histCount++
	if !sw.byKey {
		return
	}
	if !bytes.Equal(key, sw.lastKey) {
		sw.settleKey()
		sw.lastKey = append(sw.lastKey[:0], key...)
	}
	sw.lastLive = !m.tombstone()
}

// historyPayload encodes a history entry's record payload, as history
// would write it, through scratch (refilled each time: a snapshot encodes
// every version new since the one before).
func historyPayload(dst []byte, scratch *kvpb.KeyValue, key, value []byte, m kvMeta) ([]byte, error) {
	scratch.Key, scratch.Value, scratch.Version, scratch.CreateRevision = key, value, m.modRev, m.createRev
	scratch.Count, scratch.Lease, scratch.Deleted = m.count, m.lease, m.tombstone()
	out, err := snapshotMarshal.MarshalAppend(dst, scratch)
	scratch.Key, scratch.Value = nil, nil // not to pin the caller's bytes
	return out, err
}

// snapshotMarshal is deterministic so that equal states give equal
// snapshot bytes.
var snapshotMarshal = proto.MarshalOptions{Deterministic: true}

// lease writes one lease; they come after the history, in id order.
func (sw *snapshotWriter) lease(l *kvpb.Lease) {
	sw.leases++
	sw.record(recLease, l)
}

// settleKey counts the last key if its last entry left it live.
func (sw *snapshotWriter) settleKey() {
	if sw.lastLive {
		sw.keys++
	}
	sw.lastLive = false
}

func (sw *snapshotWriter) client(rec *kvpb.ClientRecord) {
	sw.clients++
	sw.record(recClient, rec)
}

func (sw *snapshotWriter) finish() error {
	sw.settleKey()
	sw.record(recEnd, &kvpb.SnapshotEnd{KeyCount: sw.keys, ClientCount: sw.clients, HistoryCount: sw.histCount, LeaseCount: sw.leases})
	var trailer [4]byte
	binary.BigEndian.PutUint32(trailer[:], sw.sum.Sum32())
	sw.write(trailer[:])
	if sw.err == nil {
		sw.err = sw.bw.Flush()
	}
	if sw.err != nil {
		return fmt.Errorf("write snapshot: %w", sw.err)
	}
	return nil
}

func (sw *snapshotWriter) record(typ byte, msg proto.Message) {
	if sw.err != nil {
		return
	}
	sw.payload, sw.err = snapshotMarshal.MarshalAppend(sw.payload[:0], msg)
	if sw.err != nil {
		return
	}
	sw.frame(typ, sw.payload)
}

// frame writes one record: its header (type, length, checksum), then
// payload.
func (sw *snapshotWriter) frame(typ byte, payload []byte) {
	if sw.err != nil {
		return
	}
	sw.header[0] = typ
	binary.BigEndian.PutUint32(sw.header[1:5], uint32(len(payload)))
	crc := crc32.Update(crc32.Update(0, castagnoli, sw.header[:5]), castagnoli, payload)
	binary.BigEndian.PutUint32(sw.header[5:], crc)
	sw.write(sw.header[:])
	sw.write(payload)
}

func (sw *snapshotWriter) write(p []byte) {
	if sw.err != nil {
		return
	}
	sw.sum.Write(p)
	_, sw.err = sw.bw.Write(p)
}

// snapshotSink receives a snapshot's records as they are read and checked.
// Nothing read may be made visible before readSnapshot returns nil: the
// trailer checksum is only known at the end. A key's current version
// comes after its history entries: in formats 1 and 2 right after them,
// in format 3 once the whole history is over.
type snapshotSink interface {
	// begin receives the header, and the stream's format version.
	begin(h *kvpb.SnapshotHeader, format uint32) error
	// keyValue receives a live key's current version: its meta, and its
	// value only in formats 1 and 2 (the sink has it from the history).
	keyValue(kv *kvpb.KeyValue) error
	// history receives one version and, from a stream that has history
	// records, that record's payload as read (nil otherwise). The payload,
	// and in format 3 kv too, are only valid during the call.
	history(kv *kvpb.KeyValue, record []byte) error
	lease(l *kvpb.Lease) error
	client(rec *kvpb.ClientRecord) error
}

// VerifySnapshot reads a whole snapshot and checks it as Restore would,
// without loading it anywhere.
func VerifySnapshot(r io.Reader) (SnapshotInfo, error) {
	return readSnapshot(r, discardSink{})
}

type discardSink struct{}

func (discardSink) begin(*kvpb.SnapshotHeader, uint32) error { return nil }
func (discardSink) keyValue(*kvpb.KeyValue) error            { return nil }
func (discardSink) history(*kvpb.KeyValue, []byte) error     { return nil }
func (discardSink) lease(*kvpb.Lease) error                  { return nil }
func (discardSink) client(*kvpb.ClientRecord) error          { return nil }

func badSnapshot(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadSnapshot}, args...)...)
}

// snapshotReader decodes and checks a stream. Besides framing and
// checksums it checks the state is one the store could have produced
// (keys ascending, versions within the revision, sessions within the
// applied index), so that a snapshot written by a buggy or foreign writer
// with a valid checksum is still refused rather than loaded.
type snapshotReader struct {
	br      *bufio.Reader
	sum     hash.Hash32
	offset  int64
	payload []byte // the last record's, reused
}

func readSnapshot(r io.Reader, sink snapshotSink) (SnapshotInfo, error) {
	sr := &snapshotReader{br: bufio.NewReaderSize(r, 64<<10), sum: crc32.New(castagnoli)}
	var prefix [len(snapshotMagic) + 4]byte
	if err := sr.readFull(prefix[:], true); err != nil {
		return SnapshotInfo{}, err
	}
	if string(prefix[:len(snapshotMagic)]) != snapshotMagic {
		return SnapshotInfo{}, badSnapshot("not a kvstore snapshot (magic %q, want %q)", prefix[:len(snapshotMagic)], snapshotMagic)
	}
	format := binary.BigEndian.Uint32(prefix[len(snapshotMagic):])
	if format < 1 || format > snapshotFormatVersion {
		return SnapshotInfo{}, badSnapshot("snapshot format version %d; this build reads versions 1 to %d", format, snapshotFormatVersion)
	}

	var (
		info       SnapshotInfo
		keys       uint64
		clients    uint64
		lastKey    []byte
		history    uint64
		lastHist   []byte         // the last history record's key and revision, in the format's order
		histBufs   [2][]byte      // lastHist and the one being read, in turn
		histKV     kvpb.KeyValue  // format 3: each history record, decoded in turn (sinks keep none)
		live       *kvpb.KeyValue // formats 1 and 2: the current version of the key being read
		heads      keyHeads       // format 3: every key's last history record so far
		leases     = map[int64]bool{}
		leaseRefs  []int64 // the leases live keys are attached to
		lastLease  int64
		lastClient uint64
		lastIdxs   = map[uint64]bool{} // sessions' last_index values must be distinct
		stage      = recHeader         // the record type expected next at least
	)
	// settleKeys hands the sink the current versions not handed yet, once
	// the history (or, in format 2, a key's) is over.
	settleKeys := func() error {
		if err := settleLive(sink, &live, &keys, &leaseRefs); err != nil {
			return err
		}
		return heads.settle(sink, &keys, &leaseRefs)
	}
	for {
		typ, payload, at, err := sr.readRecord()
		if err != nil {
			return SnapshotInfo{}, err
		}
		if (stage == recHeader) != (typ == recHeader) || recordRank(typ) < recordRank(stage) ||
			(typ == recHistory && format == 1) || (typ == recKeyValue && format > 1) {
			return SnapshotInfo{}, badSnapshot("record of type %d at offset %d is out of order", typ, at)
		}
		switch typ {
		case recHeader:
			var h kvpb.SnapshotHeader
			if err := proto.Unmarshal(payload, &h); err != nil {
				return SnapshotInfo{}, badSnapshot("header record at offset %d does not decode", at)
			}
			info = SnapshotInfo{AppliedIndex: h.AppliedIndex, Revision: h.Revision}
			if err := checkAlarms(h.Alarms, h.AppliedIndex); err != nil {
				return SnapshotInfo{}, badSnapshot("header record at offset %d: %v", at, err)
			}
			if err := sink.begin(&h, format); err != nil {
				return SnapshotInfo{}, err
			}
			stage = recKeyValue
		case recKeyValue: // format 1 only
			var kv kvpb.KeyValue
			if err := proto.Unmarshal(payload, &kv); err != nil {
				return SnapshotInfo{}, badSnapshot("key record at offset %d does not decode", at)
			}
			if msg := checkKeyValue(kv.Key, kv.Value); msg != "" {
				return SnapshotInfo{}, badSnapshot("key record at offset %d: %s", at, msg)
			}
			if lastKey != nil && bytes.Compare(kv.Key, lastKey) <= 0 {
				return SnapshotInfo{}, badSnapshot("key record at offset %d: key %q does not follow %q in order", at, kv.Key, lastKey)
			}
			if kv.Version == 0 || kv.Version > info.Revision {
				return SnapshotInfo{}, badSnapshot("key record at offset %d: version %d outside 1..revision %d", at, kv.Version, info.Revision)
			}
			// Before history: the current version is all there is.
			kv.CreateRevision, kv.Count = kv.Version, 1
			lastKey = kv.Key
			keys++
			if err := sink.history(&kv, nil); err != nil {
				return SnapshotInfo{}, err
			}
			if err := sink.keyValue(&kv); err != nil {
				return SnapshotInfo{}, err
			}
		case recHistory:
			kv := &histKV
			var err error
			if format == snapshotFormatKeyOrder {
				// Kept as live past this record: a message with bytes of
				// its own, not pointing into the reused payload.
				kv = &kvpb.KeyValue{}
				err = proto.Unmarshal(payload, kv)
			} else {
				err = decodeHistoryRecord(payload, kv)
			}
			if err != nil {
				return SnapshotInfo{}, badSnapshot("history record at offset %d does not decode", at)
			}
			if msg := checkKeyValue(kv.Key, kv.Value); msg != "" {
				return SnapshotInfo{}, badSnapshot("history record at offset %d: %s", at, msg)
			}
			if err := checkHistoryEntry(kv.Key, metaFromProto(kv), info.Revision); err != nil || kv.Deleted != (kv.Count == 0) {
				return SnapshotInfo{}, badSnapshot("history record at offset %d: %v (deleted %v, count %d)", at, err, kv.Deleted, kv.Count)
			}
			// Two buffers in turn: one holds the last record's key.
			hk := histBufs[history%2][:0]
			if format == snapshotFormatKeyOrder {
				hk = histKey(hk, kv.Key, kv.Version)
			} else {
				hk = revisionKey(hk, kv.Version, kv.Key)
			}
			histBufs[history%2] = hk
			if lastHist != nil && bytes.Compare(hk, lastHist) <= 0 {
				return SnapshotInfo{}, badSnapshot("history record at offset %d: key %q at revision %d is out of order", at, kv.Key, kv.Version)
			}
			if format == snapshotFormatKeyOrder {
				if live != nil && !bytes.Equal(live.Key, kv.Key) {
					if err := settleLive(sink, &live, &keys, &leaseRefs); err != nil {
						return SnapshotInfo{}, err
					}
				}
				live = nil
				if !kv.Deleted {
					live = kv
				}
			} else {
				heads.note(kv)
			}
			lastHist = hk
			history++
			stage = recHistory
			if err := sink.history(kv, payload); err != nil {
				return SnapshotInfo{}, err
			}
		case recLease:
			if err := settleKeys(); err != nil {
				return SnapshotInfo{}, err
			}
			var l kvpb.Lease
			if err := proto.Unmarshal(payload, &l); err != nil {
				return SnapshotInfo{}, badSnapshot("lease record at offset %d does not decode", at)
			}
			if l.Id <= lastLease || l.Ttl <= 0 {
				return SnapshotInfo{}, badSnapshot("lease record at offset %d: lease %d (TTL %d) after lease %d", at, l.Id, l.Ttl, lastLease)
			}
			lastLease, leases[l.Id] = l.Id, true
			stage = recLease
			if err := sink.lease(&l); err != nil {
				return SnapshotInfo{}, err
			}
		case recClient:
			if err := settleKeys(); err != nil {
				return SnapshotInfo{}, err
			}
			var rec kvpb.ClientRecord
			if err := proto.Unmarshal(payload, &rec); err != nil {
				return SnapshotInfo{}, badSnapshot("session record at offset %d does not decode", at)
			}
			if err := checkClient(&rec, lastClient, info.AppliedIndex, lastIdxs); err != nil {
				return SnapshotInfo{}, badSnapshot("session record at offset %d: %v", at, err)
			}
			lastClient = rec.ClientId
			lastIdxs[rec.LastIndex] = true
			clients++
			stage = recClient
			if err := sink.client(&rec); err != nil {
				return SnapshotInfo{}, err
			}
		case recEnd:
			if err := settleKeys(); err != nil {
				return SnapshotInfo{}, err
			}
			for _, id := range leaseRefs {
				if !leases[id] {
					return SnapshotInfo{}, badSnapshot("a key is attached to lease %d, which the snapshot does not hold", id)
				}
			}
			var end kvpb.SnapshotEnd
			if err := proto.Unmarshal(payload, &end); err != nil {
				return SnapshotInfo{}, badSnapshot("end record at offset %d does not decode", at)
			}
			if end.KeyCount != keys || end.ClientCount != clients || (format > 1 && end.HistoryCount != history) || end.LeaseCount != uint64(len(leases)) {
				return SnapshotInfo{}, badSnapshot("end record says %d keys, %d history entries and %d sessions, the stream has %d, %d and %d",
					end.KeyCount, end.HistoryCount, end.ClientCount, keys, history, clients)
			}
			return info, sr.finish()
		default:
			return SnapshotInfo{}, badSnapshot("unknown record type %d at offset %d", typ, at)
		}
	}
}

// decodeHistoryRecord decodes a history record into kv. A record in the
// layout snapshotMarshal gives it (known fields, each at most once, in
// number order) is read in place, so that kv's key and value point into
// payload: a restore reads one per version, and the sinks copy what they
// keep. Anything else goes through proto.Unmarshal.
func decodeHistoryRecord(payload []byte, kv *kvpb.KeyValue) error {
	if decodeHistoryInPlace(payload, kv) {
		return nil
	}
	return proto.Unmarshal(payload, kv)
}

// decodeHistoryInPlace is decodeHistoryRecord's fast path; false means the
// record is not in the writer's layout (or not valid), and kv is then
// undefined.
func decodeHistoryInPlace(data []byte, kv *kvpb.KeyValue) bool {
	kv.Reset()
	next := protowire.Number(1) // the lowest field that may come next
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 || num < next || num > 7 {
			return false
		}
		data = data[n:]
		switch {
		case num <= 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return false
			}
			data = data[n:]
			if num == 1 {
				kv.Key = v
			} else {
				kv.Value = v
			}
		case num >= 3 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return false
			}
			data = data[n:]
			switch num {
			case 3:
				kv.Version = v
			case 4:
				kv.CreateRevision = v
			case 5:
				kv.Count = v
			case 6:
				kv.Lease = v
			default:
				kv.Deleted = protowire.DecodeBool(v)
			}
		default:
			return false
		}
		next = num + 1
	}
	return true
}

// settleLive hands the sink the current version of the last key read from
// the history, if it is live, once its history is over.
func settleLive(sink snapshotSink, live **kvpb.KeyValue, keys *uint64, leaseRefs *[]int64) error {
	if *live == nil {
		return nil
	}
	kv := *live
	*live = nil
	return handLive(sink, kv, keys, leaseRefs)
}

// handLive counts a live key, notes its lease for the check against the
// leases the stream holds, and hands the key to the sink.
func handLive(sink snapshotSink, kv *kvpb.KeyValue, keys *uint64, leaseRefs *[]int64) error {
	*keys++
	if kv.Lease != 0 {
		*leaseRefs = append(*leaseRefs, int64(kv.Lease))
	}
	return sink.keyValue(kv)
}

// keyHeads follows, in a format-3 stream, each key's last history record
// so far: a key's current version is known only once the history is over.
// Keys are kept in the order first seen, so that settling them does not
// depend on a map's order, and without their values, which the sink has
// from the history.
type keyHeads struct {
	at    map[string]int
	heads []keyHead
}

type keyHead struct {
	key                      string
	modRev, createRev, count uint64
	lease                    uint64
	deleted                  bool
}

func (hs *keyHeads) note(kv *kvpb.KeyValue) {
	h := keyHead{modRev: kv.Version, createRev: kv.CreateRevision, count: kv.Count, lease: kv.Lease, deleted: kv.Deleted}
	if i, ok := hs.at[string(kv.Key)]; ok {
		h.key = hs.heads[i].key
		hs.heads[i] = h
		return
	}
	if hs.at == nil {
		hs.at = map[string]int{}
	}
	h.key = string(kv.Key)
	hs.at[h.key] = len(hs.heads)
	hs.heads = append(hs.heads, h)
}

// settle hands the sink every live key's current version, once the
// history is over, and forgets them.
func (hs *keyHeads) settle(sink snapshotSink, keys *uint64, leaseRefs *[]int64) error {
	for _, h := range hs.heads {
		if h.deleted {
			continue
		}
		kv := &kvpb.KeyValue{Key: []byte(h.key), Version: h.modRev, CreateRevision: h.createRev, Count: h.count, Lease: h.lease}
		if err := handLive(sink, kv, keys, leaseRefs); err != nil {
			return err
		}
	}
	*hs = keyHeads{}
	return nil
}

// recordRank is the order record types come in.
func recordRank(typ byte) int {
	switch typ {
	case recHeader:
		return 0
	case recKeyValue:
		return 1
	case recHistory:
		return 2
	case recLease:
		return 3
	case recClient:
		return 4
	}
	return 5
}

// checkAlarms checks the raised alarms as apply keeps them: known types,
// ascending, each raised at an index already applied.
func checkAlarms(alarms []*kvpb.Alarm, applied uint64) error {
	for i, a := range alarms {
		switch {
		case a.Type != AlarmNoSpace:
			return fmt.Errorf("alarm of unknown type %v", a.Type)
		case i > 0 && a.Type <= alarms[i-1].Type:
			return fmt.Errorf("alarm %v does not follow %v in order", a.Type, alarms[i-1].Type)
		case a.Index == 0 || a.Index > applied:
			return fmt.Errorf("alarm %v raised at index %d, outside 1..applied index %d", a.Type, a.Index, applied)
		}
	}
	return nil
}

// checkClient checks one session against the rules apply keeps: ids are
// register indexes (ascending in the stream), last_index lies between the
// id and the applied index and is unique, and a result is remembered
// exactly when a seq was applied, with a status apply records.
func checkClient(rec *kvpb.ClientRecord, prevID, applied uint64, lastIdxs map[uint64]bool) error {
	switch {
	case rec.ClientId == 0 || rec.ClientId <= prevID:
		return fmt.Errorf("client id %d does not follow %d in order", rec.ClientId, prevID)
	case rec.LastIndex < rec.ClientId || rec.LastIndex > applied:
		return fmt.Errorf("client %d: last index %d outside %d..applied index %d", rec.ClientId, rec.LastIndex, rec.ClientId, applied)
	case lastIdxs[rec.LastIndex]:
		return fmt.Errorf("client %d: last index %d used by another session", rec.ClientId, rec.LastIndex)
	case (rec.LastSeq == 0) != (rec.Result == nil):
		return fmt.Errorf("client %d: last seq %d does not match whether a result is remembered", rec.ClientId, rec.LastSeq)
	}
	if rec.Result != nil {
		switch rec.Result.Status {
		case StatusOK, StatusCASFailed, StatusInvalid, StatusPermissionDenied,
			StatusKeyNotFound, StatusLeaseNotFound, StatusCompacted, StatusFutureRevision:
		default:
			return fmt.Errorf("client %d: remembered status %v is not one apply records", rec.ClientId, rec.Result.Status)
		}
		if data := rec.Result.EtcdResponse; len(data) > 0 {
			if err := new(pb.TxnResponse).Unmarshal(data); err != nil {
				return fmt.Errorf("client %d: remembered etcd response does not decode", rec.ClientId)
			}
		}
		if len(rec.Result.CurrentValue) > MaxValueSize {
			return fmt.Errorf("client %d: remembered value of %d bytes exceeds the limit", rec.ClientId, len(rec.Result.CurrentValue))
		}
	}
	return nil
}

// readRecord reads one framed record and checks its CRC. The payload is
// valid until the next call.
func (sr *snapshotReader) readRecord() (typ byte, payload []byte, at int64, err error) {
	at = sr.offset
	var frame [recordHeaderSize]byte
	if err := sr.readFull(frame[:], false); err != nil {
		return 0, nil, at, err
	}
	n := binary.BigEndian.Uint32(frame[1:5])
	if n > maxRecordSize {
		return 0, nil, at, badSnapshot("record at offset %d claims %d bytes; the limit is %d", at, n, maxRecordSize)
	}
	payload, err = sr.readPayload(int(n))
	sr.offset += int64(len(payload))
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, at, badSnapshot("truncated: record at offset %d needs %d payload bytes, only %d remain", at, n, len(payload))
		}
		return 0, nil, at, fmt.Errorf("read snapshot at offset %d: %w", sr.offset, err)
	}
	sr.sum.Write(payload)
	crc := crc32.Update(crc32.Update(0, castagnoli, frame[:5]), castagnoli, payload)
	if want := binary.BigEndian.Uint32(frame[5:]); crc != want {
		return 0, nil, at, badSnapshot("checksum mismatch in record at offset %d (stored %08x, computed %08x)", at, want, crc)
	}
	return frame[0], payload, at, nil
}

// payloadChunk is how far ahead of the bytes that have arrived a payload's
// buffer grows.
const payloadChunk = 64 << 10

// readPayload reads n bytes into the reader's reused buffer, which grows
// only as bytes actually arrive, a chunk at a time, so that a damaged
// length cannot make it allocate what the stream does not hold. On error
// it returns what did arrive.
func (sr *snapshotReader) readPayload(n int) ([]byte, error) {
	buf := sr.payload[:0]
	for len(buf) < n {
		want := min(n-len(buf), payloadChunk)
		buf = slices.Grow(buf, want)
		got, err := io.ReadFull(sr.br, buf[len(buf):len(buf)+want])
		buf = buf[:len(buf)+got]
		if err != nil {
			sr.payload = buf
			return buf, err
		}
	}
	sr.payload = buf
	return buf, nil
}

// finish checks the trailer checksum and that nothing follows it.
func (sr *snapshotReader) finish() error {
	want := sr.sum.Sum32()
	var trailer [4]byte
	if _, err := io.ReadFull(sr.br, trailer[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return badSnapshot("truncated: trailer checksum missing at offset %d", sr.offset)
		}
		return fmt.Errorf("read snapshot at offset %d: %w", sr.offset, err)
	}
	if got := binary.BigEndian.Uint32(trailer[:]); got != want {
		return badSnapshot("whole-stream checksum mismatch (stored %08x, computed %08x)", got, want)
	}
	if _, err := sr.br.ReadByte(); err == nil {
		return badSnapshot("unexpected data after the trailer at offset %d", sr.offset+4)
	} else if !errors.Is(err, io.EOF) {
		return fmt.Errorf("read snapshot after the trailer: %w", err)
	}
	return nil
}

// readFull reads exactly len(p) bytes into p and the running checksum.
// start says p is the stream's first bytes, for a clearer message when
// the input is empty.
func (sr *snapshotReader) readFull(p []byte, start bool) error {
	n, err := io.ReadFull(sr.br, p)
	sr.offset += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if start {
				return badSnapshot("truncated: %d bytes is too short for a snapshot", n)
			}
			return badSnapshot("truncated at offset %d: the stream ends before its end record", sr.offset)
		}
		return fmt.Errorf("read snapshot at offset %d: %w", sr.offset, err)
	}
	sr.sum.Write(p)
	return nil
}
