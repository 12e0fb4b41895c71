package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk/walpb"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

const (
	// DefaultSegmentSize is the size at which the WAL starts a new segment.
	DefaultSegmentSize = 64 << 20
	// DefaultZeroAhead is how far past its last record the WAL keeps the
	// active segment written with zeros (see Options.ZeroAhead).
	DefaultZeroAhead = 64 << 10
	// walFormatVersion is written into every segment's start record.
	walFormatVersion = 1
	segmentExt       = ".wal"
	tmpExt           = ".tmp"
	// flushThreshold bounds the bytes Append buffers before writing them to
	// the file (still unsynced), so one huge batch is not held twice.
	flushThreshold = 1 << 20
)

// ErrNoWAL is returned by Open when the directory holds no WAL segment.
var ErrNoWAL = errors.New("disk: no WAL in directory")

// Options tune a WAL. The zero value means the defaults.
type Options struct {
	// SegmentSize is the size at which a segment is closed and the next one
	// started. Default DefaultSegmentSize.
	SegmentSize int64
	// ZeroAhead is how many bytes of zeros the WAL writes past its records
	// whenever a write would reach beyond what the segment file already
	// holds. An fdatasync after writes that grow a file must also commit
	// the file's new size to the file system's journal; one after writes
	// into bytes the file already holds need not, and took about 90 µs
	// instead of 120–220 µs, with half the CPU, on this project's
	// machines (docs/disk.md, "Zeros ahead"). So only one sync in
	// ZeroAhead's worth of records pays for growing the file. Recovery
	// takes a segment's all-zero tail as its clean end. Default
	// DefaultZeroAhead.
	ZeroAhead int64
}

func (o Options) zeroAhead() int {
	if o.ZeroAhead <= 0 {
		return DefaultZeroAhead
	}
	return int(o.ZeroAhead)
}

func (o Options) segmentSize() int64 {
	if o.SegmentSize <= 0 {
		return DefaultSegmentSize
	}
	return o.SegmentSize
}

// WAL is KeyVal's write-ahead log: Raft entries, hard state and snapshot
// markers appended to a directory of segment files. Appends are buffered in
// memory; Sync writes them and makes them durable with one fsync (group
// commit). A WAL belongs to one goroutine: it takes no locks.
//
// After any write or sync fails the WAL refuses further work and returns
// that error: what the kernel did with the failed data is unknown, so the
// only safe path is to reopen (recover) from disk.
type WAL struct {
	fs   FS
	dir  string
	opts Options

	segs      []segment   // live segments, oldest first; the last is active
	f         File        // the active segment
	off       int64       // bytes of the active segment written to the file
	size      int64       // the active segment file's size: off and the zeros past it
	startSize int64       // size of the active segment's start record
	seed      segmentSeed // header checksum seed of the active segment
	buf       []byte      // records appended but not yet written
	dirty     bool        // written (or truncated) since the last sync

	// The log as of the last appended record.
	hs        core.HardState
	snap      core.SnapshotMeta
	lastIndex uint64
	lastTerm  uint64
	// durableSnap is snap as of the last successful Sync, durable the
	// log's end and hard state then.
	durableSnap core.SnapshotMeta
	durable     Durable

	err error // sticky failure

	// repairing marks the segment Repair writes.
	repairing bool

	marshal proto.MarshalOptions
}

// segment is what the WAL remembers of a live segment file.
type segment struct {
	seq      uint64
	maxIndex uint64 // highest entry index written to it (0: none)
}

func segmentName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segmentExt) }

// parseSegmentName returns the sequence number of a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segmentExt)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

func (w *WAL) path(seq uint64) string { return segmentPath(w.dir, seq) }

func segmentPath(dir string, seq uint64) string { return filepath.Join(dir, segmentName(seq)) }

// listSegments returns the sequence numbers of the segments in dir, in
// order, and removes the temporary files a crash while creating one left.
func listSegments(fsys FS, dir string) ([]uint64, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: list %s: %w", dir, err)
	}
	var seqs []uint64
	for _, n := range names {
		if base, ok := strings.CutSuffix(n, tmpExt); ok {
			if _, ok := parseSegmentName(base); ok {
				if err := fsys.Remove(filepath.Join(dir, n)); err != nil {
					return nil, fmt.Errorf("wal: remove leftover %s: %w", n, err)
				}
			}
			continue
		}
		if seq, ok := parseSegmentName(n); ok {
			seqs = append(seqs, seq) // names sort by sequence: fixed-width hex
		}
	}
	return seqs, nil
}

// Exists reports whether dir holds a WAL (at least one segment).
func Exists(fsys FS, dir string) (bool, error) {
	names, err := fsys.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("wal: list %s: %w", dir, err)
	}
	for _, n := range names {
		if _, ok := parseSegmentName(n); ok {
			return true, nil
		}
	}
	return false, nil
}

// Create makes a new, empty WAL in dir (creating dir if needed). It fails if
// dir already holds one: a node that finds its log gone must not quietly
// start over as a fresh node (it could vote twice in one term).
func Create(fsys FS, dir string, opts Options) (*WAL, error) {
	if err := fsys.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", dir, err)
	}
	if err := fsys.SyncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", dir, err)
	}
	seqs, err := listSegments(fsys, dir)
	if err != nil {
		return nil, err
	}
	if len(seqs) > 0 {
		return nil, fmt.Errorf("wal: create %s: a WAL already exists there", dir)
	}
	w := &WAL{fs: fsys, dir: dir, opts: opts}
	if err := w.startSegment(1); err != nil {
		return nil, err
	}
	return w, nil
}

// startSegment creates segment seq and makes it the active one. The file is
// written under a temporary name, synced, renamed and the directory synced,
// so a segment that exists under its real name always begins with a whole
// start record. The start record repeats the state of the log so far.
func (w *WAL) startSegment(seq uint64) error {
	final := w.path(seq)
	tmp := final + tmpExt
	start := &walpb.SegmentStart{
		FormatVersion: walFormatVersion,
		Sequence:      seq,
		LastIndex:     w.lastIndex,
		HardState:     raftpb.HardStateFromCore(w.hs),
		Snapshot:      raftpb.SnapshotMetaFromCore(w.snap),
		Repair:        w.repairing,
	}
	buf, begin := beginFrame(nil)
	buf, err := w.marshal.MarshalAppend(buf, start)
	if err != nil {
		return w.fail(fmt.Errorf("wal: encode start of %s: %w", final, err))
	}
	if buf, err = finishFrame(buf, begin, seedFor(seq), 0, recSegmentStart); err != nil {
		return w.fail(err)
	}
	startSize := len(buf)
	buf = appendZeros(buf, w.opts.zeroAhead())
	f, err := w.fs.Create(tmp)
	if err != nil {
		return w.fail(fmt.Errorf("wal: new segment: %w", err))
	}
	if _, err := f.WriteAt(buf, 0); err != nil {
		f.Close()
		return w.fail(fmt.Errorf("wal: new segment %s: %w", tmp, err))
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return w.fail(fmt.Errorf("wal: new segment %s: %w", tmp, err))
	}
	if err := w.fs.Rename(tmp, final); err != nil {
		f.Close()
		return w.fail(fmt.Errorf("wal: new segment: %w", err))
	}
	if err := w.fs.SyncDir(w.dir); err != nil {
		f.Close()
		return w.fail(fmt.Errorf("wal: new segment %s: %w", final, err))
	}
	w.f = f
	w.off = int64(startSize)
	w.startSize = w.off
	w.size = int64(len(buf))
	w.dirty = false
	w.segs = append(w.segs, segment{seq: seq})
	w.seed = seedFor(seq)
	return nil
}

// appendZeros appends n zero bytes to b.
func appendZeros(b []byte, n int) []byte {
	k := len(b)
	b = slices.Grow(b, n)[:k+n]
	clear(b[k:])
	return b
}

// fail makes err sticky.
func (w *WAL) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return err
}

// LastIndex is the index of the last entry appended (or of the snapshot, if
// no entry follows it).
func (w *WAL) LastIndex() uint64 { return w.lastIndex }

// Snapshot is the snapshot the log starts after (zero if none): the last
// marker appended, installed or compacted to, synced or not.
func (w *WAL) Snapshot() core.SnapshotMeta { return w.snap }

// Durable is what a crash can no longer take back: the hard state and the
// log's last entry as of the last successful Sync.
type Durable struct {
	HardState           core.HardState
	LastIndex, LastTerm uint64
}

// Durable reports what the WAL has made durable. Checkers compare it with
// what a node promises (votes, acknowledgements, its own match index).
func (w *WAL) Durable() Durable { return w.durable }

// Segments returns the file names of the live segments, oldest first.
func (w *WAL) Segments() []string {
	names := make([]string, len(w.segs))
	for i, s := range w.segs {
		names[i] = segmentName(s.seq)
	}
	return names
}

// Append buffers entries and then, unless hs is empty or unchanged, the hard
// state. Nothing is durable until Sync returns.
//
// Entries must have consecutive indexes. The first may be at most
// LastIndex()+1; if it is lower, the log is cut there and the new entries
// replace the old suffix (Raft overwriting a conflicting tail). Entries at or
// below the snapshot or the committed index cannot be rewritten. The hard
// state's commit index may not exceed the last index: entries go first.
func (w *WAL) Append(hs core.HardState, ents []core.Entry) error {
	if w.err != nil {
		return w.err
	}
	last := w.lastIndex
	if len(ents) > 0 {
		first := ents[0].Index
		for i := range ents {
			if ents[i].Index != first+uint64(i) {
				return fmt.Errorf("wal: append: entry %d follows entry %d", ents[i].Index, ents[i-1].Index)
			}
		}
		switch {
		case first > last+1:
			return fmt.Errorf("wal: append: entry %d would leave a gap after %d", first, last)
		case first <= w.snap.Index:
			return fmt.Errorf("wal: append: entry %d is covered by the snapshot at %d", first, w.snap.Index)
		case first <= w.hs.Commit:
			return fmt.Errorf("wal: append: entry %d would overwrite the committed log (commit %d)", first, w.hs.Commit)
		}
		last = ents[len(ents)-1].Index
	}
	writeHS := !hs.IsEmpty() && hs != w.hs
	if writeHS && hs.Commit > last {
		return fmt.Errorf("wal: append: commit index %d beyond the last entry %d", hs.Commit, last)
	}
	for i := range ents {
		e := &ents[i]
		if err := w.appendFramed(recEntry, func(b []byte) ([]byte, error) { return appendEntryPayload(b, e), nil }); err != nil {
			return err
		}
		w.lastIndex, w.lastTerm = ents[i].Index, ents[i].Term
		seg := &w.segs[len(w.segs)-1]
		seg.maxIndex = max(seg.maxIndex, ents[i].Index)
	}
	if writeHS {
		if err := w.appendFramed(recHardState, func(b []byte) ([]byte, error) { return appendHardStatePayload(b, hs), nil }); err != nil {
			return err
		}
		w.hs = hs
	}
	return nil
}

// InstallSnapshot records that the log was replaced by a snapshot received
// from the leader: after recovery the log is the snapshot followed by
// whatever entries are appended after this call, and nothing written before.
// The snapshot's data must already be durable (in a SnapshotStore).
func (w *WAL) InstallSnapshot(meta core.SnapshotMeta) error {
	if w.err != nil {
		return w.err
	}
	if meta.Index < w.snap.Index {
		return fmt.Errorf("wal: install snapshot at %d: older than the snapshot at %d", meta.Index, w.snap.Index)
	}
	if meta.Index < w.hs.Commit {
		return fmt.Errorf("wal: install snapshot at %d: below the commit index %d", meta.Index, w.hs.Commit)
	}
	if err := w.appendRecord(recSnapshot, &walpb.SnapshotMarker{Meta: raftpb.SnapshotMetaFromCore(meta), ReplacesLog: true}); err != nil {
		return err
	}
	w.snap = meta
	w.lastIndex, w.lastTerm = meta.Index, meta.Term
	return nil
}

// Fill records the data of entries the log holds as holes (after
// OpenKeepingHoles), fetched from another member: replayed, a fill gives
// the entry of its index and term its data and changes nothing else, so a
// crash anywhere leaves each hole filled or not. A fill of an entry the
// log no longer holds (compacted, or cut by a later write) is ignored.
func (w *WAL) Fill(ents []core.Entry) error {
	if w.err != nil {
		return w.err
	}
	for i := range ents {
		e := &ents[i]
		if err := w.appendFramed(recFill, func(b []byte) ([]byte, error) { return appendEntryPayload(b, e), nil }); err != nil {
			return err
		}
	}
	return nil
}

// MarkCompacted records that the node took a snapshot of its own state at
// meta.Index: entries up to there are no longer needed (ReleaseTo may delete
// them once this is synced); entries after it stay in the log. The
// snapshot's data must already be durable (in a SnapshotStore).
func (w *WAL) MarkCompacted(meta core.SnapshotMeta) error {
	if w.err != nil {
		return w.err
	}
	if meta.Index < w.snap.Index || meta.Index > w.lastIndex {
		return fmt.Errorf("wal: compact to %d: outside the log (%d, %d]", meta.Index, w.snap.Index, w.lastIndex)
	}
	if err := w.appendRecord(recSnapshot, &walpb.SnapshotMarker{Meta: raftpb.SnapshotMetaFromCore(meta)}); err != nil {
		return err
	}
	w.snap = meta
	return nil
}

// appendRecord frames msg into the buffer, first starting a new segment if
// the active one is full.
func (w *WAL) appendRecord(typ recordType, msg proto.Message) error {
	return w.appendFramed(typ, func(b []byte) ([]byte, error) { return w.marshal.MarshalAppend(b, msg) })
}

// appendFramed is appendRecord for a payload that encode appends to a
// buffer.
func (w *WAL) appendFramed(typ recordType, encode func([]byte) ([]byte, error)) error {
	if w.off+int64(len(w.buf)) >= w.opts.segmentSize() && w.off+int64(len(w.buf)) > w.startSize {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	at := w.off + int64(len(w.buf))
	buf, start := beginFrame(w.buf)
	buf, err := encode(buf)
	if err != nil {
		w.buf = buf[:start]
		return fmt.Errorf("wal: encode %s record: %w", typ, err)
	}
	if buf, err = finishFrame(buf, start, w.seed, at, typ); err != nil {
		w.buf = buf[:start]
		return err
	}
	w.buf = buf
	if len(w.buf) >= flushThreshold {
		return w.flush()
	}
	return nil
}

// rotate makes everything so far durable in the active segment, then starts
// the next one. Only the newest segment can therefore ever hold a torn tail.
func (w *WAL) rotate() error {
	if err := w.flush(); err != nil {
		return err
	}
	// A closed segment keeps no zeros after its records: it reads as one
	// written before the WAL wrote zeros ahead, so a keyvald of that time
	// (which took zeros only at the newest segment's end for a torn write)
	// can still open the WAL after a downgrade.
	if w.size > w.off {
		if err := w.f.Truncate(w.off); err != nil {
			return w.fail(fmt.Errorf("wal: cut the zeros after %s: %w", w.path(w.segs[len(w.segs)-1].seq), err))
		}
		w.size = w.off
	}
	if err := w.f.Sync(); err != nil {
		return w.fail(fmt.Errorf("wal: sync %s: %w", w.path(w.segs[len(w.segs)-1].seq), err))
	}
	if err := w.f.Close(); err != nil {
		return w.fail(fmt.Errorf("wal: close %s: %w", w.path(w.segs[len(w.segs)-1].seq), err))
	}
	return w.startSegment(w.segs[len(w.segs)-1].seq + 1)
}

// flush writes the buffered records to the active segment, unsynced; if
// they reach past the file's end, zeros follow them (Options.ZeroAhead).
func (w *WAL) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	n := int64(len(w.buf))
	if w.off+n > w.size {
		w.buf = appendZeros(w.buf, w.opts.zeroAhead())
	}
	if _, err := w.f.WriteAt(w.buf, w.off); err != nil {
		return w.fail(fmt.Errorf("wal: write %s at %d: %w", w.path(w.segs[len(w.segs)-1].seq), w.off, err))
	}
	w.size = max(w.size, w.off+int64(len(w.buf)))
	w.off += n
	w.buf = w.buf[:0]
	w.dirty = true
	return nil
}

// Sync writes everything appended since the last Sync and makes it durable
// with a single fsync. Only after Sync returns may the runtime send messages
// that depend on what was appended (votes, acknowledgements). With nothing
// new appended it does no I/O.
func (w *WAL) Sync() error {
	if w.err != nil {
		return w.err
	}
	if err := w.flush(); err != nil {
		return err
	}
	if w.dirty {
		if err := w.f.Sync(); err != nil {
			return w.fail(fmt.Errorf("wal: sync %s: %w", w.path(w.segs[len(w.segs)-1].seq), err))
		}
		w.dirty = false
	}
	w.durableSnap = w.snap
	w.durable = Durable{HardState: w.hs, LastIndex: w.lastIndex, LastTerm: w.lastTerm}
	return nil
}

// ReleaseTo deletes the oldest segments whose entries all lie at or below
// index, which must be covered by a snapshot marker already made durable by
// Sync. The active segment is never deleted. Hard state and the snapshot
// marker survive because every segment starts by repeating them.
//
// To keep falling back to an older snapshot possible (see SnapshotStore),
// release only up to the oldest snapshot kept.
func (w *WAL) ReleaseTo(index uint64) error {
	if w.err != nil {
		return w.err
	}
	if index > w.durableSnap.Index {
		return fmt.Errorf("wal: release to %d: no durable snapshot covers it (last synced snapshot at %d)", index, w.durableSnap.Index)
	}
	n := 0
	var highest uint64
	for _, s := range w.segs[:len(w.segs)-1] {
		highest = max(highest, s.maxIndex)
		if highest > index {
			break
		}
		n++
	}
	// Oldest first, each removal made durable before the next: a crash
	// leaves a suffix of the segments, never a gap in the middle.
	for n > 0 {
		p := w.path(w.segs[0].seq)
		if err := w.fs.Remove(p); err != nil {
			return w.fail(fmt.Errorf("wal: release %s: %w", p, err))
		}
		if err := w.fs.SyncDir(w.dir); err != nil {
			return w.fail(fmt.Errorf("wal: release %s: %w", p, err))
		}
		w.segs = w.segs[1:]
		n--
	}
	return nil
}

// Close syncs what was appended and closes the active segment.
func (w *WAL) Close() error {
	if w.f == nil {
		return nil
	}
	err := w.Sync()
	if cerr := w.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("wal: close: %w", cerr)
	}
	w.f = nil
	if w.err == nil {
		w.err = errors.New("wal: closed")
	}
	return err
}
