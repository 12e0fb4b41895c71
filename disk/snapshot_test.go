package disk

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

func snapMeta(index, term uint64) core.SnapshotMeta {
	return core.SnapshotMeta{Index: index, Term: term, Conf: core.ConfState{
		Voters: []core.NodeID{1, 2, 3}, Learners: []core.NodeID{7},
	}}
}

func snapData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}

// saveSnapshot streams data into a new snapshot in uneven chunks.
func saveSnapshot(t failer, s *SnapshotStore, meta core.SnapshotMeta, data []byte) error {
	w, err := s.Create(meta)
	if err != nil {
		return err
	}
	for rest, chunk := data, 1; len(rest) > 0; chunk = chunk*3 + 1 {
		n := min(chunk, len(rest))
		if _, err := w.Write(rest[:n]); err != nil {
			w.Abort()
			return err
		}
		rest = rest[n:]
	}
	return w.Commit()
}

func loadAll(t *testing.T, s *SnapshotStore) (core.SnapshotMeta, []byte, []SkippedSnapshot, error) {
	t.Helper()
	snap, skipped, err := s.Load()
	if err != nil {
		return core.SnapshotMeta{}, nil, skipped, err
	}
	defer snap.Close()
	data, err := io.ReadAll(snap)
	if err != nil {
		return core.SnapshotMeta{}, nil, skipped, err
	}
	if int64(len(data)) != snap.Size {
		t.Fatalf("read %d bytes, Size says %d", len(data), snap.Size)
	}
	return snap.Meta, data, skipped, nil
}

func TestSnapshotRoundTrip(t *testing.T) {
	walFS(t, func(t *testing.T, fsys FS, dir string) {
		s, err := NewSnapshotStore(fsys, dir, 2)
		must(t, err)
		if _, _, err := s.Load(); !errors.Is(err, ErrNoSnapshot) {
			t.Fatalf("Load of an empty store: %v", err)
		}
		big := snapData(1, 3<<20+17) // larger than the write buffer
		must(t, saveSnapshot(t, s, snapMeta(10, 2), big))
		meta, data, skipped, err := loadAll(t, s)
		must(t, err)
		if !sameMeta(meta, snapMeta(10, 2)) || !bytes.Equal(data, big) || len(skipped) != 0 {
			t.Fatalf("loaded %+v, %d bytes (equal %v), skipped %v", meta, len(data), bytes.Equal(data, big), skipped)
		}
		// Empty data is a valid snapshot too.
		must(t, saveSnapshot(t, s, snapMeta(20, 3), nil))
		meta, data, _, err = loadAll(t, s)
		must(t, err)
		if meta.Index != 20 || len(data) != 0 {
			t.Fatalf("loaded %+v with %d bytes", meta, len(data))
		}
		// Keep 2, of those the log has moved past: Commit prunes nothing,
		// and a file above the log's start does not count among the Keep
		// (its marker may never have reached the WAL).
		must(t, saveSnapshot(t, s, snapMeta(30, 3), []byte("x")))
		all := []string{snapName(10, 2), snapName(20, 3), snapName(30, 3)}
		for _, c := range []struct {
			prune uint64
			want  []string
		}{{0, all}, {20, all}, {30, all[1:]}} {
			if c.prune > 0 {
				must(t, s.Prune(c.prune))
			}
			names, err := s.List()
			must(t, err)
			if !slices.Equal(names, c.want) {
				t.Fatalf("after Prune(%d): %v, want %v", c.prune, names, c.want)
			}
		}
	})
}

func TestSnapshotLoadAtMost(t *testing.T) {
	fsys := newTestMemFS(1)
	s, err := NewSnapshotStore(fsys, "/d/snap", 5)
	must(t, err)
	for _, i := range []uint64{10, 20, 30} {
		must(t, saveSnapshot(t, s, snapMeta(i, 1), []byte{byte(i)}))
	}
	for _, c := range []struct{ upTo, want uint64 }{{25, 20}, {30, 30}, {10, 10}, {1 << 62, 30}} {
		snap, skipped, err := s.LoadAtMost(c.upTo)
		must(t, err)
		if snap.Meta.Index != c.want || len(skipped) != 0 {
			t.Errorf("LoadAtMost(%d) = %d, skipped %v", c.upTo, snap.Meta.Index, skipped)
		}
		must(t, snap.Close())
	}
	if _, _, err := s.LoadAtMost(9); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("LoadAtMost below all: %v", err)
	}
}

func TestSnapshotWriterMisuse(t *testing.T) {
	fsys := newTestMemFS(1)
	s, err := NewSnapshotStore(fsys, "/d/snap", 1)
	must(t, err)
	w, err := s.Create(snapMeta(5, 1))
	must(t, err)
	_, err = w.Write([]byte("abandoned"))
	must(t, err)
	must(t, w.Abort())
	must(t, w.Abort()) // idempotent
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after Abort succeeded")
	}
	if err := w.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	names, err := fsys.ReadDir("/d/snap")
	must(t, err)
	if len(names) != 0 {
		t.Fatalf("Abort left %v", names)
	}
	// A failing write poisons the writer, and Commit cleans up.
	w, err = s.Create(snapMeta(6, 1))
	must(t, err)
	fsys.Faults.CapacityBytes = 1000
	_, err = w.Write(make([]byte, 1<<20))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write to a full disk: %v", err)
	}
	if err := w.Commit(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Commit after a failed write: %v", err)
	}
	fsys.Faults.CapacityBytes = 0
	if names, _ := fsys.ReadDir("/d/snap"); len(names) != 0 {
		t.Fatalf("failed snapshot left %v", names)
	}
}

// TestSnapshotFallbackOnDamage damages the newest snapshot in every way a
// single flipped bit can, and requires Load to fall back to the older one,
// exactly, reporting the newer as skipped with a CorruptionError.
func TestSnapshotFallbackOnDamage(t *testing.T) {
	fsys := newTestMemFS(2)
	s, err := NewSnapshotStore(fsys, "/d/snap", 3)
	must(t, err)
	old := snapData(2, 5000)
	newer := snapData(3, 7000)
	must(t, saveSnapshot(t, s, snapMeta(100, 4), old))
	must(t, saveSnapshot(t, s, snapMeta(200, 5), newer))
	newest := filepath.Join("/d/snap", snapName(200, 5))
	size := fileSize(t, fsys, newest)
	rng := rand.New(rand.NewPCG(4, 4))
	for i := range 2000 {
		off := rng.Int64N(size)
		if i < int(size) && i < 100 {
			off = int64(i) // every header byte at least once
		}
		if i >= 100 && i < 120 {
			off = size - 1 - int64(i-100) // and the trailer
		}
		bit := rng.UintN(8)
		must(t, fsys.FlipBit(newest, off, bit))
		meta, data, skipped, err := loadAll(t, s)
		must(t, err)
		if meta.Index != 100 || !bytes.Equal(data, old) {
			t.Fatalf("flip at %d: loaded snapshot %d (data equal %v)", off, meta.Index, bytes.Equal(data, old))
		}
		var ce *CorruptionError
		if len(skipped) != 1 || skipped[0].File != newest || !errors.As(skipped[0].Err, &ce) || ce.File != newest {
			t.Fatalf("flip at %d: skipped %v", off, skipped)
		}
		must(t, fsys.FlipBit(newest, off, bit))
	}
	meta, data, _, err := loadAll(t, s)
	must(t, err)
	if meta.Index != 200 || !bytes.Equal(data, newer) {
		t.Fatal("restored snapshot does not load")
	}

	// A read error is skipped the same way.
	must(t, fsys.SetReadError(newest, size/2, 1))
	meta, _, skipped, err := loadAll(t, s)
	must(t, err)
	if meta.Index != 100 || len(skipped) != 1 || !errors.Is(skipped[0].Err, syscall.EIO) {
		t.Fatalf("read error: loaded %d, skipped %v", meta.Index, skipped)
	}
	must(t, fsys.ClearReadErrors(newest))

	// Truncated, renamed and foreign files are damaged too.
	cases := map[string]func(){
		"truncated": func() {
			f, err := fsys.Open(newest)
			must(t, err)
			must(t, f.Truncate(size-3))
			must(t, f.Close())
		},
		"wrong name": func() { must(t, fsys.Rename(newest, filepath.Join("/d/snap", snapName(300, 5)))) },
		"tiny":       func() { rewrite(t, fsys, newest, []byte("KVALSNAP"), 0) },
		"foreign":    func() { rewrite(t, fsys, newest, bytes.Repeat([]byte("x"), 100), 0) },
	}
	for name, damage := range cases {
		fsys2 := newTestMemFS(3)
		s2, err := NewSnapshotStore(fsys2, "/d/snap", 3)
		must(t, err)
		must(t, saveSnapshot(t, s2, snapMeta(100, 4), old))
		must(t, saveSnapshot(t, s2, snapMeta(200, 5), newer))
		fsys, s = fsys2, s2
		damage()
		meta, _, skipped, err := loadAll(t, s)
		must(t, err)
		if meta.Index != 100 || len(skipped) != 1 || !errors.Is(skipped[0].Err, ErrCorrupt) {
			t.Fatalf("%s: loaded %d, skipped %v", name, meta.Index, skipped)
		}
	}
}

// TestSnapshotAllDamaged: with every snapshot damaged, Load reports each.
func TestSnapshotAllDamaged(t *testing.T) {
	fsys := newTestMemFS(2)
	s, err := NewSnapshotStore(fsys, "/d/snap", 3)
	must(t, err)
	for i := uint64(1); i <= 3; i++ {
		must(t, saveSnapshot(t, s, snapMeta(i, 1), snapData(i, 100)))
		_, err := fsys.FlipRandomBit(filepath.Join("/d/snap", snapName(i, 1)))
		must(t, err)
	}
	_, skipped, err := s.Load()
	if !errors.Is(err, ErrNoSnapshot) || len(skipped) != 3 || skipped[0].File != filepath.Join("/d/snap", snapName(3, 1)) {
		t.Fatalf("all damaged: %v, skipped %v", err, skipped)
	}
}

// TestSnapshotReaderRechecks: data that changes between Load's check and
// the read is caught by the reader itself.
func TestSnapshotReaderRechecks(t *testing.T) {
	fsys := newTestMemFS(2)
	s, err := NewSnapshotStore(fsys, "/d/snap", 1)
	must(t, err)
	must(t, saveSnapshot(t, s, snapMeta(1, 1), snapData(5, 10000)))
	snap, _, err := s.Load()
	must(t, err)
	defer snap.Close()
	must(t, fsys.FlipBit(snap.File, 5000, 1))
	_, err = io.ReadAll(snap)
	var ce *CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("reading changed data: %v", err)
	}
	must(t, fsys.SetReadError(snap.File, 0, 1<<20))
	snap2 := *snap
	snap2.data = io.NewSectionReader(snap.f, snap.dataOff, snap.Size)
	if _, err := io.ReadAll(&snap2); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read error while streaming: %v", err)
	}
}

// TestSnapshotCrashAtEveryPoint crashes while a second snapshot is being
// written and installed, at every mutating file operation and with each
// crash behaviour. Afterwards Load must return one of the two snapshots,
// whole, and the new one if Commit returned; and no temporary file may
// remain once the store is reopened.
func TestSnapshotCrashAtEveryPoint(t *testing.T) {
	old, newer := snapData(8, 3000), snapData(9, 600<<10)
	configs := []MemFaults{{}, {PartialFlush: true}, {PartialFlush: true, TornWrites: true}, {TornWrites: true}}
	sawOld, sawNew := 0, 0
	for crashAt := 1; ; crashAt++ {
		finished := false
		for ci, faults := range configs {
			m := NewMemFS(rand.New(rand.NewPCG(uint64(crashAt), uint64(ci))))
			s, err := NewSnapshotStore(m, "/n/snap", 1)
			must(t, err)
			must(t, saveSnapshot(t, s, snapMeta(10, 1), old))
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
			err = saveSnapshot(t, s, snapMeta(20, 2), newer)
			if err != nil && !crashed {
				t.Fatalf("crash at %d: save failed without a crash: %v", crashAt, err)
			}
			committed := err == nil
			if !crashed {
				m.Intercept = nil
				m.Crash()
				finished = true
			}
			s, err = NewSnapshotStore(m, "/n/snap", 1)
			must(t, err)
			meta, data, _, err := loadAll(t, s)
			must(t, err)
			switch {
			case meta.Index == 20 && bytes.Equal(data, newer):
				sawNew++
			case meta.Index == 10 && bytes.Equal(data, old) && !committed:
				sawOld++
			default:
				t.Fatalf("crash at %d (faults %+v, committed %v): loaded snapshot %d (%d bytes)", crashAt, faults, committed, meta.Index, len(data))
			}
			if names, _ := m.ReadDir("/n/snap"); slices.ContainsFunc(names, func(n string) bool { return filepath.Ext(n) == tmpExt }) {
				t.Fatalf("crash at %d: temporary file left after reopening: %v", crashAt, names)
			}
		}
		if finished {
			break
		}
	}
	if sawOld == 0 || sawNew == 0 {
		t.Errorf("crash points loaded old %d times and new %d times", sawOld, sawNew)
	}
}

// TestSnapshotWriteFaults writes snapshots through a disk that misdirects
// or corrupts writes: Load returns the new snapshot exactly, or skips it as
// damaged and returns the old one.
func TestSnapshotWriteFaults(t *testing.T) {
	old := snapData(10, 2000)
	detected := 0
	for seed := range uint64(200) {
		m := NewMemFS(rand.New(rand.NewPCG(seed, 11)))
		s, err := NewSnapshotStore(m, "/n/snap", 2)
		must(t, err)
		must(t, saveSnapshot(t, s, snapMeta(10, 1), old))
		if seed%2 == 0 {
			m.Faults.MisdirectProb = 0.2
		} else {
			m.Faults.BitFlipProb = 0.2
		}
		newer := snapData(seed, 1000+int(seed)*37)
		must(t, saveSnapshot(t, s, snapMeta(20, 2), newer))
		m.Faults = MemFaults{}
		meta, data, skipped, err := loadAll(t, s)
		must(t, err)
		inj := m.Injected()
		switch {
		case meta.Index == 20 && bytes.Equal(data, newer) && inj.MisdirectedWrites+inj.FlippedWrites == 0:
		case meta.Index == 10 && bytes.Equal(data, old) && len(skipped) == 1:
			detected++
		default:
			t.Fatalf("seed %d: loaded %d (%d bytes) after %+v", seed, meta.Index, len(data), inj)
		}
	}
	if detected == 0 {
		t.Error("no write fault detected")
	}
}

func TestSnapshotStoreCleansTempFiles(t *testing.T) {
	fsys := newTestMemFS(1)
	must(t, fsys.MkdirAll("/d/snap"))
	writeFile(t, fsys, "/d/snap/"+snapName(1, 1)+tmpExt, []byte("half"), true)
	writeFile(t, fsys, "/d/snap/notes.txt", []byte("keep"), true)
	_, err := NewSnapshotStore(fsys, "/d/snap", 1)
	must(t, err)
	names, err := fsys.ReadDir("/d/snap")
	must(t, err)
	if !slices.Equal(names, []string{"notes.txt"}) {
		t.Fatalf("after opening: %v", names)
	}
	if _, err := NewSnapshotStore(fsys, "/d/snap/notes.txt/x", 1); err == nil {
		t.Fatal("store under a file succeeded")
	}
	if _, err := fsys.Open("/d/snap/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}

func TestSnapshotNames(t *testing.T) {
	if n := snapName(0x10, 0x2); n != "0000000000000010-0000000000000002.snap" {
		t.Fatal(n)
	}
	for _, bad := range []string{"10-2.snap", "0000000000000010-0000000000000002.snp", "0000000000000010_0000000000000002.snap",
		"000000000000001g-0000000000000002.snap"} {
		if _, _, ok := parseSnapName(bad); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}
