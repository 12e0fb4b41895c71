package fsizelimit

import (
	"os/signal"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Set makes writes that would take a file past max bytes fail until lift
// is called or the test ends, whichever comes first. The limit is the
// whole process's: the caller's package must not run tests in parallel
// with it.
func Set(t testing.TB, max uint64) (lift func()) {
	t.Helper()
	var was unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &was); err != nil {
		t.Fatalf("read the file size limit: %v", err)
	}
	signal.Ignore(syscall.SIGXFSZ) // EFBIG instead of the signal's kill
	low := was
	low.Cur = max
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &low); err != nil {
		signal.Reset(syscall.SIGXFSZ)
		t.Fatalf("lower the file size limit: %v", err)
	}
	var once sync.Once
	lift = func() {
		once.Do(func() {
			if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &was); err != nil {
				t.Errorf("lift the file size limit: %v", err)
			}
			signal.Reset(syscall.SIGXFSZ)
		})
	}
	t.Cleanup(lift)
	return lift
}
