package main

import (
	"errors"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/cmd/kvbench/stats"
)

func TestParseStatusKiB(t *testing.T) {
	status := "Name:\tkeyvald\nVmRSS:\t   20544 kB\nRssAnon:\t 10000 kB\nRssFile:\t  9000 kB\n"
	for name, want := range map[string]int64{"VmRSS": 20544, "RssAnon": 10000, "RssFile": 9000} {
		if got, err := parseStatusKiB(status, name); err != nil || got != want {
			t.Errorf("parseStatusKiB(%s) = %d, %v; want %d", name, got, err, want)
		}
	}
	if _, err := parseStatusKiB(status, "RssShmem"); err == nil {
		t.Error("a missing line accepted")
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tkeyvald\nVmPeak:\t 2000000 kB\nVmRSS:\t   20544 kB\nRssAnon:\t 10000 kB\n"
	if got, err := parseVmRSS(status); err != nil || got != 20544 {
		t.Errorf("parseVmRSS = %d, %v; want 20544", got, err)
	}
	if _, err := parseVmRSS("Name:\tzombie\nState:\tZ (zombie)\n"); err == nil {
		t.Error("no VmRSS line accepted")
	}
	if _, err := parseVmRSS("VmRSS:\t12 MB\n"); err == nil {
		t.Error("unexpected unit accepted")
	}
}

func TestScanRoleChanges(t *testing.T) {
	log := strings.Join([]string{
		`time=2026-11-25T23:43:56.950Z level=INFO msg="node started" node=1 client=127.0.0.1:3379`,
		`time=2026-11-25T23:43:57.952Z level=INFO msg="role changed" node=1 role=PreCandidate leader=0 term=0`,
		`time=2026-11-25T23:43:57.954Z level=INFO msg="role changed" node=1 role=Candidate leader=0 term=1`,
		`time=2026-11-25T23:43:57.954Z level=INFO msg="role changed" node=1 role=Leader leader=1 term=1`,
		`time=2026-11-25T23:44:00.000Z level=INFO msg="role changed" node=1 role=Follower leader=2 term=2`,
		`{"time":"2026-11-25T23:45:00Z","level":"INFO","msg":"role changed","node":2,"role":"Leader","leader":2,"term":3}`,
		`time=2026-11-25T23:43:57.954Z level=INFO msg="something else" role=Leader`,
	}, "\n")
	rc, err := scanRoleChanges(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Leader != 2 || rc.Candidate != 1 || rc.PreCandidate != 1 || len(rc.Lines) != 3 {
		t.Errorf("got %+v", rc)
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses; utime 250 and stime 50
	// ticks of 1/100 s.
	stat := "4242 (key val) d) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 2000000 5000 18446744073709551615"
	if got, err := parseStatCPU(stat); err != nil || got != 3*time.Second {
		t.Errorf("parseStatCPU = %v, %v; want 3s", got, err)
	}
	for _, bad := range []string{"", "4242 (x) S 1 2", "4242 (x) S 1 2 3 4 5 6 7 8 9 a b c d"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDescribe(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		var out []time.Duration
		for _, x := range xs {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	med, mean, lo, hi := describe(ms(900, 100, 500))
	if med != 500*time.Millisecond || mean != 500*time.Millisecond || lo != 100*time.Millisecond || hi != 900*time.Millisecond {
		t.Errorf("odd count: %v %v %v %v", med, mean, lo, hi)
	}
	if med, _, _, _ := describe(ms(4, 1, 2, 3)); med != 2500*time.Microsecond {
		t.Errorf("even count median %v, want the mean of the middle two", med)
	}
	if med, mean, lo, hi := describe(nil); med|mean|lo|hi != 0 {
		t.Error("empty input gives non-zero figures")
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999.4: "999", 999.6: "1,000", 4509: "4,509", 1234567: "1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	got := shellQuote("bin/kvbench", []string{"--endpoints", "127.0.0.1:1,127.0.0.1:2", "--op", "a b", "it's", ""})
	want := `bin/kvbench --endpoints 127.0.0.1:1,127.0.0.1:2 --op 'a b' 'it'\''s' ''`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestVersion(t *testing.T) {
	var out strings.Builder
	if code := realMain([]string{"--version"}, &out, io.Discard); code != exitOK ||
		!strings.HasPrefix(out.String(), "benchcluster ") || !strings.Contains(out.String(), runtime.Version()) {
		t.Errorf("exit %d, output %q: want 0 and a line naming benchcluster and %s", code, out.String(), runtime.Version())
	}
}

func TestSmokePresetsYieldToExplicitFlags(t *testing.T) {
	opt, err := parseOptions([]string{"--smoke", "--failover-trials", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if opt.failoverTrials != 3 || opt.writeOps != 300 || opt.catchupKeys != 3000 || opt.basePort != 0 ||
		opt.timeout != 3*time.Minute || !opt.quiet || opt.out != ".benchdata/bench-cluster-smoke.md" {
		t.Errorf("smoke options %+v", opt)
	}
	full, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if full.failoverTrials != 10 || full.catchupKeys != 1000000 || full.basePort != 3379 || len(full.steps) != len(allSteps) {
		t.Errorf("full options %+v", full)
	}
	for _, bad := range [][]string{{"--steps", "writes,nope"}, {"--steps", ""}, {"--key-space", "0"}, {"--base-port", "60000"}, {"--quota-backend-bytes", "-1"}, {"stray"}} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestMarkdownReport(t *testing.T) {
	opt, err := parseOptions([]string{"--smoke"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster("bin/keyvald", ".benchdata/cluster", fixedPorts(3379), nil)
	r := &report{opt: opt, c: c, started: time.Now(), loadStart: []float64{1.5, 1, 0.5}}
	c.commands = []string{"bin/keyvald --id 1 ..."}
	res := &benchResult{Summary: stats.Summary{Requests: 1000, RequestsPerSec: 4509.4, Latency: stats.Latency{P50: 1.25, P99: 9.5, Slowest: 20}}}
	res.LoadAverage.Start, res.LoadAverage.End = []float64{1.5}, []float64{2.25}
	failed := &benchResult{Summary: stats.Summary{Requests: 990, Errors: 10, ErrorSummary: []stats.ErrorCount{{Message: "put: no leader | retry", Count: 10}}}}
	r.writes = []benchRow{
		{label: "64 / 8", cmd: "bin/kvbench --clients 64", res: res,
			cpu: []cpuShare{{"leader", 95.4}, {"follower", 40}, {"follower", 38.6}, {"kvbench", 60}}},
		{label: "256 / 16", cmd: "bin/kvbench --clients 256", res: failed, termBefore: 2, termAfter: 3,
			roles: roleChanges{Leader: 1, Candidate: 1, Lines: []string{`msg="role changed" role=Leader`}}},
		{label: "1 / 1", cmd: "bin/kvbench --clients 1", err: errors.New("kvbench crashed\nsecond line")},
	}
	r.failover = &failoverResult{writers: 4, trials: []failoverTrial{
		{killed: 1, newLeader: 2, oldTerm: 2, newTerm: 3, toAck: 1200 * time.Millisecond, toLeader: 1100 * time.Millisecond},
		{killed: 2, newLeader: 3, oldTerm: 3, newTerm: 4, toAck: 800 * time.Millisecond, toLeader: 700 * time.Millisecond},
		{killed: 3, err: errors.New("no write acknowledged")},
	}}
	r.catchup = &catchupResult{keys: 3000, follower: 2, target: 4000, toAnswer: 50 * time.Millisecond, toCaughtUp: 1500 * time.Millisecond,
		snapshots: 1, dataBytes: 3 << 20, walBytes: 1 << 20, snapBytes: 1 << 20, stateBytes: 1 << 20,
		mem: residentKiB{rss: 102400, anon: 81920, file: 20480, peak: 409600}}
	r.rss = &rssResult{duration: 3 * time.Second, nodes: []rssSeries{{id: 1, samples: []int64{20480, 30720, 25600},
		anon: []int64{10240, 20480, 15360}, file: []int64{10240, 10240, 10240}, compactions: 2, compactedAt: []int{0, 2}}}}
	r.etcd = []benchRow{{label: "put, 64 / 8", cmd: "bin/etcd-benchmark --target-leader put", res: res,
		cpu: []cpuShare{{"leader", 95.4}, {"follower", 40}, {"follower", 38.6}, {"kvbench", 60}}}}
	r.failures = []string{"writes: kvbench crashed"}
	md := r.markdown()
	reportHas(t, md,
		"# KeyVal cluster benchmark: smoke run",
		"| load average (1, 5, 15 min) | 1.50 1.00 0.50 at start, unknown at end |",
		"## FAILURES\n\n- writes: kvbench crashed",
		"| 64 / 8 | 1000 | 4,509 | 1.25 |",
		"| 0 | 0 | 1.50 → 2.25 | 95 / 40 / 39 / 60 | 519 |",
		`**10**: 10× put: no leader \| retry`,
		"**1** (term 2 → 3; 1 leader, 1 candidate, 0 pre-candidate log lines)",
		"| 1 / 1 | failed: kvbench crashed |",
		"bin/kvbench --clients 256\n",
		"Role changes logged during 256 / 16",
		"## etcd's benchmark tool",
		"| put, 64 / 8 | 1000 | 4,509 | 1.25 |",
		"bin/etcd-benchmark --target-leader put\n",
		"| 3 | 3 | failed: no write acknowledged |",
		"| kill → ack | 1000 | 1000 | 800 | 1200 |",
		"| 4000 | 0.05 s | 1.50 s | 1 | 400 MiB · 100 MiB (anonymous 80) | 3.0 MiB (WAL 1.0, snapshots 1.0, bbolt 1.0) |",
		"| 1 | 3 | 20.0 | 20.0 | 30.0 | 25.0 | 1.50 | 1.25 | 2 |",
		"| 1 | 1 | 30 | 1.00 | 25 | 1.00 |",
		"| 1 | 20 | 1.00 | 10 | 1.00 |",
		"bin/keyvald --id 1 ...",
		"| finished | not yet (partial results) |",
	)
}

// A sawtooth whose teeth keep their height is flat by cycle even though
// its samples range widely; teeth that grow show as a peak ratio above 1.
func TestRSSCycles(t *testing.T) {
	flat := rssSeries{samples: []int64{100, 60, 80, 100, 61, 79, 101, 60}, compactedAt: []int{1, 4, 7}}
	peaks, troughs := flat.cycles()
	if !slices.Equal(peaks, []int64{100, 101}) || !slices.Equal(troughs, []int64{61, 60}) {
		t.Errorf("flat sawtooth: peaks %v troughs %v, want [100 101] [61 60]", peaks, troughs)
	}
	growing := rssSeries{samples: []int64{100, 60, 150, 70, 200, 80}, compactedAt: []int{1, 3, 5}}
	if peaks, _ := growing.cycles(); !slices.Equal(peaks, []int64{150, 200}) {
		t.Errorf("growing sawtooth: peaks %v, want [150 200]", peaks)
	}
	if peaks, _ := (rssSeries{samples: []int64{1, 2}, compactedAt: []int{1}}).cycles(); peaks != nil {
		t.Errorf("one compaction: peaks %v, want none", peaks)
	}
}

// The text report etcd's benchmark tool prints with --precise: the
// progress bar's redraws, the summary in seconds, the histogram, the
// percentiles reached and the errors, each counted once.
func TestParseEtcdReport(t *testing.T) {
	out := " 0 / 100 [----]   0.00%\r 50 / 100 [==--]  50.00% 1s\r 100 / 100 [====] 100.00% 2s\n" +
		"\nSummary:\n  Total:\t2.5 secs.\n  Slowest:\t0.0412 secs.\n  Fastest:\t0.0003 secs.\n" +
		"  Average:\t0.004 secs.\n  Stddev:\t0.002 secs.\n  Requests/sec:\t39.2\n" +
		"\nResponse time histogram:\n  0.0003 [1]\t|\n  0.0412 [97]\t|∎∎∎∎\n" +
		"\nLatency distribution:\n  10% in 0.001 secs.\n  50% in 0.0035 secs.\n  90% in 0.006 secs.\n  99% in 0.03 secs.\n" +
		"\nError distribution:\n  [1]\tetcdserver: too many requests\n  [1]\trpc error: code = Unavailable desc = no leader: retry\n"
	res, err := parseEtcdReport([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	l := res.Latency
	if res.Requests != 98 || res.Errors != 2 || len(res.ErrorSummary) != 2 || res.TotalSeconds != 2.5 || res.RequestsPerSec != 39.2 {
		t.Errorf("requests %d, errors %d %v, total %v s, %v/s; want 98, 2 (two kinds), 2.5 s, 39.2/s",
			res.Requests, res.Errors, res.ErrorSummary, res.TotalSeconds, res.RequestsPerSec)
	}
	if l.Slowest != 41.2 || l.Fastest != 0.3 || l.Average != 4 || l.P10 != 1 || l.P50 != 3.5 || l.P90 != 6 || l.P99 != 30 || l.P999 != 0 {
		t.Errorf("latency %+v: want ms figures 41.2 / 0.3 / 4, p10 1, p50 3.5, p90 6, p99 30, p99.9 not reached", l)
	}
	if res.ErrorSummary[1].Message != "rpc error: code = Unavailable desc = no leader: retry" {
		t.Errorf("error message %q", res.ErrorSummary[1].Message)
	}
	for _, bad := range []string{"", "Error: failed to find a leader endpoint\n", "\nSummary:\n  Total:\tsoon secs.\n"} {
		if _, err := parseEtcdReport([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// reportHas checks that md contains every one of wants, and shows md if
// the test has failed.
func reportHas(t *testing.T, md string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
}

// enoughDisk refuses a run when the file system has less free than asked,
// naming the flag, and makes no check at 0.
func TestEnoughDisk(t *testing.T) {
	dir := t.TempDir() + "/cluster"
	if err := enoughDisk(dir, 0); err != nil {
		t.Fatalf("no check asked: %v", err)
	}
	if runtime.GOOS != "linux" {
		t.Skip("free space is read only on Linux")
	}
	err := enoughDisk(dir, 1<<30) // an exbibyte
	if err == nil || !strings.Contains(err.Error(), "--min-free-disk-gib") {
		t.Fatalf("an exbibyte asked for: got %v, want a refusal naming the flag", err)
	}
	if err := enoughDisk(dir, 1); err != nil {
		t.Fatalf("one GiB asked for: %v", err)
	}
}
