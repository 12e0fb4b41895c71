// Package disk is KeyVal's durable storage: a write-ahead log of Raft entries
// and hard state, and checksummed snapshot files, all written against a small
// FS interface.
//
// The FS has two implementations. OSFS is the operating system's file system.
// MemFS lives in memory and is driven by the deterministic simulator, which
// uses it to lose unsynced writes, tear writes, rot bits, misdirect writes,
// fail reads, fill the disk and charge latency to its virtual clock. The WAL
// and the snapshot store run unchanged on either; on OSFS a snapshot file
// is a stream file (StreamFS), written with direct I/O on Linux.
//
// Recovery tells a crash from corruption: a torn record at the very end of the
// log is cut off, while damage anywhere else is reported as a
// *CorruptionError naming the file and offset (for a WAL record, also which
// entries it may have held: WALDamage). Repair starts a damaged WAL over
// from a snapshot, keeping the old segments aside; the small checksummed
// files beside it keep a repaired node's vote floor and a second copy of
// its term and vote. The on-disk format and the rules are documented in
// docs/disk.md.
//
// Nothing here starts goroutines or takes locks: a WAL or SnapshotStore
// belongs to one event loop.
package disk
