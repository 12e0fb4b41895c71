package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"
)

func newTestMemFS(seed uint64) *MemFS {
	m := NewMemFS(rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)))
	if err := m.MkdirAll("/d"); err != nil {
		panic(err)
	}
	return m
}

// contents reads a whole file, or returns nil if it does not exist.
func contents(t failer, fsys FS, name string) []byte {
	t.Helper()
	f, err := fsys.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := readWhole(f, nil)
	must(t, err)
	return b
}

func writeFile(t failer, fsys FS, name string, data []byte, sync bool) File {
	t.Helper()
	f, err := fsys.Create(name)
	must(t, err)
	_, err = f.WriteAt(data, 0)
	must(t, err)
	if sync {
		must(t, f.Sync())
	}
	return f
}

func TestMemFSCrashLosesUnsynced(t *testing.T) {
	m := newTestMemFS(1)
	f := writeFile(t, m, "/d/a", []byte("synced"), true)
	must(t, m.SyncDir("/d"))
	_, err := f.WriteAt([]byte("-lost"), 6)
	must(t, err)
	must(t, f.Truncate(3)) // also unsynced

	h := writeFile(t, m, "/d/c", []byte("c"), true)
	must(t, m.SyncDir("/d"))
	writeFile(t, m, "/d/b", []byte("data synced, name not"), true)
	must(t, m.Remove("/d/c"))               // unsynced removal
	must(t, m.Rename("/d/a", "/d/renamed")) // unsynced rename

	m.Crash()
	if got := contents(t, m, "/d/a"); string(got) != "synced" {
		t.Errorf("a = %q, want the synced contents", got)
	}
	if got := contents(t, m, "/d/b"); got != nil {
		t.Errorf("b survived without a directory sync: %q", got)
	}
	if got := contents(t, m, "/d/c"); string(got) != "c" {
		t.Errorf("c = %q, want it back (removal never synced)", got)
	}
	if got := contents(t, m, "/d/renamed"); got != nil {
		t.Errorf("rename survived without a directory sync")
	}
	names, err := m.ReadDir("/d")
	must(t, err)
	if !slices.Equal(names, []string{"a", "c"}) {
		t.Errorf("after crash /d lists %v", names)
	}
	// Handles from before the crash are dead.
	if _, err := h.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrCrashed) {
		t.Errorf("old handle read: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("closing an old handle: %v", err)
	}
}

func TestMemFSDirSyncMakesRenameDurable(t *testing.T) {
	m := newTestMemFS(1)
	f := writeFile(t, m, "/d/tmp", []byte("x"), true)
	must(t, f.Close())
	must(t, m.Rename("/d/tmp", "/d/final"))
	must(t, m.SyncDir("/d"))
	must(t, m.MkdirAll("/e"))
	must(t, m.Rename("/d/final", "/e/moved")) // across directories
	must(t, m.SyncDir("/e"))                  // only the new name is durable
	m.Crash()
	if string(contents(t, m, "/d/final")) != "x" || string(contents(t, m, "/e/moved")) != "x" {
		t.Errorf("cross-directory rename: halves not durable independently")
	}
}

// TestMemFSPartialFlushAndTornWrites checks that whatever a crash leaves of
// unsynced writes is the synced state plus a prefix of the writes, the last
// surviving one possibly cut short (and possibly zero-filled).
func TestMemFSPartialFlushAndTornWrites(t *testing.T) {
	outcomes := map[string]bool{}
	for seed := range uint64(300) {
		m := newTestMemFS(seed)
		m.Faults.PartialFlush = true
		m.Faults.TornWrites = true
		f := writeFile(t, m, "/d/log", []byte("base."), true)
		must(t, m.SyncDir("/d"))
		writes := []string{"one.", "two.", "three."}
		off := int64(5)
		for _, w := range writes {
			_, err := f.WriteAt([]byte(w), off)
			must(t, err)
			off += int64(len(w))
		}
		m.Crash()
		got := contents(t, m, "/d/log")
		full := []byte("base.one.two.three.")
		if len(got) < 5 || !bytes.HasPrefix(got, []byte("base.")) {
			t.Fatalf("seed %d: synced prefix lost: %q", seed, got)
		}
		// got = a prefix of full, then only zeros.
		i := 0
		for i < len(got) && i < len(full) && got[i] == full[i] {
			i++
		}
		for _, c := range got[i:] {
			if c != 0 {
				t.Fatalf("seed %d: %q is not a prefix of %q followed by zeros", seed, got, full)
			}
		}
		outcomes[fmt.Sprintf("%d/%d", i, len(got))] = true
	}
	// The faults must actually produce a variety of outcomes: whole writes,
	// torn ones, zero-filled ones.
	if len(outcomes) < 10 {
		t.Errorf("only %d distinct crash outcomes: %v", len(outcomes), outcomes)
	}
}

func TestMemFSDeterministic(t *testing.T) {
	run := func() []byte {
		m := newTestMemFS(42)
		m.Faults = MemFaults{PartialFlush: true, TornWrites: true, BitFlipProb: 0.3, MisdirectProb: 0.2}
		f := writeFile(t, m, "/d/x", nil, true)
		must(t, m.SyncDir("/d"))
		for i := range 50 {
			_, err := f.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 100), int64(i*100))
			must(t, err)
			if i%7 == 0 {
				must(t, f.Sync())
			}
		}
		m.Crash()
		return contents(t, m, "/d/x")
	}
	if a, b := run(), run(); !bytes.Equal(a, b) {
		t.Fatal("same seed, different outcome")
	}
}

func TestMemFSFlipBit(t *testing.T) {
	m := newTestMemFS(1)
	f := writeFile(t, m, "/d/x", []byte{0, 0, 0, 0}, true)
	must(t, m.SyncDir("/d"))
	_, err := f.WriteAt([]byte{0, 0}, 4) // unsynced
	must(t, err)
	must(t, m.FlipBit("/d/x", 1, 3))
	must(t, m.FlipBit("/d/x", 5, 0))
	if got := contents(t, m, "/d/x"); !bytes.Equal(got, []byte{0, 8, 0, 0, 0, 1}) {
		t.Fatalf("after flips: %v", got)
	}
	m.Faults.PartialFlush = true
	m.Crash() // the flip is in the stored bytes: it survives, whatever else does
	if got := contents(t, m, "/d/x"); got[1] != 8 || (len(got) == 6 && got[5] != 1) {
		t.Fatalf("after crash: %v", got)
	}
	off, err := m.FlipRandomBit("/d/x")
	must(t, err)
	if off < 0 || off >= int64(len(contents(t, m, "/d/x"))) {
		t.Fatalf("random flip at %d", off)
	}
	if err := m.FlipBit("/d/x", 100, 0); err == nil {
		t.Error("flip beyond the end succeeded")
	}
	if err := m.FlipBit("/d/missing", 0, 0); err == nil {
		t.Error("flip in a missing file succeeded")
	}
	writeFile(t, m, "/d/empty", nil, false)
	if _, err := m.FlipRandomBit("/d/empty"); err == nil {
		t.Error("flip in an empty file succeeded")
	}
	if _, err := m.FlipRandomBit("/d/missing"); err == nil {
		t.Error("flip in a missing file succeeded")
	}
}

func TestMemFSWriteFaults(t *testing.T) {
	m := newTestMemFS(7)
	m.Faults.BitFlipProb = 1
	f := writeFile(t, m, "/d/x", make([]byte, 64), false)
	got := contents(t, m, "/d/x")
	ones := 0
	for _, c := range got {
		for ; c != 0; c &= c - 1 {
			ones++
		}
	}
	if ones != 1 {
		t.Errorf("BitFlipProb=1: %d bits set in a zero write, want 1", ones)
	}
	m.Faults.BitFlipProb = 0
	m.Faults.MisdirectProb = 1
	_, err := f.WriteAt([]byte("needle"), 1000)
	must(t, err)
	got = contents(t, m, "/d/x")
	at := bytes.Index(got, []byte("needle"))
	if at < 0 || at == 1000 {
		t.Errorf("misdirected write landed at %d", at)
	}
}

func TestMemFSReadErrors(t *testing.T) {
	m := newTestMemFS(3)
	f := writeFile(t, m, "/d/x", make([]byte, 100), true)
	must(t, m.SetReadError("/d/x", 50, 10))
	p := make([]byte, 10)
	if _, err := f.ReadAt(p, 0); err != nil {
		t.Errorf("read outside the bad range: %v", err)
	}
	if _, err := f.ReadAt(p, 55); !errors.Is(err, syscall.EIO) {
		t.Errorf("read inside the bad range: %v", err)
	}
	must(t, m.Rename("/d/x", "/d/y")) // the bad range moves with the file
	if _, err := f.ReadAt(p, 45); !errors.Is(err, syscall.EIO) {
		t.Errorf("read overlapping the bad range: %v", err)
	}
	must(t, m.ClearReadErrors("/d/y"))
	if _, err := f.ReadAt(p, 55); err != nil {
		t.Errorf("read after clearing: %v", err)
	}
	if m.SetReadError("/d/missing", 0, 1) == nil || m.ClearReadErrors("/d/missing") == nil {
		t.Error("read faults on a missing file accepted")
	}
	m.Faults.ReadErrorProb = 1
	if _, err := f.ReadAt(p, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("ReadErrorProb=1: %v", err)
	}
}

func TestMemFSCapacity(t *testing.T) {
	m := newTestMemFS(1)
	m.Faults.CapacityBytes = 100
	f := writeFile(t, m, "/d/a", make([]byte, 60), false)
	g, err := m.Create("/d/b")
	must(t, err)
	n, err := g.WriteAt(make([]byte, 50), 0)
	if n != 40 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write past capacity = %d, %v; want 40, ENOSPC", n, err)
	}
	// Overwriting in place needs no space.
	if _, err := f.WriteAt(make([]byte, 60), 0); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	if n, err := g.WriteAt([]byte{1}, 40); n != 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write on a full disk = %d, %v", n, err)
	}
	must(t, m.Remove("/d/a")) // frees space
	if _, err := g.WriteAt([]byte{1}, 40); err != nil {
		t.Fatalf("write after freeing space: %v", err)
	}
}

func TestMemFSLatencyAndIntercept(t *testing.T) {
	m := newTestMemFS(1)
	var ops []string
	m.Faults.Latency = func(op Op, name string, n int) time.Duration {
		if op == OpSync {
			return 5 * time.Millisecond
		}
		return time.Duration(n) * time.Microsecond
	}
	m.Intercept = func(op Op, name string) error {
		ops = append(ops, op.String())
		if op == OpRemove {
			return errors.New("injected")
		}
		return nil
	}
	f := writeFile(t, m, "/d/x", make([]byte, 10), true)
	_, err := f.ReadAt(make([]byte, 4), 0)
	must(t, err)
	if got, want := m.TakeElapsed(), 5*time.Millisecond+14*time.Microsecond; got != want {
		t.Errorf("elapsed %v, want %v", got, want)
	}
	if m.TakeElapsed() != 0 {
		t.Error("TakeElapsed did not reset")
	}
	if err := m.Remove("/d/x"); err == nil || err.Error() != "injected" {
		t.Errorf("intercepted remove: %v", err)
	}
	if contents(t, m, "/d/x") == nil {
		t.Error("intercepted remove took effect")
	}
	if want := []string{"create", "write", "sync", "read", "remove"}; !slices.Equal(ops[:5], want) {
		t.Errorf("intercepted %v, want %v", ops[:5], want)
	}
}

func TestMemFSMisc(t *testing.T) {
	if OpSync.String() != "sync" || Op(99).String() != "Op(99)" {
		t.Error("Op.String")
	}
	if !OpWriteAt.Mutates() || OpReadAt.Mutates() {
		t.Error("Op.Mutates")
	}
	m := NewMemFS(nil) // nil rng: a fixed default
	f := writeFile(t, m, "rel", []byte("x"), true)
	must(t, f.Close())
	if _, err := m.Open("."); err == nil {
		t.Error("opening a directory as a file succeeded")
	}
	if err := m.Rename("rel", "."); err == nil {
		t.Error("renaming onto a directory succeeded")
	}
	if err := m.Rename("rel", "nodir/x"); err == nil {
		t.Error("renaming into a missing directory succeeded")
	}
	if err := m.Remove("/"); err == nil {
		t.Error("removing the root succeeded")
	}
	g, err := m.Open("rel")
	must(t, err)
	p := make([]byte, 4)
	if n, err := g.ReadAt(p, 0); n != 1 || err != io.EOF {
		t.Errorf("short read = %d, %v", n, err)
	}
}

// A synced write that never reached the platter reads as zeros after a
// crash when a later synced write lies past it; the last write of a file
// is not modelled as lost (LostWriteProb).
func TestMemFSLostWrites(t *testing.T) {
	m := NewMemFS(rand.New(rand.NewPCG(1, 2)))
	must(t, m.MkdirAll("/d"))
	f, err := m.Create("/d/f")
	must(t, err)
	m.Faults.LostWriteProb = 1
	_, err = f.WriteAt([]byte("aaaa"), 0)
	must(t, err)
	must(t, f.Sync())
	m.Faults.LostWriteProb = 0
	_, err = f.WriteAt([]byte("bbbb"), 4)
	must(t, err)
	must(t, f.Sync())
	must(t, m.SyncDir("/d"))
	if got := readFile(t, m, "/d/f"); string(got) != "aaaabbbb" {
		t.Fatalf("before the crash the file reads %q", got)
	}
	m.Crash()
	if got := readFile(t, m, "/d/f"); !bytes.Equal(got, []byte("\x00\x00\x00\x00bbbb")) {
		t.Fatalf("after the crash the file reads %q, want the lost write zeroed", got)
	}
	if m.Injected().LostWrites != 1 {
		t.Fatalf("counted %d lost writes", m.Injected().LostWrites)
	}

	// The last write lost, nothing after it: not modelled.
	g, err := m.Create("/d/g")
	must(t, err)
	must(t, m.SyncDir("/d"))
	m.Faults.LostWriteProb = 1
	_, err = g.WriteAt([]byte("cccc"), 0)
	must(t, err)
	must(t, g.Sync())
	m.Crash()
	if got := readFile(t, m, "/d/g"); string(got) != "cccc" {
		t.Fatalf("a lost last write read back as %q", got)
	}
}

// With LoseLastWrite a crash may take, instead of the writes with durable
// data past them, one file's last synced write (whether or not
// LostWriteProb chose it): the file then ends where the write began, or
// reads zeros there. Never both in one crash.
func TestMemFSLoseLastWrite(t *testing.T) {
	lostLast, lostMiddle := 0, 0
	for seed := range uint64(16) {
		m := NewMemFS(rand.New(rand.NewPCG(seed, 2)))
		must(t, m.MkdirAll("/d"))
		var files []File
		for _, name := range []string{"/d/a", "/d/b", "/d/c"} {
			f, err := m.Create(name)
			must(t, err)
			files = append(files, f)
		}
		must(t, m.SyncDir("/d"))
		// a and b: a last write that may be lost; c: a lost write with a
		// synced one after it.
		for i, f := range files {
			_, err := f.WriteAt([]byte("kept"), 0)
			must(t, err)
			must(t, f.Sync())
			m.Faults.LostWriteProb, m.Faults.LoseLastWrite = 1, true
			_, err = f.WriteAt([]byte("lost"), 4)
			must(t, err)
			must(t, f.Sync())
			m.Faults.LostWriteProb = 0
			if i == 2 {
				_, err = f.WriteAt([]byte("after"), 8)
				must(t, err)
				must(t, f.Sync())
			}
		}
		m.Crash()
		last := 0
		for _, name := range []string{"/d/a", "/d/b"} {
			switch got := readFile(t, m, name); string(got) {
			case "keptlost":
			case "kept", "kept\x00\x00\x00\x00":
				last++
			default:
				t.Fatalf("seed %d: %s reads %q after the crash", seed, name, got)
			}
		}
		middle := 0
		switch got := readFile(t, m, "/d/c"); string(got) {
		case "keptlostafter":
		case "kept\x00\x00\x00\x00after":
			middle++
		case "keptlost", "keptlost\x00\x00\x00\x00\x00":
			last++
		default:
			t.Fatalf("seed %d: c reads %q after the crash", seed, got)
		}
		if last+middle != 1 || m.Injected().LostWrites != 1 {
			t.Fatalf("seed %d: %d last writes and %d others lost (counted %d), want one of them", seed, last, middle, m.Injected().LostWrites)
		}
		lostLast += last
		lostMiddle += middle
	}
	if lostLast == 0 || lostMiddle == 0 {
		t.Fatalf("in 16 crashes %d lost a last write and %d another", lostLast, lostMiddle)
	}
}
