package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The compare step's memory phase, for issue 17's last target: resident
// memory flat within 20 % through a ten-minute overwrite run with default
// settings, and below etcd's. Both systems are loaded at the same time, at
// the same offered rate, by the same tool (etcd's), so that they are
// measured over the same minutes with the same writes: run one after the
// other, the second would meet another machine (the page cache, the load)
// than the first. The rate is one that both keep up with on this machine
// beside each other, so that each system writes the same history.

// memoryWarmup is how long the phase runs before its samples count
// towards flatness: the first minute holds the climb to the steady state
// (the in-memory log's first fill, the history's first pages), not the
// steady state. A short run (--smoke) warms up for a fifth of its length.
const memoryWarmup = time.Minute

// defaultCompareMemory is the memory phase's length unless
// --compare-memory says otherwise: the ten minutes.
const defaultCompareMemory = 10 * time.Minute

// flatBound is the target's "flat within 20 %": the largest steady sample
// over the smallest.
const flatBound = 1.2

// compareMemory is the memory phase's report.
type compareMemory struct {
	duration time.Duration
	warmup   time.Duration
	rate     int
	runs     []memoryRun // etcd's first, if it ran
}

// memoryRun is one system's overwrite run and its members' memory,
// sampled once a second.
type memoryRun struct {
	system  string
	cmd     string
	res     *benchResult
	err     error
	members []memberMemory
}

type memberMemory struct {
	id                       uint64
	rss, anon, file, seconds []int64 // KiB; seconds since the phase began
}

// steady returns the samples taken after warmup.
func (m memberMemory) steady(samples []int64, warmup time.Duration) []int64 {
	i, _ := slices.BinarySearch(m.seconds, int64(warmup/time.Second))
	return samples[i:]
}

// flatness is the largest RSS sample after warmup over the smallest; 0
// without any.
func (m memberMemory) flatness(warmup time.Duration) float64 {
	s := m.steady(m.rss, warmup)
	if len(s) == 0 || slices.Min(s) <= 0 {
		return 0
	}
	return float64(slices.Max(s)) / float64(slices.Min(s))
}

// worstFlatness is the flatness of the member least flat.
func (r memoryRun) worstFlatness(warmup time.Duration) float64 {
	var worst float64
	for _, m := range r.members {
		worst = max(worst, m.flatness(warmup))
	}
	return worst
}

// peak is the largest RSS sample of any member, in KiB.
func (r memoryRun) peak() int64 {
	var p int64
	for _, m := range r.members {
		if len(m.rss) > 0 {
			p = max(p, slices.Max(m.rss))
		}
	}
	return p
}

// memoryRunOf is the named system's run, or nil.
func (mem *compareMemory) memoryRunOf(system string) *memoryRun {
	if mem == nil {
		return nil
	}
	for i := range mem.runs {
		if mem.runs[i].system == system {
			return &mem.runs[i]
		}
	}
	return nil
}

// compareMemoryPhase overwrites keys on every system at once for
// --compare-memory at --compare-memory-rate puts a second each, sampling
// every member's memory once a second.
func (d *driver) compareMemoryPhase(ctx context.Context, systems map[string]*failoverTarget, res *compareResult) error {
	mem := &compareMemory{duration: d.opt.compareMemory, warmup: min(memoryWarmup, d.opt.compareMemory/5), rate: d.opt.compareMemoryRate}
	res.memory = mem
	total := max(int(float64(mem.rate)*mem.duration.Seconds()), 1)
	for _, name := range []string{sysEtcd, sysKeyVal} {
		sys := systems[name]
		if sys == nil {
			continue
		}
		// From the same point on both: what the rows wrote is compacted,
		// and every member restarted. Without the restart the phase
		// measured the memory the rows' 256 clients left behind being
		// given back over its first minutes as much as its own writes.
		if err := compactHistory(ctx, sys.c); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := restartAll(ctx, sys); err != nil {
			return fmt.Errorf("%s: restarting for the memory phase: %w", name, err)
		}
		run := memoryRun{system: name}
		for _, n := range sys.c.nodes {
			run.members = append(run.members, memberMemory{id: n.id})
		}
		mem.runs = append(mem.runs, run)
	}
	// The tools report back here, so that only this goroutine writes
	// what the report (saved every second) reads.
	type finished struct {
		i   int
		res *benchResult
		cmd string
		err error
	}
	results := make(chan finished, len(mem.runs))
	for i := range mem.runs {
		c := systems[mem.runs[i].system].c
		b := &benchRun{bin: d.opt.etcdBenchmark, parse: parseEtcdReport, args: []string{
			"--endpoints", c.endpoints(), "--target-leader", "--conns", "8", "--clients", "64",
			"put", "--key-size", "8", "--val-size", "256", "--key-space-size", strconv.Itoa(d.opt.keySpace),
			"--rate", strconv.Itoa(mem.rate), "--total", strconv.Itoa(total)}}
		go func() {
			out, cmd, _, err := runBench(ctx, b)
			results <- finished{i, out, cmd, err}
		}()
	}
	start := time.Now()
	var sampleErr error
	sample := func() {
		at := int64(time.Since(start) / time.Second)
		for i := range mem.runs {
			run := &mem.runs[i]
			for j, n := range systems[run.system].c.nodes {
				m, err := memKiB(n.pid())
				if err != nil {
					if sampleErr == nil {
						sampleErr = fmt.Errorf("%s member %d: %w", run.system, n.id, err)
					}
					continue
				}
				mm := &run.members[j]
				mm.rss, mm.anon, mm.file = append(mm.rss, m.rss), append(mm.anon, m.anon), append(mm.file, m.file)
				mm.seconds = append(mm.seconds, at)
			}
		}
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	sample()
	for left := len(mem.runs); left > 0; {
		select {
		case f := <-results:
			run := &mem.runs[f.i]
			run.res, run.cmd, run.err = f.res, f.cmd, f.err
			left--
		case <-t.C:
			sample()
			d.rep.save()
		}
	}
	sample()
	d.rep.save()
	errs := []error{sampleErr}
	for _, run := range mem.runs {
		if run.err != nil {
			errs = append(errs, fmt.Errorf("%s, memory phase: %w", run.system, run.err))
		}
	}
	return errors.Join(errs...)
}

// restartAll stops every member of sys cleanly and starts them again on
// their data, returning once the cluster has a leader and has caught up.
func restartAll(ctx context.Context, sys *failoverTarget) error {
	sys.c.stopAll()
	_, err := sys.healthy(ctx)
	return err
}

// writeCompareMemory renders the memory phase: for each system, each
// member's resident memory over the run, split into anonymous and file
// memory, and how flat it stayed after the warm-up.
func (r *report) writeCompareMemory(b *strings.Builder) {
	mem := r.compare.memory
	if mem == nil || len(mem.runs) == 0 {
		return
	}
	fmt.Fprintf(b, "Memory through a sustained overwrite: both systems at once, each offered %s puts a second for %v by "+
		"etcd's tool (64 clients over 8 connections, 8-byte random keys over %d, 256-byte values), with the settings "+
		"above, after the history the rows wrote was compacted and every member restarted on its data. Every member's resident memory (VmRSS, and its "+
		"anonymous and file-backed parts, RssAnon and RssFile: Go's heap, and the database file mapped in) sampled once "+
		"a second; *steady* is from %v on, and *flat* is its largest sample over its smallest.\n\n",
		thousands(float64(mem.rate)), mem.duration, r.opt.keySpace, mem.warmup)
	fmt.Fprintf(b, "| system | member | puts/s, p99 | RSS MiB: at %v → max → last | steady min–max | flat | anonymous peak | file peak |\n", mem.warmup)
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|\n")
	for _, run := range mem.runs {
		load := "–"
		if run.res != nil {
			load = fmt.Sprintf("%s, %.1f ms", thousands(run.res.RequestsPerSec), run.res.Latency.P99)
		}
		if run.err != nil {
			load += "; **" + firstLine(run.err) + "**"
		}
		for _, m := range run.members {
			steady := m.steady(m.rss, mem.warmup)
			if len(steady) == 0 {
				fmt.Fprintf(b, "| %s | %d | %s | no steady sample | | | | |\n", run.system, m.id, load)
				load = ""
				continue
			}
			fmt.Fprintf(b, "| %s | %d | %s | %.0f → %.0f → %.0f | %.0f–%.0f | %.2f | %.0f | %.0f |\n", run.system, m.id, load,
				mib(steady[0]), mib(slices.Max(m.rss)), mib(m.rss[len(m.rss)-1]), mib(slices.Min(steady)), mib(slices.Max(steady)),
				m.flatness(mem.warmup), mib(slices.Max(m.anon)), mib(slices.Max(m.file)))
			load = ""
		}
	}
	b.WriteString("\n")
}

// memoryTargets judges the memory phase: KeyVal's least flat member, and
// KeyVal's largest member's peak over etcd's.
func (res *compareResult) memoryTargets() []compareTarget {
	what := fmt.Sprintf("RSS flat within 20 %% through a %s overwrite run: steady max / min, least flat member", minutes(res.memoryDuration()))
	kv, etcd := res.memory.memoryRunOf(sysKeyVal), res.memory.memoryRunOf(sysEtcd)
	flat, below := compareTarget{what, 0, flatBound, false, "×"}, compareTarget{"RSS through the overwrite run: peak below etcd's", 0, 1, false, "×"}
	if kv != nil && kv.err == nil {
		flat.got = kv.worstFlatness(res.memory.warmup)
		if etcd != nil && etcd.err == nil {
			below.got = ratio(float64(kv.peak()), float64(etcd.peak()))
		}
	}
	return []compareTarget{flat, below}
}

// minutes names a run's length as the issue does ("10-minute").
func minutes(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return fmt.Sprintf("%d-minute", int(d/time.Minute))
	}
	return d.String()
}

// memoryDuration is the memory phase's length, or the default's where it
// did not run, to name the target.
func (res *compareResult) memoryDuration() time.Duration {
	if res.memory == nil {
		return defaultCompareMemory
	}
	return res.memory.duration
}
