//go:build !linux

package disk

import "os"

// syncData flushes a file's data. Outside Linux it is a full fsync (on macOS
// Go's File.Sync issues F_FULLFSYNC).
func syncData(f *os.File) error { return f.Sync() }
