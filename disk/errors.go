package disk

import (
	"errors"
	"fmt"
)

// CorruptionError reports stored data that is damaged: not the torn tail a
// crash leaves behind, but bytes that were once written whole and now read
// back wrong (or a file that cannot have been written by this code). The node
// must not use the data; see docs/disk.md for what the runtime does.
type CorruptionError struct {
	File   string // path of the damaged file
	Offset int64  // byte offset of the first damaged record or field
	Reason string // what is wrong, for a person
	// WAL, for a damaged WAL record, says which entries it may have held
	// and what the records after it still show (nil for other damage).
	WAL *WALDamage
}

func (e *CorruptionError) Error() string {
	s := fmt.Sprintf("disk: corrupt data in %s at offset %d: %s", e.File, e.Offset, e.Reason)
	if e.WAL != nil {
		s += " (" + e.WAL.String() + ")"
	}
	return s
}

// Is makes errors.Is(err, ErrCorrupt) true for every *CorruptionError.
func (e *CorruptionError) Is(target error) bool { return target == ErrCorrupt }

// ErrCorrupt matches any *CorruptionError under errors.Is. Use errors.As to
// learn the file and offset.
var ErrCorrupt = errors.New("disk: corrupt data")

func corruptf(file string, off int64, format string, args ...any) *CorruptionError {
	return &CorruptionError{File: file, Offset: off, Reason: fmt.Sprintf(format, args...)}
}
