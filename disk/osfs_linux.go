package disk

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// syncData flushes a file's data and the metadata needed to read it back
// (its size), but not timestamps: fdatasync, which saves a journal commit per
// call when the WAL appends.
func syncData(f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
