package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"path/filepath"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// Small files beside the WAL, each two numbers, checksummed: a damaged one
// is corruption, never a guess. Layout: an 8-byte magic, the two numbers
// (big-endian u64) and a CRC32C of the 24 bytes before it. The first two
// are written whole or not at all (WriteFile); the end mark is overwritten
// in place (EndMark), as it is written after every WAL sync.
//
//   - The vote floor (core.Config.VoteFloor): the end of the log a node had
//     before Repair dropped entries, term and index. Until its log is back
//     there it votes as if it still had them.
//   - The vote copy: the node's term and vote, written again whenever
//     either changes, after the WAL holds them and before any message that
//     depends on them leaves. If the WAL's newest hard state is damaged,
//     the copy still says what the node promised.
const (
	voteFloorMagic = "KVFLOOR1"
	voteCopyMagic  = "KVVOTE01"
	endMarkMagic   = "KVWALEND"
	pairFileSize   = 8 + 8 + 8 + 4
)

// WriteVoteFloor durably replaces the vote floor at path.
func WriteVoteFloor(fsys FS, path string, p core.LogPosition) error {
	if err := writePair(fsys, path, voteFloorMagic, p.Term, p.Index); err != nil {
		return fmt.Errorf("write vote floor: %w", err)
	}
	return nil
}

// ReadVoteFloor reads the vote floor at path: zero if there is no file, a
// *CorruptionError if the file is damaged.
func ReadVoteFloor(fsys FS, path string) (core.LogPosition, error) {
	term, index, _, err := readPair(fsys, path, voteFloorMagic)
	if err != nil {
		return core.LogPosition{}, fmt.Errorf("read vote floor: %w", err)
	}
	return core.LogPosition{Term: term, Index: index}, nil
}

// WriteVoteCopy durably replaces the copy of term and vote at path.
func WriteVoteCopy(fsys FS, path string, term uint64, vote core.NodeID) error {
	if err := writePair(fsys, path, voteCopyMagic, term, uint64(vote)); err != nil {
		return fmt.Errorf("write vote copy: %w", err)
	}
	return nil
}

// ReadVoteCopy reads the copy of term and vote at path (in a HardState,
// commit 0). found is false if there is no file; a damaged one is a
// *CorruptionError.
func ReadVoteCopy(fsys FS, path string) (hs core.HardState, found bool, err error) {
	term, vote, found, err := readPair(fsys, path, voteCopyMagic)
	if err != nil {
		return core.HardState{}, false, fmt.Errorf("read vote copy: %w", err)
	}
	return core.HardState{Term: term, Vote: core.NodeID(vote)}, found, nil
}

// EndMark is the WAL end mark: the position of the log's last entry as of
// the newest WAL sync, written in place, and synced, after that sync and
// before anything that depends on it leaves. A disk that loses a synced
// write can take the last records of the WAL away and leave a log that is
// whole but shorter, which the WAL alone cannot tell from one never
// written; a mark past the recovered log's end shows it (docs/disk.md,
// "Lost writes at the end"). A write lost from the mark itself only leaves
// it behind, which hides nothing unless the WAL lost one too.
type EndMark struct {
	f    File
	path string
	last core.LogPosition
	buf  []byte
}

// OpenEndMark opens the end mark at path for writing, creating it (and
// making its name durable) if there is none. last is what it holds now,
// so that Write(last) does no I/O; a file of the wrong size (a write of it
// misdirected past its end) is emptied, for the next Write to replace.
func OpenEndMark(fsys FS, path string, last core.LogPosition) (*EndMark, error) {
	f, err := fsys.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		if f, err = fsys.Create(path); err == nil {
			err = fsys.SyncDir(filepath.Dir(path))
		}
	}
	if err == nil {
		var size int64
		if size, err = f.Size(); err == nil && size != pairFileSize {
			last = core.LogPosition{}
			err = f.Truncate(0)
		}
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("open WAL end mark %s: %w", path, err)
	}
	return &EndMark{f: f, path: path, last: last, buf: make([]byte, 0, pairFileSize)}, nil
}

// Write makes p the mark, durably, unless it is already.
func (m *EndMark) Write(p core.LogPosition) error {
	if p == m.last {
		return nil
	}
	m.buf = appendPair(m.buf[:0], endMarkMagic, p.Term, p.Index)
	if _, err := m.f.WriteAt(m.buf, 0); err != nil {
		return fmt.Errorf("write WAL end mark %s: %w", m.path, err)
	}
	if err := m.f.Sync(); err != nil {
		return fmt.Errorf("sync WAL end mark %s: %w", m.path, err)
	}
	m.last = p
	return nil
}

// Close closes the mark's file.
func (m *EndMark) Close() error { return m.f.Close() }

// ReadEndMark reads the WAL end mark at path. found is false if there is
// no file, or an empty one (created, and the node stopped before its first
// write); a damaged one (its write torn, flipped or misdirected) is a
// *CorruptionError.
func ReadEndMark(fsys FS, path string) (p core.LogPosition, found bool, err error) {
	term, index, found, err := readPairOrEmpty(fsys, path, endMarkMagic, true)
	if err != nil {
		return core.LogPosition{}, false, fmt.Errorf("read WAL end mark: %w", err)
	}
	return core.LogPosition{Term: term, Index: index}, found, nil
}

func writePair(fsys FS, path, magic string, a, b uint64) error {
	return WriteFile(fsys, path, appendPair(make([]byte, 0, pairFileSize), magic, a, b))
}

func appendPair(buf []byte, magic string, a, b uint64) []byte {
	buf = append(buf, magic...)
	buf = binary.BigEndian.AppendUint64(buf, a)
	buf = binary.BigEndian.AppendUint64(buf, b)
	return binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
}

func readPair(fsys FS, path, magic string) (a, b uint64, found bool, err error) {
	return readPairOrEmpty(fsys, path, magic, false)
}

// readPairOrEmpty is readPair that, if emptyIsNone, takes an empty file for
// none.
func readPairOrEmpty(fsys FS, path, magic string, emptyIsNone bool) (a, b uint64, found bool, err error) {
	f, err := fsys.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	defer f.Close()
	buf, err := readWhole(f, nil)
	if err != nil {
		return 0, 0, false, fmt.Errorf("%s: %w", path, err)
	}
	if len(buf) == 0 && emptyIsNone {
		return 0, 0, false, nil
	}
	if len(buf) != pairFileSize || string(buf[:len(magic)]) != magic ||
		binary.BigEndian.Uint32(buf[pairFileSize-4:]) != crc32.Checksum(buf[:pairFileSize-4], castagnoli) {
		return 0, 0, false, corruptf(path, 0, "file of %d bytes does not check out", len(buf))
	}
	return binary.BigEndian.Uint64(buf[8:]), binary.BigEndian.Uint64(buf[16:]), true, nil
}
