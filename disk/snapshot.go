package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// A snapshot file (all integers little-endian):
//
//	offset      size  field
//	0           8     magic "KVALSNAP"
//	8           4     format version (1)
//	12          4     metadata length m
//	16          4     CRC32C of the metadata
//	20          4     CRC32C of bytes 0..20
//	24          m     metadata: raftpb.SnapshotMeta
//	24+m        n     state machine data, as the state machine wrote it
//	24+m+n      8     data length n
//	32+m+n      4     CRC32C of the data
//	36+m+n      4     CRC32C of the 12 bytes before it
//
// The data length and checksum sit in a trailer because the data is streamed
// and its size is unknown until the end.
const (
	snapMagic         = "KVALSNAP"
	snapFormatVersion = 1
	snapHeaderSize    = 24
	snapTrailerSize   = 16
	snapExt           = ".snap"
	receivedExt       = ".received"
	maxSnapMeta       = 16 << 20
	snapWriteBuffer   = 256 << 10
)

// ErrNoSnapshot is returned by Load when no valid snapshot exists.
var ErrNoSnapshot = errors.New("disk: no valid snapshot")

// SnapshotStore keeps snapshot files in a directory. Each is written under
// a temporary name, synced, renamed into place and the directory synced, so
// a snapshot either exists whole or not at all. Only the newest Keep of
// those the log has moved past are kept (Prune). Like the WAL, a store
// belongs to one goroutine.
//
// A snapshot received from a leader is kept apart (CreateReceived) until
// the node accepts it (Promote): the core may refuse it, and a refused
// snapshot must neither count among the Keep nor make the store prune a
// file the log still needs.
type SnapshotStore struct {
	fs   FS
	dir  string
	keep int
	// writing is held from Create to Commit or Abort: one snapshot is
	// written at a time (a node's own, taken in the background, and one
	// received from the leader could otherwise share a temporary file or
	// prune the same old one).
	writing sync.Mutex
	// names is held while listing and renaming or removing snapshot
	// files (pruning, promoting), which a snapshot of the node's own and
	// a received one being installed may do at the same time.
	names sync.Mutex
}

// NewSnapshotStore opens (creating if needed) the snapshot directory dir,
// keeping the newest keep snapshots (at least 1; 2 or more lets Load fall
// back when the newest is damaged). It removes temporary files left by a
// crash mid-write.
func NewSnapshotStore(fsys FS, dir string, keep int) (*SnapshotStore, error) {
	if err := fsys.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("snapshot: create %s: %w", dir, err)
	}
	if err := fsys.SyncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
		return nil, fmt.Errorf("snapshot: create %s: %w", dir, err)
	}
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot: list %s: %w", dir, err)
	}
	for _, n := range names {
		if base, ok := strings.CutSuffix(n, tmpExt); ok {
			if _, _, ok := parseSnapName(strings.TrimSuffix(base, receivedExt)); ok {
				if err := fsys.Remove(filepath.Join(dir, n)); err != nil {
					return nil, fmt.Errorf("snapshot: remove leftover %s: %w", n, err)
				}
			}
		}
	}
	return &SnapshotStore{fs: fsys, dir: dir, keep: max(keep, 1)}, nil
}

func snapName(index, term uint64) string { return fmt.Sprintf("%016x-%016x%s", index, term, snapExt) }

func parseSnapName(name string) (index, term uint64, ok bool) {
	base, ok := strings.CutSuffix(name, snapExt)
	if !ok || len(base) != 33 || base[16] != '-' {
		return 0, 0, false
	}
	index, err1 := strconv.ParseUint(base[:16], 16, 64)
	term, err2 := strconv.ParseUint(base[17:], 16, 64)
	return index, term, err1 == nil && err2 == nil
}

// parseReceivedName parses the name of a received snapshot left apart.
func parseReceivedName(name string) (index uint64, ok bool) {
	base, ok := strings.CutSuffix(name, receivedExt)
	if !ok {
		return 0, false
	}
	index, _, ok = parseSnapName(base)
	return index, ok
}

// List returns the snapshot file names, oldest first.
func (s *SnapshotStore) List() ([]string, error) {
	names, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot: list %s: %w", s.dir, err)
	}
	var snaps []string
	for _, n := range names {
		if _, _, ok := parseSnapName(n); ok {
			snaps = append(snaps, n) // fixed-width hex: name order is (index, term) order
		}
	}
	return snaps, nil
}

// SnapshotWriter streams a snapshot's data to a temporary file. Write the
// data, then Commit to install it, or Abort.
type SnapshotWriter struct {
	s     *SnapshotStore
	meta  core.SnapshotMeta
	f     File
	tmp   string
	final string
	off   int64
	buf   []byte
	crc   uint32
	n     int64
	err   error
	done  bool
	held  bool // holds s.writing
	// received: committed apart from the snapshots in use, without
	// pruning (see CreateReceived).
	received bool
}

// release lets the next writer in, once.
func (w *SnapshotWriter) release() {
	if w.held {
		w.held = false
		w.s.writing.Unlock()
	}
}

// Create starts writing a snapshot of the node's own with the given
// metadata. Another Create waits until this one is committed or aborted.
func (s *SnapshotStore) Create(meta core.SnapshotMeta) (*SnapshotWriter, error) {
	return s.create(meta, false)
}

// CreateReceived starts writing a snapshot received from a leader. Its
// Commit makes it durable apart from the snapshots in use — List, Load and
// pruning do not see it — and prunes nothing; Promote puts it in use once
// the node has accepted it. One left apart is removed by a later Promote
// past its index, or by DropReceived.
func (s *SnapshotStore) CreateReceived(meta core.SnapshotMeta) (*SnapshotWriter, error) {
	return s.create(meta, true)
}

func (s *SnapshotStore) create(meta core.SnapshotMeta, received bool) (*SnapshotWriter, error) {
	metaBytes, err := proto.Marshal(raftpb.SnapshotMetaFromCore(meta))
	if err != nil {
		return nil, fmt.Errorf("snapshot: encode metadata: %w", err)
	}
	if len(metaBytes) > maxSnapMeta {
		return nil, fmt.Errorf("snapshot: metadata of %d bytes exceeds the %d-byte limit", len(metaBytes), maxSnapMeta)
	}
	final := filepath.Join(s.dir, snapName(meta.Index, meta.Term))
	if received {
		final += receivedExt
	}
	w := &SnapshotWriter{s: s, meta: meta, tmp: final + tmpExt, final: final, buf: make([]byte, 0, 4<<10), received: received}
	s.writing.Lock()
	w.held = true
	create := s.fs.Create
	if sfs, ok := s.fs.(StreamFS); ok {
		create = sfs.CreateStream
	}
	if w.f, err = create(w.tmp); err != nil {
		w.release()
		return nil, fmt.Errorf("snapshot: create: %w", err)
	}
	hdr := make([]byte, snapHeaderSize, snapHeaderSize+len(metaBytes))
	copy(hdr, snapMagic)
	binary.LittleEndian.PutUint32(hdr[8:], snapFormatVersion)
	binary.LittleEndian.PutUint32(hdr[12:], uint32(len(metaBytes)))
	binary.LittleEndian.PutUint32(hdr[16:], crc32.Checksum(metaBytes, castagnoli))
	binary.LittleEndian.PutUint32(hdr[20:], crc32.Checksum(hdr[:20], castagnoli))
	w.buf = append(append(w.buf, hdr...), metaBytes...)
	return w, nil
}

// Size is how many bytes of state machine data have been written.
func (w *SnapshotWriter) Size() int64 { return w.n }

// Write appends state machine data.
func (w *SnapshotWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		return 0, errors.New("snapshot: write after commit or abort")
	}
	w.crc = crc32.Update(w.crc, castagnoli, p)
	w.n += int64(len(p))
	// The buffer grows as needed up to snapWriteBuffer, so small
	// snapshots (the simulator takes thousands) stay cheap.
	if len(w.buf)+len(p) <= snapWriteBuffer {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if err := w.flush(); err != nil {
		return 0, err
	}
	if len(p) >= snapWriteBuffer {
		return len(p), w.writeOut(p)
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *SnapshotWriter) flush() error {
	if err := w.writeOut(w.buf); err != nil {
		return err
	}
	w.buf = w.buf[:0]
	return nil
}

func (w *SnapshotWriter) writeOut(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if _, err := w.f.WriteAt(p, w.off); err != nil {
		w.err = fmt.Errorf("snapshot: write %s: %w", w.tmp, err)
		return w.err
	}
	w.off += int64(len(p))
	return nil
}

// Commit finishes the file and installs it atomically: trailer, fsync,
// rename, directory fsync. When Commit returns nil the snapshot is
// durable. It prunes nothing: older files go once the log starts after
// this one (Prune).
func (w *SnapshotWriter) Commit() error {
	defer w.release()
	if w.err != nil {
		w.Abort()
		return w.err
	}
	if w.done {
		return errors.New("snapshot: commit after commit or abort")
	}
	var tr [snapTrailerSize]byte
	binary.LittleEndian.PutUint64(tr[0:], uint64(w.n))
	binary.LittleEndian.PutUint32(tr[8:], w.crc)
	binary.LittleEndian.PutUint32(tr[12:], crc32.Checksum(tr[:12], castagnoli))
	w.buf = append(w.buf, tr[:]...)
	if err := w.flush(); err != nil {
		w.Abort()
		return err
	}
	if err := w.f.Sync(); err != nil {
		w.Abort()
		return fmt.Errorf("snapshot: sync %s: %w", w.tmp, err)
	}
	w.done = true
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("snapshot: close %s: %w", w.tmp, err)
	}
	if err := w.s.fs.Rename(w.tmp, w.final); err != nil {
		return fmt.Errorf("snapshot: install: %w", err)
	}
	if err := w.s.fs.SyncDir(w.s.dir); err != nil {
		return fmt.Errorf("snapshot: install %s: %w", w.final, err)
	}
	return nil
}

// Abort discards the snapshot being written.
func (w *SnapshotWriter) Abort() error {
	defer w.release()
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	if err := w.s.fs.Remove(w.tmp); err != nil {
		return fmt.Errorf("snapshot: abort: %w", err)
	}
	return nil
}

// Prune removes the snapshots in use older than the newest Keep at or
// below index, and the received snapshots left apart at or below index.
// Call it once the log durably starts after the snapshot at index (the
// WAL's marker for it synced: taken by the node, or received and
// installed), never sooner: until then a crash brings back a log that
// starts at an older snapshot, and that file must still be there. Files
// above index are left alone: a snapshot written just before a crash, whose
// marker never reached the WAL, is not what the log starts from, so it must
// not count among the Keep.
func (s *SnapshotStore) Prune(index uint64) error {
	s.names.Lock()
	defer s.names.Unlock()
	all, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("snapshot: prune: list %s: %w", s.dir, err)
	}
	var inUse, stale []string
	for _, n := range all {
		if i, _, ok := parseSnapName(n); ok {
			if i <= index {
				inUse = append(inUse, n) // fixed-width hex: name order is (index, term) order
			}
		} else if i, ok := parseReceivedName(n); ok && i <= index {
			stale = append(stale, n)
		}
	}
	if len(inUse) > s.keep {
		stale = append(stale, inUse[:len(inUse)-s.keep]...)
	}
	return s.remove(stale, "prune")
}

// DropReceived removes every received snapshot left apart. At startup,
// after Promote of the WAL's snapshot, none of them is needed: the node
// either refused them or accepted one without making that durable.
func (s *SnapshotStore) DropReceived() error {
	s.names.Lock()
	defer s.names.Unlock()
	all, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("snapshot: list %s: %w", s.dir, err)
	}
	var received []string
	for _, n := range all {
		if _, ok := parseReceivedName(n); ok {
			received = append(received, n)
		}
	}
	return s.remove(received, "drop received snapshots")
}

// remove deletes names from the directory and makes that durable.
func (s *SnapshotStore) remove(names []string, what string) error {
	if len(names) == 0 {
		return nil
	}
	for _, n := range names {
		if err := s.fs.Remove(filepath.Join(s.dir, n)); err != nil {
			return fmt.Errorf("snapshot: %s: %w", what, err)
		}
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("snapshot: %s: %w", what, err)
	}
	return nil
}

// Promote puts the received snapshot meta in use, durably, if it was left
// apart (CreateReceived); a snapshot already in use is left as it is. Call
// it once the node's log holds the snapshot durably (the WAL's marker),
// and before opening it. It prunes nothing: call Prune once installed.
func (s *SnapshotStore) Promote(meta core.SnapshotMeta) error {
	s.names.Lock()
	defer s.names.Unlock()
	final := filepath.Join(s.dir, snapName(meta.Index, meta.Term))
	err := s.fs.Rename(final+receivedExt, final)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot: promote %s: %w", final, err)
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("snapshot: promote %s: %w", final, err)
	}
	return nil
}

// Snapshot is an open, verified snapshot: its metadata, and its data as an
// io.Reader. Reading re-verifies the checksum as it goes and returns a
// *CorruptionError instead of io.EOF if the data changed since Load checked
// it. Close it when done.
type Snapshot struct {
	Meta core.SnapshotMeta
	// Size is the length of the data in bytes.
	Size int64
	// File is the snapshot's path.
	File string

	f       File
	data    *io.SectionReader
	dataOff int64
	want    uint32
	crc     uint32
}

// Read implements io.Reader over the state machine data.
func (s *Snapshot) Read(p []byte) (int, error) {
	n, err := s.data.Read(p)
	s.crc = crc32.Update(s.crc, castagnoli, p[:n])
	if err == io.EOF && s.crc != s.want {
		return n, corruptf(s.File, s.dataOff, "data checksum %08x, computed %08x", s.want, s.crc)
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("snapshot: read %s: %w", s.File, err)
	}
	return n, err
}

// Close closes the snapshot file.
func (s *Snapshot) Close() error { return s.f.Close() }

// SkippedSnapshot names a snapshot Load passed over, and why.
type SkippedSnapshot struct {
	File string
	Err  error
}

// Load opens the newest valid snapshot. Damaged or unreadable newer ones are
// skipped and reported (the caller should log them). It returns an error
// wrapping ErrNoSnapshot if no snapshot is valid.
//
// Falling back to an older snapshot is only safe if the log still holds the
// entries after it: see Recovered.EntriesAfter.
func (s *SnapshotStore) Load() (*Snapshot, []SkippedSnapshot, error) {
	return s.LoadAtMost(math.MaxUint64)
}

// LoadAtMost is Load among the snapshots at or below index. At startup the
// runtime passes the WAL's snapshot marker: a newer snapshot file exists if
// the node crashed after writing it but before its marker was synced, and
// the log does not continue from it.
func (s *SnapshotStore) LoadAtMost(index uint64) (*Snapshot, []SkippedSnapshot, error) {
	names, err := s.List()
	if err != nil {
		return nil, nil, err
	}
	var skipped []SkippedSnapshot
	for _, n := range slices.Backward(names) {
		if i, _, _ := parseSnapName(n); i > index {
			continue
		}
		snap, err := s.Open(n)
		if err == nil {
			return snap, skipped, nil
		}
		skipped = append(skipped, SkippedSnapshot{File: filepath.Join(s.dir, n), Err: err})
	}
	return nil, skipped, fmt.Errorf("snapshot: load from %s: %w", s.dir, ErrNoSnapshot)
}

// Open opens and fully verifies one snapshot by file name (as List returns
// it). Verification reads the whole file once; the data is then read again
// through the returned Snapshot, never held in memory.
func (s *SnapshotStore) Open(name string) (*Snapshot, error) {
	p := filepath.Join(s.dir, name)
	f, err := s.fs.Open(p)
	if err != nil {
		return nil, fmt.Errorf("snapshot: open: %w", err)
	}
	snap, err := readSnapshot(f, p, name)
	if err != nil {
		f.Close()
		return nil, err
	}
	// Verify the data now, so a damaged snapshot is skipped before anyone
	// starts restoring from it.
	if _, err := io.Copy(io.Discard, snap); err != nil {
		f.Close()
		return nil, err
	}
	snap.data.Seek(0, io.SeekStart)
	snap.crc = 0
	return snap, nil
}

// readSnapshot checks a snapshot file's header, metadata and trailer and
// returns it positioned at the start of its data (unverified as yet). It
// never panics, whatever the file holds.
func readSnapshot(f File, path, name string) (*Snapshot, error) {
	size, err := f.Size()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %s: %w", path, err)
	}
	if size < snapHeaderSize+snapTrailerSize {
		return nil, corruptf(path, 0, "file of %d bytes is too short for a snapshot", size)
	}
	var hdr [snapHeaderSize]byte
	if err := readAtFull(f, hdr[:], 0); err != nil {
		return nil, fmt.Errorf("snapshot: read %s: %w", path, err)
	}
	if string(hdr[:8]) != snapMagic {
		return nil, corruptf(path, 0, "not a snapshot file (magic %q)", hdr[:8])
	}
	if got, want := binary.LittleEndian.Uint32(hdr[20:]), crc32.Checksum(hdr[:20], castagnoli); got != want {
		return nil, corruptf(path, 0, "header checksum %08x, computed %08x", got, want)
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != snapFormatVersion {
		return nil, corruptf(path, 8, "format version %d, this code reads version %d", v, snapFormatVersion)
	}
	metaLen := int64(binary.LittleEndian.Uint32(hdr[12:]))
	if metaLen > maxSnapMeta || snapHeaderSize+metaLen+snapTrailerSize > size {
		return nil, corruptf(path, 12, "metadata length %d impossible in a file of %d bytes", metaLen, size)
	}
	metaBytes := make([]byte, metaLen)
	if err := readAtFull(f, metaBytes, snapHeaderSize); err != nil {
		return nil, fmt.Errorf("snapshot: read %s: %w", path, err)
	}
	if got, want := binary.LittleEndian.Uint32(hdr[16:]), crc32.Checksum(metaBytes, castagnoli); got != want {
		return nil, corruptf(path, snapHeaderSize, "metadata checksum %08x, computed %08x", got, want)
	}
	var pb raftpb.SnapshotMeta
	if err := proto.Unmarshal(metaBytes, &pb); err != nil {
		return nil, corruptf(path, snapHeaderSize, "undecodable metadata: %v", err)
	}
	meta := raftpb.SnapshotMetaToCore(&pb)
	if index, term, ok := parseSnapName(name); !ok || index != meta.Index || term != meta.Term {
		return nil, corruptf(path, snapHeaderSize, "metadata (index %d, term %d) does not match the file name", meta.Index, meta.Term)
	}
	var tr [snapTrailerSize]byte
	trOff := size - snapTrailerSize
	if err := readAtFull(f, tr[:], trOff); err != nil {
		return nil, fmt.Errorf("snapshot: read %s: %w", path, err)
	}
	if got, want := binary.LittleEndian.Uint32(tr[12:]), crc32.Checksum(tr[:12], castagnoli); got != want {
		return nil, corruptf(path, trOff, "trailer checksum %08x, computed %08x", got, want)
	}
	dataOff := snapHeaderSize + metaLen
	dataLen := trOff - dataOff
	if n := binary.LittleEndian.Uint64(tr[0:]); n != uint64(dataLen) {
		return nil, corruptf(path, trOff, "trailer records %d bytes of data, the file holds %d", n, dataLen)
	}
	return &Snapshot{
		Meta:    meta,
		Size:    dataLen,
		File:    path,
		f:       f,
		data:    io.NewSectionReader(f, dataOff, dataLen),
		dataOff: dataOff,
		want:    binary.LittleEndian.Uint32(tr[8:]),
	}, nil
}

// readAtFull fills p from offset off, accepting io.EOF only with a full read.
func readAtFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
