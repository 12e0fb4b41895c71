package kvstore

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// manyKeys returns the path of a closed store whose history spans many
// pages, and the id of the root page of its bucket.
func manyKeys(t *testing.T) (path string, histRoot int64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "state.db")
	b, err := OpenBolt(path, Options{NoSync: true})
	require.NoError(t, err)
	var batch []Entry
	for i := 1; i <= 3000; i++ {
		batch = append(batch, Entry{Index: uint64(i), Data: putCmd(0, 0, fmt.Sprintf("key-%05d", i), "some value of a few dozen bytes")})
	}
	_, err = b.Apply(batch)
	require.NoError(t, err)
	require.NoError(t, b.Sync()) // commits the batch: Apply may leave it open
	require.NoError(t, b.file.Load().db.View(func(tx *bbolt.Tx) error {
		histRoot = int64(tx.Bucket(bucketRevs).Root())
		return nil
	}))
	require.NoError(t, b.Close())
	return path, histRoot
}

func zeroPages(t *testing.T, path string, pages ...int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range pages {
		_, err := f.WriteAt(make([]byte, os.Getpagesize()), p*int64(os.Getpagesize()))
		require.NoError(t, err)
	}
}

// TestOpenBoltDamagedFile: a file bbolt refuses or whose pages are not what
// its trees say is ErrDamaged, an error and not a crash (opening for
// writing would panic on a goroutine of bbolt's own), and the file is left
// as it was for the caller to move aside.
func TestOpenBoltDamagedFile(t *testing.T) {
	cases := map[string]func(t *testing.T, path string, histRoot int64){
		"zeroed root page of the history bucket": func(t *testing.T, path string, histRoot int64) { zeroPages(t, path, histRoot) },
		"both meta pages zeroed":                 func(t *testing.T, path string, _ int64) { zeroPages(t, path, 0, 1) },
		"cut short":                              func(t *testing.T, path string, _ int64) { require.NoError(t, os.Truncate(path, 100)) },
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			path, histRoot := manyKeys(t)
			require.Greater(t, histRoot, int64(2))
			damage(t, path, histRoot)
			before, err := os.ReadFile(path)
			require.NoError(t, err)
			_, err = OpenBolt(path, Options{NoSync: true})
			require.ErrorIs(t, err, ErrDamaged)
			require.ErrorContains(t, err, path)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.True(t, bytes.Equal(before, after), "the damaged file was changed")
		})
	}
	t.Run("one meta page zeroed is not damage", func(t *testing.T) {
		// bbolt falls back to the other meta page, the one of the
		// transaction before: a store a little behind, which the log
		// replays.
		path, _ := manyKeys(t)
		zeroPages(t, path, 0)
		b, err := OpenBolt(path, Options{NoSync: true})
		require.NoError(t, err)
		require.NoError(t, b.Close())
	})
}
