package kvstore

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Benchmarks of Apply: puts of 256-byte values over a key space of
// benchKeys keys (new keys first, then overwrites), one Apply per batch.
// Run them with, for example:
//
//	go test ./disk/kvstore/ -run '^$' -bench 'Apply' -benchtime 3s
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
