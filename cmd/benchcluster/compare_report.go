package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/server"
)

// compareFigure is one figure of the compare table: how to read it from a
// run (0: unknown, left out) and how to print it.
type compareFigure struct {
	name   string
	of     func(compareRun) float64
	format func(float64) string
}

func fixed(decimals int) func(float64) string {
	return func(x float64) string { return strconv.FormatFloat(x, 'f', decimals, 64) }
}

const (
	figOps = "ops/s"
	figP50 = "p50 ms"
	figP99 = "p99 ms"
	figCPU = "CPU µs/op"
	figRSS = "RSS MiB"
)

var compareFigures = []compareFigure{
	{figOps, func(r compareRun) float64 { return r.res.RequestsPerSec }, thousands},
	{figP50, func(r compareRun) float64 { return r.res.Latency.P50 }, fixed(2)},
	{figP99, func(r compareRun) float64 { return r.res.Latency.P99 }, fixed(2)},
	{"p99.9 ms", func(r compareRun) float64 { return r.res.Latency.P999 }, fixed(2)},
	{figCPU, func(r compareRun) float64 { return r.cpuPerOp }, fixed(0)},
	{figRSS, func(r compareRun) float64 { return mib(r.rssKiB) }, fixed(0)},
}

// figureSpread is a figure over the rounds of one row and load generator:
// its median and range, and how many runs gave it.
func (res *compareResult) figureSpread(row, variant string, f compareFigure) (spread, int) {
	var xs []float64
	for _, r := range res.runs {
		if r.row != row || r.variant != variant || r.res == nil {
			continue
		}
		if x := f.of(r); x > 0 {
			xs = append(xs, x)
		}
	}
	return spreadOf(xs), len(xs)
}

// median is a figure's median over the rounds, 0 if no run gave it.
func (res *compareResult) median(row, variant, figure string) float64 {
	for _, f := range compareFigures {
		if f.name == figure {
			s, _ := res.figureSpread(row, variant, f)
			return s.med
		}
	}
	return 0
}

// spreadCell prints a median with its range, "–" when there is none.
func spreadCell(s spread, n int, format func(float64) string) string {
	switch n {
	case 0:
		return "–"
	case 1:
		return format(s.med)
	}
	return fmt.Sprintf("%s (%s–%s)", format(s.med), format(s.lo), format(s.hi))
}

// ratio is KeyVal's figure over etcd's, 0 when either is unknown.
func ratio(keyval, etcd float64) float64 {
	if keyval <= 0 || etcd <= 0 {
		return 0
	}
	return keyval / etcd
}

// ratioCell prints ratio, "–" when it is unknown.
func ratioCell(keyval, etcd float64) string {
	q := ratio(keyval, etcd)
	if q == 0 {
		return "–"
	}
	return strconv.FormatFloat(q, 'f', 2, 64)
}

// problemsCell counts a load generator's failed operations, failed runs
// and elections over the rounds of a row; "" when there were none.
func (res *compareResult) problemsCell(row, variant string) string {
	var errs, failed int
	var elections uint64
	for _, r := range res.runs {
		if r.row != row || r.variant != variant {
			continue
		}
		elections += r.elections
		switch {
		case r.res == nil:
			failed++
		case r.err != nil:
			errs += max(r.res.Errors, 1)
		}
	}
	var parts []string
	if errs > 0 {
		parts = append(parts, fmt.Sprintf("%d errors", errs))
	}
	if failed > 0 {
		parts = append(parts, fmt.Sprintf("%d runs failed", failed))
	}
	if elections > 0 {
		parts = append(parts, fmt.Sprintf("%d elections", elections))
	}
	return strings.Join(parts, ", ")
}

// writeCompare renders the compare step: every figure of every row as
// median (range) per load generator, KeyVal's medians over etcd's, the
// failover trials, the targets judged, and the commands.
func (r *report) writeCompare(b *strings.Builder) {
	res := r.compare
	fmt.Fprintf(b, "## Side by side with etcd\n\n")
	fmt.Fprintf(b, "KeyVal's three members and etcd's (%s, `make etcd`) on 127.0.0.1, data on the same disk, both running "+
		"through the step, with the same heartbeat (%v), election timeout (%v), snapshot interval (%d entries) and "+
		"automatic compaction (%s, %s). Load from etcd's own `benchmark` tool (etcd %s's, `make etcd-benchmark`), "+
		"`--target-leader`, one gRPC call per operation; and from kvbench, to the leader, through KeyVal's Go client "+
		"(*pipelined*) or one gRPC call per operation (*unary*). Puts: 8-byte random keys over %d, 256-byte values; "+
		"gets read the one key `%s` (256 bytes). Before each run, the history of the system it loads is compacted to "+
		"its current revision. The rows *offered* are open loop, puts offered at a fixed rate with 256 clients bounding "+
		"those in flight, and their ops/s is the rate achieved: kvbench (`--rate`) times each put from when the schedule "+
		"said to send it, so a put queued behind a stall counts its wait; etcd's tool (`put --rate`) waits for its rate "+
		"limiter and a free client and times each put from when it was actually sent, so when the system falls behind, "+
		"the wait before sending is left out of its latencies (coordinated omission) and they read lower than kvbench's "+
		"would for the same service. %d round(s); in each, every row runs on every load generator, their "+
		"order rotating from round to round, then the failover trials. Each cell: median over the rounds (min–max). "+
		"*CPU µs/op*: user and system time of the three members and the load generator over the run, per operation. "+
		"*RSS*: the largest member's peak resident memory during the run, sampled every 250 ms. Load average (1, 5, "+
		"15 min): %s at the start, %s at the end.\n\n",
		res.etcd, server.DefaultHeartbeatInterval, server.DefaultElectionTimeout, snapshotEvery(r.opt),
		server.CompactionPeriodic, server.DefaultAutoCompactionRetention, etcdToolVersion, r.opt.keySpace,
		compareReadKey, res.rounds, loadString(res.loadStart), loadString(res.loadEnd))
	var names []string
	for _, v := range compareVariants {
		names = append(names, v.name)
	}
	keyval := names[1:]
	fmt.Fprintf(b, "| row (operations) | figure | %s | KeyVal / etcd: %s |\n", strings.Join(names, " | "), strings.Join(keyval, " | "))
	fmt.Fprintf(b, "|---|---|%s\n", strings.Repeat("---|", len(names)+len(keyval)))
	for _, row := range compareRows {
		if _, ran := res.ops[row.label]; !ran {
			continue
		}
		label := fmt.Sprintf(" %s (%d) ", row.label, res.ops[row.label])
		for _, f := range compareFigures {
			cells, ratios := []string{}, []string{}
			for _, v := range names {
				s, n := res.figureSpread(row.label, v, f)
				cells = append(cells, spreadCell(s, n, f.format))
			}
			for _, v := range keyval {
				ratios = append(ratios, ratioCell(res.median(row.label, v, f.name), res.median(row.label, varEtcd, f.name)))
			}
			fmt.Fprintf(b, "|%s| %s | %s | %s |\n", label, f.name, strings.Join(cells, " | "), strings.Join(ratios, " | "))
			label = " "
		}
		var problems []string
		some := false
		for _, v := range names {
			p := res.problemsCell(row.label, v)
			some = some || p != ""
			problems = append(problems, p)
		}
		if some {
			fmt.Fprintf(b, "| | **errors, elections** | %s |%s\n", strings.Join(problems, " | "), strings.Repeat(" |", len(keyval)))
		}
	}
	b.WriteString("\nLower is better for latency, CPU and RSS, so there a ratio below 1 is KeyVal's lead.\n\n")
	r.writeCompareFailover(b)
	r.writeCompareMemory(b)
	r.writeCompareTargets(b)
	r.writeCompareCommands(b)
}

// writeCompareFailover renders the failover trials per probe.
func (r *report) writeCompareFailover(b *strings.Builder) {
	res := r.compare
	if len(res.trials) == 0 {
		return
	}
	fmt.Fprintf(b, "Failover: the failover step's trial, on both systems (%d writers; kill -9 of the leader → the first "+
		"acknowledgement of a write begun after the kill; the member restarted and caught up between trials), "+
		"through the same probe on both, etcd's Go client (every attempt bounded to %v, %v–%v between attempts), "+
		"and on KeyVal through KeyVal's Go client with the same settings:\n\n",
		failoverWriters, probeAttemptTimeout, probeBackoffBase, probeBackoffMax)
	fmt.Fprintf(b, "| probe | trials | kill → ack ms: median (min–max) | kill → leader seen ms | writes failed (trials with any) | kill → ack, median / etcd's |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|\n")
	etcdMed := res.failoverMedian(compareProbes[0].name)
	for _, p := range compareProbes {
		toAck, toLeader, failed, withFailures, errs := res.failoverOf(p.name)
		if len(toAck) == 0 && len(errs) == 0 {
			continue
		}
		ack, _, ackLo, ackHi := describe(toAck)
		lead, _, leadLo, leadHi := describe(toLeader)
		cell := fmt.Sprintf("%.0f (%.0f–%.0f)", msOf(ack), msOf(ackLo), msOf(ackHi))
		if len(errs) > 0 {
			cell += fmt.Sprintf("; **%d failed**: %s", len(errs), firstLine(errs[0]))
		}
		fmt.Fprintf(b, "| %s | %d | %s | %.0f (%.0f–%.0f) | %d (%d) | %s |\n", p.name, len(toAck)+len(errs), cell,
			msOf(lead), msOf(leadLo), msOf(leadHi), failed, withFailures, ratioCell(msOf(ack), etcdMed))
	}
	b.WriteString("\n")
}

// failoverOf gathers a probe's trials: the times of those that succeeded,
// the writes that failed in all and the trials with any, and the errors of
// those that did not.
func (res *compareResult) failoverOf(probe string) (toAck, toLeader []time.Duration, failed int64, withFailures int, errs []error) {
	for _, t := range res.trials {
		if t.probe != probe {
			continue
		}
		failed += t.tr.writeErrors
		if t.tr.writeErrors > 0 {
			withFailures++
		}
		if t.tr.err != nil {
			errs = append(errs, t.tr.err)
			continue
		}
		toAck = append(toAck, t.tr.toAck)
		toLeader = append(toLeader, t.tr.toLeader)
	}
	return toAck, toLeader, failed, withFailures, errs
}

// failoverMedian is a probe's median kill → ack in ms, 0 without trials.
func (res *compareResult) failoverMedian(probe string) float64 {
	toAck, _, _, _, _ := res.failoverOf(probe)
	med, _, _, _ := describe(toAck)
	return msOf(med)
}

// A target of issue 17: a figure (KeyVal's, or KeyVal's over etcd's), the
// bound it must reach, and whether higher is better.
type compareTarget struct {
	what    string
	got     float64
	bound   float64
	atLeast bool
	unit    string // "×" for ratios, else a unit printed after the figure
}

// verdict says whether the target is met, or by how much it is missed.
func (t compareTarget) verdict() string {
	switch {
	case t.got <= 0:
		return "not measured"
	case t.atLeast && t.got >= t.bound, !t.atLeast && t.got <= t.bound:
		return "met"
	case t.atLeast:
		return fmt.Sprintf("**missed by %.0f %%**", 100*(t.bound-t.got)/t.bound)
	}
	return fmt.Sprintf("**missed by %.0f %%**", 100*(t.got-t.bound)/t.bound)
}

func (t compareTarget) figure() string {
	if t.got <= 0 {
		return "–"
	}
	switch t.unit {
	case "×":
		return strconv.FormatFloat(t.got, 'f', 2, 64) + "×"
	case "ms":
		return strconv.FormatFloat(t.got, 'f', 2, 64) + " ms"
	}
	return strconv.FormatFloat(t.got, 'f', 0, 64) + " " + t.unit
}

// targets are issue 17's targets that the step measures, from its medians.
func (res *compareResult) targets() []compareTarget {
	overEtcd := func(row, variant, figure string) float64 {
		return ratio(res.median(row, variant, figure), res.median(row, varEtcd, figure))
	}
	var ts []compareTarget
	for _, want := range []struct {
		variant, how string
		bound        float64
	}{{varPipelined, "KeyVal's Go client", 3}, {varUnary, "kvbench --unary", 2}, {varEtcdTool, "etcd's tool against KeyVal", 2}} {
		for _, row := range []string{"put, 64 clients", "put, 256 clients"} {
			ts = append(ts, compareTarget{fmt.Sprintf("%s: writes/s ≥ %.0f× etcd's (%s)", row, want.bound, want.how),
				overEtcd(row, want.variant, figOps), want.bound, true, "×"})
		}
	}
	for _, v := range []string{varPipelined, varUnary} {
		ts = append(ts, compareTarget{"put, 1 client: p50 ≤ 0.6× etcd's (" + v + ")", overEtcd("put, 1 client", v, figP50), 0.6, false, "×"})
	}
	for _, v := range []string{varPipelined, varUnary} {
		ts = append(ts,
			compareTarget{"put, 10,000/s offered: p50 < 5 ms, timed from the schedule (" + v + ")", res.median(rowOpen10k, v, figP50), 5, false, "ms"},
			compareTarget{"put, 10,000/s offered: p99 < 10 ms, timed from the schedule (" + v + ")", res.median(rowOpen10k, v, figP99), 10, false, "ms"})
	}
	for _, v := range []string{varPipelined, varUnary} {
		ts = append(ts, compareTarget{"put, 256 clients: CPU per write ≤ 80 µs, all processes (" + v + ")",
			res.median("put, 256 clients", v, figCPU), 80, false, "µs"})
	}
	etcdMed := res.failoverMedian(compareProbes[0].name)
	for _, p := range compareProbes[1:] {
		ts = append(ts, compareTarget{"failover, kill → ack: median ≤ 0.7× etcd's (" + p.name + ")",
			ratio(res.failoverMedian(p.name), etcdMed), 0.7, false, "×"})
	}
	for _, v := range []string{varPipelined, varUnary} {
		ts = append(ts, compareTarget{"put, 256 clients: peak RSS below etcd's (" + v + ")", overEtcd("put, 256 clients", v, figRSS), 1, false, "×"})
	}
	return ts
}

// writeCompareTargets judges the targets and says which it cannot.
func (r *report) writeCompareTargets(b *strings.Builder) {
	res := r.compare
	fmt.Fprintf(b, "Issue 17's targets, from the medians above:\n\n| target | KeyVal (medians) | |\n|---|---|---|\n")
	for _, t := range res.targets() {
		fmt.Fprintf(b, "| %s | %s | %s |\n", t.what, t.figure(), t.verdict())
	}
	_, _, failed, withFailures, _ := res.failoverOf(compareProbes[2].name)
	fmt.Fprintf(b, "| failover: no write failing longer than the election (KeyVal's Go client) | %d writes failed (%d trials with any) | %s |\n",
		failed, withFailures, map[bool]string{true: "met", false: "**missed**"}[failed == 0])
	for _, t := range res.memoryTargets() {
		fmt.Fprintf(b, "| %s | %s | %s |\n", t.what, t.figure(), t.verdict())
	}
	b.WriteString("\n")
}

// writeCompareCommands lists how each cluster ran and each load
// generator's command for each row (the first round's).
func (r *report) writeCompareCommands(b *strings.Builder) {
	res := r.compare
	b.WriteString("```\n")
	if res.etcdCluster != nil {
		for _, cmd := range res.etcdCluster.commands {
			fmt.Fprintf(b, "%s\n", cmd)
		}
	}
	seen := map[string]bool{}
	for _, run := range res.runs {
		if key := run.row + "\x00" + run.variant; !seen[key] {
			seen[key] = true
			fmt.Fprintf(b, "%s\n", run.cmd)
		}
	}
	if res.memory != nil {
		for _, run := range res.memory.runs {
			if run.cmd != "" {
				fmt.Fprintf(b, "%s\n", run.cmd)
			}
		}
	}
	b.WriteString("```\n\n")
}
