package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Faults is the fault model of one run. Every knob is a named field; the
// seed chooses which are on and how strongly (swarm testing: a run with
// fewer kinds of fault explores those kinds more deeply).
type Faults struct {
	// Network.
	MinDelay, MaxDelay int64   // one-way message delay range, µs
	SpikeProb          float64 // chance a message takes up to SpikeDelay
	SpikeDelay         int64
	DropProb           float64
	DupProb            float64
	// Partitions: every PartitionEvery µs on average a new one (symmetric
	// split, one-way cut, minority cut off, leader isolated, or
	// swizzle-clog), healed after up to PartitionFor µs.
	Partitions     bool
	PartitionEvery int64
	PartitionFor   int64

	// Processes.
	Crashes    bool // crash (unsynced writes lost, torn tails) and restart
	CrashEvery int64
	DownFor    int64
	Pauses     bool // a node stops taking steps while others go on
	PauseEvery int64
	PauseFor   int64
	// ClockDrift makes each node's tick interval differ by up to this
	// fraction.
	ClockDrift float64

	// Storage, on at most a minority of nodes (StorageNodes).
	StorageNodes  int
	BitFlipProb   float64 // per write
	MisdirectProb float64 // per write
	ReadErrorProb float64 // per read
	DiskCapacity  int64   // bytes; 0 = unlimited
	SlowSyncMax   int64   // µs added to a sync, at most
}

// chooseFaults draws a fault model from rng.
func chooseFaults(rng *rand.Rand, nodes int) Faults {
	on := func(p float64) bool { return rng.Float64() < p }
	f := Faults{MinDelay: 50 + rng.Int64N(200), MaxDelay: 500 + rng.Int64N(3000)}
	if on(0.5) {
		f.SpikeProb = 0.01 + rng.Float64()*0.05
		f.SpikeDelay = 10_000 + rng.Int64N(100_000)
	}
	if on(0.5) {
		f.DropProb = rng.Float64() * 0.1
	}
	if on(0.3) {
		f.DupProb = rng.Float64() * 0.05
	}
	if on(0.6) {
		f.Partitions = true
		f.PartitionEvery = 200_000 + rng.Int64N(2_000_000)
		f.PartitionFor = 100_000 + rng.Int64N(2_000_000)
	}
	if on(0.6) {
		f.Crashes = true
		f.CrashEvery = 300_000 + rng.Int64N(3_000_000)
		f.DownFor = 10_000 + rng.Int64N(1_000_000)
	}
	if on(0.4) {
		f.Pauses = true
		f.PauseEvery = 300_000 + rng.Int64N(3_000_000)
		f.PauseFor = 10_000 + rng.Int64N(1_500_000)
	}
	if on(0.5) {
		f.ClockDrift = rng.Float64() * 0.2
	}
	if on(0.4) {
		f.StorageNodes = 1 + rng.IntN((nodes-1)/2)
		if on(0.5) {
			f.BitFlipProb = rng.Float64() * 0.01
		}
		if on(0.5) {
			f.MisdirectProb = rng.Float64() * 0.005
		}
		if on(0.5) {
			f.ReadErrorProb = rng.Float64() * 0.05
		}
		if on(0.3) {
			f.DiskCapacity = 32<<10 + rng.Int64N(512<<10)
		}
		if on(0.5) {
			f.SlowSyncMax = rng.Int64N(50_000)
		}
	}
	return f
}

// String lists the faults that are on.
func (f Faults) String() string {
	var on []string
	add := func(cond bool, format string, a ...any) {
		if cond {
			on = append(on, fmt.Sprintf(format, a...))
		}
	}
	add(true, "delay=%d-%dµs", f.MinDelay, f.MaxDelay)
	add(f.SpikeProb > 0, "spikes=%.1f%%≤%dms", f.SpikeProb*100, f.SpikeDelay/1000)
	add(f.DropProb > 0, "drop=%.1f%%", f.DropProb*100)
	add(f.DupProb > 0, "dup=%.1f%%", f.DupProb*100)
	add(f.Partitions, "partitions/%dms", f.PartitionEvery/1000)
	add(f.Crashes, "crashes/%dms", f.CrashEvery/1000)
	add(f.Pauses, "pauses/%dms", f.PauseEvery/1000)
	add(f.ClockDrift > 0, "drift=%.0f%%", f.ClockDrift*100)
	if f.StorageNodes > 0 {
		add(true, "storage-faulty-nodes=%d", f.StorageNodes)
		add(f.BitFlipProb > 0, "bitflip=%.2f%%", f.BitFlipProb*100)
		add(f.MisdirectProb > 0, "misdirect=%.2f%%", f.MisdirectProb*100)
		add(f.ReadErrorProb > 0, "eio=%.1f%%", f.ReadErrorProb*100)
		add(f.DiskCapacity > 0, "disk=%dKiB", f.DiskCapacity>>10)
		add(f.SlowSyncMax > 0, "slowsync≤%dms", f.SlowSyncMax/1000)
	}
	return strings.Join(on, " ")
}

// FaultCounts is how many faults of each kind actually fired.
type FaultCounts struct {
	Dropped, Duplicated, Partitions, Crashes, Pauses int
	TornWrites, FlippedWrites, MisdirectedWrites     int
	ReadErrors, NoSpace, Halts                       int
}

func (c FaultCounts) String() string {
	return fmt.Sprintf("dropped=%d duplicated=%d partitions=%d crashes=%d pauses=%d torn=%d flipped=%d misdirected=%d eio=%d enospc=%d halts=%d",
		c.Dropped, c.Duplicated, c.Partitions, c.Crashes, c.Pauses, c.TornWrites, c.FlippedWrites,
		c.MisdirectedWrites, c.ReadErrors, c.NoSpace, c.Halts)
}
