package main

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/therealutkarshpriyadarshi/keyval/cmd/kvbench/stats"
)

// Over as many rounds as there are load generators, each runs in every
// place of the order once, and the order wraps around after that.
func TestRotated(t *testing.T) {
	xs := []string{"a", "b", "c"}
	want := [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}}
	for round, w := range want {
		if got := rotated(xs, round); !slices.Equal(got, w) {
			t.Errorf("round %d: %v, want %v", round, got, w)
		}
	}
	if !slices.Equal(xs, []string{"a", "b", "c"}) {
		t.Errorf("rotated changed its input: %v", xs)
	}
	if got := rotated([]string(nil), 2); len(got) != 0 {
		t.Errorf("nothing rotated gave %v", got)
	}
}

func TestSpreadAndRatioCells(t *testing.T) {
	for _, c := range []struct {
		s    spread
		n    int
		want string
	}{
		{spread{}, 0, "–"},
		{spread{4430, 4430, 4430}, 1, "4,430"},
		{spread{4430, 4100.4, 4650}, 3, "4,430 (4,100–4,650)"},
	} {
		if got := spreadCell(c.s, c.n, thousands); got != c.want {
			t.Errorf("spreadCell(%+v, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
	if got := spreadCell(spread{1.895, 1.5, 2}, 3, fixed(2)); got != "1.90 (1.50–2.00)" {
		t.Errorf("ms cell %q", got)
	}
	for _, c := range []struct {
		k, e float64
		want string
	}{{6212, 4430, "1.40"}, {1, 0, "–"}, {0, 5, "–"}, {332, 386, "0.86"}} {
		if got := ratioCell(c.k, c.e); got != c.want {
			t.Errorf("ratioCell(%v, %v) = %q, want %q", c.k, c.e, got, c.want)
		}
	}
}

func TestCompareTargetVerdict(t *testing.T) {
	for _, c := range []struct {
		t    compareTarget
		want string
	}{
		{compareTarget{got: 3.2, bound: 3, atLeast: true}, "met"},
		{compareTarget{got: 1.4, bound: 3, atLeast: true}, "**missed by 53 %**"},
		{compareTarget{got: 0.5, bound: 0.6}, "met"},
		{compareTarget{got: 0.95, bound: 0.6}, "**missed by 58 %**"},
		{compareTarget{got: 162, bound: 80}, "**missed by 102 %**"},
		{compareTarget{bound: 80}, "not measured"},
	} {
		if got := c.t.verdict(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.t, got, c.want)
		}
	}
	if got := (compareTarget{got: 1.404, unit: "×"}).figure(); got != "1.40×" {
		t.Errorf("ratio figure %q", got)
	}
	if got := (compareTarget{got: 161.6, unit: "µs"}).figure(); got != "162 µs" {
		t.Errorf("figure %q", got)
	}
}

// The kvbench variants differ only in --unary; reads go to one key, as
// etcd's tool reads one.
func TestCompareArgs(t *testing.T) {
	opt, err := parseOptions([]string{"--steps", "compare"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{opt: opt, kvbench: "bin/kvbench"}
	c := newCluster("bin/keyvald", "/d", fixedPorts(3379), nil)
	put, get := rowNamed(t, "put, 64 clients"), rowNamed(t, "linearizable get, 64 clients")
	line := func(v compareVariant, row compareRow) string {
		return strings.Join(d.compareArgs(c, v, row, 1000), " ")
	}
	pipelined, unary := line(compareVariants[1], put), line(compareVariants[2], put)
	if strings.Contains(pipelined, "--unary") || strings.Replace(unary, " --unary", "", 1) != pipelined {
		t.Errorf("pipelined %q\nunary     %q", pipelined, unary)
	}
	for _, want := range []string{"--op put --clients 64 --conns 8 --total 1000 --key-space-size 100000", "--val-size 256"} {
		if !strings.Contains(pipelined, want) {
			t.Errorf("kvbench put lacks %q: %s", want, pipelined)
		}
	}
	if got := line(compareVariants[1], get); !strings.HasSuffix(got, "--op get --clients 64 --conns 8 --total 1000 --key-space-size 1") {
		t.Errorf("kvbench get: %s", got)
	}
	if got := line(compareVariants[0], rowNamed(t, "serializable get, 64 clients")); !strings.HasSuffix(got,
		"--target-leader --precise --conns 8 --clients 64 range 00000000 --consistency s --total 1000") {
		t.Errorf("etcd's tool, serializable: %s", got)
	}
	if got := line(compareVariants[3], compareRows[0]); !strings.Contains(got, "--conns 1 --clients 1 put --key-size 8 --val-size 256") ||
		strings.Contains(got, "--rate") {
		t.Errorf("etcd's tool, put: %s", got)
	}
	// The open-loop rows offer the same rate through both tools.
	open := rowNamed(t, rowOpen10k)
	if got := line(compareVariants[2], open); !strings.HasSuffix(got,
		"--op put --clients 256 --conns 16 --total 1000 --key-space-size 100000 --rate 10000") || !strings.Contains(got, "--unary") {
		t.Errorf("kvbench, open loop: %s", got)
	}
	if got := line(compareVariants[0], open); !strings.HasSuffix(got,
		"--conns 16 --clients 256 put --key-size 8 --val-size 256 --key-space-size 100000 --rate 10000 --total 1000") {
		t.Errorf("etcd's tool, open loop: %s", got)
	}
	if got := line(compareVariants[1], put); strings.Contains(got, "--rate") {
		t.Errorf("kvbench, closed loop: %s", got)
	}
}

// rowNamed is the compare row with that label.
func rowNamed(t *testing.T, label string) compareRow {
	t.Helper()
	for _, r := range compareRows {
		if r.label == label {
			return r
		}
	}
	t.Fatalf("no compare row %q", label)
	return compareRow{}
}

func TestCompareOptions(t *testing.T) {
	opt, err := parseOptions([]string{"--steps", "compare", "--smoke"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if opt.out != ".benchdata/bench-compare-smoke.md" || opt.compareRounds != 1 || opt.compareTrials != 1 || !opt.steps[stepCompare] {
		t.Errorf("smoke compare options %+v", opt)
	}
	full, err := parseOptions([]string{"--steps", "compare"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if full.out != ".benchdata/bench-compare.md" || full.compareRounds != 3 {
		t.Errorf("compare options %+v", full)
	}
	if both, _ := parseOptions([]string{"--steps", "writes,compare"}, io.Discard); both.out != ".benchdata/bench-cluster.md" {
		t.Errorf("compare with other steps writes to %q", both.out)
	}
	if def, _ := parseOptions(nil, io.Discard); def.steps[stepCompare] {
		t.Error("the compare step runs by default")
	}
	if _, err := parseOptions([]string{"--compare-rounds", "0"}, io.Discard); err == nil {
		t.Error("no rounds accepted")
	}
}

func etcdStatusOf(n *node, member, leader, term, index, applied uint64) etcdStatus {
	return etcdStatus{n: n, st: &clientv3.StatusResponse{Header: &pb.ResponseHeader{MemberId: member}, Leader: leader,
		RaftTerm: term, RaftIndex: index, RaftAppliedIndex: applied}}
}

// Healthy means all answered, agree on a leader among them, and have
// applied what the leader had when first seen.
func TestEtcdAgreeOnLeader(t *testing.T) {
	c := newCluster("bin/etcd", "/d", fixedPorts(3384), nil)
	a, b, l := c.nodes[0], c.nodes[1], c.nodes[2]
	var target uint64
	if _, err := etcdAgreeOnLeader([]etcdStatus{etcdStatusOf(a, 10, 30, 2, 50, 50), etcdStatusOf(b, 20, 30, 2, 40, 40),
		etcdStatusOf(l, 30, 30, 2, 55, 55)}, &target); err == nil || target != 55 {
		t.Errorf("a member behind the leader's index: %v, target %d; want an error and target 55", err, target)
	}
	got, err := etcdAgreeOnLeader([]etcdStatus{etcdStatusOf(a, 10, 30, 2, 60, 55), etcdStatusOf(b, 20, 30, 2, 60, 56),
		etcdStatusOf(l, 30, 30, 2, 60, 60)}, &target)
	if err != nil || got != l {
		t.Errorf("caught up: leader %v, %v; want member 3", got, err)
	}
	for name, sts := range map[string][]etcdStatus{
		"split":     {etcdStatusOf(a, 10, 30, 2, 60, 60), etcdStatusOf(b, 20, 20, 3, 60, 60)},
		"no leader": {etcdStatusOf(a, 10, 0, 2, 60, 60)},
		"silent":    {etcdStatusOf(a, 10, 30, 2, 60, 60), {n: b, err: errors.New("refused")}},
		"not asked": {etcdStatusOf(a, 10, 30, 2, 60, 60), etcdStatusOf(b, 20, 30, 2, 60, 60)},
	} {
		target := uint64(0)
		if _, err := etcdAgreeOnLeader(sts, &target); err == nil {
			t.Errorf("%s: healthy", name)
		}
	}
}

func TestCompareReport(t *testing.T) {
	opt, err := parseOptions([]string{"--steps", "compare"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	run := func(variant string, round int, rate, p50, cpu float64, rss int64) compareRun {
		return compareRun{row: "put, 64 clients", variant: variant, round: round, cmd: "tool " + variant, cpuPerOp: cpu, rssKiB: rss,
			res: &benchResult{Summary: stats.Summary{RequestsPerSec: rate, Latency: stats.Latency{P50: p50, P99: 4 * p50}}}}
	}
	open := func(variant string, round int, rate, p50, p99 float64) compareRun {
		return compareRun{row: rowOpen10k, variant: variant, round: round, cmd: "open " + variant,
			res: &benchResult{Summary: stats.Summary{RequestsPerSec: rate, Latency: stats.Latency{P50: p50, P99: p99, P999: 2 * p99}}}}
	}
	res := &compareResult{rounds: 3, etcd: "etcd Version: 3.6.14", ops: map[string]int{"put, 64 clients": 1000, rowOpen10k: 2000},
		runs: []compareRun{
			run(varEtcd, 0, 4000, 10, 300, 200<<10), run(varPipelined, 0, 6000, 8, 160, 100<<10),
			run(varPipelined, 1, 6500, 7, 150, 110<<10), run(varEtcd, 1, 4500, 11, 290, 210<<10),
			run(varEtcd, 2, 5000, 12, 310, 220<<10), run(varPipelined, 2, 5500, 9, 170, 120<<10),
			{row: "put, 64 clients", variant: varUnary, round: 0, cmd: "tool unary", err: errors.New("crashed")},
			open(varEtcd, 0, 6000, 30, 90), open(varEtcd, 1, 6200, 34, 95), open(varEtcd, 2, 5800, 32, 99),
			open(varPipelined, 0, 9900, 4.5, 9), open(varPipelined, 1, 9950, 4.2, 12), open(varPipelined, 2, 9800, 6, 30),
			open(varUnary, 0, 7000, 900, 3000),
		},
		trials: []compareTrial{
			{probe: compareProbes[0].name, tr: failoverTrial{toAck: 400 * time.Millisecond, toLeader: 350 * time.Millisecond}},
			{probe: compareProbes[2].name, tr: failoverTrial{toAck: 300 * time.Millisecond, toLeader: 250 * time.Millisecond, writeErrors: 2}},
		},
	}
	r := &report{opt: opt, c: newCluster("bin/keyvald", "/d", fixedPorts(3379), nil), compare: res}
	md := r.markdown()
	reportHas(t, md,
		"## Side by side with etcd",
		"etcd Version: 3.6.14",
		"| put, 64 clients (1000) | ops/s | 4,500 (4,000–5,000) | 6,000 (5,500–6,500) | – | – | 1.33 | – | – |",
		"| | p50 ms | 11.00 (10.00–12.00) | 8.00 (7.00–9.00) | – | – | 0.73 | – | – |",
		"| | RSS MiB | 210 (200–220) | 110 (100–120) | – | – | 0.52 | – | – |",
		"| | **errors, elections** |  |  | 1 runs failed |  | | | |",
		"| etcd, etcd's Go client | 1 | 400 (400–400) | 350 (350–350) | 0 (0) | 1.00 |",
		"| KeyVal, KeyVal's Go client | 1 | 300 (300–300) | 250 (250–250) | 2 (1) | 0.75 |",
		"| put, 64 clients: writes/s ≥ 3× etcd's (KeyVal's Go client) | 1.33× | **missed by 56 %** |",
		"| put, 256 clients: writes/s ≥ 3× etcd's (KeyVal's Go client) | – | not measured |",
		"| failover, kill → ack: median ≤ 0.7× etcd's (KeyVal, KeyVal's Go client) | 0.75× | **missed by 7 %** |",
		"| failover: no write failing longer than the election (KeyVal's Go client) | 2 writes failed (1 trials with any) | **missed** |",
		"| put, 10,000/s offered, 256 clients (2000) | ops/s | 6,000 (5,800–6,200) | 9,900 (9,800–9,950) | 7,000 | – | 1.65 | 1.17 | – |",
		"| | p50 ms | 32.00 (30.00–34.00) | 4.50 (4.20–6.00) | 900.00 | – | 0.14 | 28.12 | – |",
		"| | p99 ms | 95.00 (90.00–99.00) | 12.00 (9.00–30.00) | 3000.00 | – | 0.13 | 31.58 | – |",
		"| put, 10,000/s offered: p50 < 5 ms, timed from the schedule (KeyVal pipelined) | 4.50 ms | met |",
		"| put, 10,000/s offered: p99 < 10 ms, timed from the schedule (KeyVal pipelined) | 12.00 ms | **missed by 20 %** |",
		"| put, 10,000/s offered: p50 < 5 ms, timed from the schedule (KeyVal unary) | 900.00 ms | **missed by 17900 %** |",
		"| RSS flat within 20 % through a 10-minute overwrite run: steady max / min, least flat member | – | not measured |",
		"| RSS through the overwrite run: peak below etcd's | – | not measured |",
		"coordinated omission",
		"tool etcd\ntool KeyVal pipelined\ntool unary\n",
		"open etcd\nopen KeyVal pipelined\nopen KeyVal unary\n",
	)
}

// The memory phase counts only the samples after the warm-up towards
// flatness, judges KeyVal by its least flat member, and compares the
// largest member's peak with etcd's.
func TestCompareMemory(t *testing.T) {
	opt, err := parseOptions([]string{"--steps", "compare"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if opt.compareMemory != 10*time.Minute || opt.compareMemoryRate != 2000 {
		t.Errorf("memory phase defaults %v at %d/s", opt.compareMemory, opt.compareMemoryRate)
	}
	if _, err := parseOptions([]string{"--compare-memory-rate", "0"}, io.Discard); err == nil {
		t.Error("a rate of 0 accepted")
	}
	// One sample a second, seconds 0..n-1; MiB values given, KiB kept.
	series := func(id uint64, mib ...int64) memberMemory {
		m := memberMemory{id: id}
		for i, v := range mib {
			m.rss, m.anon, m.file = append(m.rss, v<<10), append(m.anon, v<<9), append(m.file, v<<9)
			m.seconds = append(m.seconds, int64(i)*30)
		}
		return m
	}
	// Samples at 0, 30, 60, 90, 120 s: the first two are the warm-up.
	etcd := memoryRun{system: sysEtcd, members: []memberMemory{series(1, 50, 100, 200, 210, 220), series(2, 50, 90, 190, 200, 205)}}
	kv := memoryRun{system: sysKeyVal, cmd: "etcd-benchmark kv", res: &benchResult{Summary: stats.Summary{RequestsPerSec: 2000, Latency: stats.Latency{P99: 12.5}}},
		members: []memberMemory{series(1, 900, 300, 300, 330, 315), series(2, 40, 100, 300, 400, 420)}}
	if got := kv.members[0].flatness(time.Minute); got != 1.1 {
		t.Errorf("member 1's flatness %v, want 1.1 (the 900 MiB warm-up sample left out)", got)
	}
	if got := kv.worstFlatness(time.Minute); got != 1.4 {
		t.Errorf("worst flatness %v, want 1.4 (member 2: 420 / 300)", got)
	}
	res := &compareResult{memory: &compareMemory{duration: 2 * time.Minute, warmup: time.Minute, rate: 2000, runs: []memoryRun{etcd, kv}}}
	ts := res.memoryTargets()
	if ts[0].got != 1.4 || ts[0].verdict() != "**missed by 17 %**" {
		t.Errorf("flatness target %+v: %s", ts[0], ts[0].verdict())
	}
	if ts[1].got != 900.0/220 {
		t.Errorf("peak ratio %v, want 900/220 (the warm-up counts for the peak)", ts[1].got)
	}
	r := &report{opt: opt, c: newCluster("bin/keyvald", "/d", fixedPorts(3379), nil), compare: res}
	var b strings.Builder
	r.writeCompareMemory(&b)
	r.writeCompareTargets(&b)
	r.writeCompareCommands(&b)
	reportHas(t, b.String(),
		"each offered 2,000 puts a second for 2m0s",
		"| system | member | puts/s, p99 | RSS MiB: at 1m0s → max → last |",
		"| etcd | 1 | – | 200 → 220 → 220 | 200–220 | 1.10 | 110 | 110 |",
		"| KeyVal | 1 | 2,000, 12.5 ms | 300 → 900 → 315 | 300–330 | 1.10 | 450 | 450 |",
		"| KeyVal | 2 |  | 300 → 420 → 420 | 300–420 | 1.40 | 210 | 210 |",
		"| RSS flat within 20 % through a 2-minute overwrite run: steady max / min, least flat member | 1.40× | **missed by 17 %** |",
		"| RSS through the overwrite run: peak below etcd's | 4.09× | **missed by 309 %** |",
		"etcd-benchmark kv\n",
	)
	// A run that failed is not judged.
	res.memory.runs[1].err = errors.New("tool failed")
	if ts := res.memoryTargets(); ts[0].verdict() != "not measured" || ts[1].verdict() != "not measured" {
		t.Errorf("a failed run judged: %s, %s", ts[0].verdict(), ts[1].verdict())
	}
}
