package kvstore

import (
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A commit of answered batches that fails on the store's timer, with no
// Apply or read to return the error to, is told to OnFailure at once, and
// the store then fails every read. The commit fails here because the
// process may not write past the file's first 4 KiB (RLIMIT_FSIZE).
func TestBoltIdleCommitFailureReported(t *testing.T) {
	failed := make(chan error, 1)
	b, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{NoSync: true, OnFailure: func(err error) { failed <- err }})
	require.NoError(t, err)
	defer b.Close()

	var lim unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_FSIZE, &lim))
	signal.Ignore(syscall.SIGXFSZ) // EFBIG instead of the signal's kill
	defer signal.Reset(syscall.SIGXFSZ)
	small := lim
	small.Cur = 4096
	require.NoError(t, unix.Setrlimit(unix.RLIMIT_FSIZE, &small))
	restored := false
	restore := func() {
		if !restored {
			require.NoError(t, unix.Setrlimit(unix.RLIMIT_FSIZE, &lim))
			restored = true
		}
	}
	defer restore()

	// Left open and answered (NoSync), so committed by the timer.
	newApplier(t, b).apply(putCmd(0, 0, "k", "v"))
	select {
	case err := <-failed:
		restore()
		require.ErrorContains(t, err, "commit entries up to 1")
	case <-time.After(10 * time.Second):
		restore()
		t.Fatal("the timer's failed commit was not reported")
	}
	_, err = b.Get([]byte("k"))
	require.ErrorContains(t, err, "lost batches it had answered")
}
