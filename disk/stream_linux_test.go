package disk

import (
	"bytes"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/therealutkarshpriyadarshi/keyval/internal/fsizelimit"
)

// A stream file keeps the FS contract whatever order it is used in.
func TestFSContractOSStream(t *testing.T) {
	testFSContract(t, func(t *testing.T) (FS, string) { return streamCreates{}, t.TempDir() })
}

// streamCreates is OSFS with Create making stream files.
type streamCreates struct{ OSFS }

func (streamCreates) Create(name string) (File, error) { return OSFS{}.CreateStream(name) }

// Sequential writes of any sizes, across the direct chunks, read back as
// written, after Sync and after a reopen; the file holds nothing more.
// Where the file system takes direct I/O, the file is opened with it until
// the first thing other than an append.
func TestStreamFileSequentialWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, total := range []int{0, 1, streamAlign, streamChunk - 1, streamChunk, 3*streamChunk + 12345} {
		name := filepath.Join(t.TempDir(), "s")
		f, err := OSFS{}.CreateStream(name)
		must(t, err)
		sf, direct := f.(*streamFile)
		if direct && !hasODirect(t, sf) {
			t.Fatal("a stream file is not opened for direct I/O")
		}
		want := make([]byte, total)
		for i := range want {
			want[i] = byte(rng.Uint32())
		}
		for off := 0; off < total; {
			n := min(1+rng.IntN(300_000), total-off)
			if k, err := f.WriteAt(want[off:off+n], int64(off)); k != n || err != nil {
				t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", n, off, k, err)
			}
			off += n
		}
		must(t, f.Sync())
		if direct && hasODirect(t, sf) {
			t.Fatal("direct I/O still on after Sync")
		}
		requireContents(t, f, want, "after Sync")
		must(t, f.Close())
		g, err := OSFS{}.Open(name)
		must(t, err)
		requireContents(t, g, want, "reopened")
		must(t, g.Close())
	}
}

// What a stream file gathered is written out by Close, as by any file.
func TestStreamFileCloseWritesOut(t *testing.T) {
	name := filepath.Join(t.TempDir(), "s")
	f, err := OSFS{}.CreateStream(name)
	must(t, err)
	_, err = f.WriteAt([]byte("gathered"), 0)
	must(t, err)
	must(t, f.Close())
	g, err := OSFS{}.Open(name)
	must(t, err)
	defer g.Close()
	p := make([]byte, 8)
	_, err = g.ReadAt(p, 0)
	must(t, err)
	if string(p) != "gathered" {
		t.Fatalf("read %q", p)
	}
}

// requireContents requires f to hold exactly want.
func requireContents(t *testing.T, f File, want []byte, when string) {
	t.Helper()
	if size, err := f.Size(); size != int64(len(want)) || err != nil {
		t.Fatalf("%s: Size = %d, %v; want %d", when, size, err, len(want))
	}
	got := make([]byte, len(want))
	if len(want) > 0 {
		_, err := f.ReadAt(got, 0)
		must(t, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes read back differ", when, len(want))
	}
}

func hasODirect(t *testing.T, s *streamFile) bool {
	t.Helper()
	raw, err := s.f.SyscallConn()
	must(t, err)
	var fl int
	var ferr error
	must(t, raw.Control(func(fd uintptr) { fl, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }))
	must(t, ferr)
	return fl&unix.O_DIRECT != 0
}

// A tail whose write failed is written by the next Sync, not taken for
// written: the write fails here because the process may not grow a file
// past 100 KiB (RLIMIT_FSIZE), until the limit is lifted.
func TestStreamFileRetriesAFailedTail(t *testing.T) {
	name := filepath.Join(t.TempDir(), "s")
	f, err := OSFS{}.CreateStream(name)
	must(t, err)
	defer f.Close()
	if _, ok := f.(*streamFile); !ok {
		t.Skip("this file system refuses direct I/O: a plain file, nothing gathered")
	}
	want := make([]byte, 300<<10)
	for i := range want {
		want[i] = byte(i * 7)
	}
	_, err = f.WriteAt(want, 0)
	must(t, err)

	lift := fsizelimit.Set(t, 100<<10)
	err = f.Sync()
	lift()
	if err == nil {
		t.Fatal("Sync wrote 300 KiB past a 100 KiB file size limit")
	}

	must(t, f.Sync())
	requireContents(t, f, want, "after the second Sync")
}
