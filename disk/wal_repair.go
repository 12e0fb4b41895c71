package disk

import (
	"fmt"
	"io"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk/walpb"
)

// Repair starts the WAL in dir over from snap and hs, leaving behind every
// segment it held, damaged or not: it writes one new segment whose start
// record says so (SegmentStart.repair), makes it durable, and then moves
// the older segments, oldest first, into a directory beside dir
// (RepairedAside), never deleting them: they may hold the only intact copy
// of entries, for an operator to look at. A crash at any point leaves
// either the old WAL (and the repair can be made again) or one that Open
// reads from the repair segment on, moving aside what is left before it.
//
// The caller decides that starting over is safe and from what: snap must
// be a snapshot the node holds a file of (or the bootstrap configuration at
// index 0), and hs.Commit may not exceed snap.Index. docs/disk.md, "Repair
// from peers", has the rules.
func Repair(fsys FS, dir string, opts Options, snap core.SnapshotMeta, hs core.HardState) error {
	if hs.Commit > snap.Index {
		return fmt.Errorf("wal: repair %s: commit %d beyond the snapshot at %d", dir, hs.Commit, snap.Index)
	}
	seqs, err := listSegments(fsys, dir)
	if err != nil {
		return err
	}
	if len(seqs) == 0 {
		return fmt.Errorf("wal: repair %s: %w", dir, ErrNoWAL)
	}
	w := &WAL{fs: fsys, dir: dir, opts: opts, hs: hs, snap: snap, lastIndex: snap.Index, repairing: true}
	if err := w.startSegment(seqs[len(seqs)-1] + 1); err != nil {
		return fmt.Errorf("wal: repair %s: %w", dir, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("wal: repair %s: %w", dir, err)
	}
	return moveAside(fsys, dir, seqs[len(seqs)-1]+1, seqs)
}

// RepairedAside is where a repair that wrote segment seq moves the
// segments before it.
func RepairedAside(dir string, seq uint64) string {
	return fmt.Sprintf("%s.damaged-%016x", filepath.Clean(dir), seq)
}

// moveAside moves segments, oldest first, out of dir into the directory of
// the repair that wrote segment repairSeq; each move is durable (its new
// name, then the old one's removal) before the next.
func moveAside(fsys FS, dir string, repairSeq uint64, seqs []uint64) error {
	aside := RepairedAside(dir, repairSeq)
	if err := fsys.MkdirAll(aside); err != nil {
		return fmt.Errorf("wal: move damaged segments aside: %w", err)
	}
	for _, seq := range seqs {
		from, to := segmentPath(dir, seq), segmentPath(aside, seq)
		if err := fsys.Rename(from, to); err != nil {
			return fmt.Errorf("wal: move %s aside: %w", from, err)
		}
		if err := fsys.SyncDir(aside); err != nil {
			return fmt.Errorf("wal: move %s aside: %w", from, err)
		}
		if err := fsys.SyncDir(dir); err != nil {
			return fmt.Errorf("wal: move %s aside: %w", from, err)
		}
	}
	return nil
}

// repairStart returns the position in seqs of the newest segment a repair
// wrote, or 0 if there is none. Only a segment's start record is read; one
// that does not decode is not a repair segment (if it matters, replaying
// reports it).
func repairStart(fsys FS, dir string, seqs []uint64) (int, error) {
	var start walpb.SegmentStart
	buf := make([]byte, 64<<10)
	for i := len(seqs) - 1; i > 0; i-- {
		f, err := fsys.Open(segmentPath(dir, seqs[i]))
		if err != nil {
			return 0, fmt.Errorf("wal: open segment: %w", err)
		}
		n, err := f.ReadAt(buf, 0)
		f.Close()
		if err != nil && err != io.EOF {
			return 0, fmt.Errorf("wal: read %s: %w", segmentPath(dir, seqs[i]), err)
		}
		fr := decodeFrame(buf[:n], seedFor(seqs[i]), 0)
		if fr.status == frameTruncated && n == len(buf) {
			// A start record bigger than the buffer: read it whole.
			buf = make([]byte, fr.size)
			i++
			continue
		}
		if fr.status == frameOK && fr.typ == recSegmentStart && proto.Unmarshal(fr.payload, &start) == nil && start.GetRepair() {
			return i, nil
		}
	}
	return 0, nil
}
