package disk

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
)

// The FS contract: behaviour the storage code relies on, checked against
// both implementations.

func TestFSContractOS(t *testing.T) {
	testFSContract(t, func(t *testing.T) (FS, string) { return OSFS{}, t.TempDir() })
}

func TestFSContractMem(t *testing.T) {
	testFSContract(t, func(t *testing.T) (FS, string) {
		m := NewMemFS(rand.New(rand.NewPCG(1, 2)))
		if err := m.MkdirAll("/root/dir"); err != nil {
			t.Fatal(err)
		}
		return m, "/root/dir"
	})
}

func testFSContract(t *testing.T, newFS func(t *testing.T) (FS, string)) {
	t.Run("WriteReadSizeSync", func(t *testing.T) {
		fsys, dir := newFS(t)
		f, err := fsys.Create(filepath.Join(dir, "a"))
		must(t, err)
		if n, err := f.WriteAt([]byte("hello world"), 0); n != 11 || err != nil {
			t.Fatalf("WriteAt = %d, %v", n, err)
		}
		if n, err := f.WriteAt([]byte("WORLD"), 6); n != 5 || err != nil {
			t.Fatalf("WriteAt = %d, %v", n, err)
		}
		must(t, f.Sync())
		size, err := f.Size()
		if size != 11 || err != nil {
			t.Fatalf("Size = %d, %v", size, err)
		}
		p := make([]byte, 11)
		if n, err := f.ReadAt(p, 0); n != 11 || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt = %d, %v", n, err)
		}
		if string(p) != "hello WORLD" {
			t.Fatalf("read %q", p)
		}
		// A read running past the end returns what there is and io.EOF.
		if n, err := f.ReadAt(p, 6); n != 5 || err != io.EOF {
			t.Fatalf("ReadAt past end = %d, %v; want 5, EOF", n, err)
		}
		if n, err := f.ReadAt(p, 100); n != 0 || err != io.EOF {
			t.Fatalf("ReadAt beyond end = %d, %v; want 0, EOF", n, err)
		}
		must(t, f.Close())
		// Reopened, the data is there.
		g, err := fsys.Open(filepath.Join(dir, "a"))
		must(t, err)
		defer g.Close()
		q := make([]byte, 5)
		if _, err := g.ReadAt(q, 0); err != nil || string(q) != "hello" {
			t.Fatalf("reopened read %q, %v", q, err)
		}
	})

	t.Run("WriteBeyondEndZeroFills", func(t *testing.T) {
		fsys, dir := newFS(t)
		f, err := fsys.Create(filepath.Join(dir, "a"))
		must(t, err)
		defer f.Close()
		_, err = f.WriteAt([]byte("xy"), 4)
		must(t, err)
		p := make([]byte, 6)
		_, err = f.ReadAt(p, 0)
		must(t, err)
		if !bytes.Equal(p, []byte{0, 0, 0, 0, 'x', 'y'}) {
			t.Fatalf("read %q", p)
		}
	})

	t.Run("Truncate", func(t *testing.T) {
		fsys, dir := newFS(t)
		f, err := fsys.Create(filepath.Join(dir, "a"))
		must(t, err)
		defer f.Close()
		_, err = f.WriteAt([]byte("abcdef"), 0)
		must(t, err)
		must(t, f.Truncate(2))
		must(t, f.Truncate(4)) // grows with zeros
		p := make([]byte, 4)
		_, err = f.ReadAt(p, 0)
		must(t, err)
		if !bytes.Equal(p, []byte{'a', 'b', 0, 0}) {
			t.Fatalf("read %q", p)
		}
		if size, _ := f.Size(); size != 4 {
			t.Fatalf("size %d", size)
		}
	})

	t.Run("CreateTruncatesExisting", func(t *testing.T) {
		fsys, dir := newFS(t)
		name := filepath.Join(dir, "a")
		f, err := fsys.Create(name)
		must(t, err)
		_, err = f.WriteAt([]byte("abc"), 0)
		must(t, err)
		must(t, f.Close())
		g, err := fsys.Create(name)
		must(t, err)
		defer g.Close()
		if size, _ := g.Size(); size != 0 {
			t.Fatalf("size after re-create %d", size)
		}
	})

	t.Run("RenameRemoveReadDir", func(t *testing.T) {
		fsys, dir := newFS(t)
		for _, n := range []string{"c", "a", "b"} {
			f, err := fsys.Create(filepath.Join(dir, n))
			must(t, err)
			_, err = f.WriteAt([]byte(n), 0)
			must(t, err)
			must(t, f.Close())
		}
		must(t, fsys.MkdirAll(filepath.Join(dir, "sub", "deeper")))
		must(t, fsys.MkdirAll(filepath.Join(dir, "sub"))) // idempotent
		names, err := fsys.ReadDir(dir)
		must(t, err)
		if !slices.Equal(names, []string{"a", "b", "c", "sub"}) {
			t.Fatalf("ReadDir = %v", names)
		}
		// Rename replaces the target.
		must(t, fsys.Rename(filepath.Join(dir, "c"), filepath.Join(dir, "a")))
		must(t, fsys.Rename(filepath.Join(dir, "b"), filepath.Join(dir, "b"))) // no-op
		must(t, fsys.Remove(filepath.Join(dir, "b")))
		must(t, fsys.SyncDir(dir))
		names, err = fsys.ReadDir(dir)
		must(t, err)
		if !slices.Equal(names, []string{"a", "sub"}) {
			t.Fatalf("ReadDir = %v", names)
		}
		f, err := fsys.Open(filepath.Join(dir, "a"))
		must(t, err)
		p := make([]byte, 1)
		_, err = f.ReadAt(p, 0)
		must(t, err)
		must(t, f.Close())
		if string(p) != "c" {
			t.Fatalf("renamed file holds %q", p)
		}
		// Rename into a subdirectory.
		must(t, fsys.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "sub", "a")))
		names, err = fsys.ReadDir(filepath.Join(dir, "sub"))
		must(t, err)
		if !slices.Equal(names, []string{"a", "deeper"}) {
			t.Fatalf("ReadDir(sub) = %v", names)
		}
		// An empty directory can be removed.
		must(t, fsys.Remove(filepath.Join(dir, "sub", "deeper")))
	})

	t.Run("OpenHandleOutlivesRenameAndRemove", func(t *testing.T) {
		fsys, dir := newFS(t)
		f, err := fsys.Create(filepath.Join(dir, "tmp"))
		must(t, err)
		defer f.Close()
		must(t, fsys.Rename(filepath.Join(dir, "tmp"), filepath.Join(dir, "final")))
		_, err = f.WriteAt([]byte("data"), 0)
		must(t, err)
		must(t, f.Sync())
		g, err := fsys.Open(filepath.Join(dir, "final"))
		must(t, err)
		p := make([]byte, 4)
		_, err = g.ReadAt(p, 0)
		must(t, err)
		if string(p) != "data" {
			t.Fatalf("read %q through the new name", p)
		}
		must(t, fsys.Remove(filepath.Join(dir, "final")))
		if _, err := g.ReadAt(p, 0); err != nil {
			t.Fatalf("read after remove: %v", err)
		}
		must(t, g.Close())
	})

	t.Run("Errors", func(t *testing.T) {
		fsys, dir := newFS(t)
		missing := filepath.Join(dir, "missing")
		if _, err := fsys.Open(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open missing: %v", err)
		}
		if err := fsys.Remove(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Remove missing: %v", err)
		}
		if err := fsys.Rename(missing, filepath.Join(dir, "x")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Rename missing: %v", err)
		}
		if _, err := fsys.Create(filepath.Join(dir, "nodir", "f")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Create in missing dir: %v", err)
		}
		if _, err := fsys.ReadDir(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadDir missing: %v", err)
		}
		if err := fsys.SyncDir(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("SyncDir missing: %v", err)
		}
		// A file in the way of a directory.
		f, err := fsys.Create(filepath.Join(dir, "file"))
		must(t, err)
		if err := fsys.MkdirAll(filepath.Join(dir, "file", "sub")); err == nil {
			t.Errorf("MkdirAll through a file succeeded")
		}
		if _, err := fsys.Create(dir); err == nil {
			t.Errorf("Create over a directory succeeded")
		}
		must(t, fsys.MkdirAll(filepath.Join(dir, "full", "x")))
		if err := fsys.Remove(filepath.Join(dir, "full")); err == nil {
			t.Errorf("Remove of a non-empty directory succeeded")
		}
		if _, err := f.WriteAt([]byte("x"), -1); err == nil {
			t.Errorf("WriteAt negative offset succeeded")
		}
		if _, err := f.ReadAt(make([]byte, 1), -1); err == nil {
			t.Errorf("ReadAt negative offset succeeded")
		}
		if err := f.Truncate(-1); err == nil {
			t.Errorf("Truncate negative size succeeded")
		}
		must(t, f.Close())
		if err := f.Close(); err == nil {
			t.Errorf("second Close succeeded")
		}
		if _, err := f.WriteAt([]byte("x"), 0); err == nil {
			t.Errorf("WriteAt after Close succeeded")
		}
		if _, err := f.ReadAt(make([]byte, 1), 0); err == nil {
			t.Errorf("ReadAt after Close succeeded")
		}
		if err := f.Sync(); err == nil {
			t.Errorf("Sync after Close succeeded")
		}
		if _, err := f.Size(); err == nil {
			t.Errorf("Size after Close succeeded")
		}
		if err := f.Truncate(0); err == nil {
			t.Errorf("Truncate after Close succeeded")
		}
	})
}

// failer is the part of testing.TB the helpers need; *rapid.T has it too.
type failer interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

func must(t failer, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
