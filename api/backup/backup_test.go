package backup

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

func write(t *testing.T, dir string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, "b.kvb")
	_, size, err := WriteFile(path, &apipb.SnapshotInfo{AppliedIndex: 9, KeyCount: 2, Size: uint64(len(data))}, bytes.NewReader(data))
	require.NoError(t, err)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, st.Size(), size)
	return path
}

// TestEveryDamageRefused flips every bit of a small backup and cuts it at
// every length: Open refuses each copy with ErrCorrupt.
func TestEveryDamageRefused(t *testing.T) {
	dir := t.TempDir()
	data := []byte("some state, as a member would stream it")
	good, err := os.ReadFile(write(t, dir, data))
	require.NoError(t, err)
	b, err := Open(filepath.Join(dir, "b.kvb"))
	require.NoError(t, err)
	got, err := io.ReadAll(b.Data())
	require.NoError(t, err)
	require.Equal(t, data, got)
	require.Equal(t, uint64(9), b.Info.AppliedIndex)
	b.Close()

	bad := filepath.Join(dir, "bad.kvb")
	refused := func(content []byte, what string) {
		require.NoError(t, os.WriteFile(bad, content, 0o600))
		b, err := Open(bad)
		if err == nil {
			b.Close()
		}
		require.True(t, errors.Is(err, ErrCorrupt), "%s: %v", what, err)
	}
	for bit := range len(good) * 8 {
		damaged := append([]byte(nil), good...)
		damaged[bit/8] ^= 1 << (bit % 8)
		refused(damaged, "flipped bit")
	}
	for n := range len(good) {
		refused(good[:n], "cut")
	}
	refused(append(append([]byte(nil), good...), 0), "a byte appended")
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("stream broke")
	}
	k := min(len(p), r.n)
	r.n -= k
	return k, nil
}

// TestWriteFileLeavesNothingOnFailure: a data reader that fails, or that
// yields fewer bytes than announced, leaves no file and no temporary file.
func TestWriteFileLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.kvb")
	_, _, err := WriteFile(path, &apipb.SnapshotInfo{Size: 100}, &failingReader{n: 40})
	require.ErrorContains(t, err, "stream broke")
	_, _, err = WriteFile(path, &apipb.SnapshotInfo{Size: 100}, bytes.NewReader(make([]byte, 60)))
	require.ErrorContains(t, err, "got 60 bytes")
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, left)
}
