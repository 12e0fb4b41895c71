package kvstore

import (
	"fmt"
	"io"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// SnapshotSummary describes what a snapshot holds.
type SnapshotSummary struct {
	SnapshotInfo
	Keys     uint64 // key-value pairs
	History  uint64 // versions kept in the history, the current ones included
	Sessions uint64 // exactly-once sessions
}

// SummarizeSnapshot reads a whole snapshot, checks it exactly as
// VerifySnapshot does, and counts its keys and sessions: backups report
// what they hold without loading it anywhere.
func SummarizeSnapshot(r io.Reader) (SnapshotSummary, error) {
	var c countSink
	info, err := readSnapshot(r, &c)
	if err != nil {
		return SnapshotSummary{}, err
	}
	return SnapshotSummary{SnapshotInfo: info, Keys: c.keys, History: c.versions, Sessions: c.sessions}, nil
}

type countSink struct{ keys, versions, sessions uint64 }

func (*countSink) begin(*kvpb.SnapshotHeader, uint32) error { return nil }
func (c *countSink) keyValue(*kvpb.KeyValue) error          { c.keys++; return nil }
func (c *countSink) history(*kvpb.KeyValue, []byte) error   { c.versions++; return nil }
func (*countSink) lease(*kvpb.Lease) error                  { return nil }
func (c *countSink) client(*kvpb.ClientRecord) error {
	c.sessions++
	return nil
}

// CopySnapshot re-encodes the snapshot read from r onto w without the keys
// drop selects, checking r exactly as VerifySnapshot does. Restoring a
// backup into a new cluster uses it to leave out the old cluster's own
// records. On error, what was written to w must be discarded.
func CopySnapshot(r io.Reader, w io.Writer, drop func(key []byte) bool) (SnapshotSummary, error) {
	c := copySink{w: w, drop: drop}
	info, err := readSnapshot(r, &c)
	if err == nil && c.sw == nil {
		err = badSnapshot("no header")
	}
	if err == nil {
		if !c.sw.byKey {
			c.sw.setLiveKeys(c.live)
		}
		err = c.sw.finish()
	}
	if err != nil {
		return SnapshotSummary{}, err
	}
	return SnapshotSummary{SnapshotInfo: info, Keys: c.sw.keys, History: c.sw.histCount, Sessions: c.sw.clients}, nil
}

type copySink struct {
	w    io.Writer
	drop func(key []byte) bool
	sw   *snapshotWriter
	live uint64 // live keys kept, for a copy in format 3
}

// begin starts the copy in the stream's order: format 3 for a format-3
// stream, else 2 (a format-1 stream's keys come in key order too).
func (c *copySink) begin(h *kvpb.SnapshotHeader, format uint32) error {
	out := uint32(snapshotFormatVersion)
	if format < snapshotFormatVersion {
		out = snapshotFormatKeyOrder
	}
	// The session clock goes along with the sessions it dates; alarms,
	// like the members' addresses, describe the cluster the copy came
	// from, not the data.
	c.sw = newSnapshotWriterFormat(c.w, &kvpb.SnapshotHeader{AppliedIndex: h.AppliedIndex, Revision: h.Revision, SessionClockMs: h.SessionClockMs,
		CompactedRevision: h.CompactedRevision}, out)
	return nil
}

// keyValue writes nothing: the history records carry the current versions.
// It counts the live keys kept, which a format-3 writer is told.
func (c *copySink) keyValue(kv *kvpb.KeyValue) error {
	if !c.drop(kv.Key) {
		c.live++
	}
	return nil
}

func (c *copySink) history(kv *kvpb.KeyValue, _ []byte) error {
	if !c.drop(kv.Key) {
		c.sw.history(kv.Key, kv.Value, metaFromProto(kv))
	}
	return c.written()
}

func (c *copySink) lease(l *kvpb.Lease) error {
	c.sw.lease(l)
	return c.written()
}

func (c *copySink) client(rec *kvpb.ClientRecord) error {
	c.sw.client(rec)
	return c.written()
}

// written ends the copy at the first failed write (a backup's client gone,
// say): reading on would only be thrown away.
func (c *copySink) written() error {
	if c.sw.err != nil {
		return fmt.Errorf("write snapshot: %w", c.sw.err)
	}
	return nil
}
