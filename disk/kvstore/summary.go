package kvstore

import (
	"io"

	"github.com/therealutkarshpriyadarshi/keyval/disk/kvstore/kvpb"
)

// SnapshotSummary describes what a snapshot holds.
type SnapshotSummary struct {
	SnapshotInfo
	Keys     uint64 // key-value pairs
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
	return SnapshotSummary{SnapshotInfo: info, Keys: c.keys, Sessions: c.sessions}, nil
}

type countSink struct{ keys, sessions uint64 }

func (*countSink) begin(*kvpb.SnapshotHeader) error { return nil }
func (c *countSink) keyValue(*kvpb.KeyValue) error  { c.keys++; return nil }
func (c *countSink) client(*kvpb.ClientRecord) error {
	c.sessions++
	return nil
}
