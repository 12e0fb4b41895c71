package disk

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// Benchmarks of the real disk. They run in $KEYVAL_BENCH_DIR if set, else in
// a temporary directory, and refuse to measure a RAM-backed file system:
//
//	go test ./disk/ -run '^$' -bench 'Fsync|WALAppend' -benchtime 3s
//	KEYVAL_BENCH_DIR=/work/main/.benchdata go test ./disk/ -run '^$' -bench . -benchtime 3s

func benchDir(b *testing.B) string {
	dir := b.TempDir()
	if base := os.Getenv("KEYVAL_BENCH_DIR"); base != "" {
		must(b, os.MkdirAll(base, 0o755))
		var err error
		dir, err = os.MkdirTemp(base, "bench-")
		must(b, err)
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	if onTmpfs(dir) {
		b.Skipf("%s is on tmpfs: fsync costs nothing there; set KEYVAL_BENCH_DIR to a directory on a real disk", dir)
	}
	return dir
}

// BenchmarkFsyncFloor is the cost of the cheapest durable write: 4 KiB and
// an fdatasync, either overwriting the same block (no metadata changes) or
// appending (the file grows, so its size must be journaled too).
func BenchmarkFsyncFloor(b *testing.B) {
	for _, mode := range []string{"overwrite", "append"} {
		b.Run(mode, func(b *testing.B) {
			f, err := OSFS{}.Create(filepath.Join(benchDir(b), "floor"))
			must(b, err)
			defer f.Close()
			block := make([]byte, 4096)
			for i := range block {
				block[i] = byte(i)
			}
			var off int64
			for b.Loop() {
				if _, err := f.WriteAt(block, off); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				if mode == "append" {
					off += int64(len(block))
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "syncs/s")
		})
	}
}

// BenchmarkWALAppend appends batches of 256-byte entries (plus the hard
// state, as a Ready batch would) and syncs once per batch.
func BenchmarkWALAppend(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			w, err := Create(OSFS{}, filepath.Join(benchDir(b), "wal"), Options{})
			must(b, err)
			defer w.Close()
			benchAppend(b, w, batch, true)
		})
	}
}

// BenchmarkWALEndMark is the price of the WAL end mark: the batch of
// BenchmarkWALAppend, then, with mark=on, the mark rewritten and synced as
// Replica.syncWAL does after each sync that moved the end of the log.
func BenchmarkWALEndMark(b *testing.B) {
	for _, batch := range []int{1, 16} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("batch=%d/mark=%v", batch, on), func(b *testing.B) {
				dir := benchDir(b)
				w, err := Create(OSFS{}, filepath.Join(dir, "wal"), Options{})
				must(b, err)
				defer w.Close()
				if !on {
					benchAppend(b, w, batch, true)
					return
				}
				mark, err := OpenEndMark(OSFS{}, filepath.Join(dir, "walend"), core.LogPosition{})
				must(b, err)
				defer mark.Close()
				benchAppendThen(b, w, batch, func() error {
					d := w.Durable()
					return mark.Write(core.LogPosition{Term: d.LastTerm, Index: d.LastIndex})
				})
			})
		}
	}
}

// BenchmarkWALAppendMem is the same on MemFS: the CPU cost of framing and
// encoding, without the disk.
func BenchmarkWALAppendMem(b *testing.B) {
	for _, batch := range []int{1, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			w, err := Create(NewMemFS(nil), "/wal", Options{})
			must(b, err)
			benchAppend(b, w, batch, true)
		})
	}
}

func benchAppend(b *testing.B, w *WAL, batch int, sync bool) {
	if !sync {
		benchAppendThen(b, w, batch, nil)
		return
	}
	benchAppendThen(b, w, batch, func() error { return nil })
}

// benchAppendThen is benchAppend that, unless after is nil, syncs each
// batch and then runs after.
func benchAppendThen(b *testing.B, w *WAL, batch int, after func() error) {
	sync := after != nil
	es := make([]core.Entry, batch)
	for i := range es {
		es[i] = core.Entry{Term: 1, Data: make([]byte, 256)}
	}
	next := uint64(1)
	b.ReportAllocs()
	for b.Loop() {
		for i := range es {
			es[i].Index = next + uint64(i)
		}
		if err := w.Append(core.HardState{Term: 1, Vote: 1, Commit: next - 1}, es); err != nil {
			b.Fatal(err)
		}
		if sync {
			if err := w.Sync(); err != nil {
				b.Fatal(err)
			}
			if err := after(); err != nil {
				b.Fatal(err)
			}
		}
		next += uint64(batch)
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N*batch)/sec, "entries/s")
	b.ReportMetric(float64(b.N*batch*256)/sec/1e6, "MB/s")
	b.ReportMetric(float64(b.N)/sec, "syncs/s")
}

// BenchmarkWALRecover measures Open over a log of 100,000 256-byte entries.
func BenchmarkWALRecover(b *testing.B) {
	dir := filepath.Join(benchDir(b), "wal")
	w, err := Create(OSFS{}, dir, Options{})
	must(b, err)
	es := make([]core.Entry, 1000)
	for n := range 100 {
		for i := range es {
			es[i] = core.Entry{Term: 1, Index: uint64(n*1000 + i + 1), Data: make([]byte, 256)}
		}
		must(b, w.Append(core.HardState{}, es))
	}
	must(b, w.Close())
	b.ReportAllocs()
	for b.Loop() {
		w, rec, err := Open(OSFS{}, dir, Options{})
		if err != nil || len(rec.Entries) != 100_000 {
			b.Fatalf("%v, %d entries", err, len(rec.Entries))
		}
		w.Close()
	}
	b.ReportMetric(100_000*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
