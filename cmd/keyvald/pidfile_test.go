package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPIDFileNamesThisProcessUntilRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, pidFileName)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	remove := writePIDFile(dir, log)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(os.Getpid())+"\n", string(b))
	remove()
	require.NoFileExists(t, path)

	// A file another process has written since is not this one's to remove.
	remove = writePIDFile(dir, log)
	require.NoError(t, os.WriteFile(path, []byte("1\n"), 0o644))
	remove()
	require.FileExists(t, path)

	// A directory it cannot write to is not fatal.
	writePIDFile(filepath.Join(dir, "missing"), log)()
}
