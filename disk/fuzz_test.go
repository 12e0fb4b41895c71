package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// Fuzz targets for the two decoders that read bytes from disk. Their seed
// corpora live in testdata/fuzz/; TestWriteFuzzCorpus regenerates them.
//
//	go test ./disk/ -run '^$' -fuzz FuzzWALDecode -fuzztime 10s
//	go test ./disk/ -run '^$' -fuzz FuzzSnapshotReader -fuzztime 10s

const fuzzSegment = "/f/wal/0000000000000001.wal"

// FuzzWALDecode feeds arbitrary bytes to the record decoder and to recovery
// of a one-segment WAL. Neither may panic; a decoded record must re-encode
// to the same bytes; recovery must fail with a CorruptionError or succeed,
// and a successful recovery must be stable (a second Open returns the same
// state with nothing more to cut).
func FuzzWALDecode(f *testing.F) {
	for _, seed := range walFuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := decodeFrame(data, seedFor(1), 0)
		if fr.status == frameOK {
			again, err := appendFrame(nil, seedFor(1), 0, fr.typ, fr.payload)
			if err != nil || !bytes.Equal(again, data[:fr.size]) {
				t.Fatalf("decoded record does not re-encode to its bytes: %v", err)
			}
		}
		if fr.status != frameOK {
			isTornTail(data, fr) // must not panic either
		}

		m := NewMemFS(nil)
		must(t, m.MkdirAll("/f/wal"))
		writeFile(t, m, fuzzSegment, data, true)
		_, rec, err := Open(m, "/f/wal", Options{})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("recovery failed with a non-corruption error: %v", err)
			}
			// Keeping the log around the damage must not panic either,
			// and a hole is an entry it returns without data.
			w, kept, kerr := OpenKeepingHoles(m, "/f/wal", Options{})
			if kerr != nil {
				if !errors.Is(kerr, ErrCorrupt) {
					t.Fatalf("keeping the log failed with a non-corruption error: %v", kerr)
				}
				return
			}
			must(t, w.Close())
			all := append(slices.Clone(kept.Compacted), kept.Entries...)
			for _, i := range kept.Holes {
				k := slices.IndexFunc(all, func(e core.Entry) bool { return e.Index == i })
				if k < 0 || len(all[k].Data) > 0 {
					t.Fatalf("hole %d: not an entry without data among %v", i, all)
				}
			}
			return
		}
		_, rec2, err := Open(m, "/f/wal", Options{})
		if err != nil || rec2.TornTail != nil || !stateOf(rec).equal(stateOf(rec2)) {
			t.Fatalf("second recovery differs: %v, torn %v", err, rec2.TornTail)
		}
	})
}

// FuzzSnapshotReader feeds arbitrary bytes to the snapshot reader as the
// file of snapshot (5, 2). It may not panic; if it accepts the file, the
// data must read back without error and writing the same snapshot again must
// produce the very same bytes.
func FuzzSnapshotReader(f *testing.F) {
	for _, seed := range snapFuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := NewMemFS(nil)
		s, err := NewSnapshotStore(m, "/f/snap", 1)
		must(t, err)
		name := snapName(5, 2)
		writeFile(t, m, filepath.Join("/f/snap", name), data, true)
		snap, err := s.Open(name)
		if err != nil {
			return
		}
		defer snap.Close()
		got, err := io.ReadAll(snap)
		if err != nil {
			t.Fatalf("verified snapshot fails to read: %v", err)
		}
		m2 := NewMemFS(nil)
		s2, err := NewSnapshotStore(m2, "/f/snap", 1)
		must(t, err)
		must(t, saveSnapshot(t, s2, snap.Meta, got))
		if again := contents(t, m2, filepath.Join("/f/snap", name)); !bytes.Equal(again, data) {
			t.Fatalf("accepted snapshot does not re-encode to its bytes")
		}
	})
}

// walFuzzSeeds are segment images: a clean one, and the same torn and
// damaged in typical ways.
func walFuzzSeeds(t failer) [][]byte {
	m := NewMemFS(nil)
	w, err := Create(m, "/f/wal", Options{})
	must(t, err)
	must(t, w.InstallSnapshot(core.SnapshotMeta{Conf: core.ConfState{Voters: []core.NodeID{1, 2, 3}}}))
	must(t, w.Append(core.HardState{Term: 1, Vote: 1, Commit: 1}, []core.Entry{
		{Term: 1, Index: 1, Data: []byte("a")}, {Term: 1, Index: 2, Type: core.EntryConfChange, Data: []byte("cc")},
	}))
	must(t, w.MarkCompacted(core.SnapshotMeta{Index: 1, Term: 1}))
	must(t, w.Append(core.HardState{}, []core.Entry{{Term: 2, Index: 2, Data: []byte("b")}}))
	must(t, w.Close())
	clean := contents(t, m, fuzzSegment)
	flipped := bytes.Clone(clean)
	flipped[len(flipped)/2] ^= 4
	zeroTail := bytes.Clone(clean)
	clear(zeroTail[len(zeroTail)-10:])
	return [][]byte{
		clean,
		clean[:len(clean)-7], // torn inside the last record
		append(bytes.Clone(clean), make([]byte, 64)...), // zero-filled tail
		zeroTail,
		flipped,
		clean[:headerSize], // start record cut
		{},
	}
}

func snapFuzzSeeds(t failer) [][]byte {
	var seeds [][]byte
	for _, data := range [][]byte{nil, []byte("state machine bytes"), bytes.Repeat([]byte{7}, 1000)} {
		m := NewMemFS(nil)
		s, err := NewSnapshotStore(m, "/f/snap", 1)
		must(t, err)
		must(t, saveSnapshot(t, s, snapMeta(5, 2), data))
		seeds = append(seeds, contents(t, m, filepath.Join("/f/snap", snapName(5, 2))))
	}
	damaged := bytes.Clone(seeds[1])
	damaged[len(damaged)-20] ^= 1
	return append(seeds, damaged, seeds[1][:30], []byte(snapMagic))
}

// TestWriteFuzzCorpus regenerates the committed seed corpora when
// KEYVAL_WRITE_FUZZ_CORPUS=1 (after a format change).
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("KEYVAL_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("set KEYVAL_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz")
	}
	write := func(target string, seeds [][]byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		must(t, os.MkdirAll(dir, 0o755))
		for i, s := range seeds {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
			must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644))
		}
	}
	write("FuzzWALDecode", walFuzzSeeds(t))
	write("FuzzSnapshotReader", snapFuzzSeeds(t))
}
