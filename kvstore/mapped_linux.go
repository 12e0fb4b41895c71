//go:build linux

package kvstore

import (
	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// dropMapped takes the database file's pages out of the process's memory
// map (madvise MADV_DONTNEED): they stay in the page cache, and a later
// read faults back in the ones it touches. bbolt reads through a shared,
// read-only map, so every page a snapshot's scan of the history reads
// stays mapped, and counted in the process's resident memory, until the
// kernel needs it: as the history grows, the process would grow with it
// although no write touches those pages again. It must be called inside
// tx, which keeps bbolt from remapping the file meanwhile. A failure only
// leaves the pages mapped, so it is not reported.
func dropMapped(tx *bbolt.Tx) {
	if size := tx.Size(); size > 0 {
		_, _, _ = unix.Syscall(unix.SYS_MADVISE, tx.DB().Info().Data, uintptr(size), unix.MADV_DONTNEED)
	}
}
