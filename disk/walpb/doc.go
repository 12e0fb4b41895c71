// Package walpb holds the protobuf messages that only KeyVal's WAL writes:
// the segment start and snapshot marker records. Entries, hard state and
// snapshot metadata are raftpb's, shared with the transport. The Go code is
// generated from wal.proto; see docs/disk.md for the framing.
package walpb
