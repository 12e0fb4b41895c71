package disk

import (
	"errors"
	"io"
)

// FS is the handful of file operations the storage layer needs. Paths are
// slash- or OS-separated as filepath understands them. Implementations need
// not be safe for concurrent use.
//
// Durability follows POSIX: data written to a file is durable once File.Sync
// returns, and a file's name (its creation, a rename onto it, its removal) is
// durable once SyncDir of its directory returns. Anything else may be lost in
// a crash.
type FS interface {
	// Create creates the named file for reading and writing, truncating it
	// if it exists. The parent directory must exist.
	Create(name string) (File, error)
	// Open opens an existing file for reading and writing.
	Open(name string) (File, error)
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	// Remove deletes a file.
	Remove(name string) error
	// ReadDir returns the names of the entries in dir, sorted.
	ReadDir(dir string) ([]string, error)
	// MkdirAll creates dir and any missing parents.
	MkdirAll(dir string) error
	// SyncDir makes the directory's entries (creations, renames, removals)
	// durable.
	SyncDir(dir string) error
}

// StreamFS is an FS that can also create a file meant to be written once,
// front to back, and then synced (a snapshot), cheaper to write than
// Create's. Reading it, or writing it in another order, must still work.
type StreamFS interface {
	FS
	CreateStream(name string) (File, error)
}

// File is an open file. Reads and writes take explicit offsets; there is no
// file position.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes the file's data (and its size) durable.
	Sync() error
	// Truncate changes the file's size, zero-filling if it grows.
	Truncate(size int64) error
	// Size returns the file's current size.
	Size() (int64, error)
	Close() error
}

// ErrClosed is returned by operations on a closed File.
var ErrClosed = errors.New("disk: file already closed")
