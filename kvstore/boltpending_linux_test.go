package kvstore

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/internal/fsizelimit"
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

	lift := fsizelimit.Set(t, 4096)

	// Left open and answered (NoSync), so committed by the timer.
	newApplier(t, b).apply(putCmd(0, 0, "k", "v"))
	select {
	case err := <-failed:
		lift()
		require.ErrorContains(t, err, "commit entries up to 1")
	case <-time.After(10 * time.Second):
		t.Fatal("the timer's failed commit was not reported")
	}
	_, err = b.Get([]byte("k"))
	require.ErrorContains(t, err, "lost batches it had answered")
}
