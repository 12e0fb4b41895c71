package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// A vote floor file keeps, across restarts, the end of the log a node had
// before Repair dropped entries (core.Config.VoteFloor): until the node's
// log is back there it votes as if it still had them. Layout: the magic,
// term and index (big-endian u64) and a CRC32C of the 24 bytes before it.
const voteFloorMagic = "KVFLOOR1"

const voteFloorSize = len(voteFloorMagic) + 8 + 8 + 4

// WriteVoteFloor durably replaces the vote floor at path.
func WriteVoteFloor(fsys FS, path string, p core.LogPosition) error {
	b := make([]byte, 0, voteFloorSize)
	b = append(b, voteFloorMagic...)
	b = binary.BigEndian.AppendUint64(b, p.Term)
	b = binary.BigEndian.AppendUint64(b, p.Index)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if err := WriteFile(fsys, path, b); err != nil {
		return fmt.Errorf("write vote floor: %w", err)
	}
	return nil
}

// ReadVoteFloor reads the vote floor at path: zero if there is no file, a
// *CorruptionError if the file is damaged (the node must not guess it).
func ReadVoteFloor(fsys FS, path string) (core.LogPosition, error) {
	f, err := fsys.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return core.LogPosition{}, nil
	}
	if err != nil {
		return core.LogPosition{}, fmt.Errorf("read vote floor: %w", err)
	}
	defer f.Close()
	b, err := readWhole(f, nil)
	if err != nil {
		return core.LogPosition{}, fmt.Errorf("read vote floor %s: %w", path, err)
	}
	if len(b) != voteFloorSize || string(b[:len(voteFloorMagic)]) != voteFloorMagic ||
		binary.BigEndian.Uint32(b[voteFloorSize-4:]) != crc32.Checksum(b[:voteFloorSize-4], castagnoli) {
		return core.LogPosition{}, corruptf(path, 0, "vote floor file of %d bytes does not check out", len(b))
	}
	n := len(voteFloorMagic)
	return core.LogPosition{Term: binary.BigEndian.Uint64(b[n:]), Index: binary.BigEndian.Uint64(b[n+8:])}, nil
}
