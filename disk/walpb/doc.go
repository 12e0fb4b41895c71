// Package walpb holds the protobuf messages that KeyVal's storage layer writes
// to disk: the payloads of WAL records and the metadata of snapshot files.
// The Go code is generated from wal.proto; see docs/disk.md for the framing.
package walpb
