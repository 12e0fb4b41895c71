package disk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
)

// builtWAL is a WAL written by a whole workload and synced at the end.
type builtWAL struct {
	fs     *MemFS
	ops    []walOp
	states []walState
	segs   []string // segment paths
	// injected counts the write faults the workload went through.
	injected MemFaultCounts
}

const corruptDir = "/c/wal"

var corruptOpts = Options{SegmentSize: 2048}

func buildWAL(t *testing.T, seed uint64, nops int, faults MemFaults) builtWAL {
	return buildWALOps(t, seed, nops, faults, true)
}

// buildWALOps is buildWAL, optionally without the workload's releases.
func buildWALOps(t *testing.T, seed uint64, nops int, faults MemFaults, releases bool) builtWAL {
	t.Helper()
	ops, states := genWorkload(rand.New(rand.NewPCG(seed, 5)), nops)
	if !releases {
		ops = slices.DeleteFunc(ops, func(o walOp) bool { return o.kind == wopRelease })
	}
	m := NewMemFS(rand.New(rand.NewPCG(seed, 6)))
	w, err := Create(m, corruptDir, corruptOpts)
	must(t, err)
	m.Faults = faults
	if res := runWorkload(w, append(ops, walOp{kind: wopSync})); res.err != nil {
		t.Fatal(res.err)
	}
	must(t, w.Close())
	m.Faults = MemFaults{}
	b := builtWAL{fs: m, ops: ops, states: states, injected: m.Injected()}
	for _, n := range w.Segments() {
		b.segs = append(b.segs, filepath.Join(corruptDir, n))
	}
	return b
}

func (b builtWAL) final() walState { return b.states[len(b.states)-1] }

// open recovers and classifies the result: a *CorruptionError, or a state.
func (b builtWAL) open(t *testing.T) (walState, *Recovered, *CorruptionError) {
	t.Helper()
	_, rec, err := Open(b.fs, corruptDir, corruptOpts)
	var ce *CorruptionError
	if errors.As(err, &ce) {
		return walState{}, nil, ce
	}
	if err != nil {
		t.Fatalf("Open failed with a non-corruption error: %v", err)
	}
	return stateOf(rec), rec, nil
}

func fileSize(t *testing.T, fsys FS, name string) int64 {
	f, err := fsys.Open(name)
	must(t, err)
	defer f.Close()
	n, err := f.Size()
	must(t, err)
	return n
}

// TestWALSingleBitFlipAlwaysDetected flips one bit anywhere in a synced WAL
// and requires a CorruptionError naming the file and an offset at or before
// the flipped byte: a single flipped bit is never mistaken for a torn tail,
// not even in the last record of the last segment.
func TestWALSingleBitFlipAlwaysDetected(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	cases := 0
	for seed := range uint64(10) {
		b := buildWAL(t, seed, 60, MemFaults{})
		if got, _, ce := b.open(t); ce != nil || !got.equal(b.final()) {
			t.Fatalf("seed %d: clean WAL: %v %v", seed, got, ce)
		}
		for range 300 {
			seg := b.segs[rng.IntN(len(b.segs))]
			if rng.IntN(4) == 0 {
				seg = b.segs[len(b.segs)-1] // the tail is the interesting case
			}
			size := fileSize(t, b.fs, seg)
			off := rng.Int64N(size)
			if rng.IntN(4) == 0 {
				off = size - 1 - rng.Int64N(min(size, 40)) // the very last record
			}
			bit := rng.UintN(8)
			must(t, b.fs.FlipBit(seg, off, bit))
			_, _, ce := b.open(t)
			if ce == nil {
				t.Fatalf("seed %d: flipped bit %d of byte %d of %s: not detected", seed, bit, off, seg)
			}
			if ce.File != seg || ce.Offset > off {
				t.Fatalf("seed %d: flipped byte %d of %s: error names %s offset %d", seed, off, seg, ce.File, ce.Offset)
			}
			must(t, b.fs.FlipBit(seg, off, bit))
			cases++
		}
		if got, _, ce := b.open(t); ce != nil || !got.equal(b.final()) {
			t.Fatalf("seed %d: after restoring the bits: %v %v", seed, got, ce)
		}
	}
	t.Logf("%d single-bit flips, all detected", cases)
}

// TestWALMultiBitFlips flips several random bits: recovery must report
// corruption or, if by chance nothing that matters changed, return exactly
// the written log. Never anything else.
func TestWALMultiBitFlips(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	detected := 0
	for seed := range uint64(100) {
		b := buildWAL(t, 100+seed, 40, MemFaults{})
		for range 1 + rng.IntN(8) {
			seg := b.segs[rng.IntN(len(b.segs))]
			_, err := b.fs.FlipRandomBit(seg)
			must(t, err)
		}
		got, _, ce := b.open(t)
		if ce != nil {
			detected++
			continue
		}
		if !got.equal(b.final()) {
			t.Fatalf("seed %d: bit flips produced wrong data: %v, want %v", seed, got, b.final())
		}
	}
	if detected == 0 {
		t.Error("no flips detected at all")
	}
}

// TestWALWriteFaults writes whole workloads through a disk that misdirects
// writes or stores them with a flipped bit, and syncs at the end: recovery
// must return the whole log or report corruption. Without releases every
// injected fault must be reported; with them, a fault may have landed in a
// segment that was deleted since.
func TestWALWriteFaults(t *testing.T) {
	configs := []struct {
		name   string
		faults MemFaults
	}{
		{"misdirect", MemFaults{MisdirectProb: 0.05}},
		{"bitflip", MemFaults{BitFlipProb: 0.05}},
	}
	for _, c := range configs {
		for _, releases := range []bool{false, true} {
			detected, clean, faulty := 0, 0, 0
			for seed := range uint64(150) {
				b := buildWALOps(t, 200+seed, 60, c.faults, releases)
				injected := b.injected.MisdirectedWrites + b.injected.FlippedWrites
				if injected > 0 {
					faulty++
				}
				got, _, ce := b.open(t)
				if ce != nil {
					detected++
					continue
				}
				if !got.equal(b.final()) {
					t.Fatalf("%s seed %d: faulty writes produced wrong data: %v, want %v", c.name, seed, got, b.final())
				}
				if injected > 0 && !releases && !sameFiles(t, b, buildWALOps(t, 200+seed, 60, MemFaults{}, false)) {
					// (A fault that landed in zeros written ahead of the
					// records, and was written over, left no trace.)
					t.Fatalf("%s seed %d: %d faulty writes went unnoticed", c.name, seed, injected)
				}
				clean++
			}
			t.Logf("%s (releases %v): %d of 150 runs had faults injected; %d reported corruption, %d recovered the whole log",
				c.name, releases, faulty, detected, clean)
			if detected == 0 {
				t.Errorf("%s: never detected", c.name)
			}
		}
	}
}

// sameFiles reports whether two built WALs' segment files hold the same bytes.
func sameFiles(t *testing.T, a, b builtWAL) bool {
	if !slices.Equal(a.segs, b.segs) {
		return false
	}
	for _, name := range a.segs {
		if !bytes.Equal(contents(t, a.fs, name), contents(t, b.fs, name)) {
			return false
		}
	}
	return true
}

// recordsOf returns a segment's image without the zeros written ahead of
// its records.
func recordsOf(image []byte) []byte { return image[:RecordsEnd(image)] }

// TestWALTornTails cuts the last segment at every kind of point, with and
// without a zero-filled remainder, and requires recovery to return exactly
// the records that lie wholly before the cut.
func TestWALTornTails(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	for seed := range uint64(20) {
		b := buildWAL(t, 300+seed, 80, MemFaults{})
		seg := b.segs[len(b.segs)-1]
		image := recordsOf(contents(t, b.fs, seg))
		bounds := recordBounds(t, image, seg)
		before := recordsBefore(t, b, image)
		for range 50 {
			cut := bounds[0] + rng.Int64N(int64(len(image))-bounds[0]+1)
			zeros := int64(0)
			if rng.IntN(2) == 0 {
				zeros = rng.Int64N(3000)
			}
			rewrite(t, b.fs, seg, image[:cut], zeros)
			got, rec, ce := b.open(t)
			if ce != nil {
				t.Fatalf("seed %d: cut at %d (+%d zeros) of %d: %v", seed, cut, zeros, len(image), ce)
			}
			kept := int64(0)
			for _, e := range bounds {
				if e <= cut {
					kept = e
				}
			}
			// Nothing but zeros after the last whole record is the clean
			// end of a segment written with zeros ahead; its file is left
			// as it is.
			clean, wantSize := kept == cut, kept
			if clean {
				wantSize = cut + zeros
			}
			if clean != (rec.TornTail == nil) {
				t.Fatalf("seed %d: cut at %d (+%d zeros), kept %d: torn tail %+v", seed, cut, zeros, kept, rec.TornTail)
			}
			if size := fileSize(t, b.fs, seg); size != wantSize {
				t.Fatalf("seed %d: cut at %d (+%d zeros): file left at %d bytes, want %d", seed, cut, zeros, size, wantSize)
			}
			// The recovered state is the one the model had after exactly the
			// records that survived.
			want := b.states[before+len(recordBounds(t, image[:kept], seg))-1]
			if !got.equal(want) {
				t.Fatalf("seed %d: cut at %d: recovered %v, want %v", seed, cut, got, want)
			}
		}
		// Bytes after the last record that are neither a cut record nor
		// zeros are corruption, not a torn tail.
		junk := make([]byte, headerSize+1+rng.IntN(100))
		for i := range junk {
			junk[i] = byte(1 + rng.IntN(255))
		}
		rewrite(t, b.fs, seg, append(image[:len(image):len(image)], junk...), 0)
		if _, _, ce := b.open(t); ce == nil || ce.Offset != int64(len(image)) {
			t.Fatalf("seed %d: junk after the last record: %v", seed, ce)
		}
	}
}

// TestWALTornRuleBoundary pins down the documented rule for the last record
// of the last segment: a complete-length record whose trailer byte and
// everything after are zero is torn; the same record with its trailer
// intact but a damaged body is corruption, as is a damaged record followed
// by more data.
func TestWALTornRuleBoundary(t *testing.T) {
	b := buildWAL(t, 400, 30, MemFaults{})
	seg := b.segs[len(b.segs)-1]
	image := recordsOf(contents(t, b.fs, seg))
	bounds := recordBounds(t, image, seg)
	if len(bounds) < 3 {
		t.Skip("last segment too short")
	}
	lastStart := bounds[len(bounds)-2]
	mutate := func(f func(img []byte)) *CorruptionError {
		img := append([]byte(nil), image...)
		f(img)
		rewrite(t, b.fs, seg, img, 0)
		_, _, ce := b.open(t)
		return ce
	}
	// Zero the second half of the last record, trailer included: torn.
	if ce := mutate(func(img []byte) { clear(img[lastStart+(int64(len(img))-lastStart)/2:]) }); ce != nil {
		t.Errorf("zeroed tail of the last record: %v", ce)
	}
	// Zero the middle of the last record but keep its trailer: corruption.
	if ce := mutate(func(img []byte) { clear(img[lastStart+headerSize : len(img)-1]) }); ce == nil {
		t.Errorf("damaged body with its trailer intact was taken for a torn tail")
	}
	// Damage the second-to-last record: corruption, whatever follows.
	prev := bounds[len(bounds)-3]
	if ce := mutate(func(img []byte) { img[prev+headerSize/2] ^= 0x10 }); ce == nil || ce.Offset != prev {
		t.Errorf("damaged record before the last: %v", ce)
	}
	// A zeroed header with data after it: corruption.
	if ce := mutate(func(img []byte) { clear(img[prev : prev+headerSize]) }); ce == nil || ce.Offset != prev {
		t.Errorf("zeroed header followed by records: %v", ce)
	}
	// Fewer bytes than a header, even non-zero ones, are a torn tail.
	if ce := mutate(func(img []byte) {}); ce != nil {
		t.Fatal(ce)
	}
	rewrite(t, b.fs, seg, append(image[:len(image):len(image)], 1, 2, 3), 0)
	if _, _, ce := b.open(t); ce != nil {
		t.Errorf("three stray bytes at the end: %v", ce)
	}
}

// recordBounds returns the end offset of every record in a segment image
// (the zeros written ahead of them end it).
func recordBounds(t *testing.T, image []byte, name string) []int64 {
	var seq uint64
	var ok bool
	if seq, ok = parseSegmentName(filepath.Base(name)); !ok {
		t.Fatalf("bad segment name %s", name)
	}
	var bounds []int64
	for off := 0; off < len(image) && (off == 0 || !allZero(image[off:])); {
		f := decodeFrame(image[off:], seedFor(seq), int64(off))
		if f.status != frameOK {
			t.Fatalf("clean image does not decode at %d: %s", off, f.reason)
		}
		off += f.size
		bounds = append(bounds, int64(off))
	}
	return bounds
}

// rewrite replaces a file's contents with data followed by zeros.
func rewrite(t *testing.T, fsys FS, name string, data []byte, zeros int64) {
	f, err := fsys.Create(name)
	must(t, err)
	_, err = f.WriteAt(data, 0)
	must(t, err)
	must(t, f.Truncate(int64(len(data))+zeros))
	must(t, f.Close())
}

// recordsBefore returns how many records (other than start records) the
// model had appended before the first record of the last segment, given the
// segment's unmodified image (the workload ended with a sync, so every
// record it appended is in the image's segments or released ones).
func recordsBefore(t *testing.T, b builtWAL, lastImage []byte) int {
	return len(b.states) - 1 - (len(recordBounds(t, lastImage, b.segs[len(b.segs)-1])) - 1)
}
