package server

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// TestDataFilesPrivate: what keyvald creates in its data directory is the
// owner's alone, and a data directory that existed keeps its mode.
func TestDataFilesPrivate(t *testing.T) {
	c := newTestCluster(t, 1, 5)
	for i := range 12 { // past two snapshots
		_, err := c.conns[c.leader()].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprint(i)), Value: []byte("v")})
		require.NoError(t, err)
	}
	c.stop(1)
	dir := filepath.Join(c.dir, "1")
	checkModes := func(wantDir os.FileMode) {
		t.Helper()
		seen := 0
		require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			want := os.FileMode(0o600)
			switch {
			case path == dir:
				want = wantDir | fs.ModeDir
			case d.IsDir():
				want = 0o700 | fs.ModeDir
			}
			require.Equal(t, want, info.Mode(), path)
			seen++
			return nil
		}))
		require.GreaterOrEqual(t, seen, 6, "data dir, wal/, snap/, a segment, a snapshot, state.db, identity.json")
	}
	checkModes(0o700)

	require.NoError(t, os.Chmod(dir, 0o750))
	c.start(1)
	c.leader()
	c.stop(1)
	checkModes(0o750)
}
