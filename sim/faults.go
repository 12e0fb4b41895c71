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
	// RotProb is the chance that a crash of a storage-faulty node leaves
	// one flipped bit among the last RotSpan bytes of its newest WAL
	// segment's records (the zeros written ahead of them not counted), in
	// data that was synced: bit rot found at restart, where a
	// write that landed whole can be told from a torn one only by its
	// checksum.
	RotProb float64
	RotSpan int64
	// DeepRotProb is the chance that a crash of a storage-faulty node
	// leaves one flipped bit anywhere in any of its WAL segments: damage
	// in the middle of the log, which the node repairs from its peers
	// when that is safe (replica.Config.RepairWAL) and otherwise halts.
	DeepRotProb float64
	// LostWriteProb is the chance that a synced write of a storage-faulty
	// node never reaches its disk (disk.MemFaults.LostWriteProb): after a
	// crash it reads as zeros, damage in the middle of its WAL
	// (Options.LostWrites).
	LostWriteProb float64
	// DamageAll: every DamageAllEvery µs (when every member is up), all
	// members crash at once and each comes back with one entry record of
	// its WAL damaged, no two at the same index (so never the same entry
	// on a majority): the cluster must keep every committed entry and
	// recover (Options.DamageAll). No other storage faults with it.
	DamageAll      bool
	DamageAllEvery int64
	// SnapshotWriteTime is added to the time every snapshot of a node's
	// own takes to write, µs (Options.SlowSnapshots): the window in which
	// the file exists but the WAL's marker for it does not yet.
	SnapshotWriteTime int64
	// GoneNotices: a node that crashes cleanly is known gone by the
	// nodes it could reach (Options.GoneNotices).
	GoneNotices bool

	// Not faults, but drawn per seed like them: flow control. Small
	// messages make a follower catch up one entry per append, so a new
	// leader learns of old-term entries on a majority before its own.
	MaxMsgBytes     uint64 // 0 = the simulator's default (64 KiB)
	MaxInflightMsgs int    // 0 = core's default

	// LeaderChurn is the chance that a node is cut off from its peers at
	// the moment it wins an election, before its first appends arrive, and
	// CommitIsolate the chance that a leader is cut off at the moment an
	// acknowledgement advances its commit index, when it alone knows. Both
	// heal after up to half a second. A run of such leaders leaves the
	// diverging logs of the Raft paper's Figure 8 behind.
	LeaderChurn   float64
	CommitIsolate float64
	// PauseIsolate is the chance that a paused leader is also cut off from
	// its peers until up to 200 ms after it resumes (the stale-read trap:
	// its clock stood still, so it still believes in its leadership).
	PauseIsolate float64

	// Membership turns on the membership nemesis (sim/membership.go): every
	// MemberEvery µs on average it asks the leader to add a fresh node as a
	// learner, promote a learner, remove a learner or a voter (the leader
	// too), or replace a voter by a fresh node with an empty disk.
	// MaxLearnerLag is how far behind a learner may be and still be
	// promoted (0: core's default), small values make the leader refuse
	// promotions it would otherwise accept.
	Membership    bool
	MemberEvery   int64
	MaxLearnerLag uint64
	// ChangeIsolate is the chance that a leader is cut off from some or
	// all of its peers the moment it accepts a membership change, so the
	// change stays in its log alone while the others elect a new leader;
	// NewLeaderChange the chance that the nemesis asks a newly elected
	// leader for a change at once (before it has committed in its term).
	// Together they set up the known trap of single-server changes: a
	// deposed leader's uncommitted change coming back after a newer one
	// committed.
	ChangeIsolate   float64
	NewLeaderChange float64
}

// chooseMembership draws the membership knobs, from their own stream (split
// off after every other), so seeds without membership changes keep the
// rest of their run exactly.
func chooseMembership(rng *rand.Rand, f *Faults) {
	if rng.IntN(2) != 0 {
		return
	}
	f.Membership = true
	f.MemberEvery = 100_000 + rng.Int64N(900_000)
	if rng.IntN(2) == 0 {
		f.MaxLearnerLag = 1 + uint64(rng.IntN(64))
	}
	if rng.IntN(2) == 0 {
		f.ChangeIsolate = 0.1 + 0.4*rng.Float64()
	}
	if rng.IntN(2) == 0 {
		f.NewLeaderChange = 0.2 + 0.6*rng.Float64()
	}
}

// chooseExtras draws the knobs added after the first fault model, from
// their own stream, so that every seed keeps the rest of its fault model.
func chooseExtras(rng *rand.Rand, f *Faults) {
	if f.StorageNodes > 0 && rng.IntN(2) == 0 {
		f.RotProb = 0.2 + rng.Float64()*0.6
		f.RotSpan = 1 + rng.Int64N(256)
	}
	if rng.IntN(2) == 0 {
		f.MaxMsgBytes = 1 + uint64(rng.Int64N(1024))
	}
	if rng.IntN(2) == 0 {
		f.MaxInflightMsgs = 1 + rng.IntN(16)
	}
	if rng.IntN(3) == 0 {
		f.LeaderChurn = 0.2 + rng.Float64()*0.6
		f.CommitIsolate = rng.Float64() * 0.1
	}
	if f.Pauses && rng.IntN(2) == 0 {
		f.PauseIsolate = 0.5 + rng.Float64()*0.5
	}
}

// chooseRepair draws the knobs of damage the nodes repair, from their own
// stream (split off last), so every other knob of a seed stays as it was.
func chooseRepair(rng *rand.Rand, f *Faults) {
	if f.StorageNodes > 0 && f.Crashes && rng.IntN(2) == 0 {
		f.DeepRotProb = 0.2 + rng.Float64()*0.6
	}
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
		add(f.RotProb > 0, "rot=%.0f%%/last %dB", f.RotProb*100, f.RotSpan)
		add(f.DeepRotProb > 0, "deeprot=%.0f%%", f.DeepRotProb*100)
		add(f.LostWriteProb > 0, "lostwrite=%.0f%%", f.LostWriteProb*100)
	}
	add(f.DamageAll, "damage-all/%dms", f.DamageAllEvery/1000)
	add(f.SnapshotWriteTime > 0, "snapshot-write+%dms", f.SnapshotWriteTime/1000)
	add(f.GoneNotices, "gone-notices")
	add(f.MaxMsgBytes > 0, "msg≤%dB", f.MaxMsgBytes)
	add(f.MaxInflightMsgs > 0, "inflight≤%d", f.MaxInflightMsgs)
	add(f.LeaderChurn > 0, "churn=%.0f%%", f.LeaderChurn*100)
	add(f.CommitIsolate > 0, "commit-isolate=%.1f%%", f.CommitIsolate*100)
	add(f.PauseIsolate > 0, "pause-isolate=%.0f%%", f.PauseIsolate*100)
	add(f.Membership, "membership/%dms", f.MemberEvery/1000)
	add(f.MaxLearnerLag > 0, "learner-lag≤%d", f.MaxLearnerLag)
	add(f.ChangeIsolate > 0, "change-isolate=%.0f%%", f.ChangeIsolate*100)
	add(f.NewLeaderChange > 0, "new-leader-change=%.0f%%", f.NewLeaderChange*100)
	return strings.Join(on, " ")
}

// FaultCounts is how many faults of each kind actually fired.
type FaultCounts struct {
	Dropped, Duplicated, Partitions, Crashes, Pauses int
	TornWrites, FlippedWrites, MisdirectedWrites     int
	ReadErrors, NoSpace, Halts, Repairs              int
	Rotted, Isolations                               int
	// LostWrites counts synced writes a crash showed lost
	// (Faults.LostWriteProb).
	LostWrites int
	// LostEnds counts starts that found the WAL had lost synced records at
	// its end, by the vote copy or the end mark (replica.Replica.LostTail).
	LostEnds int
	// Kept counts the repairs that kept the log, the lost entries as holes
	// filled from the others (replica.Replica.KeptHoles).
	Kept int
	// WaitedBelowFloor counts runs that made no progress after the faults
	// healed because members waited below their vote floors or on holes
	// no one could fill, and no other member could win an election
	// (checkLiveness, noOneCanWin).
	WaitedBelowFloor int
	// HaltsBy splits Halts by reason.
	HaltsBy [numHaltReasons]int
	// LeadersForgotten counts followers that forgot their leader on a
	// notice that it was gone (Faults.GoneNotices).
	LeadersForgotten int
}

// HaltsByReason says how many halts each reason had, those with none
// left out ("" if there were no halts).
func (c FaultCounts) HaltsByReason() string {
	var parts []string
	for r, n := range c.HaltsBy {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", HaltReason(r), n))
		}
	}
	return strings.Join(parts, ", ")
}

func (c FaultCounts) String() string {
	s := fmt.Sprintf("dropped=%d duplicated=%d partitions=%d crashes=%d pauses=%d torn=%d flipped=%d misdirected=%d eio=%d enospc=%d rotted=%d isolations=%d halts=%d repairs=%d",
		c.Dropped, c.Duplicated, c.Partitions, c.Crashes, c.Pauses, c.TornWrites, c.FlippedWrites,
		c.MisdirectedWrites, c.ReadErrors, c.NoSpace, c.Rotted, c.Isolations, c.Halts, c.Repairs)
	if c.LeadersForgotten > 0 {
		s += fmt.Sprintf(" leaders-forgotten=%d", c.LeadersForgotten)
	}
	return s
}
