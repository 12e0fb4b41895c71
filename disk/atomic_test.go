package disk

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// readMem returns a file's contents, or nil if it does not exist.
func readMem(t *testing.T, fsys FS, name string) []byte {
	t.Helper()
	f, err := fsys.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	must(t, err)
	defer f.Close()
	n, err := f.Size()
	must(t, err)
	b := make([]byte, n)
	must(t, readAtFull(f, b, 0))
	return b
}

// TestWriteFileCrashAtEveryPoint replaces a file and crashes before each of
// WriteFile's mutating operations, under every crash behaviour: the file is
// then the old one or the new one, whole, and the new one once WriteFile
// has returned.
func TestWriteFileCrashAtEveryPoint(t *testing.T) {
	old, newer := []byte(`{"node_id":1}`), bytes.Repeat([]byte("new identity "), 50)
	configs := []MemFaults{{}, {PartialFlush: true}, {PartialFlush: true, TornWrites: true}, {TornWrites: true}}
	sawOld, sawNew := 0, 0
	for crashAt := 1; ; crashAt++ {
		finished := false
		for ci, faults := range configs {
			m := NewMemFS(rand.New(rand.NewPCG(uint64(crashAt), uint64(ci))))
			must(t, m.MkdirAll("/d"))
			must(t, WriteFile(m, "/d/identity.json", old))
			m.Faults = faults
			count, crashed := 0, false
			m.Intercept = func(op Op, _ string) error {
				if op.Mutates() {
					if count++; count == crashAt {
						m.Crash()
						crashed, m.Intercept = true, nil
						return errInjectedCrash
					}
				}
				return nil
			}
			err := WriteFile(m, "/d/identity.json", newer)
			if err != nil && !crashed {
				t.Fatalf("crash at %d: write failed without a crash: %v", crashAt, err)
			}
			if !crashed {
				m.Intercept = nil
				m.Crash()
				finished = true
			}
			switch got := readMem(t, m, "/d/identity.json"); {
			case bytes.Equal(got, newer):
				sawNew++
			case bytes.Equal(got, old) && err != nil:
				sawOld++
			default:
				t.Fatalf("crash at %d (faults %+v, returned %v): file holds %q", crashAt, faults, err, got)
			}
		}
		if finished {
			break
		}
	}
	if sawOld == 0 || sawNew == 0 {
		t.Errorf("crash points left the old file %d times and the new one %d times", sawOld, sawNew)
	}
}

// TestOSFSModes: what OSFS creates is the owner's alone, and a directory
// that already existed keeps its mode.
func TestOSFSModes(t *testing.T) {
	root := t.TempDir()
	must(t, os.Chmod(root, 0o755))
	dir := filepath.Join(root, "a", "b")
	must(t, OSFS{}.MkdirAll(dir))
	must(t, WriteFile(OSFS{}, filepath.Join(dir, "f"), []byte("x")))
	for path, want := range map[string]os.FileMode{
		root:                     0o755 | os.ModeDir,
		filepath.Join(root, "a"): 0o700 | os.ModeDir,
		dir:                      0o700 | os.ModeDir,
		filepath.Join(dir, "f"):  0o600,
	} {
		st, err := os.Stat(path)
		must(t, err)
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, st.Mode(), want)
		}
	}
	names, err := OSFS{}.ReadDir(dir)
	must(t, err)
	if len(names) != 1 {
		t.Errorf("directory holds %v, want only the file", names)
	}
}
