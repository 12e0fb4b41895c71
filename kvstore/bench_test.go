package kvstore

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Benchmarks of Apply: puts of 256-byte values over a key space of
// benchKeys keys (new keys first, then overwrites), one Apply per batch.
// Run them with, for example:
//
//	go test ./kvstore/ -run '^$' -bench 'Apply' -benchtime 3s
//
// entries/s is the figure that matters; MB/s counts value bytes only.

const (
	benchValueSize = 256
	benchKeys      = 1 << 14
)

// benchCommand encodes the k-th put. Encoding happens at propose time in
// the server, not at apply time, so it is kept out of the timings.
func benchCommand(k, sessions int) []byte {
	client, seq := uint64(0), uint64(0)
	if sessions > 0 {
		client = uint64(k%sessions + 1) // registered at indexes 1..sessions
		seq = uint64(k/sessions + 1)
	}
	return putCmd(client, seq, fmt.Sprintf("bench/key/%08d", k%benchKeys), string(make([]byte, benchValueSize)))
}

// benchDir is a directory on a real disk: when the system temp dir is a
// tmpfs, fsync there costs nothing and the figures would lie, so the
// package directory (on the repository's disk) is used instead.
// KVSTORE_BENCH_DIR overrides both.
func benchDir(b *testing.B) string {
	base := os.Getenv("KVSTORE_BENCH_DIR")
	if base == "" {
		base = os.TempDir()
		if onTmpfs(base) {
			base = "."
		}
	}
	dir, err := os.MkdirTemp(base, "kvstore-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func benchApply(b *testing.B, s Store, batch, sessions int) {
	var cmds [][]byte // without sessions, the commands repeat: encode once
	if sessions == 0 {
		for k := 0; k < benchKeys; k++ {
			cmds = append(cmds, benchCommand(k, 0))
		}
	}
	next := uint64(1)
	if sessions > 0 {
		reg := make([]Entry, sessions)
		for i := range reg {
			reg[i] = Entry{Index: next, Data: registerCmd()}
			next++
		}
		if _, err := s.Apply(reg); err != nil {
			b.Fatal(err)
		}
	}
	entries := make([]Entry, batch)
	k := 0
	b.SetBytes(int64(batch * benchValueSize))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if sessions > 0 { // seqs keep rising: encode as we go, untimed
			b.StopTimer()
		}
		for j := range entries {
			if sessions > 0 {
				entries[j] = Entry{Index: next, Data: benchCommand(k, sessions)}
			} else {
				entries[j] = Entry{Index: next, Data: cmds[k%len(cmds)]}
			}
			next++
			k++
		}
		b.StartTimer()
		res, err := s.Apply(entries)
		if err != nil {
			b.Fatal(err)
		}
		if res[batch-1].Status != StatusOK {
			b.Fatalf("unexpected result %+v", res[batch-1])
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "batches/s")
}

func BenchmarkBoltApply(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, batch := range []int{1, 16, 256} {
			name := fmt.Sprintf("fsync=%v/batch=%d", sync, batch)
			b.Run(name, func(b *testing.B) {
				s, err := OpenBolt(filepath.Join(benchDir(b), "kv.db"), Options{NoSync: !sync})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				benchApply(b, s, batch, 0)
			})
		}
	}
}

// BenchmarkBoltApplySessions is the server's real case: every put carries
// a session, so each entry also rewrites a session record.
func BenchmarkBoltApplySessions(b *testing.B) {
	s, err := OpenBolt(filepath.Join(benchDir(b), "kv.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchApply(b, s, 256, 64)
}

func BenchmarkMemoryApply(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			benchApply(b, NewMemory(Options{}), batch, 0)
		})
	}
}

// BenchmarkBoltApplyServer is Apply as keyvald runs it under kvbench's put
// load: no fsync (the WAL is the durable record), a session on every put,
// overwrites in random order over a 100,000-key space already written
// once, and the batch sizes a loaded leader and follower see (tens to a
// few hundred entries per transaction) and one client's (one).
func BenchmarkBoltApplyServer(b *testing.B) {
	const keys, sessions = 100000, 256
	value := string(make([]byte, benchValueSize))
	for _, batch := range []int{1, 32, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s, err := OpenBolt(filepath.Join(benchDir(b), "kv.db"), Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			next := uint64(1)
			apply := func(entries []Entry) {
				if _, err := s.Apply(entries); err != nil {
					b.Fatal(err)
				}
			}
			var fill []Entry
			for range sessions {
				fill = append(fill, Entry{Index: next, Data: registerCmd()})
				next++
			}
			apply(fill)
			for k := 0; k < keys; k += 1000 {
				fill = fill[:0]
				for j := k; j < k+1000; j++ {
					fill = append(fill, Entry{Index: next, Data: putCmd(0, 0, fmt.Sprintf("%08d", j), value)})
					next++
				}
				apply(fill)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			seqs := make([]uint64, sessions)
			entries := make([]Entry, batch)
			b.ReportAllocs()
			b.ResetTimer()
			var cpu time.Duration // of Apply alone: the machine may be shared
			for i := 0; i < b.N; i++ {
				b.StopTimer() // encoding happens at propose time in the server
				for j := range entries {
					c := rng.IntN(sessions)
					seqs[c]++
					entries[j] = Entry{Index: next, Data: putCmd(uint64(c+1), seqs[c], fmt.Sprintf("%08d", rng.IntN(keys)), value)}
					next++
				}
				b.StartTimer()
				before := processCPU()
				res, err := s.Apply(entries)
				cpu += processCPU() - before
				if err != nil {
					b.Fatal(err)
				}
				if res[batch-1].Status != StatusOK {
					b.Fatalf("unexpected result %+v", res[batch-1])
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*batch), "cpu-ns/entry")
			// Pages written per entry, whatever the machine's load: the
			// store's write amplification.
			stats := s.file.Load().db.Stats()
			b.ReportMetric(float64(stats.TxStats.GetWrite())/float64(b.N*batch), "pages/entry")
		})
	}
}

// BenchmarkBoltWriteSnapshot is a snapshot of a store whose history was
// written the way kvbench's overwrites leave it: 100,000 keys, each
// overwritten a few times in random order, 256-byte values. A snapshot
// file holds every version, so versions/s is the figure that matters.
func BenchmarkBoltWriteSnapshot(b *testing.B) {
	const keys, rounds = 100000, 5
	s, err := OpenBolt(filepath.Join(benchDir(b), "kv.db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	value := string(make([]byte, benchValueSize))
	rng := rand.New(rand.NewPCG(1, 2))
	next := uint64(1)
	batch := make([]Entry, 0, 1000)
	for range rounds {
		for _, k := range rng.Perm(keys) {
			batch = append(batch, Entry{Index: next, Data: putCmd(0, 0, fmt.Sprintf("%08d", k), value)})
			next++
			if len(batch) == cap(batch) {
				if _, err := s.Apply(batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		f, err := s.Freeze()
		if err != nil {
			b.Fatal(err)
		}
		if err := f.WriteSnapshot(io.Discard); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	b.ReportMetric(float64(b.N*keys*rounds)/b.Elapsed().Seconds(), "versions/s")
}
