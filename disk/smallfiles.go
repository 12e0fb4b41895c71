package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// Two small files beside the WAL, each two numbers, written whole or not at
// all (WriteFile) and checksummed: a damaged one is corruption, never a
// guess. Layout: an 8-byte magic, the two numbers (big-endian u64) and a
// CRC32C of the 24 bytes before it.
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

func writePair(fsys FS, path, magic string, a, b uint64) error {
	buf := make([]byte, 0, pairFileSize)
	buf = append(buf, magic...)
	buf = binary.BigEndian.AppendUint64(buf, a)
	buf = binary.BigEndian.AppendUint64(buf, b)
	buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
	return WriteFile(fsys, path, buf)
}

func readPair(fsys FS, path, magic string) (a, b uint64, found bool, err error) {
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
	if len(buf) != pairFileSize || string(buf[:len(magic)]) != magic ||
		binary.BigEndian.Uint32(buf[pairFileSize-4:]) != crc32.Checksum(buf[:pairFileSize-4], castagnoli) {
		return 0, 0, false, corruptf(path, 0, "file of %d bytes does not check out", len(buf))
	}
	return binary.BigEndian.Uint64(buf[8:]), binary.BigEndian.Uint64(buf[16:]), true, nil
}
